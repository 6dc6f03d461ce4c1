"""asyncio over the task handle's futures: ``await task``, ``task.aiter()``.

No thread is used to wait. The handle's outcomes (``_outcome.Outcome``) and
its update listener call back from the thread that settles them; those
callbacks only hand over to the event loop with ``call_soon_threadsafe``.

The asyncio future a waiter awaits is *chained* from the handle's future by
hand, not with ``asyncio.wrap_future``: that one cancels the source when the
awaiting coroutine is cancelled, and the handle's future is shared by every
waiter, so cancelling one ``await`` would spoil ``result()`` for all.
Cancelling an ``await`` never aborts the task either: only ``abort()`` does.

Every wait awaits a future of its own (never ``asyncio.wait_for`` nor
``asyncio.shield``), so a cancellation always lands on that future and is
raised: on Python 3.10 and 3.11 ``wait_for`` returns the result instead when
the cancellation and the result come in the same loop iteration.

While one of these waits is pending in a main-thread loop, the loop is woken
every :data:`_TICK` seconds. A signal handler that schedules its work with a
plain ``call_soon`` (ipykernel's SIGINT handler for async cells does, through
tornado) does not wake a sleeping loop; without the tick a kernel interrupt
would only be seen when the task ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import TaskTimeoutError
from ._models import TaskResult, Update
from ._outcome import Outcome
from ._validate import check_timeout

if TYPE_CHECKING:
    from ._task import Task

T = TypeVar("T")


def _copy_state(source: Outcome[Any], target: asyncio.Future[Any]) -> None:
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


# One asyncio future per (handle outcome, event loop), shared by that loop's waiters:
# a waiter that times out and waits again must not add one more done-callback each time.
_bridges: weakref.WeakKeyDictionary[
    Outcome[Any],
    weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future[Any]],
] = weakref.WeakKeyDictionary()
_bridges_lock = threading.Lock()


def _bridge(source: Outcome[T], loop: asyncio.AbstractEventLoop) -> asyncio.Future[T]:
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


# Seconds between wake-ups of a main-thread loop while one of ours waits in it.
_TICK = 0.25


class _Ticker:
    """Wakes one loop every :data:`_TICK` seconds while it has a waiter of ours."""

    __slots__ = ("handle", "waiters")

    def __init__(self) -> None:
        self.waiters = 0
        self.handle: asyncio.TimerHandle | None = None

    def tick(self, loop: asyncio.AbstractEventLoop) -> None:
        # Doing nothing is the point: the loop ran callbacks scheduled without a wake-up.
        self.handle = loop.call_later(_TICK, self.tick, loop) if self.waiters else None


# Only the loop's own thread touches its ticker; the timer handle keeps the loop
# alive only while a waiter is pending.
_tickers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Ticker] = (
    weakref.WeakKeyDictionary()
)


@contextlib.contextmanager
def _kept_awake(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers run in the main thread only
        return
    ticker = _tickers.get(loop)
    if ticker is None:
        ticker = _tickers[loop] = _Ticker()
    ticker.waiters += 1
    if ticker.handle is None:
        ticker.handle = loop.call_later(_TICK, ticker.tick, loop)
    try:
        yield
    finally:
        ticker.waiters -= 1
        if not ticker.waiters and ticker.handle is not None:
            ticker.handle.cancel()
            ticker.handle = None


def _wake(waiter: asyncio.Future[bool], woken: bool, *_: object) -> None:
    if not waiter.done():
        waiter.set_result(woken)


async def _wait(waiter: asyncio.Future[bool], timeout: float | None) -> bool:
    """Await ``waiter``, this wait's own future: True once woken, False on the time-out.

    Cancelling the caller cancels ``waiter`` (or, if it is already settled, is
    raised at the ``await`` all the same): the cancellation is never lost.
    """
    loop = asyncio.get_running_loop()
    timer = None
    if timeout is not None and not math.isinf(timeout):
        timer = loop.call_later(timeout, _wake, waiter, False)
    try:
        with _kept_awake(loop):
            return await waiter
    finally:
        if timer is not None:
            timer.cancel()


async def await_future(
    source: Outcome[T],
    timeout: float | None,
    what: str,
    unreachable: Callable[[], BaseException | None] | None = None,
) -> T:
    """Await an outcome of the handle without a thread.

    ``unreachable``, called when the time-out ends, returns the error to raise
    instead of :class:`TaskTimeoutError` when Requence was unreachable meanwhile.
    """
    loop = asyncio.get_running_loop()
    shared = _bridge(source, loop)
    if not shared.done():
        waiter: asyncio.Future[bool] = loop.create_future()
        woken = functools.partial(_wake, waiter, True)
        shared.add_done_callback(woken)
        try:
            await _wait(waiter, timeout)
        finally:
            shared.remove_done_callback(woken)
    if shared.done():  # settled, even if the time-out came in the same iteration
        return shared.result()
    error = unreachable() if unreachable is not None else None
    if error is not None:
        raise error
    raise TaskTimeoutError(
        f"{what} did not come within {timeout} s; the task goes on. "
        "Await again to wait longer, or abort() it.",
        timeout=timeout,
    )


async def result(task: Task, timeout: float | None = None) -> TaskResult:
    """``await task.aresult(timeout)``; ``await task`` is this without a time-out."""
    seconds = check_timeout(timeout)
    what = "The task's result"
    task._ensure_monitoring()
    return await await_future(
        task._result, seconds, what, lambda: task._unreachable(what, seconds, follows=True)
    )


async def finalized(task: Task, timeout: float | None = None) -> str:
    """``await task.afinalized(timeout)``: the id once the task started."""
    seconds = check_timeout(timeout)
    what = "The task's start"
    await await_future(
        task._created, seconds, what, lambda: task._unreachable(what, seconds, follows=False)
    )
    return task.finalized(timeout=0)  # settled: the id, or the error, as finalized() says


class _Waker:
    """Wakes an iterator's pending waits from any thread; coalesces a burst into one loop call."""

    __slots__ = ("loop", "scheduled", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.scheduled = False
        self.waiters: set[asyncio.Future[bool]] = set()

    def __call__(self) -> None:  # any thread
        if self.scheduled:
            return
        self.scheduled = True
        _call_in_loop(self.loop, self._fire)

    def _fire(self) -> None:  # the loop's thread
        self.scheduled = False
        for waiter in self.waiters:
            _wake(waiter, True)


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
        self._waker: _Waker | None = None
        self._undo: weakref.finalize[Any, Any] | None = None
        self._closed = False

    def __aiter__(self) -> TaskUpdates:
        return self

    def _waker_of(self, loop: asyncio.AbstractEventLoop) -> _Waker:
        """What wakes this iterator in ``loop`` (listening from the first call)."""
        if self._waker is not None and self._waker.loop is loop:
            return self._waker
        if self._undo is not None:  # iterated from another loop before
            self._undo()
        waker = _Waker(loop)
        # The listener holds the waker, never this iterator: the iterator can be
        # collected while the task goes on, and the finalizer then stops listening.
        self._undo = weakref.finalize(self, self._task._listen(waker))
        self._waker = waker
        return waker

    async def __anext__(self) -> Update:
        if self._buffer:
            return self._buffer.popleft()
        if self._closed:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        waker = self._waker_of(loop)
        timed_out = False
        while True:
            # No await from this check to waiting: a wake-up cannot slip in between.
            updates, finished, error = self._task._updates_since(self._index, reader=waker)
            if updates:
                self._index += len(updates)
                self._buffer.extend(updates)
                return self._buffer.popleft()
            if finished:
                self._close()
                if error is not None:
                    raise error
                raise StopAsyncIteration
            if timed_out:
                raise TaskTimeoutError(
                    f"no update came within {self._timeout} s; the task goes on.",
                    timeout=self._timeout,
                )
            waiter: asyncio.Future[bool] = loop.create_future()
            waker.waiters.add(waiter)
            try:
                timed_out = not await _wait(waiter, self._timeout)
            finally:
                waker.waiters.discard(waiter)

    def _close(self) -> None:
        self._closed = True
        if self._undo is not None:
            self._undo()

    async def aclose(self) -> None:
        """Stop listening; the iteration ends (``contextlib.aclosing`` calls this)."""
        self._buffer.clear()
        self._close()
