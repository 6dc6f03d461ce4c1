"""Template and node semantics of the local Requence, over real HTTP.

Each test starts a task of a template defined here, reads its update stream
with plain ``requests`` and checks the exact sequence of updates; the
definition-time errors of ``Template``/``service``/``LocalRequence`` are
checked in Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from requence_task.local import LocalRequence, NodeContext, Output, Template, service

from ..conftest import Api
from .templates_for_tests import TEMPLATES as SHARED_TEMPLATES

Events = list[tuple[int, str, dict[str, Any]]]


# --- templates of this module ------------------------------------------------


def _mark(alias: str) -> Any:
    return lambda ctx: {"ran": alias}


def _three_values(ctx: NodeContext) -> Any:
    yield {"n": 1}
    yield {"n": 2}
    yield {"n": 3}


def _returns_none(ctx: NodeContext) -> None:
    return None


def _yields_nothing(ctx: NodeContext) -> Any:
    yield from ()


def _named_outputs(ctx: NodeContext) -> Any:
    yield Output("approved", {"ok": True})
    yield {"plain": 1}
    yield Output("rejected", None)


def _deferring(ctx: NodeContext) -> Any:
    ctx.defer("waiting for a human")
    ctx.defer()
    return {"decided": True}


def _boom(ctx: NodeContext) -> None:
    raise ValueError("the gasket leaked")


def _bare_boom(ctx: NodeContext) -> None:
    raise KeyError


def _boom_in_generator(ctx: NodeContext) -> Any:
    yield {"before": 1}
    raise RuntimeError("midway failure")


def _sees_error(ctx: NodeContext) -> dict[str, Any]:
    return {"error": ctx.node_error("flaky"), "other": ctx.node_error("first")}


def _not_json(ctx: NodeContext) -> dict[str, Any]:
    return {"when": object()}


def _nan(ctx: NodeContext) -> dict[str, Any]:
    return {"value": float("nan")}


def _context(ctx: NodeContext) -> dict[str, Any]:
    return {
        "input": ctx.input,
        "task_id": ctx.task_id,
        "name": ctx.name,
        "alias": ctx.alias,
        "aborted": ctx.aborted,
    }


def _result_raises(ctx: NodeContext) -> Any:
    raise RuntimeError("cannot build the result")


NODE_TEMPLATES = [
    # Declared out of order: c after b, b after a; x after z, y independent.
    Template(
        "dag",
        nodes=[
            service("c", _mark("c"), after=["b"]),
            service("x", _mark("x"), after=["z"]),
            service("b", _mark("b"), after=["a"]),
            service("y", _mark("y")),
            service("a", _mark("a")),
            service("z", _mark("z")),
        ],
    ),
    Template(
        "updates",
        nodes=[
            service("gen", _three_values),
            service("ret", lambda ctx: {"single": True}, after="gen"),
            service("none", _returns_none, after="ret"),
            service("empty", _yields_nothing, after="none"),
            service("falsy", lambda ctx: 0, after="empty"),
        ],
        result=lambda ctx: {"gen": ctx.node_data("gen"), "falsy": ctx.node_data("falsy")},
    ),
    Template(
        "outputs",
        nodes=[
            service("named", _named_outputs),
            service("returned", lambda ctx: Output("single", [1, 2]), after="named"),
        ],
    ),
    Template("deferring", nodes=[service("waiter", _deferring)]),
    Template(
        "failing",
        nodes=[
            service("first", _mark("first")),
            service("broken", _boom, after=["first"]),
            service("dependent", _mark("dependent"), after=["broken"]),
            service("independent", _mark("independent")),
        ],
    ),
    Template("bare-failing", nodes=[service("bare", _bare_boom)]),
    Template(
        "generator-failing",
        nodes=[service("gen", _boom_in_generator), service("later", _mark("later"), after="gen")],
    ),
    Template(
        "optional",
        nodes=[
            service("first", _mark("first")),
            service("flaky", _boom, optional=True, after=["first"]),
            service("after", _sees_error, after=["flaky"]),
        ],
    ),
    Template(
        "non-json",
        nodes=[service("bad", _not_json), service("later", _mark("later"), after="bad")],
    ),
    Template("nan", nodes=[service("nan", _nan)]),
    Template(
        "result-callable",
        nodes=[service("a", lambda ctx: {"a": 1}), service("b", lambda ctx: {"b": 2})],
        result=lambda ctx: {"sum": ctx.node_data("a")["a"] + ctx.node_data("b")["b"]},
    ),
    Template(
        "result-default",
        nodes=[
            service("a", lambda ctx: {"a": 1}),
            service("gen", _three_values, after="a"),
            service("quiet", _returns_none, after="gen"),
        ],
    ),
    Template("result-default-none", nodes=[service("quiet", _returns_none)]),
    Template(
        "result-raises",
        nodes=[service("a", lambda ctx: {"a": 1})],
        result=_result_raises,
    ),
    Template(
        "result-not-json",
        nodes=[service("a", lambda ctx: {"a": 1})],
        result=lambda ctx: {"bad": {1, 2}},
    ),
    Template(
        "context",
        nodes=[service("ctx", _context)],
        result=lambda ctx: {"alias": ctx.alias, "task_id": ctx.task_id, "input": ctx.input},
    ),
    Template("no-nodes", nodes=[]),
]


@pytest.fixture(scope="module")
def nodes_server() -> Iterator[LocalRequence]:
    with LocalRequence(NODE_TEMPLATES, concurrency=2) as rq:
        yield rq


@pytest.fixture()
def napi(nodes_server: LocalRequence) -> Iterator[Api]:
    client = Api(nodes_server.access_token)
    yield client
    client.close()


def run(api: Api, template: str, input: Any = None, **body: Any) -> tuple[str, Events]:
    task_id = api.start(template, input, **body)
    return task_id, api.watch(task_id)


def types_of(events: Events) -> list[str]:
    return [type_ for _, type_, _ in events]


def sequence(events: Events) -> list[tuple[str, str | None]]:
    """``(type, node alias or None)`` of every update."""
    return [(type_, data.get("node", {}).get("alias")) for _, type_, data in events]


def node_starts(events: Events) -> list[str]:
    return [data["node"]["alias"] for _, type_, data in events if type_ == "nodeStart"]


def check_envelope(task_id: str, events: Events) -> None:
    """taskStart first, exactly one terminal update, last; positions increase."""
    types = types_of(events)
    assert types[0] == "taskStart"
    terminal = [t for t in types if t in ("taskEnd", "taskError", "taskAborted")]
    assert len(terminal) == 1, types
    assert types[-1] == terminal[0]
    positions = [p for p, _, _ in events]
    assert positions == sorted(set(positions))
    for _, _, data in events:
        assert data["taskId"] == task_id
        assert data["task_id"] == task_id


# --- order --------------------------------------------------------------------


def test_dag_order_honours_after_even_when_declared_out_of_order(napi: Api) -> None:
    task_id, events = run(napi, "dag")
    check_envelope(task_id, events)
    # Independent branches may run at the same time; every node runs once, and
    # only after each node it runs after= has ended.
    order = node_starts(events)
    assert sorted(order) == ["a", "b", "c", "x", "y", "z"]
    seq = sequence(events)
    for before, after in (("a", "b"), ("b", "c"), ("z", "x")):
        assert seq.index(("nodeEnd", before)) < seq.index(("nodeStart", after))


def test_node_ids_are_stable_and_typed_service(napi: Api) -> None:
    _, first = run(napi, "dag")
    _, second = run(napi, "dag")

    def ids(events: Events) -> dict[str, str]:
        return {d["node"]["alias"]: d["node"]["id"] for _, t, d in events if t == "nodeStart"}

    assert ids(first) == ids(second)
    assert len(set(ids(first).values())) == 6
    assert {d["node"]["type"] for _, t, d in first if "node" in d} == {"service"}


# --- updates ------------------------------------------------------------------


def test_one_node_update_per_yield_and_per_non_none_return(napi: Api) -> None:
    task_id, events = run(napi, "updates")
    check_envelope(task_id, events)
    assert sequence(events) == [
        ("taskStart", None),
        ("nodeStart", "gen"),
        ("nodeUpdate", "gen"),
        ("nodeUpdate", "gen"),
        ("nodeUpdate", "gen"),
        ("nodeEnd", "gen"),
        ("nodeStart", "ret"),
        ("nodeUpdate", "ret"),
        ("nodeEnd", "ret"),
        ("nodeStart", "none"),
        ("nodeEnd", "none"),
        ("nodeStart", "empty"),
        ("nodeEnd", "empty"),
        ("nodeStart", "falsy"),
        ("nodeUpdate", "falsy"),
        ("nodeEnd", "falsy"),
        ("taskEnd", None),
    ]
    updates = [
        (d["node"]["alias"], d["data"], d["output"]) for _, t, d in events if t == "nodeUpdate"
    ]
    assert updates == [
        ("gen", {"n": 1}, None),
        ("gen", {"n": 2}, None),
        ("gen", {"n": 3}, None),
        ("ret", {"single": True}, None),
        ("falsy", 0, None),
    ]
    assert events[-1][2]["result"] == {"gen": {"n": 3}, "falsy": 0}
    info = napi.task(task_id)
    assert info["nodesData"] == [
        {"alias": "gen", "data": {"n": 3}},
        {"alias": "ret", "data": {"single": True}},
        {"alias": "falsy", "data": 0},
    ]
    assert info["nodesError"] == []


def test_output_sets_the_output_name(napi: Api) -> None:
    task_id, events = run(napi, "outputs")
    check_envelope(task_id, events)
    updates = [
        (d["node"]["alias"], d["output"], d["data"]) for _, t, d in events if t == "nodeUpdate"
    ]
    assert updates == [
        ("named", "approved", {"ok": True}),
        ("named", None, {"plain": 1}),
        ("named", "rejected", None),
        ("returned", "single", [1, 2]),
    ]
    # The Output wrapper never leaks into the data.
    assert events[-1][1] == "taskEnd"
    assert events[-1][2]["result"] == [1, 2]


def test_defer_sends_node_defer_with_reason(napi: Api) -> None:
    task_id, events = run(napi, "deferring")
    check_envelope(task_id, events)
    assert sequence(events) == [
        ("taskStart", None),
        ("nodeStart", "waiter"),
        ("nodeDefer", "waiter"),
        ("nodeDefer", "waiter"),
        ("nodeUpdate", "waiter"),
        ("nodeEnd", "waiter"),
        ("taskEnd", None),
    ]
    defers = [d for _, t, d in events if t == "nodeDefer"]
    assert defers[0]["reason"] == "waiting for a human"
    assert defers[1]["reason"] is None
    start_node = events[1][2]["node"]
    assert defers[0]["node"] == start_node


def test_defer_outside_a_node_is_an_error() -> None:
    import threading

    ctx = NodeContext(task_id="t", input=None, name=None, abort_event=threading.Event())
    with pytest.raises(RuntimeError, match="defer"):
        ctx.defer("nope")


# --- failures -----------------------------------------------------------------


def test_failing_node_fails_the_task_and_later_nodes_never_start(napi: Api) -> None:
    task_id, events = run(napi, "failing")
    check_envelope(task_id, events)
    # "independent" is another branch: it may run (at the same time) or not.
    assert [item for item in sequence(events) if item[1] != "independent"] == [
        ("taskStart", None),
        ("nodeStart", "first"),
        ("nodeUpdate", "first"),
        ("nodeEnd", "first"),
        ("nodeStart", "broken"),
        ("nodeError", "broken"),
        ("taskError", None),
    ]
    error = events[-2][2]
    assert error["error"] == "the gasket leaked"
    reason = events[-1][2]["reason"]
    assert "'broken'" in reason or "broken" in reason
    assert "the gasket leaked" in reason
    assert events[-1][2]["requireAck"] is False
    info = napi.wait_status(task_id, "FAILED")
    assert info["statusText"] == reason
    assert info["nodesError"] == [{"alias": "broken", "error": "the gasket leaked"}]
    assert {"alias": "first", "data": {"ran": "first"}} in info["nodesData"]
    assert {item["alias"] for item in info["nodesData"]} <= {"first", "independent"}
    assert info["result"] is None


def test_exception_without_message_is_named_by_its_type(napi: Api) -> None:
    task_id, events = run(napi, "bare-failing")
    check_envelope(task_id, events)
    assert types_of(events) == ["taskStart", "nodeStart", "nodeError", "taskError"]
    assert events[2][2]["error"] == "KeyError"
    assert "bare" in events[3][2]["reason"]
    assert "KeyError" in events[3][2]["reason"]


def test_generator_failing_midway_keeps_its_earlier_updates(napi: Api) -> None:
    task_id, events = run(napi, "generator-failing")
    check_envelope(task_id, events)
    assert sequence(events) == [
        ("taskStart", None),
        ("nodeStart", "gen"),
        ("nodeUpdate", "gen"),
        ("nodeError", "gen"),
        ("taskError", None),
    ]
    assert events[3][2]["error"] == "midway failure"
    assert "later" not in node_starts(events)


def test_optional_failing_node_lets_the_task_continue(napi: Api) -> None:
    task_id, events = run(napi, "optional")
    check_envelope(task_id, events)
    assert sequence(events) == [
        ("taskStart", None),
        ("nodeStart", "first"),
        ("nodeUpdate", "first"),
        ("nodeEnd", "first"),
        ("nodeStart", "flaky"),
        ("nodeError", "flaky"),
        ("nodeStart", "after"),
        ("nodeUpdate", "after"),
        ("nodeEnd", "after"),
        ("taskEnd", None),
    ]
    assert events[5][2]["error"] == "the gasket leaked"
    seen = events[7][2]["data"]
    assert seen == {"error": "the gasket leaked", "other": None}
    # The default result: the data of the last node that produced any.
    assert events[-1][2]["result"] == seen
    info = napi.wait_status(task_id, "SUCCESSFUL")
    assert info["nodesError"] == [{"alias": "flaky", "error": "the gasket leaked"}]


def test_non_json_data_is_a_node_error_mentioning_json(napi: Api) -> None:
    task_id, events = run(napi, "non-json")
    check_envelope(task_id, events)
    assert sequence(events) == [
        ("taskStart", None),
        ("nodeStart", "bad"),
        ("nodeError", "bad"),
        ("taskError", None),
    ]
    message = events[2][2]["error"]
    assert "JSON" in message
    assert "bad" in events[3][2]["reason"]
    assert napi.wait_status(task_id, "FAILED")["nodesData"] == []


def test_nan_is_not_json_either(napi: Api) -> None:
    task_id, events = run(napi, "nan")
    check_envelope(task_id, events)
    assert types_of(events) == ["taskStart", "nodeStart", "nodeError", "taskError"]
    assert "JSON" in events[2][2]["error"]


def _exits(ctx: NodeContext) -> None:
    raise SystemExit("the node called sys.exit")


def test_node_raising_system_exit_fails_the_task_and_keeps_the_worker() -> None:
    # sys.exit() in a node is a failing node like any other: the task must end
    # with nodeError + taskError, and the (only) worker must stay alive.
    templates = [
        Template("exits", nodes=[service("quitter", _exits)]),
        Template("echo", nodes=[service("echo", lambda ctx: {"input": ctx.input})]),
    ]
    with LocalRequence(templates, concurrency=1) as rq:
        api = Api(rq.access_token)
        try:
            task_id = api.start("exits")
            info = api.wait_status(task_id, "FAILED", "SUCCESSFUL", timeout=3)
            assert info["status"] == "FAILED"
            events = api.watch(task_id)
            assert types_of(events) == ["taskStart", "nodeStart", "nodeError", "taskError"]
            assert "quitter" in events[-1][2]["reason"]
            later = api.start("echo", 1)
            assert api.wait_status(later, "SUCCESSFUL", timeout=3)["result"] == {"input": 1}
        finally:
            api.close()


# --- result -------------------------------------------------------------------


def test_result_callable_gives_the_result(napi: Api) -> None:
    task_id, events = run(napi, "result-callable")
    check_envelope(task_id, events)
    end = events[-1]
    assert end[1] == "taskEnd"
    assert end[2]["result"] == {"sum": 3}
    assert end[2]["exit"] is None
    assert end[2]["requireAck"] is False
    info = napi.wait_status(task_id, "SUCCESSFUL")
    assert info["result"] == {"sum": 3}


def test_default_result_is_the_last_node_data(napi: Api) -> None:
    task_id, events = run(napi, "result-default")
    check_envelope(task_id, events)
    # "quiet" sends nothing; the last data is gen's last yield.
    assert events[-1][2]["result"] == {"n": 3}
    assert napi.wait_status(task_id, "SUCCESSFUL")["result"] == {"n": 3}


def test_default_result_without_any_data_is_null(napi: Api) -> None:
    task_id, events = run(napi, "result-default-none")
    check_envelope(task_id, events)
    assert types_of(events) == ["taskStart", "nodeStart", "nodeEnd", "taskEnd"]
    assert events[-1][2]["result"] is None


def test_template_without_nodes_succeeds_with_null(napi: Api) -> None:
    task_id, events = run(napi, "no-nodes", {"x": 1})
    check_envelope(task_id, events)
    assert types_of(events) == ["taskStart", "taskEnd"]
    assert events[0][2]["input"] == {"x": 1}
    assert events[-1][2]["result"] is None


def test_result_callable_that_raises_is_a_task_error(napi: Api) -> None:
    task_id, events = run(napi, "result-raises")
    check_envelope(task_id, events)
    assert types_of(events) == ["taskStart", "nodeStart", "nodeUpdate", "nodeEnd", "taskError"]
    assert "cannot build the result" in events[-1][2]["reason"]
    info = napi.wait_status(task_id, "FAILED")
    assert "cannot build the result" in info["statusText"]
    assert info["result"] is None


def test_result_that_is_not_json_is_a_task_error(napi: Api) -> None:
    task_id, events = run(napi, "result-not-json")
    check_envelope(task_id, events)
    assert events[-1][1] == "taskError"
    assert "JSON" in events[-1][2]["reason"]
    assert napi.wait_status(task_id, "FAILED")["result"] is None


# --- context ------------------------------------------------------------------


def test_nodes_see_input_task_id_and_name(napi: Api) -> None:
    given = {"name": "Ada", "list": [1, "two", None], "ünïcode": "✓"}
    task_id, events = run(napi, "context", given, name="my task")
    check_envelope(task_id, events)
    data = [d["data"] for _, t, d in events if t == "nodeUpdate"]
    assert data == [
        {"input": given, "task_id": task_id, "name": "my task", "alias": "ctx", "aborted": False}
    ]
    assert events[0][2]["input"] == given
    # The result callable sees the same task, and no node alias.
    assert events[-1][2]["result"] == {"alias": None, "task_id": task_id, "input": given}


def test_nodes_see_null_name_and_scalar_input(napi: Api) -> None:
    task_id, events = run(napi, "context", 42)
    data = [d["data"] for _, t, d in events if t == "nodeUpdate"]
    assert data == [
        {"input": 42, "task_id": task_id, "name": None, "alias": "ctx", "aborted": False}
    ]


# --- definition-time errors -----------------------------------------------------


def test_duplicate_alias_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"two nodes have the alias 'a'") as info:
        Template("dup", nodes=[service("a", _mark("a")), service("a", _mark("b"))])
    assert "'dup'" in str(info.value)


def test_after_naming_an_unknown_node_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"'b' runs after 'ghost'.*not a node") as info:
        Template("t", nodes=[service("a", _mark("a")), service("b", _mark("b"), after=["ghost"])])
    assert "'t'" in str(info.value)


def test_after_as_a_plain_string_is_one_alias() -> None:
    template = Template("t", nodes=[service("b", _mark("b"), after="a"), service("a", _mark("a"))])
    assert [node.alias for node in template.order] == ["a", "b"]


def test_cycle_is_rejected() -> None:
    with pytest.raises(ValueError, match="cycle") as info:
        Template(
            "loop",
            nodes=[
                service("free", _mark("free")),
                service("a", _mark("a"), after=["c"]),
                service("b", _mark("b"), after=["a"]),
                service("c", _mark("c"), after=["b"]),
            ],
        )
    message = str(info.value)
    for alias in ("'a'", "'b'", "'c'"):
        assert alias in message
    assert "'free'" not in message


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(ValueError, match="cycle"):
        Template("self", nodes=[service("a", _mark("a"), after=["a"])])


def test_invalid_json_schema_is_rejected() -> None:
    with pytest.raises(ValueError, match="not a valid JSON schema") as info:
        Template("bad-schema", input_schema={"type": "no-such-type"}, nodes=[])
    assert "'bad-schema'" in str(info.value)
    assert "input_schema" in str(info.value)


def test_empty_template_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        Template("", nodes=[])


def test_non_string_template_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        Template(None, nodes=[])  # type: ignore[arg-type]


def test_template_name_with_slash_is_rejected() -> None:
    with pytest.raises(ValueError, match="'/'"):
        Template("a/b", nodes=[])


def test_non_callable_function_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"node 'a': function must be callable, not int"):
        service("a", 42)  # type: ignore[arg-type]


def test_empty_alias_is_rejected() -> None:
    with pytest.raises(ValueError, match="alias must be a non-empty string"):
        service("", _mark("x"))


def test_node_not_made_with_service_is_rejected() -> None:
    with pytest.raises(TypeError, match="service"):
        Template("t", nodes=[lambda ctx: 1])  # type: ignore[list-item]


def test_local_requence_rejects_duplicate_template_names() -> None:
    with pytest.raises(ValueError, match=r"two templates are named 'same'"):
        LocalRequence([Template("same", nodes=[]), Template("same", nodes=[])])


def test_local_requence_rejects_non_templates() -> None:
    with pytest.raises(TypeError, match="Template"):
        LocalRequence(["not a template"])  # type: ignore[list-item]


@pytest.mark.parametrize("concurrency", [0, -1])
def test_local_requence_rejects_bad_concurrency(concurrency: int) -> None:
    with pytest.raises(ValueError, match="concurrency must be a positive integer"):
        LocalRequence(SHARED_TEMPLATES, concurrency=concurrency)


@pytest.mark.parametrize("port", [-1, 65536, 70000])
def test_local_requence_rejects_port_out_of_range(port: int) -> None:
    with pytest.raises(ValueError, match="port must be an integer from 0 to 65535"):
        LocalRequence(SHARED_TEMPLATES, port=port)
