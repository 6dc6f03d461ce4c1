"""Requence unreachable, at every endpoint the client uses (issue 5).

* 502/503/504 storms (the local server's ``faults.fail_next``) at prepare,
  finalize, watch, abort, protect, ack, get and watch-all, for each public call
  that uses the endpoint: a storm shorter than the ``RetryPolicy`` budget ends
  in success (and exactly one task); a longer one in
  ``RequenceUnreachableError`` with the storm's ``status``, ``attempts > 1``,
  within the budget + 1 s.
* Refused connections (a token for a port where nothing listens) for each call:
  ``RequenceUnreachableError`` with ``status`` None; also a server that goes
  away between prepare and finalize, and while a task's stream is open.
* Recovery: a server that comes back (same port, same SQLite file) 0.5 s into
  the client's retrying, well inside a 5 s budget: the call succeeds.

Already covered elsewhere, not repeated here: a single prepare storm with
``Task`` (tests/client/test_errors.py ``test_prepare_503_storm_*``), finalize
gateway errors making one task and a lost finalize answer
(``test_finalize_gateway_errors_create_one_task``, ``test_finalize_answer_lost_*``),
a watch storm that starts mid-stream (tests/client/test_resume.py
``test_watch_503_storm_longer_than_budget_raises_unreachable``), the watch-all
stream when the server stops (tests/client/test_watch.py
``test_on_error_when_the_server_stops``). The matrix below still has a cell for
every endpoint and status so that none is missed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from requence_task import (
    Client,
    RequenceUnreachableError,
    RetryPolicy,
    Task,
    TaskAbortedError,
    TaskStatus,
    abort_task,
    ack_task,
    get_task,
    protect_task,
    watch_tasks,
)
from requence_task._token import encode_access_token
from requence_task.local import LocalRequence

from ..client.conftest import free_port, make_client, own_server, wait_until
from ..conftest import Api
from ..local.templates_for_tests import TEMPLATES, gate

WAIT = 10.0  # bound of every wait that is not itself under test
STATUSES = (502, 503, 504)
SHORT_STORM = 3  # failures in a row, well inside the budget of FAST_RETRY
ENDLESS = 100_000  # failures in a row: longer than any budget here
FAST_RETRY = RetryPolicy(budget=5, initial_backoff=0.02, max_backoff=0.1)
TINY_RETRY = RetryPolicy(budget=0.5, initial_backoff=0.02, max_backoff=0.1)
ALL_STATUSES = (
    "IDLE",
    "PENDING",
    "RUNNING",
    "SUCCESSFUL",
    "FAILED",
    "STOPPED",
    "AWAITING_DELIVERY",
)
ECHO_TYPES = ["taskStart", "nodeStart", "nodeUpdate", "nodeEnd", "taskEnd"]


# --- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rq() -> Iterator[LocalRequence]:
    """A local Requence of this module's own: its faults disturb no other test."""
    with own_server() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_faults_left(rq: LocalRequence) -> Iterator[None]:
    rq.faults.clear()
    yield
    rq.faults.clear()


@pytest.fixture()
def gate_key() -> Iterator[str]:
    key = uuid.uuid4().hex
    gate(key)
    yield key
    gate(key).set()


def count_tasks(rq: LocalRequence) -> int:
    return len(rq.store.tasks_with_status(ALL_STATUSES))


def event_types(rq: LocalRequence, task_id: str) -> list[str]:
    return [e.type for e in rq.store.task_events(task_id, after=None, since=None, limit=1000)]


def status_of(rq: LocalRequence, task_id: str) -> str:
    row = rq.store.task(task_id)
    assert row is not None, f"task {task_id} is not on the server"
    return row.status


def gives_up(
    call: Callable[[], Any], status: int | None, budget: float
) -> RequenceUnreachableError:
    """Run ``call``; it must raise RequenceUnreachableError after retrying for the
    whole budget and not much longer."""
    started = time.monotonic()
    with pytest.raises(RequenceUnreachableError) as info:
        call()
    elapsed = time.monotonic() - started
    err = info.value
    assert (err.status, err.attempts > 1) == (status, True), (err.status, err.attempts, str(err))
    assert budget <= elapsed < budget + 1, f"gave up after {elapsed:.2f} s, budget {budget} s"
    if status is not None:
        assert f"HTTP {status}" in str(err)
    assert "not reachable" in str(err)
    return err


# --- the storm matrix: one case per (endpoint, public call) --------------------------------------


class Case(NamedTuple):
    """A public call under a storm at one endpoint.

    ``setup(rq, client, gate_key, state)`` makes what the call needs (before the
    storm); ``act(client, state)`` is the call under the storm; ``succeeded(rq,
    client, state, value)`` checks the outcome of a storm shorter than the
    budget; ``unchanged(rq, client, state)`` checks, after a storm longer than
    the budget, that the call had no effect (or the effect it must have).
    """

    endpoint: str
    call: str
    setup: Callable[[LocalRequence, Client, str, dict[str, Any]], None]
    act: Callable[[Client, dict[str, Any]], Any]
    succeeded: Callable[[LocalRequence, Client, dict[str, Any], Any], None]
    unchanged: Callable[[LocalRequence, Client, dict[str, Any]], None]


def _nothing(rq: LocalRequence, c: Client, key: str, state: dict[str, Any]) -> None:
    pass


def _finished_echo(rq: LocalRequence, c: Client, key: str, state: dict[str, Any]) -> None:
    task = Task("echo", {"done": key}, client=c)
    assert task.result(timeout=WAIT).result == {"input": {"done": key}}
    state["task"], state["id"] = task, task.task_id()


def _running_gated(rq: LocalRequence, c: Client, key: str, state: dict[str, Any]) -> None:
    task = Task("gated", {"gate": key}, client=c)
    task_id = task.finalized(timeout=WAIT)
    wait_until(lambda: status_of(rq, task_id) == "RUNNING", WAIT, "the gated task to run")
    state["task"], state["id"] = task, task_id


def _awaiting_delivery(rq: LocalRequence, c: Client, key: str, state: dict[str, Any]) -> None:
    task = Task("echo", {"ack": key}, client=c, require_ack=True)  # never watched: never acked
    task_id = task.finalized(timeout=WAIT)
    wait_until(
        lambda: status_of(rq, task_id) == "AWAITING_DELIVERY", WAIT, "the task to await delivery"
    )
    state["task"], state["id"] = task, task_id


# prepare: Task(...) and its task_id()


def _create(c: Client, state: dict[str, Any]) -> Any:
    task = state["task"] = Task("echo", {"created": state["key"]}, client=c)
    return task.task_id(timeout=WAIT)


def _created_once(rq: LocalRequence, c: Client, state: dict[str, Any], value: Any) -> None:
    task: Task = state["task"]
    assert task.result(timeout=WAIT).result == {"input": {"created": state["key"]}}
    assert value == task.task_id()
    assert count_tasks(rq) == state["before"] + 1
    assert event_types(rq, value) == ECHO_TYPES


def _not_created(rq: LocalRequence, c: Client, state: dict[str, Any]) -> None:
    assert count_tasks(rq) == state["before"]
    task: Task = state["task"]
    # Every accessor gives the same creation error.
    with pytest.raises(RequenceUnreachableError) as again:
        task.result(timeout=WAIT)
    assert again.value is state["error"]


# finalize: finalized()


def _finalize(c: Client, state: dict[str, Any]) -> Any:
    task = state["task"] = Task("echo", {"finalized": state["key"]}, client=c)
    return task.finalized(timeout=WAIT)


def _finalized_once(rq: LocalRequence, c: Client, state: dict[str, Any], value: Any) -> None:
    task: Task = state["task"]
    assert value == task.task_id()
    assert task.result(timeout=WAIT).result == {"input": {"finalized": state["key"]}}
    assert count_tasks(rq) == state["before"] + 1
    assert event_types(rq, value) == ECHO_TYPES  # one taskStart: finalized once


def _prepared_not_started(rq: LocalRequence, c: Client, state: dict[str, Any]) -> None:
    task: Task = state["task"]
    task_id = task.task_id(timeout=0)
    assert count_tasks(rq) == state["before"] + 1
    assert status_of(rq, task_id) == "IDLE"
    assert event_types(rq, task_id) == []
    with pytest.raises(RequenceUnreachableError) as again:
        task.result(timeout=WAIT)
    assert again.value is state["error"]


# watch: result() (and iteration, the same stream)


def _started_echo(rq: LocalRequence, c: Client, key: str, state: dict[str, Any]) -> None:
    task = Task("echo", {"watched": key}, client=c)
    state["task"], state["id"] = task, task.finalized(timeout=WAIT)


def _started_echo_by_id(rq: LocalRequence, c: Client, key: str, state: dict[str, Any]) -> None:
    # A handle by id follows its task on the task's own stream.
    _started_echo(rq, c, key, state)
    state["task"] = Task.from_id(state["id"], client=c)


def _result(c: Client, state: dict[str, Any]) -> Any:
    return state["task"].result(timeout=WAIT).result


def _got_result(rq: LocalRequence, c: Client, state: dict[str, Any], value: Any) -> None:
    assert value == {"input": {"watched": state["key"]}}
    assert [u.type for u in state["task"].updates(timeout=WAIT)] == ECHO_TYPES
    assert count_tasks(rq) == state["before"] + 1


def _ran_unwatched(rq: LocalRequence, c: Client, state: dict[str, Any]) -> None:
    # The task ran on the server; only the client could not watch it.
    wait_until(lambda: status_of(rq, state["id"]) == "SUCCESSFUL", WAIT, "the task to end")
    assert state["task"].finalized(timeout=0) == state["id"]


# abort: Task.abort() and abort_task()


def _abort(c: Client, state: dict[str, Any]) -> Any:
    return state["task"].abort("storm", timeout=WAIT)


def _abort_by_id(c: Client, state: dict[str, Any]) -> Any:
    return abort_task(state["id"], "storm", client=c)


def _aborted(rq: LocalRequence, c: Client, state: dict[str, Any], value: Any) -> None:
    assert value is None
    with pytest.raises(TaskAbortedError) as info:
        state["task"].result(timeout=WAIT)
    assert info.value.reason == "storm"
    row = rq.store.task(state["id"])
    assert row is not None and (row.status, row.status_text) == ("STOPPED", "storm")
    assert event_types(rq, state["id"]) == ["taskStart", "nodeStart", "taskAborted"]
    assert count_tasks(rq) == state["before"] + 1


def _still_running(rq: LocalRequence, c: Client, state: dict[str, Any]) -> None:
    assert status_of(rq, state["id"]) == "RUNNING"
    assert event_types(rq, state["id"]) == ["taskStart", "nodeStart"]


# protect: Task.protect() and protect_task()


def _protect(c: Client, state: dict[str, Any]) -> Any:
    return state["task"].protect(timeout=WAIT)


def _protect_by_id(c: Client, state: dict[str, Any]) -> Any:
    return protect_task(state["id"], client=c)


def _protected(rq: LocalRequence, c: Client, state: dict[str, Any], value: Any) -> None:
    assert value is None
    row = rq.store.task(state["id"])
    assert row is not None and row.protected is True
    assert count_tasks(rq) == state["before"] + 1


def _not_protected(rq: LocalRequence, c: Client, state: dict[str, Any]) -> None:
    row = rq.store.task(state["id"])
    assert row is not None and row.protected is False


# get: get_task()


def _get(c: Client, state: dict[str, Any]) -> Any:
    return get_task(state["id"], client=c)


def _got(rq: LocalRequence, c: Client, state: dict[str, Any], value: Any) -> None:
    assert value.task_id == state["id"]
    assert value.status is TaskStatus.SUCCESSFUL
    assert value.context.result == {"input": {"done": state["key"]}}
    assert count_tasks(rq) == state["before"] + 1


def _unchanged_status(rq: LocalRequence, c: Client, state: dict[str, Any]) -> None:
    assert status_of(rq, state["id"]) == "SUCCESSFUL"


# ack: ack_task()


def _ack(c: Client, state: dict[str, Any]) -> Any:
    return ack_task(state["id"], client=c)


def _acked(rq: LocalRequence, c: Client, state: dict[str, Any], value: Any) -> None:
    assert value is None
    assert status_of(rq, state["id"]) == "SUCCESSFUL"
    assert count_tasks(rq) == state["before"] + 1


def _still_awaiting(rq: LocalRequence, c: Client, state: dict[str, Any]) -> None:
    assert status_of(rq, state["id"]) == "AWAITING_DELIVERY"


# watch-all: watch_tasks()


def _since_now(rq: LocalRequence, c: Client, key: str, state: dict[str, Any]) -> None:
    state["since"] = datetime.now()
    time.sleep(0.01)
    task = Task("echo", {"all": key}, client=c)
    assert task.result(timeout=WAIT).result == {"input": {"all": key}}
    state["task"], state["id"] = task, task.task_id()


def _watch_all(c: Client, state: dict[str, Any]) -> Any:
    seen: list[tuple[str | None, str]] = []
    with watch_tasks(state["since"], client=c) as watcher:
        for update in watcher.updates(timeout=WAIT):
            seen.append((update.task_id, update.type))
            if update.task_id == state["id"] and update.is_terminal:
                break
    return seen


def _watched_all(rq: LocalRequence, c: Client, state: dict[str, Any], value: Any) -> None:
    assert value == [(state["id"], t) for t in ECHO_TYPES]
    assert count_tasks(rq) == state["before"] + 1


def _no_check(rq: LocalRequence, c: Client, state: dict[str, Any]) -> None:
    pass


CASES = [
    Case("prepare", "Task", _nothing, _create, _created_once, _not_created),
    Case("finalize", "finalized", _nothing, _finalize, _finalized_once, _prepared_not_started),
    Case("watch", "result", _started_echo_by_id, _result, _got_result, _ran_unwatched),
    Case("watch-all", "result", _started_echo, _result, _got_result, _ran_unwatched),
    Case("abort", "Task.abort", _running_gated, _abort, _aborted, _still_running),
    Case("abort", "abort_task", _running_gated, _abort_by_id, _aborted, _still_running),
    Case("protect", "Task.protect", _finished_echo, _protect, _protected, _not_protected),
    Case("protect", "protect_task", _finished_echo, _protect_by_id, _protected, _not_protected),
    Case("get", "get_task", _finished_echo, _get, _got, _unchanged_status),
    Case("ack", "ack_task", _awaiting_delivery, _ack, _acked, _still_awaiting),
    Case("watch-all", "watch_tasks", _since_now, _watch_all, _watched_all, _no_check),
]
CASE_IDS = [f"{case.endpoint}-{case.call}" for case in CASES]


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_storm_shorter_than_the_budget_succeeds(
    rq: LocalRequence, gate_key: str, case: Case, status: int
) -> None:
    with make_client(rq.access_token, retry=FAST_RETRY) as c:
        state: dict[str, Any] = {"key": gate_key, "before": count_tasks(rq)}
        case.setup(rq, c, gate_key, state)
        rq.faults.fail_next(SHORT_STORM, status=status, endpoint=case.endpoint)
        started = time.monotonic()
        value = case.act(c, state)
        took = time.monotonic() - started
        assert rq.faults.pending_failures == 0, "the storm did not reach the endpoint"
        assert took < 3, f"{took:.2f} s for a storm of {SHORT_STORM} short failures"
        case.succeeded(rq, c, state, value)


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_storm_longer_than_the_budget_raises_unreachable(
    rq: LocalRequence, gate_key: str, case: Case, status: int
) -> None:
    with make_client(rq.access_token, retry=TINY_RETRY) as c:
        state: dict[str, Any] = {"key": gate_key, "before": count_tasks(rq)}
        case.setup(rq, c, gate_key, state)
        rq.faults.fail_next(ENDLESS, status=status, endpoint=case.endpoint)
        try:
            state["error"] = gives_up(lambda: case.act(c, state), status, TINY_RETRY.budget)
            assert rq.faults.pending_failures < ENDLESS  # it did meet the storm
        finally:
            rq.faults.clear()
        case.unchanged(rq, c, state)


# --- ack storms while result() acks a require_ack task ------------------------------------------


@pytest.mark.parametrize("status", STATUSES)
def test_ack_storm_during_result_is_retried(rq: LocalRequence, status: int) -> None:
    with make_client(rq.access_token, retry=FAST_RETRY) as c:
        rq.faults.fail_next(SHORT_STORM, status=status, endpoint="ack")
        task = Task("echo", {"acked": status}, client=c, require_ack=True)
        assert task.result(timeout=WAIT).result == {"input": {"acked": status}}
        assert rq.faults.pending_failures == 0
        # The monitor acks before it settles the result: delivered by now.
        assert status_of(rq, task.task_id()) == "SUCCESSFUL"


def test_ack_storm_longer_than_the_budget_still_reports_the_real_outcome(
    rq: LocalRequence, caplog: pytest.LogCaptureFixture
) -> None:
    """The task ran and succeeded: ``result()`` says so even if the ack could not be
    delivered (never a false failure); the task stays awaiting delivery, and the
    client warns once."""
    caplog.set_level(logging.WARNING, logger="requence_task")
    with make_client(rq.access_token, retry=TINY_RETRY) as c:
        rq.faults.fail_next(ENDLESS, status=503, endpoint="ack")
        try:
            task = Task("echo", {"unacked": 1}, client=c, require_ack=True)
            started = time.monotonic()
            assert task.result(timeout=WAIT).result == {"input": {"unacked": 1}}
            assert time.monotonic() - started < TINY_RETRY.budget + 1
        finally:
            rq.faults.clear()
        task_id = task.task_id()
        assert status_of(rq, task_id) == "AWAITING_DELIVERY"
        warnings = [r.getMessage() for r in caplog.records if r.name == "requence_task"]
        assert len(warnings) == 1
        assert warnings[0].startswith(f"could not ack the delivery of task {task_id}: ")
        assert "HTTP 503" in warnings[0]


# --- refused connections (nothing listens) ------------------------------------------------------


def _dead_token() -> str:
    return encode_access_token(f"dead-{uuid.uuid4().hex}", f"http://127.0.0.1:{free_port()}")


def _iterate_watch_all(c: Client) -> None:
    with watch_tasks(datetime.now(), client=c) as watcher:
        list(watcher.updates(timeout=WAIT))


SOME_ID = "3f0e6c1a-0000-4000-8000-000000000000"
REFUSED_CALLS: dict[str, Callable[[Client], Any]] = {
    "Task.task_id": lambda c: Task("echo", client=c).task_id(timeout=WAIT),
    "Task.finalized": lambda c: Task("echo", client=c).finalized(timeout=WAIT),
    "Task.result": lambda c: Task("echo", client=c).result(timeout=WAIT),
    "Task.abort": lambda c: Task("echo", client=c).abort("x", timeout=WAIT),
    "Task.protect": lambda c: Task("echo", client=c).protect(timeout=WAIT),
    # from_id skips creation: its result() meets the refused watch itself.
    "Task.from_id.result": lambda c: Task.from_id(SOME_ID, client=c).result(timeout=WAIT),
    "Task.from_id.abort": lambda c: Task.from_id(SOME_ID, client=c).abort("x"),
    "abort_task": lambda c: abort_task(SOME_ID, "x", client=c),
    "protect_task": lambda c: protect_task(SOME_ID, client=c),
    "ack_task": lambda c: ack_task(SOME_ID, client=c),
    "get_task": lambda c: get_task(SOME_ID, client=c),
    "watch_tasks": _iterate_watch_all,
}


@pytest.mark.parametrize("call", list(REFUSED_CALLS))
def test_refused_connection_raises_unreachable_without_status(call: str) -> None:
    with make_client(_dead_token(), retry=TINY_RETRY) as c:
        err = gives_up(lambda: REFUSED_CALLS[call](c), None, TINY_RETRY.budget)
        assert "HTTP" not in str(err)


def test_refused_between_a_503_at_finalize_and_its_retry() -> None:
    """Prepare works; finalize meets a 503; the server goes away before the
    retry: the retries (and the check whether the finalize landed) are refused
    until the budget is spent. The error's status is the last one: None."""
    retry = RetryPolicy(budget=2.0, initial_backoff=1.5, max_backoff=1.5, jitter=0)
    with own_server() as server, make_client(server.access_token, retry=retry) as c:
        server.faults.fail_next(1, status=503, endpoint="finalize")
        task = Task("echo", client=c)
        task_id = task.task_id(timeout=WAIT)
        wait_until(lambda: server.faults.pending_failures == 0, WAIT, "the 503 at finalize")
        stopped = time.monotonic()
        server.stop()
        assert time.monotonic() - stopped < 1.2, "the server took too long to stop for this test"
        with pytest.raises(RequenceUnreachableError) as info:
            task.finalized(timeout=WAIT)
        err = info.value
        # At 0 and 1.5 s; at 2.0 s the budget is spent: no attempt starts that could
        # not get its answer in time (its request could still act after the error).
        assert (err.status, err.attempts) == (None, 2)
        assert "HTTP" not in str(err)
        assert task.task_id(timeout=0) == task_id


def test_refused_while_a_task_stream_is_open(gate_key: str) -> None:
    """The server goes away while ``result()`` reads the task's stream: the
    stream's reconnects are refused; ``RequenceUnreachableError`` (status None)
    within the budget + 1 s of the stop, and the updates seen so far stay."""
    with own_server() as server, make_client(server.access_token, retry=TINY_RETRY) as c:
        task = Task("gated", {"gate": gate_key}, client=c)
        seen: list[str] = []
        for update in task.updates(timeout=WAIT):
            seen.append(update.type)
            if update.type == "nodeStart":
                break
        stopping = time.monotonic()
        server.stop()
        with pytest.raises(RequenceUnreachableError) as info:
            task.result(timeout=WAIT)
        elapsed = time.monotonic() - stopping
        err = info.value
        assert (err.status, err.attempts > 1) == (None, True)
        assert elapsed < TINY_RETRY.budget + 1 + 1.2  # + the stop itself
        assert seen == ["taskStart", "nodeStart"]
        again: list[str] = []
        with pytest.raises(RequenceUnreachableError) as from_iteration:
            for update in task.updates(timeout=WAIT):
                again.append(update.type)
        assert from_iteration.value is err
        assert again == seen


# --- recovery: the server comes back inside the budget --------------------------------------------


def _connection_errors(caplog: pytest.LogCaptureFixture) -> int:
    """Failed attempts the client logged (``POST /task/...: ConnectionError``)."""
    return sum(
        1
        for r in caplog.records
        if r.name == "requence_task" and r.getMessage().endswith(": ConnectionError")
    )


def _ended_echo(api: Api, key: str, **body: Any) -> str:
    task_id = api.start("echo", {"recover": key}, **body)
    api.wait_status(task_id, "SUCCESSFUL", "AWAITING_DELIVERY")
    return task_id


RECOVERY_CALLS = [
    "Task",
    "Task.from_id.result",
    "get_task",
    "protect_task",
    "abort_task",
    "ack_task",
    "watch_tasks",
]


@pytest.mark.parametrize("call", RECOVERY_CALLS)
def test_server_back_inside_the_budget(
    tmp_path: Path, call: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    db = str(tmp_path / "requence.db")
    key = uuid.uuid4().hex
    first = LocalRequence(TEMPLATES, db=db, port=port).start()
    try:
        token = first.access_token
        api = Api(token)
        try:
            # What the by-id calls need, made while the server is up.
            if call in ("Task.from_id.result", "get_task", "protect_task", "watch_tasks"):
                task_id = _ended_echo(api, key)
            elif call == "ack_task":
                task_id = _ended_echo(api, key, requireAck=True)
            elif call == "abort_task":
                task_id = api.prepare("echo")["taskId"]  # IDLE: abortable after a restart
            else:
                task_id = ""
        finally:
            api.close()
    finally:
        first.stop()
    caplog.set_level(logging.DEBUG, logger="requence_task")
    retry = RetryPolicy(budget=5, initial_backoff=0.05, max_backoff=0.2)
    second: LocalRequence | None = None
    with make_client(token, retry=retry) as c:
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                if call == "Task":
                    task = Task("echo", {"recover": key}, client=c)
                    outcome["task"] = task
                    outcome["value"] = task.result(timeout=WAIT).result
                elif call == "Task.from_id.result":
                    outcome["value"] = Task.from_id(task_id, client=c).result(timeout=WAIT).result
                elif call == "get_task":
                    outcome["value"] = get_task(task_id, client=c).status
                elif call == "protect_task":
                    protect_task(task_id, client=c)
                    outcome["value"] = None
                elif call == "abort_task":
                    abort_task(task_id, "recovered", client=c)
                    outcome["value"] = None
                elif call == "ack_task":
                    ack_task(task_id, client=c)
                    outcome["value"] = None
                else:
                    with watch_tasks(None, client=c) as watcher:
                        seen = []
                        for update in watcher.updates(timeout=WAIT):
                            seen.append(update.type)
                            if update.is_terminal:
                                break
                        outcome["value"] = seen
            except BaseException as err:
                outcome["error"] = err

        thread = threading.Thread(target=run, daemon=True)
        started = time.monotonic()
        thread.start()
        try:
            time.sleep(0.5)
            assert thread.is_alive(), f"the call ended while nothing listened: {outcome}"
            refused = _connection_errors(caplog)
            assert refused >= 2, f"the client was not retrying: {refused} refused attempts"
            second = LocalRequence(TEMPLATES, db=db, port=port).start()
            assert second.access_token == token
            thread.join(WAIT)
            took = time.monotonic() - started
            assert not thread.is_alive()
            assert "error" not in outcome, repr(outcome.get("error"))
            assert took < retry.budget, f"{took:.2f} s"
            value = outcome["value"]
            if call in ("Task", "Task.from_id.result"):
                assert value == {"input": {"recover": key}}
            if call == "Task":
                new_id = outcome["task"].task_id()
                assert [t.id for t in second.store.tasks_with_status(ALL_STATUSES)] == [new_id]
            elif call == "get_task":
                assert value is TaskStatus.SUCCESSFUL
            elif call == "protect_task":
                row = second.store.task(task_id)
                assert value is None and row is not None and row.protected is True
            elif call == "abort_task":
                row = second.store.task(task_id)
                assert value is None and row is not None
                assert (row.status, row.status_text) == ("STOPPED", "recovered")
            elif call == "ack_task":
                assert value is None and status_of(second, task_id) == "SUCCESSFUL"
            elif call == "watch_tasks":
                assert value == ECHO_TYPES
        finally:
            if second is not None:
                second.stop()
            thread.join(WAIT)
