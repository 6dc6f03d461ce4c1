"""A live update stream that survives drops: SSE parsing by sseclient-py, plus
the three things it leaves to us: resuming from the last position, backing
off between reconnects, and treating a silent connection as dropped.

Every event is yielded exactly once, in order, however often the connection
drops: a reconnect sends ``lastPosition`` (or, before any event, the same
``since`` as the first request), and the server sends only what came after.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs
import requests
import sseclient

from ._errors import ApiError, ClientClosedError, RequenceUnreachableError, TaskNotFoundError
from ._http import RetryState, Transport, Unreachable, error_text

log = logging.getLogger("requence_task")


@attrs.frozen
class RawEvent:
    """One SSE event: its position (the ``id:``), type and JSON object."""

    position: int | None
    type: str
    data: dict[str, Any]


class ResumingStream:
    """Reads an SSE endpoint of the task API, resuming after every drop.

    Args:
        transport: The client's transport.
        url: The stream's URL (``urls.watch``, or the watch-all URL).
        body: Extra body fields sent on every (re)connect, e.g. ``only``.
        since: ISO-8601 ``since`` of the first request (``None``: from the start).
        what: Names the stream in errors and logs.
        task_id: For error attributes.
    """

    def __init__(
        self,
        transport: Transport,
        url: str,
        *,
        body: dict[str, Any] | None = None,
        since: str | None = None,
        what: str,
        task_id: str | None = None,
        stop: threading.Event | None = None,
        on_connect: Callable[[], object] | None = None,
        on_reconnecting: Callable[[int, float], object] | None = None,
    ) -> None:
        self._on_connect = on_connect
        self._on_reconnecting = on_reconnecting
        self._transport = transport
        self._url = url
        self._body = dict(body or {})
        self._since = since
        self._what = what
        self._task_id = task_id
        self._stop = stop or threading.Event()
        self._response: requests.Response | None = None
        self._lock = threading.Lock()
        self.last_position: int | None = None
        self.reconnects = 0
        self.retry_state = RetryState()
        """Whether reconnecting fails right now, and why (for waiters' errors)."""

    def close(self) -> None:
        """Stop reading, from any thread: the iterator ends soon after."""
        self._stop.set()
        with self._lock:
            response = self._response
        if response is not None:
            _interrupt(response)

    def _request_body(self) -> bytes:
        body: dict[str, Any] = dict(self._body)
        body["since"] = self._since
        if self.last_position is not None:
            body["lastPosition"] = self.last_position
        return json.dumps(body).encode()

    def _connect(self) -> requests.Response:
        response = self._transport.send(
            "POST",
            self._url,
            body=self._request_body(),
            content_type="application/json",
            stream=True,
            read_timeout=self._transport.timeouts.stream_inactivity,
            headers={"Accept": "text/event-stream"},
        )
        if response.status_code == 404:
            message = error_text(response)
            response.close()
            raise TaskNotFoundError(
                f"{self._what}: Requence knows no such task ({message})", task_id=self._task_id
            )
        if not response.ok:
            message = error_text(response)
            response.close()
            raise ApiError(
                f"{self._what}: Requence refused the stream with HTTP {response.status_code}: "
                f"{message}",
                status=response.status_code,
                body=message,
            )
        kind = response.headers.get("Content-Type", "")
        if not kind.startswith("text/event-stream"):
            response.close()
            raise ApiError(
                f"{self._what}: Requence answered with {kind or 'no content type'}, not an event "
                "stream; is the token's base URL the Requence API?",
                status=response.status_code,
            )
        return response

    def __iter__(self) -> Iterator[RawEvent]:
        return self.events()

    def events(self) -> Iterator[RawEvent]:
        """Every event of the stream, once each, until closed or a fatal error.

        Raises:
            RequenceUnreachableError: Reconnecting failed for the whole budget.
            AuthenticationError, TaskNotFoundError, ApiError: fatal answers.
        """
        failures = 0
        first_failure: float | None = None
        delivered_without_position = 0
        retry = self._transport.retry
        inactivity = self._transport.timeouts.stream_inactivity
        reason: str | None = None
        while not self._stop.is_set():
            progressed = False
            status: int | None = None
            try:
                try:
                    response = self._connect()
                except Unreachable as err:
                    self.retry_state.failed(err)
                    raise
                self.retry_state.succeeded()
                with self._lock:
                    self._response = response
                if self._stop.is_set():  # closed while connecting
                    _interrupt(response)
                    return
                if self._on_connect is not None:
                    _call_hook(self._on_connect)
                skip = delivered_without_position if self.last_position is None else 0
                try:
                    clock = _Clock()
                    chunks = _watched(_chunks(response), clock, inactivity)
                    frames = _frames(chunks, self._skip_frame, clock)
                    for event in _events(frames):
                        if self._stop.is_set():
                            return
                        parsed = self._parse(event)
                        if parsed is None:
                            continue
                        position = parsed.position
                        if position is None:
                            progressed = True
                            failures, first_failure = 0, None
                            if skip:
                                skip -= 1
                                continue
                            delivered_without_position += 1
                        else:
                            last = self.last_position
                            if last is not None and position <= last:
                                # Positions only increase along a stream: this one
                                # came already (a repeat), or is stale. Never again.
                                log.debug(
                                    "%s: dropped an event at position %d (at %d already)",
                                    self._what,
                                    position,
                                    last,
                                )
                                continue
                            progressed = True
                            failures, first_failure = 0, None
                            self.last_position = position
                        yield parsed
                finally:
                    with self._lock:
                        self._response = None
                    response.close()
                log.debug("%s: the stream ended before the task did; resuming", self._what)
            except Unreachable as err:
                status, reason = err.status, err.reason
            except ClientClosedError:
                return
            except (
                requests.RequestException,
                ValueError,
                OSError,
                AttributeError,
                _Silent,
            ) as err:
                # (urllib3 raises AttributeError reading a response closed under it.)
                # A drop mid-stream: connection reset, read time-out (silence past the
                # inactivity window), a broken chunk.
                if self._stop.is_set():
                    return
                log.debug("%s: stream dropped (%s); resuming", self._what, type(err).__name__)
            if self._stop.is_set():
                return
            self.reconnects += 1
            if progressed:
                if self._on_reconnecting is not None:
                    _call_hook(self._on_reconnecting, 1, 0.0)
                continue  # resume at once; back off only when attempts make no progress
            now = time.monotonic()
            first_failure = now if first_failure is None else first_failure
            if now - first_failure >= retry.budget:
                raise RequenceUnreachableError(
                    f"{self._what}: Requence is not reachable right now"
                    + (f" ({reason})" if reason else f" (HTTP {status})" if status else "")
                    + f"; gave up after {failures + 1} attempts over "
                    f"{now - first_failure:.1f} s; nothing is lost on Requence's side: "
                    "open the stream again later.",
                    status=status,
                    attempts=failures + 1,
                )
            pause = min(retry.delay(failures), retry.budget - (now - first_failure))
            failures += 1
            if self._on_reconnecting is not None:
                _call_hook(self._on_reconnecting, failures, max(pause, 0.0))
            if self._stop.wait(max(pause, 0.0)):
                return

    def _skip_frame(self, frame: bytes) -> None:
        """A frame that is not UTF-8: skip it for good, past its position."""
        match = _ID_LINE.search(frame)
        log.warning("%s: skipped an event that is not UTF-8 text", self._what)
        if match is not None:
            self._passed(int(match.group(1)))

    def _passed(self, position: int) -> None:
        """An event at ``position`` was read (and skipped): resume after it. The
        resume point never moves backwards."""
        if self.last_position is None or position > self.last_position:
            self.last_position = position

    def _parse(self, event: Any) -> RawEvent | None:
        position: int | None = None
        if event.id:
            try:
                position = int(event.id)
            except (TypeError, ValueError):
                log.warning("%s: skipped an event whose id is not an integer", self._what)
                return None
        try:
            data = json.loads(event.data)
        except ValueError:
            log.warning("%s: skipped a %r event whose data is not JSON", self._what, event.event)
            if position is not None:
                self._passed(position)
            return None
        if not isinstance(data, dict):
            log.warning(
                "%s: skipped a %r event whose data is not a JSON object", self._what, event.event
            )
            if position is not None:
                self._passed(position)
            return None
        return RawEvent(position=position, type=str(event.event), data=data)


class _Canonical:
    """An event read from a frame of the protocol's own shape (see ``_events``)."""

    __slots__ = ("data", "event", "id")

    def __init__(self, id: str, event: str, data: str) -> None:
        self.id = id
        self.event = event
        self.data = data


def _events(frames: Iterable[bytes]) -> Iterator[Any]:
    """The events of whole frames.

    A frame of exactly the shape the protocol sends (``id: N``, ``event: T``,
    one ``data:`` line) is read directly, which is several times cheaper;
    every other frame (comments, several data lines, other fields, other
    spacing) is parsed by sseclient-py, so the results are the same.
    """
    for frame in frames:
        if frame.startswith(b"id: "):
            parts = frame.split(b"\n", 3)
            if (
                len(parts) == 4
                and parts[3] == b"\n"
                and parts[0][4:].isdigit()
                and parts[1].startswith(b"event: ")
                and parts[2].startswith(b"data: ")
            ):
                event = parts[1][7:].decode()
                data = parts[2][6:].decode()
                if event and event.strip() == event and data.strip() == data:
                    yield _Canonical(parts[0][4:].decode(), event, data)
                    continue
        yield from sseclient.SSEClient(iter([frame])).events()


def _call_hook(hook: Callable[..., object], *args: object) -> None:
    """Run a user's callback; its errors are logged, never end the stream."""
    try:
        hook(*args)
    except Exception:
        log.exception("a stream callback raised")


def _interrupt(response: requests.Response) -> None:
    """Close a streaming response from another thread, waking a blocked read.

    ``Response.close()`` alone does not wake a thread blocked in ``recv()``
    (it would sleep until the next keep-alive); shutting the socket down does.
    """
    for sock in _sockets_of(response):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        response.close()


def _chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives. A body that ends with the connection (neither
    chunked nor of known length) is read with ``read1`` where urllib3 has it,
    so events are not held back until the connection ends."""
    raw = response.raw
    read1 = getattr(raw, "read1", None)
    if read1 is not None and not getattr(raw, "chunked", True) and raw.length_remaining is None:
        while True:
            data = read1(65536)
            if not data:
                return
            yield data
    else:
        yield from response.iter_content(chunk_size=None)


def _sockets_of(response: requests.Response) -> list[socket.socket]:
    """The socket under a streaming response: through urllib3's connection, or,
    for a body that ends with the connection (urllib3 no longer holds it then),
    through the raw file object the body is read from."""
    found = []
    connection = getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        found.append(sock)
    fp = getattr(getattr(response.raw, "_fp", None), "fp", None)
    sock = getattr(getattr(fp, "raw", None), "_sock", None)
    if isinstance(sock, socket.socket) and sock not in found:
        found.append(sock)
    return found


MAX_EVENT_BYTES = 32 * 2**20  # far above any payload limit; bounds an endless line
_ID_LINE = re.compile(rb"^id: ?([0-9]+)$", re.MULTILINE)


class _Silent(Exception):
    """No whole event (nor keep-alive) came within the inactivity window."""


class _Clock:
    """When the stream last brought a whole frame (``time.monotonic()``)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = time.monotonic()


def _watched(chunks: Iterable[bytes], clock: _Clock, inactivity: float) -> Iterator[bytes]:
    """The chunks, until one comes when no whole frame did for ``inactivity`` seconds.

    The socket's read time-out catches a silent connection; this catches one
    that trickles bytes without ever finishing an event.
    """
    for chunk in chunks:
        if time.monotonic() - clock.last > inactivity:
            raise _Silent()
        yield chunk


def _frames(
    chunks: Iterable[bytes], skip: Callable[[bytes], object], clock: _Clock | None = None
) -> Iterator[bytes]:
    """Whole SSE frames (each ending in a blank line) from arbitrary chunks.

    Line ends are normalised to ``\\n``. What follows the last blank line when
    the body ends is an unfinished event of a cut stream: it is dropped, never
    parsed, so a resume asks for it again. A frame that is not UTF-8 is given
    to ``skip`` instead of being yielded. Each chunk is normalised and scanned
    once, so an endless line costs time in proportion to its length.
    """
    pending = bytearray()  # normalised bytes after the last complete frame
    held_cr = False  # a CR at a chunk's end may be the first half of a CRLF
    for chunk in chunks:
        if not chunk:
            continue
        if held_cr:
            chunk, held_cr = b"\r" + chunk, False
        if chunk.endswith(b"\r"):
            chunk, held_cr = chunk[:-1], True
        text = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if len(pending) + len(text) > MAX_EVENT_BYTES:
            raise ApiError(
                f"An event on the stream is larger than {MAX_EVENT_BYTES // 2**20} MiB (or never "
                "ends); the stream is not a Requence update stream."
            )
        scan_from = max(len(pending) - 1, 0)  # a blank line may straddle the chunks
        pending += text
        end = pending.rfind(b"\n\n", scan_from)
        if end < 0:
            continue
        complete = bytes(pending[: end + 2])
        del pending[: end + 2]
        if clock is not None:
            clock.last = time.monotonic()
        yield from _checked(complete, skip)
    # At the end a held CR is a line end after all.
    complete, _unfinished = _split_complete(bytes(pending) + (b"\n" if held_cr else b""))
    yield from _checked(complete, skip)


def _split_complete(data: bytes) -> tuple[bytes, bytes]:
    """``data`` with normalised line ends, cut after its last blank line."""
    text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    end = text.rfind(b"\n\n")
    if end < 0:
        return b"", text
    return text[: end + 2], text[end + 2 :]


def _checked(complete: bytes, skip: Callable[[bytes], object]) -> Iterator[bytes]:
    for frame in complete.split(b"\n\n"):
        if not frame:
            continue
        frame += b"\n\n"
        try:
            frame.decode("utf-8")
        except UnicodeDecodeError:
            skip(frame)
            continue
        yield frame
