"""A stream of updates as Server-Sent Events: the stored history, then live.

The one place that makes an SSE response. The API's watch and watch-all and
the task page's event stream all answer with :func:`feed`: the updates the
store holds after the cursor, page by page, followed by the new ones the hub
publishes, with ``: keep-alive`` comments while nothing happens. A task's
stream ends after its terminal update (or when the task is gone); a
project's stream runs until the reader leaves or the server stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final

from starlette.responses import StreamingResponse

from .._protocol import TERMINAL_UPDATE_TYPES
from ._context import Context
from ._store import ENDED_STATUSES, Event

PAGE: Final = 500
"""How many stored updates one read of the history takes."""

_HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def feed(
    context: Context,
    *,
    task_id: str | None = None,
    project: str | None = None,
    after: int | None = None,
    since: float | None = None,
    types: frozenset[str] | None = None,
) -> StreamingResponse:
    """The SSE response of one task's updates (``task_id``) or one project's.

    Args:
        context: Where the store, the hub, the faults and the keep-alive are.
        task_id: The task whose updates to send; ends after its last one.
        project: Otherwise, the project whose updates of every task to send.
        after: Send only updates after this position (wins over ``since``).
        since: Else only updates created at or after this epoch second.
        types: Of a project's stream, only updates of these types.
    """
    frames = _frames(
        context, task_id=task_id, project=project, after=after, since=since, types=types
    )
    return StreamingResponse(frames, media_type="text/event-stream", headers=_HEADERS)


def frame(event: Event) -> bytes:
    """One stored update as an SSE frame: its position is the ``id``."""
    return f"id: {event.position}\nevent: {event.type}\ndata: {event.data}\n\n".encode()


async def _frames(
    context: Context,
    *,
    task_id: str | None,
    project: str | None,
    after: int | None,
    since: float | None,
    types: frozenset[str] | None,
) -> AsyncIterator[bytes]:
    """Frames of one stream: history from the store, then live events."""
    store, hub = context.store, context.hub
    sub = hub.subscribe(task_id=task_id, project=project)
    sent = 0
    cut_after = context.faults.cut_streams_after
    keepalive = context.config.keepalive_interval

    def read() -> list[Event]:
        if task_id is not None:
            return store.task_events(task_id, after=after, since=since, limit=PAGE)
        assert project is not None
        return store.project_events(project, after=after, since=since, types=types, limit=PAGE)

    try:
        while True:
            # Catch up from the store, page by page.
            while True:
                events = read()
                # One write per page of history: a reader that went away
                # costs one failed write, not one per event.
                batch: list[bytes] = []
                done = False
                for event in events:
                    batch.append(frame(event))
                    after = event.position
                    sent += 1
                    if task_id is not None and event.type in TERMINAL_UPDATE_TYPES:
                        done = True
                        break
                    if cut_after is not None and sent >= cut_after:
                        done = True
                        break
                if batch:
                    yield b"".join(batch)
                if done:
                    return
                if len(events) < PAGE:
                    break
            if task_id is not None:
                task = store.task(task_id)
                if task is None or task.status in ENDED_STATUSES:
                    if task is not None and read():
                        continue  # the end arrived while we looked: send it
                    return
            # Live: new events from the hub, keep-alive comments meanwhile.
            while not sub.overflowed:
                try:
                    event_or_none = await asyncio.wait_for(sub.queue.get(), keepalive)
                except asyncio.TimeoutError:
                    yield b": keep-alive\n\n"
                    if task_id is not None and store.task(task_id) is None:
                        return  # discarded by cleanup
                    continue
                if event_or_none is None:
                    return  # server shutdown
                event = event_or_none
                if after is not None and event.position <= after:
                    continue
                if types is not None and event.type not in types:
                    continue
                terminal = task_id is not None and event.type in TERMINAL_UPDATE_TYPES
                if after is None and since is not None and event.created_at < since:
                    if terminal:
                        return  # the end came before `since`: nothing more to send
                    continue
                yield frame(event)
                after = event.position
                sent += 1
                if terminal:
                    return
                if cut_after is not None and sent >= cut_after:
                    return
            sub.reset()
    finally:
        sub.close()
