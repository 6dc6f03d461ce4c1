"""Fixtures of the web examples' tests: local Requence servers on 127.0.0.1 with the
demo templates (template ``greeting``: input ``{"name": <non-empty string>}``), a
token for a port that refuses connections, and a helper that runs a function in
a forked child."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from requence_task._token import decode_access_token, encode_access_token
from requence_task.local import LocalRequence
from requence_task.local._demo import DEMO_TEMPLATES

from ..conftest import Api

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
WAIT = 30.0  # bound of every wait that is not itself under test

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")


@pytest.fixture(scope="module")
def demo_rq() -> Iterator[LocalRequence]:
    """A local Requence with the demo templates, for one test module."""
    with LocalRequence(DEMO_TEMPLATES, concurrency=4) as rq:
        yield rq
        rq.faults.clear()


@pytest.fixture()
def demo_api(demo_rq: LocalRequence) -> Iterator[Api]:
    """The task API of ``demo_rq`` over plain HTTP: to check what the views did."""
    api = Api(demo_rq.access_token)
    yield api
    api.close()


@pytest.fixture()
def slow_rq() -> Iterator[LocalRequence]:
    """A server of the test's own that takes 2 s over every request."""
    with LocalRequence(DEMO_TEMPLATES) as rq:
        rq.faults.latency = 2.0
        yield rq
        rq.faults.clear()


@pytest.fixture()
def refused_token() -> Iterator[str]:
    """A token for a loopback port that refuses connections.

    The port stays bound (never listening) for the whole test, so no other
    server can take it meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        yield encode_access_token(f"gone-{uuid.uuid4().hex}", f"http://127.0.0.1:{port}")


class LogSink(logging.Handler):
    """Every record of every logger, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@pytest.fixture()
def log_sink() -> Iterator[LogSink]:
    """All log records at DEBUG, from every logger, while the test runs."""
    sink = LogSink()
    root = logging.getLogger()
    before = root.level
    root.addHandler(sink)
    root.setLevel(logging.DEBUG)
    try:
        yield sink
    finally:
        root.removeHandler(sink)
        root.setLevel(before)


def secrets_of(token: str) -> tuple[str, str]:
    """The token and the bearer inside it: neither may appear anywhere shown."""
    return token, decode_access_token(token).bearer


def run_in_child(work: Callable[[], dict[str, Any]], limit: float = WAIT) -> dict[str, Any]:
    """Fork; run ``work()`` in the child and return what it returned (JSON-able).

    The child reports over a pipe and leaves with ``os._exit`` (it never
    returns into pytest). A child that does not finish within ``limit``
    seconds is killed and the test fails; so does one that raised."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(read_end)
            try:
                report = {"value": work()}
                code = 0
            except BaseException:
                report = {"error": traceback.format_exc()}
            os.write(write_end, json.dumps(report, default=repr).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    chunks: list[bytes] = []
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([read_end], [], [], 0.05)
            if ready:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the forked child hung; it reported {b''.join(chunks)!r}")
    finally:
        os.close(read_end)
    text = b"".join(chunks).decode()
    report = json.loads(text) if text else {"error": "the child reported nothing"}
    assert "error" not in report, report["error"]
    assert os.waitstatus_to_exitcode(status) == 0
    return report["value"]  # type: ignore[no-any-return]
