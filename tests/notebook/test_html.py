"""``Task._repr_html_`` and ``TaskResult._repr_html_``: what a notebook shows."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from requence_task import (
    Client,
    NodeEndUpdate,
    Task,
    TaskAbortedError,
    TaskError,
    TaskFailedError,
    TaskResult,
)
from requence_task._token import decode_access_token
from requence_task.local import LocalRequence

from ..client.conftest import make_client, open_gate, wait_for_update, wait_until
from .conftest import HOSTILE, HOSTILE_ERROR, Page

ALLOWED_TAGS = {"div", "table", "thead", "tbody", "tr", "th", "td", "code", "span", "a"}


def assert_safe(markup: str) -> Page:
    """Only the view's own tags, no event handler, links only to http(s)."""
    page = Page(markup)
    assert {tag for tag, _ in page.tags} <= ALLOWED_TAGS
    for tag, attrs in page.tags:
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        if tag == "a":
            assert (attrs.get("href") or "").startswith(("http://", "https://"))
    return page


def test_a_running_task_shows_its_nodes_so_far(nb_client: Client, gates: Callable[[], str]) -> None:
    key = gates()
    task = Task("nb-gated-steps", input={"gate": key}, name="batch <7>", client=nb_client)
    wait_for_update(task, lambda u: isinstance(u, NodeEndUpdate) and u.node.alias == "first")
    wait_until(lambda: "wait" in Page(task._repr_html_()).nodes(), what="the node 'wait'")
    task.finalized(timeout=10)  # updates may outrun finalize's answer, which brings the URL

    page = assert_safe(task._repr_html_())
    assert page.row("template") == "nb-gated-steps"
    assert page.row("name") == "batch <7>"  # shown as text, escaped in the markup
    assert page.row("state") == "running"
    assert page.links == [(task.task_url(0), task.task_id(0))]
    nodes = page.nodes()
    assert nodes["first"] == ("ended", '{"n": 1}')
    assert nodes["wait"] == ("running", "")
    assert list(nodes) == ["first", "wait"]

    open_gate(key)
    task.result(timeout=30)
    page = assert_safe(task._repr_html_())
    assert page.row("state") == "succeeded"
    assert page.row("result") == f'{{"opened": "{key}"}}'
    assert page.nodes()["wait"] == ("ended", f'{{"opened": "{key}"}}')


def test_an_aborted_task_shows_the_node_the_abort_stopped_as_aborted(
    nb_client: Client, gates: Callable[[], str]
) -> None:
    key = gates()
    task = Task("nb-gated-steps", input={"gate": key}, client=nb_client)
    wait_for_update(task, lambda u: isinstance(u, NodeEndUpdate) and u.node.alias == "first")
    wait_until(lambda: "wait" in Page(task._repr_html_()).nodes(), what="the node 'wait'")
    assert Page(task._repr_html_()).nodes()["wait"] == ("running", "")
    task.abort("enough of that")
    with pytest.raises(TaskAbortedError):
        task.result(timeout=30)
    page = assert_safe(task._repr_html_())
    assert page.row("state") == "aborted: enough of that"
    assert page.nodes() == {"first": ("ended", '{"n": 1}'), "wait": ("aborted", "")}
    assert repr(task) == f"<requence_task.Task 'nb-gated-steps' id={task.task_id(0)} aborted>"


def test_the_view_and_repr_agree_on_the_end(nb_client: Client) -> None:
    succeeded = Task("steps", client=nb_client)
    succeeded.result(timeout=30)
    failed = Task("nb-fail", client=nb_client)
    with pytest.raises(TaskFailedError):
        failed.result(timeout=30)
    rejected = Task("greet", input={"age": 3}, client=nb_client)
    with pytest.raises(TaskError):
        rejected.result(timeout=30)
    for task, word in ((succeeded, "succeeded"), (failed, "failed"), (rejected, "rejected")):
        assert Page(task._repr_html_()).row("state").split(":")[0] == word
        assert repr(task).endswith(f" {word}>")
        assert "running" not in [state for state, _ in Page(task._repr_html_()).nodes().values()]


def test_rendering_never_waits_for_the_network(nb_server: LocalRequence) -> None:
    nb_server.faults.latency = 1.5  # every request takes 1.5 s to be answered
    with make_client(nb_server.access_token) as client:
        task = Task("steps", client=client)
        started = time.monotonic()
        page = assert_safe(task._repr_html_())
        assert time.monotonic() - started < 0.5
        assert page.row("state") == "creating"
        assert page.row("task") == "(not created yet)"
        assert page.links == []
        assert page.nodes() == {}
        nb_server.faults.latency = 0
        task.result(timeout=30)
        page = assert_safe(task._repr_html_())
        assert page.row("state") == "succeeded"
        assert list(page.nodes()) == ["a", "b", "c"]
        assert page.nodes()["b"] == ("ended", '{"b": 2}')  # the latest data of the node


def test_hostile_data_is_text_never_markup(nb_client: Client) -> None:
    task = Task("nb-hostile", input={"who": HOSTILE}, name=HOSTILE, client=nb_client)
    result = task.result(timeout=30)
    for markup in (task._repr_html_(), result._repr_html_()):
        assert "<script" not in markup.lower()
        assert "<img" not in markup.lower()
        page = assert_safe(markup)
        # The text survives, as text: nothing was dropped to make it safe.
        assert HOSTILE in page.text
        assert HOSTILE_ERROR in page.text
        nodes = page.nodes()
        assert nodes["evil"][1] == '{"html": "' + HOSTILE + '", "quote": "\\"\'&"}'
        assert nodes[HOSTILE] == ("ended", f'"{HOSTILE}"')
        assert nodes["broken"][0] == "failed"
        assert HOSTILE_ERROR in nodes["broken"][1]
    assert Page(result._repr_html_()).row("input") == '{"who": "' + HOSTILE + '"}'


def test_a_failed_task_shows_why(nb_client: Client) -> None:
    task = Task("nb-fail", client=nb_client)
    with pytest.raises(TaskFailedError):
        task.result(timeout=30)
    page = assert_safe(task._repr_html_())
    assert page.row("state").startswith("failed")
    assert HOSTILE_ERROR in page.nodes()["boom"][1]
    assert page.nodes()["boom"][0] == "failed"
    assert page.nodes()["ok"] == ("ended", "1")
    assert not [r for r in page.rows if r and r[0] == "result"]


def test_a_rejected_task_shows_the_servers_message(nb_client: Client) -> None:
    task = Task("greet", input={"age": 3}, client=nb_client)  # "name" is required
    with pytest.raises(TaskError) as caught:
        task.finalized(timeout=30)
    wait_until(task.done, what="the task's end")
    page = assert_safe(task._repr_html_())
    assert page.row("state").startswith("rejected: ")
    assert caught.value.server_message
    assert caught.value.server_message in page.row("state")


def test_a_task_that_cannot_be_created_shows_the_error_and_never_the_token(
    dead_token: str,
) -> None:
    bearer = decode_access_token(dead_token).bearer
    with make_client(dead_token) as client:
        task = Task("steps", client=client)
        assert Page(task._repr_html_()).row("state") in ("creating", "could not be created")
        wait_until(task.done, timeout=30, what="creation to give up")
        markup = task._repr_html_()
    page = assert_safe(markup)
    assert page.row("state").startswith("could not be created: ")
    assert bearer not in markup
    assert dead_token not in markup


def test_the_token_is_never_shown(nb_server: LocalRequence, nb_client: Client) -> None:
    token = nb_server.access_token
    bearer = decode_access_token(token).bearer
    task = Task("steps", input={"token_free": True}, client=nb_client)
    result = task.result(timeout=30)
    for markup in (task._repr_html_(), result._repr_html_()):
        assert bearer not in markup
        assert token not in markup
    # The plain repr stays as it was.
    assert repr(task).startswith("<requence_task.Task 'steps' id=")


def test_a_task_by_id_renders_without_a_template(nb_client: Client) -> None:
    first = Task("steps", client=nb_client)
    first.result(timeout=30)
    again = Task.from_id(first.task_id(0), client=nb_client)
    again.result(timeout=30)
    page = assert_safe(again._repr_html_())
    assert page.row("template") == ""
    assert page.row("state") == "succeeded"
    assert page.links[0][1] == first.task_id(0)
    assert list(page.nodes()) == ["a", "b", "c"]


def test_a_result_links_only_to_web_urls() -> None:
    result = TaskResult(
        task_id="t<1>",
        task_url="javascript:alert(1)",
        input=None,
        result={"x": "y"},
        node_data={"n<b>": [1, 2]},
        node_errors={"m": "went <wrong>"},
    )
    page = assert_safe(result._repr_html_())
    assert page.links == []
    assert page.row("task") == "t<1>"
    assert page.nodes() == {"n<b>": ("ended", "[1, 2]"), "m": ("failed", "went <wrong>")}
    linked = TaskResult(task_id="t", task_url='https://example.com/t?a=1&b="2"')
    assert Page(linked._repr_html_()).links == [('https://example.com/t?a=1&b="2"', "t")]


def test_long_values_are_cut() -> None:
    result = TaskResult(task_id="t", result="x" * 10_000, node_data={"big": "y" * 10_000})
    page = Page(result._repr_html_())
    assert page.row("result").endswith("…")
    assert len(page.row("result")) < 2100
    assert len(page.nodes()["big"][1]) < 400


def test_a_cancelled_future_does_not_break_the_view(
    nb_client: Client, gates: Callable[[], str]
) -> None:
    key = gates()
    task = Task("nb-gated-steps", input={"gate": key}, client=nb_client)
    wait_for_update(task, lambda u: isinstance(u, NodeEndUpdate))
    assert task.future.cancel()  # the user's doing: it stops nothing on the server
    page = assert_safe(task._repr_html_())
    assert page.row("state") == "running"
    open_gate(key)
    wait_until(
        lambda: Page(task._repr_html_()).row("state") == "succeeded", timeout=30, what="the end"
    )
