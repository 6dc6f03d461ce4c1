"""A TCP proxy of the tests' own, on 127.0.0.1, between the client and a
``LocalRequence``, whose behaviour is switched while it runs: pass traffic
through, cut it, stall it, slow it, lose an answer, answer in the server's
place with garbage, or refuse connections.

How it works
------------
Threads and plain sockets, nothing else. An accept thread hands every client
connection to a thread of its own. That thread reads the client's requests one
after the other (HTTP/1.1 keep-alive: a head, then a ``Content-Length`` body),
opens a *fresh* connection to the server for each request, forwards the request
byte for byte, and relays the answer:

* an answer with a ``Content-Length`` (every JSON answer) is read whole, then
  sent on;
* a chunked answer (the SSE update streams) is de-chunked as it arrives and
  every piece of its content is sent on as a chunk of its own, so what the
  client receives is exactly the content the server sent, in valid chunked
  framing, up to the point where a behaviour cuts it;
* an answer delimited by the end of the connection is relayed until it ends.

Every socket has a time-out (:data:`POLL`); blocking loops wake at least that
often to look at the switches, at :meth:`FaultProxy.stop`, and at whether the
client hung up. ``stop()`` shuts every socket down, joins every thread and
raises if one is left.

The base URL: the server hands out absolute URLs (``finalizeUrl`` of prepare,
``urls.watch`` and ``urls.show`` of finalize) built from *its* base URL, so a
client would go around the proxy for finalize and watch. The proxy therefore
replaces the server's base URL (``http://127.0.0.1:<server port>``) with its
own in every answer that has a ``Content-Length`` and a JSON content type,
and fixes the ``Content-Length`` (the two ports need not have as many digits).
Streamed answers are not rewritten: update events carry no URLs.

Behaviours (any combination; :meth:`FaultProxy.pass_through` switches all off)
-----------------------------------------------------------------------------
Each is read again for every piece of traffic, so switching one affects live
exchanges at once as well as new ones. Paths are matched by prefix.

* :meth:`~FaultProxy.cut_every` ``(k)``: close both sockets once the client has
  received ``k`` bytes of an answer's content (counted from the start of each
  answer; the head is not counted). With ``progress=True`` (the default) the
  cut comes at the first multiple of ``k`` at or after the end of the first
  complete SSE event, so every connection delivers at least one whole event
  and the rest up to an arbitrary byte of a later one: a client can always
  make progress, and sees cuts at every offset inside events. With
  ``progress=False`` the cut is at exactly ``k`` bytes, whether or not any
  event got through.
* :meth:`~FaultProxy.stall` ``(seconds)``: forward nothing, keep the
  connections open, until ``seconds`` have passed (``None``: until switched
  off). ``live=True`` freezes the exchanges in flight now (their answers stop
  mid-way); ``new=True`` holds exchanges that start from now on before their
  request is forwarded.
* :meth:`~FaultProxy.slow` ``(n, t)``: send answers' content ``n`` bytes at a
  time, one piece every ``t`` seconds.
* :meth:`~FaultProxy.drop_next` ``(path)``: forward the next matching request,
  read the server's answer and throw it away (for a streamed answer, its head:
  the server has begun the stream), then close the client's connection
  without a byte of answer. The server did the work; the client lost the news.
* :meth:`~FaultProxy.replace_next` ``(path, responder)``: answer matching
  requests in the server's place (they are not forwarded) with whatever
  ``responder`` writes, e.g. :func:`html_answer` or :func:`endless_line`.
* :meth:`~FaultProxy.refuse` / :meth:`~FaultProxy.accept`: stop listening
  (connects are refused; live connections are reset), and listen again on the
  same port.

Every exchange is recorded in :attr:`FaultProxy.exchanges` with its method,
path, status and how it ended (``outcome``).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

POLL = 0.02
"""Seconds: every socket's time-out, and how often waiting loops look up."""
IO_TIMEOUT = 30.0
"""Seconds a request's or an answer's head or non-streamed body may take."""
IDLE_TIMEOUT = 60.0
"""Seconds a client connection may sit idle between requests."""
MAX_BODY = 64 * 2**20
"""Largest request or non-streamed answer body the proxy reads whole."""
JOIN_TIMEOUT = 5.0


class ProxyError(Exception):
    """The proxy itself failed (not a fault it injected)."""


@dataclass
class Exchange:
    """One request the proxy saw, and what became of its answer.

    ``outcome``: ``open`` (still going), ``ok``, ``cut``, ``dropped``,
    ``replaced``, ``client-gone`` (the client hung up first), ``reset``
    (refused while live), ``stopped`` (the proxy stopped), ``upstream-error``.
    """

    id: int
    method: str
    path: str
    started: float = field(default_factory=time.monotonic)
    status: int | None = None
    outcome: str = "open"
    body_bytes: int = 0
    """Bytes of the answer's content the client was sent."""
    held: bool = False
    """Whether it is being held by a stall right now."""
    ended: float | None = None
    # Where the first complete SSE event of the answer ends (content offset).
    _first_event_end: int | None = field(default=None, repr=False)
    _scan: bytearray = field(default_factory=bytearray, repr=False)

    def _finish(self, outcome: str) -> None:
        if self.outcome == "open":
            self.outcome = outcome
            self.ended = time.monotonic()


@dataclass
class _Cut:
    k: int
    path: str | None
    progress: bool
    left: int | None  # answers still to cut; None = every one


@dataclass
class _Stall:
    until: float
    path: str | None
    method: str | None
    live: frozenset[int]  # ids of the exchanges in flight when it was set
    new_from: int | None  # exchanges with this id or higher; None = none


@dataclass
class _Slow:
    n: int
    t: float
    path: str | None


@dataclass
class _Rule:
    method: str | None
    path: str
    left: int | None
    responder: Responder | None = None


def _matches(path: str | None, method: str | None, exchange: Exchange) -> bool:
    return (path is None or exchange.path.startswith(path)) and (
        method is None or exchange.method == method
    )


class _Closed(Exception):
    """The exchange is over (client gone, proxy stopping, socket closed)."""


class Writer:
    """What a responder writes to: the client's side of one exchange."""

    def __init__(self, proxy: FaultProxy, conn: _Conn, exchange: Exchange) -> None:
        self._proxy = proxy
        self._conn = conn
        self.exchange = exchange

    def send(self, data: bytes) -> bool:
        """Send ``data`` to the client; ``False`` once the client or the proxy is gone."""
        try:
            self._proxy._send(self._conn, data)
        except _Closed:
            return False
        return True

    def hold(self, seconds: float | None = None) -> None:
        """Keep the connection open, sending nothing, until the client hangs up, the
        proxy stops, or ``seconds`` pass (``None``: no limit)."""
        deadline = math.inf if seconds is None else time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._proxy._closing.is_set() or self._conn.client_gone():
                return
            self._proxy._closing.wait(POLL)


Responder = Callable[[Writer], None]


def html_answer(
    body: bytes = b"<!doctype html><title>Welcome</title><p>Our new website!</p>",
    status: int = 200,
) -> Responder:
    """A responder that answers with an HTML page."""

    def respond(out: Writer) -> None:
        out.exchange.status = status
        out.send(
            f"HTTP/1.1 {status} OK\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )

    return respond


def endless_line(
    total: int = 40 * 2**20, piece: int = 64 * 2**10, *, hold: bool = True
) -> Responder:
    """A responder that answers 200 ``text/event-stream`` and then sends ``x`` bytes
    without a single line end, ``piece`` bytes per chunk, up to ``total`` bytes (or
    until the client hangs up); then keeps the connection open if ``hold``."""
    chunk = f"{piece:x}\r\n".encode() + b"x" * piece + b"\r\n"

    def respond(out: Writer) -> None:
        out.exchange.status = 200
        if not out.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ):
            return
        sent = 0
        while sent < total:
            if not out.send(chunk):
                return
            sent += piece
            out.exchange.body_bytes = sent
        if hold:
            out.hold()

    return respond


class _Conn:
    """One client connection, and the server connection of its current exchange."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.upstream: socket.socket | None = None
        self.exchange: Exchange | None = None
        self.buffer = bytearray()

    def client_gone(self) -> bool:
        """Whether the client hung up (EOF or an error on its socket)."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable:
                return False
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def shut(self, *, reset: bool = False) -> None:
        """Wake this connection's thread from another one: shut its sockets down
        (the owning thread closes them)."""
        for sock in (self.sock, self.upstream):
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                if reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)


class FaultProxy:
    """A TCP proxy on 127.0.0.1 to an HTTP server, with switchable faults.

    Args:
        target: The server's base URL, ``http://127.0.0.1:<port>``.

    Example::

        with LocalRequence(TEMPLATES) as rq, FaultProxy(rq.base_url) as proxy:
            token = encode_access_token(rq.bearer_for("default"), proxy.base_url)
            proxy.cut_every(55)
    """

    def __init__(self, target: str, *, host: str = "127.0.0.1") -> None:
        scheme, _, rest = target.partition("://")
        hostport = rest.split("/", 1)[0]
        if scheme != "http" or ":" not in hostport:
            raise ValueError(f"target must be http://host:port, got {target!r}")
        target_host, _, target_port = hostport.rpartition(":")
        self.target = f"http://{hostport}"
        self._target_addr = (target_host, int(target_port))
        self.host = host
        self.port = 0
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closing = threading.Event()
        self._listener: socket.socket | None = None
        self._want_listening = True
        self._listen_error: OSError | None = None
        self._listening_changed = threading.Condition(self._lock)
        self._accept_thread: threading.Thread | None = None
        self._conns: dict[_Conn, threading.Thread] = {}
        self._threads: list[threading.Thread] = []
        # Behaviours.
        self._cuts: list[_Cut] = []
        self._stalls: list[_Stall] = []
        self._slow: _Slow | None = None
        self._drops: list[_Rule] = []
        self._replacements: list[_Rule] = []

    # --- life cycle ----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        if self._accept_thread is not None:
            raise ProxyError("the proxy is already running")
        self._listener = self._listen()
        self.port = self._listener.getsockname()[1]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"fault-proxy-{self.port}-accept", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Close every connection and join every thread; raise if one is left."""
        self._closing.set()
        with self._lock:
            conns = list(self._conns)
            self._listening_changed.notify_all()
        for conn in conns:
            conn.shut()
        deadline = time.monotonic() + JOIN_TIMEOUT
        threads = [t for t in (self._accept_thread, *self._all_threads()) if t is not None]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        left = [t.name for t in threads if t.is_alive()]
        if left:
            raise ProxyError(f"threads of the proxy did not stop: {left}")

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.stop()
        except ProxyError:
            if exc is None:
                raise

    @property
    def threads(self) -> list[threading.Thread]:
        """The proxy's threads that are still alive."""
        alive = [t for t in self._all_threads() if t.is_alive()]
        if self._accept_thread is not None and self._accept_thread.is_alive():
            alive.append(self._accept_thread)
        return alive

    def _all_threads(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads)

    # --- behaviours ------------------------------------------------------------------

    def pass_through(self) -> None:
        """Switch every behaviour off (stalled exchanges go on) and listen again."""
        with self._lock:
            self._cuts.clear()
            self._stalls.clear()
            self._slow = None
            self._drops.clear()
            self._replacements.clear()
        self.accept()

    def cut_every(
        self,
        k: int,
        *,
        path: str | None = "/task/watch",
        progress: bool = True,
        count: int | None = None,
    ) -> None:
        """Cut answers (to ``path``) after ``k`` bytes of content; see the module doc.

        ``count``: how many answers to cut (``None``: every one from now on)."""
        if k < 1:
            raise ValueError("k must be at least 1")
        with self._lock:
            self._cuts = [_Cut(k, path, progress, count)]

    def stall(
        self,
        seconds: float | None = None,
        *,
        path: str | None = None,
        method: str | None = None,
        live: bool = True,
        new: bool = True,
    ) -> None:
        """Forward nothing for matching exchanges for ``seconds`` (``None``: until
        :meth:`pass_through`): those in flight now (``live``), those starting
        from now on (``new``)."""
        until = math.inf if seconds is None else time.monotonic() + seconds
        with self._lock:
            in_flight = frozenset(
                c.exchange.id
                for c in self._conns
                if c.exchange is not None and c.exchange.outcome == "open"
            )
            self._stalls.append(
                _Stall(
                    until=until,
                    path=path,
                    method=method,
                    live=in_flight if live else frozenset(),
                    new_from=next(self._ids) if new else None,
                )
            )

    def slow(self, n: int, t: float, *, path: str | None = None) -> None:
        """Send answers' content (to ``path``) ``n`` bytes every ``t`` seconds."""
        if n < 1 or t < 0:
            raise ValueError("n must be at least 1 and t at least 0")
        with self._lock:
            self._slow = _Slow(n, t, path)

    def drop_next(self, path: str, *, method: str | None = "POST", count: int = 1) -> None:
        """Lose the answers of the next ``count`` matching requests (after the server
        handled them)."""
        with self._lock:
            self._drops.append(_Rule(method, path, count))

    def replace_next(
        self,
        path: str,
        responder: Responder,
        *,
        method: str | None = "POST",
        count: int | None = 1,
    ) -> None:
        """Answer the next ``count`` (``None``: every) matching requests with
        ``responder`` instead of forwarding them."""
        with self._lock:
            self._replacements.append(_Rule(method, path, count, responder))

    def refuse(self, *, reset_live: bool = True) -> None:
        """Stop listening: connects are refused. ``reset_live`` also resets every
        open connection (idle keep-alive ones too). Returns once refused."""
        with self._lock:
            self._want_listening = False
            self._listening_changed.notify_all()
            while self._listener is not None and not self._closing.is_set():
                self._listening_changed.wait(1.0)
            conns = list(self._conns) if reset_live else []
            for conn in conns:
                if conn.exchange is not None:
                    conn.exchange._finish("reset")
        for conn in conns:
            conn.shut(reset=True)

    def accept(self) -> None:
        """Listen again (on the same port); returns once connects succeed."""
        with self._lock:
            self._listen_error = None
            self._want_listening = True
            self._listening_changed.notify_all()
            while self._listener is None and not self._closing.is_set():
                if self._listen_error is not None:
                    raise ProxyError(
                        f"cannot listen on port {self.port} again: {self._listen_error}"
                    )
                self._listening_changed.wait(1.0)

    # --- what happened ------------------------------------------------------------------

    def seen(self, path: str = "", method: str | None = None) -> list[Exchange]:
        """The exchanges whose path starts with ``path`` (and of ``method``)."""
        with self._lock:
            return [e for e in self.exchanges if _matches(path, method, e)]

    @property
    def live(self) -> list[Exchange]:
        """Exchanges still going on."""
        with self._lock:
            return [e for e in self.exchanges if e.outcome == "open"]

    # --- accepting ----------------------------------------------------------------------

    def _listen(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            sock.settimeout(POLL)
        except OSError:
            sock.close()
            raise
        return sock

    def _accept_loop(self) -> None:
        # Only this thread touches the listening socket (close and re-open too).
        try:
            while not self._closing.is_set():
                with self._lock:
                    if not self._want_listening and self._listener is not None:
                        self._listener.close()
                        self._listener = None
                        self._listening_changed.notify_all()
                    elif self._want_listening and self._listener is None:
                        try:
                            self._listener = self._listen()
                        except OSError as err:  # the port was taken meanwhile
                            self._listen_error = err
                            self._want_listening = False
                        self._listening_changed.notify_all()
                    listener = self._listener
                    if listener is None:
                        self._listening_changed.wait(POLL)
                        continue
                try:
                    sock, _ = listener.accept()
                except (TimeoutError, BlockingIOError):
                    continue
                with self._lock:
                    if self._closing.is_set() or not self._want_listening:
                        # Refused between accept and here: reset it.
                        _reset(sock)
                        continue
                    sock.settimeout(POLL)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conn = _Conn(sock)
                    thread = threading.Thread(
                        target=self._serve,
                        args=(conn,),
                        name=f"fault-proxy-{self.port}-conn",
                        daemon=True,
                    )
                    self._conns[conn] = thread
                    self._threads.append(thread)
                thread.start()
        finally:
            with self._lock:
                if self._listener is not None:
                    self._listener.close()
                    self._listener = None
                self._listening_changed.notify_all()

    # --- one client connection ----------------------------------------------------------

    def _serve(self, conn: _Conn) -> None:
        try:
            while not self._closing.is_set():
                request = self._read_request(conn)
                if request is None:
                    return
                head, body, method, path = request
                with self._lock:
                    exchange = Exchange(next(self._ids), method, path)
                    self.exchanges.append(exchange)
                    conn.exchange = exchange
                try:
                    keep = self._exchange(conn, exchange, head, body)
                except _Closed:
                    keep = False
                    exchange._finish("stopped" if self._closing.is_set() else "client-gone")
                except OSError:
                    keep = False
                    exchange._finish("client-gone")
                finally:
                    self._close_upstream(conn)
                    exchange._finish("ok")
                if not keep:
                    return
        finally:
            self._close_upstream(conn)
            with contextlib.suppress(OSError):
                conn.sock.close()
            with self._lock:
                self._conns.pop(conn, None)
                if conn.exchange is not None:
                    conn.exchange._finish("stopped" if self._closing.is_set() else "client-gone")

    def _read_request(self, conn: _Conn) -> tuple[bytes, bytes, str, str] | None:
        """The next request on the connection, or ``None`` when it ends."""
        idle_until = time.monotonic() + IDLE_TIMEOUT
        while b"\r\n\r\n" not in conn.buffer:
            if len(conn.buffer) > 64 * 1024:
                return None
            data = self._recv(conn.sock, until=idle_until, conn=None)
            if not data:
                return None
            conn.buffer += data
        end = conn.buffer.index(b"\r\n\r\n") + 4
        head = bytes(conn.buffer[:end])
        del conn.buffer[:end]
        request_line, headers = _parse_head(head)
        parts = request_line.split(" ")
        if len(parts) != 3:
            return None
        method, path = parts[0], parts[1]
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return None  # the client never sends chunked bodies
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_BODY:
            return None
        deadline = time.monotonic() + IO_TIMEOUT
        while len(conn.buffer) < length:
            data = self._recv(conn.sock, until=deadline, conn=None)
            if not data:
                return None
            conn.buffer += data
        body = bytes(conn.buffer[:length])
        del conn.buffer[:length]
        return head, body, method, path

    def _exchange(self, conn: _Conn, exchange: Exchange, head: bytes, body: bytes) -> bool:
        """Handle one request; returns whether the client connection stays open."""
        replacement = self._take(self._replacements, exchange)
        if replacement is not None:
            assert replacement.responder is not None
            replacement.responder(Writer(self, conn, exchange))
            exchange._finish("replaced")
            return False
        self._hold(conn, exchange)  # a stall of new exchanges: before the server sees it
        try:
            upstream = socket.create_connection(self._target_addr, timeout=IO_TIMEOUT)
        except OSError:
            exchange.status = 502
            self._send(
                conn,
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 27\r\nConnection: close\r\n\r\nfault proxy: server is down",
            )
            exchange._finish("upstream-error")
            return False
        upstream.settimeout(POLL)
        with self._lock:
            conn.upstream = upstream
        if self._closing.is_set():
            raise _Closed
        _send_all(upstream, head + body, self._closing)
        drop = self._take(self._drops, exchange) is not None

        reader = _Reader(self, upstream, conn)
        raw_head = reader.read_until(b"\r\n\r\n", deadline=time.monotonic() + IO_TIMEOUT)
        if raw_head is None:
            exchange._finish("upstream-error")
            return False
        status_line, headers = _parse_head(raw_head)
        exchange.status = int(status_line.split(" ")[1])
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length_header = headers.get("content-length")
        no_body = exchange.method == "HEAD" or exchange.status in (204, 304)
        closes = "close" in headers.get("connection", "").lower()

        if drop:
            if length_header is not None and not no_body:
                reader.read_exact(int(length_header), deadline=time.monotonic() + IO_TIMEOUT)
            exchange._finish("dropped")
            return False

        if no_body:
            self._send(conn, raw_head)
            return not closes
        if length_header is not None:
            content = reader.read_exact(int(length_header), deadline=time.monotonic() + IO_TIMEOUT)
            if content is None:
                exchange._finish("upstream-error")
                return False
            if "json" in headers.get("content-type", "").lower():
                content = content.replace(self.target.encode(), self.base_url.encode())
                raw_head = _with_header(raw_head, "Content-Length", str(len(content)))
            self._send(conn, raw_head)
            if not self._relay(conn, exchange, content, chunked=False):
                return False
            return not closes
        self._send(conn, raw_head)
        if chunked:
            return self._relay_chunked(conn, exchange, reader) and not closes
        while True:  # delimited by the end of the connection
            data = reader.read_some(deadline=None)
            if not data:
                return False
            if not self._relay(conn, exchange, data, chunked=False):
                return False

    def _relay_chunked(self, conn: _Conn, exchange: Exchange, reader: _Reader) -> bool:
        while True:
            line = reader.read_until(b"\r\n", deadline=None)
            if line is None:
                exchange._finish("upstream-error")
                return False
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                reader.read_until(b"\r\n", deadline=time.monotonic() + IO_TIMEOUT)  # trailers
                self._send(conn, b"0\r\n\r\n")
                return True
            data = reader.read_exact(size, deadline=None)
            crlf = reader.read_exact(2, deadline=None)
            if data is None or crlf is None:
                exchange._finish("upstream-error")
                return False
            if not self._relay(conn, exchange, data, chunked=True):
                return False

    def _relay(self, conn: _Conn, exchange: Exchange, content: bytes, *, chunked: bool) -> bool:
        """Send a piece of an answer's content, applying stall, slow and cut;
        returns ``False`` once the exchange was cut."""
        _scan_events(exchange, content)
        position = 0
        while position < len(content):
            self._hold(conn, exchange)
            with self._lock:
                cut = next((c for c in self._cuts if _matches(c.path, None, exchange)), None)
                slow = (
                    self._slow if self._slow and _matches(self._slow.path, None, exchange) else None
                )
            piece = content[position:]
            if slow is not None:
                piece = piece[: slow.n]
            cut_at = _cut_position(cut, exchange) if cut is not None else None
            cutting = cut_at is not None and exchange.body_bytes + len(piece) >= cut_at
            if cutting:
                assert cut is not None and cut_at is not None
                piece = piece[: max(0, cut_at - exchange.body_bytes)]
            if piece:
                self._send(
                    conn, f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece
                )
                exchange.body_bytes += len(piece)
                position += len(piece)
            if cutting:
                assert cut is not None
                with self._lock:
                    if cut.left is not None:
                        cut.left -= 1
                        if cut.left <= 0 and cut in self._cuts:
                            self._cuts.remove(cut)
                exchange._finish("cut")
                return False
            pause = slow.t if slow is not None else 0.0
            if pause > 0 and self._closing.wait(pause):
                raise _Closed
        return True

    def _hold(self, conn: _Conn, exchange: Exchange) -> None:
        """Wait while a stall holds this exchange."""
        while True:
            now = time.monotonic()
            with self._lock:
                self._stalls = [s for s in self._stalls if s.until > now]
                until = max(
                    (
                        s.until
                        for s in self._stalls
                        if _matches(s.path, s.method, exchange)
                        and (
                            exchange.id in s.live
                            or (s.new_from is not None and exchange.id >= s.new_from)
                        )
                    ),
                    default=None,
                )
            if until is None:
                exchange.held = False
                return
            exchange.held = True
            if self._closing.is_set() or exchange.outcome != "open" or conn.client_gone():
                exchange.held = False
                raise _Closed
            self._closing.wait(min(POLL, until - now))

    def _take(self, rules: list[_Rule], exchange: Exchange) -> _Rule | None:
        with self._lock:
            for rule in rules:
                if _matches(rule.path, rule.method, exchange):
                    if rule.left is not None:
                        rule.left -= 1
                        if rule.left <= 0:
                            rules.remove(rule)
                    return rule
        return None

    def _send(self, conn: _Conn, data: bytes) -> None:
        if conn.exchange is not None and conn.exchange.outcome not in ("open", "replaced"):
            raise _Closed  # reset by refuse()
        try:
            _send_all(conn.sock, data, self._closing)
        except OSError:
            raise _Closed from None

    def _recv(self, sock: socket.socket, *, until: float | None, conn: _Conn | None) -> bytes:
        """Some bytes from ``sock``; ``b""`` at its end, at ``until``, or when the proxy
        stops. With ``conn``, also when that connection's client hangs up."""
        ticks = 0
        while not self._closing.is_set():
            try:
                return sock.recv(65536)
            except TimeoutError:
                pass
            except OSError:
                return b""
            if until is not None and time.monotonic() > until:
                return b""
            ticks += 1
            if conn is not None and ticks % 5 == 0 and conn.client_gone():
                if conn.exchange is not None:
                    conn.exchange._finish("client-gone")
                return b""
        return b""

    def _close_upstream(self, conn: _Conn) -> None:
        with self._lock:
            upstream, conn.upstream = conn.upstream, None
        if upstream is not None:
            with contextlib.suppress(OSError):
                upstream.close()


class _Reader:
    """Buffered reads from the server's socket of one exchange."""

    def __init__(self, proxy: FaultProxy, sock: socket.socket, conn: _Conn) -> None:
        self._proxy = proxy
        self._sock = sock
        self._conn = conn
        self._buffer = bytearray()

    def _fill(self, deadline: float | None) -> bool:
        data = self._proxy._recv(self._sock, until=deadline, conn=self._conn)
        if not data:
            if self._proxy._closing.is_set():
                raise _Closed
            return False
        self._buffer += data
        return True

    def read_until(self, marker: bytes, *, deadline: float | None) -> bytes | None:
        while marker not in self._buffer:
            if len(self._buffer) > MAX_BODY or not self._fill(deadline):
                return None
        end = self._buffer.index(marker) + len(marker)
        data = bytes(self._buffer[:end])
        del self._buffer[:end]
        return data

    def read_exact(self, n: int, *, deadline: float | None) -> bytes | None:
        if n > MAX_BODY:
            return None
        while len(self._buffer) < n:
            if not self._fill(deadline):
                return None
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def read_some(self, *, deadline: float | None) -> bytes:
        if not self._buffer and not self._fill(deadline):
            return b""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def _with_header(head: bytes, name: str, value: str) -> bytes:
    lines = head.decode("latin-1").split("\r\n")
    out = [
        f"{name}: {value}" if line.partition(":")[0].strip().lower() == name.lower() else line
        for line in lines
    ]
    return "\r\n".join(out).encode("latin-1")


def _scan_events(exchange: Exchange, content: bytes) -> None:
    """Find where the first complete SSE event (a frame with a ``data:`` line) ends."""
    if exchange._first_event_end is not None or len(exchange._scan) > 2**20:
        return  # found, or not an event stream
    exchange._scan += content  # all content so far: offsets are content offsets
    text = bytes(exchange._scan).replace(b"\r\n", b"\n")
    if len(text) != len(exchange._scan):
        return  # CRLF streams: the local server never sends them; no progress rule
    offset = 0
    while True:
        end = text.find(b"\n\n", offset)
        if end < 0:
            return
        frame = text[offset : end + 1]
        if frame.startswith(b"data:") or b"\ndata:" in frame:
            exchange._first_event_end = end + 2
            exchange._scan.clear()
            return
        offset = end + 2


def _cut_position(cut: _Cut, exchange: Exchange) -> int | None:
    """The content offset at which to cut this answer, if known yet."""
    if not cut.progress:
        return cut.k
    if exchange._first_event_end is None:
        return None
    return math.ceil(exchange._first_event_end / cut.k) * cut.k


def _send_all(sock: socket.socket, data: bytes, closing: threading.Event) -> None:
    """``sendall`` on a socket with a short time-out, bounded by :data:`IO_TIMEOUT`."""
    view = memoryview(data)
    deadline = time.monotonic() + IO_TIMEOUT
    while view:
        if closing.is_set():
            raise _Closed
        try:
            sent = sock.send(view)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise _Closed from None
            continue
        view = view[sent:]


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
