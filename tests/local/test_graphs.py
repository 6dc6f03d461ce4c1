"""Templates run as Requence runs them: branches at once, Or nodes, logic nodes,
on-fail edges, exits, sub-tasks and continuous templates, over real HTTP.

Each rule has its own template below; the tests read the task's updates from
the API's streams and ``GET /task/{id}``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import sseclient

from requence_task.local import (
    LocalRequence,
    NodeContext,
    Template,
    TemplateError,
    first_of,
    logic,
    service,
    subtask,
)

from ..conftest import Api

Events = list[tuple[int, str, dict[str, Any]]]

GATES: dict[str, threading.Event] = {}


def gate(name: str) -> threading.Event:
    return GATES.setdefault(name, threading.Event())


def _sleep(seconds: float) -> Any:
    def node(ctx: NodeContext) -> dict[str, Any]:
        ctx.wait(seconds)
        return {"slept": seconds}

    return node


def _mark(value: Any) -> Any:
    return lambda ctx: {"ran": value}


def _wait_gate(ctx: NodeContext) -> dict[str, Any]:
    name = ctx.input["gate"]
    while not gate(name).wait(0.02):
        if ctx.aborted:
            return {"aborted": True}
    return {"opened": name}


def _boom(ctx: NodeContext) -> None:
    raise RuntimeError("the mail server is down")


def _mail(ctx: NodeContext) -> dict[str, Any]:
    if ctx.input.get("mail_fails"):
        raise RuntimeError("the mail server is down")
    return {"mailed": True}


def _ops(ctx: NodeContext) -> dict[str, Any]:
    return {"told_ops": ctx.node_error("mail")}


def _double(ctx: NodeContext) -> dict[str, Any]:
    return {"doubled": ctx.input["n"] * 2}


TEMPLATES = [
    Template(
        "branches",
        nodes=[
            service("left", _sleep(0.4)),
            service("right", _sleep(0.4)),
            service("join", _mark("join"), after=["left", "right"]),
        ],
    ),
    Template(
        "branches-one-at-a-time",
        max_parallel=1,
        nodes=[service("left", _sleep(0.2)), service("right", _sleep(0.2))],
    ),
    Template(
        "or",
        nodes=[
            service("fast", _mark("fast")),
            service("slow", _wait_gate),
            first_of("either", after=["fast", "slow"]),
            service(
                "next", lambda ctx: {"slow_done": ctx.node_data("slow") is not None}, after="either"
            ),
        ],
    ),
    Template(
        "logic",
        nodes=[
            logic("big", lambda ctx: ctx.input["n"] > 10),
            service("yes", _mark("big"), after="big"),
            service("no", _mark("small"), after="big:false"),
        ],
        exits={"big": ["yes"], "small": ["no"]},
    ),
    Template(
        "order",
        nodes=[
            service("fetch", _mark("fetch")),
            service("mail", _mail, after="fetch", on_fail="notify_ops"),
            service("notify_ops", _ops),
        ],
        exits={"done": ["mail"], "rejected": ["notify_ops"]},
    ),
    Template(
        "no-on-fail",
        nodes=[service("boom", _boom), service("other", _wait_gate)],
    ),
    Template(
        "unreachable",
        nodes=[logic("never", lambda ctx: False), service("yes", _mark("yes"), after="never")],
        exits={"done": ["yes"]},
    ),
    Template("double", nodes=[service("double", _double)], exits={"doubled": ["double"]}),
    Template(
        "parent",
        nodes=[
            subtask("child", "double", input=lambda ctx: {"n": ctx.input["n"]}),
            service("after", lambda ctx: {"saw": ctx.node_data("child")}, after="child:doubled"),
        ],
        exits={"done": ["after"]},
    ),
    Template("gated-child", nodes=[service("wait", _wait_gate)]),
    Template(
        "parent-of-gated",
        nodes=[subtask("child", "gated-child"), service("after", _mark("after"), after="child")],
    ),
    Template("failing-child", nodes=[service("boom", _boom)]),
    Template(
        "parent-of-failing",
        nodes=[
            subtask("child", "failing-child", on_fail="recover"),
            service("recover", lambda ctx: {"why": ctx.node_error("child")}),
        ],
        exits={"recovered": ["recover"]},
    ),
    Template(
        "continuous",
        continuous=True,
        nodes=[service("tick", _mark("tick"))],
    ),
]


@pytest.fixture(scope="module")
def graph_server() -> Iterator[LocalRequence]:
    with LocalRequence(TEMPLATES, concurrency=4) as rq:
        yield rq


@pytest.fixture()
def gapi(graph_server: LocalRequence) -> Iterator[Api]:
    client = Api(graph_server.access_token)
    yield client
    client.close()


def run(api: Api, template: str, input: Any = None) -> tuple[str, Events]:
    task_id = api.start(template, input)
    return task_id, api.watch(task_id)


def sequence(events: Events) -> list[tuple[str, str | None]]:
    return [(type_, data.get("node", {}).get("alias")) for _, type_, data in events]


def moment(events: Events, type_: str, alias: str) -> datetime:
    for _, kind, data in events:
        if kind == type_ and data.get("node", {}).get("alias") == alias:
            return datetime.fromisoformat(data["timestamp"])
    raise AssertionError(f"no {type_} of {alias}")


def check_positions(events: Events) -> None:
    positions = [p for p, _, _ in events]
    assert positions == sorted(set(positions))


# --- branches ---------------------------------------------------------------------


def test_independent_branches_run_at_the_same_time(gapi: Api) -> None:
    task_id, events = run(gapi, "branches")
    check_positions(events)
    left = (moment(events, "nodeStart", "left"), moment(events, "nodeEnd", "left"))
    right = (moment(events, "nodeStart", "right"), moment(events, "nodeEnd", "right"))
    assert left[0] < right[1] and right[0] < left[1], (left, right)  # they overlap
    # The AND node waits for both.
    join = moment(events, "nodeStart", "join")
    assert join >= max(left[1], right[1])
    assert events[-1][1] == "taskEnd"
    # Replay is exactly the live order.
    assert gapi.watch(task_id) == events


def test_max_parallel_bounds_the_branches_of_a_task(gapi: Api) -> None:
    _, events = run(gapi, "branches-one-at-a-time")
    first, second = sorted(
        [
            (moment(events, "nodeStart", alias), moment(events, "nodeEnd", alias))
            for alias in ("left", "right")
        ]
    )
    assert first[1] <= second[0]


def test_or_node_fires_on_the_first_input(gapi: Api) -> None:
    task_id = gapi.start("or", {"gate": "or-slow"})
    deadline = time.monotonic() + 10
    while True:
        info = gapi.task(task_id)
        if any(item["alias"] == "next" for item in info["nodesData"]):
            break
        assert time.monotonic() < deadline, info
        time.sleep(0.02)
    assert info["status"] == "RUNNING"  # "slow" still waits
    assert {"alias": "next", "data": {"slow_done": False}} in info["nodesData"]
    gate("or-slow").set()
    events = gapi.watch(task_id)
    assert events[-1][1] == "taskEnd"
    seq = sequence(events)
    assert seq.count(("nodeStart", "either")) == 1
    assert seq.count(("nodeStart", "next")) == 1
    assert seq.index(("nodeEnd", "either")) < seq.index(("nodeEnd", "slow"))
    either = [data["node"] for _, kind, data in events if kind == "nodeStart"]
    assert {"alias": "either", "type": "or"}.items() <= next(
        n for n in either if n["alias"] == "either"
    ).items()


def test_logic_node_picks_a_branch_and_the_exit_names_it(gapi: Api) -> None:
    task_id, events = run(gapi, "logic", {"n": 50})
    update = next(data for _, kind, data in events if kind == "nodeUpdate")
    assert update["node"]["type"] == "logic"
    assert (update["data"], update["output"]) == (True, "true")
    assert ("nodeStart", "no") not in sequence(events)
    assert events[-1][1] == "taskEnd"
    assert events[-1][2]["exit"] == "big"
    assert events[-1][2]["result"] == {"ran": "big"}
    assert gapi.task(task_id)["exit"] == "big"

    task_id, events = run(gapi, "logic", {"n": 3})
    assert ("nodeStart", "yes") not in sequence(events)
    assert events[-1][2]["exit"] == "small"
    assert gapi.task(task_id)["exit"] == "small"


# --- failures ---------------------------------------------------------------------


def test_on_fail_edge_runs_its_branch_instead_of_failing_the_task(gapi: Api) -> None:
    task_id, events = run(gapi, "order", {"mail_fails": True})
    seq = sequence(events)
    assert ("nodeError", "mail") in seq
    assert ("nodeEnd", "mail") not in seq
    assert seq.index(("nodeError", "mail")) < seq.index(("nodeStart", "notify_ops"))
    end = events[-1]
    assert end[1] == "taskEnd" and end[2]["exit"] == "rejected"
    assert end[2]["result"] == {"told_ops": "the mail server is down"}
    info = gapi.task(task_id)
    assert info["status"] == "SUCCESSFUL" and info["exit"] == "rejected"
    assert info["nodesError"] == [{"alias": "mail", "error": "the mail server is down"}]

    _, events = run(gapi, "order", {"mail_fails": False})
    assert ("nodeStart", "notify_ops") not in sequence(events)
    assert events[-1][2]["exit"] == "done"


def test_an_error_without_on_fail_ends_the_task_at_once(gapi: Api) -> None:
    task_id, events = run(gapi, "no-on-fail", {"gate": "never-opened"})
    assert events[-1][1] == "taskError"
    assert "'boom' failed: the mail server is down" in events[-1][2]["reason"]
    # The other branch was still waiting: it was stopped, not awaited.
    assert ("nodeEnd", "other") not in sequence(events)
    assert gapi.task(task_id)["status"] == "FAILED"


def test_a_task_that_can_reach_no_exit_fails_saying_so(gapi: Api) -> None:
    _, events = run(gapi, "unreachable")
    assert events[-1][1] == "taskError"
    assert "none of its exits ('done')" in events[-1][2]["reason"]


# --- sub-tasks --------------------------------------------------------------------


def test_subtask_is_a_task_of_its_own_and_its_result_the_nodes_data(gapi: Api) -> None:
    watch_all = gapi.open_stream("/task/watch-all", {"since": None})
    try:
        task_id, events = run(gapi, "parent", {"n": 21})
        assert events[-1][1] == "taskEnd" and events[-1][2]["exit"] == "done"
        # The parent's own stream has only its own updates.
        assert {data["taskId"] for _, _, data in events} == {task_id}
        child_update = next(
            data
            for _, kind, data in events
            if kind == "nodeUpdate" and data["node"]["alias"] == "child"
        )
        assert child_update["node"]["type"] == "reference"
        assert child_update["data"] == {"doubled": 42}
        assert child_update["output"] == "doubled"
        assert events[-1][2]["result"] == {"saw": {"doubled": 42}}
        # The sub-task: its own id, stream and get, rootTaskId the parent.
        seen = []
        for event in sseclient.SSEClient(watch_all).events():
            data = json.loads(event.data)
            if data.get("rootTaskId") == task_id:
                seen.append((event.event, data))
            if event.event == "taskEnd" and data["taskId"] == task_id:
                break
    finally:
        watch_all.close()
    child_ids = {data["taskId"] for _, data in seen}
    assert len(child_ids) == 1
    (child_id,) = child_ids
    assert child_id != task_id
    assert [kind for kind, _ in seen] == [
        "taskStart",
        "nodeStart",
        "nodeUpdate",
        "nodeEnd",
        "taskEnd",
    ]
    assert seen[0][1]["input"] == {"n": 21}
    child_events = gapi.watch(child_id)
    assert [kind for _, kind, _ in child_events] == [kind for kind, _ in seen]
    assert all(data["rootTaskId"] == task_id for _, _, data in child_events)
    child = gapi.task(child_id)
    assert child["status"] == "SUCCESSFUL"
    assert child["taskTemplate"] == "double"
    assert (child["exit"], child["rootTaskId"]) == ("doubled", task_id)
    assert child["result"] == {"doubled": 42}
    assert gapi.task(task_id)["rootTaskId"] is None


def child_of(server: LocalRequence, task_id: str) -> str:
    """The id of the sub-task a task started (from the server's store), once it exists."""
    deadline = time.monotonic() + 10
    while True:
        children = server.engine.store.subtasks(task_id)
        if children:
            return children[0].id
        assert time.monotonic() < deadline, "no sub-task started"
        time.sleep(0.02)


def test_aborting_the_parent_aborts_its_subtasks(gapi: Api, graph_server: LocalRequence) -> None:
    task_id = gapi.start("parent-of-gated", {"gate": "cascade-never"})
    child_id = child_of(graph_server, task_id)
    gapi.wait_status(child_id, "RUNNING")
    response = gapi.post(f"/task/abort/{task_id}", data=b"stop it")
    assert response.status_code == 200, response.text
    child = gapi.wait_status(child_id, "STOPPED")
    assert task_id in (child["statusText"] or "")
    assert gapi.watch(child_id)[-1][1] == "taskAborted"
    assert gapi.task(task_id)["status"] == "STOPPED"


def test_a_failing_subtask_fails_its_node_and_the_on_fail_branch_runs(gapi: Api) -> None:
    _, events = run(gapi, "parent-of-failing")
    error = next(data for _, kind, data in events if kind == "nodeError")
    assert error["node"]["alias"] == "child"
    assert "failed: node 'boom' failed: the mail server is down" in error["error"]
    assert events[-1][1] == "taskEnd" and events[-1][2]["exit"] == "recovered"


# --- continuous -------------------------------------------------------------------


def test_a_continuous_task_runs_until_aborted(gapi: Api) -> None:
    task_id = gapi.start("continuous")
    deadline = time.monotonic() + 10
    while not gapi.task(task_id)["nodesData"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)
    assert gapi.task(task_id)["status"] == "RUNNING"
    assert gapi.post(f"/task/abort/{task_id}").status_code == 200
    events = gapi.watch(task_id)
    assert [kind for _, kind, _ in events] == [
        "taskStart",
        "nodeStart",
        "nodeUpdate",
        "nodeEnd",
        "taskAborted",
    ]


# --- definitions ------------------------------------------------------------------


def _nothing(ctx: NodeContext) -> None:
    return None


@pytest.mark.parametrize(
    ("make", "message", "node"),
    [
        (
            lambda: Template("t", nodes=[service("a", _nothing, after="ghost")]),
            "runs after 'ghost', which is not a node",
            "a",
        ),
        (
            lambda: Template(
                "t", nodes=[service("a", _nothing, after="b"), service("b", _nothing, after="a")]
            ),
            "form a cycle",
            None,
        ),
        (
            lambda: Template(
                "t",
                nodes=[
                    service("a", _nothing, on_fail="b"),
                    service("b", _nothing, after="a"),
                ],
            ),
            "both its on-fail target and an ordinary successor",
            "a",
        ),
        (
            lambda: Template("t", nodes=[service("a", _nothing), first_of("o", after="a")]),
            "an Or node needs at least two inputs",
            "o",
        ),
        (
            lambda: Template("t", nodes=[service("a", _nothing)], exits={"done": ["ghost"]}),
            "the exit 'done' names 'ghost', which is not a node",
            None,
        ),
        (
            lambda: Template("t", nodes=[service("a", _nothing, on_fail="ghost")]),
            "on_fail names 'ghost'",
            "a",
        ),
        (
            lambda: Template("t", nodes=[service("a", _nothing)], exits={"done": []}),
            "the exit 'done' names no node",
            None,
        ),
        (
            lambda: Template(
                "t", nodes=[logic("l", lambda ctx: True), service("b", _nothing, after="l:maybe")]
            ),
            "has the outputs 'true' and 'false', not 'maybe'",
            "b",
        ),
    ],
)
def test_template_definition_errors_name_the_template_and_the_node(
    make: Any, message: str, node: str | None
) -> None:
    with pytest.raises(TemplateError, match=message) as info:
        make()
    assert info.value.template == "t"
    assert info.value.node == node
    assert str(info.value).startswith("template 't'")
    assert isinstance(info.value, ValueError)


def test_a_subtask_of_an_unknown_template_is_refused_when_the_server_starts() -> None:
    parent = Template("p", nodes=[subtask("child", "missing")])
    with pytest.raises(
        TemplateError, match="the sub-task's template 'missing' is not on this server"
    ) as info:
        LocalRequence([parent])
    assert (info.value.template, info.value.node) == ("p", "child")


def test_templates_that_run_each_other_are_refused() -> None:
    a = Template("a", nodes=[subtask("to-b", "b")])
    b = Template("b", nodes=[subtask("to-a", "a")])
    with pytest.raises(
        TemplateError, match=r"runs itself through its sub-tasks \('a' -> 'b' -> 'a'\)"
    ):
        LocalRequence([a, b])


# --- a rejected input -------------------------------------------------------------


def test_a_rejected_input_is_kept_on_the_idle_task_until_a_finalize_passes() -> None:
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    with LocalRequence(
        [Template("strict", input_schema=schema, nodes=[service("double", _double)])]
    ) as rq:
        api = Api(rq.access_token)
        try:
            prepared = api.prepare("strict")
            refused = api.finalize(prepared, input={"n": "many"})
            assert refused.status_code == 422
            info = api.task(prepared["taskId"])
            assert info["status"] == "IDLE"
            assert info["statusText"] == refused.text
            assert "at 'n'" in info["statusText"]
            assert api.finalize(prepared, input={"n": 2}).status_code == 200
            info = api.wait_status(prepared["taskId"], "SUCCESSFUL")
            assert info["statusText"] is None
        finally:
            api.close()


def test_the_testing_api_shows_exits_and_subtasks(gapi: Api, graph_server: LocalRequence) -> None:
    from requence_task.testing import RequenceLocal

    local = RequenceLocal(graph_server)
    task_id, _ = run(gapi, "parent", {"n": 4})
    parent = local.task(task_id)
    assert (parent.exit, parent.root_task_id) == ("done", None)
    [child] = local.tasks(template="double")
    assert (child.exit, child.root_task_id, child.result) == ("doubled", task_id, {"doubled": 8})


def test_a_subtask_runs_before_the_tasks_queued_after_its_parent() -> None:
    parent = Template(
        "held-parent",
        nodes=[
            service("hold", _wait_gate),
            subtask("child", "double", input=lambda ctx: {"n": 1}, after="hold"),
        ],
    )
    double = next(t for t in TEMPLATES if t.name == "double")
    with LocalRequence([parent, double], concurrency=1) as rq:  # one worker: a queue
        api = Api(rq.access_token)
        try:
            parent_id = api.start("held-parent", {"gate": "queue-order"})
            api.wait_status(parent_id, "RUNNING")
            later = [api.start("double", {"n": n}) for n in range(3)]
            assert api.task(later[0])["status"] == "PENDING"  # the worker is held
            gate("queue-order").set()
            api.wait_status(parent_id, "SUCCESSFUL")
            (child,) = rq.store.subtasks(parent_id)

            def started(task_id: str) -> datetime:
                return moment(api.watch(task_id), "nodeStart", "double")

            assert all(started(child.id) < started(task_id) for task_id in later)
        finally:
            api.close()


def test_the_servers_concurrency_bounds_the_branches_too() -> None:
    branches = next(t for t in TEMPLATES if t.name == "branches")  # max_parallel 4
    with LocalRequence([branches], concurrency=1) as rq:  # one worker thread
        api = Api(rq.access_token)
        try:
            _, events = run(api, "branches")
        finally:
            api.close()
    first, second = sorted(
        (moment(events, "nodeStart", alias), moment(events, "nodeEnd", alias))
        for alias in ("left", "right")
    )
    assert first[1] <= second[0]  # one after the other: a node holds the only worker
