"""Fan-out of new events from the engine's threads to SSE streams on the event loop.

The engine stores an event, then publishes it here while still holding its
lock, so events reach the loop in position order. Each stream subscribes
*before* reading history from the store and drops what it already sent, so
nothing falls between the two; for the same reason an event that nobody
listens to when it is published is dropped here (a stream subscribing later
reads it from the store). Events published while the loop has not yet taken
the earlier ones join them: one wake-up of the loop delivers them all. A
stream that cannot keep up overflows its queue and goes back to reading the
store: memory stays bounded, and still nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict

from ._store import Event

QUEUE_LIMIT = 10_000


class Subscription:
    """One stream's view of new events: a queue, and an overflow flag."""

    def __init__(self, hub: Hub, *, task_id: str | None, project: str | None) -> None:
        self.hub = hub
        self.task_id = task_id
        self.project = project
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE_LIMIT)
        self.overflowed = False

    def offer(self, event: Event | None) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True

    def reset(self) -> None:
        """Forget queued events; the stream re-reads the store from its cursor."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.overflowed = False

    def close(self) -> None:
        self.hub.unsubscribe(self)


class Hub:
    """Delivers published events to the subscriptions of their task and project."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._by_task: dict[str, set[Subscription]] = defaultdict(set)
        self._by_project: dict[str, set[Subscription]] = defaultdict(set)
        self._lock = threading.Lock()
        self._closed = False
        self._pending: list[Event] = []  # published, not yet taken by the loop

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._loop = loop
            self._closed = False
            self._pending.clear()

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._by_task.values()) + sum(
            len(s) for s in self._by_project.values()
        )

    # Called on the loop thread only.
    def subscribe(self, *, task_id: str | None = None, project: str | None = None) -> Subscription:
        sub = Subscription(self, task_id=task_id, project=project)
        if task_id is not None:
            self._by_task[task_id].add(sub)
        else:
            assert project is not None
            self._by_project[project].add(sub)
        if self._closed:
            sub.offer(None)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        key, table = (
            (sub.task_id, self._by_task)
            if sub.task_id is not None
            else (sub.project, self._by_project)
        )
        assert key is not None
        subs = table.get(key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del table[key]

    # Called from any thread.
    def publish(self, event: Event) -> None:
        if not (self._by_task.get(event.task_id) or self._by_project.get(event.project)):
            return  # nobody listens; who subscribes later reads it from the store
        with self._lock:
            loop = self._loop
            if loop is None or self._closed:
                return
            self._pending.append(event)
            if len(self._pending) > 1:
                return  # the loop is already called for the earlier ones
            try:
                loop.call_soon_threadsafe(self._dispatch)
            except RuntimeError:  # the loop closed under us: nobody listens any more
                self._loop = None
                self._pending.clear()

    def close(self) -> None:
        """End every stream (server shutdown)."""
        with self._lock:
            loop, self._closed = self._loop, True
            if loop is None:
                return
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(self._close_all)

    def _dispatch(self) -> None:
        with self._lock:
            events, self._pending = self._pending, []
        for event in events:
            for sub in self._by_task.get(event.task_id, ()):
                sub.offer(event)
            for sub in self._by_project.get(event.project, ()):
                sub.offer(event)

    def _close_all(self) -> None:
        for table in (self._by_task, self._by_project):
            for subs in table.values():
                for sub in subs:
                    sub.overflowed = False
                    sub.reset()
                    sub.offer(None)
