"""Robustness of the client's SSE reader (``requence_task._sse``, read by
``requence_task._stream.ResumingStream``)
against what real networks do to a stream: bytes split anywhere, multi-byte
characters split across chunks, CRLF line endings, comment lines, events
without an id, and streams that end cleanly in the middle of an event.

Every test runs a real HTTP server of its own on 127.0.0.1 (``http.server`` in
a thread, chunked transfer encoding, one chunk per write) and reads it with a
``ResumingStream`` on the transport a ``Client`` builds. Nothing is mocked.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from typing import Any

import pytest
import sseclient
from hypothesis import given, settings
from hypothesis import strategies as st

from requence_task import Client, RetryPolicy, TaskNotFoundError, Timeouts
from requence_task._sse import RawEvent, events
from requence_task._token import encode_access_token

BEARER = "stream-parsing-bearer"

Respond = Callable[["Handler", str, dict[str, Any]], None]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # every chunk leaves at once, on its own

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else {}
        fake: SSEServer = self.server.fake  # type: ignore[attr-defined]
        with fake.lock:
            fake.requests.append((self.path, body))
            fake.authorizations.append(self.headers.get("Authorization"))
        fake.respond(self, self.path, body)

    # --- answers ---------------------------------------------------------------

    def not_found(self) -> None:
        payload = b"no such stream"
        self.send_response(404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def chunked_stream(self, chunks: list[bytes]) -> None:
        """A 200 event stream, each of ``chunks`` one HTTP chunk, then a clean end."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            if chunk:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-answer is part of these tests


class SSEServer:
    """A real HTTP server on 127.0.0.1 whose answers the test decides."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.authorizations: list[str | None] = []
        self.lock = threading.Lock()
        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.fake = self  # type: ignore[attr-defined]
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for p, body in self.requests if p == path]


@pytest.fixture()
def sse() -> Iterator[Callable[[Respond], SSEServer]]:
    servers: list[SSEServer] = []

    def start(respond: Respond) -> SSEServer:
        servers.append(SSEServer(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def make_client(server: SSEServer) -> Client:
    return Client(
        encode_access_token(BEARER, server.base_url),
        timeouts=Timeouts(connect=2, read=3, stream_inactivity=3),
        retry=RetryPolicy(budget=1, initial_backoff=0.01, max_backoff=0.05),
    )


def take(client: Client, url: str, count: int) -> list[RawEvent]:
    """The first ``count`` events of a fresh stream of ``url``."""
    stream = client._api.watch(url, what="the test stream")
    events = stream.events()
    try:
        return list(islice(events, count))
    finally:
        events.close()
        stream.close()


def frame(position: int | None, event: str, data: dict[str, Any], eol: str = "\n") -> bytes:
    lines = [] if position is None else [f"id: {position}"]
    lines += [f"event: {event}", f"data: {json.dumps(data, ensure_ascii=False)}"]
    return (eol.join(lines) + eol + eol).encode()


FIRST = {"taskId": "t", "n": 1, "text": "plain"}
SECOND = {"taskId": "t", "n": 2, "text": "zweite Zeile: Grüße, 10 €, 😀"}
EXPECTED = [RawEvent(1, "taskStart", FIRST), RawEvent(2, "nodeUpdate", SECOND)]
TWO_EVENTS = frame(1, "taskStart", FIRST) + frame(2, "nodeUpdate", SECOND)


def every_split(body: bytes) -> list[list[bytes]]:
    return [[body[:i], body[i:]] for i in range(1, len(body))]


def serve_rounds(rounds: dict[str, list[bytes]]) -> Respond:
    """Each path answers once with its chunks; anything else is a 404."""

    def respond(handler: Handler, path: str, body: dict[str, Any]) -> None:
        chunks = rounds.pop(path, None)
        if chunks is None:
            handler.not_found()
        else:
            handler.chunked_stream(chunks)

    return respond


def read_rounds(
    sse: Callable[[Respond], SSEServer], variants: list[list[bytes]], count: int
) -> dict[int, list[RawEvent] | str]:
    """Serve each variant on its own path and read ``count`` events of each:
    what each variant gave, by its index."""
    rounds = {f"/watch/{i}": chunks for i, chunks in enumerate(variants)}
    server = sse(serve_rounds(dict(rounds)))
    found: dict[int, list[RawEvent] | str] = {}
    with make_client(server) as client:
        for i in range(len(variants)):
            try:
                found[i] = take(client, f"{server.base_url}/watch/{i}", count)
            except Exception as err:  # reported, per variant, by the test
                found[i] = f"{type(err).__name__}: {err}"
    assert all(a == f"Bearer {BEARER}" for a in server.authorizations)
    return found


def wrong(found: dict[int, list[RawEvent] | str], expected: list[RawEvent]) -> dict[int, Any]:
    return {i: got for i, got in found.items() if got != expected}


# --- split delivery -------------------------------------------------------------------


def test_two_events_split_at_every_byte_boundary(sse: Callable[[Respond], SSEServer]) -> None:
    variants = every_split(TWO_EVENTS)
    found = read_rounds(sse, variants, 2)
    assert len(found) == len(TWO_EVENTS) - 1
    assert wrong(found, EXPECTED) == {}


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 7])
def test_two_events_in_chunks_of_fixed_size(sse: Callable[[Respond], SSEServer], size: int) -> None:
    chunks = [TWO_EVENTS[i : i + size] for i in range(0, len(TWO_EVENTS), size)]
    assert b"".join(chunks) == TWO_EVENTS
    assert wrong(read_rounds(sse, [chunks], 2), EXPECTED) == {}


def test_multibyte_character_split_across_chunks(sse: Callable[[Respond], SSEServer]) -> None:
    # Split inside every multi-byte character (before each continuation byte).
    inside = [i for i in range(1, len(TWO_EVENTS)) if TWO_EVENTS[i] & 0xC0 == 0x80]
    assert len(inside) == 1 + 1 + 2 + 3  # ü, ß, €, 😀: 2, 2, 3 and 4 bytes
    variants = [[TWO_EVENTS[:i], TWO_EVENTS[i:]] for i in inside]
    # And byte by byte, every character in pieces.
    variants.append([TWO_EVENTS[i : i + 1] for i in range(len(TWO_EVENTS))])
    found = read_rounds(sse, variants, 2)
    assert wrong(found, EXPECTED) == {}
    assert found[0][1].data["text"] == SECOND["text"]  # type: ignore[index,union-attr]


def test_crlf_line_endings(sse: Callable[[Respond], SSEServer]) -> None:
    body = frame(1, "taskStart", FIRST, "\r\n") + frame(2, "nodeUpdate", SECOND, "\r\n")
    assert b"\r\n\r\n" in body and b"\n\n" not in body.replace(b"\r\n", b"")
    # Whole, split at every byte boundary (including between CR and LF), byte by byte.
    variants = [[body], *every_split(body), [body[i : i + 1] for i in range(len(body))]]
    assert wrong(read_rounds(sse, variants, 2), EXPECTED) == {}


def test_bare_cr_line_endings(sse: Callable[[Respond], SSEServer]) -> None:
    body = frame(1, "taskStart", FIRST, "\r") + frame(2, "nodeUpdate", SECOND, "\r")
    assert wrong(read_rounds(sse, [[body], every_split(body)[10]], 2), EXPECTED) == {}


def test_comment_lines_between_and_inside_events(sse: Callable[[Respond], SSEServer]) -> None:
    body = (
        b": keep-alive\n\n"
        b": keep-alive\n\n"
        b"id: 1\n: keep-alive\nevent: taskStart\n:\n"
        + f"data: {json.dumps(FIRST)}\n: keep-alive\n\n".encode()
        + b": keep-alive\n\n"
        + b": keep-alive\nid: 2\nevent: nodeUpdate\n"
        + f"data: {json.dumps(SECOND, ensure_ascii=False)}\n\n".encode()
        + b": keep-alive\n\n"
    )
    variants = [[body], [body[i : i + 1] for i in range(len(body))], *every_split(body)[::7]]
    assert wrong(read_rounds(sse, variants, 2), EXPECTED) == {}


def test_data_spread_over_several_data_lines(sse: Callable[[Respond], SSEServer]) -> None:
    body = (
        b'id: 1\nevent: taskStart\ndata: {"taskId": "t",\ndata: "n": 1,\ndata:"text": "plain"}\n\n'
    )
    body += frame(2, "nodeUpdate", SECOND)
    assert wrong(read_rounds(sse, [[body]], 2), EXPECTED) == {}


# --- resuming ---------------------------------------------------------------------


def resume_after(
    full: list[tuple[int | None, bytes]], first: Callable[[str], list[bytes]]
) -> Respond:
    """The first request of each path: ``first(path)`` (then a clean end). Later
    ones: the events after ``lastPosition``, or all of them without one; a 404
    once nothing is left."""
    served: dict[str, int] = {}

    def respond(handler: Handler, path: str, body: dict[str, Any]) -> None:
        served[path] = served.get(path, 0) + 1
        if served[path] == 1:
            handler.chunked_stream(first(path))
            return
        after = body.get("lastPosition")
        rest = [f for p, f in full if after is None or (p is not None and p > after)]
        if not rest:
            handler.not_found()
        else:
            handler.chunked_stream(rest)

    return respond


def test_events_without_id_resume_exactly_once_by_count(
    sse: Callable[[Respond], SSEServer],
) -> None:
    events = [(None, frame(None, "nodeUpdate", {"taskId": "t", "n": n})) for n in range(1, 5)]
    server = sse(resume_after(events, lambda path: [events[0][1], events[1][1]]))
    with make_client(server) as client:
        stream = client._api.watch(
            server.base_url + "/watch",
            what="the test stream",
            since="2024-05-01T00:00:00+00:00",
        )
        found = list(islice(stream.events(), 4))
        stream.close()
    assert found == [RawEvent(None, "nodeUpdate", {"taskId": "t", "n": n}) for n in range(1, 5)]
    assert stream.last_position is None
    assert stream.reconnects == 1
    # No position to resume from: the reconnect asks again from the same `since`.
    assert server.bodies("/watch") == [
        {"since": "2024-05-01T00:00:00+00:00"},
        {"since": "2024-05-01T00:00:00+00:00"},
    ]


def test_clean_end_resumes_with_last_position(sse: Callable[[Respond], SSEServer]) -> None:
    events = [
        (1000, frame(1000, "taskStart", FIRST)),
        (1007, frame(1007, "nodeUpdate", SECOND)),
        (1200, frame(1200, "taskEnd", {"taskId": "t", "result": None})),
    ]
    server = sse(resume_after(events, lambda path: [events[0][1], events[1][1]]))
    with make_client(server) as client:
        found = take(client, server.base_url + "/watch", 3)
    assert [e.position for e in found] == [1000, 1007, 1200]
    assert server.bodies("/watch") == [{"since": None}, {"since": None, "lastPosition": 1007}]


def test_clean_end_in_the_middle_of_an_event_loses_nothing(
    sse: Callable[[Respond], SSEServer],
) -> None:
    """A stream may end cleanly anywhere, also inside an event (a proxy ending a
    response between two chunks that split a frame). The incomplete event must
    neither be delivered nor count as seen: the resume fetches it whole."""
    events = [(1, frame(1, "taskStart", FIRST)), (2, frame(2, "nodeUpdate", SECOND))]
    body = events[0][1] + events[1][1]
    failures: dict[int, Any] = {}
    server = sse(resume_after(events, lambda path: [body[: int(path.rsplit("/", 1)[1])]]))
    with make_client(server) as client:
        for cut in range(1, len(body)):
            url = f"{server.base_url}/watch/{cut}"
            try:
                found: Any = take(client, url, 2)
            except TaskNotFoundError:
                # The resume asked for nothing more: an event was taken as seen.
                found = ("lost", server.bodies(f"/watch/{cut}"))
            if found != EXPECTED:
                failures[cut] = (body[:cut].decode("utf-8", "replace")[-12:], found)
    if failures:
        first = min(failures)
        raise AssertionError(
            f"{len(failures)} of {len(body) - 1} clean ends lose or mangle an event, at byte "
            f"offsets {sorted(failures)}; e.g. after ...{failures[first][0]!r}: "
            f"{failures[first][1]!r}"
        )


def test_event_that_is_not_utf8_is_skipped_not_fatal(
    sse: Callable[[Respond], SSEServer],
) -> None:
    """One event with bytes that are not UTF-8 is a malformed event like any other:
    skipped, and the stream goes on (as with data that is not JSON)."""
    third = {"taskId": "t", "n": 3}
    events = [
        (1, frame(1, "taskStart", FIRST)),
        (2, b'id: 2\nevent: nodeUpdate\ndata: {"taskId": "t", "bad": "\xff\xfe"}\n\n'),
        (3, frame(3, "nodeUpdate", third)),
    ]
    server = sse(resume_after(events, lambda path: [f for _, f in events]))
    with make_client(server) as client:
        started = time.monotonic()
        try:
            found: Any = take(client, server.base_url + "/watch", 2)
        except Exception as err:
            found = f"{type(err).__name__}: {err}"
        elapsed = time.monotonic() - started
    assert found == [RawEvent(1, "taskStart", FIRST), RawEvent(3, "nodeUpdate", third)]
    assert elapsed < 1


# --- a stream without chunked encoding ------------------------------------------------


def test_close_delimited_stream_delivers_events_as_they_come(
    sse: Callable[[Respond], SSEServer],
) -> None:
    got_first = threading.Event()

    def respond(handler: Handler, path: str, body: dict[str, Any]) -> None:
        # HTTP/1.1 allows a body delimited by the connection's close.
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(frame(1, "taskStart", FIRST))
        handler.wfile.flush()
        got_first.wait(2)
        handler.wfile.write(frame(2, "nodeUpdate", SECOND))
        handler.wfile.flush()
        handler.close_connection = True

    server = sse(respond)
    with make_client(server) as client:
        stream = client._api.watch(server.base_url + "/w", what="the test stream")
        events = stream.events()
        started = time.monotonic()
        try:
            first = next(events)
            waited = time.monotonic() - started
            got_first.set()
            second = next(events)
        finally:
            got_first.set()
            events.close()
            stream.close()
    assert [first, second] == EXPECTED
    assert waited < 1.5, f"the first event came only after {waited:.1f} s, with the stream's end"


# --- the fast path for frames of the protocol's own shape ---------------------------------


_FIELD = st.sampled_from(["id", "event", "data", "retry", "", "ID", "data ", " id"])
_VALUE = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12
)


@settings(max_examples=400, deadline=None)
@given(
    lines=st.lists(
        st.tuples(_FIELD, st.sampled_from([": ", ":", ":  ", ""]), _VALUE), min_size=1, max_size=5
    ),
    canonical=st.tuples(st.integers(0, 10**12), _VALUE, _VALUE),
)
def test_fast_frames_read_as_sseclient_reads_them(
    lines: list[tuple[str, str, str]], canonical: tuple[int, str, str]
) -> None:
    """Every frame, of the canonical shape or not, gives what sseclient-py gives."""
    position, kind, data = canonical
    frames = [
        f"id: {position}\nevent: {kind}\ndata: {data}\n\n".encode(),
        ("".join(f"{f}{sep}{v}\n" for f, sep, v in lines) + "\n").encode(),
    ]
    for frame in frames:
        ours = list(events(iter([frame])))
        theirs = [(e.id, e.event, e.data) for e in sseclient.SSEClient(iter([frame])).events()]
        assert ours == theirs, frame
