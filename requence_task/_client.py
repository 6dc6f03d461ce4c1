"""``Client``: the connection policy, thread pool and session that tasks share."""

from __future__ import annotations

import logging
import os
import threading
import warnings
import weakref
from pathlib import Path
from types import TracebackType

from ._api import RequenceApi
from ._config import TOKEN_ENV_VARS, RetryPolicy, Timeouts, resolve_access_token
from ._errors import ConfigurationError
from ._follow import Follower
from ._http import Transport
from ._pool import WorkerPool
from ._stream import ResumingStream
from ._validate import check_flag

log = logging.getLogger("requence_task")
_clients: weakref.WeakSet[Client] = weakref.WeakSet()
_defaults: dict[tuple[str | None, ...], Client] = {}
_defaults_lock = threading.Lock()


class BranchWarning(UserWarning):
    """A task template runs on a development branch, not ``live``."""


class Client:
    """Connection policy and resources shared by many tasks. Thread-safe.

    A client owns one keep-alive ``requests.Session`` (its connection pool
    sized to the workers), and a bounded pool of daemon threads on which task
    creation runs. Create one at start-up and pass it to every ``Task``, or
    let ``Task`` use a shared default client for its token.

    After ``os.fork()`` the child gets a fresh session and pool on first use
    (gunicorn's forked workers). The client's threads never hold up
    interpreter exit.

    Args:
        access_token: The access token; by default from the environment
            (``REQUENCE_TASK_ACCESS_TOKEN``, ``REQUENCE_ACCESS_TOKEN``) or
            ``pyproject.toml``.
        timeouts: Socket time-outs.
        retry: How to retry while Requence is unreachable.
        max_workers: The most threads that create tasks (prepare, uploads,
            finalize) at once. The pool starts with two and adds one only
            while jobs wait and the workers are waiting on the network (not
            on the CPU, where more threads only add GIL hand-offs; on Linux,
            waiting for a CPU on a loaded machine counts as on the CPU), or
            a job has run long.
        verify: TLS verification for https URLs: ``True``, or a CA bundle path.
            ``False`` turns it off, with a warning.
        shared_stream: Follow the tasks you wait on over one shared stream of
            all the project's updates (``watch-all``; one thread and one
            connection however many tasks), falling back to one stream per
            task where the token may not watch all. ``False``: always one
            stream (and one thread) per task followed, for a project where so
            many other tasks run that carrying their updates costs more.

    Raises:
        MissingTokenError, InvalidTokenError: No usable access token.

    Example:
        >>> from requence_task import Client, Timeouts
        >>> client = Client(token, timeouts=Timeouts(connect=2))  # doctest: +SKIP
    """

    def __init__(
        self,
        access_token: str | None = None,
        *,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        max_workers: int = 8,
        verify: bool | str = True,
        shared_stream: bool = True,
    ) -> None:
        parts = resolve_access_token(access_token)
        if timeouts is not None and not isinstance(timeouts, Timeouts):
            raise ConfigurationError("timeouts must be a requence_task.Timeouts")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError("retry must be a requence_task.RetryPolicy")
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ConfigurationError(f"max_workers must be a positive integer, got {max_workers!r}")
        check_flag(shared_stream, "shared_stream")
        if verify is False and parts.base_url.startswith("https://"):
            warnings.warn(
                "TLS certificate verification is off for this client (verify=False): "
                "anyone on the network path can read and change its traffic.",
                stacklevel=2,
            )
        self._base_url = parts.base_url
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.max_workers = max_workers
        self._stop = threading.Event()
        self._transport = Transport(
            bearer=parts.bearer,
            timeouts=self.timeouts,
            retry=self.retry,
            pool_size=max_workers + 16,
            verify=verify,
            stop=self._stop,
        )
        self._api = RequenceApi(self._transport, parts.base_url)
        self._pool = WorkerPool(max_workers, name="requence-task")
        self._warned: set[tuple[str, str]] = set()
        self._streams: weakref.WeakSet[ResumingStream] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._follower = Follower(self._api, self._pool, self._track, shared=shared_stream)
        _clients.add(self)

    @property
    def base_url(self) -> str:
        """The API base URL from the access token."""
        return self._base_url

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._stop.is_set()

    def close(self) -> None:
        """Stop the client's threads and close its connections.

        Waits and streams in progress end with an error soon after. Tasks on
        Requence are not affected: closing a client aborts nothing.
        """
        self._stop.set()
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.close()
        self._pool.close()
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<requence_task.Client {self._base_url} {state}, max_workers={self.max_workers}>"

    def _track(self, stream: ResumingStream) -> None:
        """Close ``stream`` when this client closes."""
        with self._lock:
            self._streams.add(stream)
        if self._stop.is_set():
            stream.close()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at fork
        self._streams = weakref.WeakSet()  # their threads did not survive the fork
        self._pool.reset_after_fork()
        self._transport.reset_after_fork()
        self._follower.reset_after_fork()

    def _warn_branch(self, template: str, branch: str) -> None:
        with self._lock:
            if (template, branch) in self._warned:
                return
            self._warned.add((template, branch))
        warnings.warn(
            f"Task template {template!r} runs on the development branch {branch!r}, not 'live'. "
            "Pass suppress_branch_warning=True to silence this.",
            BranchWarning,
            stacklevel=2,
        )


def check_client(access_token: object, client: object) -> None:
    """Check a call's ``client=`` and ``access_token=``: not both, and a real client.

    Raises:
        ConfigurationError: Both were given (a client has its own token), or
            ``client`` is not a :class:`Client`.
    """
    if client is not None and access_token is not None:
        raise ConfigurationError(
            "pass either client= or access_token=, not both (a client has its own token)"
        )
    if client is not None and not isinstance(client, Client):
        raise ConfigurationError("client must be a requence_task.Client")


def client_for(access_token: str | None, client: Client | None) -> Client:
    """The client a call uses: ``client``, else the shared one for ``access_token``.

    Raises:
        ConfigurationError: As :func:`check_client`.
        MissingTokenError, InvalidTokenError: No usable access token.
    """
    check_client(access_token, client)
    return client if client is not None else default_client(access_token)


def default_client(access_token: str | None) -> Client:
    """The shared client for a token (resolved the usual way when ``None``)."""
    key: tuple[str | None, ...] = (
        access_token,
        *(os.environ.get(name) for name in TOKEN_ENV_VARS),
        str(Path.cwd()) if access_token is None else None,
    )
    with _defaults_lock:
        client = _defaults.get(key)
        if client is None or client.closed:
            client = _defaults[key] = Client(access_token)
        return client


def _reset_clients_after_fork() -> None:
    global _defaults_lock
    _defaults_lock = threading.Lock()  # another thread may have held it at fork
    for client in list(_clients):
        client._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_clients_after_fork)
