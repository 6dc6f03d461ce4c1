"""The task page and the list page, end to end in headless Chromium.

Each test starts tasks on a real local Requence, opens the page that the
server hands out as ``urls.show`` in a real browser, and checks what a person
would see: updates arriving while the task runs, the result at the end, the
Abort button aborting, the list page linking to the task, and task data that
contains markup shown as text.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from requence_task.local import LocalRequence

from ..conftest import Api
from .conftest import PAYLOAD, WAIT_MS, gate, new_gate

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips, or fails under CI, and says why
    expect = None


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = WAIT_MS / 1000) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def node_data(api: Api, task_id: str, alias: str) -> Any:
    """The latest data of a node, as the API reports it (``None`` before any)."""
    found = [n["data"] for n in api.task(task_id)["nodesData"] if n["alias"] == alias]
    return found[0] if found else None


def show_url(server: LocalRequence, task_id: str) -> str:
    return f"{server.base_url}/tasks/{task_id}"


def node_row(page: Any, alias: str) -> Any:
    return page.locator(f'#nodes-body tr[data-alias="{alias}"]')


def test_page_shows_updates_as_they_come_and_then_the_result(
    page: Any, page_api: Api, page_server: LocalRequence
) -> None:
    first, second = new_gate(), new_gate()
    task_id = page_api.start("ticker", {"gates": [first, second], "note": "n"}, name="live run")
    wait_until(lambda: node_data(page_api, task_id, "ticker"), "the first tick")

    page.goto(show_url(page_server, task_id))
    page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads
    status, log = page.locator("#task-status"), page.locator("#log")
    ticker = node_row(page, "ticker")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    expect(status).to_have_text("RUNNING", timeout=WAIT_MS)
    expect(page.locator("#task-template")).to_have_text("ticker", timeout=WAIT_MS)
    expect(page.locator("#task-name")).to_have_text("live run", timeout=WAIT_MS)
    assert json.loads(page.locator("#task-input").text_content()) == {
        "gates": [first, second],
        "note": "n",
    }
    expect(node_row(page, "setup").locator(".node-state")).to_have_text("ended", timeout=WAIT_MS)
    expect(ticker.locator(".node-state")).to_have_text("updated", timeout=WAIT_MS)
    assert json.loads(ticker.locator(".node-data").text_content()) == {"tick": 1, "note": "n"}
    expect(page.locator("#task-result")).to_have_text(
        "Not yet: the task has not ended.", timeout=WAIT_MS
    )
    # Tick 2 cannot have happened yet: the node waits for the first gate.
    assert node_data(page_api, task_id, "ticker") == {"tick": 1, "note": "n"}
    assert '"tick":2' not in log.text_content()

    gate(first).set()
    # Tick 2 shows while the task still runs (it now waits for the second gate).
    expect(log).to_contain_text('{"tick":2,"note":"n"}', timeout=WAIT_MS)
    expect(ticker.locator(".node-updates")).to_have_text("2", timeout=WAIT_MS)
    assert json.loads(ticker.locator(".node-data").text_content()) == {"tick": 2, "note": "n"}
    expect(status).to_have_text("RUNNING", timeout=WAIT_MS)
    assert page_api.task(task_id)["status"] == "RUNNING"

    gate(second).set()
    for tick in (3, 4, 5):
        expect(log).to_contain_text(f'{{"tick":{tick},', timeout=WAIT_MS)
    expect(status).to_have_text("SUCCESSFUL", timeout=WAIT_MS)
    expect(page.locator("#connection")).to_have_attribute("data-state", "ended", timeout=WAIT_MS)
    assert json.loads(page.locator("#task-result").text_content()) == {"ticks": 5}
    expect(ticker.locator(".node-state")).to_have_text("ended", timeout=WAIT_MS)
    expect(ticker.locator(".node-updates")).to_have_text("5", timeout=WAIT_MS)
    expect(page.locator("#abort")).to_be_hidden(timeout=WAIT_MS)
    assert page.evaluate("window.__sameDocument") is True

    # Every update exactly once, in order: those rendered with the page, then
    # those that came over the stream.
    listed = [int(t.lstrip("#")) for t in log.locator(".log-position").all_text_contents()]
    assert listed == [position for position, _, _ in page_api.watch(task_id)]
    assert page_api.task(task_id)["result"] == {"ticks": 5}


def test_abort_button_aborts_the_task(page: Any, page_api: Api, page_server: LocalRequence) -> None:
    task_id = page_api.start("approval", {"why": "needs a human"})
    page.goto(show_url(page_server, task_id))
    row, abort = node_row(page, "approval"), page.locator("#abort")
    expect(row.locator(".node-state")).to_have_text("deferred", timeout=WAIT_MS)
    expect(row.locator(".node-reason")).to_have_text("deferred: needs a human", timeout=WAIT_MS)
    expect(abort).to_be_visible(timeout=WAIT_MS)

    # Cancelled in the confirmation: nothing is sent.
    page.once("dialog", lambda dialog: dialog.dismiss())
    abort.click(timeout=WAIT_MS)
    expect(abort).to_be_enabled(timeout=WAIT_MS)
    assert page.locator("#abort-message").text_content() == ""
    assert page_api.task(task_id)["status"] == "RUNNING"

    page.once("dialog", lambda dialog: dialog.accept())
    abort.click(timeout=WAIT_MS)
    expect(page.locator("#task-status")).to_have_text("STOPPED", timeout=WAIT_MS)
    expect(page.locator("#task-reason")).to_have_text("aborted from the task page", timeout=WAIT_MS)
    expect(page.locator("#abort-message")).to_have_text("Abort requested.", timeout=WAIT_MS)
    expect(page.locator("#task-result")).to_have_text(
        "No result: the task was aborted.", timeout=WAIT_MS
    )
    expect(abort).to_be_hidden(timeout=WAIT_MS)
    info = page_api.task(task_id)
    assert (info["status"], info["statusText"]) == ("STOPPED", "aborted from the task page")
    assert page_api.watch(task_id)[-1][1] == "taskAborted"

    page.reload()  # as rendered by the server, it says the same
    expect(page.locator("#task-status")).to_have_text("STOPPED", timeout=WAIT_MS)
    expect(page.locator("#task-reason")).to_have_text("aborted from the task page", timeout=WAIT_MS)
    expect(page.locator("#connection")).to_have_attribute("data-state", "ended", timeout=WAIT_MS)
    expect(abort).to_be_hidden(timeout=WAIT_MS)


def test_abort_settles_a_waiting_node_live_and_on_reload(
    page: Any, page_api: Api, page_server: LocalRequence
) -> None:
    # The script follows the client's fold as the server does: a node still
    # active when its task is aborted shows as aborted, live and rendered.
    task_id = page_api.start("approval", {"why": "wait"})
    page.goto(show_url(page_server, task_id))
    row = node_row(page, "approval")
    expect(row.locator(".node-state")).to_have_text("deferred", timeout=WAIT_MS)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    assert page_api.post(f"/task/abort/{task_id}", data="stop").status_code == 200
    expect(page.locator("#task-status")).to_have_text("STOPPED", timeout=WAIT_MS)
    expect(row.locator(".node-state")).to_have_text("aborted", timeout=WAIT_MS)
    page.reload()
    expect(row.locator(".node-state")).to_have_text("aborted", timeout=WAIT_MS)


def test_list_page_lists_recent_tasks_and_links_to_their_pages(
    page: Any, page_api: Api, page_server: LocalRequence
) -> None:
    older = page_api.start("quick", None, name="the older one")
    newer = page_api.start("quick", None, name="the newer one")
    for task_id in (older, newer):
        page_api.wait_status(task_id, "SUCCESSFUL")

    page.goto(page_server.base_url + "/")
    links = page.locator("#tasks a.task-link")
    expect(links.first).to_be_visible(timeout=WAIT_MS)
    ids = links.all_text_contents()
    assert ids.index(newer) < ids.index(older)  # newest first
    row = page.locator("#tasks tbody tr", has_text=newer)
    expect(row.locator(".status")).to_have_text("SUCCESSFUL", timeout=WAIT_MS)
    expect(row.locator(".template")).to_have_text("quick", timeout=WAIT_MS)
    expect(row.locator(".name")).to_have_text("the newer one", timeout=WAIT_MS)

    row.locator("a.task-link").click(timeout=WAIT_MS)
    page.wait_for_url(show_url(page_server, newer), timeout=WAIT_MS)
    expect(page.locator("#task-id")).to_have_text(newer, timeout=WAIT_MS)
    assert json.loads(page.locator("#task-result").text_content()) == {"done": True}


def _assert_shown_as_text(page: Any, task_id: str, gate_key: str) -> None:
    # Markup in the data would have made elements (scripts and handlers would
    # also be stopped by the Content-Security-Policy, so count the elements).
    assert page.locator("main img, main script, main b").count() == 0
    assert page.evaluate("window.__xss") is None
    assert page.locator("#task-name").text_content() == PAYLOAD
    assert PAYLOAD in page.locator("h1").text_content()
    assert json.loads(page.locator("#task-input").text_content()) == {
        "gate": gate_key,
        "payload": PAYLOAD,
    }
    flaky, asker = node_row(page, "flaky"), node_row(page, "asker")
    assert flaky.locator(".node-state").text_content() == "error"
    assert flaky.locator(".node-error").text_content() == PAYLOAD
    assert asker.locator(".node-reason").text_content() == "deferred: " + PAYLOAD
    assert json.loads(asker.locator(".node-data").text_content()) == {"html": PAYLOAD}
    assert json.loads(page.locator("#task-result").text_content()) == {
        "html": PAYLOAD,
        "name": PAYLOAD,
    }
    errors = page.locator("#log .log-summary", has_text="onerror").all_text_contents()
    assert PAYLOAD in errors  # the nodeError line, and the nodeDefer line


def test_markup_in_task_data_is_shown_as_text(
    page: Any, page_api: Api, page_server: LocalRequence
) -> None:
    key = new_gate()
    task_id = page_api.start("marked-up", {"gate": key, "payload": PAYLOAD}, name=PAYLOAD)
    page.goto(show_url(page_server, task_id))
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    gate(key).set()  # everything after this point reaches the page over the stream
    expect(page.locator("#task-status")).to_have_text("SUCCESSFUL", timeout=WAIT_MS)
    _assert_shown_as_text(page, task_id, key)

    page.reload()  # the same, as rendered by the server
    expect(page.locator("#task-status")).to_have_text("SUCCESSFUL", timeout=WAIT_MS)
    _assert_shown_as_text(page, task_id, key)

    page.goto(page_server.base_url + "/")
    row = page.locator("#tasks tbody tr", has_text=task_id)
    assert row.locator(".name").text_content() == PAYLOAD
    assert page.locator("main img, main script, main b").count() == 0
    assert page.evaluate("window.__xss") is None


@pytest.fixture()
def other_site() -> Iterator[dict[str, str]]:
    """Another origin on loopback (another port): pages served at ``{base}/{name}``.

    On loopback, so that only the page's own defences are tested, not the
    browser's rules about public sites reaching private addresses.
    """
    pages: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path.lstrip("/"), "").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    pages["base"] = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield pages
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_another_site_cannot_abort(
    page: Any,
    page_api: Api,
    page_server: LocalRequence,
    page_errors: list[str],
    other_site: dict[str, str],
) -> None:
    task_id = page_api.start("approval", {"why": "keep running"})
    page_api.wait_status(task_id, "RUNNING")
    abort_url = f"{show_url(page_server, task_id)}/abort"
    other_site["form"] = (
        f'<form method="post" action="{abort_url}"><input name="a" value="1"></form>'
        "<script>document.forms[0].submit()</script>"
    )
    other_site["blank"] = "<p>another site</p>"

    # A form that posts to the abort URL: it cannot add the page's header.
    page.goto(other_site["base"] + "/form")
    page.wait_for_url(abort_url, timeout=WAIT_MS)
    expect(page.locator("body")).to_contain_text("Refused", timeout=WAIT_MS)
    assert page_api.task(task_id)["status"] == "RUNNING"

    page.goto(other_site["base"] + "/blank")
    # A script's simple request (no custom header) goes out, and is refused.
    opaque = page.evaluate(
        "async (url) => (await fetch(url, {method: 'POST', mode: 'no-cors'})).type", abort_url
    )
    assert opaque == "opaque"
    assert page_api.task(task_id)["status"] == "RUNNING"
    # With the header, the browser asks first (CORS preflight), the server does not
    # allow it, and the request itself never goes out.
    outcome = page.evaluate(
        """async (url) => {
            try {
                await fetch(url, {method: "POST", headers: {"X-Requence-Abort": "1"}});
                return "sent";
            } catch (err) {
                return "blocked";
            }
        }""",
        abort_url,
    )
    assert outcome == "blocked"
    assert page_api.task(task_id)["status"] == "RUNNING"
    # The browser logged those refusals; they are what this test wants.
    assert page_errors
    page_errors.clear()
    page_api.post(f"/task/abort/{task_id}").raise_for_status()
