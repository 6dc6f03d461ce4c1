"""Races (issue 5): abort during prepare and during finalize, abort racing the
end, protect before finalize, ``result()`` from 100 threads while another
iterates, 20 threads aborting one task, a handle garbage-collected while its
stream is open, and many tasks on one ``Client`` from 16 threads.

Covered in tests/client/test_task.py and not repeated: an abort after the
end (``test_abort_of_finished_task_is_a_409``), an abort that lands before
finalize's retry (``test_abort_lands_before_finalize``), protect during a
finalize retry (``test_protect_while_finalize_in_flight``), 100 waiters and one
iterator that all start before the first update
(``test_many_waiters_share_one_stream``). The tests here race the same things
from other angles: callers that do not wait for the id first, waiters already
blocked when the abort comes, an abort against the task's own end, late joiners.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from requence_task import (
    Client,
    RetryPolicy,
    Task,
    TaskAbortedError,
    TaskError,
    TaskFailedError,
    TaskResult,
    TaskTimeoutError,
    Update,
)
from requence_task.local import LocalRequence

from ..client.conftest import make_client, own_server, wait_until
from ..local.templates_for_tests import gate

WAIT = 10.0  # bound of every wait, in seconds
ALL_STATUSES = (
    "IDLE",
    "PENDING",
    "RUNNING",
    "SUCCESSFUL",
    "FAILED",
    "STOPPED",
    "AWAITING_DELIVERY",
)
TERMINAL = {"taskEnd", "taskError", "taskAborted"}
ECHO_TYPES = ["taskStart", "nodeStart", "nodeUpdate", "nodeEnd", "taskEnd"]
GATED_TYPES = ECHO_TYPES
MONITOR = "requence-task-monitor"


@pytest.fixture(scope="module")
def rq() -> Iterator[LocalRequence]:
    """A local Requence of this module's own (latency faults slow every request)."""
    with own_server() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_faults_left(rq: LocalRequence) -> Iterator[None]:
    rq.faults.clear()
    yield
    rq.faults.clear()


@pytest.fixture(scope="module")
def client(rq: LocalRequence) -> Iterator[Client]:
    with make_client(rq.access_token) as c:
        yield c


@pytest.fixture(scope="module")
def own_client(rq: LocalRequence) -> Iterator[Client]:
    """A client that follows each task on the task's own stream (and thread)."""
    with make_client(rq.access_token, shared_stream=False) as c:
        yield c


@pytest.fixture()
def gates() -> Iterator[Callable[[], str]]:
    """Gate keys for the "gated" template; every one is opened at the end."""
    made: list[str] = []

    def new() -> str:
        key = uuid.uuid4().hex
        made.append(key)
        gate(key)
        return key

    yield new
    for key in made:
        gate(key).set()


def event_types(rq: LocalRequence, task_id: str) -> list[str]:
    return [e.type for e in rq.store.task_events(task_id, after=None, since=None, limit=10_000)]


def row_of(rq: LocalRequence, task_id: str) -> Any:
    row = rq.store.task(task_id)
    assert row is not None, f"task {task_id} is not on the server"
    return row


def count_tasks(rq: LocalRequence) -> int:
    return len(rq.store.tasks_with_status(ALL_STATUSES))


def run_threads(targets: list[Callable[[], None]], timeout: float = WAIT) -> None:
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not [t for t in threads if t.is_alive()], "threads still running after the bound"


def new_monitors(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == MONITOR and t not in before]


# --- abort during prepare ----------------------------------------------------------------------


def test_abort_called_before_the_task_has_an_id(rq: LocalRequence, gates: Any) -> None:
    """``abort()`` at once, while prepare is still on the wire (0.3 s of server
    latency on every request): it waits for the id, then aborts. Whichever of
    finalize and abort the server handles first, the task ends aborted, once."""
    with make_client(rq.access_token) as c:
        rq.faults.latency = 0.3
        before = count_tasks(rq)
        task = Task("gated", {"gate": gates()}, client=c)
        with pytest.raises(TaskTimeoutError):
            task.task_id(timeout=0)  # no id yet
        started = time.monotonic()
        task.abort("during prepare", timeout=WAIT)
        took = time.monotonic() - started
        # Waited for prepare (0.3 s), then sent the abort (0.3 s more).
        assert took >= 0.5, f"abort() returned after {took:.2f} s"
        task_id = task.task_id(timeout=0)
        with pytest.raises(TaskAbortedError) as info:
            task.result(timeout=WAIT)
        err = info.value
        assert (err.reason, err.task_id, err.template) == ("during prepare", task_id, "gated")
        row = row_of(rq, task_id)
        assert (row.status, row.status_text) == ("STOPPED", "during prepare")
        events = event_types(rq, task_id)
        assert events in (
            ["taskAborted"],  # the abort came first: finalize answered 410
            ["taskStart", "taskAborted"],
            ["taskStart", "nodeStart", "taskAborted"],
        ), events
        assert count_tasks(rq) == before + 1


# --- abort during finalize ---------------------------------------------------------------------


def test_abort_while_finalize_waits_for_its_retry_with_waiters_blocked(
    rq: LocalRequence,
) -> None:
    """Finalize meets a 503 and waits 0.5 s to retry; meanwhile five threads are
    blocked in ``result()``, one in ``finalized()``, and another thread aborts. The
    retried finalize answers 410: one terminal state (STOPPED), every waiter
    gets ``TaskAbortedError`` with the reason given to ``abort()``."""
    slow_retry = RetryPolicy(budget=5, initial_backoff=0.5, jitter=0)
    with make_client(rq.access_token, retry=slow_retry) as c:
        before = count_tasks(rq)
        rq.faults.fail_next(1, status=503, endpoint="finalize")
        task = Task("echo", {"mid": "finalize"}, client=c)
        task_id = task.task_id(timeout=WAIT)
        outcomes: list[BaseException | TaskResult] = []
        lock = threading.Lock()

        def wait(call: Callable[[], Any]) -> Callable[[], None]:
            def run() -> None:
                try:
                    value = call()
                except BaseException as err:
                    value = err
                with lock:
                    outcomes.append(value)

            return run

        waiters = [wait(lambda: task.result(timeout=WAIT)) for _ in range(5)]
        waiters.append(wait(lambda: task.finalized(timeout=WAIT)))
        threads = [threading.Thread(target=w, daemon=True) for w in waiters]
        for thread in threads:
            thread.start()
        wait_until(lambda: rq.faults.pending_failures == 0, WAIT, "finalize to meet its 503")
        with pytest.raises(TimeoutError):  # (a TaskTimeoutError, or, once the client has
            task.finalized(timeout=0)  # seen the 503, an unreachable one): still waiting
        aborter = threading.Thread(target=lambda: task.abort("mid-finalize"), daemon=True)
        aborter.start()
        aborter.join(WAIT)
        for thread in threads:
            thread.join(WAIT)
        assert not aborter.is_alive() and not [t for t in threads if t.is_alive()]
        assert len(outcomes) == 6
        assert all(isinstance(o, TaskAbortedError) for o in outcomes), outcomes
        assert {(o.reason, o.task_id, o.status) for o in outcomes} == {  # type: ignore[union-attr]
            ("mid-finalize", task_id, 410)
        }
        row = row_of(rq, task_id)
        assert (row.status, row.status_text, row.finalized_at) == ("STOPPED", "mid-finalize", None)
        assert event_types(rq, task_id) == ["taskAborted"]
        assert count_tasks(rq) == before + 1


def test_updates_of_a_task_aborted_before_finalize(rq: LocalRequence) -> None:
    """The server's stream of a task aborted before its finalize landed holds one
    update, ``taskAborted``. Iterating the handle should give that update and end,
    as it does for a task aborted after it started (issue 3: "Every iterator sees
    every update from the first one; iteration ends after the terminal update")."""
    slow_retry = RetryPolicy(budget=5, initial_backoff=0.3, jitter=0)
    with make_client(rq.access_token, retry=slow_retry) as c:
        rq.faults.fail_next(1, status=503, endpoint="finalize")
        task = Task("echo", {"x": 1}, client=c)
        task.task_id(timeout=WAIT)
        wait_until(lambda: rq.faults.pending_failures == 0, WAIT, "finalize to meet its 503")
        task.abort("before it started")
        with pytest.raises(TaskAbortedError):
            task.result(timeout=WAIT)
        seen: list[str] = []
        error: BaseException | None = None
        try:
            for update in task.updates(timeout=WAIT):
                seen.append(update.type)
        except TaskAbortedError as err:
            error = err
        assert (seen, error) == (["taskAborted"], None), (
            f"iteration gave {seen} and raised {error!r}; the server's stream of the task is "
            f"{event_types(rq, task.task_id())}"
        )


# --- abort racing the end ----------------------------------------------------------------------


@pytest.mark.parametrize("delay_ms", [0, 1, 2, 5, 10])
def test_abort_racing_the_end_agrees_with_the_server(
    rq: LocalRequence, client: Client, gates: Any, delay_ms: int
) -> None:
    """The gate opens (the task ends on its own) and ``abort()`` is sent at about
    the same moment. Either the abort won (``abort()`` returns, the result is
    ``TaskAbortedError``, the task is STOPPED) or the end did (``abort()`` raises
    ``TaskError`` 409, the result is the success). Never a mix."""
    key = gates()
    task = Task("gated", {"gate": key}, client=client)
    task_id = task.finalized(timeout=WAIT)
    wait_until(lambda: row_of(rq, task_id).status == "RUNNING", WAIT, "the task to run")
    gate(key).set()
    time.sleep(delay_ms / 1000)
    try:
        task.abort("raced")
        aborted = True
    except TaskError as err:
        assert type(err) is TaskError
        assert err.status == 409, err
        aborted = False
    events = event_types(rq, task_id)
    assert sum(e in TERMINAL for e in events) == 1, events
    row = row_of(rq, task_id)
    if aborted:
        with pytest.raises(TaskAbortedError) as info:
            task.result(timeout=WAIT)
        assert info.value.reason == "raced"
        assert (row.status, events[-1]) == ("STOPPED", "taskAborted")
    else:
        assert task.result(timeout=WAIT).result == {"opened": key}
        assert (row.status, events) == ("SUCCESSFUL", GATED_TYPES)


# --- protect before finalize -------------------------------------------------------------------


def test_protect_called_before_the_task_has_an_id(rq: LocalRequence) -> None:
    """``protect()`` at once (prepare and finalize each take 0.2 s on the server):
    it waits for the id and lands while finalize is on the wire. No error; the
    task runs normally and is protected."""
    with make_client(rq.access_token) as c:
        rq.faults.latency = 0.2
        task = Task("echo", {"protected": True}, client=c)
        task.protect(timeout=WAIT)
        task_id = task.task_id(timeout=0)
        assert row_of(rq, task_id).protected is True
        rq.faults.latency = 0.0
        assert task.result(timeout=WAIT).result == {"input": {"protected": True}}
        assert event_types(rq, task_id) == ECHO_TYPES
        assert row_of(rq, task_id).status == "SUCCESSFUL"


# --- result() from 100 threads while another iterates ---------------------------------------------


def test_result_from_100_late_joining_threads_while_another_iterates(
    rq: LocalRequence, own_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """One thread iterates a task of 400 updates; 100 threads join one by one while
    the updates flow (and after the end) and call ``result()``: every result is
    the same, the iterator sees every update once in order, and one stream (one
    monitor thread, one watch request) served them all."""
    caplog.set_level(logging.DEBUG, logger="requence_task.local")
    before = set(threading.enumerate())
    task = Task("many", {"n": 398}, client=own_client)  # taskStart, nodeStart, 398 nodeUpdate, ...
    iterated: list[Update] = []
    results: list[Any] = []
    lock = threading.Lock()

    def iterate() -> None:
        iterated.extend(task.updates(timeout=WAIT))

    def late(index: int) -> Callable[[], None]:
        def run() -> None:
            time.sleep(index * 0.003)  # spread over 0.3 s
            try:
                value: Any = task.result(timeout=WAIT)
            except BaseException as err:
                value = err
            with lock:
                results.append(value)

        return run

    run_threads([iterate, *(late(i) for i in range(100))])
    assert len(results) == 100
    assert all(isinstance(r, TaskResult) for r in results), results[:3]
    assert all(r == results[0] for r in results)
    assert results[0].result == {"i": 397}
    types = [u.type for u in iterated]
    assert types == ["taskStart", "nodeStart", *["nodeUpdate"] * 398, "nodeEnd", "taskEnd"]
    positions = [u.position for u in iterated if u.position is not None]
    assert len(positions) == len(iterated)
    assert positions == sorted(set(positions))
    assert [u.data for u in iterated[2:-2]] == [{"i": i} for i in range(398)]  # type: ignore[attr-defined]
    assert len(new_monitors(before)) <= 1
    task_id = task.task_id()
    watches = [
        r
        for r in caplog.records
        if r.name == "requence_task.local" and f"POST /task/watch/{task_id} " in r.getMessage()
    ]
    assert len(watches) == 1


# --- 20 threads abort one task -----------------------------------------------------------------


def test_twenty_threads_abort_one_running_task(
    rq: LocalRequence, client: Client, gates: Any
) -> None:
    """The server aborts under its engine lock: the first abort ends the task, the
    other 19 find it ended (409). The client passes that on: exactly one ``abort()``
    returns, 19 raise ``TaskError`` with status 409. The result's reason is the
    winner's."""
    task = Task("gated", {"gate": gates()}, client=client)
    task_id = task.finalized(timeout=WAIT)
    wait_until(lambda: row_of(rq, task_id).status == "RUNNING", WAIT, "the task to run")
    barrier = threading.Barrier(20, timeout=WAIT)
    outcomes: dict[int, BaseException | None] = {}

    def abort(index: int) -> Callable[[], None]:
        def run() -> None:
            barrier.wait()
            try:
                task.abort(f"reason {index}")
                outcomes[index] = None
            except BaseException as err:
                outcomes[index] = err

        return run

    run_threads([abort(i) for i in range(20)])
    winners = [i for i, err in outcomes.items() if err is None]
    losers = [err for err in outcomes.values() if err is not None]
    assert len(outcomes) == 20
    assert len(winners) == 1, outcomes
    assert len(losers) == 19
    assert {(type(e), getattr(e, "status", None), getattr(e, "task_id", None)) for e in losers} == {
        (TaskError, 409, task_id)
    }
    assert all("already ended" in str(e) for e in losers)
    winner = f"reason {winners[0]}"
    row = row_of(rq, task_id)
    assert (row.status, row.status_text) == ("STOPPED", winner)
    assert event_types(rq, task_id) == ["taskStart", "nodeStart", "taskAborted"]
    with pytest.raises(TaskAbortedError) as info:
        task.result(timeout=WAIT)
    assert info.value.reason == winner


# --- the handle garbage-collected while its stream is open ---------------------------------------


def test_handle_collected_while_its_stream_is_open(
    rq: LocalRequence, own_client: Client, gates: Any
) -> None:
    key = gates()
    got: list[Update] = []
    before = set(threading.enumerate())
    task = Task("gated", {"gate": key}, client=own_client, on_update=got.append)
    task_id = task.task_id(timeout=WAIT)
    handle = weakref.ref(task)
    wait_until(lambda: len(got) >= 2, WAIT, "taskStart and nodeStart")
    monitors = new_monitors(before)
    assert len(monitors) == 1
    del task
    gc.collect()
    collected = handle() is None
    gate(key).set()
    wait_until(lambda: bool(got) and got[-1].is_terminal, WAIT, "the terminal update")
    assert [u.type for u in got] == GATED_TYPES
    assert {u.task_id for u in got} == {task_id}
    assert got[-1].result == {"opened": key}  # type: ignore[attr-defined]
    monitors[0].join(WAIT)
    assert not monitors[0].is_alive(), "the monitor thread outlived the task"
    assert new_monitors(before) == []
    assert collected, "the Task handle was still referenced after `del` and gc.collect()"


def test_no_pool_thread_keeps_a_finished_handle_alive(client: Client) -> None:
    """Once a task's creation is done, nothing of the client's should hold its
    handle: a program that drops its handles must be able to free them."""
    handles = []
    for i in range(4):
        task = Task("echo", {"i": i}, client=client)
        task.finalized(timeout=WAIT)
        handles.append(weakref.ref(task))
        del task
    time.sleep(0.05)
    gc.collect()
    alive = [h() for h in handles if h() is not None]
    holders = [
        type(r).__name__ + (f" {r.__qualname__}" if hasattr(r, "__qualname__") else "")
        for t in alive
        for r in gc.get_referrers(t)
        if r is not alive
    ]
    assert alive == [], f"{len(alive)} finished handles still alive, held by {holders}"


# --- many tasks on one Client from 16 threads ---------------------------------------------------


def test_many_tasks_on_one_client_from_16_threads(rq: LocalRequence) -> None:
    per_thread = 12
    before_count = count_tasks(rq)
    outcomes: dict[tuple[int, int], tuple[str, Any, str]] = {}
    errors: list[BaseException] = []
    with make_client(rq.access_token, max_workers=8) as c:
        barrier = threading.Barrier(16, timeout=WAIT)

        def worker(n: int) -> Callable[[], None]:
            def run() -> None:
                try:
                    barrier.wait()
                    tasks = []
                    for i in range(per_thread):
                        if i % 3 == 0:
                            tasks.append(Task("echo", {"n": n, "i": i}, client=c))
                        elif i % 3 == 1:
                            tasks.append(Task("greet", {"name": f"{n}-{i}", "steps": 1}, client=c))
                        else:
                            tasks.append(Task("fail", {"name": f"{n}-{i}"}, client=c))
                    for i, task in enumerate(tasks):
                        try:
                            value: Any = task.result(timeout=30).result
                        except TaskFailedError as err:
                            value = err.reason
                        outcomes[(n, i)] = (task.template or "", value, task.task_id())
                except BaseException as err:
                    errors.append(err)

            return run

        run_threads([worker(n) for n in range(16)], timeout=60)
        assert c._pool.thread_count <= 8
    assert errors == []
    assert len(outcomes) == 16 * per_thread
    for (n, i), (template, value, _) in outcomes.items():
        if i % 3 == 0:
            assert (template, value) == ("echo", {"input": {"n": n, "i": i}})
        elif i % 3 == 1:
            assert (template, value) == ("greet", {"message": f"Hello, {n}-{i}!"})
        else:
            assert template == "fail"
            assert value == "node 'boom' failed: the boiler exploded"
    assert len({task_id for _, _, task_id in outcomes.values()}) == 16 * per_thread
    assert count_tasks(rq) == before_count + 16 * per_thread
