"""SQLite storage of the local server: tasks, their events, and project tokens.

One connection, guarded by a lock, serves every thread; the database runs in
WAL mode so that a file on disk stays fast and consistent across restarts.
Event positions come from an AUTOINCREMENT key: they only ever increase, even
after cleanup deletes rows.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from .._protocol import AWAITING_DELIVERY, FAILED, IDLE, PENDING, STOPPED, SUCCESSFUL

FINISHED_STATUSES = (SUCCESSFUL, FAILED, STOPPED)
ENDED_STATUSES = (*FINISHED_STATUSES, AWAITING_DELIVERY)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    name TEXT PRIMARY KEY,
    bearer TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    template TEXT NOT NULL,
    branch TEXT NOT NULL,
    name TEXT,
    input TEXT,
    priority INTEGER,
    require_ack INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    final_status TEXT,
    status_text TEXT,
    result TEXT,
    protected INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    finalized_at REAL,
    ended_at REAL,
    queue_seq INTEGER,
    parent_task_id TEXT,
    parent_node TEXT,
    root_task_id TEXT,
    exit TEXT
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status);
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    project TEXT NOT NULL,
    type TEXT NOT NULL,
    alias TEXT,
    data TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_task ON events (task_id, position);
CREATE INDEX IF NOT EXISTS events_project ON events (project, position);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    mime TEXT NOT NULL,
    name TEXT,
    size INTEGER,
    state TEXT NOT NULL,
    reason TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_task ON files (task_id);
"""

compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
"""A value as compact JSON text (one encoder made once: ``json.dumps`` makes one a call)."""

FILE_KINDS = ("file", "stream")
FILE_REGISTERED = "registered"  # a stream without its body yet
FILE_OPEN = "open"  # a stream being written
FILE_COMPLETE = "complete"
FILE_TRUNCATED = "truncated"


@attrs.frozen
class Event:
    """One stored update: its position, owner, type and JSON data text."""

    position: int
    task_id: str
    project: str
    type: str
    data: str
    created_at: float


@attrs.frozen
class TaskRow:
    id: str
    project: str
    template: str
    branch: str
    name: str | None
    input: Any
    priority: int | None
    require_ack: bool
    status: str
    final_status: str | None
    status_text: str | None
    result: Any
    protected: bool
    created_at: float
    finalized_at: float | None
    ended_at: float | None
    queue_seq: int | None
    parent_task_id: str | None = None  # a sub-task's parent
    parent_node: str | None = None  # the alias of the parent's node that runs it
    root_task_id: str | None = None  # a sub-task's top-level task
    exit: str | None = None  # the exit a task that succeeded ended through


_TASK_COLUMNS = (
    "id, project, template, branch, name, input, priority, require_ack, status, final_status, "
    "status_text, result, protected, created_at, finalized_at, ended_at, queue_seq, "
    "parent_task_id, parent_node, root_task_id, exit"
)
# Columns added after the first release: added to an older database when it is opened.
_ADDED_TASK_COLUMNS = ("parent_task_id TEXT", "parent_node TEXT", "root_task_id TEXT", "exit TEXT")


_EVENT_COLUMNS = "position, task_id, project, type, data, created_at"


@attrs.frozen
class FileRow:
    """One file or stream of the files service (its bytes are on disk, see ``_blobs``)."""

    id: str
    task_id: str
    kind: str
    mime: str
    name: str | None
    size: int | None
    state: str
    reason: str | None
    created_at: float


_FILE_COLUMNS = "id, task_id, kind, mime, name, size, state, reason, created_at"


def _task_row(row: Sequence[Any]) -> TaskRow:
    return TaskRow(
        id=row[0],
        project=row[1],
        template=row[2],
        branch=row[3],
        name=row[4],
        input=None if row[5] is None else json.loads(row[5]),
        priority=row[6],
        require_ack=bool(row[7]),
        status=row[8],
        final_status=row[9],
        status_text=row[10],
        result=None if row[11] is None else json.loads(row[11]),
        protected=bool(row[12]),
        created_at=row[13],
        finalized_at=row[14],
        ended_at=row[15],
        queue_seq=row[16],
        parent_task_id=row[17],
        parent_node=row[18],
        root_task_id=row[19],
        exit=row[20],
    )


class Store:
    """Thread-safe access to the server's SQLite database."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        with self._lock:
            if path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(tasks)")}
            for column in _ADDED_TASK_COLUMNS:
                if column.split()[0] not in have:
                    self._db.execute(f"ALTER TABLE tasks ADD COLUMN {column}")
            self._db.execute("CREATE INDEX IF NOT EXISTS tasks_parent ON tasks (parent_task_id)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- projects -----------------------------------------------------------

    def project_bearer(self, project: str) -> str:
        """The bearer token of a project, made on first use and kept in the file."""
        with self._lock:
            row = self._db.execute(
                "SELECT bearer FROM projects WHERE name = ?", (project,)
            ).fetchone()
            if row is not None:
                return str(row[0])
            bearer = secrets.token_urlsafe(24)
            self._db.execute("INSERT INTO projects (name, bearer) VALUES (?, ?)", (project, bearer))
            return bearer

    def projects(self) -> dict[str, str]:
        """Every bearer token and the project it belongs to."""
        with self._lock:
            return dict(self._db.execute("SELECT bearer, name FROM projects").fetchall())

    def setting(self, name: str, make: Callable[[], str]) -> str:
        """A server setting kept in the database (made by ``make`` on first use)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
            if row is not None:
                return str(row[0])
            value = make()
            self._db.execute("INSERT INTO settings (name, value) VALUES (?, ?)", (name, value))
            return value

    # --- files --------------------------------------------------------------

    def insert_file(self, row: FileRow) -> None:
        with self._lock:
            self._db.execute(
                f"INSERT INTO files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                attrs.astuple(row),
            )

    def file(self, file_id: str) -> FileRow | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ?", (file_id,)
            ).fetchone()
        return None if row is None else FileRow(*row)

    def task_files(self, task_id: str) -> list[FileRow]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE task_id = ? ORDER BY created_at",
                (task_id,),
            ).fetchall()
        return [FileRow(*row) for row in rows]

    def files_in_state(self, state: str) -> list[FileRow]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE state = ?", (state,)
            ).fetchall()
        return [FileRow(*row) for row in rows]

    def set_file_state(
        self, file_id: str, state: str, *, size: int | None = None, reason: str | None = None
    ) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE files SET state = ?, size = COALESCE(?, size), reason = ? WHERE id = ?",
                (state, size, reason, file_id),
            )

    def claim_stream(self, file_id: str) -> bool:
        """Mark a registered stream as being written; ``False`` if it was not registered."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE files SET state = ? WHERE id = ? AND kind = 'stream' AND state = ?",
                (FILE_OPEN, file_id, FILE_REGISTERED),
            )
            return cursor.rowcount == 1

    def delete_task_files(self, task_ids: Iterable[str]) -> list[str]:
        """Forget the files of these tasks; returns their ids (the bytes are the caller's)."""
        wanted = list(task_ids)
        found: list[str] = []
        with self._lock:
            for task_id in wanted:
                found.extend(
                    row[0]
                    for row in self._db.execute(
                        "SELECT id FROM files WHERE task_id = ?", (task_id,)
                    )
                )
                self._db.execute("DELETE FROM files WHERE task_id = ?", (task_id,))
        return found

    # --- tasks --------------------------------------------------------------

    def insert_task(
        self,
        task_id: str,
        project: str,
        template: str,
        branch: str,
        created_at: float,
        *,
        parent_task_id: str | None = None,
        parent_node: str | None = None,
        root_task_id: str | None = None,
    ) -> TaskRow:
        """Store a prepared task; returns its row, as :meth:`task` would read it."""
        with self._lock:
            self._db.execute(
                "INSERT INTO tasks (id, project, template, branch, status, created_at, "
                "parent_task_id, parent_node, root_task_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    task_id,
                    project,
                    template,
                    branch,
                    IDLE,
                    created_at,
                    parent_task_id,
                    parent_node,
                    root_task_id,
                ),
            )
        return TaskRow(
            id=task_id,
            project=project,
            template=template,
            branch=branch,
            name=None,
            input=None,
            priority=None,
            require_ack=False,
            status=IDLE,
            final_status=None,
            status_text=None,
            result=None,
            protected=False,
            created_at=created_at,
            finalized_at=None,
            ended_at=None,
            queue_seq=None,
            parent_task_id=parent_task_id,
            parent_node=parent_node,
            root_task_id=root_task_id,
        )

    def task(self, task_id: str) -> TaskRow | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)
            ).fetchone()
        return None if row is None else _task_row(row)

    def subtasks(self, task_id: str) -> list[TaskRow]:
        """The sub-tasks a task started, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE parent_task_id = ? ORDER BY created_at",
                (task_id,),
            ).fetchall()
        return [_task_row(row) for row in rows]

    def tasks_with_status(self, statuses: Iterable[str]) -> list[TaskRow]:
        wanted = tuple(statuses)
        marks = ", ".join("?" for _ in wanted)
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE status IN ({marks}) "
                "ORDER BY queue_seq, created_at",
                wanted,
            ).fetchall()
        return [_task_row(row) for row in rows]

    def finalize_task(
        self,
        task_id: str,
        *,
        name: str | None,
        input_json: str,
        priority: int,
        require_ack: bool,
        finalized_at: float,
        queue_seq: int,
    ) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE tasks SET name = ?, input = ?, priority = ?, require_ack = ?, status = ?, "
                "finalized_at = ?, queue_seq = ?, status_text = NULL WHERE id = ?",
                (
                    name,
                    input_json,
                    priority,
                    int(require_ack),
                    PENDING,
                    finalized_at,
                    queue_seq,
                    task_id,
                ),
            )

    def set_status(self, task_id: str, status: str) -> None:
        with self._lock:
            self._db.execute("UPDATE tasks SET status = ? WHERE id = ?", (status, task_id))

    def end_task(
        self,
        task_id: str,
        *,
        status: str,
        final_status: str,
        status_text: str | None,
        result_json: str | None,
        ended_at: float,
        exit: str | None = None,
    ) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE tasks SET status = ?, final_status = ?, status_text = ?, result = ?, "
                "ended_at = ?, exit = ? WHERE id = ?",
                (status, final_status, status_text, result_json, ended_at, exit, task_id),
            )

    def set_status_text(self, task_id: str, text: str | None) -> None:
        """Why a task has its status: for a task still IDLE, why its input was
        rejected at finalize."""
        with self._lock:
            self._db.execute("UPDATE tasks SET status_text = ? WHERE id = ?", (text, task_id))

    def protect(self, task_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE tasks SET protected = 1 WHERE id = ?", (task_id,))

    def max_queue_seq(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(queue_seq) FROM tasks").fetchone()
        return int(row[0] or 0)

    def delete_expired(self, *, ended_before: float, prepared_before: float) -> list[str]:
        """Delete finished unprotected tasks ended before ``ended_before``, and
        prepared tasks never finalized since ``prepared_before``, with their events.
        Returns the deleted ids."""
        finished = ", ".join("?" for _ in FINISHED_STATUSES)
        with self._lock:
            ids = [
                row[0]
                for row in self._db.execute(
                    f"SELECT id FROM tasks WHERE (status IN ({finished}) AND protected = 0 "
                    "AND ended_at < ?) OR (status = ? AND created_at < ?)",
                    (*FINISHED_STATUSES, ended_before, IDLE, prepared_before),
                )
            ]
            if ids:
                self._db.execute("BEGIN")
                self._db.executemany("DELETE FROM events WHERE task_id = ?", ((i,) for i in ids))
                self._db.executemany("DELETE FROM tasks WHERE id = ?", ((i,) for i in ids))
                self._db.execute("COMMIT")
        return ids

    # --- events -------------------------------------------------------------

    def append_event(
        self,
        task_id: str,
        project: str,
        type: str,
        alias: str | None,
        data: dict[str, Any],
        created_at: float,
    ) -> Event:
        """Store one update; ``data`` gains nothing here, it is stored as given."""
        text = compact_json(data)
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO events (task_id, project, type, alias, data, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (task_id, project, type, alias, text, created_at),
            )
            position = cursor.lastrowid
        assert position is not None
        return Event(position, task_id, project, type, text, created_at)

    def task_events(
        self, task_id: str, *, after: int | None, since: float | None, limit: int
    ) -> list[Event]:
        query = f"SELECT {_EVENT_COLUMNS} FROM events WHERE task_id = ?"
        params: list[Any] = [task_id]
        query, params = _cursor_clause(query, params, after, since)
        with self._lock:
            rows = self._db.execute(
                query + " ORDER BY position LIMIT ?", (*params, limit)
            ).fetchall()
        return [Event(*row) for row in rows]

    def project_events(
        self,
        project: str,
        *,
        after: int | None,
        since: float | None,
        types: frozenset[str] | None,
        limit: int,
    ) -> list[Event]:
        query = f"SELECT {_EVENT_COLUMNS} FROM events WHERE project = ?"
        params: list[Any] = [project]
        query, params = _cursor_clause(query, params, after, since)
        if types is not None:
            query += f" AND type IN ({', '.join('?' for _ in types)})"
            params.extend(sorted(types))
        with self._lock:
            rows = self._db.execute(
                query + " ORDER BY position LIMIT ?", (*params, limit)
            ).fetchall()
        return [Event(*row) for row in rows]

    def node_outputs(self, task_id: str) -> tuple[list[tuple[str, Any]], list[tuple[str, str]]]:
        """The latest data of each node alias, and each node's error, in node order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT type, alias, data FROM events WHERE position IN ("
                " SELECT MAX(position) FROM events WHERE task_id = ? AND alias IS NOT NULL"
                " AND type IN ('nodeUpdate', 'nodeError') GROUP BY type, alias"
                ") ORDER BY position",
                (task_id,),
            ).fetchall()
        data: list[tuple[str, Any]] = []
        errors: list[tuple[str, str]] = []
        for type_, alias, text in rows:
            payload = json.loads(text)
            if type_ == "nodeUpdate":
                data.append((alias, payload.get("data")))
            else:
                errors.append((alias, payload.get("error")))
        return data, errors


def _cursor_clause(
    query: str, params: list[Any], after: int | None, since: float | None
) -> tuple[str, list[Any]]:
    if after is not None:
        query += " AND position > ?"
        params.append(after)
    elif since is not None:
        query += " AND created_at >= ?"
        params.append(since)
    return query, params
