"""asyncio over the task handle's futures: ``await task``, ``task.aiter()``.

No thread is used to wait. The handle's ``concurrent.futures`` futures and
its update listener call back from the thread that settles them; those
callbacks only hand over to the event loop with ``call_soon_threadsafe``.

The asyncio future a waiter awaits is *chained* from the handle's future by
hand, not with ``asyncio.wrap_future``: that one cancels the source when the
awaiting coroutine is cancelled, and the handle's future is shared by every
waiter, so cancelling one ``await`` would spoil ``result()`` for all.
Cancelling an ``await`` never aborts the task either: only ``abort()`` does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import TaskTimeoutError
from ._fanout import check_timeout
from ._updates import TaskResult, Update

if TYPE_CHECKING:
    from ._task import Task

T = TypeVar("T")


def _copy_state(source: concurrent.futures.Future[Any], target: asyncio.Future[Any]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
        return
    error = source.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())


def _call_in_loop(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    # The loop may have closed while the task went on: nobody waits any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


# One asyncio future per (handle future, event loop), shared by that loop's waiters: a
# done-callback cannot be taken off a concurrent future, so a waiter that times out
# and waits again must not add one more each time.
_bridges: weakref.WeakKeyDictionary[
    concurrent.futures.Future[Any],
    weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future[Any]],
] = weakref.WeakKeyDictionary()
_bridges_lock = threading.Lock()


def _bridge(
    source: concurrent.futures.Future[T], loop: asyncio.AbstractEventLoop
) -> asyncio.Future[T]:
    with _bridges_lock:
        per_loop = _bridges.get(source)
        if per_loop is None:
            per_loop = _bridges[source] = weakref.WeakKeyDictionary()
        target = per_loop.get(loop)
        if target is not None:
            return target
        target = per_loop[loop] = loop.create_future()
    source.add_done_callback(lambda done: _call_in_loop(loop, _copy_state, done, target))
    return target


async def await_future(source: concurrent.futures.Future[T], timeout: float | None, what: str) -> T:
    """Await a ``concurrent.futures.Future`` without a thread and without cancelling it."""
    # shield(): cancelling this waiter leaves the shared bridge for the others.
    shared = asyncio.shield(_bridge(source, asyncio.get_running_loop()))
    if timeout is None:
        return await shared
    try:
        return await asyncio.wait_for(shared, timeout)
    except asyncio.TimeoutError:
        raise TaskTimeoutError(
            f"{what} did not come within {timeout} s; the task goes on. "
            "Await again to wait longer, or abort() it.",
            timeout=timeout,
        ) from None


async def result(task: Task, timeout: float | None = None) -> TaskResult:
    """``await task.aresult(timeout)``; ``await task`` is this without a time-out."""
    seconds = check_timeout(timeout)
    return await await_future(task.future, seconds, "The task's result")


async def finalized(task: Task, timeout: float | None = None) -> str:
    """``await task.afinalized(timeout)``: the id once the task started."""
    seconds = check_timeout(timeout)
    await await_future(task._created, seconds, "The task's start")
    return task.finalized(timeout=0)  # settled: the id, or the error, as finalized() says


class _Waker:
    """Sets an asyncio event from any thread; coalesces a burst into one loop call."""

    __slots__ = ("event", "loop", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        self.loop = loop
        self.event = event
        self.scheduled = False

    def __call__(self) -> None:  # any thread
        if self.scheduled:
            return
        self.scheduled = True
        _call_in_loop(self.loop, self._fire)

    def _fire(self) -> None:  # the loop's thread
        self.scheduled = False
        self.event.set()


class TaskUpdates(AsyncIterator[Update]):
    """The async iterator of ``task.aiter()``: every update from the first.

    It listens to the handle (no thread of its own) and stops listening when
    it ends, when :meth:`aclose` is called, or when it is garbage collected.
    """

    def __init__(self, task: Task, timeout: float | None) -> None:
        self._task = task
        self._timeout = timeout
        self._index = 0
        self._buffer: deque[Update] = deque()
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._undo: weakref.finalize[Any, Any] | None = None
        self._closed = False

    def __aiter__(self) -> TaskUpdates:
        return self

    def _event_of(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        """The event that wakes this iterator in ``loop`` (listening from the first call)."""
        if self._event is not None and self._loop is loop:
            return self._event
        if self._undo is not None:  # iterated from another loop before
            self._undo()
        event = asyncio.Event()
        # The listener holds the waker, never this iterator: the iterator can be
        # collected while the task goes on, and the finalizer then stops listening.
        self._undo = weakref.finalize(self, self._task._listen(_Waker(loop, event)))
        self._event, self._loop = event, loop
        return event

    async def __anext__(self) -> Update:
        if self._buffer:
            return self._buffer.popleft()
        if self._closed:
            raise StopAsyncIteration
        event = self._event_of(asyncio.get_running_loop())
        while True:
            event.clear()
            updates, finished, error = self._task._updates_since(self._index)
            if updates:
                self._index += len(updates)
                self._buffer.extend(updates)
                return self._buffer.popleft()
            if finished:
                self._close()
                if error is not None:
                    raise error
                raise StopAsyncIteration
            if self._timeout is None:
                await event.wait()
                continue
            try:
                await asyncio.wait_for(event.wait(), self._timeout)
            except asyncio.TimeoutError:
                raise TaskTimeoutError(
                    f"no update came within {self._timeout} s; the task goes on.",
                    timeout=self._timeout,
                ) from None

    def _close(self) -> None:
        self._closed = True
        if self._undo is not None:
            self._undo()

    async def aclose(self) -> None:
        """Stop listening; the iteration ends (``contextlib.aclosing`` calls this)."""
        self._buffer.clear()
        self._close()
