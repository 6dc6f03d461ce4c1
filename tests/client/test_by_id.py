"""The functions for tasks known by id (abort_task, protect_task, ack_task,
get_task, recreate_task), TaskStatus, and Task.from_id, against the local
Requence over real HTTP."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from requence_task import (
    Client,
    ConfigurationError,
    RequenceError,
    Task,
    TaskAbortedError,
    TaskAbortedUpdate,
    TaskError,
    TaskFailedError,
    TaskInfo,
    TaskNotFoundError,
    TaskStatus,
    TaskTimeoutError,
    Update,
    abort_task,
    ack_task,
    get_task,
    protect_task,
    recreate_task,
)
from requence_task._client import default_client
from requence_task._token import decode_access_token, encode_access_token
from requence_task._wire import task_info
from requence_task.local import LocalRequence

from ..conftest import Api
from ..local.templates_for_tests import gate
from .conftest import make_client, own_server, wait_until
from .losing_proxy import LosingProxy

GREET_INPUT = {"name": "Ada", "steps": 2}
GREET_RESULT = {"message": "Hello, Ada!"}
GREET_NODE_DATA = {"greeter": {"message": "Hello, Ada!"}, "counter": {"step": 2}}
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
BAD_IDS: list[Any] = ["", "a b", "a/b", 5, None, "a?b", "a#b", "x" * 201]


def wait_status(c: Client, task_id: str, status: TaskStatus, timeout: float = 5.0) -> TaskInfo:
    """Poll get_task until the task has ``status``; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        info = get_task(task_id, client=c)
        if info.status is status:
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} stayed {info.status}, wanted {status}")
        time.sleep(0.01)


def running_gated(c: Client, key: str, **kwargs: Any) -> Task:
    """A "gated" task whose node is running (it waits for the gate ``key``)."""
    task = Task("gated", {"gate": key}, client=c, **kwargs)
    task.finalized(timeout=5)
    for update in task.updates(timeout=5):
        if update.type == "nodeStart":
            return task
    raise AssertionError("the gated task ended before its node started")


def positions(updates: list[Update]) -> list[tuple[str, int | None]]:
    return [(u.type, u.position) for u in updates]


# --- abort_task --------------------------------------------------------------------------------


def test_abort_task_of_a_running_task(client: Client, gate_key: str) -> None:
    task = running_gated(client, gate_key, name="to abort")
    task_id = task.task_id(timeout=0)
    assert get_task(task_id, client=client).status is TaskStatus.RUNNING
    assert abort_task(task_id, "enough — ü ✓", client=client) is None
    with pytest.raises(TaskAbortedError) as info:
        task.result(timeout=5)
    err = info.value
    assert err.reason == "enough — ü ✓"
    assert err.task_id == task_id
    assert err.template == "gated"
    updates = list(task.updates(timeout=5))
    assert [u.type for u in updates] == ["taskStart", "nodeStart", "taskAborted"]
    assert isinstance(updates[-1], TaskAbortedUpdate)
    assert updates[-1].reason == "enough — ü ✓"
    got = get_task(task_id, client=client)
    assert got.status is TaskStatus.STOPPED
    assert got.raw_status == "STOPPED"
    assert got.status_text == "enough — ü ✓"
    assert (got.task_template, got.name, got.branch) == ("gated", "to abort", "live")
    assert got.context.input == {"gate": gate_key}
    assert got.context.result is None


def test_abort_task_without_reason(client: Client, gate_key: str) -> None:
    task = running_gated(client, gate_key)
    abort_task(task.task_id(timeout=0), client=client)
    with pytest.raises(TaskAbortedError) as info:
        task.result(timeout=5)
    assert info.value.reason is None
    got = get_task(task.task_id(timeout=0), client=client)
    assert (got.status, got.status_text) == (TaskStatus.STOPPED, None)


def test_abort_task_of_an_idle_task(client: Client, api: Api) -> None:
    task_id = api.prepare("echo")["taskId"]
    abort_task(task_id, "never mind", client=client)
    got = get_task(task_id, client=client)
    assert (got.status, got.status_text) == (TaskStatus.STOPPED, "never mind")


def test_abort_task_of_a_finished_task_is_a_409(client: Client) -> None:
    task = Task("echo", {"done": True}, client=client)
    assert task.result(timeout=5).result == {"input": {"done": True}}
    task_id = task.task_id(timeout=0)
    with pytest.raises(TaskError) as info:
        abort_task(task_id, "too late", client=client)
    err = info.value
    assert type(err) is TaskError
    assert err.status == 409
    assert err.task_id == task_id
    assert f"Task {task_id} has already ended (SUCCESSFUL)" in str(err)
    got = get_task(task_id, client=client)
    assert (got.status, got.status_text) == (TaskStatus.SUCCESSFUL, None)


def test_abort_task_twice_is_a_409(client: Client, gate_key: str) -> None:
    task = running_gated(client, gate_key)
    task_id = task.task_id(timeout=0)
    abort_task(task_id, "first", client=client)
    with pytest.raises(TaskError) as info:
        abort_task(task_id, "second", client=client)
    assert info.value.status == 409
    assert get_task(task_id, client=client).status_text == "first"


@pytest.mark.parametrize("function", ["abort", "protect", "ack", "get", "recreate"])
def test_unknown_id_is_task_not_found(client: Client, function: str) -> None:
    unknown = f"no-such-{uuid.uuid4().hex}"
    calls: dict[str, Callable[[], Any]] = {
        "abort": lambda: abort_task(unknown, "why", client=client),
        "protect": lambda: protect_task(unknown, client=client),
        "ack": lambda: ack_task(unknown, client=client),
        "get": lambda: get_task(unknown, client=client),
        "recreate": lambda: recreate_task(unknown, client=client),
    }
    with pytest.raises(TaskNotFoundError) as info:
        calls[function]()
    err = info.value
    assert isinstance(err, LookupError)
    assert isinstance(err, RequenceError)
    assert err.task_id == unknown
    assert unknown in str(err)


@pytest.mark.parametrize("odd", ["täsk", "a%2Fb", "%", "a;b", "ø" * 100])
def test_odd_but_valid_ids_are_sent_quoted(client: Client, odd: str) -> None:
    for call in (
        lambda: get_task(odd, client=client),
        lambda: abort_task(odd, client=client),
        lambda: protect_task(odd, client=client),
        lambda: ack_task(odd, client=client),
        lambda: recreate_task(odd, client=client),
        lambda: Task.from_id(odd, client=client).result(timeout=5),
    ):
        with pytest.raises(TaskNotFoundError) as info:
            call()
        assert info.value.task_id == odd


@pytest.mark.parametrize("dots", [".", ".."])
def test_dot_ids_are_malformed_or_not_found(client: Client, dots: str) -> None:
    # "." and ".." are dot segments: the HTTP stack folds them out of the URL, so the
    # request would reach another endpoint. Either refuse them as malformed, or report
    # them as not found; never another endpoint's answer.
    for name, call in (
        ("get_task", lambda: get_task(dots, client=client)),
        ("abort_task", lambda: abort_task(dots, client=client)),
        ("protect_task", lambda: protect_task(dots, client=client)),
        ("ack_task", lambda: ack_task(dots, client=client)),
        ("recreate_task", lambda: recreate_task(dots, client=client)),
        ("Task.from_id", lambda: Task.from_id(dots, client=client).result(timeout=5)),
    ):
        try:
            call()
        except (ConfigurationError, TaskNotFoundError):
            continue
        except RequenceError as err:
            raise AssertionError(f"{name}({dots!r}) raised {err!r}") from None
        raise AssertionError(f"{name}({dots!r}) raised nothing")


def test_another_projects_task_is_not_found(server: LocalRequence, client: Client) -> None:
    with make_client(server.token_for("other")) as other:
        foreign = Task("echo", {"secret": 1}, client=other)
        foreign_id = foreign.finalized(timeout=5)
        foreign.result(timeout=5)
    for call in (
        lambda: get_task(foreign_id, client=client),
        lambda: abort_task(foreign_id, client=client),
        lambda: protect_task(foreign_id, client=client),
        lambda: ack_task(foreign_id, client=client),
    ):
        with pytest.raises(TaskNotFoundError) as info:
            call()
        assert info.value.task_id == foreign_id


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_malformed_ids_raise_before_any_request(bad: Any) -> None:
    with own_server() as rq, make_client(rq.access_token) as c:
        # Every request the server answers takes one of these: none may be taken.
        rq.faults.fail_next(100, status=418)
        calls: list[Callable[[], Any]] = [
            lambda: abort_task(bad, "why", client=c),
            lambda: protect_task(bad, client=c),
            lambda: ack_task(bad, client=c),
            lambda: get_task(bad, client=c),
            lambda: recreate_task(bad, client=c),
            lambda: Task.from_id(bad, client=c),
        ]
        for call in calls:
            with pytest.raises(ConfigurationError) as info:
                call()
            assert "is not a task id" in str(info.value)
        assert rq.faults.pending_failures == 100


def test_access_token_and_client_both_are_refused(server: LocalRequence, client: Client) -> None:
    token = server.access_token
    task_id = Task("echo", client=client).finalized(timeout=5)
    calls: list[Callable[[], Any]] = [
        lambda: abort_task(task_id, access_token=token, client=client),
        lambda: protect_task(task_id, access_token=token, client=client),
        lambda: ack_task(task_id, access_token=token, client=client),
        lambda: get_task(task_id, access_token=token, client=client),
        lambda: recreate_task(task_id, access_token=token, client=client),
        lambda: Task.from_id(task_id, access_token=token, client=client),
    ]
    for call in calls:
        with pytest.raises(ConfigurationError) as info:
            call()
        assert "either client= or access_token=" in str(info.value)
    # Nothing happened to the task.
    assert wait_status(client, task_id, TaskStatus.SUCCESSFUL).status is TaskStatus.SUCCESSFUL


def test_functions_with_access_token(server: LocalRequence, gate_key: str) -> None:
    token = server.access_token
    try:
        task = Task("gated", {"gate": gate_key}, access_token=token)
        task_id = task.finalized(timeout=5)
        protect_task(task_id, access_token=token)
        assert server.store.task(task_id).protected is True
        abort_task(task_id, "by token", access_token=token)
        got = get_task(task_id, access_token=token)
        assert (got.status, got.status_text) == (TaskStatus.STOPPED, "by token")
        with pytest.raises(TaskAbortedError):
            task.result(timeout=5)
        copy = recreate_task(task_id, access_token=token)
        assert copy.template == "gated"
        copy_id = copy.finalized(timeout=5)
        abort_task(copy_id, access_token=token)
        ack_token_task = Task("echo", require_ack=True, access_token=token)
        ack_id = ack_token_task.finalized(timeout=5)
        wait_until(
            lambda: get_task(ack_id, access_token=token).status is TaskStatus.AWAITING_DELIVERY,
            what="AWAITING_DELIVERY",
        )
        ack_task(ack_id, access_token=token)
        assert get_task(ack_id, access_token=token).status is TaskStatus.SUCCESSFUL
    finally:
        default_client(token).close()


def test_wrong_argument_types() -> None:
    with own_server() as rq, make_client(rq.access_token) as c:
        rq.faults.fail_next(100, status=418)
        with pytest.raises(ConfigurationError):
            abort_task("some-id", 5, client=c)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            get_task("some-id", client="not a client")  # type: ignore[arg-type]
        assert rq.faults.pending_failures == 100


def test_transient_503_is_retried(server: LocalRequence, client: Client, gate_key: str) -> None:
    task = running_gated(client, gate_key)
    task_id = task.task_id(timeout=0)
    server.faults.fail_next(2, endpoint="get")
    assert get_task(task_id, client=client).status is TaskStatus.RUNNING
    server.faults.fail_next(2, endpoint="protect")
    protect_task(task_id, client=client)
    server.faults.fail_next(2, endpoint="abort")
    abort_task(task_id, "after 503s", client=client)
    assert server.faults.pending_failures == 0
    assert get_task(task_id, client=client).status_text == "after 503s"


# --- protect_task --------------------------------------------------------------------------------


def test_protect_task_keeps_a_task_through_cleanup() -> None:
    # A retention of 1 s leaves room to protect a task that just ended, even under load.
    with own_server(retention=1.0, cleanup_interval=0.05) as rq, make_client(rq.access_token) as c:
        key = uuid.uuid4().hex
        gate(key)
        try:
            running = running_gated(c, key)
            running_id = running.task_id(timeout=0)
            protect_task(running_id, client=c)  # while it runs
            finished = Task("echo", {"k": "finished"}, client=c)
            finished_id = finished.task_id(timeout=5)
            assert finished.result(timeout=5).result == {"input": {"k": "finished"}}
            protect_task(finished_id, client=c)  # after it ended
            plain = Task("echo", {"k": "plain"}, client=c)
            plain_id = plain.task_id(timeout=5)
            assert plain.result(timeout=5).result == {"input": {"k": "plain"}}
            gate(key).set()
            assert running.result(timeout=5).result == {"opened": key}
            ended = time.monotonic()

            def gone() -> bool:
                try:
                    get_task(plain_id, client=c)
                except TaskNotFoundError:
                    return True
                return False

            wait_until(gone, timeout=6, what="cleanup of the unprotected task")
            time.sleep(max(0.0, ended + 1.5 - time.monotonic()))
            for task_id, result in (
                (running_id, {"opened": key}),
                (finished_id, {"input": {"k": "finished"}}),
            ):
                got = get_task(task_id, client=c)
                assert got.status is TaskStatus.SUCCESSFUL
                assert got.context.result == result
        finally:
            gate(key).set()


# --- ack_task -----------------------------------------------------------------------------------


def test_ack_task_of_an_unwatched_require_ack_task(client: Client) -> None:
    task = Task("echo", {"ack": 1}, require_ack=True, client=client)
    task_id = task.finalized(timeout=5)
    info = wait_status(client, task_id, TaskStatus.AWAITING_DELIVERY)
    assert info.status.ended is True
    assert info.raw_status == "AWAITING_DELIVERY"
    assert info.context.result == {"input": {"ack": 1}}
    time.sleep(0.1)
    # Nobody acked it: it stays held.
    assert get_task(task_id, client=client).status is TaskStatus.AWAITING_DELIVERY
    assert ack_task(task_id, client=client) is None
    assert get_task(task_id, client=client).status is TaskStatus.SUCCESSFUL
    with pytest.raises(TaskError) as second:
        ack_task(task_id, client=client)
    err = second.value
    assert type(err) is TaskError
    assert err.status == 409
    assert err.task_id == task_id
    assert "is not awaiting delivery (its status is SUCCESSFUL)" in str(err)
    assert get_task(task_id, client=client).status is TaskStatus.SUCCESSFUL


def test_ack_task_of_a_failed_require_ack_task(client: Client) -> None:
    task = Task("fail", {"name": "F"}, require_ack=True, client=client)
    task_id = task.finalized(timeout=5)
    info = wait_status(client, task_id, TaskStatus.AWAITING_DELIVERY)
    assert info.status_text == "node 'boom' failed: the boiler exploded"
    ack_task(task_id, client=client)
    got = get_task(task_id, client=client)
    assert got.status is TaskStatus.FAILED
    assert got.status_text == "node 'boom' failed: the boiler exploded"


def test_ack_task_of_a_task_that_did_not_ask_is_a_409(client: Client, gate_key: str) -> None:
    done = Task("echo", client=client)
    done.result(timeout=5)
    with pytest.raises(TaskError) as info:
        ack_task(done.task_id(timeout=0), client=client)
    assert info.value.status == 409
    running = running_gated(client, gate_key, require_ack=True)
    with pytest.raises(TaskError) as info:
        ack_task(running.task_id(timeout=0), client=client)
    assert info.value.status == 409
    assert "(its status is RUNNING)" in str(info.value)


# --- get_task ------------------------------------------------------------------------------------


def test_get_task_of_a_successful_task(client: Client) -> None:
    task = Task("greet", GREET_INPUT, name="greeting", client=client)
    result = task.result(timeout=5)
    info = get_task(task.task_id(timeout=0), client=client)
    assert isinstance(info, TaskInfo)
    assert info.task_id == task.task_id(timeout=0)
    assert info.status is TaskStatus.SUCCESSFUL
    assert info.status == "SUCCESSFUL"
    assert info.raw_status == "SUCCESSFUL"
    assert info.status_text is None
    assert (info.task_template, info.name, info.branch) == ("greet", "greeting", "live")
    context = info.context
    assert context.task_id == info.task_id
    assert context.input == GREET_INPUT
    assert context.result == GREET_RESULT
    assert dict(context.node_data) == GREET_NODE_DATA
    assert list(context.node_data) == ["greeter", "counter"]
    assert dict(context.node_errors) == {}
    assert context.get_node_data("counter") == {"step": 2}
    # What get_task reports is what the update stream folded to.
    assert dict(context.node_data) == dict(result.node_data)
    assert context.result == result.result


def test_get_task_of_a_failed_task(client: Client) -> None:
    task = Task("fail", {"name": "Bo"}, client=client)
    with pytest.raises(TaskFailedError) as failed:
        task.result(timeout=5)
    info = get_task(task.task_id(timeout=0), client=client)
    assert info.status is TaskStatus.FAILED
    assert info.status.ended is True
    assert info.status_text == "node 'boom' failed: the boiler exploded"
    assert info.status_text == failed.value.reason
    assert (info.task_template, info.name, info.branch) == ("fail", None, "live")
    assert info.context.input == {"name": "Bo"}
    assert info.context.result is None
    assert dict(info.context.node_data) == {"first": {"message": "Hello, Bo!"}}
    assert dict(info.context.node_errors) == {"boom": "the boiler exploded"}
    assert info.context.get_node_error("boom") == "the boiler exploded"
    assert info.context.get_node_error("first") is None


def test_get_task_of_a_task_with_an_optional_node_error(client: Client) -> None:
    task = Task("optional-fail", client=client)
    task.result(timeout=5)
    info = get_task(task.task_id(timeout=0), client=client)
    assert info.status is TaskStatus.SUCCESSFUL
    assert dict(info.context.node_errors) == {"boom": "the boiler exploded"}
    assert dict(info.context.node_data) == {"after": {"saw_error": "the boiler exploded"}}


def test_get_task_of_pending_and_running_tasks() -> None:
    with own_server(concurrency=1) as rq, make_client(rq.access_token) as c:
        first_key, second_key = uuid.uuid4().hex, uuid.uuid4().hex
        gate(first_key)
        gate(second_key)
        try:
            first = running_gated(c, first_key, name="first")
            second = Task("gated", {"gate": second_key}, name="second", client=c)
            second_id = second.finalized(timeout=5)
            running = get_task(first.task_id(timeout=0), client=c)
            assert running.status is TaskStatus.RUNNING
            assert running.status.ended is False
            assert (running.task_template, running.name) == ("gated", "first")
            assert running.context.input == {"gate": first_key}
            assert running.context.result is None
            assert dict(running.context.node_data) == {}
            pending = get_task(second_id, client=c)
            assert pending.status is TaskStatus.PENDING
            assert pending.status.ended is False
            assert pending.raw_status == "PENDING"
            assert (pending.task_template, pending.name, pending.status_text) == (
                "gated",
                "second",
                None,
            )
            assert pending.context.input == {"gate": second_key}
            gate(first_key).set()
            gate(second_key).set()
            assert second.result(timeout=5).result == {"opened": second_key}
            assert get_task(second_id, client=c).status is TaskStatus.SUCCESSFUL
        finally:
            gate(first_key).set()
            gate(second_key).set()


def test_get_task_of_an_idle_task(client: Client, api: Api) -> None:
    task_id = api.prepare("echo")["taskId"]
    info = get_task(task_id, client=client)
    assert info.status is TaskStatus.IDLE
    assert info.status.ended is False
    assert info.raw_status == "IDLE"
    assert (info.task_id, info.task_template, info.name, info.branch) == (
        task_id,
        "echo",
        None,
        "live",
    )
    assert info.status_text is None
    assert (info.context.input, info.context.result) == (None, None)
    assert (dict(info.context.node_data), dict(info.context.node_errors)) == ({}, {})


def test_get_task_reports_a_development_branch(client: Client, api: Api) -> None:
    task_id = api.prepare("dev-branch")["taskId"]
    info = get_task(task_id, client=client)
    assert (info.status, info.task_template, info.branch) == (
        TaskStatus.IDLE,
        "dev-branch",
        "feature-x",
    )


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("SUCCESSFUL", TaskStatus.SUCCESSFUL),
        ("successful", TaskStatus.SUCCESSFUL),
        ("Successful", TaskStatus.SUCCESSFUL),
        ("failed", TaskStatus.FAILED),
        ("Idle", TaskStatus.IDLE),
        ("pEnDiNg", TaskStatus.PENDING),
        ("running", TaskStatus.RUNNING),
        ("stopped", TaskStatus.STOPPED),
        ("awaiting_delivery", TaskStatus.AWAITING_DELIVERY),
        ("Awaiting_Delivery", TaskStatus.AWAITING_DELIVERY),
        (" RUNNING\n", TaskStatus.RUNNING),
        ("DONE", TaskStatus.UNKNOWN),
        ("awaiting delivery", TaskStatus.UNKNOWN),
        ("", TaskStatus.UNKNOWN),
        (None, TaskStatus.UNKNOWN),
        (5, TaskStatus.UNKNOWN),
    ],
)
def test_task_status_parse(text: Any, status: TaskStatus) -> None:
    assert TaskStatus.parse(text) is status


def test_task_status_values_and_ended() -> None:
    assert [s.value for s in TaskStatus] == [
        "IDLE",
        "PENDING",
        "RUNNING",
        "AWAITING_DELIVERY",
        "SUCCESSFUL",
        "FAILED",
        "STOPPED",
        "UNKNOWN",
    ]
    assert {s for s in TaskStatus if s.ended} == {
        TaskStatus.AWAITING_DELIVERY,
        TaskStatus.SUCCESSFUL,
        TaskStatus.FAILED,
        TaskStatus.STOPPED,
    }


def test_task_info_from_a_lower_case_answer() -> None:
    # The Python SDK's types spell statuses in lower case: the body of a get in that style.
    info = task_info(
        "t-1",
        {
            "status": "awaiting_delivery",
            "statusText": "held",
            "taskTemplate": "tpl",
            "name": "n",
            "branch": "live",
            "input": {"a": 1},
            "result": [1, 2],
            "nodesData": [{"alias": "x", "data": {"d": 1}}, {"alias": "y", "data": None}],
            "nodesError": [{"alias": "z", "error": "bad"}],
        },
    )
    assert info.status is TaskStatus.AWAITING_DELIVERY
    assert info.raw_status == "awaiting_delivery"
    assert (info.status_text, info.task_template, info.name, info.branch) == (
        "held",
        "tpl",
        "n",
        "live",
    )
    assert (info.context.input, info.context.result) == ({"a": 1}, [1, 2])
    assert dict(info.context.node_data) == {"x": {"d": 1}, "y": None}
    assert dict(info.context.node_errors) == {"z": "bad"}
    odd = task_info("t-2", {"status": "archived"})
    assert (odd.status, odd.raw_status) == (TaskStatus.UNKNOWN, "archived")


# --- recreate_task -------------------------------------------------------------------------------


def test_recreate_task_copies_template_input_and_name(client: Client) -> None:
    original = Task("greet", GREET_INPUT, name="the original", client=client)
    result = original.result(timeout=5)
    original_id = original.task_id(timeout=0)
    copy = recreate_task(original_id, client=client)
    assert isinstance(copy, Task)
    assert (copy.template, copy.name, copy.priority) == ("greet", "the original", 5)
    copy_id = copy.task_id(timeout=5)
    assert copy_id != original_id
    copied = copy.result(timeout=5)
    assert copied.task_id == copy_id
    assert (copied.input, copied.result) == (GREET_INPUT, GREET_RESULT)
    assert dict(copied.node_data) == dict(result.node_data)
    assert [u.type for u in copy.updates(timeout=5)] == GREET_TYPES
    info = get_task(copy_id, client=client)
    assert (info.status, info.task_template, info.name) == (
        TaskStatus.SUCCESSFUL,
        "greet",
        "the original",
    )
    assert info.context.input == GREET_INPUT
    # The original is untouched.
    assert get_task(original_id, client=client).name == "the original"


def test_recreate_task_with_a_new_name(client: Client) -> None:
    original = Task("echo", {"x": [1, "two", None]}, name="old", client=client)
    original.result(timeout=5)
    copy = recreate_task(original.task_id(timeout=0), name="new", client=client)
    assert copy.name == "new"
    assert copy.result(timeout=5).result == {"input": {"x": [1, "two", None]}}
    assert get_task(copy.task_id(timeout=0), client=client).name == "new"


def test_recreate_task_of_a_failed_and_an_aborted_task(client: Client, gate_key: str) -> None:
    failed = Task("fail", {"name": "Cy"}, client=client)
    with pytest.raises(TaskFailedError):
        failed.result(timeout=5)
    again = recreate_task(failed.task_id(timeout=0), client=client)
    with pytest.raises(TaskFailedError) as info:
        again.result(timeout=5)
    assert info.value.reason == "node 'boom' failed: the boiler exploded"
    assert info.value.task_id == again.task_id(timeout=0) != failed.task_id(timeout=0)
    aborted = running_gated(client, gate_key)
    aborted.abort("stop")
    copy = recreate_task(aborted.task_id(timeout=0), client=client)
    gate(gate_key).set()
    assert copy.result(timeout=5).result == {"opened": gate_key}


def test_recreate_task_respects_priority() -> None:
    with own_server(concurrency=1) as rq, make_client(rq.access_token) as c:
        key = uuid.uuid4().hex
        gate(key)
        try:
            blocker = running_gated(c, key)
            original = Task("echo", {"p": 1}, client=c)
            original_id = original.finalized(timeout=5)
            low = recreate_task(original_id, priority=0, client=c)
            high = recreate_task(original_id, priority=10, client=c)
            default = recreate_task(original_id, client=c)
            assert (low.priority, high.priority, default.priority) == (0, 10, 5)
            ids = [t.finalized(timeout=5) for t in (low, high, default)]
            # On the wire 0 is the most urgent: wire = 10 - priority.
            assert [rq.store.task(i).priority for i in ids] == [10, 0, 5]
            gate(key).set()
            blocker.result(timeout=5)
            for task in (original, low, high, default):
                assert task.result(timeout=5).result == {"input": {"p": 1}}
            ended = {i: rq.store.task(i).ended_at for i in [original_id, *ids]}
            order = sorted(ended, key=lambda i: ended[i])
            # The high copy ran first, then the equal-priority ones in order, the low one last.
            assert order == [ids[1], original_id, ids[2], ids[0]]
        finally:
            gate(key).set()


def test_recreate_task_rejects_a_wrong_priority(client: Client) -> None:
    original = Task("echo", client=client)
    original_id = original.finalized(timeout=5)
    for bad in (11, -1, 2.5, True):
        with pytest.raises(ConfigurationError) as info:
            recreate_task(original_id, priority=bad, client=client)  # type: ignore[arg-type]
        assert "priority must be a whole number from 0 (low) to 10 (high)" in str(info.value)


def test_recreate_task_rejects_a_wrong_priority_before_any_request() -> None:
    # Wrong arguments raise before any request is sent (issue #3, for Task's priority).
    with own_server() as rq, make_client(rq.access_token) as c:
        original_id = Task("echo", client=c).finalized(timeout=5)
        rq.faults.fail_next(100, status=418)
        with pytest.raises(ConfigurationError):
            recreate_task(original_id, priority=11, client=c)
        with pytest.raises(ConfigurationError):
            recreate_task(original_id, name=5, client=c)  # type: ignore[arg-type]
        assert rq.faults.pending_failures == 100


# --- Task.from_id -------------------------------------------------------------------------------


def test_from_id_of_a_finished_task(client: Client) -> None:
    original = Task("greet", GREET_INPUT, client=client)
    result = original.result(timeout=5)
    original_updates = list(original.updates(timeout=5))
    task_id = original.task_id(timeout=0)
    handle = Task.from_id(task_id, client=client)
    assert handle.task_id(timeout=0) == task_id
    assert handle.finalized(timeout=0) == task_id
    assert (handle.template, handle.name, handle.priority) == (None, None, None)
    assert handle.result(timeout=5) == result
    assert handle.task_url(timeout=0) == result.task_url
    replayed = list(handle.updates(timeout=5))
    assert [u.type for u in replayed] == GREET_TYPES
    assert positions(replayed) == positions(original_updates)
    assert replayed == original_updates  # same data, contexts and timestamps too
    assert [u.incomplete for u in replayed] == [False] * len(GREET_TYPES)
    # A second iteration replays again, from taskStart.
    assert list(handle) == replayed
    assert handle.done() is True


def test_from_id_of_a_running_task_follows_it(client: Client, gate_key: str) -> None:
    original = running_gated(client, gate_key)
    seen: list[Update] = []
    handle = Task.from_id(original.task_id(timeout=0), client=client, on_update=seen.append)
    with pytest.raises(TaskTimeoutError):
        handle.result(timeout=0.2)
    gate(gate_key).set()
    assert handle.result(timeout=5).result == {"opened": gate_key}
    assert handle.result(timeout=0) == original.result(timeout=5)
    replayed = list(handle.updates(timeout=5))
    assert replayed == list(original.updates(timeout=5))
    assert seen == replayed


def test_from_id_abort_and_protect(server: LocalRequence, client: Client, gate_key: str) -> None:
    original = running_gated(client, gate_key)
    task_id = original.task_id(timeout=0)
    handle = Task.from_id(task_id, client=client)
    handle.protect()
    assert server.store.task(task_id).protected is True
    handle.abort("from elsewhere")
    for task in (original, handle):
        with pytest.raises(TaskAbortedError) as info:
            task.result(timeout=5)
        assert info.value.reason == "from elsewhere"
        assert info.value.task_id == task_id
    got = get_task(task_id, client=client)
    assert (got.status, got.status_text) == (TaskStatus.STOPPED, "from elsewhere")
    with pytest.raises(TaskError) as conflict:
        handle.abort("again")
    assert conflict.value.status == 409


def test_from_id_of_an_unknown_id(client: Client) -> None:
    unknown = f"missing-{uuid.uuid4().hex}"
    handle = Task.from_id(unknown, client=client)
    assert handle.task_id(timeout=0) == unknown
    started = time.monotonic()
    with pytest.raises(TaskNotFoundError) as info:
        handle.result(timeout=5)
    assert time.monotonic() - started < 3
    assert info.value.task_id == unknown
    with pytest.raises(TaskNotFoundError):
        list(handle.updates(timeout=5))
    with pytest.raises(TaskNotFoundError):
        handle.abort("x")
    with pytest.raises(TaskNotFoundError):
        handle.protect()


def test_from_id_of_an_idle_task(client: Client, api: Api) -> None:
    task_id = api.prepare("echo")["taskId"]
    handle = Task.from_id(task_id, client=client)
    with pytest.raises(TaskTimeoutError):
        handle.result(timeout=0.3)
    abort_task(task_id, "never started", client=client)
    with pytest.raises(TaskAbortedError) as info:
        handle.result(timeout=5)
    assert (info.value.reason, info.value.task_id) == ("never started", task_id)
    assert [u.type for u in handle.updates(timeout=5)] == ["taskAborted"]


def test_from_id_acks_a_require_ack_task(client: Client) -> None:
    task = Task("echo", {"a": 2}, require_ack=True, client=client)
    task_id = task.finalized(timeout=5)
    wait_status(client, task_id, TaskStatus.AWAITING_DELIVERY)
    handle = Task.from_id(task_id, client=client)
    assert handle.result(timeout=5).result == {"input": {"a": 2}}
    wait_status(client, task_id, TaskStatus.SUCCESSFUL, timeout=3)


_CHILD = """
import json, sys
from requence_task import Task
task = Task.from_id(sys.argv[1])
updates = task.updates(timeout=20)
first = next(updates)
print(json.dumps({"first": first.type, "position": first.position}), flush=True)
result = task.result(timeout=20)
print(json.dumps({
    "task_id": result.task_id,
    "input": result.input,
    "result": result.result,
    "node_data": dict(result.node_data),
    "positions": [[u.type, u.position] for u in task.updates(timeout=20)],
}), flush=True)
"""


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_from_id_in_another_process(
    server: LocalRequence, client: Client, gate_key: str, tmp_path: Path
) -> None:
    original = running_gated(client, gate_key)
    task_id = original.task_id(timeout=0)
    env = {k: v for k, v in os.environ.items() if k != "REQUENCE_ACCESS_TOKEN"}
    env["REQUENCE_TASK_ACCESS_TOKEN"] = server.access_token
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD, task_id],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _lines(process)
        first = lines.get(timeout=20)
        assert first is not None, process.stderr.read() if process.stderr else ""
        start = next(u for u in original.updates(timeout=5) if u.type == "taskStart")
        assert json.loads(first) == {"first": "taskStart", "position": start.position}
        # The child is following the live task: let it end now.
        gate(gate_key).set()
        line = lines.get(timeout=20)
        assert line is not None, process.stderr.read() if process.stderr else ""
        got = json.loads(line)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    result = original.result(timeout=5)
    assert got == {
        "task_id": task_id,
        "input": {"gate": gate_key},
        "result": {"opened": gate_key},
        "node_data": {"wait": {"opened": gate_key}},
        "positions": [list(p) for p in positions(list(original.updates(timeout=5)))],
    }
    assert got["result"] == result.result


# --- answers lost after the server acted ---------------------------------------------------------


@pytest.fixture()
def losing_proxy(server: LocalRequence) -> Iterator[Callable[[str], tuple[LosingProxy, Client]]]:
    made: list[tuple[LosingProxy, Client]] = []

    def make(lose: str) -> tuple[LosingProxy, Client]:
        proxy = LosingProxy(server.base_url, {("POST", lose): 1}).__enter__()
        bearer = decode_access_token(server.access_token).bearer
        c = make_client(encode_access_token(bearer, proxy.base_url))
        made.append((proxy, c))
        return proxy, c

    yield make
    for proxy, c in made:
        c.close()
        proxy.__exit__()


def test_abort_task_whose_answer_was_lost_reports_no_false_failure(
    client: Client, gate_key: str, losing_proxy: Callable[[str], tuple[LosingProxy, Client]]
) -> None:
    task = running_gated(client, gate_key)
    task_id = task.task_id(timeout=0)
    proxy, via_proxy = losing_proxy("/task/abort/")
    # The abort lands, its answer is lost, the client retries: the abort did succeed.
    abort_task(task_id, "lost answer", client=via_proxy)
    assert proxy.dropped == [f"POST /task/abort/{task_id}"]
    with pytest.raises(TaskAbortedError) as info:
        task.result(timeout=5)
    assert info.value.reason == "lost answer"


def test_ack_task_whose_answer_was_lost_reports_no_false_failure(
    client: Client, losing_proxy: Callable[[str], tuple[LosingProxy, Client]]
) -> None:
    task = Task("echo", require_ack=True, client=client)
    task_id = task.finalized(timeout=5)
    wait_status(client, task_id, TaskStatus.AWAITING_DELIVERY)
    proxy, via_proxy = losing_proxy("/task/ack/")
    ack_task(task_id, client=via_proxy)
    assert proxy.dropped == [f"POST /task/ack/{task_id}"]
    assert get_task(task_id, client=client).status is TaskStatus.SUCCESSFUL
