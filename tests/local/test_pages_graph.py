"""The task page's graph and the list page's rejected input, rendered without a browser.

The browser tests (tests/browser/test_graph_page.py) show them in Chromium;
these pin the layout, the states, the escaping and the pages' HTML.
"""

from __future__ import annotations

import re
from typing import Any

import requests

from requence_task._protocol import IDLE, PENDING, RUNNING, SUCCESSFUL
from requence_task.local import LocalRequence
from requence_task.local._graph import (
    EDGE_EXIT,
    EDGE_FALSE,
    EDGE_NAMED,
    EDGE_ON_FAIL,
    EDGE_PLAIN,
    EDGE_TRUE,
    graph_state,
    layout,
    render_graph,
)
from requence_task.local._pages import render_index, render_task, task_view
from requence_task.local._store import Store
from requence_task.local._templates import Template, first_of, logic, service, subtask

from ..conftest import TIMEOUT, Api

MARKUP = '<img src="x" onerror="alert(1)"><b>&</b>'


def _nothing(ctx: Any) -> None:
    return None


def everything(name: str = "everything") -> Template:
    return Template(
        name,
        nodes=[
            service("fetch", _nothing, on_fail="repair"),
            service("repair", _nothing),
            logic("big", lambda ctx: True, after="fetch"),
            service("large", _nothing, after="big:true"),
            service("small", _nothing, after="big:false"),
            first_of("either", after=["large", "small"]),
            subtask("child", "leaf", after="either"),
            service("report", _nothing, after="child:done"),
        ],
        exits={"reported": ["report"], "repaired": ["repair"]},
    )


def test_layout_puts_each_node_in_the_column_of_its_depth() -> None:
    placed = layout(everything())
    columns = {alias: box.column for alias, box in placed.nodes.items()}
    assert columns == {
        "fetch": 0,
        "repair": 1,
        "big": 1,
        "large": 2,
        "small": 2,
        "either": 3,
        "child": 4,
        "report": 5,
    }
    # An exit: one column after the deepest of its nodes, below that column's nodes.
    assert placed.exits["reported"].column == 6
    assert placed.exits["repaired"].column == 2
    assert placed.exits["repaired"].row == 2
    # No two boxes overlap; the drawing holds them all.
    boxes = [*placed.nodes.values(), *placed.exits.values()]
    for a in boxes:
        assert a.x + a.width <= placed.width and a.y + a.height <= placed.height
        for b in boxes:
            if a is not b:
                apart = a.x + a.width <= b.x or b.x + b.width <= a.x
                apart = apart or a.y + a.height <= b.y or b.y + b.height <= a.y
                assert apart, (a, b)


def test_layout_names_each_edges_kind() -> None:
    kinds = {(e.source, e.target): (e.kind, e.label) for e in layout(everything()).edges}
    assert kinds == {
        ("fetch", "repair"): (EDGE_ON_FAIL, "on fail"),
        ("fetch", "big"): (EDGE_PLAIN, None),
        ("big", "large"): (EDGE_TRUE, "true"),
        ("big", "small"): (EDGE_FALSE, "false"),
        ("large", "either"): (EDGE_PLAIN, None),
        ("small", "either"): (EDGE_PLAIN, None),
        ("either", "child"): (EDGE_PLAIN, None),
        ("child", "report"): (EDGE_NAMED, "done"),
        ("report", "reported"): (EDGE_EXIT, None),
        ("repair", "repaired"): (EDGE_EXIT, None),
    }
    # after="big" is the logic node's true branch, labelled so.
    plain = Template("t", nodes=[logic("c", _nothing), service("yes", _nothing, after="c")])
    assert [(e.kind, e.label) for e in layout(plain).edges] == [(EDGE_TRUE, "true")]


def test_layout_orders_a_column_by_its_sources_rows() -> None:
    # "b2" comes first in the template but follows the second root: it goes second.
    template = Template(
        "t",
        nodes=[
            service("a1", _nothing),
            service("a2", _nothing),
            service("b2", _nothing, after="a2"),
            service("b1", _nothing, after="a1"),
        ],
    )
    rows = {alias: box.row for alias, box in layout(template).nodes.items()}
    assert rows == {"a1": 0, "a2": 1, "b1": 0, "b2": 1}


def test_graph_states_in_the_graphs_words() -> None:
    assert graph_state(None, task_ended=False) == "waiting"
    assert graph_state(None, task_ended=True) == "unreached"
    assert graph_state("started", task_ended=False) == "running"
    assert graph_state("updated", task_ended=False) == "running"
    for word in ("deferred", "ended", "error", "aborted", "stopped"):
        assert graph_state(word, task_ended=True) == word


def test_graph_escapes_every_name_and_has_no_style_attribute() -> None:
    template = Template(
        "t",
        nodes=[
            service(MARKUP, _nothing),
            service("next", _nothing, after=f"{MARKUP}:{MARKUP}"),
        ],
        exits={MARKUP: ["next"]},
    )
    svg = render_graph(template, {}, taken_exit=MARKUP, subtask_links={})
    assert "<img" not in svg and "<b>" not in svg
    assert "&lt;img src=&quot;x&quot;" in svg
    assert "style=" not in svg
    assert 'class="graph-exit taken"' in svg


def _view(store: Store, task_id: str) -> Any:
    view = task_view(store, task_id)
    assert view is not None
    return view


def _node(alias: str) -> dict[str, Any]:
    return {"node": {"alias": alias, "id": f"id-{alias}", "type": "service"}}


def test_task_page_draws_the_graph_with_each_nodes_state() -> None:
    store = Store(":memory:")
    try:
        store.insert_task("t1", "p", "everything", "live", 1.0)
        store.set_status("t1", RUNNING)
        store.append_event("t1", "p", "nodeStart", "fetch", _node("fetch"), 1.0)
        store.append_event("t1", "p", "nodeEnd", "fetch", _node("fetch"), 1.0)
        store.append_event("t1", "p", "nodeStart", "big", _node("big"), 1.0)
        page = render_task(_view(store, "t1"), everything())
        states = dict(re.findall(r'data-alias="(\w+)" data-type="\w+" data-state="(\w+)"', page))
        assert states["fetch"] == "ended"
        assert states["big"] == "running"
        assert states["report"] == "waiting"
        assert len(states) == 8
        assert "style=" not in page

        # Ended through an exit: never-started nodes were not reached, the exit is marked.
        store.end_task(
            "t1",
            status=SUCCESSFUL,
            final_status=SUCCESSFUL,
            status_text=None,
            result_json="{}",
            ended_at=2.0,
            exit="reported",
        )
        page = render_task(_view(store, "t1"), everything())
        assert '<g class="graph-exit taken" data-exit="reported">' in page
        assert '<g class="graph-exit" data-exit="repaired">' in page
        assert "Ended through the exit reported." in page
        assert 'data-alias="report" data-type="service" data-state="unreached"' in page
        assert "not reached" in page
    finally:
        store.close()


def test_task_page_says_a_template_is_continuous() -> None:
    store = Store(":memory:")
    try:
        store.insert_task("t1", "p", "loop", "live", 1.0)
        view = _view(store, "t1")
    finally:
        store.close()
    nodes = [service("n", _nothing)]
    page = render_task(view, Template("loop", nodes=nodes, continuous=True))
    assert "runs until it is aborted." in page
    page = render_task(view, Template("loop", nodes=nodes, continuous=True, exits={"out": ["n"]}))
    assert "runs until it is aborted or reaches an exit." in page
    assert 'id="graph-continuous"' not in render_task(view, Template("loop", nodes=nodes))


def test_task_page_of_a_template_no_longer_defined_draws_no_graph() -> None:
    store = Store(":memory:")
    try:
        store.insert_task("t1", "p", MARKUP, "live", 1.0)
        page = render_task(_view(store, "t1"), None)
    finally:
        store.close()
    assert 'id="no-graph"' in page
    assert "is no longer defined on this server" in page
    assert "<svg" not in page
    assert "<img" not in page


def test_subtask_node_links_to_its_newest_subtask_and_the_subtask_to_its_parent() -> None:
    store = Store(":memory:")
    try:
        store.insert_task("parent", "p", "everything", "live", 1.0)
        for child, at in (("old-child", 2.0), ("new-child", 3.0)):
            store.insert_task(
                child,
                "p",
                "leaf",
                "live",
                at,
                parent_task_id="parent",
                parent_node="child",
                root_task_id="parent",
            )
        page = render_task(_view(store, "parent"), everything(), store.subtasks("parent"))
        assert '<a class="graph-subtask-link" href="/tasks/new-child" data-alias="child">' in page
        assert page.count('class="subtask-link"') == 2
        assert '<div id="subtasks-box">' in page
        leaf = Template("leaf", nodes=[service("work", _nothing)], exits={"done": ["work"]})
        child_page = render_task(_view(store, "new-child"), leaf, store.subtasks("new-child"))
        assert '<a id="task-parent" href="/tasks/parent">' in child_page
        assert "(its node child)" in child_page
        assert 'id="task-root"' not in child_page  # the root is the parent
        assert '<div id="subtasks-box" hidden>' in child_page
    finally:
        store.close()


def test_list_page_says_input_rejected_for_an_idle_task_with_a_reason() -> None:
    store = Store(":memory:")
    try:
        for task_id, status, text in (
            ("rejected", IDLE, f"The input failed the template's input schema at 'n': {MARKUP}"),
            ("prepared", IDLE, None),
            ("finalized", PENDING, "left over"),
        ):
            store.insert_task(task_id, "p", "tpl", "live", 1.0)
            store.set_status(task_id, status)
            store.set_status_text(task_id, text)
        rows = {t.id: t for t in store.tasks_with_status([IDLE, PENDING])}
    finally:
        store.close()
    page = render_index(list(rows.values()), 3, ["tpl"])
    cells = dict(re.findall(r"<tr><td>.*?</td><td>(.*?)</td>.*?<code>(\w+)</code>", page))
    by_id = {task_id: cell for cell, task_id in cells.items()}
    assert (
        '<span class="status status-rejected" title="IDLE">input rejected</span>'
        in (by_id["rejected"])
    )
    assert "&lt;img src=&quot;x&quot; onerror=&quot;alert(1)&quot;&gt;" in by_id["rejected"]
    assert "<img" not in page
    assert by_id["prepared"] == '<span class="status status-idle">IDLE</span>'
    assert by_id["finalized"] == '<span class="status status-pending">PENDING</span>'


def test_served_task_page_carries_the_graph_under_the_pages_policy() -> None:
    leaf = Template("leaf", nodes=[service("work", _nothing)], exits={"done": ["work"]})
    with LocalRequence([leaf, everything()]) as rq:
        api = Api(rq.access_token)
        try:
            task_id = api.prepare("everything")["taskId"]
            page = requests.get(f"{rq.base_url}/tasks/{task_id}", timeout=TIMEOUT)
        finally:
            api.close()
    assert page.status_code == 200
    assert "style-src 'self'" in page.headers["content-security-policy"]
    assert page.text.count('<g class="graph-node') == 8
    assert page.text.count('<g class="graph-edge') == 10
    assert page.text.count('<g class="graph-exit') == 2
    assert "style=" not in page.text
