"""The task page's graph and the list page's "input rejected", in headless Chromium.

The graph is drawn by the server (an SVG in columns by depth) and kept current
by the page's script. The structure is checked on the page of a prepared task
of a template with every construct; the live states, the sub-task links and
the exit taken on tasks the engine runs, held at a gate while the page looks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from requence_task.local import LocalRequence, NodeContext
from requence_task.local._templates import Template, first_of, logic, service, subtask

from ..conftest import TIMEOUT, Api
from .conftest import GATES, PAYLOAD, WAIT_MS, gate, new_gate, wait_gate

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips, or fails under CI, and says why
    expect = None


def _nothing(ctx: NodeContext) -> None:
    return None


def _hold(ctx: NodeContext) -> dict[str, Any]:
    wait_gate(ctx, ctx.input["gate"])
    return {"held": True}


GRAPH_TEMPLATES = [
    Template("leaf", nodes=[service("work", _nothing)], exits={"done": ["work"]}),
    Template(
        "everything",
        nodes=[
            service("fetch", _hold, on_fail="repair"),
            service("repair", _nothing),
            logic("big", lambda ctx: True, after="fetch"),
            service("large", _nothing, after="big"),
            service("small", _nothing, after="big:false"),
            first_of("either", after=["large", "small"]),
            subtask("child", "leaf", after="either"),
            service("report", _nothing, after="child:done"),
        ],
        exits={"reported": ["report"], "repaired": ["repair"]},
    ),
    Template(
        "pair",
        nodes=[service("first", _hold), service("second", _nothing, after="first")],
    ),
    Template(
        "to-child",
        nodes=[service("hold", _hold), subtask("child", "leaf", after="hold")],
    ),
    Template(
        "strict",
        nodes=[service("n", _nothing)],
        input_schema={
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "integer"}},
        },
    ),
]


@pytest.fixture(scope="module")
def graph_server() -> Iterator[LocalRequence]:
    with LocalRequence(GRAPH_TEMPLATES, concurrency=4) as rq:
        yield rq
    for event in GATES.values():
        event.set()


@pytest.fixture()
def graph_api(graph_server: LocalRequence) -> Iterator[Api]:
    client = Api(graph_server.access_token)
    yield client
    client.close()


def show_url(server: LocalRequence, task_id: str) -> str:
    return f"{server.base_url}/tasks/{task_id}"


def graph_node(page: Any, alias: str) -> Any:
    return page.locator(f'#graph-svg .graph-node[data-alias="{alias}"]')


def graph_edge(page: Any, source: str, target: str) -> Any:
    return page.locator(f'#graph-svg .graph-edge[data-source="{source}"][data-target="{target}"]')


def test_graph_draws_every_node_edge_and_exit(
    page: Any, graph_api: Api, graph_server: LocalRequence
) -> None:
    task_id = graph_api.prepare("everything")["taskId"]  # IDLE: nothing runs
    page.goto(show_url(graph_server, task_id))
    nodes = page.locator("#graph-svg .graph-node")
    expect(nodes).to_have_count(8, timeout=WAIT_MS)
    types = {
        alias: page.locator(f'#graph-svg .graph-node[data-alias="{alias}"]').get_attribute(
            "data-type"
        )
        for alias in nodes.evaluate_all("els => els.map(e => e.dataset.alias)")
    }
    assert types == {
        "fetch": "service",
        "repair": "service",
        "big": "logic",
        "large": "service",
        "small": "service",
        "either": "or",
        "child": "reference",
        "report": "service",
    }
    expect(graph_node(page, "either").locator(".graph-kind")).to_have_text("first of")
    expect(graph_node(page, "child").locator(".graph-kind")).to_have_text("sub-task: leaf")
    for alias in types:  # nothing started yet
        expect(graph_node(page, alias)).to_have_attribute("data-state", "waiting")
        expect(graph_node(page, alias).locator(".graph-state")).to_have_text("waiting")

    # Every edge, each of its kind, the named ones labelled.
    edges = page.locator("#graph-svg .graph-edge")
    expect(edges).to_have_count(10, timeout=WAIT_MS)
    for source, target, kind, label in (
        ("fetch", "repair", "edge-onfail", "on fail"),
        ("fetch", "big", "edge-plain", None),
        ("big", "large", "edge-true", "true"),
        ("big", "small", "edge-false", "false"),
        ("large", "either", "edge-plain", None),
        ("small", "either", "edge-plain", None),
        ("either", "child", "edge-plain", None),
        ("child", "report", "edge-named", "done"),
        ("report", "reported", "edge-exit", None),
        ("repair", "repaired", "edge-exit", None),
    ):
        edge = graph_edge(page, source, target)
        expect(edge).to_have_count(1)
        assert kind in (edge.get_attribute("class") or "").split(), (source, target)
        if label is None:
            expect(edge.locator(".graph-label")).to_have_count(0)
        else:
            expect(edge.locator(".graph-label")).to_have_text(label)
    assert graph_edge(page, "fetch", "repair").get_attribute("data-output") == "onFail"
    # The on-fail edge looks different from the others (dashed, its own arrowhead).
    line = graph_edge(page, "fetch", "repair").locator("path")
    plain = graph_edge(page, "fetch", "big").locator("path")
    assert line.evaluate("e => getComputedStyle(e).strokeDasharray") not in ("none", "")
    assert plain.evaluate("e => getComputedStyle(e).strokeDasharray") in ("none", "")
    assert line.get_attribute("marker-end") != plain.get_attribute("marker-end")

    # The exits, as end markers; none is taken yet.
    exits = page.locator("#graph-svg .graph-exit")
    expect(exits).to_have_count(2)
    assert sorted(exits.evaluate_all("els => els.map(e => e.dataset.exit)")) == [
        "repaired",
        "reported",
    ]
    expect(page.locator("#graph-svg .graph-exit.taken")).to_have_count(0)

    # Laid out in layers: each node's column is its depth.
    def left(alias: str) -> float:
        box = graph_node(page, alias).locator("rect").bounding_box()
        assert box is not None
        return float(box["x"])

    columns = [["fetch"], ["repair", "big"], ["large", "small"], ["either"], ["child"]]
    columns += [["report"]]
    for index in range(1, len(columns)):
        earlier, later = columns[index - 1], columns[index]
        assert max(left(a) for a in earlier) < min(left(a) for a in later)
    for column in columns:
        assert len({left(a) for a in column}) == 1
    exit_box = page.locator('#graph-svg .graph-exit[data-exit="reported"] rect').bounding_box()
    assert exit_box is not None and exit_box["x"] > left("report")


def test_graph_follows_the_task_live(
    page: Any, graph_api: Api, graph_server: LocalRequence
) -> None:
    key = new_gate()
    prepared = graph_api.prepare("pair")
    page.goto(show_url(graph_server, prepared["taskId"]))
    page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads
    first, second = graph_node(page, "first"), graph_node(page, "second")
    expect(first).to_have_attribute("data-state", "waiting", timeout=WAIT_MS)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)

    assert graph_api.finalize(prepared, input={"gate": key}).status_code == 200
    expect(first).to_have_attribute("data-state", "running", timeout=WAIT_MS)
    expect(first.locator(".graph-state")).to_have_text("running", timeout=WAIT_MS)
    expect(second).to_have_attribute("data-state", "waiting", timeout=WAIT_MS)

    gate(key).set()
    expect(first).to_have_attribute("data-state", "ended", timeout=WAIT_MS)
    expect(second).to_have_attribute("data-state", "ended", timeout=WAIT_MS)
    expect(second.locator(".graph-state")).to_have_text("ended", timeout=WAIT_MS)
    expect(page.locator("#task-status")).to_have_text("SUCCESSFUL", timeout=WAIT_MS)
    assert page.evaluate("window.__sameDocument") is True
    # The server renders the same on reload.
    page.reload()
    expect(first).to_have_attribute("data-state", "ended", timeout=WAIT_MS)
    expect(second).to_have_attribute("data-state", "ended", timeout=WAIT_MS)


def test_nodes_never_reached_show_so_once_the_task_is_aborted(
    page: Any, graph_api: Api, graph_server: LocalRequence
) -> None:
    key = new_gate()
    task_id = graph_api.start("pair", {"gate": key})
    page.goto(show_url(graph_server, task_id))
    expect(graph_node(page, "first")).to_have_attribute("data-state", "running", timeout=WAIT_MS)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    assert graph_api.post(f"/task/abort/{task_id}", data="stop").status_code == 200
    expect(page.locator("#task-status")).to_have_text("STOPPED", timeout=WAIT_MS)
    for _ in range(2):  # live, then as rendered on reload
        expect(graph_node(page, "first")).to_have_attribute("data-state", "aborted")
        second = graph_node(page, "second")
        expect(second).to_have_attribute("data-state", "unreached", timeout=WAIT_MS)
        expect(second.locator(".graph-state")).to_have_text("not reached", timeout=WAIT_MS)
        page.reload()


def test_subtask_node_links_to_its_subtask_which_links_back(
    page: Any, graph_api: Api, graph_server: LocalRequence
) -> None:
    key = new_gate()
    task_id = graph_api.start("to-child", {"gate": key})
    page.goto(show_url(graph_server, task_id))
    expect(graph_node(page, "hold")).to_have_attribute("data-state", "running", timeout=WAIT_MS)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    link = page.locator('#graph-svg a.graph-subtask-link[data-alias="child"]')
    expect(link).to_have_count(0)
    expect(page.locator("#subtasks-box")).to_be_hidden()

    store = graph_server.store
    gate(key).set()  # "child" starts its sub-task: its link appears without a reload
    expect(link).to_have_count(1, timeout=WAIT_MS)
    children = {f"/tasks/{t.id}" for t in store.subtasks(task_id) if t.parent_node == "child"}
    assert link.get_attribute("href") in children
    expect(page.locator("#subtasks-box")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#subtasks a.subtask-link").first).to_contain_text("child: leaf")
    assert page.locator("main script, main img").count() == 0

    # On reload too (rendered by the server); it leads to the sub-task's page,
    # whose Parent leads back.
    page.reload()
    expect(link).to_have_count(1, timeout=WAIT_MS)
    href = link.get_attribute("href")
    assert href in children
    page.goto(graph_server.base_url + str(href))
    expect(page.locator("#task-template")).to_have_text("leaf", timeout=WAIT_MS)
    parent_link = page.locator("#task-parent")
    expect(parent_link).to_have_text(task_id, timeout=WAIT_MS)
    expect(page.locator("main dl.facts")).to_contain_text("its node child")
    parent_link.click()
    page.wait_for_url(show_url(graph_server, task_id), timeout=WAIT_MS)


def test_list_page_says_the_input_was_rejected(
    page: Any, graph_api: Api, graph_server: LocalRequence
) -> None:
    prepared = graph_api.prepare("strict")
    task_id = prepared["taskId"]
    response = graph_api.finalize(prepared, input={"name": PAYLOAD})
    assert response.status_code == 422, response.text
    row = graph_server.store.task(task_id)
    assert row is not None and row.status == "IDLE"
    message = row.status_text
    assert message == response.text  # the engine keeps the 422's message
    assert "<script>" in message  # the refused value, markup included
    other = graph_api.prepare("strict")["taskId"]  # IDLE, nothing refused

    page.goto(graph_server.base_url + "/")
    rejected = page.locator("#tasks tbody tr", has_text=task_id)
    expect(rejected.locator(".status")).to_have_text("input rejected", timeout=WAIT_MS)
    expect(rejected.locator(".status-text")).to_have_text(message, timeout=WAIT_MS)
    idle = page.locator("#tasks tbody tr", has_text=other)
    expect(idle.locator(".status")).to_have_text("IDLE", timeout=WAIT_MS)
    expect(idle.locator(".status-text")).to_have_count(0)
    assert page.locator("main img, main script, main b").count() == 0
    assert page.evaluate("window.__xss") is None

    # The task's own page says it too.
    page.goto(show_url(graph_server, task_id))
    expect(page.locator("#task-status")).to_have_text("IDLE", timeout=WAIT_MS)
    expect(page.locator("#task-reason")).to_have_text("input rejected: " + message)
    listing = requests.get(graph_server.base_url + "/", timeout=TIMEOUT).text
    assert "<img" not in listing


def test_exit_taken_is_marked_live_and_on_reload(
    page: Any, graph_api: Api, graph_server: LocalRequence
) -> None:
    key = new_gate()
    task_id = graph_api.start("everything", {"gate": key})
    page.goto(show_url(graph_server, task_id))
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    expect(graph_node(page, "fetch")).to_have_attribute("data-state", "running", timeout=WAIT_MS)
    reported = page.locator('#graph-svg .graph-exit[data-exit="reported"]')
    expect(reported).not_to_have_class("graph-exit taken")

    # fetch -> big (true) -> large -> either -> child (a sub-task, exit done) -> report
    gate(key).set()
    for _ in range(2):  # live, then as rendered on reload
        expect(reported).to_have_class("graph-exit taken", timeout=WAIT_MS)
        expect(page.locator('#graph-svg .graph-exit[data-exit="repaired"]')).to_have_class(
            "graph-exit"
        )
        expect(page.locator("#task-exit")).to_have_text("Ended through the exit reported.")
        expect(graph_node(page, "report")).to_have_attribute("data-state", "ended")
        expect(graph_node(page, "fetch")).to_have_attribute("data-state", "ended")
        for alias in ("small", "repair"):
            expect(graph_node(page, alias)).to_have_attribute("data-state", "unreached")
        assert page.evaluate("window.__sameDocument") is True
        page.reload()
        page.evaluate("window.__sameDocument = true")
