"""Sub-tasks and exits on the wire, pure: which handles a shared-stream event
goes to (``route_keys``), the exit folded into the context and the result, and
``exit``/``rootTaskId`` of the get answer (``task_info``)."""

from __future__ import annotations

from typing import Any

import pytest

from requence_task import ApiError
from requence_task._fold import ContextFolder
from requence_task._html import result_html
from requence_task._models import TaskEndUpdate, TaskResult, UnknownUpdate
from requence_task._protocol import NODE_UPDATE, TASK_END, TASK_START
from requence_task._wire import route_keys, task_info

from .wire_data import OCR, TASK, wire

SUB = "sub-1"


@pytest.mark.parametrize(
    ("data", "keys"),
    [
        ({"taskId": TASK, "rootTaskId": None}, (TASK, None)),
        ({"taskId": TASK}, (TASK, None)),
        ({"task_id": TASK, "rootTaskId": None}, (TASK, None)),
        ({"taskId": SUB, "rootTaskId": TASK}, (TASK, SUB)),
        ({"task_id": SUB, "rootTaskId": TASK}, (TASK, SUB)),
        ({"taskId": TASK, "rootTaskId": TASK}, (TASK, None)),  # its own root: once
        ({"rootTaskId": TASK}, (TASK, None)),  # names no task of its own
        ({}, (None, None)),
    ],
)
def test_route_keys(data: dict[str, Any], keys: tuple[object, object]) -> None:
    assert route_keys(data) == keys


def _end(**fields: Any) -> dict[str, Any]:
    return wire(**{"result": {"r": 1}, "requireAck": False, **fields})


@pytest.mark.parametrize("exit_name", ["done", None])
def test_the_exit_is_folded_from_task_end(exit_name: str | None) -> None:
    folder = ContextFolder()
    folder.fold(TASK_START, wire(input=1), 1)
    end = folder.fold(TASK_END, _end(exit=exit_name), 2)
    assert isinstance(end, TaskEndUpdate) and end.exit == exit_name
    assert end.context.exit == exit_name
    result = TaskResult.from_context(end.context)
    assert (result.result, result.exit) == ({"r": 1}, exit_name)


def test_no_exit_key_is_no_exit() -> None:
    end = ContextFolder().fold(TASK_END, _end(), 1)
    assert end.context.exit is None


def test_a_sub_tasks_end_changes_no_exit_nor_result_of_the_task() -> None:
    folder = ContextFolder(task_id=TASK)
    folder.fold(TASK_START, wire(input=1), 1)
    folder.fold(NODE_UPDATE, wire(node=OCR, data=1), 2)
    other = folder.fold(TASK_END, _end(taskId=SUB, rootTaskId=TASK, exit="sub-exit"), 3)
    assert other.task_id == SUB
    assert (other.context.result, other.context.exit) == (None, None)
    assert other.context.task_id == TASK
    assert dict(other.context.node_data) == {"ocr": 1}
    # ... and the exit stays through the task's own updates after its end too.
    end = folder.fold(TASK_END, _end(exit="done"), 4)
    later = folder.fold(NODE_UPDATE, wire(node=OCR, data=2), 5)
    assert end.context.exit == later.context.exit == "done"


def test_a_malformed_task_end_keeps_its_exit_when_it_is_a_string() -> None:
    folder = ContextFolder(task_id=TASK)
    end = folder.fold(TASK_END, _end(exit="done", requireAck="yes"), 1)
    assert type(end) is UnknownUpdate
    assert (end.context.result, end.context.exit) == ({"r": 1}, "done")
    bad = ContextFolder(task_id=TASK).fold(TASK_END, _end(exit=7), 1)
    assert type(bad) is UnknownUpdate
    assert (bad.context.result, bad.context.exit) == ({"r": 1}, None)


def test_the_result_view_shows_a_named_exit_only() -> None:
    shown = result_html(
        task_id="t", task_url=None, input=1, result=2, node_data={}, node_errors={}, exit="<done>"
    )
    assert "exit" in shown and "&lt;done&gt;" in shown
    plain = result_html(task_id="t", task_url=None, input=1, result=2, node_data={}, node_errors={})
    assert "exit" not in plain
    assert "&lt;done&gt;" in TaskResult("t", exit="<done>")._repr_html_()


def _body(**fields: Any) -> dict[str, Any]:
    return {"status": "SUCCESSFUL", "input": 1, "result": 2, **fields}


def test_task_info_reads_exit_and_root_task_id() -> None:
    info = task_info(SUB, _body(exit="done", rootTaskId=TASK))
    assert (info.exit, info.root_task_id, info.context.exit) == ("done", TASK, "done")


@pytest.mark.parametrize("fields", [{}, {"exit": None, "rootTaskId": None}, {"rootTaskId": ""}])
def test_task_info_without_exit_or_root(fields: dict[str, Any]) -> None:
    info = task_info(TASK, _body(**fields))
    assert (info.exit, info.root_task_id, info.context.exit) == (None, None, None)


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"exit": 5}, "'exit' is a number, not a string or null"),
        ({"exit": True}, "'exit' is a boolean, not a string or null"),
        ({"rootTaskId": {"id": "r"}}, "'rootTaskId' is an object, not a string or null"),
    ],
)
def test_task_info_refuses_a_wrong_type(fields: dict[str, Any], said: str) -> None:
    with pytest.raises(ApiError) as caught:
        task_info(TASK, _body(**fields))
    assert str(caught.value) == f"get of task {TASK}: {said}"
