"""watch_tasks / TaskWatcher against the local Requence over real HTTP: order,
per-task contexts, incomplete, since, only, stop, callbacks, resuming after
cut streams, giving up when unreachable, acks, and project isolation."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from requence_task import (
    AuthenticationError,
    Client,
    ConfigurationError,
    RequenceUnreachableError,
    RetryPolicy,
    Task,
    TaskAbortedUpdate,
    TaskEndUpdate,
    TaskErrorUpdate,
    TaskFailedError,
    TaskStartUpdate,
    TaskStatus,
    TaskTimeoutError,
    TaskWatcher,
    Update,
    get_task,
    watch_tasks,
)
from requence_task._client import default_client
from requence_task._token import encode_access_token
from requence_task.local import LocalRequence

from ..local.templates_for_tests import gate
from .conftest import make_client, own_server, wait_until

GREET_INPUT = {"name": "Wat", "steps": 2}
GREET_TYPES = [
    "taskStart",
    "nodeStart",
    "nodeUpdate",
    "nodeEnd",
    "nodeStart",
    "nodeUpdate",
    "nodeUpdate",
    "nodeEnd",
    "taskEnd",
]
ECHO_TYPES = ["taskStart", "nodeStart", "nodeUpdate", "nodeEnd", "taskEnd"]
GATED_TYPES = ECHO_TYPES


@pytest.fixture()
def pclient(server: LocalRequence) -> Iterator[Client]:
    """A client of a project of its own on the session's server: its watchers see
    only this test's tasks."""
    with make_client(server.token_for(f"watch-{uuid.uuid4().hex}")) as c:
        yield c


def connected_watcher(c: Client, since: Any = "now", **kwargs: Any) -> TaskWatcher:
    """A watcher whose stream is open (its on_connect was called)."""
    connected = threading.Event()
    user_hook = kwargs.pop("on_connect", None)

    def on_connect() -> None:
        connected.set()
        if user_hook is not None:
            user_hook()

    watcher = watch_tasks(
        datetime.now() if since == "now" else since, client=c, on_connect=on_connect, **kwargs
    )
    if not connected.wait(5):
        watcher.stop()
        raise AssertionError("the watcher did not connect within 5 s")
    return watcher


def collect(watcher: TaskWatcher, task_ids: set[str], timeout: float = 5.0) -> list[Update]:
    """Updates until each of ``task_ids`` had its terminal update (each wait bounded)."""
    pending = set(task_ids)
    got: list[Update] = []
    for update in watcher.updates(timeout=timeout):
        got.append(update)
        if update.is_terminal:
            pending.discard(update.task_id)
        if not pending:
            return got
    raise AssertionError(f"the watcher ended early; still waiting for {pending}")


def of(updates: list[Update], task_id: str) -> list[Update]:
    return [u for u in updates if u.task_id == task_id]


def types_of(updates: list[Update]) -> list[str]:
    return [u.type for u in updates]


def assert_increasing(updates: list[Update]) -> None:
    found = [u.position for u in updates]
    assert all(isinstance(p, int) for p in found), found
    assert found == sorted(set(found)), found  # type: ignore[type-var]


# --- what a watcher sees ------------------------------------------------------------------------


def test_new_task_updates_in_order(pclient: Client) -> None:
    with connected_watcher(pclient) as watcher:
        task = Task("greet", GREET_INPUT, name="watched", client=pclient)
        task_id = task.finalized(timeout=5)
        got = collect(watcher, {task_id})
    assert types_of(got) == GREET_TYPES
    assert {u.task_id for u in got} == {task_id}
    assert_increasing(got)
    assert [u.incomplete for u in got] == [False] * 9
    assert [u.root_task_id for u in got] == [None] * 9
    assert all(u.update_id for u in got)
    assert isinstance(got[0], TaskStartUpdate)
    assert got[0].input == GREET_INPUT
    end = got[-1]
    assert isinstance(end, TaskEndUpdate)
    assert end.result == {"message": "Hello, Wat!"}
    assert end.context.input == GREET_INPUT
    assert dict(end.context.node_data) == {
        "greeter": {"message": "Hello, Wat!"},
        "counter": {"step": 2},
    }
    # The watcher folds exactly what the task's own stream folds, update for update.
    assert got == list(task.updates(timeout=5))


def test_two_interleaved_tasks_keep_separate_contexts(pclient: Client) -> None:
    key_a, key_b = uuid.uuid4().hex, uuid.uuid4().hex
    gate(key_a)
    gate(key_b)
    try:
        with connected_watcher(pclient) as watcher:
            a = Task("gated", {"gate": key_a}, client=pclient)
            a_id = a.finalized(timeout=5)
            b = Task("gated", {"gate": key_b}, client=pclient)
            b_id = b.finalized(timeout=5)
            got: list[Update] = []
            for update in watcher.updates(timeout=5):
                got.append(update)
                if [u.type for u in got if u.task_id == b_id] == ["taskStart", "nodeStart"] and (
                    [u.type for u in got if u.task_id == a_id] == ["taskStart", "nodeStart"]
                ):
                    break
            gate(key_a).set()  # a ends while b is still running
            got += collect(watcher, {a_id})
            gate(key_b).set()
            got += collect(watcher, {b_id})
    finally:
        gate(key_a).set()
        gate(key_b).set()
    assert types_of(of(got, a_id)) == GATED_TYPES
    assert types_of(of(got, b_id)) == GATED_TYPES
    assert_increasing(got)
    # Interleaved: b started before a ended.
    index = {(u.task_id, u.type): i for i, u in enumerate(got)}
    assert index[(b_id, "taskStart")] < index[(a_id, "taskEnd")] < index[(b_id, "taskEnd")]
    for task_id, key in ((a_id, key_a), (b_id, key_b)):
        for update in of(got, task_id):
            assert update.context.task_id == task_id
            assert update.context.input == {"gate": key}
            assert update.incomplete is False
        end = of(got, task_id)[-1]
        assert end.context.result == {"opened": key}
        assert dict(end.context.node_data) == {"wait": {"opened": key}}
    assert of(got, a_id) == list(a.updates(timeout=5))
    assert of(got, b_id) == list(b.updates(timeout=5))


def test_watcher_started_after_a_task_began_marks_it_incomplete(pclient: Client) -> None:
    key = uuid.uuid4().hex
    gate(key)
    try:
        early = Task("gated", {"gate": key}, client=pclient)
        early_id = early.finalized(timeout=5)
        assert [u.type for u in _until_node_start(early)] == ["taskStart", "nodeStart"]
        time.sleep(0.02)
        with connected_watcher(pclient, since=datetime.now()) as watcher:
            late = Task("echo", {"late": True}, client=pclient)
            late_id = late.finalized(timeout=5)
            got = collect(watcher, {late_id})
            gate(key).set()
            got += collect(watcher, {early_id})
    finally:
        gate(key).set()
    missed = of(got, early_id)
    assert types_of(missed) == ["nodeUpdate", "nodeEnd", "taskEnd"]
    assert [u.incomplete for u in missed] == [True, True, True]
    # What came before the watcher is not in the context.
    assert missed[-1].context.input is None
    assert missed[-1].context.result == {"opened": key}
    assert dict(missed[-1].context.node_data) == {"wait": {"opened": key}}
    seen = of(got, late_id)
    assert types_of(seen) == ECHO_TYPES
    assert [u.incomplete for u in seen] == [False] * 5
    assert seen[-1].context.input == {"late": True}


def _until_node_start(task: Task) -> list[Update]:
    seen: list[Update] = []
    for update in task.updates(timeout=5):
        seen.append(update)
        if update.type == "nodeStart":
            return seen
    raise AssertionError(f"no nodeStart: {types_of(seen)}")


def _run_two(c: Client) -> tuple[Task, Task]:
    first = Task("echo", {"n": 1}, client=c)
    first.result(timeout=5)
    second = Task("greet", GREET_INPUT, client=c)
    second.result(timeout=5)
    return first, second


@pytest.mark.parametrize(
    "since",
    [
        None,
        date.today() - timedelta(days=1),
        "2020-01-01",
        "2020-01-01T00:00:00Z",
        datetime(2020, 1, 1, tzinfo=timezone.utc),
    ],
    ids=["none", "date", "date-string", "iso-z", "aware-datetime"],
)
def test_since_in_the_past_replays_history(pclient: Client, since: Any) -> None:
    first, second = _run_two(pclient)
    ids = {first.task_id(timeout=0), second.task_id(timeout=0)}
    with connected_watcher(pclient, since=since) as watcher:
        got = collect(watcher, ids)
        with pytest.raises(TaskTimeoutError):
            next(watcher.updates(timeout=0.2))  # nothing else: no repeats
    expected = list(first.updates(timeout=5)) + list(second.updates(timeout=5))
    assert got == expected
    assert [u.incomplete for u in got] == [False] * 14


def test_since_a_date_in_the_future_sees_nothing(pclient: Client) -> None:
    _run_two(pclient)
    with connected_watcher(pclient, since=date.today() + timedelta(days=2)) as watcher:
        Task("echo", client=pclient).result(timeout=5)
        with pytest.raises(TaskTimeoutError):
            next(watcher.updates(timeout=0.3))


@pytest.mark.parametrize("style", ["naive-iso", "utc-z", "datetime"])
def test_since_a_moment_sees_only_what_came_after(pclient: Client, style: str) -> None:
    before = Task("echo", {"when": "before"}, client=pclient)
    before.result(timeout=5)
    time.sleep(0.02)
    moment = datetime.now()
    since: Any = {
        "naive-iso": moment.isoformat(),
        "utc-z": moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z",
        "datetime": moment,
    }[style]
    time.sleep(0.02)
    after = Task("echo", {"when": "after"}, client=pclient)
    after_id = after.task_id(timeout=5)
    after.result(timeout=5)
    with connected_watcher(pclient, since=since) as watcher:
        got = collect(watcher, {after_id})
    assert {u.task_id for u in got} == {after_id}
    assert got == list(after.updates(timeout=5))


@pytest.mark.parametrize("since", ["yesterday", "2024-13-01", 5, ["2024-01-01"]])
def test_malformed_since_is_refused(pclient: Client, since: Any) -> None:
    before = {t for t in threading.enumerate() if t.name == "requence-task-watcher"}
    with pytest.raises(ConfigurationError) as info:
        watch_tasks(since, client=pclient)
    assert "since must be" in str(info.value)
    after = {t for t in threading.enumerate() if t.name == "requence-task-watcher"}
    assert after <= before


# --- only -------------------------------------------------------------------------------------


def test_only_task_end(pclient: Client) -> None:
    with connected_watcher(pclient, only=["taskEnd"]) as watcher:
        failing = Task("fail", {"name": "F"}, client=pclient)
        failing_id = failing.task_id(timeout=5)
        with pytest.raises(TaskFailedError):
            failing.result(timeout=5)
        ok = Task("greet", GREET_INPUT, client=pclient)
        ok_id = ok.task_id(timeout=5)
        got = collect(watcher, {ok_id})
        with pytest.raises(TaskTimeoutError):
            next(watcher.updates(timeout=0.2))
    assert types_of(got) == ["taskEnd"]
    assert got[0].task_id == ok_id
    assert got[0].position == list(ok.updates(timeout=5))[-1].position
    assert isinstance(got[0], TaskEndUpdate)
    assert got[0].result == {"message": "Hello, Wat!"}
    # It never saw the task's taskStart.
    assert got[0].incomplete is True
    assert failing_id not in {u.task_id for u in got}


def test_only_several_types_and_a_single_string(pclient: Client) -> None:
    with (
        connected_watcher(pclient, only=["taskEnd", "taskError"]) as both,
        connected_watcher(pclient, only="taskError") as errors,
    ):
        failing = Task("fail", {"name": "F"}, client=pclient)
        failing_id = failing.task_id(timeout=5)
        ok = Task("echo", client=pclient)
        ok_id = ok.task_id(timeout=5)
        got = collect(both, {failing_id, ok_id})
        got_errors = collect(errors, {failing_id})
    assert sorted((u.task_id, u.type) for u in got) == sorted(
        [(failing_id, "taskError"), (ok_id, "taskEnd")]
    )
    assert [(u.task_id, u.type) for u in got_errors] == [(failing_id, "taskError")]
    assert isinstance(got_errors[0], TaskErrorUpdate)
    assert got_errors[0].reason == "node 'boom' failed: the boiler exploded"


@pytest.mark.parametrize(
    ("only", "named"),
    [(["taskEnd", "taskFinished"], "taskFinished"), (["TASKEND"], "TASKEND"), ([], "none given")],
)
def test_only_with_an_unknown_type_is_refused(pclient: Client, only: Any, named: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        watch_tasks(datetime.now(), only=only, client=pclient)
    assert f"unknown: {named}" in str(info.value)
    assert "taskStart" in str(info.value)  # it says which names are known


# --- stop and the context manager --------------------------------------------------------------


def _timed_stop(watcher: TaskWatcher, after: float) -> list[float]:
    """Stop ``watcher`` from another thread after ``after`` s; returns [the moment]."""
    stopped_at: list[float] = []

    def stop() -> None:
        stopped_at.append(time.monotonic())
        watcher.stop()

    threading.Timer(after, stop).start()
    return stopped_at


def _iterate_until_end(watcher: TaskWatcher, bound: float = 3.0) -> tuple[list[Update], float]:
    """Iterate until the watcher ends; (updates, moment it ended). Fails after ``bound`` s."""
    got: list[Update] = []
    try:
        for update in watcher.updates(timeout=bound):
            got.append(update)
    except TaskTimeoutError:
        raise AssertionError(f"iteration still blocked {bound} s after the last update") from None
    return got, time.monotonic()


def test_stop_from_another_thread_ends_a_blocked_iteration(pclient: Client) -> None:
    watcher = connected_watcher(pclient)
    try:
        stopped_at = _timed_stop(watcher, 0.3)
        got, ended = _iterate_until_end(watcher)
        assert got == []
        assert ended - stopped_at[0] < 1.0
        wait_until(lambda: not watcher.running, timeout=1, what="the watcher thread to end")
        assert watcher.error is None
        assert repr(watcher) == "<requence_task.TaskWatcher stopped>"
    finally:
        watcher.stop()


def test_stop_keeps_what_was_received(pclient: Client) -> None:
    queued: list[Update] = []
    watcher = connected_watcher(pclient, on_update=queued.append)
    try:
        task = Task("echo", {"kept": 1}, client=pclient)
        task_id = task.task_id(timeout=5)
        task.result(timeout=5)
        wait_until(lambda: len(queued) == 5, what="the updates to arrive")
        time.sleep(0.05)  # on_update runs just before an update is queued
        watcher.stop()
        got, _ = _iterate_until_end(watcher)
    finally:
        watcher.stop()
    assert [(u.task_id, u.type) for u in got] == [(task_id, t) for t in ECHO_TYPES]
    # Iterating again after the end ends at once.
    assert list(watcher.updates(timeout=1)) == []


def test_context_manager_stops_it(pclient: Client) -> None:
    with connected_watcher(pclient) as watcher:
        assert watcher.running is True
        assert repr(watcher) == "<requence_task.TaskWatcher running>"
        task = Task("echo", client=pclient)
        got = collect(watcher, {task.task_id(timeout=5)})
    exited = time.monotonic()
    assert types_of(got) == ECHO_TYPES
    assert watcher.running is False
    rest, ended = _iterate_until_end(watcher)
    assert rest == []
    assert ended - exited < 1.0
    assert watcher.error is None


def test_context_manager_left_right_away_stops_it(pclient: Client) -> None:
    # `with watch_tasks(...)` left at once (an exception, an early return): the
    # stream may still be connecting when stop() comes.
    started = time.monotonic()
    with watch_tasks(datetime.now(), client=pclient) as watcher:
        pass
    exited = time.monotonic()
    assert exited - started < 1.0, f"leaving the with block took {exited - started:.2f} s"
    try:
        assert watcher.running is False
        got, ended = _iterate_until_end(watcher)
        assert got == []
        assert ended - exited < 1.0
    finally:
        watcher.stop()


def test_stop_while_the_stream_is_connecting() -> None:
    with own_server() as rq, make_client(rq.token_for("slow")) as c:
        rq.faults.latency = 0.5  # every request, the watch-all one too, is answered late
        watcher = watch_tasks(datetime.now(), client=c)
        try:
            stopped_at = _timed_stop(watcher, 0.1)
            got, ended = _iterate_until_end(watcher)
            assert got == []
            assert ended - stopped_at[0] < 1.0
            wait_until(lambda: not watcher.running, timeout=1, what="the watcher thread to end")
        finally:
            rq.faults.latency = 0
            watcher.stop()


def test_stop_while_the_watcher_retries_an_ack() -> None:
    with (
        own_server() as rq,
        make_client(rq.access_token, retry=RetryPolicy(budget=4, initial_backoff=0.05)) as c,
    ):
        watcher = connected_watcher(c)
        try:
            rq.faults.fail_next(10_000, endpoint="ack")  # Requence unreachable for acks
            task = Task("echo", require_ack=True, client=c)
            task.finalized(timeout=5)
            wait_until(
                lambda: get_task(task.task_id(), client=c).status is TaskStatus.AWAITING_DELIVERY,
                what="the task to end",
            )
            time.sleep(0.3)  # the watcher is retrying its ack now
            stopped_at = _timed_stop(watcher, 0.0)
            _, ended = _iterate_until_end(watcher, bound=10)
            assert ended - stopped_at[0] < 1.0
        finally:
            rq.faults.clear()
            watcher.stop()


# --- callbacks ----------------------------------------------------------------------------------


def test_on_update_gets_each_update_in_order(pclient: Client) -> None:
    called: list[Update] = []
    threads: set[str] = set()

    def on_update(update: Update) -> None:
        called.append(update)
        threads.add(threading.current_thread().name)

    with connected_watcher(pclient, on_update=on_update) as watcher:
        task = Task("greet", GREET_INPUT, client=pclient)
        got = collect(watcher, {task.task_id(timeout=5)})
    assert types_of(got) == GREET_TYPES
    assert len(called) == len(got)
    assert all(a is b for a, b in zip(called, got, strict=True))
    assert threads == {"requence-task-watcher"}


def test_a_raising_on_update_does_not_end_the_watcher(
    pclient: Client, caplog: pytest.LogCaptureFixture
) -> None:
    def on_update(update: Update) -> None:
        raise RuntimeError("callback bug")

    caplog.set_level(logging.ERROR, logger="requence_task")
    with connected_watcher(pclient, on_update=on_update) as watcher:
        task = Task("echo", client=pclient)
        got = collect(watcher, {task.task_id(timeout=5)})
        assert watcher.running is True
    assert types_of(got) == ECHO_TYPES
    messages = [r.getMessage() for r in caplog.records if r.name == "requence_task"]
    assert messages.count("the on_update callback of a task watcher raised") == 5


def test_on_connect_is_called(pclient: Client) -> None:
    connects: list[float] = []
    with connected_watcher(pclient, on_connect=lambda: connects.append(time.monotonic())):
        time.sleep(0.2)
    assert len(connects) == 1


def test_cut_streams_resume_with_every_update_once_in_order() -> None:
    connects: list[str] = []
    reconnecting: list[tuple[int, float]] = []
    with own_server() as rq, make_client(rq.access_token) as c:
        rq.faults.cut_streams_after = 2  # every stream ends (cleanly) after 2 events
        with connected_watcher(
            c,
            on_connect=lambda: connects.append(threading.current_thread().name),
            on_reconnecting=lambda attempt, delay: reconnecting.append((attempt, delay)),
        ) as watcher:
            greet = Task("greet", GREET_INPUT, client=c)
            echo = Task("echo", {"e": 1}, client=c)
            ids = {greet.finalized(timeout=5), echo.finalized(timeout=5)}
            got = collect(watcher, ids)
            # 14 updates, 2 a stream: 7 streams cut, and the 8th stays open.
            wait_until(lambda: len(connects) == 8, what="the 8th connection")
            time.sleep(0.1)
            with pytest.raises(TaskTimeoutError):
                next(watcher.updates(timeout=0.2))
        stored = rq.store.project_events("default", after=None, since=None, types=None, limit=100)
    assert [(u.position, u.type, u.task_id) for u in got] == [
        (e.position, e.type, e.task_id) for e in stored
    ]
    assert len(got) == 14
    assert_increasing(got)
    assert types_of(of(got, greet.task_id())) == GREET_TYPES
    assert types_of(of(got, echo.task_id())) == ECHO_TYPES
    assert connects == ["requence-task-watcher"] * 8
    # A stream cut after progress is resumed at once: attempt 1, no delay, each time.
    assert reconnecting == [(1, 0.0)] * 7
    assert [u.incomplete for u in got] == [False] * 14
    assert of(got, greet.task_id())[-1].context.input == GREET_INPUT


def test_unreachable_at_first_then_connects_with_the_same_since() -> None:
    reconnecting: list[tuple[int, float]] = []
    retry = RetryPolicy(budget=5, initial_backoff=0.05, max_backoff=0.1)
    with own_server() as rq, make_client(rq.access_token, retry=retry) as c:
        before = Task("echo", {"when": "before"}, client=c)
        before.result(timeout=5)
        time.sleep(0.02)
        since = datetime.now()
        rq.faults.fail_next(2, status=503, endpoint="watch-all")
        with connected_watcher(
            c,
            since=since,
            on_reconnecting=lambda attempt, delay: reconnecting.append((attempt, delay)),
        ) as watcher:
            assert rq.faults.pending_failures == 0
            after = Task("echo", {"when": "after"}, client=c)
            after_id = after.task_id(timeout=5)
            got = collect(watcher, {after_id})
        # The retried request kept `since`: nothing from before it.
        assert got == list(after.updates(timeout=5))
    assert [a for a, _ in reconnecting] == [1, 2]
    assert all(0 < d <= 0.1 for _, d in reconnecting), reconnecting


def test_on_error_when_the_server_stops() -> None:
    errors: list[BaseException] = []
    reconnecting: list[tuple[int, float]] = []
    with own_server() as rq:
        c = make_client(rq.access_token, retry=RetryPolicy(budget=0.5, initial_backoff=0.02))
        try:
            watcher = connected_watcher(
                c,
                on_error=errors.append,
                on_reconnecting=lambda attempt, delay: reconnecting.append((attempt, delay)),
            )
            task = Task("echo", {"before": "stop"}, client=c)
            task_id = task.task_id(timeout=5)
            task.result(timeout=5)
            got = collect(watcher, {task_id})
            stopping = time.monotonic()
            rq.stop()
            with pytest.raises(RequenceUnreachableError) as info:
                for update in watcher.updates(timeout=5):
                    got.append(update)
            gave_up = time.monotonic() - stopping
            # The budget (0.5 s of consecutive failures) ran out, not much more.
            assert 0.5 <= gave_up < 3.0, (gave_up, reconnecting)
            err = info.value
            assert errors == [err]
            assert watcher.error is err
            assert err.status is None  # refused connections: no HTTP status
            assert "the stream of all tasks" in str(err)
            assert types_of(got) == ECHO_TYPES
            assert len(reconnecting) >= 2
            assert reconnecting[0] == (1, 0.0)  # resumed at once after the clean end
            assert [a for a, _ in reconnecting[1:]] == list(range(1, len(reconnecting)))
            wait_until(lambda: not watcher.running, timeout=1, what="the watcher thread to end")
            # Iterating again raises the same error again.
            with pytest.raises(RequenceUnreachableError) as again:
                next(watcher.updates(timeout=1))
            assert again.value is err
        finally:
            c.close()


def test_unreachable_from_the_start(dead_token: str) -> None:
    errors: list[BaseException] = []
    with make_client(dead_token, retry=RetryPolicy(budget=0.3, initial_backoff=0.02)) as c:
        started = time.monotonic()
        with (
            watch_tasks(datetime.now(), client=c, on_error=errors.append) as watcher,
            pytest.raises(RequenceUnreachableError) as info,
        ):
            list(watcher.updates(timeout=5))
        assert time.monotonic() - started < 2.0
    assert errors == [info.value]
    assert info.value.attempts >= 2


def test_a_refused_token_ends_the_watcher(server: LocalRequence) -> None:
    errors: list[BaseException] = []
    token = encode_access_token(f"unknown-{uuid.uuid4().hex}", server.base_url)
    with make_client(token) as c:
        started = time.monotonic()
        with (
            watch_tasks(datetime.now(), client=c, on_error=errors.append) as watcher,
            pytest.raises(AuthenticationError) as info,
        ):
            list(watcher.updates(timeout=5))
        assert time.monotonic() - started < 1.0  # not retried
    assert info.value.status == 401
    assert errors == [info.value]
    assert watcher.error is info.value


# --- acks and isolation --------------------------------------------------------------------------


def test_watcher_acks_require_ack_tasks(pclient: Client) -> None:
    with connected_watcher(pclient) as watcher:
        ok = Task("echo", {"ack": "me"}, require_ack=True, client=pclient)
        failing = Task("fail", {"name": "G"}, require_ack=True, client=pclient)
        plain = Task("echo", {"ack": "no"}, client=pclient)
        ids = [ok.finalized(timeout=5), failing.finalized(timeout=5), plain.finalized(timeout=5)]
        got = collect(watcher, set(ids))
    ends = {u.task_id: u for u in got if u.is_terminal}
    assert isinstance(ends[ids[0]], TaskEndUpdate)
    assert ends[ids[0]].require_ack is True
    assert isinstance(ends[ids[1]], TaskErrorUpdate)
    assert ends[ids[1]].require_ack is True
    assert ends[ids[2]].require_ack is False  # type: ignore[attr-defined]
    # Nobody called result(): the watcher acked them.
    for task_id, status in zip(
        ids, (TaskStatus.SUCCESSFUL, TaskStatus.FAILED, TaskStatus.SUCCESSFUL), strict=True
    ):
        wait_until(
            lambda task_id=task_id, status=status: (
                get_task(task_id, client=pclient).status is status
            ),
            timeout=3,
            what=f"task {task_id} to become {status.value}",
        )


def test_watcher_acks_an_aborted_require_ack_task(pclient: Client, gate_key: str) -> None:
    with connected_watcher(pclient) as watcher:
        task = Task("gated", {"gate": gate_key}, require_ack=True, client=pclient)
        task_id = task.finalized(timeout=5)
        task.abort("no more")
        got = collect(watcher, {task_id})
    assert isinstance(got[-1], TaskAbortedUpdate)
    assert (got[-1].reason, got[-1].require_ack) == ("no more", True)
    wait_until(
        lambda: get_task(task_id, client=pclient).status is TaskStatus.STOPPED,
        timeout=3,
        what="the ack",
    )


def test_other_projects_tasks_never_appear(server: LocalRequence, pclient: Client) -> None:
    with (
        make_client(server.token_for("other")) as other,
        connected_watcher(pclient) as watcher,
        connected_watcher(pclient, since=None) as replaying,
        connected_watcher(other) as other_watcher,
    ):
        foreign = Task("greet", GREET_INPUT, client=other)
        foreign_id = foreign.task_id(timeout=5)
        foreign.result(timeout=5)
        Task("fail", {"name": "X"}, require_ack=True, client=other).finalized(timeout=5)
        sentinel = Task("echo", {"mine": True}, client=pclient)
        sentinel_id = sentinel.task_id(timeout=5)
        got = collect(watcher, {sentinel_id})
        got_replaying = collect(replaying, {sentinel_id})
        got_other = collect(other_watcher, {foreign_id})
    assert {u.task_id for u in got} == {sentinel_id}
    assert {u.task_id for u in got_replaying} == {sentinel_id}
    assert types_of(got) == ECHO_TYPES
    assert types_of(of(got_other, foreign_id)) == GREET_TYPES
    assert sentinel_id not in {u.task_id for u in got_other}


def test_two_watchers_each_see_everything(pclient: Client) -> None:
    with connected_watcher(pclient) as one, connected_watcher(pclient) as two:
        task = Task("greet", GREET_INPUT, client=pclient)
        task_id = task.task_id(timeout=5)
        got_one = collect(one, {task_id})
        got_two = collect(two, {task_id})
    assert got_one == got_two
    assert types_of(got_one) == GREET_TYPES


# --- time-outs and arguments ---------------------------------------------------------------------


def test_updates_timeout_when_idle(pclient: Client) -> None:
    with connected_watcher(pclient) as watcher:
        started = time.monotonic()
        with pytest.raises(TaskTimeoutError) as info:
            next(watcher.updates(timeout=0.2))
        waited = time.monotonic() - started
        assert 0.19 <= waited < 1.0
        assert isinstance(info.value, TimeoutError)
        assert info.value.timeout == 0.2
        assert "0.2 s" in str(info.value)
        # The watcher goes on.
        assert watcher.running is True
        task = Task("echo", client=pclient)
        got = collect(watcher, {task.task_id(timeout=5)})
    assert types_of(got) == ECHO_TYPES


def test_watch_tasks_with_an_access_token(server: LocalRequence) -> None:
    token = server.token_for(f"watch-token-{uuid.uuid4().hex}")
    try:
        with watch_tasks(datetime.now(), access_token=token) as watcher:
            task = Task("echo", {"t": 1}, access_token=token)
            got = collect(watcher, {task.task_id(timeout=5)})
        assert types_of(got) == ECHO_TYPES
    finally:
        default_client(token).close()


def test_wrong_arguments_are_refused(server: LocalRequence, pclient: Client) -> None:
    calls: list[tuple[Callable[[], Any], str]] = [
        (
            lambda: watch_tasks(None, access_token=server.access_token, client=pclient),
            "either client= or access_token=",
        ),
        (lambda: watch_tasks(None, client=pclient, on_update=5), "on_update must be callable"),
        (lambda: watch_tasks(None, client=pclient, on_connect="x"), "on_connect must be callable"),
        (
            lambda: watch_tasks(None, client=pclient, on_reconnecting=1),
            "on_reconnecting must be callable",
        ),
        (lambda: watch_tasks(None, client=pclient, on_error=[]), "on_error must be callable"),
        (lambda: watch_tasks(None, client="client"), "client must be a requence_task.Client"),
    ]
    for call, message in calls:
        with pytest.raises(ConfigurationError) as info:
            call()
        assert message in str(info.value)
