"""asyncio: ``await task``, ``aresult``, ``afinalized`` and ``task.aiter()``,
all without a thread per waiter."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from requence_task import (
    Client,
    ConfigurationError,
    NodeUpdateUpdate,
    RequenceUnreachableError,
    Task,
    TaskError,
    TaskFailedError,
    TaskResult,
    TaskTimeoutError,
    Update,
    _aio,
)
from requence_task.local import LocalRequence

from .conftest import make_client, open_gate, wait_for_update, wait_until


def run(coroutine: Any, timeout: float = 60) -> Any:
    """Run a coroutine on a fresh event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


def test_await_a_task_gives_its_result(busy_client: Client) -> None:
    async def main() -> list[TaskResult]:
        tasks = Task.map("echo", [1, 2, 3], client=busy_client)
        single = await tasks[0]
        assert single.result == {"input": 1}
        return list(await asyncio.gather(*tasks))

    results = run(main())
    assert [r.result for r in results] == [{"input": 1}, {"input": 2}, {"input": 3}]


def test_await_raises_the_tasks_error(busy_client: Client) -> None:
    async def main() -> None:
        with pytest.raises(TaskFailedError):
            await Task("late-fail", client=busy_client)
        with pytest.raises(TaskError) as caught:
            await Task("greet", input={}, client=busy_client)
        assert caught.value.status == 422

    run(main())


def test_aresult_times_out_and_can_wait_again(
    busy_client: Client, gates: Callable[[], str]
) -> None:
    key = gates()
    task = Task("gated", input={"gate": key}, client=busy_client)

    async def main() -> TaskResult:
        with pytest.raises(TaskTimeoutError) as caught:
            await task.aresult(timeout=0.3)
        assert caught.value.timeout == 0.3
        assert isinstance(caught.value, TimeoutError)
        with pytest.raises(TaskTimeoutError):
            await task.aresult(timeout=0.1)
        open_gate(key)
        return await task.aresult(timeout=30)

    assert run(main()).result == {"opened": key}
    assert task.result(timeout=0).result == {"opened": key}


def test_cancelling_an_await_leaves_the_task_and_other_waiters_alone(
    busy_client: Client, gates: Callable[[], str]
) -> None:
    key = gates()
    task = Task("gated", input={"gate": key}, client=busy_client)

    async def main() -> TaskResult:
        first = asyncio.ensure_future(task.aresult())
        second = asyncio.ensure_future(task.aresult(timeout=30))
        await asyncio.sleep(0.1)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        open_gate(key)
        return await second

    assert run(main()).result == {"opened": key}
    assert not task.future.cancelled()
    assert task.result(timeout=0).result == {"opened": key}


async def _awaited(task: Task) -> TaskResult:
    return await task


async def _iterated(task: Task) -> list[str]:
    return [update.type async for update in task.aiter(timeout=30)]


WAITS: dict[str, Callable[[Task], Awaitable[Any]]] = {
    "aresult": lambda task: task.aresult(timeout=30),
    "await": _awaited,
    "aiter": _iterated,
}


@pytest.mark.parametrize("kind", list(WAITS))
def test_a_cancelled_wait_ends_at_once_and_the_others_go_on(
    busy_client: Client, gates: Callable[[], str], kind: str
) -> None:
    key = gates()
    task = Task("gated", input={"gate": key}, client=busy_client)
    wait = WAITS[kind]

    async def main() -> tuple[float, Any]:
        cancelled = asyncio.ensure_future(wait(task))
        other = asyncio.ensure_future(wait(task))
        await asyncio.sleep(0.3)
        assert not cancelled.done() and not other.done()
        started = time.monotonic()
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        took = time.monotonic() - started
        assert not other.done()
        open_gate(key)
        return took, await other

    took, other = run(main())
    assert took < 0.5
    if kind == "aiter":
        assert other[0] == "taskStart" and other[-1] == "taskEnd"
    else:
        assert other.result == {"opened": key}
    assert not task.future.cancelled()
    assert task.result(timeout=30).result == {"opened": key}


def test_a_cancelled_afinalized_leaves_the_start_and_other_waiters_alone(
    busy_server: LocalRequence, busy_client: Client
) -> None:
    busy_server.faults.latency = 0.5  # each of the two requests that start the task
    task = Task("echo", input=1, client=busy_client)

    async def main() -> tuple[float, str]:
        cancelled = asyncio.ensure_future(task.afinalized(timeout=30))
        other = asyncio.ensure_future(task.afinalized(timeout=30))
        await asyncio.sleep(0.2)
        assert not cancelled.done() and not other.done()
        started = time.monotonic()
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        return time.monotonic() - started, await other

    took, task_id = run(main())
    assert took < 0.3
    assert task_id == task.task_id(0)
    assert task.result(timeout=30).result == {"input": 1}


@pytest.mark.parametrize("kind", ["aresult", "await"])
def test_a_cancel_that_comes_with_the_result_is_not_lost(
    busy_client: Client, gates: Callable[[], str], kind: str
) -> None:
    """On 3.10 and 3.11 ``asyncio.wait_for`` returned the result in this case."""
    key = gates()
    task = Task("gated", input={"gate": key}, client=busy_client)

    async def main() -> None:
        waiting = asyncio.ensure_future(WAITS[kind](task))
        await asyncio.sleep(0.3)  # waiting: the loop's callback is on the handle's future
        handed_over = threading.Event()
        task.future.add_done_callback(lambda _: handed_over.set())  # runs after that one
        open_gate(key)
        assert handed_over.wait(30)  # blocks the loop: the result waits in its queue
        await asyncio.sleep(0)  # the loop takes the result in...
        waiting.cancel()  # ...and the cancellation, in the same iteration
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert (await WAITS[kind](task)).result == {"opened": key}

    run(main())
    assert not task.future.cancelled()


def test_a_cancel_that_comes_with_an_update_is_not_lost(
    busy_client: Client, gates: Callable[[], str]
) -> None:
    key = gates()
    task = Task("gated", input={"gate": key}, client=busy_client)
    wait_for_update(task, lambda update: update.type == "nodeStart")
    heard = threading.Event()
    listen = task._listen

    def heard_after(callback: Callable[[], None]) -> Callable[[], None]:
        def call() -> None:
            callback()
            heard.set()

        return listen(call)

    task._listen = heard_after  # type: ignore[method-assign]

    async def main() -> list[str]:
        updates = task.aiter(timeout=30)
        seen = [(await updates.__anext__()).type, (await updates.__anext__()).type]
        assert seen == ["taskStart", "nodeStart"]
        waiting = asyncio.ensure_future(updates.__anext__())
        await asyncio.sleep(0.3)
        assert not waiting.done()
        heard.clear()
        open_gate(key)
        assert heard.wait(30)  # blocks the loop: the wake-up waits in its queue
        await asyncio.sleep(0)  # the loop takes the wake-up in...
        waiting.cancel()  # ...and the cancellation, in the same iteration
        with pytest.raises(asyncio.CancelledError):
            await waiting
        # The same iterator goes on; the cancelled step took no update away.
        return seen + [update.type async for update in updates]

    types = run(main())
    assert types == [u.type for u in task.updates(timeout=5)]
    assert types[-1] == "taskEnd"


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")
@pytest.mark.parametrize("kind", list(WAITS))
def test_a_signal_handler_that_does_not_wake_the_loop_still_cancels(
    busy_client: Client, gates: Callable[[], str], kind: str
) -> None:
    """As ipykernel cancels an async cell on SIGINT: a plain ``call_soon`` from the
    handler, which does not wake a loop asleep in ``select``."""
    key = gates()
    task = Task("gated", input={"gate": key}, client=busy_client)
    wait_for_update(task, lambda update: update.type == "nodeStart")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        waiting = asyncio.ensure_future(WAITS[kind](task))
        await asyncio.sleep(0.3)
        sent = 0.0

        def on_signal(signum: int, frame: object) -> None:
            loop.call_soon(waiting.cancel)

        def send() -> None:
            nonlocal sent
            sent = time.monotonic()
            os.kill(os.getpid(), signal.SIGUSR1)

        previous = signal.signal(signal.SIGUSR1, on_signal)
        try:
            threading.Timer(0.2, send).start()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        finally:
            signal.signal(signal.SIGUSR1, previous)
        took = time.monotonic() - sent
        assert took < 1.5, f"cancelled {took:.1f} s after the signal"
        ticker = _aio._tickers[loop]
        assert ticker.waiters == 0 and ticker.handle is None  # no tick once nobody waits

    run(main(), timeout=5)  # the time-out wakes the loop if nothing else does
    open_gate(key)
    assert task.result(timeout=30).result == {"opened": key}


def test_afinalized_gives_the_id_once_started(busy_client: Client) -> None:
    async def main() -> None:
        task = Task("echo", input=1, client=busy_client)
        assert await task.afinalized(timeout=30) == task.task_id(0)
        with pytest.raises(TaskError) as caught:
            await Task("greet", input={}, client=busy_client).afinalized(timeout=30)
        assert caught.value.status == 422
        with pytest.raises(ConfigurationError):
            await task.afinalized(timeout=-1)

    run(main())


def test_aiter_gives_every_update_like_the_sync_iterator(busy_client: Client) -> None:
    task = Task("steps", client=busy_client)

    async def main() -> list[Update]:
        return [update async for update in task.aiter(timeout=30)]

    seen = run(main())
    assert seen == list(task.updates(timeout=5))
    assert seen[0].type == "taskStart" and seen[-1].type == "taskEnd"
    assert [u.data for u in seen if isinstance(u, NodeUpdateUpdate)] == [
        {"a": 1},
        {"b": 1},
        {"b": 2},
        {"c": 3},
    ]
    # Two iterators at once each see everything.

    async def twice() -> tuple[list[Update], list[Update]]:
        again = Task("steps", client=busy_client)

        async def collect() -> list[Update]:
            return [u async for u in again.aiter()]

        first, second = await asyncio.gather(collect(), collect())
        return first, second

    first, second = run(twice())
    assert first == second and len(first) == len(seen)


def test_aiter_times_out_when_no_update_comes(
    busy_client: Client, gates: Callable[[], str]
) -> None:
    key = gates()
    task = Task("gated", input={"gate": key}, client=busy_client)

    async def main() -> list[str]:
        types = []
        updates = task.aiter(timeout=0.5)
        with pytest.raises(TaskTimeoutError) as caught:
            async for update in updates:
                types.append(update.type)
        assert caught.value.timeout == 0.5
        # The iterator can go on after a time-out.
        open_gate(key)
        async for update in updates:
            types.append(update.type)
        return types

    types = run(main())
    assert types[0] == "taskStart" and types[-1] == "taskEnd"
    assert types.count("nodeStart") == 1


def test_aiter_raises_the_monitoring_error(dead_token: str) -> None:
    with make_client(dead_token) as client:
        task = Task("echo", input=1, client=client)

        async def main() -> None:
            with pytest.raises(RequenceUnreachableError):
                async for _ in task.aiter(timeout=30):
                    pass

        run(main())


def test_aiter_checks_its_timeout(busy_client: Client) -> None:
    task = Task("echo", input=1, client=busy_client)
    with pytest.raises(ConfigurationError, match="timeout"):
        task.aiter(timeout=float("nan"))
    task.result(timeout=30)


def recording_listen(task: Task) -> list[str]:
    """Record when the task's listeners are added and taken off."""
    events: list[str] = []
    listen = task._listen

    def record(callback: Callable[[], None]) -> Callable[[], None]:
        undo = listen(callback)
        events.append("listen")

        def recorded_undo() -> None:
            events.append("undo")
            undo()

        return recorded_undo

    task._listen = record  # type: ignore[method-assign]
    return events


def test_aiter_stops_listening_on_aclose_and_when_collected(
    busy_client: Client, gates: Callable[[], str]
) -> None:
    key = gates()
    task = Task("gated", input={"gate": key}, client=busy_client)
    events = recording_listen(task)

    async def main() -> None:
        updates = task.aiter(timeout=30)
        first = await updates.__anext__()
        assert first.type == "taskStart"
        assert events == ["listen"]
        await updates.aclose()  # type: ignore[attr-defined]
        assert events == ["listen", "undo"]
        with pytest.raises(StopAsyncIteration):
            await updates.__anext__()

        dropped = task.aiter(timeout=30)
        await dropped.__anext__()
        assert events == ["listen", "undo", "listen"]
        gone = weakref.ref(dropped)
        del dropped
        gc.collect()
        assert gone() is None  # nothing (the task's listeners least of all) kept it
        assert events == ["listen", "undo", "listen", "undo"]

    run(main())
    open_gate(key)
    task.result(timeout=30)


def test_an_iterator_whose_loop_closed_is_harmless(
    busy_client: Client, gates: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    key = gates()
    task = Task("gated", input={"gate": key}, client=busy_client)
    kept: list[Any] = []

    async def main() -> None:
        updates = task.aiter()
        await updates.__anext__()
        kept.append(updates)  # still listening when its loop is gone

    run(main())
    with caplog.at_level(logging.DEBUG, logger="requence_task"):
        open_gate(key)
        task.result(timeout=30)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    # The same iterator goes on in another loop, from where it stopped.
    async def rest() -> list[str]:
        return [update.type async for update in kept[0]]

    rest_types = run(rest())
    assert rest_types[0] == "nodeStart" and rest_types[-1] == "taskEnd"


def test_fifty_awaited_tasks_hold_no_extra_thread(
    busy_client: Client, gates: Callable[[], str]
) -> None:
    keys = [gates() for _ in range(50)]
    tasks = Task.map("gated", [{"gate": k} for k in keys], client=busy_client)

    async def main() -> tuple[int, int, list[TaskResult], list[int]]:
        await asyncio.gather(*(t.afinalized(timeout=30) for t in tasks))
        for task in tasks:
            task.future  # noqa: B018  (start following each)
        wait_until(lambda: all(t._updates_since(0)[0] for t in tasks), timeout=30, what="updates")
        before = threading.active_count()

        async def count_updates(task: Task) -> int:
            return len([u async for u in task.aiter(timeout=30)])

        results = asyncio.gather(*tasks)  # `await task`, fifty times
        timed = asyncio.gather(*(t.aresult(timeout=30) for t in tasks))
        counted = asyncio.gather(*(count_updates(t) for t in tasks))
        await asyncio.sleep(0.3)
        during = threading.active_count()
        for key in keys:
            open_gate(key)
        done = await results
        await timed
        return before, during, list(done), list(await counted)

    before, during, results, counts = run(main())
    assert during <= before
    assert [r.result for r in results] == [{"opened": k} for k in keys]
    assert len(set(counts)) == 1 and counts[0] >= 4
