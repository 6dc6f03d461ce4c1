"""HTTP for the client: one keep-alive session a process, error mapping, retries.

Nothing here ever puts the bearer token into a message or a log line: it
travels only in the ``Authorization`` header.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterable
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool

from ._config import RetryPolicy, Timeouts
from ._errors import (
    ApiError,
    AuthenticationError,
    ClientClosedError,
    RequenceError,
    RequenceUnreachableError,
    _summary,
    _UnreachableWhileWaiting,
)
from ._protocol import STATUS_UNREACHABLE
from ._wire import error_message

log = logging.getLogger("requence_task")
T = TypeVar("T")


class _HideFilePaths(logging.Filter):
    """urllib3's debug lines name each request's path: for a file URL (a capability)
    the line keeps only that a file request was made."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            getattr(_current, "files", False)
            and isinstance(args, tuple)
            and any(isinstance(arg, str) and arg.startswith("/") for arg in args)
        ):
            record.msg, record.args = "a request to a file URL (its path is not shown)", ()
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_HideFilePaths())


class Unreachable(Exception):
    """One attempt found Requence unreachable (internal; retried, then made public).

    Attributes:
        status: The gateway status, or ``None`` when no answer came.
        cause: The transport's exception, if there was one.
        reason: What happened, for messages (``connection refused at host:port``).
    """

    def __init__(
        self,
        status: int | None = None,
        cause: BaseException | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        self.status = status
        self.cause = cause
        self.reason = reason or (f"HTTP {status}" if status else "no answer")
        # Cut off by the deadline of the whole call (its retry budget), not its own:
        # the earlier attempts' failure is the one to report.
        self.budget_cut = False
        super().__init__(self.reason)


class DeadlinePassed(Exception):
    """An answer did not come whole within a request's overall deadline."""


def _host_port(url: str) -> str:
    """``host:port`` of a URL, for messages (never its path: that may be a capability)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{parts.hostname}:{port}"
    except ValueError:
        return "the server"


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and what lies under it: causes, contexts, and urllib3's wrapped reasons."""
    found: list[BaseException] = []
    todo: list[BaseException | None] = [err]
    while todo and len(found) < 20:
        item = todo.pop()
        if item is None or any(item is seen for seen in found):
            continue
        found.append(item)
        reason = getattr(item, "reason", None)
        todo.extend((item.__cause__, item.__context__))
        todo.extend(e for e in (reason, *item.args) if isinstance(e, BaseException))
    return found


def _timed_out(err: BaseException) -> bool:
    """Whether a wait for bytes timed out somewhere under ``err``."""
    return any(
        isinstance(e, (TimeoutError, requests.Timeout)) or "Timeout" in type(e).__name__
        for e in _chain(err)
    )


def describe_failure(err: BaseException, url: str, *, seconds: float | None = None) -> str:
    """What an attempt that found Requence unreachable ran into, in words.

    Says the host and port, never the path, the query or a header.
    """
    where = _host_port(url)
    chain = _chain(err)
    kinds = tuple(type(e) for e in chain)

    def has(*classes: type[BaseException]) -> bool:
        return any(issubclass(kind, classes) for kind in kinds)

    if has(DeadlinePassed):
        return f"no whole answer from {where} within {seconds or 0:.1f} s"
    if has(ConnectionRefusedError):
        return f"connection refused at {where}"
    if has(socket.gaierror) or any("NameResolution" in kind.__name__ for kind in kinds):
        return f"the name {where.rsplit(':', 1)[0]} could not be resolved"
    if has(requests.ConnectTimeout):
        return f"no connection to {where} within {seconds or 0:.3g} s"
    if has(requests.ReadTimeout):
        return f"no answer from {where} within {seconds or 0:.3g} s"
    if has(requests.exceptions.ChunkedEncodingError) or any(
        kind.__name__ in ("IncompleteRead", "ProtocolError", "RemoteDisconnected") for kind in kinds
    ):
        return f"the connection to {where} was cut off before a whole answer came"
    if has(ConnectionResetError):
        return f"the connection to {where} was reset"
    return f"the connection to {where} failed ({type(err).__name__})"


class RetryState:
    """Whether calls of one job are failing to reach Requence right now, and why.

    A call that retries (creation's prepare and finalize, a stream's
    reconnects) records each failure here; a wait that ends can then say
    what really held it up. Read from any thread: each field is one
    reference, replaced whole.
    """

    __slots__ = ("attempts", "failing_since", "reason", "status")

    def __init__(self) -> None:
        self.failing_since: float | None = None  # time.monotonic()
        self.reason: str | None = None
        self.status: int | None = None
        self.attempts = 0

    @property
    def failing(self) -> bool:
        """Whether the last attempt found Requence unreachable."""
        return self.failing_since is not None

    def failed(self, err: Unreachable) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            self.attempts = 0
        self.attempts += 1
        self.reason, self.status = err.reason, err.status

    def succeeded(self) -> None:
        self.failing_since = None

    def describe(self) -> str:
        """``connection refused at host:port, 5 attempts over 10.0 s``."""
        since = self.failing_since
        spent = time.monotonic() - since if since is not None else 0.0
        attempts = self.attempts
        return (
            f"{self.reason or 'no answer'}, {attempts} attempt{'s' if attempts != 1 else ''} "
            f"over {spent:.1f} s"
        )

    def wait_ended(self, what: str, timeout: float | None, meanwhile: str) -> RequenceError:
        """The error for a wait that ended while these calls still retry.

        Args:
            what: What was waited for (``The task's start``).
            timeout: The caller's time-out.
            meanwhile: What that means for the task, and what the client does.
        """
        return _UnreachableWhileWaiting(
            f"{what} did not come within {timeout} s: Requence is not reachable "
            f"({self.describe()}); {meanwhile}",
            status=self.status,
            attempts=self.attempts,
            timeout=timeout,
        )


class Backoff:
    """The backoff and budget of one run of retries: the one bookkeeping of both
    a request's retries (:meth:`Transport.retrying`) and a stream's reconnects.

    The budget (``policy.budget`` seconds) starts when the backoff is made, for
    a request (whose budget bounds the whole call); or, made with
    ``from_first_failure=True``, at the first failure after the last
    :meth:`reset`, for a stream (whose budget counts from its last event).

    Args:
        policy: The client's retry policy.
        bound: An earlier end (``time.monotonic()``) that the budget may not pass:
            the deadline of an enclosing call.
        from_first_failure: Start the budget at the first failure, not now.
    """

    __slots__ = ("_bound", "_from_first_failure", "attempts", "deadline", "policy", "started")

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        bound: float | None = None,
        from_first_failure: bool = False,
    ) -> None:
        self.policy = policy
        self._bound = bound
        self._from_first_failure = from_first_failure
        self.attempts = 0  # failed attempts since the budget started
        self.started: float | None = None
        self.deadline: float | None = None
        if not from_first_failure:
            self._start(time.monotonic())

    def _start(self, now: float) -> None:
        self.started = now
        deadline = now + self.policy.budget
        if self._bound is not None and self._bound < deadline:
            deadline = self._bound
        self.deadline = deadline

    def reset(self) -> None:
        """Progress was made: the next failure starts afresh (streams only)."""
        self.attempts = 0
        if self._from_first_failure:
            self.started = self.deadline = None

    def failed(self) -> float | None:
        """Count one failed attempt; the pause before the next, or ``None`` once the
        budget is spent (give up)."""
        now = time.monotonic()
        if self.deadline is None:
            self._start(now)
        assert self.deadline is not None
        self.attempts += 1
        left = self.deadline - now
        if left <= 0:
            return None
        return min(self.policy.delay(self.attempts - 1), left)

    def left(self) -> float:
        """Seconds until the budget ends (0 once it has, or before it started)."""
        if self.deadline is None:
            return 0.0
        return max(self.deadline - time.monotonic(), 0.0)

    def room_for(self, seconds: float) -> bool:
        """Whether an attempt that takes ``seconds`` still ends before the budget does."""
        return self.deadline is not None and self.deadline - time.monotonic() > seconds

    def spent(self) -> float:
        """Seconds since the budget started."""
        return 0.0 if self.started is None else time.monotonic() - self.started


# --- the overall deadline of a request ----------------------------------------------------------

_current = threading.local()  # .entry: the _Deadline of this thread's request; .call_deadline


class _Deadline:
    """The overall deadline of the request this thread is making."""

    __slots__ = ("at", "capped", "expired", "read", "span")

    def __init__(self, at: float | None, read: float, span: float = 0.0) -> None:
        self.at = at  # time.monotonic(); None: ``span`` seconds from the first read
        self.span = span
        self.read = read  # the read time-out of each wait for bytes
        self.expired = False  # a read found the deadline passed
        self.capped = False  # a read waited less than ``read``: until the deadline

    def time_left(self) -> float:
        """The read time-out for the next wait for bytes (0: the deadline has passed)."""
        if self.at is None:  # an upload: its answer's deadline starts once the body is sent
            self.at = time.monotonic() + self.span
        left = self.at - time.monotonic()
        if left <= 0:
            self.expired = True
            raise TimeoutError("no whole answer by the request's deadline")
        if left < self.read:
            self.capped = True
            return left
        return self.read


class _DeadlineSocket:
    """Mixed into the class of our connections' sockets: each read of an answer
    waits at most until the request's overall deadline (no thread watches it)."""

    __slots__ = ()

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        entry: _Deadline | None = getattr(_current, "entry", None)
        if entry is not None:
            self.settimeout(entry.time_left())  # type: ignore[attr-defined]
        return super().recv_into(buffer, nbytes, flags)  # type: ignore[misc,no-any-return]

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        entry: _Deadline | None = getattr(_current, "entry", None)
        if entry is not None:
            self.settimeout(entry.time_left())  # type: ignore[attr-defined]
        return super().recv(bufsize, flags)  # type: ignore[misc,no-any-return]


_socket_classes: dict[type, type] = {}


def _keep_deadlines(sock: object) -> None:
    """Make ``sock`` (a socket or TLS socket) read with the thread's deadline."""
    cls = type(sock)
    if not isinstance(sock, socket.socket) or issubclass(cls, _DeadlineSocket):
        return
    aware = _socket_classes.get(cls)
    if aware is None:
        aware = _socket_classes[cls] = type(
            f"_Deadline{cls.__name__}", (_DeadlineSocket, cls), {"__slots__": ()}
        )
    with contextlib.suppress(TypeError):  # a layout we cannot adapt: time-outs still apply
        sock.__class__ = aware


class _DeadlineAware:
    """Mixed into urllib3's connections: their sockets keep the request's deadline."""

    sock: Any

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _keep_deadlines(self.sock)


class _HTTPConnection(_DeadlineAware, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineAware, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with connections that keep the overall deadline."""

    @staticmethod
    def _own_pools(manager: Any) -> Any:
        manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        return manager

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self._own_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        return self._own_pools(super().proxy_manager_for(proxy, **proxy_kwargs))


class Environment:
    """What requests would look up in the environment on every request, read once.

    Proxies (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``)
    and the CA bundle (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``) when the
    client is made; ``.netrc`` never (it would replace the bearer).
    """

    def __init__(self, verify: bool | str) -> None:
        self._proxies = {
            key: value for key, value in urllib.request.getproxies_environment().items() if value
        }
        self._cache: dict[tuple[str, str], dict[str, str]] = {}
        if verify is True:
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            self.verify: bool | str = bundle or True
        else:
            self.verify = verify

    def proxies_for(self, url: str) -> dict[str, str]:
        """The proxy to use for ``url`` (an empty dict: none)."""
        if not self._proxies:
            return {}
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        found = self._cache.get(key)
        if found is None:
            found = {}
            host = parts.hostname or ""
            if not (
                self._proxies.get("no")
                and urllib.request.proxy_bypass_environment(  # type: ignore[attr-defined]
                    parts.netloc or host, {"no": self._proxies["no"]}
                )
            ):
                proxy = self._proxies.get(parts.scheme) or self._proxies.get("all")
                if proxy:
                    found = {parts.scheme: proxy}
            self._cache[key] = found
        return found


def error_text(response: requests.Response) -> str:
    """The reason in a non-2xx answer: its plain text, or the message of its JSON."""
    try:
        text = response.text
    except Exception:  # an undecodable body still gets a message
        return f"HTTP {response.status_code}"
    text = text.strip()
    message = error_message(text)
    if message is not None:
        return _summary(message)
    return _summary(text) if text else f"HTTP {response.status_code}"


class Transport:
    """Requests for one client: a session per process, time-outs on every socket."""

    def __init__(
        self,
        *,
        bearer: str,
        timeouts: Timeouts,
        retry: RetryPolicy,
        pool_size: int,
        verify: bool | str,
        stop: threading.Event,
    ) -> None:
        self._bearer = bearer
        self.timeouts = timeouts
        self.retry = retry
        self._pool_size = pool_size
        self._verify = verify
        self.stop = stop
        self._lock = threading.Lock()
        self._session: requests.Session | None = None
        self._pid = os.getpid()
        self._files_session: requests.Session | None = None
        self._files_pid = self._pid
        self._reading: set[requests.Response] = set()
        self._environment = Environment(verify)

    def __repr__(self) -> str:
        return f"<Transport pool_size={self._pool_size}>"

    @property
    def session(self) -> requests.Session:
        """The keep-alive session of this process (a fresh one after ``fork``)."""
        pid = os.getpid()
        with self._lock:
            if self._session is None or self._pid != pid:
                # After fork the parent's pooled sockets are shared: never reuse them.
                self._session = self._new_session()
                self._pid = pid
            return self._session

    def _new_session(self, *, files: bool = False) -> requests.Session:
        session = requests.Session()
        # No per-request environment: .netrc would replace the bearer with Basic
        # auth, and every lookup costs time. Proxies and CA bundle: read once.
        session.trust_env = False
        adapter = _Adapter(pool_connections=4, pool_maxsize=self._pool_size, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        if not files:
            session.headers["Authorization"] = f"Bearer {self._bearer}"
        session.headers["User-Agent"] = "requence_task"
        session.verify = self._environment.verify
        return session

    @property
    def files_session(self) -> requests.Session:
        """The session for file URLs: it has no ``Authorization`` header at all (file
        URLs are capabilities, and the bearer never leaves for the files service)."""
        pid = os.getpid()
        with self._lock:
            if self._files_session is None or self._files_pid != pid:
                self._files_session = self._new_session(files=True)
                self._files_pid = pid
            return self._files_session

    def reading(self, response: requests.Response) -> None:
        """Track a download's answer: :meth:`close` cuts it off."""
        with self._lock:
            self._reading.add(response)

    def done_reading(self, response: requests.Response) -> None:
        with self._lock:
            self._reading.discard(response)

    def reset_after_fork(self) -> None:
        # Another thread may have held the lock at fork: the child gets a new one.
        self._lock = threading.Lock()
        self._session = self._files_session = None
        self._pid = self._files_pid = os.getpid()
        self._reading = set()

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
            files, self._files_session = self._files_session, None
            reading, self._reading = list(self._reading), set()
        for response in reading:  # downloads under way stop now
            cut_off(response)
        if session is not None and self._pid == os.getpid():
            session.close()
        if files is not None and self._files_pid == os.getpid():
            files.close()

    def send(
        self,
        method: str,
        url: str,
        *,
        body: bytes | Iterable[bytes] | IO[bytes] | None = None,
        content_type: str | None = None,
        stream: bool = False,
        read_timeout: float | None = None,
        headers: dict[str, str] | None = None,
        files: bool = False,
    ) -> requests.Response:
        """One attempt. Gateway statuses and transport failures raise :class:`Unreachable`;
        401/403 raise :class:`AuthenticationError`; any other answer is returned.

        The answer must come whole (for ``stream=True``: its headers) within
        ``connect + read`` seconds, and within the deadline of the retrying
        call it belongs to; a server that trickles it is cut off then.

        ``files=True`` is a request to a file URL: made without the
        ``Authorization`` header, logged with its host only, 401/403 returned
        like any answer, and the deadline of its answer counted from the end
        of its body (an upload may take long; each send still has the read
        time-out as its inactivity time-out).
        """
        if self.stop.is_set():
            raise ClientClosedError("The requence_task client was closed.")
        all_headers = dict(headers or {})
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        connect, read = self.timeouts.connect, read_timeout or self.timeouts.read
        now = time.monotonic()
        at = now + connect + read
        call_deadline: float | None = getattr(_current, "call_deadline", None)
        if call_deadline is not None and call_deadline < at:
            at = call_deadline
        left = max(at - now, 0.001)
        timeout = (min(connect, left), min(read, left))
        entry = _Deadline(None if files else at, timeout[1], at - now)
        shown = _host_port(url) if files else _path(url)
        session = self.files_session if files else self.session
        _current.entry = entry
        _current.files = files
        try:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", category=ResourceWarning)
                    response = session.request(
                        method,
                        url,
                        data=body,
                        headers=all_headers,
                        stream=stream,
                        timeout=timeout,
                        proxies=self._environment.proxies_for(url),
                        verify=self._environment.verify,
                    )
            finally:
                _current.entry = None
                _current.files = False
        except Exception as err:
            if entry.expired or (entry.capped and _timed_out(err)):
                log.debug("%s %s: no whole answer in time", method, shown)
                raise self._passed(url, at - now, budget_cut=at == call_deadline) from None
            if isinstance(err, requests.exceptions.SSLError):
                # Not a passing outage: retrying cannot fix a certificate.
                raise RequenceError(
                    f"The TLS connection to {_origin(url)} failed ({err.__class__.__name__}): "
                    "its certificate could not be verified. Fix the certificate, or pass "
                    "Client(verify='/path/to/ca-bundle.pem'); verify=False turns checks off."
                ) from None
            if isinstance(
                err,
                (
                    requests.ConnectionError,
                    requests.Timeout,
                    requests.exceptions.ChunkedEncodingError,  # the answer was cut off: lost
                ),
            ):
                log.debug("%s %s: %s", method, shown, type(err).__name__)
                seconds = timeout[0] if isinstance(err, requests.ConnectTimeout) else timeout[1]
                raise Unreachable(
                    cause=err, reason=describe_failure(err, url, seconds=seconds)
                ) from None
            if isinstance(err, (requests.RequestException, UnicodeError)):
                # No "from err": a header error's text would carry the bearer.
                raise RequenceError(
                    f"The request to Requence could not be made: {type(err).__name__}"
                ) from None
            raise
        if entry.expired:
            # Cut off at the deadline, the rest of the answer may have looked like
            # an end (an EOF ends the headers): what came is not the answer.
            response.close()
            raise self._passed(url, at - now, budget_cut=at == call_deadline)
        log.debug("%s %s -> %d", method, shown, response.status_code)
        if response.status_code in STATUS_UNREACHABLE:
            status = response.status_code
            response.close()
            raise Unreachable(status=status, reason=f"HTTP {status} from {_host_port(url)}")
        if response.status_code in (401, 403) and not files:
            message = error_text(response)
            response.close()
            raise AuthenticationError(
                f"Requence refused the access token (HTTP {response.status_code}): {message} "
                "Check that the token is current and allowed to do this.",
                status=response.status_code,
            )
        return response

    @staticmethod
    def _passed(url: str, seconds: float, *, budget_cut: bool) -> Unreachable:
        passed = DeadlinePassed()
        err = Unreachable(cause=passed, reason=describe_failure(passed, url, seconds=seconds))
        err.budget_cut = budget_cut
        return err

    def retrying(
        self, attempt: Callable[[], T], *, what: str, state: RetryState | None = None
    ) -> T:
        """Run ``attempt`` until it stops raising :class:`Unreachable`, within the budget.

        The budget bounds the whole call: every attempt, its answer and the
        pauses between them end within ``retry.budget`` seconds of the start
        (or of the enclosing call's end, if that comes first). ``state``, if
        given, records each failure for waiters (see :class:`RetryState`).
        """
        outer: float | None = getattr(_current, "call_deadline", None)
        backoff = Backoff(self.retry, bound=outer)
        _current.call_deadline = backoff.deadline
        last: Unreachable | None = None
        try:
            while True:
                began = time.monotonic()
                try:
                    result = attempt()
                except Unreachable as failure:
                    err = last if failure.budget_cut and last is not None else failure
                    last = err
                    if state is not None:
                        state.failed(err)
                    took = time.monotonic() - began
                    pause = backoff.failed()
                    if pause is not None:
                        log.debug(
                            "%s: unreachable, retry %d in %.2f s", what, backoff.attempts, pause
                        )
                        self._pause(pause)
                        # An attempt that cannot get its answer before the budget ends is
                        # not started (its request could still act after we gave up):
                        # the call gives up at the budget's end instead.
                        if backoff.room_for(took):
                            continue
                        self._pause(backoff.left())
                    tries = backoff.attempts
                    raise RequenceUnreachableError(
                        f"Requence is not reachable right now ({what}: {err.reason}; "
                        f"{tries} attempt{'s' if tries != 1 else ''} over "
                        f"{backoff.spent():.1f} s); retry later.",
                        status=err.status,
                        attempts=tries,
                    ) from err.cause
                if state is not None:
                    state.succeeded()
                return result
        finally:
            _current.call_deadline = outer

    def _pause(self, seconds: float) -> None:
        """Sleep between attempts; :class:`ClientClosedError` if the client closes meanwhile."""
        if seconds > 0 and self.stop.wait(seconds):
            raise ClientClosedError("The requence_task client was closed.") from None

    def expect_ok(self, response: requests.Response, *, what: str) -> requests.Response:
        """Raise :class:`ApiError` for an answer that is not 2xx."""
        if response.ok:
            return response
        message = error_text(response)
        response.close()
        raise ApiError(
            f"{what} failed with HTTP {response.status_code}: {message}",
            status=response.status_code,
            body=message,
        )

    def json(self, response: requests.Response, *, what: str) -> dict[str, Any]:
        """The JSON object of a 2xx answer, or :class:`ApiError` saying what came instead."""
        try:
            body = response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type")
            raise ApiError(
                f"{what}: Requence answered HTTP {response.status_code} with {kind}, not JSON; "
                "is the token's base URL the Requence API?",
                status=response.status_code,
                body=_summary(response.text),
            ) from None
        if not isinstance(body, dict):
            raise ApiError(
                f"{what}: Requence answered a JSON {type(body).__name__}, not an object.",
                status=response.status_code,
            )
        return body


def cut_off(response: requests.Response) -> None:
    """Stop a download under way from another thread: its reader gets an error at once."""
    raw = getattr(response, "raw", None)
    connection = getattr(raw, "_connection", None) or getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        response.close()


def timed_out(err: BaseException) -> bool:
    """Whether a wait for bytes timed out somewhere under ``err``."""
    return _timed_out(err)


def _path(url: str) -> str:
    """A URL without scheme and host, for log lines."""
    rest = url.split("://", 1)[-1]
    return "/" + rest.split("/", 1)[1] if "/" in rest else "/"


def _origin(url: str) -> str:
    """Scheme and host of a URL, for messages."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"
