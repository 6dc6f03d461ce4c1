"""``requence_task._fold``: the fold of updates into node states, and a task's
state from its futures. Unit tests on updates made here; the views that use it
(repr, HTML, progress bar, CLI status line) are tested over HTTP elsewhere."""

from __future__ import annotations

import concurrent.futures
from datetime import datetime, timezone
from typing import Any

import pytest

from requence_task import (
    ApiError,
    NodeDeferUpdate,
    NodeEndUpdate,
    NodeErrorUpdate,
    NodeInfo,
    NodeStartUpdate,
    NodeUpdateUpdate,
    RequenceUnreachableError,
    TaskAbortedError,
    TaskAbortedUpdate,
    TaskEndUpdate,
    TaskError,
    TaskErrorUpdate,
    TaskFailedError,
    TaskStartUpdate,
    Update,
)
from requence_task._fold import NodeFold, state_of

NOW = datetime(2024, 5, 1, tzinfo=timezone.utc)
ROOT = "task-1"


def start(node: str, task: str = ROOT, alias: str | None = None, **kw: Any) -> Update:
    return NodeStartUpdate(
        task_id=task, timestamp=NOW, node=NodeInfo(id=node, type="service", alias=alias), **kw
    )


def data(node: str, value: Any, task: str = ROOT, **kw: Any) -> Update:
    info = NodeInfo(id=node, type="service")
    return NodeUpdateUpdate(task_id=task, timestamp=NOW, node=info, data=value, **kw)


def end(node: str, task: str = ROOT, **kw: Any) -> Update:
    return NodeEndUpdate(task_id=task, timestamp=NOW, node=NodeInfo(id=node, type="service"), **kw)


def error(node: str, text: str, task: str = ROOT, **kw: Any) -> Update:
    info = NodeInfo(id=node, type="service")
    return NodeErrorUpdate(task_id=task, timestamp=NOW, node=info, error=text, **kw)


def defer(node: str, reason: str, task: str = ROOT) -> Update:
    info = NodeInfo(id=node, type="service")
    return NodeDeferUpdate(task_id=task, timestamp=NOW, node=info, reason=reason)


def states(fold: NodeFold) -> dict[str, str]:
    return {node.label: node.state for node in fold.nodes}


TASK_START = TaskStartUpdate(task_id=ROOT, timestamp=NOW)


def test_nodes_run_end_fail_and_defer_in_the_order_they_appeared() -> None:
    fold = NodeFold(ROOT)
    fold.feed_all(
        [
            TASK_START,
            start("a", alias="first"),
            data("a", {"n": 1}),
            end("a"),
            start("b"),
            defer("b", "waiting for a human"),
            start("c"),
            data("c", None),
            error("c", "went wrong"),
        ]
    )
    assert states(fold) == {"first": "ended", "b": "deferred", "c": "failed"}
    first, b, c = fold.nodes
    assert (first.data, first.has_data) == ({"n": 1}, True)
    assert (b.reason, b.has_data, b.active) == ("waiting for a human", False, True)
    assert (c.data, c.has_data, c.error, c.active) == (None, True, "went wrong", False)
    assert [n.label for n in fold.active()] == ["b"]
    assert (fold.seen, fold.node_updates, fold.terminal) == (9, 2, None)
    assert fold.count("ended") == 1


def test_a_failed_node_stays_failed() -> None:
    fold = NodeFold(ROOT, [start("a"), error("a", "boom"), end("a"), defer("a", "later")])
    assert states(fold) == {"a": "failed"}
    assert fold.nodes[0].reason is None


@pytest.mark.parametrize(
    ("terminal", "running_becomes", "deferred_becomes"),
    [
        (TaskAbortedUpdate(task_id=ROOT, timestamp=NOW, reason="stop"), "aborted", "aborted"),
        (TaskErrorUpdate(task_id=ROOT, timestamp=NOW, reason="x failed"), "stopped", "stopped"),
        (TaskEndUpdate(task_id=ROOT, timestamp=NOW), "ended", "ended"),
    ],
    ids=["taskAborted", "taskError", "taskEnd"],
)
def test_nodes_still_running_at_the_end_are_never_running_after_it(
    terminal: Update, running_becomes: str, deferred_becomes: str
) -> None:
    fold = NodeFold(ROOT)
    fold.feed_all([start("done"), end("done"), start("bad"), error("bad", "boom")])
    fold.feed_all([start("run"), start("wait"), defer("wait", "a human")])
    fold.feed(terminal)
    assert states(fold) == {
        "done": "ended",
        "bad": "failed",
        "run": running_becomes,
        "wait": deferred_becomes,
    }
    assert fold.active() == []
    assert fold.terminal is terminal
    assert fold.nodes[3].reason is None  # the defer's reason no longer holds
    # Stragglers after the end change nothing but a failure; a new node starts settled.
    fold.feed_all([end("run"), start("late"), error("wait", "lost")])
    assert states(fold)["run"] == running_becomes
    assert states(fold)["late"] == running_becomes
    assert states(fold)["wait"] == "failed"


def test_the_first_end_counts() -> None:
    aborted = TaskAbortedUpdate(task_id=ROOT, timestamp=NOW, reason="stop")
    fold = NodeFold(ROOT, [start("a"), aborted, TaskEndUpdate(task_id=ROOT, timestamp=NOW)])
    assert fold.terminal is aborted
    assert states(fold) == {"a": "aborted"}


def test_a_sub_tasks_end_settles_only_its_own_nodes() -> None:
    sub = "task-2"
    fold = NodeFold(ROOT)
    fold.feed_all([start("outer"), start("inner", task=sub, root_task_id=ROOT)])
    fold.feed(TaskErrorUpdate(task_id=sub, timestamp=NOW, root_task_id=ROOT, reason="inner"))
    assert [(n.task_id, n.label, n.state) for n in fold.nodes] == [
        (ROOT, "outer", "running"),
        (sub, "inner", "stopped"),
    ]
    assert fold.terminal is None  # the sub-task's end is not the task's
    fold.feed(TaskAbortedUpdate(task_id=ROOT, timestamp=NOW))
    assert states(fold) == {"outer": "aborted", "inner": "stopped"}


def test_same_node_id_in_a_sub_task_is_another_node() -> None:
    fold = NodeFold(ROOT, [start("n"), start("n", task="task-2", root_task_id=ROOT), end("n")])
    assert [(n.task_id, n.state) for n in fold.nodes] == [(ROOT, "ended"), ("task-2", "running")]


def test_without_the_id_the_tasks_own_end_is_the_one_without_a_root() -> None:
    fold = NodeFold(None, [start("a"), start("b", task="task-2", root_task_id=ROOT)])
    fold.feed(TaskEndUpdate(task_id="task-2", timestamp=NOW, root_task_id=ROOT))
    assert fold.terminal is None
    assert states(fold) == {"a": "running", "b": "ended"}
    fold.feed(TaskAbortedUpdate(task_id=ROOT, timestamp=NOW))
    assert fold.terminal is not None
    assert states(fold) == {"a": "aborted", "b": "ended"}


# --- the task's state ------------------------------------------------------------------


def future(value: Any = None, error: BaseException | None = None) -> concurrent.futures.Future[Any]:
    made: concurrent.futures.Future[Any] = concurrent.futures.Future()
    if error is not None:
        made.set_exception(error)
    else:
        made.set_result(value)
    return made


def pending() -> concurrent.futures.Future[Any]:
    return concurrent.futures.Future()


def test_the_states_of_creation() -> None:
    empty = NodeFold(ROOT)
    assert state_of(pending(), pending(), pending(), empty) == ("creating", None)
    refused = TaskError("Requence refused to create a task", status=404)
    assert state_of(future(error=refused), pending(), pending(), empty) == (
        "could not be created",
        "Requence refused to create a task",
    )
    assert state_of(future(ROOT), pending(), pending(), empty) == ("created", None)
    assert state_of(future(ROOT), future("urls"), pending(), empty) == ("started", None)
    running = NodeFold(ROOT, [TASK_START])
    assert state_of(future(ROOT), future("urls"), pending(), running) == ("running", None)
    # Its updates may outrun finalize's answer: a task whose updates came is running.
    assert state_of(future(ROOT), pending(), pending(), running) == ("running", None)


def test_rejected_and_not_created_at_finalize() -> None:
    rejected = TaskError("rejected", status=422, server_message="'name' is required")
    both = future(error=rejected)
    assert state_of(future(ROOT), both, future(error=rejected), NodeFold()) == (
        "rejected",
        "'name' is required",
    )
    lost = RequenceUnreachableError("Requence is not reachable right now")
    assert state_of(future(ROOT), future(error=lost), future(error=lost), NodeFold()) == (
        "could not be created",
        "Requence is not reachable right now",
    )
    # Only the finalize's own answer is there yet (the result comes next).
    assert state_of(future(ROOT), future(error=rejected), pending(), NodeFold())[0] == "rejected"


def test_the_states_of_the_end() -> None:
    fold = NodeFold(ROOT)
    created = future("urls")
    assert state_of(future(ROOT), created, future("result"), fold) == ("succeeded", None)
    failed = TaskFailedError("boom", task_id=ROOT)
    assert state_of(future(ROOT), created, future(error=failed), fold) == ("failed", "boom")
    aborted = TaskAbortedError("stop", task_id=ROOT)
    assert state_of(future(ROOT), created, future(error=aborted), fold) == ("aborted", "stop")
    # Aborted before it started: finalize answered 410, and the result says so too.
    assert state_of(future(ROOT), future(error=aborted), future(error=aborted), fold) == (
        "aborted",
        "stop",
    )
    unread = ApiError("its taskEnd update could not be read")
    assert state_of(future(ROOT), created, future(error=unread), fold) == (
        "error",
        "its taskEnd update could not be read",
    )


@pytest.mark.parametrize(
    ("terminal", "expected"),
    [
        (TaskEndUpdate(task_id=ROOT, timestamp=NOW), ("succeeded", None)),
        (TaskErrorUpdate(task_id=ROOT, timestamp=NOW, reason="boom"), ("failed", "boom")),
        (TaskAbortedUpdate(task_id=ROOT, timestamp=NOW, reason="stop"), ("aborted", "stop")),
    ],
)
def test_the_terminal_update_decides_before_the_result_is_settled(
    terminal: Update, expected: tuple[str, str | None]
) -> None:
    fold = NodeFold(ROOT, [TASK_START, start("a"), terminal])
    assert state_of(future(ROOT), future("urls"), pending(), fold) == expected
    # A cancelled result future (the user's doing) does not hide the end either.
    cancelled = pending()
    cancelled.cancel()
    assert state_of(future(ROOT), future("urls"), cancelled, fold) == expected
