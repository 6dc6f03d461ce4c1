"""The client against a Requence that breaks the protocol on purpose (tests/faults/hostile.py).

* A repeated event (same ``id:``, same ``updateId``) is delivered once, on the
  task's own stream, on the shared stream and on ``watch_tasks``.
* A stale position never rewinds the resume point (``lastPosition``).
* A malformed terminal update is never a success with its data missing.
* Headers or bodies trickled in are cut off at the request's overall
  deadline, and the retry budget bounds the whole call; a stream that trickles
  bytes without ever finishing an event is treated as dropped.
* A wait that ends while Requence is unreachable says so
  (``RequenceUnreachableError``, also a ``TimeoutError``, with the cause).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from requence_task import (
    ApiError,
    Client,
    RequenceUnreachableError,
    RetryPolicy,
    Task,
    TaskTimeoutError,
    Timeouts,
    watch_tasks,
)
from requence_task.local import LocalRequence

from .hostile import TASK_ID, Handler, Hostile, frame, node, update

QUICK = Timeouts(connect=1, read=3, stream_inactivity=3)
FAST = RetryPolicy(budget=3, initial_backoff=0.02, max_backoff=0.1)
WAIT = 10


def make_client(hostile: Hostile, **kwargs: Any) -> Client:
    kwargs.setdefault("timeouts", QUICK)
    kwargs.setdefault("retry", FAST)
    return Client(hostile.access_token, **kwargs)


def started(**fields: Any) -> bytes:
    return frame(1, "taskStart", update(input={"n": 1}, **fields))


def ended(position: int, result: Any = "done") -> bytes:
    return frame(position, "taskEnd", update(result=result, exit=None, requireAck=False))


# --- 1. a repeated event is delivered once ---------------------------------------------------


def _repeating(handler: Handler, body: dict[str, Any]) -> None:
    again = update(node=node("a"), data={"v": 1}, output=None)
    handler.stream(
        started(),
        frame(2, "nodeUpdate", again),
        frame(2, "nodeUpdate", again),  # the same frame again
        frame(3, "nodeEnd", update(node=node("a"))),
        frame(3, "nodeEnd", update(node=node("a"))),  # same position, other updateId
        ended(4),
    )


@pytest.mark.parametrize("shared", [False, True], ids=["own-stream", "shared-stream"])
def test_a_repeated_event_is_delivered_once(shared: bool) -> None:
    scripts = {"watch_all": [_repeating]} if shared else {"watch": [_repeating]}
    with Hostile(**scripts) as hostile, make_client(hostile, shared_stream=shared) as client:
        task = Task("hostile", client=client)
        updates = list(task.updates(timeout=WAIT))
        assert [(u.position, u.type) for u in updates] == [
            (1, "taskStart"),
            (2, "nodeUpdate"),
            (3, "nodeEnd"),
            (4, "taskEnd"),
        ]
        assert task.result(timeout=WAIT).result == "done"
        route = "watch-all" if shared else "watch"
        assert len(hostile.bodies[route]) == 1


def test_a_repeated_event_reaches_a_watcher_once() -> None:
    with Hostile(watch_all=[_repeating]) as hostile, make_client(hostile) as client:
        with watch_tasks(None, client=client) as watcher:
            seen = []
            for item in watcher.updates(timeout=WAIT):
                seen.append((item.position, item.type))
                if item.type == "taskEnd":
                    break
        assert seen == [(1, "taskStart"), (2, "nodeUpdate"), (3, "nodeEnd"), (4, "taskEnd")]


# --- 2. a stale position never rewinds the resume point --------------------------------------


def _stale_then_drop(handler: Handler, body: dict[str, Any]) -> None:
    handler.stream(
        started(),
        *(frame(n, "nodeUpdate", update(node=node("a"), data=n, output=None)) for n in (2, 3, 4)),
        frame(2, "nodeUpdate", update(node=node("a"), data="stale", output=None)),
    )  # ends cleanly before the terminal update: a drop


def _resume(handler: Handler, body: dict[str, Any]) -> None:
    handler.stream(ended(5))


def test_a_stale_position_never_rewinds_the_task_stream() -> None:
    with (
        Hostile(watch=[_stale_then_drop, _resume]) as hostile,
        make_client(hostile, shared_stream=False) as client,
    ):
        task = Task("hostile", client=client)
        updates = list(task.updates(timeout=WAIT))
        assert [u.position for u in updates] == [1, 2, 3, 4, 5]
        assert [u.data for u in updates if u.type == "nodeUpdate"] == [2, 3, 4]  # type: ignore[attr-defined]
        assert hostile.bodies["watch"][1]["lastPosition"] == 4
        assert task.result(timeout=WAIT).node_data["a"] == 4


def test_a_stale_position_never_rewinds_a_watcher() -> None:
    with (
        Hostile(watch_all=[_stale_then_drop, _resume]) as hostile,
        make_client(hostile) as client,
        watch_tasks(None, client=client) as watcher,
    ):
        positions = []
        for item in watcher.updates(timeout=WAIT):
            positions.append(item.position)
            if item.type == "taskEnd":
                break
        assert positions == [1, 2, 3, 4, 5]
        assert hostile.bodies["watch-all"][1]["lastPosition"] == 4


# --- 3. a malformed terminal update ------------------------------------------------------------


def test_a_malformed_task_end_with_a_readable_result_delivers_it() -> None:
    def script(handler: Handler, body: dict[str, Any]) -> None:
        bad = update(result={"total": 3}, exit=7, requireAck="no")
        handler.stream(started(), frame(2, "taskEnd", bad))

    with (
        Hostile(watch=[script]) as hostile,
        make_client(hostile, shared_stream=False) as client,
    ):
        result = Task("hostile", client=client).result(timeout=WAIT)
        assert result.result == {"total": 3}
        assert result.input == {"n": 1}


def test_a_malformed_task_end_without_a_result_is_an_error_not_a_success() -> None:
    def script(handler: Handler, body: dict[str, Any]) -> None:
        handler.stream(started(), frame(2, "taskEnd", update(exit=7, requireAck="no")))

    with (
        Hostile(watch=[script]) as hostile,
        make_client(hostile, shared_stream=False) as client,
    ):
        task = Task("hostile", client=client)
        with pytest.raises(ApiError) as caught:
            task.result(timeout=WAIT)
        message = str(caught.value)
        assert "exit" in message
        assert "result is not known" in message
        assert TASK_ID in message
        assert [u.type for u in task.updates(timeout=WAIT)] == ["taskStart", "taskEnd"]


def test_a_malformed_task_error_still_fails_with_its_reason() -> None:
    def script(handler: Handler, body: dict[str, Any]) -> None:
        bad = update(reason="disk full", requireAck="maybe")
        handler.stream(started(), frame(2, "taskError", bad))

    with (
        Hostile(watch=[script]) as hostile,
        make_client(hostile, shared_stream=False) as client,
    ):
        from requence_task import TaskFailedError

        with pytest.raises(TaskFailedError) as caught:
            Task("hostile", client=client).result(timeout=WAIT)
        assert caught.value.reason == "disk full"


# --- 4. trickled answers -----------------------------------------------------------------------


TRICKLE_TIMEOUTS = Timeouts(connect=1, read=2, stream_inactivity=2)
TRICKLE_BUDGET = RetryPolicy(budget=4, initial_backoff=0.05, max_backoff=0.2)


@pytest.mark.parametrize("what", ["headers", "body"])
def test_a_trickled_answer_is_cut_off_within_the_retry_budget(what: str) -> None:
    def prepare(handler: Handler, body: dict[str, Any]) -> None:
        if what == "headers":
            handler.trickle_headers(0.5, limit=30)
        else:
            handler.trickle_body(0.2, limit=30)

    with (
        Hostile(prepare=prepare) as hostile,
        make_client(hostile, timeouts=TRICKLE_TIMEOUTS, retry=TRICKLE_BUDGET) as client,
    ):
        began = time.monotonic()
        task = Task("hostile", client=client)
        with pytest.raises(RequenceUnreachableError) as caught:
            task.task_id(timeout=15)
        took = time.monotonic() - began
    assert not isinstance(caught.value, TaskTimeoutError)
    assert took < 4 + 1.5, took  # the budget bounds the call; not 100 s
    assert f"no whole answer from 127.0.0.1:{hostile.port}" in str(caught.value)


def test_a_stream_that_trickles_without_finishing_an_event_is_resumed() -> None:
    def trickling(handler: Handler, body: dict[str, Any]) -> None:
        handler.start_stream()
        handler.chunk(started())
        # A comment that never ends, a byte at a time: the socket is never silent.
        handler.chunk(b": ")
        ends = time.monotonic() + 30
        while time.monotonic() < ends and not handler.hostile.stopped.is_set():
            try:
                handler.chunk(b"x")
            except OSError:
                return
            time.sleep(0.3)

    def resume(handler: Handler, body: dict[str, Any]) -> None:
        handler.stream(ended(2))

    with (
        Hostile(watch=[trickling, resume]) as hostile,
        make_client(hostile, timeouts=TRICKLE_TIMEOUTS, shared_stream=False) as client,
    ):
        began = time.monotonic()
        result = Task("hostile", client=client).result(timeout=WAIT)
        took = time.monotonic() - began
        assert result.result == "done"
        assert hostile.bodies["watch"][1]["lastPosition"] == 1
    assert took < 2 + 3, took


# --- 5. a wait that ends while Requence is unreachable -------------------------------------------


@pytest.fixture()
def dead() -> Iterator[Hostile]:
    """A port where nothing listens (a Hostile server stopped at once)."""
    hostile = Hostile()
    hostile.stop()
    yield hostile


@pytest.mark.parametrize(
    "accessor", ["task_id", "finalized", "result", "task_url", "aresult", "afinalized"]
)
def test_a_wait_on_a_refusing_requence_says_it_is_unreachable(dead: Hostile, accessor: str) -> None:
    slow_budget = RetryPolicy(budget=30, initial_backoff=0.05, max_backoff=0.5)
    with make_client(dead, retry=slow_budget) as client:
        task = Task("hostile", client=client)
        began = time.monotonic()
        with pytest.raises(RequenceUnreachableError) as caught:
            if accessor.startswith("a"):
                asyncio.run(getattr(task, accessor)(timeout=1.5))
            else:
                getattr(task, accessor)(timeout=1.5)
        took = time.monotonic() - began
    error = caught.value
    assert isinstance(error, TimeoutError)  # a wait that ended
    assert not isinstance(error, TaskTimeoutError)  # ... but not a slow task
    message = str(error)
    assert f"connection refused at 127.0.0.1:{dead.port}" in message
    assert "goes on" not in message.replace("keeps trying", "")
    assert "the task goes on" not in message
    assert "no task was created yet" in message
    assert 1.5 <= took < 3, took  # raised when the caller's time-out ends, not after 30 s
    assert error.attempts >= 2


def test_the_budget_error_names_the_last_cause(dead: Hostile) -> None:
    tiny = RetryPolicy(budget=0.5, initial_backoff=0.02, max_backoff=0.1)
    with make_client(dead, retry=tiny) as client, pytest.raises(RequenceUnreachableError) as caught:
        Task("hostile", client=client).finalized(timeout=WAIT)
    assert f"connection refused at 127.0.0.1:{dead.port}" in str(caught.value)
    assert not isinstance(caught.value, TimeoutError)  # the budget ran out: no wait ended


def test_a_slow_task_is_still_a_task_timeout() -> None:
    # Requence answers, the task just has not ended: TaskTimeoutError, "goes on".
    gate = threading.Event()

    def slow(handler: Handler, body: dict[str, Any]) -> None:
        handler.start_stream()
        handler.chunk(started())
        while not gate.wait(0.2) and not handler.hostile.stopped.is_set():
            handler.chunk(b": keep-alive\n\n")
        handler.chunk(ended(2))
        handler.end_stream()

    with Hostile(watch=[slow]) as hostile, make_client(hostile, shared_stream=False) as client:
        task = Task("hostile", client=client)
        with pytest.raises(TaskTimeoutError) as caught:
            task.result(timeout=1)
        assert "goes on" in str(caught.value)
        gate.set()
        assert task.result(timeout=WAIT).result == "done"


def test_a_wait_for_updates_from_a_requence_gone_down_says_it_is_unreachable() -> None:
    went_down = threading.Event()

    def then_down(handler: Handler, body: dict[str, Any]) -> None:
        handler.start_stream()
        handler.chunk(started())
        went_down.wait(WAIT)
        handler.close_connection = True  # the connection dies with the server

    slow_budget = RetryPolicy(budget=30, initial_backoff=0.05, max_backoff=0.5)
    with (
        Hostile(watch=[then_down]) as hostile,
        make_client(hostile, retry=slow_budget, shared_stream=False) as client,
    ):
        task = Task("hostile", client=client)
        iterator = task.updates(timeout=1.5)
        assert next(iterator).type == "taskStart"
        threading.Thread(target=hostile.stop, daemon=True).start()
        time.sleep(0.3)
        went_down.set()
        began = time.monotonic()
        with pytest.raises(RequenceUnreachableError) as caught:
            task.result(timeout=2)
        took = time.monotonic() - began
        assert isinstance(caught.value, TimeoutError)
        assert f"connection refused at 127.0.0.1:{hostile.port}" in str(caught.value)
        assert "updates cannot be read" in str(caught.value)
        assert took < 3.5, took
        with pytest.raises(RequenceUnreachableError):
            next(iterator)  # the iterator's wait says the same


def test_a_local_requence_that_was_stopped_is_reported_unreachable() -> None:
    rq = LocalRequence([]).start()
    token = rq.access_token
    rq.stop()
    slow_budget = RetryPolicy(budget=30, initial_backoff=0.05, max_backoff=0.5)
    with (
        Client(token, retry=slow_budget, timeouts=QUICK) as client,
        pytest.raises(RequenceUnreachableError) as caught,
    ):
        Task("anything", client=client).finalized(timeout=2)
    assert f"connection refused at 127.0.0.1:{rq.port}" in str(caught.value)
