"""Fixtures of the notebook tests: a local Requence of their own (templates
with the timing and the data these tests need), a client of it, and gates."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from html.parser import HTMLParser

import pytest

from requence_task import Client
from requence_task._token import encode_access_token
from requence_task.local import LocalRequence, NodeContext, Template, service

from ..client.conftest import TIMING_TEMPLATES, free_port, make_client
from ..local.templates_for_tests import TEMPLATES, gate, wait_for_gate

HOSTILE = "<script>alert('owned')</script>"
HOSTILE_ERROR = '<img src=x onerror="alert(1)">'


def _hostile_error(ctx: NodeContext) -> None:
    raise RuntimeError(HOSTILE_ERROR)


NOTEBOOK_TEMPLATES = [
    # One node that ends, then one that waits for the gate named by the input.
    Template(
        "nb-gated-steps",
        nodes=[
            service("first", lambda ctx: {"n": 1}),
            service("wait", wait_for_gate, after=["first"]),
        ],
    ),
    # Markup everywhere a server or a user can put text.
    Template(
        "nb-hostile",
        nodes=[
            service("evil", lambda ctx: {"html": HOSTILE, "quote": "\"'&"}),
            service(HOSTILE, lambda ctx: HOSTILE, after=["evil"]),
            service("broken", _hostile_error, optional=True, after=[HOSTILE]),
        ],
        result=lambda ctx: {"html": HOSTILE},
    ),
    Template(
        "nb-fail",
        nodes=[service("ok", lambda ctx: 1), service("boom", _hostile_error, after=["ok"])],
    ),
]


@pytest.fixture(scope="module")
def nb_server() -> Iterator[LocalRequence]:
    """A local Requence of these tests (eight tasks run at once, for timing tests)."""
    with LocalRequence([*TEMPLATES, *TIMING_TEMPLATES, *NOTEBOOK_TEMPLATES], concurrency=8) as rq:
        yield rq


@pytest.fixture(autouse=True)
def _nb_faults_off(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "nb_server" in request.fixturenames:
        request.getfixturevalue("nb_server").faults.clear()


@pytest.fixture(scope="module")
def nb_client(nb_server: LocalRequence) -> Iterator[Client]:
    with make_client(nb_server.access_token) as client:
        yield client


@pytest.fixture()
def dead_token() -> str:
    """An access token whose base URL is a port on 127.0.0.1 where nothing listens."""
    return encode_access_token(f"dead-{uuid.uuid4().hex}", f"http://127.0.0.1:{free_port()}")


@pytest.fixture()
def gates() -> Iterator[Callable[[], str]]:
    """Make gate keys for the gated templates; every gate made is opened at the end."""
    made: list[str] = []

    def new() -> str:
        key = uuid.uuid4().hex
        made.append(key)
        gate(key)
        return key

    yield new
    for key in made:
        gate(key).set()


VOID = {"br", "img", "input", "meta", "hr", "link"}


class Page(HTMLParser):
    """What a ``_repr_html_`` holds: tags with attributes, rows, links and text."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.links: list[tuple[str | None, str]] = []
        self.rows: list[list[str]] = []
        self.text = ""
        self._open: list[str] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._link: tuple[str | None, list[str]] | None = None
        self.feed(markup)
        self.close()
        assert self._open == [], f"unclosed tags: {self._open}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self._open.append(tag)
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "a":
            self._link = (dict(attrs).get("href"), [])

    def handle_endtag(self, tag: str) -> None:
        assert self._open and self._open[-1] == tag, f"</{tag}> closes {self._open}"
        self._open.pop()
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "a" and self._link is not None:
            self.links.append((self._link[0], "".join(self._link[1])))
            self._link = None

    def handle_data(self, data: str) -> None:
        self.text += data
        if self._cell is not None:
            self._cell.append(data)
        if self._link is not None:
            self._link[1].append(data)

    def row(self, head: str) -> str:
        """The cell after the header cell ``head`` (the view's two-column table)."""
        found = [r[1] for r in self.rows if len(r) == 2 and r[0] == head]
        assert len(found) == 1, (head, self.rows)
        return found[0]

    def nodes(self) -> dict[str, tuple[str, str]]:
        """Node rows: label -> (state, data or error)."""
        return {r[0]: (r[1], r[2]) for r in self.rows if len(r) == 3 and r[0] != "node"}
