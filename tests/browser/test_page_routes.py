"""The routes behind the task page and the list page, over plain HTTP.

The browser tests (test_task_page.py) show the pages work; these pin each
route's answers: 404s, the event stream's type, replay and cursor, the
abort's refusal of cross-site requests, the Host guard, escaping, and the
list's order and limit.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests
import sseclient

from requence_task._protocol import IDLE, RUNNING, SUCCESSFUL, TASK_END, TASK_START
from requence_task.local import LocalRequence, Template, service
from requence_task.local._pages import (
    ABORT_HEADER,
    ABORT_REASON,
    LOG_LIMIT,
    RECENT_LIMIT,
    allowed_host,
    task_view,
)
from requence_task.local._store import Store

from ..conftest import TIMEOUT, Api
from .conftest import PAYLOAD, gate, new_gate

SAME_SITE = {ABORT_HEADER: "1"}


def events_of(response: requests.Response) -> list[tuple[int, str, dict[str, Any]]]:
    try:
        return [
            (int(e.id), e.event, json.loads(e.data)) for e in sseclient.SSEClient(response).events()
        ]
    finally:
        response.close()


def page_events(server: LocalRequence, task_id: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("timeout", TIMEOUT)
    return requests.get(f"{server.base_url}/tasks/{task_id}/events", stream=True, **kwargs)


def abort(server: LocalRequence, task_id: str, **headers: str) -> requests.Response:
    return requests.post(
        f"{server.base_url}/tasks/{task_id}/abort", headers=headers, timeout=TIMEOUT
    )


# --- unknown tasks, methods --------------------------------------------------------


def test_unknown_task_is_404_on_every_page_route(page_server: LocalRequence) -> None:
    unknown = str(uuid.uuid4())
    page = requests.get(f"{page_server.base_url}/tasks/{unknown}", timeout=TIMEOUT)
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "No such task" in page.text
    assert page_events(page_server, unknown).status_code == 404
    assert abort(page_server, unknown, **SAME_SITE).status_code == 404
    asset = requests.get(f"{page_server.base_url}/assets/nope.js", timeout=TIMEOUT)
    assert asset.status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/", "GET"),
        ("POST", "/tasks/{id}/events", "GET"),
        ("GET", "/tasks/{id}/abort", "POST"),
        ("PUT", "/tasks/{id}/abort", "POST"),
        ("OPTIONS", "/tasks/{id}/abort", "POST"),  # no CORS preflight is ever allowed
    ],
)
def test_wrong_method_is_405(
    page_server: LocalRequence, page_api: Api, method: str, path: str, allowed: str
) -> None:
    task_id = page_api.start("quick")
    url = page_server.base_url + path.format(id=task_id)
    response = requests.request(method, url, headers=SAME_SITE, timeout=TIMEOUT)
    assert response.status_code == 405, (response.status_code, response.text)
    assert allowed in response.headers.get("allow", "")
    assert "access-control-allow-origin" not in response.headers
    assert page_api.wait_status(task_id, SUCCESSFUL)["result"] == {"done": True}


# --- the event stream -----------------------------------------------------------------


def test_events_replay_the_whole_stream_of_an_ended_task(
    page_server: LocalRequence, page_api: Api
) -> None:
    task_id = page_api.start("quick")
    page_api.wait_status(task_id, SUCCESSFUL)
    response = page_events(page_server, task_id)  # no token
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    replayed = events_of(response)
    assert replayed == page_api.watch(task_id)  # the API's stream, from the first update
    assert replayed[0][1] == TASK_START
    assert replayed[-1][1] == TASK_END


def test_events_start_after_a_position_and_prefer_last_event_id(
    page_server: LocalRequence, page_api: Api
) -> None:
    task_id = page_api.start("quick")
    page_api.wait_status(task_id, SUCCESSFUL)
    full = page_api.watch(task_id)
    second = full[1][0]
    after = events_of(page_events(page_server, task_id, params={"after": second}))
    assert after == full[2:]
    # EventSource sends Last-Event-ID when it reconnects: it wins over ?after.
    third = full[2][0]
    resumed = events_of(
        page_events(
            page_server, task_id, params={"after": second}, headers={"Last-Event-ID": str(third)}
        )
    )
    assert resumed == full[3:]
    assert events_of(page_events(page_server, task_id, params={"after": full[-1][0]})) == []


@pytest.mark.parametrize("bad", ["-1", "x", "1.5", str(2**63), "١"])
def test_events_refuse_a_bad_cursor(page_server: LocalRequence, page_api: Api, bad: str) -> None:
    task_id = page_api.start("quick")
    response = page_events(page_server, task_id, params={"after": bad})
    assert response.status_code == 400, response.text
    assert "non-negative integer" in response.text
    if bad.isascii():  # a header carries Latin-1 only
        response = page_events(page_server, task_id, headers={"Last-Event-ID": bad})
        assert response.status_code == 400, response.text


def test_events_follow_a_running_task_until_it_ends(
    page_server: LocalRequence, page_api: Api
) -> None:
    key = new_gate()
    task_id = page_api.start("ticker", {"gates": [key]})
    response = page_events(page_server, task_id)
    assert response.status_code == 200
    try:
        stream = sseclient.SSEClient(response).events()
        seen = []
        for event in stream:
            seen.append((event.event, json.loads(event.data).get("data")))
            if seen[-1] == ("nodeUpdate", {"tick": 1, "note": None}):
                break
        # The task cannot go on before the gate opens, yet the stream is still open.
        assert page_api.task(task_id)["status"] == RUNNING
        gate(key).set()
        rest = [(e.event, json.loads(e.data).get("data")) for e in stream]
    finally:
        response.close()
    ticks = [data["tick"] for kind, data in rest if kind == "nodeUpdate"]
    assert ticks == [2, 3, 4]
    assert rest[-1][0] == TASK_END


# --- abort ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "must carry the header"),  # a plain HTML form
        ({ABORT_HEADER: "yes"}, "must carry the header"),
        ({ABORT_HEADER: "1", "Sec-Fetch-Site": "cross-site"}, "cross-site"),
        ({ABORT_HEADER: "1", "Sec-Fetch-Site": "same-site"}, "cross-site"),
        ({ABORT_HEADER: "1", "Origin": "http://attacker.test"}, "another origin"),
        ({ABORT_HEADER: "1", "Origin": "null"}, "another origin"),
    ],
)
def test_abort_refuses_a_cross_site_request(
    page_server: LocalRequence, page_api: Api, headers: dict[str, str], why: str
) -> None:
    task_id = page_api.start("approval", {"why": "stay"})
    page_api.wait_status(task_id, RUNNING)
    response = abort(page_server, task_id, **headers)
    assert response.status_code == 403, response.text
    assert why in response.text
    assert page_api.task(task_id)["status"] == RUNNING
    page_api.post(f"/task/abort/{task_id}").raise_for_status()


def test_abort_from_the_page_aborts_like_the_api(page_server: LocalRequence, page_api: Api) -> None:
    task_id = page_api.start("approval", {"why": "stay"})
    page_api.wait_status(task_id, RUNNING)
    own_origin = page_server.base_url
    response = abort(
        page_server, task_id, **SAME_SITE, Origin=own_origin, **{"Sec-Fetch-Site": "same-origin"}
    )
    assert response.status_code == 200, response.text
    info = page_api.task(task_id)
    assert (info["status"], info["statusText"]) == ("STOPPED", ABORT_REASON)
    kind, data = page_api.watch(task_id)[-1][1:]
    assert (kind, data["reason"]) == ("taskAborted", ABORT_REASON)
    # Once more: the task has ended, as the API says too.
    again = abort(page_server, task_id, **SAME_SITE)
    assert again.status_code == 409
    assert "already ended" in again.text


def test_abort_of_a_prepared_task_stops_it_before_it_runs(
    page_server: LocalRequence, page_api: Api
) -> None:
    prepared = page_api.prepare("quick")
    page = requests.get(f"{page_server.base_url}/tasks/{prepared['taskId']}", timeout=TIMEOUT)
    assert page.status_code == 200
    assert f">{IDLE}<" in page.text
    assert '<button id="abort" type="button">' in page.text  # shown: it can still be aborted
    assert abort(page_server, prepared["taskId"], **SAME_SITE).status_code == 200
    assert page_api.finalize(prepared).status_code == 410


# --- the Host guard -----------------------------------------------------------------------


def test_pages_refuse_a_foreign_host_name(page_server: LocalRequence, page_api: Api) -> None:
    task_id = page_api.start("quick")
    port = page_server.port
    for path in ("/", f"/tasks/{task_id}", f"/tasks/{task_id}/events"):
        url = page_server.base_url + path
        foreign = requests.get(url, headers={"Host": f"attacker.test:{port}"}, timeout=TIMEOUT)
        assert foreign.status_code == 403, path
        assert "DNS rebinding" in foreign.text
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
            ok = requests.get(url, headers={"Host": host}, stream=True, timeout=TIMEOUT)
            ok.close()
            assert ok.status_code == 200, (path, host)
    refused = abort(page_server, task_id, **SAME_SITE, Host=f"attacker.test:{port}")
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("host", "bound", "allowed"),
    [
        ("127.0.0.1:8765", "127.0.0.1", True),
        ("localhost:8765", "127.0.0.1", True),
        ("LOCALHOST", "127.0.0.1", True),
        ("app.localhost:8765", "127.0.0.1", True),
        ("[::1]:8765", "::1", True),
        ("192.168.1.20:8765", "0.0.0.0", True),  # an address cannot be rebound
        ("devbox.lan:8765", "devbox.lan", True),  # the name it was bound to
        ("devbox.lan:8765", "127.0.0.1", False),
        ("devbox.lan:8765", "0.0.0.0", False),
        ("attacker.test", "127.0.0.1", False),
        ("localhost.attacker.test", "127.0.0.1", False),
        ("", "127.0.0.1", False),
        (None, "127.0.0.1", True),  # no Host: not a browser
    ],
)
def test_allowed_host(host: str | None, bound: str, allowed: bool) -> None:
    assert allowed_host(host, bound) is allowed


# --- what the pages contain ------------------------------------------------------------------


def test_task_page_escapes_data_and_forbids_inline_script(
    page_server: LocalRequence, page_api: Api
) -> None:
    key = new_gate()
    gate(key).set()
    task_id = page_api.start("marked-up", {"gate": key, "payload": PAYLOAD}, name=PAYLOAD)
    page_api.wait_status(task_id, SUCCESSFUL)
    page = requests.get(f"{page_server.base_url}/tasks/{task_id}", timeout=TIMEOUT)
    assert page.status_code == 200
    assert "<img" not in page.text
    assert "<b>" not in page.text
    assert page.text.count("<script") == 1  # the page's own, from /assets
    assert "&lt;img src=&quot;x&quot; onerror=&quot;window.__xss = 1&quot;&gt;" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    for name, kind in (("task-page.js", "text/javascript"), ("pages.css", "text/css")):
        asset = requests.get(f"{page_server.base_url}/assets/{name}", timeout=TIMEOUT)
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(kind)
    script = requests.get(f"{page_server.base_url}/assets/task-page.js", timeout=TIMEOUT).text
    assert "innerHTML" not in script
    assert "insertAdjacentHTML" not in script


def test_list_page_escapes_names_and_shows_the_newest_first(
    page_server: LocalRequence, page_api: Api
) -> None:
    first = page_api.start("quick", None, name=PAYLOAD)
    second = page_api.start("quick", None, name="second")
    listing = requests.get(page_server.base_url + "/", timeout=TIMEOUT)
    assert listing.status_code == 200
    assert listing.headers["content-type"].startswith("text/html")
    assert "content-security-policy" in listing.headers
    text = listing.text
    assert "<img" not in text
    assert "<script" not in text
    assert "&lt;img src=&quot;x&quot;" in text
    assert text.index(second) < text.index(first)
    assert f'href="/tasks/{first}"' in text


def test_list_page_shows_at_most_the_newest_hundred() -> None:
    with LocalRequence([Template("t", nodes=[service("n", lambda ctx: None)])]) as rq:
        api = Api(rq.access_token)
        try:
            ids = [api.prepare("t")["taskId"] for _ in range(RECENT_LIMIT + 2)]
            listing = requests.get(rq.base_url + "/", timeout=TIMEOUT).text
        finally:
            api.close()
    assert f"The newest {RECENT_LIMIT} of {RECENT_LIMIT + 2} tasks" in listing
    shown = [i for i in ids if i in listing]
    assert shown == ids[2:]  # the two oldest are left out


def test_list_page_of_an_empty_server() -> None:
    with LocalRequence([]) as rq:
        listing = requests.get(rq.base_url + "/", timeout=TIMEOUT)
    assert listing.status_code == 200
    assert "No tasks yet." in listing.text


def test_task_page_lists_only_the_latest_updates() -> None:
    # Straight on a store: a task with more updates than the page lists.
    store = Store(":memory:")
    try:
        store.insert_task("t1", "p", "tpl", "live", 1.0)
        node = {"node": {"alias": "n", "id": "x", "type": "service"}}
        store.append_event("t1", "p", "nodeStart", "n", node, 1.0)
        for i in range(LOG_LIMIT + 50):
            store.append_event("t1", "p", "nodeUpdate", "n", {**node, "data": i}, 1.0)
        view = task_view(store, "t1")
    finally:
        store.close()
    assert view is not None
    assert len(view.log) == LOG_LIMIT
    assert view.log[-1][1]["data"] == LOG_LIMIT + 49
    assert view.update_count == LOG_LIMIT + 51
    assert view.nodes["n"].updates == LOG_LIMIT + 50
    assert view.nodes["n"].data == LOG_LIMIT + 49


def test_task_view_takes_an_end_that_the_row_does_not_show_yet() -> None:
    # The engine stores the last update before it writes the end into the row;
    # a page read between the two shows the end all the same.
    store = Store(":memory:")
    try:
        store.insert_task("t1", "p", "tpl", "live", 1.0)
        store.set_status("t1", RUNNING)
        store.append_event("t1", "p", "taskEnd", None, {"result": {"x": 1}, "requireAck": True}, 2)
        view = task_view(store, "t1")
        assert view is not None
        assert (view.status, view.outcome, view.has_result) == (
            "AWAITING_DELIVERY",
            SUCCESSFUL,
            True,
        )
        assert view.result == {"x": 1}
        assert view.ended
        assert task_view(store, "nope") is None
    finally:
        store.close()


def test_task_view_takes_node_states_from_the_clients_fold() -> None:
    # The fold's rules (requence_task._fold), in the page's words: a failure
    # stays, an ended node changes no more, data does not end a wait, and the
    # task's end settles the nodes still active.
    store = Store(":memory:")

    def node(alias: str, **fields: Any) -> dict[str, Any]:
        return {"node": {"alias": alias, "id": f"id-{alias}", "type": "service"}, **fields}

    try:
        store.insert_task("t1", "p", "tpl", "live", 1.0)
        store.set_status("t1", RUNNING)
        for kind, alias, fields in (
            ("nodeStart", "quiet", {}),
            ("nodeStart", "busy", {}),
            ("nodeUpdate", "busy", {"data": 1}),
            ("nodeStart", "broken", {}),
            ("nodeError", "broken", {"error": "boom"}),
            ("nodeEnd", "broken", {}),
            ("nodeStart", "waiting", {}),
            ("nodeDefer", "waiting", {"reason": "a human"}),
            ("nodeUpdate", "waiting", {"data": 2}),
            ("nodeStart", "done", {}),
            ("nodeEnd", "done", {}),
            ("nodeStart", "done", {}),
        ):
            store.append_event("t1", "p", kind, alias, node(alias, **fields), 1.0)
        view = task_view(store, "t1")
        assert view is not None
        assert {alias: n.state for alias, n in view.nodes.items()} == {
            "quiet": "started",
            "busy": "updated",
            "broken": "error",
            "waiting": "deferred",
            "done": "ended",
        }
        store.append_event("t1", "p", "taskAborted", None, {"reason": "stop"}, 2.0)
        view = task_view(store, "t1")
        assert view is not None
        assert {alias: n.state for alias, n in view.nodes.items()} == {
            "quiet": "aborted",
            "busy": "aborted",
            "broken": "error",
            "waiting": "aborted",
            "done": "ended",
        }
        assert view.nodes["waiting"].reason == "a human"  # what it waited for still shows
    finally:
        store.close()
