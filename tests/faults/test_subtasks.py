"""Sub-tasks, against the tests' own Requence (tests/faults/hostile.py).

A sub-task node starts a real task of another template: its own id, its own
stream and ``GET``. On the watch-all stream its updates carry ``taskId`` = the
sub-task's id and ``rootTaskId`` = the root's; some servers also put them in
the root's own stream. Here:

* The shared stream (``_follow``) gives a sub-task's updates to its root's
  handle and to the sub-task's own handle when one is on that stream, each
  once; the sub-task's end ends only the sub-task's handle. A handle made by
  id (``Task.from_id``) follows its own stream and gets the sub-task's
  updates there.
* A task's own stream that carries a sub-task's updates: they end nothing of
  the task's and change none of its context.
* ``watch_tasks`` shows them with their own task id and ``root_task_id``, and
  a sub-task's end keeps its root's state.
* ``exit``: in ``TaskResult``, the ``taskEnd`` update, and ``get_task``
  (with ``root_task_id``); a wrong type in the get answer is an error. The
  command line shows both where it shows a result or a task.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from requence_task import (
    ApiError,
    ClaimCheckError,
    Client,
    NodeUpdateUpdate,
    RetryPolicy,
    Task,
    TaskEndUpdate,
    TaskTimeoutError,
    Timeouts,
    get_task,
    watch_tasks,
)
from requence_task._cli import main

from .hostile import TASK_ID, Handler, Hostile, frame, node, update

QUICK = Timeouts(connect=1, read=3, stream_inactivity=3)
FAST = RetryPolicy(budget=3, initial_backoff=0.02, max_backoff=0.1)
WAIT = 10

ROOT = TASK_ID  # the root task: the one prepare answers by default
SUB = "t-sub"


def make_client(hostile: Hostile, **kwargs: Any) -> Client:
    kwargs.setdefault("timeouts", QUICK)
    kwargs.setdefault("retry", FAST)
    return Client(hostile.access_token, **kwargs)


def of_root(**fields: Any) -> dict[str, Any]:
    return update(ROOT, **fields)


def of_sub(**fields: Any) -> dict[str, Any]:
    return {**update(SUB, **fields), "rootTaskId": ROOT}


def interleaved() -> list[tuple[str, dict[str, Any]]]:
    """The root's updates and its sub-task's, the sub-task ending first.

    Both have a node of alias ``a``: the root's data must stay the root's.
    """
    return [
        ("taskStart", of_root(input={"of": "root"})),
        ("nodeStart", of_root(node=node("a"))),
        ("taskStart", of_sub(input={"of": "sub"})),
        ("nodeStart", of_sub(node=node("a"))),
        ("nodeUpdate", of_root(node=node("a"), data={"v": "root-1"}, output=None)),
        ("nodeUpdate", of_sub(node=node("a"), data={"v": "sub-1"}, output=None)),
        ("nodeEnd", of_sub(node=node("a"))),
        ("taskEnd", of_sub(result="sub-result", exit="sub-exit", requireAck=False)),
        ("nodeUpdate", of_root(node=node("a"), data={"v": "root-2"}, output=None)),
        ("nodeEnd", of_root(node=node("a"))),
        ("taskEnd", of_root(result="root-result", exit="done", requireAck=False)),
    ]


ROOT_TYPES = [
    "taskStart",
    "nodeStart",
    "nodeUpdate",
    "nodeUpdate",
    "nodeEnd",
    "taskEnd",
]
SUB_TYPES = ["taskStart", "nodeStart", "nodeUpdate", "nodeEnd", "taskEnd"]


def stream_of(events: list[tuple[str, dict[str, Any]]], *, first: int = 1) -> Any:
    """A script: these events at positions from ``first``, then a clean end."""

    def script(handler: Handler, body: dict[str, Any]) -> None:
        handler.stream(*(frame(first + i, kind, data) for i, (kind, data) in enumerate(events)))

    return script


def held_open(events: list[tuple[str, dict[str, Any]]]) -> Any:
    """A script: these events, then the stream stays open (until the client goes)."""

    def script(handler: Handler, body: dict[str, Any]) -> None:
        handler.start_stream()
        for i, (kind, data) in enumerate(events):
            handler.chunk(frame(i + 1, kind, data))
        while not handler.hostile.stopped.wait(0.05):
            try:
                handler.chunk(b": keep-alive\n\n")
            except OSError:
                return

    return script


def only_of(task_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(kind, data) for kind, data in interleaved() if data["taskId"] == task_id]


def seen(updates: list[Any]) -> list[tuple[str, str]]:
    return [(u.task_id, u.type) for u in updates]


# --- (a) the shared stream ---------------------------------------------------------------


def test_the_roots_handle_on_the_shared_stream_ends_at_its_own_end() -> None:
    with (
        Hostile(watch_all=[stream_of(interleaved())]) as hostile,
        make_client(hostile) as client,
    ):
        root = Task("parent", client=client)
        updates = list(root.updates(timeout=WAIT))
        result = root.result(timeout=WAIT)
    # Every update of the root and of its sub-task, once each, the root's end last.
    assert seen(updates) == [(data["taskId"], kind) for kind, data in interleaved()]
    assert [u.position for u in updates] == list(range(1, 12))
    assert (result.task_id, result.result, result.exit) == (ROOT, "root-result", "done")
    assert result.input == {"of": "root"}
    assert dict(result.node_data) == {"a": {"v": "root-2"}}  # never the sub-task's
    # Each update's context is the root's: the sub-task's data and end change none of it.
    sub_end = updates[7]
    assert isinstance(sub_end, TaskEndUpdate) and sub_end.task_id == SUB
    assert sub_end.exit == "sub-exit"
    assert sub_end.context.task_id == ROOT
    assert (sub_end.context.result, sub_end.context.exit) == (None, None)
    assert dict(sub_end.context.node_data) == {"a": {"v": "root-1"}}
    # Its nodes: the sub-task's node is its own, ended by its own end.
    nodes = {(n.task_id, n.label): n.state for n in root._nodes().nodes}
    assert nodes == {(ROOT, "a"): "ended", (SUB, "a"): "ended"}


def test_a_sub_tasks_handle_on_the_shared_stream_gets_its_updates_once() -> None:
    # Both tasks are this client's (prepare answers the root's id, then the
    # sub-task's), so both handles are on the one shared stream; the server
    # says the second is a sub-task of the first.
    with (
        Hostile(ids=[ROOT, SUB], watch_all=[held_open(interleaved())]) as hostile,
        make_client(hostile) as client,
    ):
        root = Task("parent", client=client)
        assert root.task_id(timeout=WAIT) == ROOT  # (prepared in turn: the ids in order)
        sub = Task("child", client=client)
        assert sub.task_id(timeout=WAIT) == SUB
        sub_updates = list(sub.updates(timeout=WAIT))
        sub_result = sub.result(timeout=WAIT)
        root_updates = list(root.updates(timeout=WAIT))
        root_result = root.result(timeout=WAIT)
        streams = len(hostile.bodies["watch-all"])
    assert streams == 1  # one shared stream, no own stream for either
    assert seen(sub_updates) == [(SUB, kind) for kind in SUB_TYPES]
    assert [u.position for u in sub_updates] == [3, 4, 6, 7, 8]
    assert (sub_result.task_id, sub_result.result, sub_result.exit) == (
        SUB,
        "sub-result",
        "sub-exit",
    )
    assert sub_result.input == {"of": "sub"}
    assert dict(sub_result.node_data) == {"a": {"v": "sub-1"}}
    # The root's handle still got everything, and its own end.
    assert seen(root_updates) == [(data["taskId"], kind) for kind, data in interleaved()]
    assert (root_result.result, root_result.exit) == ("root-result", "done")
    assert dict(root_result.node_data) == {"a": {"v": "root-2"}}


def test_a_sub_tasks_end_on_the_shared_stream_does_not_end_its_root() -> None:
    # The stream holds everything up to the sub-task's end, and then nothing:
    # the root's result must wait (and time out), not succeed.
    events = interleaved()[:8]
    with (
        Hostile(watch_all=[held_open(events)]) as hostile,
        make_client(hostile) as client,
    ):
        root = Task("parent", client=client)
        with pytest.raises(TaskTimeoutError):
            root.result(timeout=1.5)
        assert not root.done()
        got = root._updates_since(0)[0]
    assert seen(got) == [(data["taskId"], kind) for kind, data in events]


def test_a_sub_task_by_id_follows_its_own_stream() -> None:
    # Task.from_id(SUB) while its root is followed on the shared stream: the
    # sub-task's own stream gives its updates, once each, to its end.
    with (
        Hostile(
            watch_all=[stream_of(interleaved())],
            watch_of={SUB: [stream_of(only_of(SUB))]},
        ) as hostile,
        make_client(hostile) as client,
    ):
        root = Task("parent", client=client)
        root_result = root.result(timeout=WAIT)
        sub = Task.from_id(SUB, client=client)
        sub_updates = list(sub.updates(timeout=WAIT))
        sub_result = sub.result(timeout=WAIT)
    assert (root_result.result, root_result.exit) == ("root-result", "done")
    assert seen(sub_updates) == [(SUB, kind) for kind in SUB_TYPES]
    assert all(u.root_task_id == ROOT for u in sub_updates)
    assert (sub_result.result, sub_result.exit) == ("sub-result", "sub-exit")
    assert dict(sub_result.node_data) == {"a": {"v": "sub-1"}}


def test_watch_tasks_shows_sub_task_updates_as_their_own() -> None:
    with (
        Hostile(watch_all=[held_open(interleaved())]) as hostile,
        make_client(hostile) as client,
        watch_tasks(None, client=client) as watcher,
    ):
        got = []
        for item in watcher.updates(timeout=WAIT):
            got.append(item)
            if len(got) == len(interleaved()):
                break
    assert seen(got) == [(data["taskId"], kind) for kind, data in interleaved()]
    assert [u.root_task_id for u in got] == [
        ROOT if data["taskId"] == SUB else None for _kind, data in interleaved()
    ]
    sub_data = next(u for u in got if isinstance(u, NodeUpdateUpdate) and u.task_id == SUB)
    assert dict(sub_data.context.node_data) == {"a": {"v": "sub-1"}}
    # The sub-task's end forgot nothing of the root's: its end has the root's
    # whole context (its input too: not an incomplete fresh start).
    root_end = got[-1]
    assert isinstance(root_end, TaskEndUpdate) and root_end.task_id == ROOT
    assert not root_end.incomplete
    assert root_end.context.input == {"of": "root"}
    assert dict(root_end.context.node_data) == {"a": {"v": "root-2"}}
    assert (root_end.context.result, root_end.context.exit) == ("root-result", "done")
    sub_end = got[7]
    assert (sub_end.task_id, sub_end.context.result, sub_end.context.exit) == (
        SUB,
        "sub-result",
        "sub-exit",
    )


# --- (b) a task's own stream that carries a sub-task's updates ---------------------------


def test_a_sub_tasks_updates_on_the_roots_own_stream_end_nothing() -> None:
    with (
        Hostile(watch=[stream_of(interleaved())]) as hostile,
        make_client(hostile, shared_stream=False) as client,
    ):
        root = Task("parent", client=client)
        updates = list(root.updates(timeout=WAIT))
        result = root.result(timeout=WAIT)
    assert seen(updates) == [(data["taskId"], kind) for kind, data in interleaved()]
    assert (result.result, result.exit) == ("root-result", "done")
    assert result.input == {"of": "root"}
    assert dict(result.node_data) == {"a": {"v": "root-2"}}
    for item in updates[:-1]:  # no context before the root's end has a result
        assert item.context.task_id == ROOT
        assert (item.context.result, item.context.exit) == (None, None)
        assert item.context.input == {"of": "root"}


def test_a_sub_tasks_end_on_the_roots_own_stream_does_not_end_it() -> None:
    events = interleaved()[:8]
    with (
        Hostile(watch=[held_open(events)]) as hostile,
        make_client(hostile, shared_stream=False) as client,
    ):
        root = Task("parent", client=client)
        with pytest.raises(TaskTimeoutError):
            root.result(timeout=1.5)
        got = []
        with pytest.raises(TaskTimeoutError):
            for item in root.updates(timeout=1.0):
                got.append(item)
    assert seen(got) == [(data["taskId"], kind) for kind, data in events]
    assert dict(got[-1].context.node_data) == {"a": {"v": "root-1"}}


def _claim_check(hostile: Hostile) -> dict[str, Any]:
    # A claim check whose URL answers 404: that update cannot be read.
    return {"__REQUENCE_type": "ClaimCheck", "url": f"{hostile.base_url}/files/gone", "size": 9}


def _with_unreadable_sub_update(hostile: Hostile) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("taskStart", of_root(input={"of": "root"})),
        ("taskStart", of_sub(input={"of": "sub"})),
        ("nodeUpdate", of_sub(node=node("a"), data=_claim_check(hostile), output=None)),
        ("nodeUpdate", of_root(node=node("a"), data={"v": "root-1"}, output=None)),
        ("taskEnd", of_root(result="root-result", exit="done", requireAck=False)),
    ]


def test_an_unreadable_sub_task_update_on_the_roots_own_stream_fails_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Hostile() as hostile, make_client(hostile, shared_stream=False) as client:
        hostile.scripts["watch"].append(stream_of(_with_unreadable_sub_update(hostile)))
        root = Task("parent", client=client)
        result = root.result(timeout=WAIT)
        updates = list(root.updates(timeout=WAIT))
    assert (result.result, result.exit) == ("root-result", "done")
    assert dict(result.node_data) == {"a": {"v": "root-1"}}
    # The sub-task's unreadable update is left out of the root's, with a warning.
    assert seen(updates) == [
        (ROOT, "taskStart"),
        (SUB, "taskStart"),
        (ROOT, "nodeUpdate"),
        (ROOT, "taskEnd"),
    ]
    assert any(f"an update of task {SUB}" in r.getMessage() for r in caplog.records)


def test_an_unreadable_sub_task_update_on_the_shared_stream_fails_the_sub_task_only() -> None:
    with Hostile(ids=[ROOT, SUB]) as hostile, make_client(hostile) as client:
        hostile.scripts["watch-all"].append(held_open(_with_unreadable_sub_update(hostile)))
        root = Task("parent", client=client)
        assert root.task_id(timeout=WAIT) == ROOT  # (prepared in turn: the ids in order)
        sub = Task("child", client=client)
        assert sub.task_id(timeout=WAIT) == SUB
        result = root.result(timeout=WAIT)
        with pytest.raises(ClaimCheckError):
            sub.result(timeout=WAIT)
    assert (result.result, result.exit) == ("root-result", "done")


# --- (c) the exit ------------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [False, True], ids=["own-stream", "shared-stream"])
@pytest.mark.parametrize("exit_name", ["done", None])
def test_the_exit_of_task_end_is_in_the_result(shared: bool, exit_name: str | None) -> None:
    events = [
        ("taskStart", of_root(input=1)),
        ("taskEnd", of_root(result=2, exit=exit_name, requireAck=False)),
    ]
    scripts = {"watch_all": [stream_of(events)]} if shared else {"watch": [stream_of(events)]}
    with Hostile(**scripts) as hostile, make_client(hostile, shared_stream=shared) as client:
        task = Task("parent", client=client)
        updates = list(task.updates(timeout=WAIT))
        result = task.result(timeout=WAIT)
    end = updates[-1]
    assert isinstance(end, TaskEndUpdate)
    assert end.exit == exit_name
    assert end.context.exit == exit_name
    assert (result.result, result.exit) == (2, exit_name)
    assert ("exit" in result._repr_html_()) is (exit_name is not None)


def test_the_exit_of_a_malformed_task_end_with_a_result_is_kept() -> None:
    # requireAck of the wrong type: the update is unknown, its result and exit still count.
    events = [
        ("taskStart", of_root(input=1)),
        ("taskEnd", of_root(result=2, exit="done", requireAck="yes")),
    ]
    with (
        Hostile(watch=[stream_of(events)]) as hostile,
        make_client(hostile, shared_stream=False) as client,
    ):
        result = Task("parent", client=client).result(timeout=WAIT)
    assert (result.result, result.exit) == (2, "done")


# --- (d) get_task ------------------------------------------------------------------------------


def _body(**fields: Any) -> dict[str, Any]:
    return {
        "status": "SUCCESSFUL",
        "taskTemplate": "child",
        "input": {"of": "sub"},
        "result": "sub-result",
        "nodesData": [],
        "nodesError": [],
        **fields,
    }


def test_get_task_reads_exit_and_root_task_id() -> None:
    with (
        Hostile(bodies_of={SUB: _body(exit="sub-exit", rootTaskId=ROOT)}) as hostile,
        make_client(hostile) as client,
    ):
        info = get_task(SUB, client=client)
    assert (info.exit, info.root_task_id) == ("sub-exit", ROOT)
    assert info.context.exit == "sub-exit"


@pytest.mark.parametrize("fields", [{}, {"exit": None, "rootTaskId": None}], ids=["absent", "null"])
def test_get_task_without_exit_or_root(fields: dict[str, Any]) -> None:
    with (
        Hostile(task_body=_body(**fields)) as hostile,
        make_client(hostile) as client,
    ):
        info = get_task(ROOT, client=client)
    assert (info.exit, info.root_task_id, info.context.exit) == (None, None, None)


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"exit": 5}, "'exit' is a number, not a string or null"),
        ({"rootTaskId": ["r"]}, "'rootTaskId' is an array, not a string or null"),
    ],
    ids=["exit", "rootTaskId"],
)
def test_get_task_with_a_wrong_type_is_an_error(fields: dict[str, Any], said: str) -> None:
    with (
        Hostile(task_body=_body(**fields)) as hostile,
        make_client(hostile) as client,
        pytest.raises(ApiError, match=f"get of task {ROOT}: {said}"),
    ):
        get_task(ROOT, client=client)


# --- the command line ----------------------------------------------------------------------


def test_the_command_line_get_shows_exit_and_root(capsys: pytest.CaptureFixture[str]) -> None:
    with Hostile(task_body=_body(exit="sub-exit", rootTaskId="t-root")) as hostile:
        assert main(["get", ROOT, "--access-token", hostile.access_token]) == 0
        text = capsys.readouterr().out.splitlines()
        assert main(["get", ROOT, "--json", "--access-token", hostile.access_token]) == 0
        shown = json.loads(capsys.readouterr().out)
    assert "Root:     t-root" in text and "Exit:     sub-exit" in text
    assert (shown["exit"], shown["rootTaskId"]) == ("sub-exit", "t-root")


def test_the_command_line_run_prints_the_exit(capsys: pytest.CaptureFixture[str]) -> None:
    events = [
        ("taskStart", of_root(input=1)),
        ("taskEnd", of_root(result=2, exit="done", requireAck=False)),
    ]
    with Hostile(watch_all=[stream_of(events)], watch=[stream_of(events)]) as hostile:
        code = main(["run", "parent", "--json", "--access-token", hostile.access_token])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert json.loads(out[-1]) == {
        "result": 2,
        "exit": "done",
        "taskId": ROOT,
        "taskUrl": f"{hostile.base_url}/tasks/{ROOT}",
    }
    assert json.loads(out[-2])["exit"] == "done"  # the taskEnd update


def test_the_command_line_run_plain_names_the_exit(capsys: pytest.CaptureFixture[str]) -> None:
    events = [
        ("taskStart", of_root(input=1)),
        ("taskEnd", of_root(result=2, exit="done", requireAck=False)),
    ]
    with Hostile(watch_all=[stream_of(events)], watch=[stream_of(events)]) as hostile:
        code = main(["run", "parent", "--access-token", hostile.access_token])
    assert code == 0
    assert capsys.readouterr().out.splitlines() == ["taskStart", "taskEnd (exit done)", "2"]
