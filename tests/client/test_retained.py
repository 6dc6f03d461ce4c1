"""What a handle keeps of its task's updates: records (position, type, data text)
that cost the garbage collector nothing, and the typed updates of a window that
the iterators reading along share. Late and lagging iterators build their own
from the records: the same updates, each once, in the same order."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest

from requence_task import Client, Task, Update, _follow
from requence_task._fold import fold_task

from .conftest import wait_until

N = 600  # nodeUpdates of the "many" template: far more than the test window


@pytest.fixture
def small_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_follow, "WINDOW", 8)
    monkeypatch.setattr(_follow, "WINDOW_MAX", 32)


def summary(updates: list[Update]) -> list[tuple[object, ...]]:
    return [(u.type, u.position, u.update_id, u.context, u.incomplete) for u in updates]


def test_a_late_iterator_sees_what_the_live_one_saw(client: Client, small_window: None) -> None:
    task = Task("many", {"n": N}, client=client)
    live = list(task.updates(timeout=60))
    assert len(live) == N + 4  # taskStart, nodeStart, N nodeUpdates, nodeEnd, taskEnd
    assert [u.position for u in live] == sorted({u.position for u in live})
    monitor = task._monitor
    wait_until(lambda: monitor.finished, 10, "the handle to settle")
    assert monitor._window == []  # ended, nobody reading: only the records are kept
    late = list(task)
    assert live == late
    assert summary(live) == summary(late)
    assert late[-1].context.node_data["many"] == {"i": N - 1}
    assert task.result(timeout=10).node_data["many"] == {"i": N - 1}
    since, ended, error = task._updates_since(2, demand=False)
    assert (since, ended, error) == (live[2:], True, None)


def test_a_lagging_iterator_builds_its_own_and_loses_nothing(
    client: Client, small_window: None
) -> None:
    task = Task("many", {"n": N}, client=client)
    lagging = task.updates(timeout=60)
    first = next(lagging)  # then it stalls while the stream runs far ahead
    keeping_up: list[Update] = []
    reader = threading.Thread(target=lambda: keeping_up.extend(task.updates(timeout=60)))
    reader.start()
    reader.join(60)
    assert not reader.is_alive()
    wait_until(lambda: task._monitor.finished, 10, "the task to end")
    assert task._monitor._window_start > 1  # the window moved on past the laggard
    rest = list(lagging)
    assert summary([first, *rest]) == summary(keeping_up)
    assert len(keeping_up) == N + 4


def test_kept_records_are_not_tracked_by_the_garbage_collector(client: Client) -> None:
    task = Task("many", {"n": 50}, client=client)
    task.result(timeout=60)
    gc.collect()
    records = task._monitor._records
    assert len(records) == 54
    assert not any(gc.is_tracked(record) for record in records)


def test_repr_and_nodes_of_a_long_task(client: Client, small_window: None) -> None:
    task = Task("many", {"n": N}, client=client)
    task.result(timeout=60)
    fold = fold_task(task)
    assert fold.node_updates == N and fold.seen == N + 4
    assert [node.label for node in fold.nodes] == ["many"]
    assert fold.nodes[0].data == {"i": N - 1}
    assert repr(task).endswith(" succeeded>")
    again = fold_task(task)  # kept up to date since: the same, without a rebuild
    assert again is not fold and again.node_updates == N


def test_an_async_iterator_reads_along_through_the_window(
    client: Client, small_window: None
) -> None:
    task = Task("many", {"n": N}, client=client)

    async def read() -> list[Update]:
        return [update async for update in task.aiter(timeout=60)]

    got = asyncio.run(read())
    assert summary(got) == summary(list(task))
    assert len(got) == N + 4
    assert task._monitor._readers == {}  # its place is forgotten once it ended
