"""The bytes of the local server's files service: files and live streams on disk.

Each file or stream has a row in the store (``files``: its task, kind, type,
size, state) and its bytes in one file named by its id, in a folder next to
the SQLite database (``<db>.files/``; a temporary folder for an in-memory
store, removed when the server stops). Ids are capability secrets
(``secrets.token_urlsafe``); the per-task upload and stream URLs carry an HMAC
of the task id made with a per-server secret kept in the database, so they
survive a restart with the task.

A stream is written while it is read: writers append and notify one
condition, readers wait on it for more. A stream whose writer stops early
is *truncated* (with a reason); one still open when the server stops or
restarts is marked truncated too.

Node functions read files through :meth:`FileStore.opener` and claim checks
through :meth:`FileStore.claim_check`, straight from disk, never over HTTP.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Final

import attrs

from .._errors import ClaimCheckError, FileReadError, TruncatedError
from .._files import CHUNK_SIZE
from .._protocol import FILES_PREFIX, file_path, files_stream_path, files_upload_path
from ._store import (
    FILE_COMPLETE,
    FILE_OPEN,
    FILE_REGISTERED,
    FILE_TRUNCATED,
    FileRow,
    Store,
)

RESTART_REASON: Final = "the local Requence restarted while the stream was being written"
STOP_REASON: Final = "the local Requence stopped while the stream was being written"
_WAIT_SLICE = 0.25
"""Seconds a waiting reader sleeps before it looks whether it was cancelled."""


class TooLarge(Exception):
    """More bytes came than the limit allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The file is larger than this server's limit of {limit} bytes.")
        self.limit = limit


class StreamClosed(Exception):
    """The stream was ended under its writer (the server stops, or its task was deleted)."""


@attrs.define
class _Live:
    """A stream being written, as its readers see it."""

    size: int = 0
    state: str = FILE_OPEN
    reason: str | None = None


class StreamWriter:
    """Appends to one stream; readers see each chunk as soon as it is written."""

    def __init__(self, files: FileStore, row: FileRow, limit: int) -> None:
        self._files = files
        self.row = row
        self.limit = limit
        self._out: IO[bytes] = files.path(row.id).open("ab", buffering=0)
        self.size = 0
        self.done = False

    def write(self, chunk: bytes) -> None:
        if self.done or not chunk:
            return
        if self.size + len(chunk) > self.limit:
            error = TooLarge(self.limit)
            self.truncate(str(error))
            raise error
        self._out.write(chunk)
        self.size += len(chunk)
        if not self._files._grew(self.row.id, self.size):
            self.done = True
            self._out.close()
            raise StreamClosed("the stream was ended: the local Requence stopped or deleted it")

    def finish(self) -> None:
        self._end(FILE_COMPLETE, None)

    def truncate(self, reason: str) -> None:
        self._end(FILE_TRUNCATED, reason or "the producer stopped early")

    def _end(self, state: str, reason: str | None) -> None:
        if self.done:
            return
        self.done = True
        self._out.close()
        self._files._ended(self.row.id, state, self.size, reason)


class FileStore:
    """Files and streams of one running server (bytes on disk, rows in the store)."""

    def __init__(self, store: Store, *, base_url: str, max_file_size: int) -> None:
        self.store = store
        self.base_url = base_url
        self.max_file_size = max_file_size
        if store.path == ":memory:" or not store.path:
            self.folder = Path(tempfile.mkdtemp(prefix="requence-local-files-"))
            self._temporary = True
        else:
            self.folder = Path(store.path + ".files")
            self.folder.mkdir(parents=True, exist_ok=True)
            self._temporary = False
        self._secret = store.setting("files_secret", lambda: secrets.token_urlsafe(32)).encode()
        self._changed = threading.Condition()
        self._live: dict[str, _Live] = {}
        self._closed = False
        for row in store.files_in_state(FILE_OPEN):
            store.set_file_state(
                row.id, FILE_TRUNCATED, size=self._disk_size(row.id), reason=RESTART_REASON
            )
        for leftover in self.folder.glob("*.part"):
            leftover.unlink(missing_ok=True)

    def close(self) -> None:
        """Truncate the streams still written, wake every reader; drop a temporary folder."""
        with self._changed:
            self._closed = True
            for file_id, live in self._live.items():
                if live.state == FILE_OPEN:
                    live.state, live.reason = FILE_TRUNCATED, STOP_REASON
                    self.store.set_file_state(
                        file_id, FILE_TRUNCATED, size=live.size, reason=STOP_REASON
                    )
            self._changed.notify_all()
        if self._temporary:
            shutil.rmtree(self.folder, ignore_errors=True)

    # --- URLs ---------------------------------------------------------------

    def task_key(self, task_id: str) -> str:
        digest = hmac.digest(self._secret, task_id.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest[:24]).decode("ascii")

    def key_ok(self, task_id: str, key: str) -> bool:
        return hmac.compare_digest(self.task_key(task_id).encode(), key.encode())

    def file_urls(self, task_id: str) -> dict[str, str]:
        """The prepare answer's ``fileUrls`` of a task."""
        key = self.task_key(task_id)
        return {
            "uploadUrl": self.base_url + files_upload_path(task_id, key),
            "streamUrl": self.base_url + files_stream_path(task_id, key),
        }

    def url(self, file_id: str) -> str:
        return self.base_url + file_path(file_id)

    def id_of(self, url: str) -> str | None:
        """The id of a file of this server from its URL (``None`` for any other URL)."""
        prefix = self.base_url + FILES_PREFIX
        if not url.startswith(prefix):
            return None
        rest = url[len(prefix) :]
        return rest if rest and "/" not in rest and "?" not in rest else None

    def path(self, file_id: str) -> Path:
        return self.folder / file_id

    def _disk_size(self, file_id: str) -> int:
        try:
            return self.path(file_id).stat().st_size
        except OSError:
            return 0

    # --- writing ------------------------------------------------------------

    def new_id(self) -> str:
        return secrets.token_urlsafe(24)

    def part_path(self, file_id: str) -> Path:
        return self.folder / f"{file_id}.part"

    def commit(
        self, file_id: str, task_id: str, mime: str, size: int, name: str | None = None
    ) -> FileRow:
        """Make a fully written ``.part`` file a file of the service."""
        self.part_path(file_id).replace(self.path(file_id))
        row = FileRow(file_id, task_id, "file", mime, name, size, FILE_COMPLETE, None, time.time())
        self.store.insert_file(row)
        return row

    def put(
        self, task_id: str, chunks: Iterable[bytes], mime: str, name: str | None = None
    ) -> FileRow:
        """Store a whole file from chunks (a node's); :class:`TooLarge` above the limit."""
        file_id = self.new_id()
        part = self.part_path(file_id)
        size = 0
        try:
            with part.open("wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_file_size:
                        raise TooLarge(self.max_file_size)
                    out.write(chunk)
            return self.commit(file_id, task_id, mime, size, name)
        except BaseException:
            part.unlink(missing_ok=True)
            raise

    def register_stream(self, task_id: str, mime: str, name: str | None = None) -> FileRow:
        """A new stream, waiting for its body."""
        file_id = self.new_id()
        self.path(file_id).touch()
        row = FileRow(
            file_id, task_id, "stream", mime, name, None, FILE_REGISTERED, None, time.time()
        )
        self.store.insert_file(row)
        return row

    def begin_stream(self, file_id: str, limit: int | None = None) -> StreamWriter | None:
        """The writer of a registered stream (``None`` if it is not one waiting for its body)."""
        row = self.store.file(file_id)
        if row is None:
            return None
        # The row and the live entry change together: a reader never sees an
        # open row without its live entry (that means a writer of another process).
        with self._changed:
            if self._closed or not self.store.claim_stream(file_id):
                return None
            self._live[file_id] = _Live()
            self._changed.notify_all()
        return StreamWriter(self, row, self.max_file_size if limit is None else limit)

    def _grew(self, file_id: str, size: int) -> bool:
        """Record what was written; ``False`` if the stream may not go on."""
        with self._changed:
            live = self._live.get(file_id)
            if live is None or live.state != FILE_OPEN:
                return False
            live.size = size
            self._changed.notify_all()
            return True

    def _ended(self, file_id: str, state: str, size: int, reason: str | None) -> None:
        with self._changed:
            live = self._live.pop(file_id, None)
            if live is not None and live.state == FILE_OPEN:
                self.store.set_file_state(file_id, state, size=size, reason=reason)
            self._changed.notify_all()

    # --- reading ------------------------------------------------------------

    def row(self, file_id: str) -> FileRow | None:
        return self.store.file(file_id)

    def _status(self, file_id: str) -> tuple[int, str, str | None] | None:
        """``(size written, state, reason)`` of a stream; call under ``_changed``."""
        live = self._live.get(file_id)
        if live is not None:
            return live.size, live.state, live.reason
        row = self.store.file(file_id)
        if row is None:
            return None
        size = row.size if row.size is not None else self._disk_size(file_id)
        if row.state == FILE_OPEN:  # its writer is not in this process: it cannot go on
            return size, FILE_TRUNCATED, RESTART_REASON
        if self._closed and row.state == FILE_REGISTERED:
            return size, FILE_TRUNCATED, STOP_REASON
        return size, row.state, row.reason

    def read_stream(
        self,
        file_id: str,
        chunk_size: int = CHUNK_SIZE,
        cancelled: threading.Event | None = None,
    ) -> Iterator[bytes]:
        """A stream's bytes as they are written; ends with the stream, or raises
        :class:`TruncatedError` (its reason) if it was truncated."""
        offset = 0
        with self.path(file_id).open("rb") as source:
            while True:
                with self._changed:
                    while True:
                        status = self._status(file_id)
                        if status is None:
                            raise FileReadError("the stream was deleted while it was read")
                        size, state, reason = status
                        if size > offset or state in (FILE_COMPLETE, FILE_TRUNCATED):
                            break
                        if cancelled is not None and cancelled.is_set():
                            return
                        self._changed.wait(_WAIT_SLICE)
                while offset < size:
                    source.seek(offset)
                    chunk = source.read(min(chunk_size, size - offset))
                    if not chunk:
                        break
                    offset += len(chunk)
                    yield chunk
                if offset >= size and state == FILE_COMPLETE:
                    return
                if offset >= size and state == FILE_TRUNCATED:
                    raise TruncatedError(reason or "the stream's producer stopped early")

    def read_file(self, file_id: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        with self.path(file_id).open("rb") as source:
            while chunk := source.read(chunk_size):
                yield chunk

    def opener(self, url: str, *, chunk_size: int, framed: bool) -> tuple[Iterator[bytes], bool]:
        """How node functions read the files they get: from disk, never over HTTP."""
        file_id = self.id_of(url)
        row = None if file_id is None else self.store.file(file_id)
        if file_id is None or row is None:
            raise FileReadError(
                "the local Requence reads only its own files; this one is not (or no longer) there",
                status=404,
            )
        if row.kind == "stream":
            return self.read_stream(file_id, chunk_size), False
        return self.read_file(file_id, chunk_size), False

    def claim_check(self, url: str, path: str) -> Any:
        """The JSON of a claim check held by this server (for the engine's Hydrator)."""
        file_id = self.id_of(url)
        row = None if file_id is None else self.store.file(file_id)
        if file_id is None or row is None:
            raise ClaimCheckError(
                f"{path}: the claim check's url is not a file of this local Requence "
                "(or it was deleted)",
                path=path,
            )
        if row.kind != "file":
            raise ClaimCheckError(
                f"{path}: the claim check's url is a stream, not a file", path=path
            )
        try:
            return json.loads(b"".join(self.read_file(file_id)))
        except (OSError, ValueError) as err:
            raise ClaimCheckError(
                f"{path}: the claim check's file is not JSON: {err}", path=path
            ) from None

    # --- cleanup ------------------------------------------------------------

    def delete_tasks(self, task_ids: Iterable[str]) -> None:
        """Delete every file and stream of these tasks, bytes and rows."""
        for file_id in self.store.delete_task_files(task_ids):
            with self._changed:
                live = self._live.pop(file_id, None)
                if live is not None:
                    self._changed.notify_all()
            with contextlib.suppress(OSError):
                os.unlink(self.path(file_id))

    def task_files(self, task_id: str) -> list[FileRow]:
        return self.store.task_files(task_id)
