"""``LocalRequence``: the local server, on a background thread or in the foreground."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterable
from datetime import timedelta
from types import TracebackType

import uvicorn

from .._protocol import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_PAYLOAD_SIZE
from .._token import encode_access_token
from ._app import build_app
from ._blobs import FileStore
from ._context import Config, Context, Projects
from ._engine import Engine
from ._faults import Faults
from ._hub import Hub
from ._store import Store
from ._templates import Template, check_templates

log = logging.getLogger("requence_task.local")

DEFAULT_PROJECT = "default"
_STARTUP_TIMEOUT = 15.0


def _seconds(value: float | timedelta, what: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not seconds >= 0:
        raise ValueError(f"{what} must be zero or more seconds, got {value!r}")
    return seconds


class LocalRequence:
    """A local Requence: a real HTTP server on loopback speaking the task API.

    Args:
        templates: The templates it runs.
        host: The address to bind; loopback by default.
        port: The port; ``0`` picks a free one (read it from :attr:`port`).
        db: The SQLite database: a file path, or ``":memory:"``. A file keeps
            tasks and their events across restarts.
        concurrency: How many tasks run at once; the rest wait in a queue
            ordered by priority (most urgent first, first come first within one).
        retention: How long finished, unprotected tasks are kept.
        prepare_ttl: How long a prepared task may wait for its finalize.
        cleanup_interval: How often cleanup runs; by default from ``retention``.
        keepalive_interval: Seconds of silence after which a stream gets a
            ``: keep-alive`` comment.
        max_payload_size: Largest finalize body accepted, in bytes (413 above);
            node data and results larger than this (as compact JSON) are sent
            as claim checks. 4 MiB by default.
        max_file_size: Largest file or stream accepted by the files service,
            in bytes (413 above). 100 MiB by default.

    Example:
        >>> from requence_task.local import LocalRequence, Template, service
        >>> hello = Template("hello", nodes=[service("greeter", lambda ctx: {"hi": 1})])
        >>> with LocalRequence([hello]) as rq:
        ...     rq.base_url.startswith("http://127.0.0.1:")
        True
    """

    def __init__(
        self,
        templates: Iterable[Template] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        db: str = ":memory:",
        concurrency: int = 4,
        retention: float | timedelta = timedelta(days=1),
        prepare_ttl: float | timedelta = timedelta(minutes=10),
        cleanup_interval: float | timedelta | None = None,
        keepalive_interval: float | timedelta = 15.0,
        max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    ) -> None:
        by_name: dict[str, Template] = {}
        for template in templates:
            if not isinstance(template, Template):
                raise TypeError(
                    f"templates must be Template objects, not {type(template).__name__}"
                )
            if template.name in by_name:
                raise ValueError(f"two templates are named {template.name!r}")
            by_name[template.name] = template
        check_templates(by_name)  # sub-tasks name templates of this server
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer from 0 to 65535, got {port!r}")
        self.templates = by_name
        self.host = host
        self.port = port
        self.db = db
        self.concurrency = concurrency
        self.retention = _seconds(retention, "retention")
        self.prepare_ttl = _seconds(prepare_ttl, "prepare_ttl")
        self.cleanup_interval = (
            min(max(self.retention / 2, 0.05), 60.0)
            if cleanup_interval is None
            else max(_seconds(cleanup_interval, "cleanup_interval"), 0.01)
        )
        self.keepalive_interval = _seconds(keepalive_interval, "keepalive_interval")
        for label, size in (
            ("max_payload_size", max_payload_size),
            ("max_file_size", max_file_size),
        ):
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise ValueError(f"{label} must be a positive number of bytes, got {size!r}")
        self.max_payload_size = max_payload_size
        self.max_file_size = max_file_size
        self.faults = Faults()
        self._projects: Projects | None = None
        self._thread: threading.Thread | None = None
        self._cleaner: threading.Thread | None = None
        self._stop_cleaning = threading.Event()
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._store: Store | None = None
        self._engine: Engine | None = None
        self.hub = Hub()

    # --- what clients need ----------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API base URL, e.g. ``http://127.0.0.1:8765`` (known once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def access_token(self) -> str:
        """An access token of the default project, for this server's base URL."""
        return self.token_for(DEFAULT_PROJECT)

    def token_for(self, project: str) -> str:
        """An access token for ``project`` (made on first use). Tokens of
        different projects never see each other's tasks."""
        if not isinstance(project, str) or not project:
            raise ValueError("project must be a non-empty string")
        return encode_access_token(self.bearer_for(project), self.base_url)

    def bearer_for(self, project: str) -> str:
        """The bearer token of ``project`` (made on first use)."""
        return self._running_projects().bearer_for(project)

    def project_of(self, bearer: str) -> str | None:
        """The project a bearer token belongs to, or ``None``."""
        return None if self._projects is None else self._projects.project_of(bearer)

    @property
    def store(self) -> Store:
        """The server's SQLite storage (while running)."""
        if self._store is None:
            raise RuntimeError("the local Requence is not running; call start() first")
        return self._store

    @property
    def engine(self) -> Engine:
        """The server's task engine (while running)."""
        if self._engine is None:
            raise RuntimeError("the local Requence is not running; call start() first")
        return self._engine

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._thread is not None and self._thread.is_alive()

    # --- life cycle -------------------------------------------------------------

    def start(self) -> LocalRequence:
        """Start serving on a background thread; returns once requests are answered."""
        if self._thread is not None:
            raise RuntimeError("this LocalRequence is already running")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.host, self.port))
            sock.listen(2048)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self.port = sock.getsockname()[1]
        self._store = Store(self.db)
        self._projects = Projects(self._store)
        self.hub = Hub()
        files = FileStore(self._store, base_url=self.base_url, max_file_size=self.max_file_size)
        self._engine = Engine(
            self._store,
            self.hub,
            self.templates,
            concurrency=self.concurrency,
            files=files,
            max_payload_size=self.max_payload_size,
        )
        self.bearer_for(DEFAULT_PROJECT)
        config = uvicorn.Config(
            build_app(self._context()),
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"requence-local-{self.port}",
            daemon=True,
        )
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while not self._server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the local Requence failed to start; see the log")
            time.sleep(0.005)
        self._engine.start()
        self._stop_cleaning.clear()
        self._cleaner = threading.Thread(
            target=self._clean, name=f"requence-local-cleanup-{self.port}", daemon=True
        )
        self._cleaner.start()
        log.info("local Requence serving at %s", self.base_url)
        return self

    def _context(self) -> Context:
        """What the app's handlers get: built once the port and the store are known."""
        return Context(
            engine=self.engine,
            hub=self.hub,
            faults=self.faults,
            projects=self._running_projects(),
            config=Config(
                host=self.host,
                base_url=self.base_url,
                keepalive_interval=self.keepalive_interval,
                max_payload_size=self.max_payload_size,
                max_file_size=self.max_file_size,
            ),
        )

    def _running_projects(self) -> Projects:
        if self._store is None or self._projects is None:
            raise RuntimeError("the local Requence is not running; call start() first")
        return self._projects

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and release every thread, socket and file handle."""
        deadline = time.monotonic() + timeout
        self._stop_cleaning.set()
        if self._cleaner is not None:
            self._cleaner.join(timeout)
            self._cleaner = None
        if self._engine is not None:
            self._engine.stop(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
        self.hub.close()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic()))
            if self._thread.is_alive():
                log.warning("the local Requence's server thread did not stop in time")
            self._thread = None
        self._server = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._engine is not None:
            self._engine.files.close()
        if self._store is not None:
            self._store.close()
            self._store = None
        self._engine = None

    def __enter__(self) -> LocalRequence:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Start, and serve in the foreground until Ctrl-C (KeyboardInterrupt)."""
        if self._thread is None:
            self.start()
        try:
            while self.running:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # --- housekeeping -------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Delete expired tasks now (cleanup also runs on its own). Returns their ids."""
        return self.engine.cleanup(retention=self.retention, prepare_ttl=self.prepare_ttl)

    def _clean(self) -> None:
        while not self._stop_cleaning.wait(self.cleanup_interval):
            try:
                self.cleanup()
            except Exception:
                log.exception("cleanup failed")

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<LocalRequence {self.base_url} {state}, {len(self.templates)} templates>"
