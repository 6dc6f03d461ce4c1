"""``watch_tasks``: the updates of every task a token may see, on one stream."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
from functools import partial
from types import TracebackType
from typing import Any

from ._client import Client, client_for
from ._errors import ConfigurationError, RequenceError, TaskTimeoutError
from ._fold import ContextFolder
from ._models import Update
from ._protocol import UPDATE_TYPES
from ._sse import RawEvent
from ._transfer import Ordered, is_terminal
from ._validate import since_text
from ._wire import needs_ack, task_key

log = logging.getLogger("requence_task")

_END = object()


class _Unreadable:
    """An update that could not be read, in the watcher's queue."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


_FOLDERS_LIMIT = 10_000


class TaskWatcher:
    """Updates of every task the token may see, from one live stream.

    Iterate it (from one thread) to get each update once, in order; each
    carries ``incomplete`` (this watcher missed that task's ``taskStart``) and
    ``root_task_id``, and a context folded per task. Tasks that end with
    ``require_ack`` are acknowledged. The stream resumes after drops, like a
    task's. :meth:`stop` ends it from any thread within a second; it is also
    a context manager.

    Make one with :func:`watch_tasks`.
    """

    def __init__(
        self,
        client: Client,
        *,
        since: str | None,
        only: frozenset[str] | None,
        on_update: Callable[[Update], Any] | None,
        on_connect: Callable[[], Any] | None,
        on_reconnecting: Callable[[int, float], Any] | None,
        on_error: Callable[[BaseException], Any] | None,
    ) -> None:
        self._client = client
        self._only = only
        self._on_update = on_update
        self._on_error = on_error
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._folders: dict[str, ContextFolder] = {}
        self._ordered: dict[str, Ordered] = {}  # tasks whose updates had references
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.error: BaseException | None = None
        """The error that ended the watcher, if one did."""
        self._stream = client._api.watch_all(
            since=since,
            only=sorted(only) if only is not None else None,
            what="the stream of all tasks",
            on_connect=on_connect,
            on_reconnecting=on_reconnecting,
        )
        client._track(self._stream)
        self._thread = threading.Thread(target=self._run, name="requence-task-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for raw in self._stream:
                key = task_key(raw.data)
                ordered = self._ordered.get(key)
                if ordered is None and not raw.refs:
                    self._take(raw)
                    continue
                if ordered is None:
                    if len(self._ordered) >= _FOLDERS_LIMIT:
                        self._ordered.pop(next(iter(self._ordered)))
                    ordered = self._ordered[key] = Ordered(
                        self._client._follower.inbound,
                        lambda key=key: key or None,  # type: ignore[misc]
                        self._take,
                        self._unreadable,
                        go_on=True,
                    )
                if is_terminal(raw):
                    del self._ordered[key]  # (it still delivers what it holds)
                ordered.push(raw)
        except BaseException as err:
            if not self._stopped.is_set():
                self.error = err
                if self._on_error is not None:
                    try:
                        self._on_error(err)
                    except Exception:
                        log.exception("the on_error callback of a task watcher raised")
        finally:
            self._queue.put(_END)

    def _take(self, raw: RawEvent) -> None:
        """Fold one event (hydrated), ack its end if asked, deliver it."""
        with self._lock:
            update = self._fold(raw.type, raw.data, raw.position)
        if update.is_terminal and needs_ack(update):
            # On the client's pool: a slow ack neither delays delivery nor stop().
            self._client._pool.submit(partial(self._ack, update.task_id))
        if self._on_update is not None:
            try:
                self._on_update(update)
            except Exception:
                log.exception("the on_update callback of a task watcher raised")
        self._queue.put(update)

    def _unreadable(self, error: BaseException) -> None:
        """An update could not be read (a claim check failed): ``on_error`` hears it,
        iteration raises it at its place, and the watcher goes on."""
        if self._on_error is not None:
            try:
                self._on_error(error)
            except Exception:
                log.exception("the on_error callback of a task watcher raised")
        self._queue.put(_Unreadable(error))

    def _ack(self, task_id: str) -> None:
        try:
            self._client._api.ack(task_id)
        except RequenceError as err:
            log.warning("could not ack the delivery of task %s: %s", task_id, err)

    def _fold(self, event_type: str, data: dict[str, Any], position: int | None) -> Update:
        key = task_key(data)
        folder = self._folders.get(key)
        if folder is None:
            if len(self._folders) >= _FOLDERS_LIMIT:
                # Tasks that never ended (as far as this stream showed) cannot grow
                # memory without bound: forget the oldest.
                self._folders.pop(next(iter(self._folders)))
            folder = self._folders[key] = ContextFolder(task_id=key or None)
        update = folder.fold(event_type, data, position)
        if update.is_terminal:
            self._folders.pop(key, None)
        return update

    def updates(self, timeout: float | None = None) -> Iterator[Update]:
        """Each update once, in order, until :meth:`stop`; ``timeout`` bounds each wait.

        Raises:
            RequenceUnreachableError, AuthenticationError: the stream could not go on.
            TaskTimeoutError: No update came within ``timeout`` seconds.
            ClaimCheckError: An update's claim check could not be fetched (it is
                also given to ``on_error``); the watcher goes on: iterate again.
        """
        while True:
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                state = self._stream.retry_state
                if state.failing:
                    raise state.wait_ended(
                        "The next update",
                        timeout,
                        "the watcher keeps reconnecting. Iterate again later.",
                    ) from None
                raise TaskTimeoutError(
                    f"no update came within {timeout} s; the watcher goes on.", timeout=timeout
                ) from None
            if item is _END:
                self._queue.put(_END)  # for any other iterator
                if self.error is not None:
                    raise self.error
                return
            if isinstance(item, _Unreadable):
                raise item.error  # the watcher goes on: iterate again for what follows
            assert isinstance(item, Update)
            yield item

    def __iter__(self) -> Iterator[Update]:
        return self.updates()

    def stop(self, timeout: float = 1.0) -> None:
        """End the watcher; iteration ends once what was received is read."""
        self._stopped.set()
        self._stream.close()
        self._queue.put(_END)  # iteration ends now, even while the stream connects
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the watcher still reads its stream."""
        return self._thread.is_alive()

    def __enter__(self) -> TaskWatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<requence_task.TaskWatcher {state}>"


def watch_tasks(
    since: datetime | date | str | None,
    *,
    only: Iterable[str] | None = None,
    on_update: Callable[[Update], Any] | None = None,
    on_connect: Callable[[], Any] | None = None,
    on_reconnecting: Callable[[int, float], Any] | None = None,
    on_error: Callable[[BaseException], Any] | None = None,
    access_token: str | None = None,
    client: Client | None = None,
) -> TaskWatcher:
    """Watch every task the token may see, from ``since`` on.

    Args:
        since: Updates from this moment on (a naive time is local time);
            ``None`` replays everything Requence still has.
        only: Update types to receive (``["taskEnd", "taskError"]``); all by default.
        on_update: Called with each update, on the watcher's thread.
        on_connect: Called each time the stream (re)connects.
        on_reconnecting: Called with (attempt, delay in seconds) before a reconnect.
        on_error: Called with the error that ends the watcher, if one does.
        access_token: The access token, as for ``Task``.
        client: The ``Client`` to use, as for ``Task``; not with ``access_token``.

    Example:
        >>> with watch_tasks(datetime.now(), only=["taskEnd"]) as watcher:  # doctest: +SKIP
        ...     for update in watcher:
        ...         print(update.task_id, update.result)
    """
    text = since_text(since)
    types: frozenset[str] | None = None
    if only is not None:
        if isinstance(only, str):
            only = [only]
        types = frozenset(only)
        unknown = sorted(t for t in types if t not in UPDATE_TYPES)
        if unknown or not types:
            raise ConfigurationError(
                f"only must name update types ({', '.join(UPDATE_TYPES)}); "
                f"unknown: {', '.join(unknown) or 'none given'}"
            )
    for name, hook in (
        ("on_update", on_update),
        ("on_connect", on_connect),
        ("on_reconnecting", on_reconnecting),
        ("on_error", on_error),
    ):
        if hook is not None and not callable(hook):
            raise ConfigurationError(f"{name} must be callable")
    return TaskWatcher(
        client_for(access_token, client),
        since=text,
        only=types,
        on_update=on_update,
        on_connect=on_connect,
        on_reconnecting=on_reconnecting,
        on_error=on_error,
    )
