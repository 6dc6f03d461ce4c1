"""The task page's drawing of a template: its nodes laid out in layers, as SVG.

A node's layer (its column, left to right) is its topological depth: 0 for a
node without inputs, else one more than the deepest of its sources. An exit
sits one column after the deepest of its nodes. Within a column, nodes are
ordered by the mean row of their sources (then by the template's order), which
keeps most edges short and uncrossed.

Everything drawn is plain SVG with classes and presentation attributes (no
``style=``, which the pages' Content-Security-Policy forbids); every alias,
output and exit name is escaped. Each node is a ``<g class="graph-node">`` with
``data-alias`` and ``data-state``, and a ``.graph-state`` text that the page's
script updates as the task's updates arrive.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

import attrs

from ._templates import LOGIC_FALSE, LOGIC_TRUE, ON_FAIL, Template

NODE_WIDTH = 168
NODE_HEIGHT = 58
EXIT_WIDTH = 128
EXIT_HEIGHT = 34
COLUMN_PITCH = NODE_WIDTH + 84
ROW_PITCH = NODE_HEIGHT + 26
MARGIN = 12
_LABEL_LENGTH = 20

GRAPH_WAITING = "waiting"
"""A node that has not started while its task has not ended."""
GRAPH_UNREACHED = "unreached"
"""A node that never started in a task that ended (shown as ``not reached``)."""
GRAPH_RUNNING = "running"
"""A node that started or sent data and has not ended (the table's ``started``, ``updated``)."""
_GRAPH_WORDS = {"started": GRAPH_RUNNING, "updated": GRAPH_RUNNING}
_STATE_TEXT = {GRAPH_UNREACHED: "not reached"}
_TYPE_TEXT = {"service": "service", "logic": "logic", "or": "first of"}

EDGE_PLAIN = "plain"
EDGE_ON_FAIL = "onfail"
EDGE_TRUE = "true"
EDGE_FALSE = "false"
EDGE_NAMED = "named"
EDGE_EXIT = "exit"


def graph_state(page_state: str | None, task_ended: bool) -> str:
    """A node's state in the graph, from the page's word for it (``None``: not started)."""
    if page_state is None:
        return GRAPH_UNREACHED if task_ended else GRAPH_WAITING
    return _GRAPH_WORDS.get(page_state, page_state)


def state_text(state: str) -> str:
    """What the graph writes for a :func:`graph_state`."""
    return _STATE_TEXT.get(state, state)


@attrs.frozen
class Box:
    """A node or an exit, placed: its column, its row and its rectangle."""

    name: str
    column: int
    row: int
    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> tuple[int, int]:
        return self.x + self.width, self.y + self.height // 2

    @property
    def left(self) -> tuple[int, int]:
        return self.x, self.y + self.height // 2


@attrs.frozen
class GraphEdge:
    """An edge as drawn: ``source`` to ``target`` (a node, or an exit for ``kind`` exit)."""

    source: str
    target: str
    output: str | None
    kind: str
    label: str | None


@attrs.frozen
class Layout:
    nodes: dict[str, Box]
    exits: dict[str, Box]
    edges: tuple[GraphEdge, ...]
    width: int
    height: int


def layout(template: Template) -> Layout:
    """Place a template's nodes and exits in columns by topological depth."""
    depth: dict[str, int] = {}
    for node in template.order:  # sources come first in the order
        sources = [edge.source for edge in template.inputs(node.alias)]
        depth[node.alias] = 1 + max((depth[s] for s in sources), default=-1)
    exits = template.exits or {}
    exit_depth = {name: 1 + max(depth[a] for a in members) for name, members in exits.items()}
    columns: dict[int, list[str]] = {}
    for node in template.order:
        columns.setdefault(depth[node.alias], []).append(node.alias)
    row: dict[str, float] = {}
    for column in sorted(columns):
        aliases = columns[column]
        if column > 0:
            rank = {alias: index for index, alias in enumerate(aliases)}

            def mean_source_row(alias: str, rank: Mapping[str, int] = rank) -> tuple[float, int]:
                sources = [row[e.source] for e in template.inputs(alias)]
                return (sum(sources) / len(sources) if sources else 0.0), rank[alias]

            aliases.sort(key=mean_source_row)
        for index, alias in enumerate(aliases):
            row[alias] = index
    exit_rows: dict[str, int] = {}
    exit_columns: dict[int, list[str]] = {}
    for name in exits:
        exit_columns.setdefault(exit_depth[name], []).append(name)
    for column, names in exit_columns.items():
        names.sort(key=lambda n: sum(row[a] for a in exits[n]) / len(exits[n]))
        taken = len(columns.get(column, []))
        for index, name in enumerate(names):
            exit_rows[name] = taken + index
    nodes = {
        alias: _box(alias, depth[alias], int(row[alias]), NODE_WIDTH, NODE_HEIGHT)
        for alias in depth
    }
    exit_boxes = {
        name: _box(name, exit_depth[name], exit_rows[name], EXIT_WIDTH, EXIT_HEIGHT)
        for name in exits
    }
    edges = [
        _edge(template, edge.source, node.alias, edge.output)
        for node in template.order
        for edge in template.inputs(node.alias)
    ]
    edges += [
        GraphEdge(alias, name, None, EDGE_EXIT, None)
        for name, members in exits.items()
        for alias in members
    ]
    boxes = [*nodes.values(), *exit_boxes.values()]
    width = max((b.x + b.width for b in boxes), default=0) + MARGIN
    height = max((b.y + NODE_HEIGHT for b in boxes), default=0) + MARGIN
    return Layout(nodes, exit_boxes, tuple(edges), width, height)


def _box(name: str, column: int, row: int, width: int, height: int) -> Box:
    x = MARGIN + column * COLUMN_PITCH + (NODE_WIDTH - width) // 2
    y = MARGIN + row * ROW_PITCH + (NODE_HEIGHT - height) // 2
    return Box(name, column, row, x, y, width, height)


def _edge(template: Template, source: str, target: str, output: str | None) -> GraphEdge:
    if output == ON_FAIL:
        return GraphEdge(source, target, output, EDGE_ON_FAIL, "on fail")
    if template.by_alias[source].type == "logic":
        if output == LOGIC_FALSE:
            return GraphEdge(source, target, output, EDGE_FALSE, LOGIC_FALSE)
        return GraphEdge(source, target, output, EDGE_TRUE, LOGIC_TRUE)
    if output is None:
        return GraphEdge(source, target, output, EDGE_PLAIN, None)
    return GraphEdge(source, target, output, EDGE_NAMED, output)


# --- SVG ---------------------------------------------------------------------------


def render_graph(
    template: Template,
    states: Mapping[str, str],
    *,
    taken_exit: str | None,
    subtask_links: Mapping[str, str],
) -> str:
    """The template as an SVG drawing.

    Args:
        template: The task's template.
        states: Each node's :func:`graph_state`, by alias.
        taken_exit: The exit the task ended through, marked; ``None`` if none.
        subtask_links: For a sub-task node that started its sub-task, the URL of
            that sub-task's page, by alias.
    """
    placed = layout(template)
    parts = [
        f'<svg id="graph-svg" xmlns="http://www.w3.org/2000/svg" width="{placed.width}" '
        f'height="{placed.height}" viewBox="0 0 {placed.width} {placed.height}" '
        'role="group" aria-label="The template\'s nodes and edges">',
        "<defs>",
        _marker("graph-arrow", "graph-arrowhead"),
        _marker("graph-arrow-fail", "graph-arrowhead graph-arrowhead-fail"),
        "</defs>",
    ]
    for edge in placed.edges:
        start = placed.nodes[edge.source].right
        target = placed.exits[edge.target] if edge.kind == EDGE_EXIT else placed.nodes[edge.target]
        parts.append(_edge_svg(edge, start, target.left))
    for alias, box in placed.nodes.items():
        node = template.by_alias[alias]
        state = states.get(alias, GRAPH_WAITING)
        kind = (
            f"sub-task: {node.template}"
            if node.type == "reference"
            else _TYPE_TEXT.get(node.type, node.type)
        )
        group = (
            f'<g class="graph-node graph-type-{_e(_css(node.type))}" data-alias="{_e(alias)}" '
            f'data-type="{_e(node.type)}" data-state="{_e(state)}">'
            f"<title>{_e(alias)} ({_e(kind)})</title>"
            f'<rect class="graph-box" x="{box.x}" y="{box.y}" width="{box.width}" '
            f'height="{box.height}" rx="6"/>'
            f'<text class="graph-alias" x="{box.x + 10}" y="{box.y + 18}">'
            f"{_e(_short(alias))}</text>"
            f'<text class="graph-kind" x="{box.x + 10}" y="{box.y + 34}">'
            f"{_e(_short(kind, 24))}</text>"
            f'<text class="graph-state" x="{box.x + 10}" y="{box.y + 50}">'
            f"{_e(state_text(state))}</text>"
            "</g>"
        )
        link = subtask_links.get(alias)
        if link is not None:
            group = (
                f'<a class="graph-subtask-link" href="{_e(link)}" data-alias="{_e(alias)}">'
                f"{group}</a>"
            )
        parts.append(group)
    for name, box in placed.exits.items():
        taken = " taken" if name == taken_exit else ""
        parts.append(
            f'<g class="graph-exit{taken}" data-exit="{_e(name)}">'
            f"<title>exit {_e(name)}</title>"
            f'<rect class="graph-exit-box" x="{box.x}" y="{box.y}" width="{box.width}" '
            f'height="{box.height}" rx="{box.height // 2}"/>'
            f'<text class="graph-exit-name" x="{box.x + box.width // 2}" '
            f'y="{box.y + box.height // 2 + 5}" text-anchor="middle">'
            f"{_e(_short('exit ' + name, 17))}</text>"
            "</g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _marker(marker_id: str, css: str) -> str:
    return (
        f'<marker id="{marker_id}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        f'markerHeight="8" orient="auto"><path class="{css}" d="M0,0L10,5L0,10z"/></marker>'
    )


def _edge_svg(edge: GraphEdge, start: tuple[int, int], end: tuple[int, int]) -> str:
    (x1, y1), (x2, y2) = start, end
    bend = max(30, (x2 - x1) // 2)
    path = f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
    marker = "graph-arrow-fail" if edge.kind == EDGE_ON_FAIL else "graph-arrow"
    output = "" if edge.output is None else f' data-output="{_e(edge.output)}"'
    label = ""
    if edge.label is not None:
        text = _short(edge.label, 14)
        mx, my = (x1 + x2) // 2, (y1 + y2) // 2
        width = 7 * len(text) + 8
        label = (
            f'<rect class="graph-label-bg" x="{mx - width // 2}" y="{my - 9}" '
            f'width="{width}" height="16" rx="3"/>'
            f'<text class="graph-label" x="{mx}" y="{my + 3}" text-anchor="middle">'
            f"{_e(text)}</text>"
        )
    return (
        f'<g class="graph-edge edge-{edge.kind}" data-source="{_e(edge.source)}" '
        f'data-target="{_e(edge.target)}"{output}>'
        f'<path class="graph-line" d="{path}" fill="none" marker-end="url(#{marker})"/>'
        f"{label}</g>"
    )


def _short(text: str, limit: int = _LABEL_LENGTH) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _css(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum() or c in "-_")


def _e(text: str) -> str:
    return html.escape(text, quote=True)
