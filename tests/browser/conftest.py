"""Fixtures of the task page tests: a local Requence with templates of their
own (gated so that a test decides when a task moves on), a plain ``requests``
client of its API, and headless Chromium driven by Playwright.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``, or the path in
``REQUENCE_TASK_CHROMIUM``). Without it, or without Playwright, the browser
tests are skipped, unless ``REQUENCE_TASK_REQUIRE_BROWSER=1`` (as in CI): then
they fail.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from requence_task.local import LocalRequence, NodeContext, Template, service

from ..conftest import Api

CHROMIUM = os.environ.get("REQUENCE_TASK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests may run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # No connections of Chromium's own: the test machine's network is closed.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Every wait of a browser test is bounded by this (milliseconds).
WAIT_MS = 10_000
# Nodes wait at most this long for a gate (seconds); aborts wake them at once.
GATE_LIMIT = 20.0

# Markup that would run or show if a page ever used task data as HTML.
PAYLOAD = (
    '<img src="x" onerror="window.__xss = 1"><script>window.__xss = 2</script>'
    "<b>bold</b> & \"quotes\" 'single'"
)

GATES: dict[str, threading.Event] = {}


def gate(key: str) -> threading.Event:
    return GATES.setdefault(key, threading.Event())


def new_gate() -> str:
    key = str(uuid.uuid4())
    gate(key)
    return key


def wait_gate(ctx: NodeContext, key: str) -> None:
    """Wait until the test opens the gate ``key`` (or the task is aborted)."""
    opened = gate(key)
    for _ in range(int(GATE_LIMIT / 0.02)):
        if opened.wait(0.02) or ctx.aborted:
            return


def _ticker(ctx: NodeContext) -> Any:
    # Tick 1 at once; one more tick each time the test opens one of the input's
    # gates; then two more, slowly, on their own.
    note = ctx.input.get("note")
    yield {"tick": 1, "note": note}
    tick = 1
    for key in ctx.input["gates"]:
        wait_gate(ctx, key)
        tick += 1
        yield {"tick": tick, "note": note}
    for _ in range(2):
        if ctx.wait(0.3):
            return
        tick += 1
        yield {"tick": tick, "note": note}


def _boom(ctx: NodeContext) -> None:
    raise RuntimeError(ctx.input["payload"])


def _ask(ctx: NodeContext) -> Any:
    ctx.defer(ctx.input["payload"])
    yield {"html": ctx.input["payload"]}


def _wait_for_approval(ctx: NodeContext) -> dict[str, Any]:
    ctx.defer(ctx.input.get("why"))
    ctx.wait(GATE_LIMIT)  # returns at once when the task is aborted
    return {"approved": not ctx.aborted}


TEMPLATES = [
    Template(
        "ticker",
        nodes=[
            service("setup", lambda ctx: {"ready": True}),
            service("ticker", _ticker, after="setup"),
        ],
        result=lambda ctx: {"ticks": ctx.node_data("ticker")["tick"]},
    ),
    Template(
        "marked-up",
        nodes=[
            service("hold", lambda ctx: wait_gate(ctx, ctx.input["gate"])),
            service("flaky", _boom, after="hold", optional=True),
            service("asker", _ask, after="flaky"),
        ],
        result=lambda ctx: {"html": ctx.input["payload"], "name": ctx.name},
    ),
    Template("approval", nodes=[service("approval", _wait_for_approval)]),
    Template("quick", nodes=[service("quick", lambda ctx: {"done": True})]),
]


@pytest.fixture(scope="session")
def page_server() -> Iterator[LocalRequence]:
    """A local Requence with the page tests' templates."""
    with LocalRequence(TEMPLATES, concurrency=4) as rq:
        yield rq
    for event in GATES.values():
        event.set()


@pytest.fixture()
def page_api(page_server: LocalRequence) -> Iterator[Api]:
    client = Api(page_server.access_token)
    yield client
    client.close()


def _missing(reason: str) -> None:
    if os.environ.get("REQUENCE_TASK_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (and REQUENCE_TASK_REQUIRE_BROWSER=1 requires the browser)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium, launched once for the session."""
    if not Path(CHROMIUM).is_file():
        _missing(f"no Chromium at {CHROMIUM}: install Debian's 'chromium' package")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed: pip install 'requence_task[test]'")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=WAIT_MS * 3
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture()
def page_errors() -> list[str]:
    """JavaScript errors and console errors (a CSP violation is one) of ``page``.

    A test that provokes an error on purpose removes it from this list.
    """
    return []


@pytest.fixture()
def page(browser: Any, page_errors: list[str]) -> Iterator[Any]:
    """A fresh page in its own context; the test fails if the page logged an error."""
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    context.set_default_navigation_timeout(WAIT_MS)
    tab = context.new_page()
    tab.on("pageerror", lambda err: page_errors.append(f"page error: {err}"))

    def console(message: Any) -> None:
        if message.type == "error":
            page_errors.append(f"console error: {message.text}")

    tab.on("console", console)
    try:
        yield tab
    finally:
        context.close()
    assert not page_errors, page_errors
