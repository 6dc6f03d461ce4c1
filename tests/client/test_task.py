"""``Task`` against the local Requence over real HTTP: creation, accessors,
updates, waiting from many threads, abort and protect, the futures view,
requireAck, branch warnings, typed results, and the shared pool and session."""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import re
import threading
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import attrs
import pytest

from requence_task import (
    BranchWarning,
    Client,
    NodeEndUpdate,
    NodeInfo,
    NodeStartUpdate,
    NodeUpdateUpdate,
    RetryPolicy,
    Task,
    TaskAbortedError,
    TaskAbortedUpdate,
    TaskEndUpdate,
    TaskError,
    TaskFailedError,
    TaskResult,
    TaskStartUpdate,
    TaskTimeoutError,
    Update,
)
from requence_task.local import LocalRequence

from ..conftest import Api
from ..local.templates_for_tests import gate
from .conftest import make_client, own_server, wait_until

GREET_INPUT = {"name": "A", "steps": 2}
GREET_CLASSES = [
    TaskStartUpdate,
    NodeStartUpdate,
    NodeUpdateUpdate,
    NodeEndUpdate,
    NodeStartUpdate,
    NodeUpdateUpdate,
    NodeUpdateUpdate,
    NodeEndUpdate,
    TaskEndUpdate,
]
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
GATED_TYPES = ["taskStart", "nodeStart", "nodeUpdate", "nodeEnd", "taskEnd"]
ALL_STATUSES = (
    "IDLE",
    "PENDING",
    "RUNNING",
    "SUCCESSFUL",
    "FAILED",
    "STOPPED",
    "AWAITING_DELIVERY",
)
POOL_THREAD = re.compile(r"requence-task-\d+$")


def types_of(updates: list[Update]) -> list[str]:
    return [u.type for u in updates]


def collect(task: Task, timeout: float = 5.0) -> list[Update]:
    """Every update of ``task`` (bounded per update)."""
    return list(task.updates(timeout=timeout))


def wait_started(task: Task) -> list[Update]:
    """Block until the gated task's node runs; returns the updates so far."""
    seen: list[Update] = []
    for update in task.updates(timeout=5):
        seen.append(update)
        if update.type == "nodeStart":
            return seen
    raise AssertionError(f"the task ended without starting its node: {types_of(seen)}")


def watch_requests(caplog: pytest.LogCaptureFixture, task_id: str) -> int:
    """How many watch requests for ``task_id`` the local server logged."""
    return sum(
        1
        for r in caplog.records
        if r.name == "requence_task.local" and f"POST /task/watch/{task_id} " in r.getMessage()
    )


def all_tasks(rq: LocalRequence) -> list[Any]:
    return rq.store.tasks_with_status(ALL_STATUSES)


# --- creation ------------------------------------------------------------------------------------


def test_constructor_returns_at_once_without_network_work() -> None:
    with own_server() as rq:
        rq.faults.latency = 0.5
        with make_client(rq.access_token) as c:
            started = time.perf_counter()
            task = Task("echo", {"x": 1}, client=c)
            elapsed = time.perf_counter() - started
            assert elapsed < 0.1, f"Task() took {elapsed:.3f} s"
            # Nothing came back yet: the prepare is still sleeping on the server.
            with pytest.raises(TaskTimeoutError):
                task.task_id(timeout=0)
            started = time.perf_counter()
            more = [Task("echo", {"x": i}, client=c, on_update=lambda u: None) for i in range(10)]
            elapsed = time.perf_counter() - started
            assert elapsed < 0.2, f"10 × Task(on_update=...) took {elapsed:.3f} s"
            rq.faults.latency = 0.0
            assert task.result(timeout=10).result == {"input": {"x": 1}}
            assert [t.result(timeout=10).result for t in more] == [
                {"input": {"x": i}} for i in range(10)
            ]


def test_accessors_happy_path(client: Client, server: LocalRequence) -> None:
    task = Task("greet", GREET_INPUT, client=client)
    task_id = task.task_id(timeout=5)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", task_id)
    assert task.task_url(timeout=5) == f"{server.base_url}/tasks/{task_id}"
    assert task.finalized(timeout=5) == task_id
    result = task.result(timeout=5)
    assert isinstance(result, TaskResult)
    assert result.task_id == task_id
    assert result.task_url == f"{server.base_url}/tasks/{task_id}"
    assert result.input == GREET_INPUT
    assert result.result == {"message": "Hello, A!"}
    assert dict(result.node_data) == {"greeter": {"message": "Hello, A!"}, "counter": {"step": 2}}
    assert result.get_node_data("greeter") == {"message": "Hello, A!"}
    assert result.get_node_data("counter") == {"step": 2}
    assert result.get_node_data("nobody") is None
    assert result.get_node_data("nobody", "fallback") == "fallback"
    assert result.get_node_error("greeter") is None
    assert dict(result.node_errors) == {}
    # Asking again gives the same answers, at once.
    assert task.result(timeout=0) == result
    assert task.task_id(timeout=0) == task_id
    assert task.finalized(timeout=0) == task_id
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        result.result = None  # type: ignore[misc]
    assert repr(task) == f"<requence_task.Task 'greet' id={task_id} succeeded>"


def test_result_of_optional_failing_node(client: Client) -> None:
    task = Task("optional-fail", client=client)
    result = task.result(timeout=5)
    assert result.result == {"saw_error": "the boiler exploded"}
    assert result.get_node_error("boom") == "the boiler exploded"
    assert result.get_node_error("after") is None
    assert result.get_node_data("after") == {"saw_error": "the boiler exploded"}
    assert result.get_node_data("boom") is None
    assert result.input is None


def test_priority_reaches_the_server_and_orders_the_queue(gate_key: str) -> None:
    with own_server(concurrency=1) as rq, make_client(rq.access_token) as c:
        blocker = Task("gated", {"gate": gate_key}, client=c)
        try:
            wait_started(blocker)  # the only worker is busy from now on
            queued = {p: Task("echo", {"p": p}, priority=p, client=c) for p in (0, 5, 10)}
            for task in queued.values():
                task.finalized(timeout=5)
        finally:
            gate(gate_key).set()
        assert blocker.result(timeout=5).result == {"opened": gate_key}
        node_start = {}
        for p, task in queued.items():
            assert task.result(timeout=5).result == {"input": {"p": p}}
            updates = collect(task)
            node_start[p] = next(u.position for u in updates if u.type == "nodeStart")
            # On the wire 0 is the most urgent: wire = 10 - priority.
            assert rq.store.task(task.task_id()).priority == 10 - p
        # Created in the order 0, 5, 10, run in the order 10, 5, 0.
        assert sorted(node_start, key=lambda p: node_start[p]) == [10, 5, 0]


def test_default_priority_is_five(client: Client, server: LocalRequence) -> None:
    task = Task("echo", client=client)
    assert server.store.task(task.finalized(timeout=5)).priority == 5


def test_name_reaches_the_server(client: Client, api: Api) -> None:
    named = Task("echo", name="nightly report ✓", client=client)
    unnamed = Task("echo", client=client)
    assert api.task(named.finalized(timeout=5))["name"] == "nightly report ✓"
    assert api.task(unnamed.finalized(timeout=5))["name"] is None


# --- updates -------------------------------------------------------------------------------------


def test_iteration_types_positions_and_context(client: Client) -> None:
    before = datetime.now(timezone.utc)
    task = Task("greet", GREET_INPUT, client=client)
    updates = collect(task)
    task_id = task.task_id(timeout=0)
    assert types_of(updates) == GREET_TYPES
    assert [type(u) for u in updates] == GREET_CLASSES
    positions = [u.position for u in updates]
    assert all(isinstance(p, int) for p in positions)
    assert all(a < b for a, b in itertools.pairwise(positions)), positions
    assert {u.task_id for u in updates} == {task_id}
    for update in updates:
        ts = update.timestamp
        assert isinstance(ts, datetime)
        assert ts.tzinfo is not None and ts.utcoffset() is not None
        assert before.timestamp() - 1 <= ts.timestamp() <= time.time() + 1
        assert update.is_terminal is (update.type == "taskEnd")
        assert update.root_task_id is None
    assert [u.timestamp for u in updates] == sorted(u.timestamp for u in updates)

    start, greeter_start, greeter_data, greeter_end = updates[:4]
    counter_start, step1, step2, counter_end, end = updates[4:]
    assert isinstance(start, TaskStartUpdate) and start.input == GREET_INPUT
    assert isinstance(greeter_start, NodeStartUpdate)
    assert greeter_start.node.alias == "greeter" and greeter_start.node.type == "service"
    assert isinstance(greeter_start.node, NodeInfo)
    assert isinstance(greeter_data, NodeUpdateUpdate)
    assert greeter_data.node == greeter_start.node
    assert greeter_data.data == {"message": "Hello, A!"}
    assert greeter_data.output is None
    assert isinstance(greeter_end, NodeEndUpdate) and greeter_end.node == greeter_start.node
    assert isinstance(counter_start, NodeStartUpdate) and counter_start.node.alias == "counter"
    assert counter_start.node.id != greeter_start.node.id
    assert isinstance(step1, NodeUpdateUpdate) and isinstance(step2, NodeUpdateUpdate)
    assert (step1.node.alias, step1.data) == ("counter", {"step": 1})
    assert (step2.node.alias, step2.data) == ("counter", {"step": 2})
    assert counter_end.node == counter_start.node
    assert isinstance(end, TaskEndUpdate)
    assert end.result == {"message": "Hello, A!"}
    assert end.exit is None and end.require_ack is False

    # The context as it stood after each update, folded along the way.
    assert [u.context.task_id for u in updates] == [task_id] * 9
    assert [u.context.input for u in updates] == [GREET_INPUT] * 9
    assert [u.context.get_node_data("greeter") for u in updates] == [None, None] + [
        {"message": "Hello, A!"}
    ] * 7
    assert [u.context.get_node_data("counter") for u in updates] == [None] * 5 + [
        {"step": 1},
        {"step": 2},
        {"step": 2},
        {"step": 2},
    ]
    assert [u.context.result for u in updates] == [None] * 8 + [{"message": "Hello, A!"}]
    assert all(u.context.get_node_error("greeter") is None for u in updates)


def test_iterating_twice_gives_the_same_updates(client: Client) -> None:
    task = Task("greet", GREET_INPUT, client=client)
    first = collect(task)
    second = collect(task)
    third = list(task)  # __iter__, after the end: ends on its own
    assert types_of(first) == GREET_TYPES
    assert first == second == third
    assert [u.position for u in first] == [u.position for u in third]


def test_two_threads_iterate_at_once(client: Client, gate_key: str) -> None:
    task = Task("gated", {"gate": gate_key}, client=client)
    seen: dict[int, list[Update]] = {}
    errors: list[BaseException] = []
    both_started = threading.Barrier(3, timeout=5)

    def iterate(n: int) -> None:
        try:
            both_started.wait()
            seen[n] = collect(task)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=iterate, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    both_started.wait()
    wait_started(task)
    gate(gate_key).set()
    for thread in threads:
        thread.join(10)
    assert not errors
    assert types_of(seen[1]) == GATED_TYPES
    assert seen[1] == seen[2]
    assert seen[1][-1].result == {"opened": gate_key}  # type: ignore[attr-defined]


def streams_opened(caplog: pytest.LogCaptureFixture, task_id: str, shared: bool) -> int:
    """How many streams the server logged for ``task_id``: its own, or watch-all."""
    if not shared:
        return watch_requests(caplog, task_id)
    return sum(
        1
        for r in caplog.records
        if r.name == "requence_task.local" and "POST /task/watch-all " in r.getMessage()
    ) + 100 * watch_requests(caplog, task_id)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-stream", "own-stream"])
def test_many_waiters_share_one_stream(
    server: LocalRequence, gate_key: str, caplog: pytest.LogCaptureFixture, shared: bool
) -> None:
    caplog.set_level(logging.DEBUG, logger="requence_task.local")
    client = make_client(server.access_token, shared_stream=shared)
    task = Task("gated", {"gate": gate_key}, client=client)
    task_id = task.task_id(timeout=5)
    results: list[Any] = []
    errors: list[BaseException] = []
    iterated: list[Update] = []
    ready = threading.Barrier(102, timeout=10)

    def wait_result() -> None:
        try:
            ready.wait()
            results.append(task.result(timeout=10))
        except BaseException as err:
            errors.append(err)

    def iterate() -> None:
        try:
            ready.wait()
            iterated.extend(collect(task, timeout=10))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=wait_result) for _ in range(100)]
    threads.append(threading.Thread(target=iterate))
    for thread in threads:
        thread.start()
    ready.wait()
    time.sleep(0.1)
    gate(gate_key).set()
    for thread in threads:
        thread.join(15)
    assert not [t for t in threads if t.is_alive()]
    assert not errors
    assert len(results) == 100
    assert all(r == results[0] for r in results)
    assert results[0].result == {"opened": gate_key}
    assert results[0].task_id == task_id
    assert types_of(iterated) == GATED_TYPES
    assert streams_opened(caplog, task_id, shared) == 1
    client.close()


def test_on_update_sees_every_update_once_without_result(client: Client) -> None:
    got: list[Update] = []
    threads: set[str] = set()

    def on_update(update: Update) -> None:
        threads.add(threading.current_thread().name)
        got.append(update)

    task = Task("greet", GREET_INPUT, client=client, on_update=on_update)
    # Nobody calls result() or iterates: on_update alone starts the monitoring.
    wait_until(lambda: got and got[-1].is_terminal, what="the terminal update")
    time.sleep(0.05)
    assert types_of(got) == GREET_TYPES
    assert threading.current_thread().name not in threads
    iterated = collect(task)
    assert len(iterated) == len(got)
    # The same updates (a finished handle keeps records, not typed updates: an
    # iterator after the end builds equal ones, not the very objects).
    assert iterated == got
    assert [u.position for u in iterated] == [u.position for u in got]
    assert task.result(timeout=1).result == {"message": "Hello, A!"}
    assert len(got) == 9  # nothing delivered twice


def test_on_update_that_raises_does_not_stop_the_task(client: Client) -> None:
    calls: list[str] = []

    def broken(update: Update) -> None:
        calls.append(update.type)
        raise RuntimeError("callback bug")

    task = Task("greet", GREET_INPUT, client=client, on_update=broken)
    assert task.result(timeout=5).result == {"message": "Hello, A!"}
    assert calls == GREET_TYPES


def test_updates_timeout_raises_and_the_task_goes_on(client: Client, gate_key: str) -> None:
    task = Task("gated", {"gate": gate_key}, client=client)
    seen: list[Update] = []
    started = time.monotonic()
    with pytest.raises(TaskTimeoutError) as info:
        for update in task.updates(timeout=0.2):
            seen.append(update)
    assert isinstance(info.value, TimeoutError)
    assert info.value.timeout == 0.2
    assert types_of(seen) == ["taskStart", "nodeStart"]
    assert time.monotonic() - started < 3
    gate(gate_key).set()
    assert task.result(timeout=5).result == {"opened": gate_key}
    assert types_of(collect(task)) == GATED_TYPES


def test_result_timeout_then_success(client: Client, gate_key: str) -> None:
    task = Task("gated", {"gate": gate_key}, client=client)
    started = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        task.result(timeout=0.2)
    elapsed = time.monotonic() - started
    assert isinstance(info.value, TaskTimeoutError)
    assert 0.19 <= elapsed < 1.0, elapsed
    assert "the task goes on" in str(info.value)
    # Waiting again waits again; the task was not stopped.
    with pytest.raises(TaskTimeoutError):
        task.result(timeout=0.05)
    assert task.finalized(timeout=5) == task.task_id()
    gate(gate_key).set()
    assert task.result(timeout=5).result == {"opened": gate_key}


@pytest.mark.parametrize("shared", [True, False], ids=["shared-stream", "own-stream"])
def test_finalized_never_opens_a_stream(
    server: LocalRequence, caplog: pytest.LogCaptureFixture, shared: bool
) -> None:
    caplog.set_level(logging.DEBUG, logger="requence_task.local")
    client = make_client(server.access_token, shared_stream=shared)
    task = Task("echo", {"q": 1}, client=client)
    task_id = task.finalized(timeout=5)
    assert task.task_url(timeout=5) == f"{server.base_url}/tasks/{task_id}"
    time.sleep(0.2)
    messages = [r.getMessage() for r in caplog.records if r.name == "requence_task.local"]
    # The positive control: the server's log does show this task's finalize.
    assert sum(f"POST /task/finalize/{task_id} -> 200" in m for m in messages) == 1
    assert streams_opened(caplog, task_id, shared) == 0
    # Only result() (or iteration) opens it, once.
    task.result(timeout=5)
    assert streams_opened(caplog, task_id, shared) == 1
    client.close()


# --- abort and protect ---------------------------------------------------------------------------


def test_abort_running_task(client: Client, api: Api, gate_key: str) -> None:
    task = Task("gated", {"gate": gate_key}, client=client)
    task_id = task.task_id(timeout=5)
    wait_started(task)
    task.abort("changed my mind")
    with pytest.raises(TaskAbortedError) as info:
        task.result(timeout=5)
    err = info.value
    assert isinstance(err, TaskError)
    assert err.reason == "changed my mind"
    assert err.task_id == task_id
    assert err.template == "gated"
    assert str(err) == f"Task {task_id} was aborted: changed my mind"
    updates = collect(task)
    assert types_of(updates) == ["taskStart", "nodeStart", "taskAborted"]
    assert isinstance(updates[-1], TaskAbortedUpdate)
    assert updates[-1].reason == "changed my mind"
    info_ = api.task(task_id)
    assert (info_["status"], info_["statusText"]) == ("STOPPED", "changed my mind")


def test_abort_without_reason(client: Client, gate_key: str) -> None:
    task = Task("gated", {"gate": gate_key}, client=client)
    wait_started(task)
    task.abort()
    with pytest.raises(TaskAbortedError) as info:
        task.result(timeout=5)
    assert info.value.reason is None
    assert str(info.value) == f"Task {task.task_id()} was aborted"


def test_abort_while_finalize_is_slow(gate_key: str) -> None:
    with own_server() as rq, make_client(rq.access_token) as c:
        rq.faults.latency = 0.3
        task = Task("gated", {"gate": gate_key}, client=c)
        task_id = task.task_id(timeout=5)
        task.abort("too late")
        with pytest.raises(TaskAbortedError) as info:
            task.result(timeout=5)
        rq.faults.latency = 0.0
        # Whichever came first on the server: the finalize (then a taskAborted
        # update) or the abort (then finalize answers 410).
        assert info.value.task_id == task_id
        row = rq.store.task(task_id)
        assert row is not None and row.status == "STOPPED"
        assert row.status_text == "too late"
        assert [t.id for t in all_tasks(rq)] == [task_id]


def test_abort_lands_before_finalize(gate_key: str) -> None:
    # The first finalize meets a 503, and its retry waits 0.3 s: the abort lands first.
    slow_retry = RetryPolicy(budget=5, initial_backoff=0.3, jitter=0)
    with own_server() as rq, make_client(rq.access_token, retry=slow_retry) as c:
        rq.faults.fail_next(1, endpoint="finalize")
        task = Task("echo", {"x": 1}, client=c)
        task_id = task.task_id(timeout=5)
        task.abort("too late")
        with pytest.raises(TaskAbortedError) as info:
            task.finalized(timeout=5)
        assert rq.faults.pending_failures == 0
        with pytest.raises(TaskAbortedError) as from_result:
            task.result(timeout=5)
        assert from_result.value.task_id == task_id
        row = rq.store.task(task_id)
        assert row is not None
        assert (row.status, row.finalized_at, row.status_text) == ("STOPPED", None, "too late")
        assert [t.id for t in all_tasks(rq)] == [task_id]
        assert [
            e.type for e in rq.store.task_events(task_id, after=None, since=None, limit=100)
        ] == ["taskAborted"]
        err = info.value
        assert err.task_id == task_id
        assert err.template == "echo"
        # The reason given to abort() is the task's reason, whichever way the abort landed.
        assert err.reason == "too late"


def test_protect_while_finalize_in_flight() -> None:
    slow_retry = RetryPolicy(budget=5, initial_backoff=0.3, jitter=0)
    with (
        own_server(retention=0.2, cleanup_interval=0.05) as rq,
        make_client(rq.access_token, retry=slow_retry) as c,
    ):
        api = Api(rq.access_token)
        try:
            rq.faults.fail_next(1, endpoint="finalize")
            protected = Task("echo", {"k": "protected"}, client=c)
            protected_id = protected.task_id(timeout=5)
            # Finalize still in flight: a time-out (once its first attempt got the 503,
            # one that says Requence is unreachable meanwhile).
            with pytest.raises(TimeoutError):
                protected.finalized(timeout=0)
            protected.protect()
            assert rq.store.task(protected_id).protected is True
            assert protected.result(timeout=5).result == {"input": {"k": "protected"}}
            ended = time.monotonic()
            plain = Task("echo", {"k": "plain"}, client=c)
            plain_id = plain.task_id(timeout=5)
            assert plain.result(timeout=5).result == {"input": {"k": "plain"}}
            wait_until(
                lambda: api.get(f"/task/{plain_id}").status_code == 404,
                timeout=3,
                what="cleanup of the unprotected task",
            )
            time.sleep(max(0.0, ended + 0.5 - time.monotonic()))
            answer = api.get(f"/task/{protected_id}")
            assert answer.status_code == 200
            assert answer.json()["status"] == "SUCCESSFUL"
        finally:
            api.close()


def test_abort_of_finished_task_is_a_409(client: Client) -> None:
    task = Task("echo", client=client)
    task.result(timeout=5)
    with pytest.raises(TaskError) as info:
        task.abort("too late now")
    err = info.value
    assert type(err) is TaskError
    assert err.status == 409
    assert err.task_id == task.task_id()
    assert "already ended" in str(err)
    # The task's outcome is unchanged.
    assert task.result(timeout=0).result == {"input": None}


# --- failure -------------------------------------------------------------------------------------


def test_failing_task(client: Client, api: Api) -> None:
    task = Task("fail", {"name": "B"}, client=client)
    task_id = task.finalized(timeout=5)  # it started: no creation error
    with pytest.raises(TaskFailedError) as info:
        task.result(timeout=5)
    err = info.value
    assert isinstance(err, TaskError)
    assert err.reason == "node 'boom' failed: the boiler exploded"
    assert err.task_id == task_id
    assert err.template == "fail"
    assert err.status is None
    assert str(err) == f"Task {task_id} failed: node 'boom' failed: the boiler exploded"
    assert err.context is not None
    assert err.context.get_node_data("first") == {"message": "Hello, B!"}
    assert err.context.get_node_error("boom") == "the boiler exploded"
    assert err.context.input == {"name": "B"}
    assert types_of(collect(task))[-2:] == ["nodeError", "taskError"]
    assert api.task(task_id)["status"] == "FAILED"
    # The same error every time.
    with pytest.raises(TaskFailedError) as again:
        task.result(timeout=0)
    assert again.value is err


# --- concurrent.futures view ---------------------------------------------------------------------


def test_done_and_callbacks(client: Client, gate_key: str) -> None:
    task = Task("gated", {"gate": gate_key}, client=client)
    assert task.done() is False
    calls: list[Task] = []
    task.add_done_callback(calls.append)
    assert isinstance(task.future, concurrent.futures.Future)
    gate(gate_key).set()
    assert task.future.result(timeout=5).result == {"opened": gate_key}
    wait_until(lambda: calls, what="the done callback")
    assert task.done() is True
    late: list[Task] = []
    task.add_done_callback(late.append)  # already done: called at once
    assert late == [task]
    time.sleep(0.05)
    assert calls == [task]
    assert late == [task]


def test_the_future_is_one_and_cancelling_it_spoils_nothing(client: Client, gate_key: str) -> None:
    task = Task("gated", {"gate": gate_key}, client=client)
    future = task.future
    assert task.future is future
    assert future.cancel()  # the user's own business: the task and result() go on
    gate(gate_key).set()
    assert task.result(timeout=5).result == {"opened": gate_key}
    assert task.done() and future.cancelled()


def test_done_of_a_failing_task(client: Client) -> None:
    task = Task("fail", {"name": "F"}, client=client)
    error = task.future.exception(timeout=5)
    assert isinstance(error, TaskFailedError)
    assert task.done() is True


def test_futures_wait_and_as_completed(client: Client) -> None:
    tasks = [Task("echo", {"i": i}, client=client) for i in range(10)]
    done, not_done = concurrent.futures.wait([t.future for t in tasks], timeout=10)
    assert not not_done
    assert len(done) == 10
    more = [Task("echo", {"j": j}, client=client) for j in range(10)]
    by_future = {t.future: j for j, t in enumerate(more)}
    finished = []
    for future in concurrent.futures.as_completed(by_future, timeout=10):
        j = by_future[future]
        assert future.result().result == {"input": {"j": j}}
        finished.append(j)
    assert sorted(finished) == list(range(10))
    assert [t.result(timeout=0).result for t in tasks] == [{"input": {"i": i}} for i in range(10)]


# --- requireAck and branches ---------------------------------------------------------------------


def test_require_ack_success(client: Client, api: Api) -> None:
    task = Task("echo", {"x": 1}, require_ack=True, client=client)
    assert task.result(timeout=5).result == {"input": {"x": 1}}
    end = collect(task)[-1]
    assert isinstance(end, TaskEndUpdate) and end.require_ack is True
    assert api.wait_status(task.task_id(), "SUCCESSFUL", timeout=2)["status"] == "SUCCESSFUL"


def test_require_ack_failure(client: Client, api: Api) -> None:
    task = Task("fail", {"name": "C"}, require_ack=True, client=client)
    with pytest.raises(TaskFailedError):
        task.result(timeout=5)
    assert api.wait_status(task.task_id(), "FAILED", timeout=2)["status"] == "FAILED"


def test_without_require_ack_nothing_is_held(client: Client, api: Api) -> None:
    task = Task("echo", {"x": 2}, client=client)
    task_id = task.finalized(timeout=5)
    # Nobody watches: the task still ends SUCCESSFUL, not AWAITING_DELIVERY.
    api.wait_status(task_id, "SUCCESSFUL", timeout=3)


def _branch_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, BranchWarning)]


def test_branch_warning_once_per_client(server: LocalRequence) -> None:
    with make_client(server.access_token) as c, warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(3):
            assert Task("dev-branch", client=c).result(timeout=5).result == 1
    found = _branch_warnings(record)
    assert len(found) == 1, found
    assert "'dev-branch'" in found[0] and "'feature-x'" in found[0]
    assert "suppress_branch_warning=True" in found[0]
    # A live template never warns; another client warns again, once.
    with make_client(server.access_token) as c, warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        Task("echo", client=c).result(timeout=5)
        assert _branch_warnings(record) == []
        Task("dev-branch", client=c).result(timeout=5)
        Task("dev-branch", client=c).result(timeout=5)
    assert len(_branch_warnings(record)) == 1


def test_branch_warning_suppressed(server: LocalRequence) -> None:
    with make_client(server.access_token) as c, warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(2):
            Task("dev-branch", client=c, suppress_branch_warning=True).result(timeout=5)
        assert _branch_warnings(record) == []
        # Suppressing did not use up the client's one warning.
        Task("dev-branch", client=c).result(timeout=5)
    assert len(_branch_warnings(record)) == 1


# --- typed results -------------------------------------------------------------------------------


@attrs.frozen
class Person:
    name: str
    age: int


@attrs.frozen
class Echoed:
    input: Person


@attrs.frozen
class Counted:
    count: int


@attrs.frozen
class EchoedWrong:
    input: Counted


def test_result_as(client: Client) -> None:
    result = Task("echo", {"name": "Ada", "age": 36}, client=client).result(timeout=5)
    assert result.result_as(Echoed) == Echoed(Person("Ada", 36))
    with pytest.raises(ValueError) as info:
        result.result_as(EchoedWrong)
    message = str(info.value)
    assert "count" in message
    assert "result.input.count" in message
    assert "EchoedWrong" in message


def test_result_as_wrong_type_of_value(client: Client) -> None:
    result = Task("echo", {"name": "Ada", "age": "old"}, client=client).result(timeout=5)
    with pytest.raises(ValueError) as info:
        result.result_as(Echoed)
    assert "result.input.age" in str(info.value)
    assert "name" not in str(info.value).split(":", 1)[1]  # only the field that is wrong


# --- the shared pool and session -----------------------------------------------------------------


def _sample_threads(
    client: Client, stop: threading.Event, seen: list[tuple[int, int]], before: set[Any]
) -> None:
    while not stop.is_set():
        # Pool threads started since the client was made (other clients have their own).
        named = sum(
            1 for t in threading.enumerate() if POOL_THREAD.match(t.name) and t not in before
        )
        seen.append((client._pool.thread_count, named))
        time.sleep(0.005)


def test_many_tasks_share_a_bounded_pool(server: LocalRequence) -> None:
    with make_client(server.access_token, max_workers=8) as c:
        stop = threading.Event()
        seen: list[tuple[int, int]] = []
        before = set(threading.enumerate())
        sampler = threading.Thread(target=_sample_threads, args=(c, stop, seen, before))
        sampler.start()
        try:
            tasks = [Task("echo", {"i": i}, client=c) for i in range(200)]
            ids = [t.finalized(timeout=20) for t in tasks]
        finally:
            stop.set()
            sampler.join(5)
        assert len(set(ids)) == 200
        assert seen
        assert 1 <= max(count for count, _ in seen) <= 8
        assert max(named for _, named in seen) <= 8
        assert c._pool.thread_count <= 8


def test_keep_alive_few_connections(
    server: LocalRequence, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="urllib3.connectionpool")
    with make_client(server.access_token, max_workers=4) as c:
        tasks = [Task("echo", {"i": i}, client=c) for i in range(50)]
        for task in tasks:
            task.finalized(timeout=10)
    new = [
        r
        for r in caplog.records
        if r.name == "urllib3.connectionpool"
        and "Starting new HTTP connection" in r.getMessage()
        and f"127.0.0.1:{server.port}" in r.getMessage()
    ]
    # 100 requests (prepare and finalize of 50 tasks) over at most 4 workers at once.
    assert 1 <= len(new) <= 4 + 2, len(new)


def test_task_used_from_many_threads(client: Client) -> None:
    task = Task("greet", GREET_INPUT, client=client)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        calls: list[Callable[[], Any]] = [
            lambda: task.task_id(timeout=5),
            lambda: task.finalized(timeout=5),
            lambda: task.task_url(timeout=5),
            lambda: task.result(timeout=5).result,
            lambda: types_of(collect(task)),
        ] * 8
        answers = list(pool.map(lambda f: f(), calls))
    task_id = task.task_id()
    expected = [task_id, task_id, task.task_url(), {"message": "Hello, A!"}, GREET_TYPES] * 8
    assert answers == expected


# --- repr: the same state as the other views ----------------------------------------------------


def test_repr_of_a_task_aborted_while_it_runs_says_aborted(client: Client, gate_key: str) -> None:
    task = Task("gated", {"gate": gate_key}, client=client)
    task_id = task.task_id(timeout=5)
    wait_started(task)
    assert repr(task) == f"<requence_task.Task 'gated' id={task_id} running>"
    task.abort("not needed")
    with pytest.raises(TaskAbortedError):
        task.result(timeout=10)
    assert repr(task) == f"<requence_task.Task 'gated' id={task_id} aborted>"


def test_repr_of_a_failed_and_a_rejected_task(client: Client) -> None:
    failed = Task("fail", {"name": "A"}, client=client)
    with pytest.raises(TaskFailedError):
        failed.result(timeout=5)
    assert repr(failed) == f"<requence_task.Task 'fail' id={failed.task_id()} failed>"
    rejected = Task("greet", {"age": 3}, client=client)  # "name" is required
    with pytest.raises(TaskError):
        rejected.result(timeout=5)
    assert repr(rejected) == f"<requence_task.Task 'greet' id={rejected.task_id()} rejected>"


def test_repr_never_starts_following_the_task(server: LocalRequence) -> None:
    with make_client(server.access_token) as own:  # no shared stream of other tests' tasks
        task = Task("echo", {"r": 1}, client=own)
        task.finalized(timeout=5)
        assert repr(task) == f"<requence_task.Task 'echo' id={task.task_id()} started>"
        assert not task._monitor._demanded
        task.result(timeout=5)
        assert repr(task).endswith(" succeeded>")
