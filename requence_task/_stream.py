"""A live update stream that survives drops: resuming from the last position,
backing off between reconnects, and treating a silent connection as dropped.

The bytes become events in :mod:`requence_task._sse`; the connection request
(and what its answer may be) is :mod:`requence_task._api`'s, handed in as a
``connect`` function; the backoff and its budget are
:class:`requence_task._http.Backoff`'s. What is left here is the stream's own
life: every event is yielded exactly once, in order, however often the
connection drops: a reconnect asks from the last position (or, before any
event, from the same ``since`` as the first request), and the server sends
only what came after.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import requests

from ._config import RetryPolicy
from ._errors import ClientClosedError, RequenceUnreachableError
from ._http import Backoff, RetryState, Unreachable
from ._sse import RawEvent, decode

log = logging.getLogger("requence_task")


class ResumingStream:
    """Reads an SSE endpoint of the task API, resuming after every drop.

    Args:
        connect: Makes one connection request, from a position (``None``:
            from the stream's ``since``), and returns the streaming answer;
            raises :class:`~requence_task._http.Unreachable` for an attempt
            to retry, and any other error for a fatal answer.
        retry: The client's retry policy (its budget counts from the last event).
        inactivity: Seconds without a whole event (or keep-alive) after which
            the connection counts as dropped.
        what: Names the stream in errors and logs.
    """

    def __init__(
        self,
        connect: Callable[[int | None], requests.Response],
        *,
        retry: RetryPolicy,
        inactivity: float,
        what: str,
        stop: threading.Event | None = None,
        on_connect: Callable[[], object] | None = None,
        on_reconnecting: Callable[[int, float], object] | None = None,
    ) -> None:
        self._on_connect = on_connect
        self._on_reconnecting = on_reconnecting
        self._connect = connect
        self._retry = retry
        self._inactivity = inactivity
        self._what = what
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

    def __iter__(self) -> Iterator[RawEvent]:
        return self.events()

    def events(self) -> Iterator[RawEvent]:
        """Every event of the stream, once each, until closed or a fatal error.

        Raises:
            RequenceUnreachableError: Reconnecting failed for the whole budget.
            AuthenticationError, TaskNotFoundError, ApiError: fatal answers.
        """
        backoff = Backoff(self._retry, from_first_failure=True)
        delivered_without_position = 0
        inactivity = self._inactivity
        reason: str | None = None
        while not self._stop.is_set():
            progressed = False
            status: int | None = None
            try:
                try:
                    response = self._connect(self.last_position)
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
                    for parsed in decode(
                        chunks, what=self._what, skipped=self._passed, on_frame=clock.tick
                    ):
                        if self._stop.is_set():
                            return
                        position = parsed.position
                        if position is None:
                            progressed = True
                            backoff.reset()
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
                            backoff.reset()
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
            pause = backoff.failed()
            if pause is None:
                attempts = backoff.attempts
                raise RequenceUnreachableError(
                    f"{self._what}: Requence is not reachable right now"
                    + (f" ({reason})" if reason else f" (HTTP {status})" if status else "")
                    + f"; gave up after {attempts} attempts over "
                    f"{backoff.spent():.1f} s; nothing is lost on Requence's side: "
                    "open the stream again later.",
                    status=status,
                    attempts=attempts,
                )
            if self._on_reconnecting is not None:
                _call_hook(self._on_reconnecting, backoff.attempts, max(pause, 0.0))
            if self._stop.wait(max(pause, 0.0)):
                return

    def _passed(self, position: int) -> None:
        """An event at ``position`` was read (and skipped): resume after it. The
        resume point never moves backwards."""
        if self.last_position is None or position > self.last_position:
            self.last_position = position


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


class _Silent(Exception):
    """No whole event (nor keep-alive) came within the inactivity window."""


class _Clock:
    """When the stream last brought a whole frame (``time.monotonic()``)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = time.monotonic()

    def tick(self) -> None:
        """A whole frame came now."""
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
