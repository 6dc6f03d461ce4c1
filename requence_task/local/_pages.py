"""Pages of the local server for a browser: the recent tasks at ``/``, and each
task's live page at ``/tasks/{task_id}`` (the ``urls.show`` that finalize hands out).

Routes, all without a token (see docs/task-page.md for why that is acceptable):

- ``GET /``: the newest tasks of every project, with links to their pages.
- ``GET /tasks/{task_id}``: the task as it stands, rendered on the server, so it
  reads without JavaScript; a small script then follows it live.
- ``GET /tasks/{task_id}/events``: the task's update stream as Server-Sent
  Events, from its first update (or after ``?after=N``, or after the
  ``Last-Event-ID`` that ``EventSource`` sends when it reconnects). It ends after
  the task's last update.
- ``POST /tasks/{task_id}/abort``: aborts the task like the API's abort. Only the
  page's own script can call it: it needs the header ``X-Requence-Abort: 1``,
  which a cross-site form cannot send, and refuses a foreign ``Origin`` or
  ``Sec-Fetch-Site``.
- ``GET /assets/{name}``: the pages' stylesheet and script.

Task data is user data. The server escapes every value it puts into HTML, and
the script writes values with ``textContent`` only, never as markup; a
Content-Security-Policy allows no inline script either. Pages answer only to a
``Host`` that is an IP address, ``localhost``, or the name the server was bound
to, so that a web page cannot read them through DNS rebinding.
"""

from __future__ import annotations

import functools
import html
import ipaddress
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import resources
from typing import Any
from urllib.parse import quote

import attrs
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .._files import human_size
from .._fold import ContextFolder, Node, NodeFold
from .._protocol import (
    ASSET_ROUTE,
    AWAITING_DELIVERY,
    FAILED,
    IDLE,
    INDEX_PATH,
    NODE_DEFER,
    NODE_ERROR,
    NODE_START,
    NODE_UPDATE,
    PAGE_ABORT_ROUTE,
    PAGE_EVENTS_ROUTE,
    PENDING,
    REFERENCE_TAG,
    RUNNING,
    SHOW_ROUTE,
    STOPPED,
    SUCCESSFUL,
    TAG_CLAIM_CHECK,
    TAG_FILE,
    TAG_STREAM,
    TASK_ABORTED,
    TASK_END,
    TASK_ERROR,
    TASK_START,
    TERMINAL_UPDATE_TYPES,
    asset_path,
    page_abort_path,
    page_events_path,
    show_path,
)
from .._states import NODE_FAILED, NODE_RUNNING
from .._wire import key_path
from ._context import Context
from ._endpoint import Handler, route
from ._engine import ApiError
from ._feed import feed
from ._graph import graph_state, render_graph, state_text
from ._store import ENDED_STATUSES, Event, Store, TaskRow
from ._templates import Template

RECENT_LIMIT = 100
"""How many tasks the list page shows, newest first."""
LOG_LIMIT = 200
"""How many of a task's latest updates its page lists."""
ABORT_HEADER = "X-Requence-Abort"
"""The header the page's script sends with an abort; a plain HTML form cannot."""
ABORT_REASON = "aborted from the task page"
STYLESHEET = "pages.css"
"""The pages' stylesheet, in the package's ``_assets`` directory."""
SCRIPT = "task-page.js"
"""The task page's script, in the package's ``_assets`` directory."""
ASSETS = {STYLESHEET: "text/css", SCRIPT: "text/javascript"}
"""The files served at :func:`~requence_task._protocol.asset_path`, and their types."""

NODE_STARTED = "started"
"""The page's word for a running node that has sent no data yet."""
NODE_UPDATED = "updated"
"""The page's word for a running node that has sent data."""
_NODE_WORDS = {NODE_FAILED: "error"}
"""The page's words where they are not the fold's (docs/task-page.md names them)."""

_ALL_STATUSES = (IDLE, PENDING, RUNNING, SUCCESSFUL, FAILED, STOPPED, AWAITING_DELIVERY)
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
_EVENTS_PAGE = 500
_SUMMARY_LENGTH = 200

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def page_routes(context: Context) -> list[Route]:
    """The routes of the pages, made by :func:`._endpoint.route` like the API's."""

    def page(pattern: str, name: str, handler: Handler, method: str = "GET") -> Route:
        return route(context, pattern, name, handler, method, auth=False)

    return [
        page(INDEX_PATH, "index", index),
        page(ASSET_ROUTE, "page-asset", asset),
        page(SHOW_ROUTE, "page", task_page),
        page(PAGE_EVENTS_ROUTE, "page-events", events),
        page(PAGE_ABORT_ROUTE, "page-abort", abort, "POST"),
    ]


# --- what the pages show -----------------------------------------------------------


def node_word(node: Node) -> str:
    """What the page calls a node's state in the client's fold (:mod:`requence_task._fold`).

    The fold's words (:mod:`requence_task._states`), but the page's own for a
    node that runs (``started``, or ``updated`` once it sent data) and for one
    that failed (``error``); the page's script follows the same rules.
    """
    if node.state == NODE_RUNNING:
        return NODE_UPDATED if node.has_data else NODE_STARTED
    return _NODE_WORDS.get(node.state, node.state)


@attrs.define
class NodeView:
    """One node as its task's updates left it."""

    alias: str
    state: str = NODE_STARTED
    """:func:`node_word` of the node's state in the fold."""
    updates: int = 0
    has_data: bool = False
    data: Any = None
    error: str | None = None
    reason: str | None = None
    deferred: bool = False


@attrs.define
class TaskView:
    """A task as its row and its updates up to ``position`` show it."""

    task: TaskRow
    status: str
    outcome: str
    """The status, or for a task awaiting its ack, the status it will have then."""
    reason: str | None
    has_result: bool
    result: Any
    nodes: dict[str, NodeView]
    log: list[tuple[Event, dict[str, Any]]]
    position: int | None
    update_count: int

    @property
    def ended(self) -> bool:
        return self.status in ENDED_STATUSES


def task_view(store: Store, task_id: str) -> TaskView | None:
    """Fold a task's stored updates into what its page shows; ``None`` if unknown.

    The row is read before the updates: the engine stores a task's last update
    before it writes the end into the row, so every update that led to what the
    row says is among those read.
    """
    task = store.task(task_id)
    if task is None:
        return None
    status = task.status
    reason = task.status_text
    outcome = task.final_status if task.status in ENDED_STATUSES else None
    has_result = task.status in ENDED_STATUSES and task.final_status == SUCCESSFUL
    result = task.result
    nodes: dict[str, NodeView] = {}
    states: dict[str, Node] = {}  # each node's entry in the fold, by alias
    folder, fold = ContextFolder(task_id), NodeFold(task_id)
    log: list[tuple[Event, dict[str, Any]]] = []
    position: int | None = None
    count = 0
    for event in _task_events(store, task_id):
        position = event.position
        count += 1
        try:
            data = json.loads(event.data)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        log.append((event, data))
        if len(log) > 2 * LOG_LIMIT:
            del log[:-LOG_LIMIT]
        entry = fold.feed(folder.fold(event.type, data, event.position))
        alias = _alias(data)
        node = None
        if alias is not None:
            node = nodes.get(alias)
            if node is None:
                node = nodes[alias] = NodeView(alias)
            if entry is not None:
                states[alias] = entry
        kind = event.type
        if kind == TASK_START and status == IDLE:
            status = PENDING
        elif kind == NODE_START:
            if status in (IDLE, PENDING):
                status = RUNNING
        elif node is not None and kind == NODE_UPDATE:
            node.updates += 1
            node.has_data, node.data = True, data.get("data")
        elif node is not None and kind == NODE_DEFER:
            node.deferred, node.reason = True, _text(data.get("reason"))
        elif node is not None and kind == NODE_ERROR:
            node.error = _text(data.get("error")) or ""
        elif kind in TERMINAL_UPDATE_TYPES and task.status not in ENDED_STATUSES:
            # The end arrived between reading the row and reading the updates.
            status = _terminal_status(kind, data)
            outcome = _terminal_status(kind, {})
            reason = None if kind == TASK_END else _text(data.get("reason"))
            has_result, result = kind == TASK_END, data.get("result")
    for alias, entry in states.items():
        # Last: a task's end settles the nodes it stopped (see requence_task._fold).
        nodes[alias].state = node_word(entry)
    return TaskView(
        task=task,
        status=status,
        outcome=outcome or status,
        reason=reason,
        has_result=has_result,
        result=result,
        nodes=nodes,
        log=log[-LOG_LIMIT:],
        position=position,
        update_count=count,
    )


def recent_tasks(store: Store, limit: int = RECENT_LIMIT) -> tuple[list[TaskRow], int]:
    """The newest ``limit`` tasks of every project, and how many there are in all."""
    # The store has no "newest first" query; a local server holds few enough tasks
    # that sorting them here is fine.
    tasks = store.tasks_with_status(_ALL_STATUSES)
    tasks.sort(key=lambda t: t.created_at, reverse=True)
    return tasks[:limit], len(tasks)


def allowed_host(host_header: str | None, bound_host: str) -> bool:
    """Whether a request's ``Host`` is one a DNS-rebinding page cannot send.

    IP addresses, ``localhost`` and its subdomains cannot be rebound, and neither
    can the name the server was bound to; any other name may be an attacker's
    domain pointed at this machine.
    """
    if host_header is None:
        return True  # not a browser: browsers always send Host
    name = _host_name(host_header).lower()
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return True
    if name in _LOOPBACK_NAMES or name.rstrip(".").endswith(".localhost"):
        return True
    bound = bound_host.strip("[]").lower()
    return bound not in _WILDCARD_HOSTS and name == bound


def cross_site_refusal(request: Request) -> str | None:
    """Why an abort request may come from another site, or ``None`` if it cannot."""
    if request.headers.get(ABORT_HEADER) != "1":
        return (
            f"Refused: an abort from the task page must carry the header '{ABORT_HEADER}: 1' "
            "(the page's Abort button sends it; a form on another site cannot)."
        )
    site = request.headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        return f"Refused: a cross-site abort request (Sec-Fetch-Site: {site[:40]})."
    origin = request.headers.get("origin")
    if origin is not None:
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin.lower() != own.lower():
            return f"Refused: an abort request from another origin ({origin[:100]})."
    return None


# --- handlers ------------------------------------------------------------------------


def _check_host(context: Context, request: Request) -> None:
    if not allowed_host(request.headers.get("host"), context.config.host):
        raise ApiError(
            403,
            "The task pages answer only to an IP address, localhost, or the host name "
            "the server was bound to; open this page by one of those (this guards "
            "against DNS rebinding).",
        )


async def index(context: Context, request: Request, project: str) -> Response:
    _check_host(context, request)
    tasks, total = recent_tasks(context.store)
    return _html(render_index(tasks, total, sorted(context.engine.templates)))


async def task_page(context: Context, request: Request, project: str) -> Response:
    _check_host(context, request)
    view = task_view(context.store, request.path_params["task_id"])
    if view is None:
        return _html(render_not_found(), 404)
    template = context.engine.templates.get(view.task.template)
    return _html(render_task(view, template, context.store.subtasks(view.task.id)))


async def events(context: Context, request: Request, project: str) -> Response:
    _check_host(context, request)
    task_id = request.path_params["task_id"]
    if context.store.task(task_id) is None:
        raise ApiError(404, f"No task with id {task_id[:100]!r} exists on this server.")
    after = _position(request.headers.get("last-event-id"), "Last-Event-ID")
    if after is None:
        after = _position(request.query_params.get("after"), "after")
    return feed(context, task_id=task_id, after=after)


async def abort(context: Context, request: Request, project: str) -> Response:
    _check_host(context, request)
    refusal = cross_site_refusal(request)
    if refusal is not None:
        return PlainTextResponse(refusal, 403)
    task_id = request.path_params["task_id"]
    task = context.store.task(task_id)
    if task is None:
        raise ApiError(404, f"No task with id {task_id[:100]!r} exists on this server.")
    context.engine.abort(task_id, task.project, ABORT_REASON)
    return PlainTextResponse("aborted")


async def asset(context: Context, request: Request, project: str) -> Response:
    name = request.path_params["name"]
    media_type = ASSETS.get(name)
    if media_type is None:
        return PlainTextResponse("Not Found", 404)
    return Response(
        _asset_text(name),
        media_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@functools.cache
def _asset_text(name: str) -> str:
    """An asset's text, read once from the package's ``_assets`` directory."""
    return (resources.files("requence_task.local") / "_assets" / name).read_text(encoding="utf-8")


# --- HTML ----------------------------------------------------------------------------


def render_index(tasks: list[TaskRow], total: int, templates: list[str]) -> str:
    """The list page: the newest tasks, their status, template, name and link."""
    if tasks:
        rows = "".join(
            "<tr>"
            f"<td>{_time(t.created_at)}</td>"
            f"<td>{_list_status(t)}</td>"
            f'<td class="template">{_e(t.template)}</td>'
            f'<td class="name">{_e(t.name or "")}</td>'
            f'<td class="project">{_e(t.project)}</td>'
            f'<td><a class="task-link" href="{_e(_task_href(t.id))}"><code>{_e(t.id)}</code></a>'
            "</td></tr>"
            for t in tasks
        )
        listing = (
            '<table id="tasks"><thead><tr><th>Created (UTC)</th><th>Status</th>'
            "<th>Template</th><th>Name</th><th>Project</th><th>Task</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    else:
        listing = '<p id="no-tasks" class="muted">No tasks yet.</p>'
    shown = (
        f"The newest {len(tasks)} of {total} tasks"
        if total > len(tasks)
        else f"{total} task" + ("" if total == 1 else "s")
    )
    names = ", ".join(_e(n) for n in templates) or "none"
    body = (
        '<main id="index">'
        "<h1>Recent tasks</h1>"
        f'<p class="muted">{shown}, newest first, of every project. '
        f'<a href="{INDEX_PATH}">Refresh</a></p>'
        f"{listing}"
        f'<p class="muted">Templates on this server: {names}</p>'
        "</main>"
    )
    return _document("Recent tasks · local Requence", body)


def render_task(view: TaskView, template: Template | None, subtasks: Sequence[TaskRow] = ()) -> str:
    """A task's page as it stands; the script updates it from the event stream.

    ``template`` is the task's template (``None``: no longer on this server, so
    no graph), ``subtasks`` the sub-tasks the task started (:meth:`Store.subtasks`).
    """
    task = view.task
    nodes = "".join(_node_row(node) for node in view.nodes.values())
    log = "".join(_log_entry(event, data) for event, data in view.log)
    events_url = _href(page_events_path(task.id))
    if view.position is not None:
        events_url += f"?after={view.position}"
    connection = "The task has ended." if view.ended else "Connecting…"
    if view.has_result:
        result = f'<pre id="task-result">{_e(_pretty(view.result))}</pre>'
    else:
        result = f'<pre id="task-result" class="pending">{_e(_no_result(view.outcome))}</pre>'
    older = view.update_count - len(view.log)
    title_name = f" \u201c{_e(task.name)}\u201d" if task.name else ""
    facts = [
        ("Task", f'<code id="task-id">{_e(task.id)}</code>'),
        (
            "Status",
            f"{_status_badge(view.status, 'task-status')} "
            f'<span id="task-reason">{_e(_reason_text(view))}</span>',
        ),
        ("Template", f'<span id="task-template">{_e(task.template)}</span>'),
        ("Name", f'<span id="task-name">{_e(task.name or "")}</span>'),
        ("Project", f'<span id="task-project">{_e(task.project)}</span>'),
        ("Branch", _e(task.branch)),
        ("Created", _time(task.created_at)),
    ]
    if task.parent_task_id is not None:
        facts.append(("Parent", _parent_link(task)))
    facts_html = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    body = (
        f'<main id="task" data-task-id="{_e(task.id)}" data-events-url="{_e(events_url)}" '
        f'data-abort-url="{_e(_href(page_abort_path(task.id)))}" '
        f'data-after="{view.position or 0}" data-ended="{"true" if view.ended else "false"}" '
        f'data-log-limit="{LOG_LIMIT}">'
        f"<h1>Task {_e(task.template)}{title_name}</h1>"
        f'<dl class="facts">{facts_html}</dl>'
        '<p class="controls">'
        f'<button id="abort" type="button"{" hidden" if view.ended else ""}>Abort</button> '
        '<span id="abort-message" role="status"></span> '
        f'<span id="connection" class="muted" role="status">{connection}</span></p>'
        f'<section><h2>Input</h2><pre id="task-input">{_e(_pretty(task.input))}</pre></section>'
        f"{_graph_section(view, template, subtasks)}"
        "<section><h2>Nodes</h2>"
        '<table id="nodes"><thead><tr><th>Node</th><th>State</th><th>Updates</th>'
        f'<th>Latest data or error</th></tr></thead><tbody id="nodes-body">{nodes}</tbody>'
        "</table>"
        f'<p id="no-nodes" class="muted"{" hidden" if view.nodes else ""}>'
        "No node has started yet.</p></section>"
        f"<section><h2>Result</h2>{result}</section>"
        f"{_files_section(view)}"
        "<section><h2>Updates</h2>"
        f'<p class="muted">The latest {LOG_LIMIT} at most, oldest first'
        f"{f'; {older} older ones are not listed' if older > 0 else ''}.</p>"
        f'<ol id="log">{log}</ol></section>'
        "</main>"
    )
    return _document(f"{task.template} · task {task.id} · local Requence", body, script=True)


def _parent_link(task: TaskRow) -> str:
    parent = task.parent_task_id or ""
    node = f" (its node {_e(task.parent_node)})" if task.parent_node else ""
    root = ""
    if task.root_task_id is not None and task.root_task_id != parent:
        root = (
            f'; root task <a id="task-root" href="{_e(_task_href(task.root_task_id))}">'
            f"<code>{_e(task.root_task_id)}</code></a>"
        )
    return (
        f'<a id="task-parent" href="{_e(_task_href(parent))}"><code>{_e(parent)}</code></a>'
        f"{node}{root}"
    )


def _graph_section(view: TaskView, template: Template | None, subtasks: Sequence[TaskRow]) -> str:
    """The template drawn as a graph, each node in its state, and the sub-tasks' links."""
    task = view.task
    if template is None:
        return (
            '<section><h2>Graph</h2><p id="no-graph" class="muted">'
            f"The template {_e(task.template)} is no longer defined on this server, "
            "so its graph cannot be drawn.</p></section>"
        )
    states = {
        node.alias: graph_state(
            view.nodes[node.alias].state if node.alias in view.nodes else None, view.ended
        )
        for node in template.order
    }
    links: dict[str, str] = {}
    items = []
    for sub in subtasks:  # oldest first: a node's newest sub-task wins
        if sub.parent_node is not None:
            links[sub.parent_node] = _task_href(sub.id)
        items.append(
            f'<li><a class="subtask-link" data-node="{_e(sub.parent_node or "")}" '
            f'href="{_e(_task_href(sub.id))}">{_e(sub.parent_node or "?")}: '
            f"{_e(sub.template)} <code>{_e(sub.id)}</code></a> {_status_badge(sub.status)}</li>"
        )
    listing = (
        f'<div id="subtasks-box"{"" if items else " hidden"}><p class="muted">Sub-tasks:</p>'
        f'<ul id="subtasks">{"".join(items)}</ul></div>'
    )
    exit_text = f"Ended through the exit {_e(task.exit)}." if task.exit else ""
    continuous = (
        '<p id="graph-continuous" class="muted">A continuous template: its task does not '
        "end when its nodes are done, but runs until it is aborted"
        f"{' or reaches an exit' if template.exits else ''}.</p>"
        if template.continuous
        else ""
    )
    svg = render_graph(template, states, taken_exit=task.exit, subtask_links=links)
    legend = (
        '<p class="muted graph-legend">Columns by depth, left to right. '
        '<span class="legend-onfail">Dashed red</span>: on fail; '
        '<span class="legend-exit">dotted</span>: to an exit; labels name outputs. '
        f"Node states: waiting, running, deferred, ended, error, aborted, stopped, "
        f"{state_text('unreached')}.</p>"
    )
    return (
        '<section id="graph"><h2>Graph</h2>'
        f'<div class="graph-scroll">{svg}</div>'
        f'<p id="task-exit">{exit_text}</p>'
        f"{continuous}{legend}{listing}</section>"
    )


def task_files(view: TaskView) -> list[tuple[str, str, str, str, str]]:
    """``(where, kind, type, size, url)`` of every file, stream and claim check that
    the task's input, its nodes' latest data and its result refer to."""
    found: list[tuple[str, str, str, str, str]] = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, key_path(where, index))
        elif isinstance(value, dict):
            tag = value.get(REFERENCE_TAG)
            url = value.get("url")
            if tag in (TAG_FILE, TAG_STREAM, TAG_CLAIM_CHECK) and isinstance(url, str):
                size = value.get("size")
                kind = {TAG_FILE: "file", TAG_STREAM: "stream", TAG_CLAIM_CHECK: "claim check"}
                mime = value.get("mime") if tag != TAG_CLAIM_CHECK else "application/json"
                found.append(
                    (
                        where,
                        kind[str(tag)],
                        str(mime),
                        human_size(size) if isinstance(size, int) else "size unknown",
                        url,
                    )
                )
                return
            for key, item in value.items():
                walk(item, key_path(where, str(key)))

    walk(view.task.input, "input")
    for alias, node in view.nodes.items():
        if node.has_data:
            walk(node.data, key_path("nodes", alias))
    if view.has_result:
        walk(view.result, "result")
    return found


def _files_section(view: TaskView) -> str:
    rows = "".join(
        f"<tr><td><code>{_e(where)}</code></td><td>{_e(kind)}</td><td><code>{_e(mime)}</code>"
        f'</td><td>{_e(size)}</td><td><a href="{_e(url)}" download>download</a></td></tr>'
        for where, kind, mime, size, url in task_files(view)
    )
    if not rows:
        return '<section><h2>Files</h2><p id="no-files" class="muted">No files.</p></section>'
    return (
        '<section><h2>Files</h2><table id="files"><thead><tr><th>Where</th><th>Kind</th>'
        f"<th>Type</th><th>Size</th><th></th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def render_not_found() -> str:
    body = (
        '<main id="not-found"><h1>No such task</h1>'
        "<p>This server has no task with that id: it may never have existed here, or "
        "cleanup removed it after its retention. "
        f'<a href="{INDEX_PATH}">Recent tasks</a></p></main>'
    )
    return _document("No such task · local Requence", body)


def _document(title: str, body: str, *, script: bool = False) -> str:
    scripts = f'<script src="{asset_path(SCRIPT)}" defer></script>' if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title>"
        f'<link rel="icon" href="data:,"><link rel="stylesheet" href="{asset_path(STYLESHEET)}">'
        f"{scripts}</head><body>"
        f'<header><a href="{INDEX_PATH}">Local Requence</a></header>'
        f"{body}</body></html>"
    )


def _node_row(node: NodeView) -> str:
    def part(tag: str, cls: str, text: str | None) -> str:
        hidden = "" if text is not None else " hidden"
        return f'<{tag} class="{cls}"{hidden}>{_e(text or "")}</{tag}>'

    reason = _defer_text(node.reason) if node.deferred else None
    return (
        f'<tr class="node" data-alias="{_e(node.alias)}" data-state="{_e(node.state)}">'
        f'<td class="node-alias">{_e(node.alias)}</td>'
        f'<td class="node-state">{_e(node.state)}</td>'
        f'<td class="node-updates">{node.updates}</td>'
        '<td class="node-detail">'
        + part("p", "node-reason", reason)
        + part("pre", "node-data", _pretty(node.data) if node.has_data else None)
        + part("pre", "node-error", node.error)
        + "</td></tr>"
    )


def _log_entry(event: Event, data: dict[str, Any]) -> str:
    stamp = data.get("timestamp")
    alias = _alias(data)
    summary = _summary(event.type, data)
    return (
        "<li>"
        f'<span class="log-position">#{event.position}</span> '
        f'<time class="log-time">{_e(stamp[11:23] if isinstance(stamp, str) else "")}</time> '
        f'<span class="log-type">{_e(event.type)}</span> '
        + (f'<span class="log-node">{_e(alias)}</span> ' if alias is not None else "")
        + (f'<code class="log-summary">{_e(summary)}</code> ' if summary else "")
        + "</li>"
    )


def _summary(kind: str, data: dict[str, Any]) -> str:
    """One line about an update, as the script writes it too."""
    if kind == TASK_START:
        return "input " + _compact(data.get("input"))
    if kind == NODE_UPDATE:
        output = data.get("output")
        prefix = f"output {output}: " if isinstance(output, str) else ""
        return prefix + _compact(data.get("data"))
    if kind == TASK_END:
        return "result " + _compact(data.get("result"))
    if kind == NODE_ERROR:
        return _text(data.get("error")) or ""
    if kind in (NODE_DEFER, TASK_ERROR, TASK_ABORTED):
        return _text(data.get("reason")) or ""
    return ""


def _status_badge(status: str, element_id: str | None = None) -> str:
    id_attr = f' id="{element_id}"' if element_id else ""
    css = "".join(c for c in status.lower() if c.isalnum() or c == "_")
    return f'<span{id_attr} class="status status-{css}">{_e(status)}</span>'


REJECTED = "input rejected"
"""The list page's word for a task still IDLE whose input finalize refused."""


def _reason_text(view: TaskView) -> str:
    if view.status == IDLE and view.reason:
        return f"{REJECTED}: {view.reason}"
    return view.reason or ""


def _list_status(task: TaskRow) -> str:
    """A task's status on the list page: ``input rejected`` and why, for a task
    still IDLE whose input was refused at finalize (its ``status_text``)."""
    if task.status != IDLE or not task.status_text:
        return _status_badge(task.status)
    return (
        f'<span class="status status-rejected" title="IDLE">{REJECTED}</span>'
        f'<div class="status-text">{_e(task.status_text)}</div>'
    )


def _no_result(status: str) -> str:
    if status == FAILED:
        return "No result: the task failed."
    if status == STOPPED:
        return "No result: the task was aborted."
    if status in ENDED_STATUSES:
        return "No result."
    return "Not yet: the task has not ended."


def _defer_text(reason: str | None) -> str:
    return "deferred: " + (reason if reason else "no reason given")


# --- small helpers ---------------------------------------------------------------


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _html(text: str, status: int = 200) -> Response:
    # A node may produce a lone surrogate, which UTF-8 cannot carry: show "?".
    return Response(
        text.encode("utf-8", "replace"),
        status,
        media_type="text/html; charset=utf-8",
        headers=_SECURITY_HEADERS,
    )


def _href(path: str) -> str:
    """A path of ours as a URL in a page (a task id may hold any character)."""
    return quote(path, safe="/")


def _task_href(task_id: str) -> str:
    return _href(show_path(task_id))


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _compact(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= _SUMMARY_LENGTH else text[: _SUMMARY_LENGTH - 1] + "…"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _alias(data: dict[str, Any]) -> str | None:
    node = data.get("node")
    alias = node.get("alias") if isinstance(node, dict) else None
    return alias if isinstance(alias, str) else None


def _terminal_status(kind: str, data: dict[str, Any]) -> str:
    if data.get("requireAck") is True:
        return AWAITING_DELIVERY
    return {TASK_END: SUCCESSFUL, TASK_ERROR: FAILED}.get(kind, STOPPED)


def _time(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return (
        f'<time datetime="{moment.isoformat(timespec="seconds")}">'
        f"{moment.strftime('%Y-%m-%d %H:%M:%S')}</time>"
    )


def _host_name(host: str) -> str:
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _position(value: str | None, what: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isascii() or not value.isdigit() or int(value) >= 2**63:
        raise ApiError(400, f"'{what}' must be a non-negative integer below 2**63.")
    return int(value)


def _task_events(store: Store, task_id: str) -> list[Event]:
    events: list[Event] = []
    after: int | None = None
    while True:
        page = store.task_events(task_id, after=after, since=None, limit=_EVENTS_PAGE)
        events.extend(page)
        if len(page) < _EVENTS_PAGE:
            return events
        after = page[-1].position
