"""HTTP for the client: one keep-alive session a process, error mapping, retries.

Nothing here ever puts the bearer token into a message or a log line: it
travels only in the ``Authorization`` header.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import requests
import requests.adapters

from ._config import RetryPolicy, Timeouts
from ._errors import (
    ApiError,
    AuthenticationError,
    ClientClosedError,
    RequenceError,
    RequenceUnreachableError,
    _summary,
)
from ._protocol import STATUS_UNREACHABLE

log = logging.getLogger("requence_task")
T = TypeVar("T")


class Unreachable(Exception):
    """One attempt found Requence unreachable (internal; retried, then made public)."""

    def __init__(self, status: int | None = None, cause: BaseException | None = None) -> None:
        super().__init__(f"unreachable (status {status})" if status else "unreachable")
        self.status = status
        self.cause = cause


def error_text(response: requests.Response) -> str:
    """The reason in a non-2xx answer: its plain text, or the message of its JSON."""
    try:
        text = response.text
    except Exception:  # an undecodable body still gets a message
        return f"HTTP {response.status_code}"
    text = text.strip()
    if text.startswith("{"):
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict):
            for key in ("message", "error", "detail"):
                if isinstance(body.get(key), str):
                    return _summary(body[key])
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

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=4, pool_maxsize=self._pool_size, max_retries=0
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["Authorization"] = f"Bearer {self._bearer}"
        session.headers["User-Agent"] = "requence_task"
        session.verify = self._verify
        return session

    def reset_after_fork(self) -> None:
        # Another thread may have held the lock at fork: the child gets a new one.
        self._lock = threading.Lock()
        self._session = None
        self._pid = os.getpid()

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None and self._pid == os.getpid():
            session.close()

    def send(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        stream: bool = False,
        read_timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """One attempt. Gateway statuses and transport failures raise :class:`Unreachable`;
        401/403 raise :class:`AuthenticationError`; any other answer is returned."""
        if self.stop.is_set():
            raise ClientClosedError("The requence_task client was closed.")
        all_headers = dict(headers or {})
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        timeout = (self.timeouts.connect, read_timeout or self.timeouts.read)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=ResourceWarning)
                response = self.session.request(
                    method,
                    url,
                    data=body,
                    headers=all_headers,
                    stream=stream,
                    timeout=timeout,
                    # Per request: a session's verify loses to REQUESTS_CA_BUNDLE.
                    verify=self._verify,
                )
        except requests.exceptions.SSLError as err:
            # Not a passing outage: retrying cannot fix a certificate.
            raise RequenceError(
                f"The TLS connection to {_origin(url)} failed ({err.__class__.__name__}): "
                "its certificate could not be verified. Fix the certificate, or pass "
                "Client(verify='/path/to/ca-bundle.pem'); verify=False turns checks off."
            ) from None
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,  # the answer was cut off: lost
        ) as err:
            log.debug("%s %s: %s", method, _path(url), type(err).__name__)
            raise Unreachable(cause=err) from None
        except (requests.RequestException, UnicodeError) as err:
            # No "from err": a header error's text would carry the bearer.
            raise RequenceError(
                f"The request to Requence could not be made: {type(err).__name__}"
            ) from None
        log.debug("%s %s -> %d", method, _path(url), response.status_code)
        if response.status_code in STATUS_UNREACHABLE:
            status = response.status_code
            response.close()
            raise Unreachable(status=status)
        if response.status_code in (401, 403):
            message = error_text(response)
            response.close()
            raise AuthenticationError(
                f"Requence refused the access token (HTTP {response.status_code}): {message} "
                "Check that the token is current and allowed to do this.",
                status=response.status_code,
            )
        return response

    def retrying(self, attempt: Callable[[], T], *, what: str) -> T:
        """Run ``attempt`` until it stops raising :class:`Unreachable`, within the budget."""
        first_failure: float | None = None
        tries = 0
        while True:
            try:
                return attempt()
            except Unreachable as err:
                tries += 1
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                spent = now - first_failure
                if spent >= self.retry.budget:
                    raise RequenceUnreachableError(
                        f"Requence is not reachable right now ({what}"
                        + (f", HTTP {err.status}" if err.status else "")
                        + f", {tries} attempts over {spent:.1f} s); retry later.",
                        status=err.status,
                        attempts=tries,
                    ) from err.cause
                pause = min(self.retry.delay(tries - 1), self.retry.budget - spent)
                log.debug("%s: unreachable, retry %d in %.2f s", what, tries, pause)
                if self.stop.wait(max(pause, 0.0)):
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


def _path(url: str) -> str:
    """A URL without scheme and host, for log lines."""
    rest = url.split("://", 1)[-1]
    return "/" + rest.split("/", 1)[1] if "/" in rest else "/"


def _origin(url: str) -> str:
    """Scheme and host of a URL, for messages."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"
