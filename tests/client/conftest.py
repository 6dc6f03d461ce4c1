"""Fixtures for the tests of the ``requence_task`` client: a client of the
session's local Requence, tokens for places where nothing (or something
wrong) listens, gates, and small helpers."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from requence_task import Client, RetryPolicy, Task, Timeouts
from requence_task._token import encode_access_token
from requence_task.local import LocalRequence, NodeContext, Template, service

from ..local.templates_for_tests import TEMPLATES, gate


def _two_updates(ctx: NodeContext) -> Any:
    yield {"b": 1}
    yield {"b": 2}


def _sleep(ctx: NodeContext) -> dict[str, Any]:
    seconds = float(ctx.input["seconds"])
    ctx.wait(seconds)
    return {"slept": seconds}


def _boom(ctx: NodeContext) -> None:
    raise RuntimeError("boom")


# Templates of the timing tests (fan-out, asyncio, notebook views), beside TEMPLATES.
TIMING_TEMPLATES = [
    # Three nodes in a row; the second sends two updates.
    Template(
        "steps",
        nodes=[
            service("a", lambda ctx: {"a": 1}),
            service("b", _two_updates, after=["a"]),
            service("c", lambda ctx: {"c": 3}, after=["b"]),
        ],
        result=lambda ctx: {"done": True},
    ),
    # One node that sleeps input["seconds"].
    Template("sleep", nodes=[service("sleep", _sleep)]),
    # A node that ends, then one that fails.
    Template(
        "late-fail", nodes=[service("ok", lambda ctx: 1), service("boom", _boom, after=["ok"])]
    ),
]


# The retry policy of test clients: quick backoff, a budget well inside a test's bound.
FAST_RETRY = RetryPolicy(budget=5, initial_backoff=0.02, max_backoff=0.2)
# Socket time-outs of test clients: generous enough for a loaded machine, never unbounded.
TEST_TIMEOUTS = Timeouts(connect=2, read=10, stream_inactivity=20)


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "it") -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, read, closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_client(access_token: str, **kwargs: Any) -> Client:
    """A client with the quick test policies unless told otherwise."""
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("timeouts", TEST_TIMEOUTS)
    return Client(access_token, **kwargs)


@contextlib.contextmanager
def own_server(**kwargs: Any) -> Iterator[LocalRequence]:
    """A local Requence of the test's own (for faults and settings that would
    disturb the shared one)."""
    with LocalRequence(TEMPLATES, **kwargs) as rq:
        yield rq


@pytest.fixture(scope="session")
def client(server: LocalRequence) -> Iterator[Client]:
    """One client of the session's local Requence, shared by the client tests."""
    with Client(server.access_token, retry=FAST_RETRY, timeouts=TEST_TIMEOUTS) as c:
        yield c


@pytest.fixture()
def dead_port() -> int:
    return free_port()


@pytest.fixture()
def dead_token(dead_port: int) -> str:
    """An access token whose base URL is a port on 127.0.0.1 where nothing listens."""
    return encode_access_token(f"dead-{uuid.uuid4().hex}", f"http://127.0.0.1:{dead_port}")


@pytest.fixture()
def gates() -> Iterator[Callable[[], str]]:
    """Make gate keys for the "gated" template; every gate made is opened at the end."""
    made: list[str] = []

    def new() -> str:
        key = uuid.uuid4().hex
        made.append(key)
        gate(key)
        return key

    yield new
    for key in made:
        gate(key).set()


@pytest.fixture()
def gate_key(gates: Callable[[], str]) -> str:
    """One gate key, opened at the end of the test."""
    return gates()


def open_gate(key: str) -> None:
    gate(key).set()


def wait_for_update(task: Task, predicate: Callable[[Any], bool], timeout: float = 30) -> None:
    """Iterate the task's updates until one satisfies ``predicate``."""
    for update in task.updates(timeout=timeout):
        if predicate(update):
            return
    raise AssertionError("the task ended before the update came")


@pytest.fixture(scope="module")
def busy_server() -> Iterator[LocalRequence]:
    """A local Requence of a test module's own, running eight tasks at once (timing tests)."""
    with LocalRequence([*TEMPLATES, *TIMING_TEMPLATES], concurrency=8) as rq:
        yield rq


@pytest.fixture(autouse=True)
def _busy_faults_off(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "busy_server" in request.fixturenames:
        request.getfixturevalue("busy_server").faults.clear()


@pytest.fixture(scope="module")
def busy_client(busy_server: LocalRequence) -> Iterator[Client]:
    with make_client(busy_server.access_token) as client:
        yield client
