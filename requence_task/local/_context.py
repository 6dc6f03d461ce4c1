"""What the web layer's handlers need, in one small explicit object.

The server (:mod:`._server`) builds a :class:`Context` each time it starts and
hands it to the app (:func:`._app.build_app`); handlers read the engine, the
store, the hub, the faults and the configuration from it, and nothing else of
the server.
"""

from __future__ import annotations

import threading

import attrs

from ._blobs import FileStore
from ._engine import Engine
from ._faults import Faults
from ._hub import Hub
from ._store import Store


class Projects:
    """The projects of one store, by bearer token: who a request belongs to.

    The store keeps each project's bearer token; this keeps them in memory
    too, so that authenticating a request reads no database.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._by_bearer = store.projects()

    def bearer_for(self, project: str) -> str:
        """The bearer token of ``project`` (made and stored on first use)."""
        bearer = self._store.project_bearer(project)
        with self._lock:
            self._by_bearer[bearer] = project
        return bearer

    def project_of(self, bearer: str) -> str | None:
        """The project a bearer token belongs to, or ``None``."""
        with self._lock:
            return self._by_bearer.get(bearer)


@attrs.frozen
class Config:
    """The server's settings that requests see, fixed while it runs."""

    host: str
    """The address the server was bound to (the pages' Host guard reads it)."""
    base_url: str
    """The API base URL, for the URLs that prepare and finalize hand out."""
    keepalive_interval: float
    """Seconds of silence after which a stream gets a ``: keep-alive`` comment."""
    max_payload_size: int
    """Largest finalize body accepted, in bytes."""
    max_file_size: int
    """Largest file or stream body accepted, in bytes (413 above); in prepare's ``limits``."""


@attrs.frozen
class Context:
    """Everything a request handler may use: built by the server, handed to the app."""

    engine: Engine
    hub: Hub
    faults: Faults
    projects: Projects
    config: Config

    @property
    def store(self) -> Store:
        """The engine's store (the one the server opened)."""
        return self.engine.store

    @property
    def files(self) -> FileStore:
        """The engine's files service (bytes on disk next to the store)."""
        return self.engine.files
