"""Following tasks' updates: one shared watch-all stream per client, per-task
streams as the fallback.

Every task handle has a :class:`Monitor`: the updates it has seen, folded into
its context, and the waiters and iterators on them. A monitor is fed by one
source at a time:

- the client's **shared stream** (one ``watch-all`` stream, one thread) for
  tasks this client created recently: it starts a little before the earliest
  of them was prepared (by the server's clock, from the prepare answer's
  ``Date`` header), so it carries every update of each;
- or the task's **own stream** (one thread each), for tasks known by id, tasks
  prepared too long ago for the shared stream to replay, and when the token may
  not watch all tasks (or the server sent no ``Date``).

Sub-tasks: on the shared stream a sub-task's update (its ``rootTaskId`` is
another task's) goes to its root's monitor, whose updates include its
sub-tasks', and to the sub-task's own monitor if one is on the stream, once
to each (:func:`~requence_task._wire.route_keys`). A monitor ends only at its
own task's end: a sub-task's end, on any stream, ends nothing of its root's.
A handle made by id (a sub-task's, say) has no prepare time, so it follows
its own stream.

Exactly once: within one stream, positions resume without loss or repeat.
The shared stream closes once no task on it is awaited and none is still
running for a live handle. When it closes, or fails, monitors that nobody
waits on are emptied and start again from their first update on the next
source; a monitor someone waits on that has to move to its own stream (watch-all
refused) skips the updates it already has, by ``updateId``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from ._api import RequenceApi
from ._errors import (
    ApiError,
    AuthenticationError,
    RequenceError,
    TaskAbortedError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
)
from ._fold import ContextFolder, NodeFold
from ._models import Created, TaskResult, UnknownUpdate, Update
from ._outcome import Outcome
from ._pool import WorkerPool
from ._protocol import TASK_END, TASK_ERROR
from ._sse import RawEvent
from ._stream import ResumingStream
from ._transfer import Inbound, Ordered, is_terminal
from ._wire import needs_ack, raw_reason, raw_result, route_keys, task_key, update_id

log = logging.getLogger("requence_task")

UpdateCallback = Callable[[Update], Any]

# The shared stream starts this many seconds before the earliest prepare it
# covers (the Date header has whole seconds, and may lag by one).
SINCE_MARGIN = 5.0
# Tasks prepared longer ago than this get their own stream rather than making
# the shared one replay everything since.
REPLAY_WINDOW = 60.0
# Forget handles that were garbage-collected every this many new tasks.
_PRUNE_EVERY = 1024
# A monitor keeps the typed updates of about this many recent updates for the
# iterators and listeners reading along (more while one of them lags, up to
# WINDOW_MAX); of the others, only their records. Small: what outlives a few
# hundred allocations costs the cyclic garbage collector.
WINDOW = 64
WINDOW_MAX = 16384

# What a monitor keeps of each update: its position, type and data, the data as
# the JSON text it came as (a tuple of atoms, which the cyclic garbage collector
# stops tracking: a long stream costs it nothing), or, for an update whose
# references were resolved, the data object.
Record = tuple["int | None", str, Any]


def _data_of(record: Record) -> Any:
    data = record[2]
    return json.loads(data) if isinstance(data, str) else data


def settle(future: Outcome[Any], error: BaseException) -> None:
    """Fail ``future`` with ``error`` unless it is already settled."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        future.set_exception(error)


class Monitor:
    """A task's updates as this handle saw them, and who waits on them."""

    __slots__ = (
        "__weakref__",
        "_cond",
        "_created",
        "_demanded",
        "_ended_raw",
        "_fallback",
        "_finishing",
        "_folder",
        "_follower",
        "_listeners",
        "_nodes",
        "_on_update",
        "_ordered",
        "_readers",
        "_records",
        "_result",
        "_skip_ids",
        "_template",
        "_waiting",
        "_window",
        "_window_start",
        "error",
        "finished",
        "lock",
        "prepared_at",
        "source",
        "stream",
        "task_id",
        "terminal",
        "wanted",
    )

    def __init__(
        self,
        follower: Follower,
        *,
        template: str | None,
        created: Outcome[Created],
        result: Outcome[TaskResult],
        on_update: UpdateCallback | None,
        fallback: Callable[[str], Created],
    ) -> None:
        self.lock = threading.RLock()
        # Made for the first iterator that waits (a Condition is about 1.4 KB, and most
        # handles never have one).
        self._cond: threading.Condition | None = None
        # Every update, as records; the typed ones of records[_window_start:]
        # (built once, on the stream's thread, for the iterators reading along).
        self._records: list[Record] = []
        self._window: list[Update] = []
        self._window_start = 0
        # Each running iterator and listener: the next index it reads.
        self._readers: dict[object, int] = {}
        self._waiting = 0  # iterators waiting on ``_cond``
        self._nodes: NodeFold | None = None  # kept up to date once asked for
        self.finished = False
        self.error: BaseException | None = None
        self.task_id: str | None = None
        self.prepared_at: float | None = None  # the server's clock, epoch seconds
        self.terminal: Update | None = None  # its end, until the result is settled
        self.stream: ResumingStream | None = None  # the stream feeding it, if any
        self._follower = follower
        self._template = template
        self._created = created
        self._result = result
        self._on_update = on_update
        self._fallback = fallback
        self._folder: ContextFolder | None = None
        self._listeners: list[Callable[[], None]] = []
        self._demanded = False
        self._finishing = False
        self._skip_ids: set[str] | None = None
        self._ordered: Ordered | None = None  # once an update had references
        self._ended_raw = False  # its terminal update came, maybe not yet folded
        # Kept by the follower (under its lock): how this monitor is fed.
        self.wanted = False  # somebody waits on it: route it as soon as possible
        self.source: str | None = None  # None, "shared", "own", or "ended" (on shared)

    # --- set-up ------------------------------------------------------------------

    def prepared(self, task_id: str, prepared_at: float | None) -> None:
        """The task exists: its id, and when (server clock) it was prepared."""
        with self.lock:
            self.task_id = task_id
            self.prepared_at = prepared_at
            self._folder = ContextFolder(task_id=task_id)

    def demand(self) -> None:
        """Somebody waits on this task: make sure a source feeds it."""
        with self.lock:
            if self._demanded:
                return
            self._demanded = True
            terminal = self.terminal
        self._follower.demand(self)
        if terminal is not None:
            self._start_finish(terminal)

    def reset(self) -> None:
        """Forget every update (nobody saw them): the next source replays them all."""
        with self.lock:
            self._records, self._window, self._window_start = [], [], 0
            self._nodes = None
            self.terminal = None
            self._ended_raw = False
            self._folder = ContextFolder(task_id=self.task_id)
            ordered, self._ordered = self._ordered, None
        if ordered is not None:
            ordered.cancel()

    def skip_seen(self) -> None:
        """The next source replays the task from its start: skip what came already."""
        with self.lock:
            records = list(self._records)
        seen = {uid for record in records if (uid := update_id(_data_of(record))) is not None}
        with self.lock:
            self._skip_ids = seen

    # --- feeding -------------------------------------------------------------------

    def deliver(self, raw: RawEvent) -> bool:
        """Fold one event of this task; returns whether the task has ended.

        An event with references goes through the task's :class:`Ordered`: its
        files become objects and its claim checks are fetched (off this thread),
        and it is folded after the events before it. The end is known at once.
        """
        if not raw.refs and self._ordered is None:
            return self._fold(raw)
        with self.lock:
            if self.terminal is not None or self.finished or self._ended_raw:
                return True
            if self._skipped(raw):
                return False
            if self._ordered is None:
                self._ordered = Ordered(
                    self._follower.inbound,
                    lambda: self.task_id,
                    self._fold,
                    self._unreadable,
                    skip=self._foreign_unreadable,
                )
            ordered = self._ordered
            ended = is_terminal(raw) and (
                self.task_id is None or task_key(raw.data) == self.task_id
            )
            self._ended_raw = ended
        ordered.push(raw)
        return ended

    def _foreign_unreadable(self, raw: RawEvent, error: BaseException) -> bool:
        """Whether an update that could not be read is another task's (a sub-task's):
        then it is left out of this task's updates, with a warning, and fails nothing."""
        own = task_key(raw.data)
        if self.task_id is None or not own or own == self.task_id:
            return False
        log.warning(
            "an update of task %s (a sub-task of %s) could not be read and is left out "
            "of the updates of %s: %s",
            own,
            self.task_id,
            self.task_id,
            error,
        )
        return True

    def _unreadable(self, error: BaseException) -> None:
        """An update's data could not be read (a claim check failed): the task's
        waiters and iterators get that error at that update."""
        self.fail(error)

    def _skipped(self, raw: RawEvent) -> bool:
        if self._skip_ids:
            uid = update_id(raw.data)
            if uid is not None and uid in self._skip_ids:
                self._skip_ids.discard(uid)
                return True
        return False

    def _fold(self, raw: RawEvent) -> bool:
        with self.lock:
            if self.terminal is not None or self.finished:
                return True
            if self._skipped(raw):
                return False
            if self._folder is None:
                self._folder = ContextFolder(task_id=self.task_id)
            update = self._folder.fold(raw.type, raw.data, raw.position)
            # (The text, unless its references were resolved into objects, or it has none.)
            kept = raw.text if raw.text and not raw.refs else raw.data
            self._records.append((raw.position, raw.type, kept))
            window = self._window
            window.append(update)
            if len(window) >= 2 * WINDOW:
                self._trim()
            if self._nodes is not None:
                self._nodes.feed(update)
            ended = update.is_terminal and (self.task_id is None or update.task_id == self.task_id)
            if ended:
                self.terminal = update
            demanded = self._demanded
            listeners = list(self._listeners) if self._listeners else None
            if self._waiting:  # (notify_all costs, even with nobody to wake)
                self._wake()
        if listeners:  # (taken under the lock above: one lock per update, not two)
            self._call(listeners)
        if self._on_update is not None:
            try:
                self._on_update(update)
            except Exception:
                log.exception("on_update callback of task %s raised", self.task_id)
        if ended and demanded:
            self._start_finish(update)
        return ended

    def fail(self, error: BaseException) -> None:
        """No update will come: waiters and iterators get ``error``."""
        with self.lock:
            if self.finished:
                return
            self.error = error
            self.finished = True
            self._wake()
        settle(self._result, error)
        self._notify()

    def _start_finish(self, terminal: Update) -> None:
        with self.lock:
            if self._finishing:
                return
            self._finishing = True
        if not self._created.done():
            # The result comes after the start: a task aborted while its finalize
            # was in flight fails with the finalize's answer (410), as it would
            # on its own stream. (Creation settles the result before the start.)
            self._created.add_done_callback(lambda _f: self._finish_now(terminal))
            return
        self._finish_now(terminal)

    def _finish_now(self, terminal: Update) -> None:
        if needs_ack(terminal):
            try:  # the ack is a request: not on the stream's thread
                self._follower.pool.submit(lambda: self._finish(terminal, True))
                return
            except RequenceError:
                pass  # the client is closing: finish without the ack
        self._finish(terminal, False)

    def _finish(self, update: Update, ack: bool) -> None:
        task_id = self.task_id or update.task_id
        if ack:
            try:
                self._follower.api.ack(task_id)
            except RequenceError as err:
                log.warning("could not ack the delivery of task %s: %s", task_id, err)
        context = update.context
        problem = update.problem if isinstance(update, UnknownUpdate) else None
        reason = getattr(update, "reason", None)
        if problem is not None and reason is None:
            reason = raw_reason(update.raw)
        if update.type == TASK_END:
            if problem is not None and not raw_result(update.raw)[0]:
                # Never a success with its result missing: say what could not be read.
                settle(
                    self._result,
                    ApiError(
                        f"Task {task_id} ended, but its taskEnd update could not be read "
                        f"({problem}), so its result is not known. get_task({task_id!r}) "
                        "shows its status; the server sent an update the protocol does "
                        "not allow.",
                    ),
                )
            else:
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    self._result.set_result(TaskResult.from_context(context, task_url=self._url()))
        elif update.type == TASK_ERROR:
            settle(
                self._result,
                TaskFailedError(reason, task_id=task_id, template=self._template, context=context),
            )
        else:
            settle(
                self._result,
                TaskAbortedError(reason, task_id=task_id, template=self._template),
            )
        with self.lock:
            self.finished = True
            self.terminal = None  # settled: its record is all that is kept of it
            self._folder = None
            self._release()
            self._wake()
        self._notify()

    def _waiter(self) -> threading.Condition:
        """The condition iterators wait on (under the lock)."""
        if self._cond is None:
            self._cond = threading.Condition(self.lock)
        return self._cond

    def _wake(self) -> None:
        """Wake the iterators waiting for an update (under the lock)."""
        if self._cond is not None:
            self._cond.notify_all()

    def _trim(self) -> None:
        """Drop the oldest typed updates that no iterator still needs (under the lock)."""
        window = self._window
        cut = len(window) - WINDOW
        if self._readers:
            cut = min(cut, min(self._readers.values()) - self._window_start)
            cut = max(cut, len(window) - WINDOW_MAX)  # a laggard then builds its own
        if cut >= WINDOW:  # (seldom: each cut is worth its copy)
            del window[:cut]
            self._window_start += cut

    def _release(self) -> None:
        """Once the task has ended and nobody reads along, drop the typed updates:
        an iterator that comes later builds its own from the records. (Under the lock.)"""
        if self.finished and not self._readers and not self._listeners:
            self._window_start = len(self._records)
            self._window = []

    def _url(self) -> str | None:
        created = self._created
        if created.done() and created.exception() is None:
            return created.result().show_url
        return self._fallback(self.task_id).show_url if self.task_id else None

    def created_or_fallback(self) -> Created:
        """The finalize answer; or, for a task aborted before it started, its URLs."""
        try:
            return self._created.result()
        except TaskAbortedError as err:
            if err.task_id is None:
                raise
            # Aborted before it started: its stream still holds the taskAborted update.
            return self._fallback(err.task_id)

    # --- reading ---------------------------------------------------------------------

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after each new update and at the end; returns the undo.

        The listener reads with ``since(index, reader=callback)``.
        """
        with self.lock:
            self._listeners.append(callback)
            self._readers[callback] = 0

        def undo() -> None:
            with self.lock, contextlib.suppress(ValueError):
                self._readers.pop(callback, None)
                self._listeners.remove(callback)
                self._release()

        return undo

    def _notify(self) -> None:
        with self.lock:
            if not self._listeners:
                return
            listeners = list(self._listeners)
        self._call(listeners)

    @staticmethod
    def _call(listeners: list[Callable[[], None]]) -> None:
        for listener in listeners:
            try:
                listener()
            except Exception:
                log.exception("an update listener raised")

    def since(
        self, index: int, reader: object = None
    ) -> tuple[list[Update], bool, BaseException | None]:
        """The updates from ``index`` on, whether no more will come, and the error.

        ``reader``: the listener reading (see :meth:`listen`): the window keeps
        what it has not read yet.
        """
        with self.lock:
            ended, error = self.finished or self.terminal is not None, self.error
            if reader is not None and reader in self._readers:
                self._readers[reader] = len(self._records)  # what this answer holds
            if index >= self._window_start:
                return self._window[index - self._window_start :], ended, error
            records = list(self._records)
        folder = ContextFolder(task_id=self.task_id)
        return self._built(folder, records, index), ended, error

    def _built(self, folder: ContextFolder, records: list[Record], start: int) -> list[Update]:
        """The typed updates of ``records[start:]``, folded by ``folder`` from ``records[0]``
        (the same updates the stream's thread built: folding is deterministic)."""
        built = []
        for index, record in enumerate(records):
            update = folder.fold(record[1], _data_of(record), record[0])
            if index >= start:
                built.append(update)
        return built

    def nodes(self) -> NodeFold:
        """The task's nodes as its updates so far show them (a snapshot; never waits)."""
        with self.lock:
            fold = self._nodes
            if fold is not None:
                return fold.copy()
            source = self._records
            records = list(source)
        fold = NodeFold(self.task_id, self._built(ContextFolder(task_id=self.task_id), records, 0))
        with self.lock:
            if self._nodes is None and self._records is source and len(source) == len(records):
                self._nodes = fold  # from now on, kept up to date as updates come
                return fold.copy()
        return fold

    def _wait_ended(self, timeout: float | None) -> RequenceError:
        stream = self.stream
        if stream is not None and stream.retry_state.failing:
            return stream.retry_state.wait_ended(
                "The next update",
                timeout,
                "the task's updates cannot be read, so whether it goes on is not known; "
                "the client keeps reconnecting. Iterate again later.",
            )
        return TaskTimeoutError(
            f"no update came within {timeout} s; the task goes on.", timeout=timeout
        )

    def iterate(self, timeout: float | None) -> Iterator[Update]:
        """Every update from the first, ending after the terminal one.

        It reads the typed updates the stream's thread built while it keeps up
        (within :data:`WINDOW` updates); an iterator that starts late or falls
        behind builds its own from the records, the same updates, once each.
        """
        reader = object()
        with self.lock:
            self._readers[reader] = 0
        try:
            index = 0
            own: ContextFolder | None = None  # once behind the window: its own fold
            while True:
                with self.lock:
                    deadline = None if timeout is None else time.monotonic() + timeout
                    while (
                        index >= len(self._records) and not self.finished and self.terminal is None
                    ):
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            raise self._wait_ended(timeout)
                        self._waiting += 1
                        try:
                            self._waiter().wait(remaining)
                        finally:
                            self._waiting -= 1
                    if index < len(self._records):
                        # All that came: one lock, not one per update.
                        pending: list[Record] | None = None
                        if own is None and index >= self._window_start:
                            batch = self._window[index - self._window_start :]
                            # (It holds the batch: the window may drop it.)
                            self._readers[reader] = index + len(batch)
                        elif own is None:
                            self._readers.pop(reader, None)  # the window is no use to it
                            pending = list(self._records)  # folded from the first
                        else:
                            pending = self._records[index:]
                    elif self.error is not None:
                        raise self.error
                    else:
                        return
                if pending is not None and own is None:
                    own = ContextFolder(task_id=self.task_id)
                    batch = self._built(own, pending, index)
                elif pending is not None:
                    assert own is not None
                    batch = self._built(own, pending, 0)
                index += len(batch)
                yield from batch
        finally:
            with self.lock:
                self._readers.pop(reader, None)
                self._release()


class Follower:
    """A client's routing of monitors to the shared stream or their own.

    Args:
        api: The client's API (streams, acks).
        pool: The client's worker pool (acks run there, not on a stream's thread).
        track: Closes a stream when the client closes.
        shared: Whether to use the shared stream at all.
    """

    def __init__(
        self,
        api: RequenceApi,
        pool: WorkerPool,
        track: Callable[[ResumingStream], None],
        *,
        shared: bool = True,
    ) -> None:
        self.api = api
        self.inbound = Inbound(api)  # references to objects, claim checks fetched
        self.pool = pool
        self.track = track
        self._lock = threading.Lock()
        # "open", "closed", or "unavailable" (watch-all refused, or not wanted)
        self._state = "closed" if shared else "unavailable"
        self._shared = shared
        # The open shared stream carries every update from this time on (server
        # clock): the earliest prepare time it was opened for, less SINCE_MARGIN.
        self._since = 0.0
        self._attached: dict[object, weakref.ref[Monitor]] = {}
        self._awaited: dict[object, Monitor] = {}  # attached and waited on: held strongly
        self._pending: dict[str, weakref.ref[Monitor]] = {}  # unrouted, prepare time known
        self._added = 0
        self._deaths = False
        self._stream: ResumingStream | None = None
        self._clock_offset = 0.0  # server clock minus ours, from the last Date header

    def _died(self, _ref: object) -> None:
        # A handle on the shared stream was collected (any thread, no lock):
        # the next idle check sweeps the dead entries.
        self._deaths = True

    @property
    def shared_open(self) -> bool:
        """Whether the shared stream is open (for tests and diagnostics)."""
        return self._state == "open"

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._state = "closed" if self._shared else "unavailable"
        self._attached, self._awaited, self._pending = {}, {}, {}
        self._deaths = False
        self._stream = None

    # --- from the task handles ---------------------------------------------------------

    def prepared(self, monitor: Monitor) -> None:
        """A task this client created was prepared (``monitor.prepared`` was called)."""
        if monitor.prepared_at is not None:
            self._clock_offset = monitor.prepared_at - time.time()
        with self._lock:
            task_id = monitor.task_id
            assert task_id is not None
            if monitor.source is not None:
                return
            if (
                self._state == "open"
                and monitor.prepared_at is not None
                and monitor.prepared_at >= self._since
            ):
                self._attach(monitor, strong=monitor.wanted)
                return
            if monitor.wanted:
                self._route(monitor)
                return
            if monitor.prepared_at is not None and self._state != "unavailable":
                self._pending[task_id] = weakref.ref(monitor)
                self._added += 1
                if self._added % _PRUNE_EVERY == 0:
                    self._prune()

    def creation_failed(self, monitor: Monitor, error: BaseException) -> None:
        """The task will never run (prepare or finalize failed)."""
        with self._lock:
            key = monitor.task_id
            if key is not None:
                self._pending.pop(key, None)
                if self._attached.get(key) is not None:
                    self._attached.pop(key, None)
                    self._awaited.pop(key, None)
                    self._close_if_idle()
        monitor.fail(error)

    def demand(self, monitor: Monitor) -> None:
        """Somebody waits on ``monitor``: feed it."""
        with self._lock:
            monitor.wanted = True
            if monitor.source == "shared":
                self._awaited[monitor.task_id] = monitor
            elif monitor.source is None and monitor.task_id is not None:
                self._route(monitor)
            # (Not yet prepared: routed by prepared(). Own stream: already fed.)

    # --- routing (under the lock) ---------------------------------------------------------

    def _attach(self, monitor: Monitor, *, strong: bool) -> None:
        monitor.source = "shared"
        monitor.stream = self._stream
        self._attached[monitor.task_id] = weakref.ref(monitor, self._died)
        if strong:
            self._awaited[monitor.task_id] = monitor

    def _route(self, monitor: Monitor) -> None:
        assert monitor.task_id is not None
        self._pending.pop(monitor.task_id, None)
        prepared_at = monitor.prepared_at
        now = time.time() + self._clock_offset
        if (
            self._state == "unavailable"
            or prepared_at is None
            or prepared_at < now - REPLAY_WINDOW
            or (self._state == "open" and prepared_at < self._since)
        ):
            self._own(monitor)
            return
        if self._state == "open":
            self._attach(monitor, strong=True)
            return
        # Open the shared stream, for this task and every recent one not yet followed.
        joining = [monitor]
        for task_id, ref in list(self._pending.items()):
            other = ref()
            if (
                other is None
                or other.prepared_at is None
                or other.prepared_at < now - (REPLAY_WINDOW)
            ):
                del self._pending[task_id]
                continue
            joining.append(other)
        self._pending.clear()
        earliest = min(m.prepared_at for m in joining if m.prepared_at is not None)
        self._since = earliest - SINCE_MARGIN
        for other in joining:
            self._attach(other, strong=other is monitor or other.wanted)
        self._open()

    def _open(self) -> None:
        since = datetime.fromtimestamp(self._since, tz=timezone.utc).isoformat()
        stream = self.api.watch_all(
            since=since, what="the shared update stream (watch-all)", stop=threading.Event()
        )
        self._stream = stream
        self._state = "open"
        for ref in self._attached.values():
            monitor = ref()
            if monitor is not None:
                monitor.stream = stream
        self.track(stream)
        threading.Thread(
            target=self._run, args=(stream,), name="requence-task-follow", daemon=True
        ).start()

    def _own(self, monitor: Monitor) -> None:
        monitor.source = "own"
        monitor._created.add_done_callback(lambda _f: _OwnStream(self, monitor).start())

    def _close_if_idle(self) -> None:
        """Close the shared stream once nobody waits on a task on it and no task
        it carries for a live handle is still running (that handle is likely to
        be awaited next: closing would make the next stream replay it)."""
        if self._state != "open" or self._awaited:
            return
        if self._attached and not self._deaths:
            return  # every handle on it is alive (none was collected since the sweep)
        self._deaths = False
        for key, ref in list(self._attached.items()):
            if ref() is None:
                del self._attached[key]
        if self._attached:
            return
        self._detach_all()
        self._state = "closed"

    def _detach_all(self) -> list[Monitor]:
        """Take every monitor off the shared stream; returns the awaited ones."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
        awaited = list(self._awaited.values())
        held = {id(m) for m in awaited}
        for ref in self._attached.values():
            monitor = ref()
            if monitor is None or id(monitor) in held:
                continue
            monitor.source = None
            if monitor.wanted:  # waited on since we last looked: keep what it has
                awaited.append(monitor)
                continue
            monitor.reset()
            if monitor.task_id is not None and monitor.terminal is None:
                self._pending[monitor.task_id] = ref
        self._attached, self._awaited = {}, {}
        return awaited

    def _prune(self) -> None:
        now = time.time() + self._clock_offset
        for task_id, ref in list(self._pending.items()):
            monitor = ref()
            if monitor is None or (monitor.prepared_at or 0) < now - REPLAY_WINDOW:
                del self._pending[task_id]

    # --- the shared stream's thread ---------------------------------------------------------

    def _feed(self, stream: ResumingStream, key: object, raw: RawEvent) -> bool:
        """Deliver ``raw`` to the monitor attached as ``key``, once; ``False`` once
        ``stream`` is no longer the shared stream (it was closed or replaced)."""
        ref = self._attached.get(key)
        if ref is None:
            return True
        monitor = ref()
        if monitor is None:  # its handle was garbage-collected
            with self._lock:
                if self._stream is not stream:
                    return False
                if self._attached.get(key) is ref:
                    del self._attached[key]
                self._close_if_idle()
                return self._stream is stream
        if monitor.deliver(raw):  # its own end (a sub-task's end is not its root's)
            with self._lock:
                if self._stream is not stream:
                    return False
                monitor.source = "ended"
                self._attached.pop(key, None)
                self._awaited.pop(key, None)
                self._close_if_idle()
                return self._stream is stream
        return True

    def _run(self, stream: ResumingStream) -> None:
        error: BaseException | None = None
        try:
            for raw in stream:
                # A sub-task's update goes to its root's handle and to its own.
                root, sub = route_keys(raw.data)
                if not self._feed(stream, root, raw):
                    return
                if sub is not None and not self._feed(stream, sub, raw):
                    return
        except BaseException as err:
            error = err
        with self._lock:
            if self._stream is not stream:
                return  # closed on purpose
            refused = isinstance(error, (ApiError, AuthenticationError, TaskNotFoundError))
            if refused:
                # The token may not watch all tasks: every task gets its own stream.
                log.debug("watch-all refused (%s); following tasks one by one", error)
                self._state = "unavailable"
            awaited = self._detach_all()
            if not refused:
                self._state = "closed"
            for monitor in awaited:
                if refused:
                    monitor.skip_seen()
                    self._own(monitor)
        if not refused:
            failure = error or RequenceError(
                "The shared update stream stopped before the task ended (the client was closed)."
            )
            for monitor in awaited:
                monitor.fail(failure)


class _OwnStream:
    """One task's own update stream, on a thread of its own."""

    def __init__(self, follower: Follower, monitor: Monitor) -> None:
        self._follower = follower
        self._monitor = monitor

    def start(self) -> None:
        threading.Thread(target=self._run, name="requence-task-monitor", daemon=True).start()

    def _run(self) -> None:
        monitor = self._monitor
        try:
            created = monitor.created_or_fallback()
        except BaseException as err:  # creation failed: that is the answer
            monitor.fail(err)
            return
        if monitor.task_id is None:
            monitor.prepared(created.task_id, None)
        stream = self._follower.api.watch(
            created.watch_url,
            what=f"the update stream of task {created.task_id}",
            task_id=created.task_id,
            stop=threading.Event(),
        )
        self._follower.track(stream)
        monitor.stream = stream
        try:
            for raw in stream:
                if monitor.deliver(raw):
                    return
        except BaseException as err:
            monitor.fail(err)
            return
        finally:
            stream.close()
        monitor.fail(
            RequenceError(
                f"The update stream of task {created.task_id} stopped before the task ended "
                "(the client was closed)."
            )
        )
