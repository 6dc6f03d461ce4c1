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

from requence_task import Client, RetryPolicy, Timeouts
from requence_task._token import encode_access_token
from requence_task.local import LocalRequence

from ..local.templates_for_tests import TEMPLATES, gate

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
