"""How tasks and results look in Jupyter: HTML, from plain values.

The views (``Task._repr_html_``, ``TaskResult._repr_html_``) never wait: a
task shows what its handle knows at that moment. Every piece of text that
came from the server or the user is escaped, links go only to ``http(s)``
URLs, and nothing of the client (its token) is ever shown.

This module renders and knows nothing else: the handle and the result hand
it their values, and the state words come from :mod:`requence_task._states`.
It sits below the models, so that ``TaskResult`` can render itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any, Protocol

from ._states import (
    ABORTED,
    ERROR,
    FAILED,
    NODE_ABORTED,
    NODE_ENDED,
    NODE_FAILED,
    NODE_STOPPED,
    NOT_CREATED,
    REJECTED,
    SUCCEEDED,
)

# How much of a JSON value a view shows; the rest is cut with an ellipsis.
_CELL_LIMIT = 300
_BLOCK_LIMIT = 2000

# Inline styles: notebooks drop <style> elements of outputs they do not trust, and
# JupyterLab right-aligns table cells by default.
_STYLE_TABLE = "border-collapse:collapse"
_STYLE_TH = _STYLE_TD = "text-align:left;vertical-align:top"
_STYLE_CODE = "white-space:pre-wrap;word-break:break-word"
_STATE_COLOURS = {
    SUCCEEDED: "#1a7f37",
    NODE_ENDED: "#1a7f37",
    FAILED: "#cf222e",
    NODE_FAILED: "#cf222e",
    ABORTED: "#9a6700",
    NODE_ABORTED: "#9a6700",
    NODE_STOPPED: "#9a6700",
    REJECTED: "#cf222e",
    NOT_CREATED: "#cf222e",
    ERROR: "#cf222e",
}


class NodeView(Protocol):
    """What a row of the node table shows of a node (``_fold.Node`` has it)."""

    @property
    def task_id(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def has_data(self) -> bool: ...
    @property
    def data(self) -> Any: ...


def _json_text(value: Any, limit: int) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _code(value: Any, limit: int = _CELL_LIMIT) -> str:
    return f'<code style="{_STYLE_CODE}">{escape(_json_text(value, limit))}</code>'


def _text(value: object, limit: int = _CELL_LIMIT) -> str:
    text = str(value)
    return escape(text if len(text) <= limit else text[:limit] + "…")


def _link(url: str | None, label: str) -> str:
    # Only web URLs become links: a server could send "javascript:..." as well.
    if isinstance(url, str) and url.lower().startswith(("http://", "https://")):
        return (
            f'<a href="{escape(url, quote=True)}" target="_blank" rel="noopener noreferrer">'
            f"{escape(label)}</a>"
        )
    return escape(label)


def _state_cell(state: str, detail: str | None = None) -> str:
    colour = _STATE_COLOURS.get(state)
    shown = escape(state)
    if colour is not None:
        shown = f'<span style="color:{colour};font-weight:bold">{shown}</span>'
    if detail:
        shown += f": {_text(detail)}"
    return shown


def _rows(rows: list[tuple[str, str]]) -> str:
    cells = "".join(
        f'<tr><th style="{_STYLE_TH}">{escape(head)}</th><td style="{_STYLE_TD}">{cell}</td></tr>'
        for head, cell in rows
    )
    return f'<table style="{_STYLE_TABLE}">{cells}</table>'


def _node_table(nodes: list[tuple[str, str, str]]) -> str:
    if not nodes:
        return ""
    head = "".join(f'<th style="{_STYLE_TH}">{name}</th>' for name in ("node", "state", "data"))
    body = "".join(
        f'<tr><td style="{_STYLE_TD}">{escape(label)}</td><td style="{_STYLE_TD}">{state}</td>'
        f'<td style="{_STYLE_TD}">{cell}</td></tr>'
        for label, state, cell in nodes
    )
    return (
        f'<table style="{_STYLE_TABLE}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def _box(kind: str, inner: str) -> str:
    return f'<div class="requence-task-{kind}" style="font-size:0.9em">{inner}</div>'


def _node_rows(nodes: Iterable[NodeView], own_task_id: str | None) -> list[tuple[str, str, str]]:
    rows = []
    for node in nodes:
        label = node.label
        if own_task_id is not None and node.task_id != own_task_id:
            label += f" (sub-task {node.task_id})"
        if node.error is not None:
            cell = f'<span style="color:#cf222e">{_text(node.error)}</span>'
        elif node.has_data:
            cell = _code(node.data)
        else:
            cell = ""
        rows.append((label, _state_cell(node.state, node.reason), cell))
    return rows


def task_html(
    *,
    template: str | None,
    name: str | None,
    task_id: str | None,
    url: str | None,
    state: str,
    detail: str | None,
    result: tuple[Any] | None,
    nodes: Iterable[NodeView],
) -> str:
    """A task handle's view: template, id (linked), state, its result, and the nodes so far.

    Args:
        task_id: The task's id, if the handle has it; nodes of other ids are
            labelled as a sub-task's.
        result: ``(value,)`` for a task that succeeded, else ``None``.
    """
    rows = [("template", escape(str(template)) if template is not None else "")]
    if name is not None:
        rows.append(("name", _text(name)))
    rows.append(("task", _link(url, task_id) if task_id is not None else "(not created yet)"))
    rows.append(("state", _state_cell(state, detail)))
    if result is not None:
        rows.append(("result", _code(result[0], _BLOCK_LIMIT)))
    return _box("task", _rows(rows) + _node_table(_node_rows(nodes, task_id)))


def result_html(
    *,
    task_id: str,
    task_url: str | None,
    input: Any,
    result: Any,
    node_data: Mapping[str, Any],
    node_errors: Mapping[str, str],
    exit: str | None = None,
) -> str:
    """A result's view: the task, its input, its exit (if named) and result, and
    each node's data."""
    rows = [
        ("task", _link(task_url, task_id)),
        ("state", _state_cell(SUCCEEDED)),
        ("input", _code(input, _BLOCK_LIMIT)),
    ]
    if exit is not None:
        rows.append(("exit", _text(exit)))
    rows.append(("result", _code(result, _BLOCK_LIMIT)))
    nodes: list[tuple[str, str, str]] = [
        (alias, _state_cell(NODE_ENDED), _code(data)) for alias, data in node_data.items()
    ]
    nodes += [
        (alias, _state_cell(NODE_FAILED), f'<span style="color:#cf222e">{_text(error)}</span>')
        for alias, error in node_errors.items()
    ]
    return _box("result", _rows(rows) + _node_table(nodes))
