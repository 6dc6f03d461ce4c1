"""A value (or error) that comes once: the part of ``concurrent.futures.Future``
a task handle uses inside, at a tenth of its size.

A ``Future`` carries a ``threading.Condition`` of its own (about 1.6 KB with
it); a handle has three of them, for each of the tens of thousands of tasks a
program may hold. An :class:`Outcome` has a few slots; a thread that blocks on
one gets a ``threading.Event`` for the wait, which is dropped once settled.
The public ``Task.future`` is a real ``Future``, made when first asked for.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger("requence_task")

_LOCK = threading.Lock()  # every state change is a few assignments: one lock for all
_PENDING, _VALUE, _ERROR = 0, 1, 2


class Outcome(Generic[T]):
    """Settled once, with :meth:`set_result` or :meth:`set_exception`, from any thread.

    Its methods behave as ``concurrent.futures.Future``'s of the same name
    (it is never cancelled).
    """

    __slots__ = ("__weakref__", "_callbacks", "_error", "_event", "_state", "_value")

    def __init__(self) -> None:
        self._state = _PENDING
        self._value: T | None = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Outcome[T]], object]] | None = None
        self._event: threading.Event | None = None

    def done(self) -> bool:
        return self._state != _PENDING

    def cancelled(self) -> bool:
        return False

    def set_result(self, value: T) -> None:
        self._settle(_VALUE, value, None)

    def set_exception(self, error: BaseException) -> None:
        self._settle(_ERROR, None, error)

    def _settle(self, state: int, value: T | None, error: BaseException | None) -> None:
        with _LOCK:
            if self._state != _PENDING:
                raise concurrent.futures.InvalidStateError(f"{self!r} is settled already")
            self._value, self._error, self._state = value, error, state
            event, self._event = self._event, None
            callbacks, self._callbacks = self._callbacks, None
        if event is not None:
            event.set()
        for callback in callbacks or ():
            self._call(callback)

    def _call(self, callback: Callable[[Outcome[T]], object]) -> None:
        try:
            callback(self)
        except Exception:
            log.exception("a done callback raised")

    def add_done_callback(self, callback: Callable[[Outcome[T]], object]) -> None:
        """Call ``callback(self)`` once settled (at once, on this thread, if it is)."""
        with _LOCK:
            if self._state == _PENDING:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        self._call(callback)

    def _wait(self, timeout: float | None) -> None:
        if self._state != _PENDING:
            return
        with _LOCK:
            if self._state != _PENDING:
                return
            event = self._event
            if event is None:
                event = self._event = threading.Event()
        if not event.wait(timeout):
            raise concurrent.futures.TimeoutError()

    def result(self, timeout: float | None = None) -> T:
        """The value; raises the error it was settled with, or ``TimeoutError``."""
        self._wait(timeout)
        if self._state == _ERROR:
            assert self._error is not None
            raise self._error
        return self._value  # type: ignore[return-value]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return self._error

    def __repr__(self) -> str:
        state = ("pending", "done", "failed")[self._state]
        return f"<requence_task Outcome {state}>"


def mirrored(outcome: Outcome[T]) -> concurrent.futures.Future[T]:
    """A ``concurrent.futures.Future`` settled as ``outcome`` is (cancelling it
    changes nothing of the outcome)."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def copy(done: Outcome[T]) -> None:
        if future.cancelled():
            return
        try:
            if done._state == _ERROR:
                assert done._error is not None
                future.set_exception(done._error)
            else:
                future.set_result(done._value)  # type: ignore[arg-type]
        except concurrent.futures.InvalidStateError:
            pass  # cancelled meanwhile

    outcome.add_done_callback(copy)
    return future
