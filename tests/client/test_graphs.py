"""The client on templates run as graphs, over real HTTP to the local Requence:
interleaved branches, exits, and sub-tasks on the shared stream, by id, in
``get_task`` and in ``watch_tasks``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from requence_task import Client, Task, TaskStatus, get_task
from requence_task.local import LocalRequence

from .conftest import make_client
from .test_watch import collect, connected_watcher, of


@pytest.fixture()
def pclient(server: LocalRequence) -> Iterator[Client]:
    """A client of a project of its own: its watchers see only this test's tasks."""
    with make_client(server.token_for(f"graphs-{uuid.uuid4().hex}")) as c:
        yield c


def test_interleaved_branches_fold_into_one_context(client: Client) -> None:
    task = Task("two-branches", client=client)
    updates = list(task.updates(timeout=20))
    positions = [u.position for u in updates]
    assert positions == sorted(set(positions))  # type: ignore[type-var]
    aliases = [u.node.alias for u in updates if u.type == "nodeUpdate"]  # type: ignore[attr-defined]
    assert sorted(aliases) == ["left"] * 3 + ["right"] * 3
    # The branches ran at the same time: their updates interleave.
    assert aliases != sorted(aliases) and aliases != sorted(aliases, reverse=True)
    result = task.result(timeout=20)
    assert dict(result.node_data) == {
        "left": {"step": 2, "alias": "left"},
        "right": {"step": 2, "alias": "right"},
    }
    assert result.result == {
        "left": {"step": 2, "alias": "left"},
        "right": {"step": 2, "alias": "right"},
    }
    assert result.exit is None


def test_an_exit_and_a_subtask_seen_by_the_client(pclient: Client) -> None:
    with connected_watcher(pclient) as watcher:
        task = Task("order", {"total": 12}, client=pclient)
        result = task.result(timeout=20)
        assert result.exit == "done"
        assert result.result == {"mailed": 12}
        # The root's context has its own nodes only; the sub-task's result is
        # the sub-task node's data.
        assert dict(result.node_data) == {"invoice": {"total": 12}, "mail": {"mailed": 12}}
        updates = list(task.updates(timeout=20))
        subtask_ids = {u.task_id for u in updates} - {task.task_id()}
        own = [u for u in updates if u.task_id == task.task_id()]
        assert own[-1].type == "taskEnd" and own[-1].exit == "done"  # type: ignore[attr-defined]
        seen = collect(watcher, {task.task_id()})
    # watch_tasks: the sub-task's updates under its own id, with the root's.
    children = {u.task_id for u in seen if u.root_task_id == task.task_id()}
    assert len(children) == 1
    (child_id,) = children
    assert child_id != task.task_id()
    assert [u.type for u in of(seen, child_id)] == [
        "taskStart",
        "nodeStart",
        "nodeUpdate",
        "nodeEnd",
        "nodeStart",
        "nodeUpdate",
        "nodeEnd",
        "taskEnd",
    ]
    assert subtask_ids <= {child_id}  # the root's handle saw no other task's updates

    # The sub-task by id: its own result and exit, its root in get_task.
    child = Task.from_id(child_id, client=pclient)
    child_result = child.result(timeout=20)
    assert (child_result.exit, child_result.result) == ("billed", {"total": 12})
    info = get_task(child_id, client=pclient)
    assert info.status == TaskStatus.SUCCESSFUL
    assert (info.exit, info.root_task_id, info.task_template) == (
        "billed",
        task.task_id(),
        "invoice",
    )
    root = get_task(task.task_id(), client=pclient)
    assert (root.exit, root.root_task_id) == ("done", None)


def test_an_on_fail_branch_ends_the_task_through_its_exit(client: Client) -> None:
    task = Task("order", {"total": 12, "mail_fails": True}, client=client)
    result = task.result(timeout=20)
    assert result.exit == "rejected"
    assert result.result == {"told": "the mail server is down"}
    assert dict(result.node_errors) == {"mail": "the mail server is down"}
