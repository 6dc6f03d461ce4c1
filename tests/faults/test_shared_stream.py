"""The client's shared update stream (one ``watch-all`` stream per client,
``requence_task/_follow.py``) under faults: every update of every task exactly
once and in order, the right results, one connection and one thread however
many tasks, and the hand-overs (to a later shared stream, to the tasks' own
streams) losing and repeating nothing.

Every test runs its own project on this module's ``LocalRequence``, through
this module's ``FaultProxy`` (``tests/faults/proxy.py``), so each sees only its
own tasks on watch-all and only its own exchanges at the proxy. What the
server holds for a task (read straight from it, around the proxy) is the
reference every update list is compared with: positions, types and data.

Where a test counts streams, a first task is awaited (and its stream open)
before the others are created, and kept running until they are done: the
stream closes once no task it carries is awaited or held by a live handle, so
without it a quick task could end before the next one joined, and the next
wait would open a second stream.

Not repeated here: one task's own stream under cuts, stalls and lost answers
(tests/faults/test_proxy_streams.py, which runs with ``shared_stream=False``),
100 awaited tasks without a warning (tests/faults/test_process_life.py), one
stream for many waiters of one task (tests/client/test_task.py).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import itertools
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import requence_task._follow as follow
from requence_task import (
    Client,
    RequenceError,
    RequenceUnreachableError,
    RetryPolicy,
    Task,
    TaskTimeoutError,
    Timeouts,
    Update,
)
from requence_task._token import encode_access_token
from requence_task.local import LocalRequence

from ..client.conftest import own_server, wait_until
from ..conftest import Api
from ..local.templates_for_tests import gate
from .proxy import Exchange, FaultProxy

WAIT = 15.0  # bound of every wait that is not itself under test
WATCH_ALL = "/task/watch-all"
OWN = "/task/watch/"  # a task's own stream (the prefix does not match watch-all)
FAST = RetryPolicy(budget=5, initial_backoff=0.01, max_backoff=0.1)
TIMEOUTS = Timeouts(connect=2, read=5, stream_inactivity=5)

GREET_TYPES = [
    "taskStart",
    "nodeStart",
    "nodeUpdate",
    "nodeEnd",
    "nodeStart",
    *["nodeUpdate"] * 3,
    "nodeEnd",
    "taskEnd",
]
ONE_NODE_TYPES = ["taskStart", "nodeStart", "nodeUpdate", "nodeEnd", "taskEnd"]  # echo, gated


def many_types(n: int) -> list[str]:
    return ["taskStart", "nodeStart", *["nodeUpdate"] * n, "nodeEnd", "taskEnd"]


# --- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def rq() -> Iterator[LocalRequence]:
    # Keep-alives every second: an idle shared stream is never mistaken for a dead one.
    with own_server(concurrency=8, keepalive_interval=1.0) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(rq: LocalRequence) -> Iterator[FaultProxy]:
    with FaultProxy(rq.base_url) as p:
        yield p


@pytest.fixture(autouse=True)
def _faults_off(rq: LocalRequence, proxy: FaultProxy) -> Iterator[None]:
    yield
    proxy.pass_through()
    rq.faults.clear()


@pytest.fixture()
def project() -> str:
    """A project of the test's own: its watch-all carries only this test's tasks."""
    return f"shared-{uuid.uuid4().hex}"


@pytest.fixture()
def view(rq: LocalRequence, project: str) -> Iterator[Api]:
    """The server's own view of the project, around the proxy."""
    api = Api(rq.token_for(project))
    yield api
    api.close()


@pytest.fixture()
def mark(proxy: FaultProxy) -> int:
    """Where this test's exchanges begin in ``proxy.exchanges``."""
    return len(proxy.exchanges)


@pytest.fixture()
def gates() -> Iterator[Callable[[], str]]:
    """Make gate keys for the "gated" template; every one is opened at the end."""
    made: list[str] = []

    def new() -> str:
        key = uuid.uuid4().hex
        made.append(key)
        gate(key)
        return key

    yield new
    for key in made:
        gate(key).set()


def connect(rq: LocalRequence, proxy: FaultProxy, project: str, **kwargs: Any) -> Client:
    """A client of ``project`` whose every request goes through the proxy."""
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("timeouts", TIMEOUTS)
    return Client(encode_access_token(rq.bearer_for(project), proxy.base_url), **kwargs)


def since_mark(proxy: FaultProxy, mark: int, path: str) -> list[Exchange]:
    """This test's exchanges to ``path`` (watch-all: exactly; else: a prefix)."""
    return [
        e
        for e in proxy.exchanges[mark:]
        if (e.path == path if path == WATCH_ALL else e.path.startswith(path))
    ]


def triples(updates: list[Update]) -> list[tuple[int | None, str, dict[str, Any]]]:
    return [(u.position, u.type, u.raw) for u in updates]


def assert_exactly_once(updates: list[Update], task: Task, view: Api, types: list[str]) -> None:
    """Every update once, in order, from taskStart: what the server holds."""
    assert [u.type for u in updates] == types
    assert triples(updates) == view.watch(task.task_id(timeout=0))
    assert not any(u.incomplete for u in updates)


def seen_so_far(task: Task) -> list[Update]:
    """What the handle has now, without starting to follow it."""
    updates, _ended, _error = task._updates_since(0, demand=False)
    return updates


def ended_on_server(view: Api, task_ids: list[str], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    for task_id in task_ids:
        view.wait_status(task_id, "SUCCESSFUL", timeout=max(0.1, deadline - time.monotonic()))


class Reader:
    """A thread iterating a task's updates, as a user's loop would."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.updates: list[Update] = []
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for update in self.task.updates(timeout=WAIT):
                self.updates.append(update)
        except BaseException as err:
            self.error = err
        finally:
            self.ended_at = time.monotonic()

    def join(self, timeout: float = WAIT) -> list[Update]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the reader of {self.task!r} is still waiting"
        if self.error is not None:
            raise self.error
        return self.updates


def wait_all(tasks: list[Task], timeout: float = WAIT) -> None:
    _done, pending = concurrent.futures.wait([t.future for t in tasks], timeout=timeout)
    assert not pending, f"{len(pending)} of {len(tasks)} results did not come"


def assert_one_at_a_time(exchanges: list[Exchange]) -> None:
    """No two of the exchanges were open at once."""
    wait_until(lambda: all(e.outcome != "open" for e in exchanges[:-1]), what="exchanges to end")
    for before, after in itertools.pairwise(exchanges):
        assert before.ended is not None and before.ended <= after.started, (before, after)


def client_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("requence-task")}


def connections_to(port: int) -> int:
    """This process's established TCP connections to 127.0.0.1:``port``."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    remote = f"0100007F:{port:04X}"
    count = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[2] == remote and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


# --- 1. many tasks, the shared stream cut every K bytes --------------------------------------


@pytest.mark.parametrize("k", [1, 89, 1597])
def test_many_tasks_exactly_once_while_the_shared_stream_is_cut_every_k_bytes(
    rq: LocalRequence,
    proxy: FaultProxy,
    project: str,
    view: Api,
    mark: int,
    gates: Callable[[], str],
    k: int,
) -> None:
    """16 tasks run at once, all followed over one watch-all stream that the proxy
    cuts at the first multiple of ``k`` bytes past each connection's first whole
    event (k=1: one event per connection). A gated task, awaited first, keeps the
    stream open until the end, so it is one stream throughout."""
    proxy.cut_every(k, path=WATCH_ALL)
    anchor_gate = gates()
    with connect(rq, proxy, project) as c:
        anchor = Task("gated", {"gate": anchor_gate}, client=c)
        anchor_reader = Reader(anchor)
        anchor.task_id(timeout=WAIT)
        wait_until(lambda: c._follower.shared_open, WAIT, "the shared stream")
        greets = [Task("greet", {"name": f"n{i}", "steps": 3}, client=c) for i in range(8)]
        manys = [Task("many", {"n": 6}, client=c) for _ in range(8)]
        readers = [Reader(t) for t in greets + manys]
        wait_all(greets + manys)
        got = [r.join() for r in readers]
        gate(anchor_gate).set()
        assert anchor.result(timeout=WAIT).result == {"opened": anchor_gate}
        anchor_updates = anchor_reader.join()
        wait_until(lambda: not c._follower.shared_open, WAIT, "the shared stream to close")

    for i, (task, updates) in enumerate(zip(greets, got[:8], strict=True)):
        assert_exactly_once(updates, task, view, GREET_TYPES)
        result = task.result(timeout=0)
        assert result.result == {"message": f"Hello, n{i}!"}
        assert result.get_node_data("counter") == {"step": 3}
    for task, updates in zip(manys, got[8:], strict=True):
        assert_exactly_once(updates, task, view, many_types(6))
        assert task.result(timeout=0).get_node_data("many") == {"i": 5}
    assert_exactly_once(anchor_updates, anchor, view, ONE_NODE_TYPES)
    # Iterating again gives the same objects: nothing was added after the end.
    assert all(list(t.updates(timeout=0)) == u for t, u in zip(greets + manys, got, strict=True))

    # One watch-all connection at a time, each cut (but the last, closed once idle),
    # each reconnect resuming where the last left off: no task used its own stream.
    watch_alls = since_mark(proxy, mark, WATCH_ALL)
    assert_one_at_a_time(watch_alls)
    assert {e.status for e in watch_alls} == {200}
    events = sum(len(u) for u in got) + len(anchor_updates)
    assert 2 <= len(watch_alls) <= events + 1
    assert [e.outcome for e in watch_alls[:-1]] == ["cut"] * (len(watch_alls) - 1)
    assert all(e.body_bytes % k == 0 for e in watch_alls if e.outcome == "cut")
    stream = anchor._monitor.stream
    assert stream is not None and all(t._monitor.stream is stream for t in greets + manys)
    assert stream.reconnects >= len(watch_alls) - 1
    assert since_mark(proxy, mark, OWN) == []


# --- 2. tasks created (and ended) before anything was awaited --------------------------------


def test_tasks_created_and_ended_before_any_wait_are_replayed_from_their_start(
    rq: LocalRequence,
    proxy: FaultProxy,
    project: str,
    view: Api,
    mark: int,
    gates: Callable[[], str],
) -> None:
    """Nothing awaited: no stream. Then a wait opens the shared stream from the
    earliest prepare, so tasks that ended before it get every update from
    taskStart; tasks created while it is open join it (no second watch-all)."""
    anchor_gate = gates()
    with connect(rq, proxy, project) as c:
        early = [Task("greet", {"name": f"e{i}", "steps": 3}, client=c) for i in range(6)]
        early += [Task("many", {"n": 4}, client=c) for _ in range(2)]
        ended_on_server(view, [t.task_id(timeout=WAIT) for t in early])
        # Longer than the Date header's lag: a stream opened "from now" would miss them.
        time.sleep(2.5)
        assert since_mark(proxy, mark, WATCH_ALL) == []  # nobody waits: nothing followed
        assert not c._follower.shared_open
        assert all(seen_so_far(t) == [] for t in early)

        anchor = Task("gated", {"gate": anchor_gate}, client=c)
        anchor_future = anchor.future
        wait_until(lambda: c._follower.shared_open, WAIT, "the shared stream")
        wait_all(early)
        for task in early[:6]:
            assert_exactly_once(list(task.updates(timeout=0)), task, view, GREET_TYPES)
        for task in early[6:]:
            assert_exactly_once(list(task.updates(timeout=0)), task, view, many_types(4))
        assert early[0].result(timeout=0).result == {"message": "Hello, e0!"}

        # Created while the stream is open: they join it.
        later = [Task("greet", {"name": f"l{i}", "steps": 3}, client=c) for i in range(4)]
        readers = [Reader(t) for t in later]
        for task, reader in zip(later, readers, strict=True):
            assert_exactly_once(reader.join(), task, view, GREET_TYPES)
        assert c._follower.shared_open
        gate(anchor_gate).set()
        assert anchor_future.result(timeout=WAIT).result == {"opened": anchor_gate}
        assert_exactly_once(list(anchor.updates(timeout=0)), anchor, view, ONE_NODE_TYPES)

    (watch_all,) = since_mark(proxy, mark, WATCH_ALL)
    assert watch_all.status == 200
    assert since_mark(proxy, mark, OWN) == []


def test_tasks_created_before_any_wait_then_awaited_one_at_a_time(
    rq: LocalRequence, proxy: FaultProxy, project: str, view: Api, mark: int
) -> None:
    """Each wait on its own, in turn (``for task in tasks: task.result()``): the
    first opens the shared stream, which carries the other (un-awaited) tasks'
    updates too, from their start; every handle gets each update once, however
    many streams it took."""
    with connect(rq, proxy, project) as c:
        tasks = [Task("many", {"n": 5}, client=c) for _ in range(6)]
        ended_on_server(view, [t.task_id(timeout=WAIT) for t in tasks])
        for task in tasks:
            assert task.result(timeout=WAIT).get_node_data("many") == {"i": 4}
            wait_until(lambda: not c._follower.shared_open, WAIT, "the shared stream to close")
        for task in tasks:
            assert_exactly_once(list(task.updates(timeout=0)), task, view, many_types(5))
    watch_alls = since_mark(proxy, mark, WATCH_ALL)
    assert 1 <= len(watch_alls) <= len(tasks)
    assert_one_at_a_time(watch_alls)
    assert since_mark(proxy, mark, OWN) == []


# --- 3. closing when idle, and opening again ------------------------------------------------


def test_idle_close_and_a_later_wait_reopens(
    rq: LocalRequence,
    proxy: FaultProxy,
    project: str,
    view: Api,
    mark: int,
    gates: Callable[[], str],
) -> None:
    """The stream stays open while an awaited task, or a task of a live handle, is
    running on it; it closes after the last of them ends; a later wait opens a new
    one. Handles nobody awaited keep what the stream brought them: awaited later,
    they give every update once."""
    gate_a, gate_b = gates(), gates()
    with connect(rq, proxy, project) as c:
        awaited = Task("gated", {"gate": gate_a}, client=c)
        reader = Reader(awaited)
        awaited.task_id(timeout=WAIT)
        wait_until(lambda: c._follower.shared_open, WAIT, "the shared stream")
        # Not awaited, but carried by the open stream: one mid-way, one to its end.
        midway = Task("gated", {"gate": gate_b}, client=c)
        finished = Task("greet", {"name": "F", "steps": 3}, client=c)
        wait_until(lambda: len(seen_so_far(midway)) == 2, WAIT, "midway's first updates")
        wait_until(lambda: len(seen_so_far(finished)) == len(GREET_TYPES), WAIT, "finished's end")

        gate(gate_a).set()
        assert awaited.result(timeout=WAIT).result == {"opened": gate_a}
        time.sleep(0.2)
        assert c._follower.shared_open  # midway's task runs on, its handle lives
        gate(gate_b).set()
        wait_until(lambda: not c._follower.shared_open, WAIT, "the shared stream to close")
        assert c._follower._attached == {} and c._follower._awaited == {}
        assert len(seen_so_far(midway)) == len(ONE_NODE_TYPES)
        assert len(since_mark(proxy, mark, WATCH_ALL)) == 1
        time.sleep(0.2)
        assert not c._follower.shared_open  # nobody waits: it stays closed

        # Handles that ended on the stream need no stream to be awaited.
        assert midway.result(timeout=WAIT).result == {"opened": gate_b}
        assert finished.result(timeout=WAIT).result == {"message": "Hello, F!"}
        assert not c._follower.shared_open
        # A new wait opens a new stream.
        fresh = Task("echo", {"x": 1}, client=c)
        assert fresh.result(timeout=WAIT).result == {"input": {"x": 1}}
        assert len(since_mark(proxy, mark, WATCH_ALL)) == 2
        wait_until(lambda: not c._follower.shared_open, WAIT, "the shared stream to close")

        assert_exactly_once(reader.join(), awaited, view, ONE_NODE_TYPES)
        assert_exactly_once(list(midway.updates(timeout=0)), midway, view, ONE_NODE_TYPES)
        assert_exactly_once(list(finished.updates(timeout=0)), finished, view, GREET_TYPES)
        assert_exactly_once(list(fresh.updates(timeout=0)), fresh, view, ONE_NODE_TYPES)
    watch_alls = since_mark(proxy, mark, WATCH_ALL)
    assert len(watch_alls) == 2
    assert_one_at_a_time(watch_alls)
    assert since_mark(proxy, mark, OWN) == []


def test_shared_stream_that_gives_up_empties_unawaited_handles_for_a_replay(
    rq: LocalRequence,
    proxy: FaultProxy,
    project: str,
    view: Api,
    mark: int,
    gates: Callable[[], str],
) -> None:
    """Requence unreachable for longer than the retry budget: the waits on the
    shared stream fail as they would on their own; the handle nobody awaited is
    emptied, and awaited once Requence is back, a new stream replays it whole."""
    gate_a, gate_b = gates(), gates()
    budget = RetryPolicy(budget=0.5, initial_backoff=0.01, max_backoff=0.1)
    with connect(rq, proxy, project, retry=budget) as c:
        awaited = Task("gated", {"gate": gate_a}, client=c)
        awaited_future = awaited.future
        awaited.task_id(timeout=WAIT)
        wait_until(lambda: c._follower.shared_open, WAIT, "the shared stream")
        midway = Task("gated", {"gate": gate_b}, client=c)
        wait_until(lambda: len(seen_so_far(midway)) == 2, WAIT, "midway's first updates")

        proxy.refuse()  # the live stream is reset, reconnects are refused
        with pytest.raises(RequenceUnreachableError):
            awaited_future.result(timeout=WAIT)
        assert not c._follower.shared_open
        assert seen_so_far(midway) == []  # emptied: its next source replays it
        proxy.accept()

        gate(gate_b).set()
        ended_on_server(view, [midway.task_id(timeout=0)])
        assert midway.result(timeout=WAIT).result == {"opened": gate_b}
        assert_exactly_once(list(midway.updates(timeout=0)), midway, view, ONE_NODE_TYPES)
        with pytest.raises(RequenceUnreachableError):
            awaited.result(timeout=0)
    watch_alls = since_mark(proxy, mark, WATCH_ALL)
    wait_until(lambda: all(e.outcome != "open" for e in watch_alls), what="the streams to end")
    assert [e.outcome for e in watch_alls] == ["reset", "client-gone"]
    assert since_mark(proxy, mark, OWN) == []


# --- 4. watch-all refused ------------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 404, 500])
def test_refused_watch_all_falls_back_to_own_streams(
    rq: LocalRequence, proxy: FaultProxy, project: str, view: Api, mark: int, status: int
) -> None:
    """watch-all answers 403 (the token may not watch all), 404 or another error:
    every task falls back to its own stream, once, with every update once; the
    client does not ask watch-all again."""
    rq.faults.fail_next(1, status=status, endpoint="watch-all")
    with connect(rq, proxy, project) as c:
        tasks = [Task("greet", {"name": f"r{i}", "steps": 3}, client=c) for i in range(6)]
        readers = [Reader(t) for t in tasks]
        for task, reader in zip(tasks, readers, strict=True):
            assert_exactly_once(reader.join(), task, view, GREET_TYPES)
            assert task.result(timeout=0).get_node_data("counter") == {"step": 3}
        assert rq.faults.pending_failures == 0
        assert not c._follower.shared_open
        # Later tasks go straight to their own streams: watch-all is not asked again.
        later = [Task("many", {"n": 3}, client=c) for _ in range(3)]
        for task in later:
            assert_exactly_once(list(task.updates(timeout=WAIT)), task, view, many_types(3))
    watch_alls = since_mark(proxy, mark, WATCH_ALL)
    assert [e.status for e in watch_alls] == [status]
    own = since_mark(proxy, mark, OWN)
    # One own stream per task, none cut or repeated.
    assert sorted(e.path for e in own) == sorted(
        f"{OWN}{t.task_id(timeout=0)}" for t in tasks + later
    )
    assert {e.status for e in own} == {200}


# --- 5. hand-over to own streams mid-way -----------------------------------------------------


@pytest.mark.parametrize("how", ["server-ends-the-stream", "proxy-cuts-the-stream"])
def test_handover_to_own_streams_mid_way_repeats_nothing(
    rq: LocalRequence,
    proxy: FaultProxy,
    project: str,
    view: Api,
    mark: int,
    gates: Callable[[], str],
    how: str,
) -> None:
    """Readers of gated tasks got their first updates over the shared stream; then
    its reconnect is refused. Each task moves to its own stream, which replays it
    from the start: what a reader already has must be skipped (by updateId)."""
    if how == "server-ends-the-stream":
        rq.faults.cut_streams_after = 3  # every stream ends (cleanly) after 3 events
    keys = [gates() for _ in range(5)]
    with connect(rq, proxy, project) as c:
        first = Task("gated", {"gate": keys[0]}, client=c)
        readers = [Reader(first)]
        first.task_id(timeout=WAIT)
        wait_until(lambda: c._follower.shared_open, WAIT, "the shared stream")
        tasks = [first] + [Task("gated", {"gate": key}, client=c) for key in keys[1:]]
        readers += [Reader(t) for t in tasks[1:]]
        wait_until(
            lambda: all(len(r.updates) == 2 for r in readers), WAIT, "every task's first updates"
        )
        assert since_mark(proxy, mark, OWN) == []  # so far all over the shared stream
        status = 403 if how == "server-ends-the-stream" else 404
        rq.faults.fail_next(1, status=status, endpoint="watch-all")
        if how == "proxy-cuts-the-stream":
            proxy.cut_every(1, path=WATCH_ALL)  # the live one, at its next byte
        for key in keys:
            gate(key).set()
        got = [r.join() for r in readers]
        for task, key in zip(tasks, keys, strict=True):
            assert task.result(timeout=WAIT).result == {"opened": key}
        assert rq.faults.pending_failures == 0
        assert not c._follower.shared_open
        rq.faults.clear()  # the server's own view below must not be cut
    for task, updates in zip(tasks, got, strict=True):
        assert_exactly_once(updates, task, view, ONE_NODE_TYPES)
        assert list(task.updates(timeout=0)) == updates
    assert {e.path for e in since_mark(proxy, mark, OWN)} == {
        f"{OWN}{t.task_id(timeout=0)}" for t in tasks
    }
    watch_alls = since_mark(proxy, mark, WATCH_ALL)
    assert [e.status for e in watch_alls][-1] == status
    assert {e.status for e in watch_alls[:-1]} == {200}


# --- 6. handles that get their own stream ------------------------------------------------------


def test_from_id_handles_use_their_own_stream(
    rq: LocalRequence, proxy: FaultProxy, project: str, view: Api, mark: int
) -> None:
    """A handle by id (its prepare time unknown) is followed on its own stream."""
    task_id = view.start("greet", {"name": "Id", "steps": 3})
    with connect(rq, proxy, project) as c:
        task = Task.from_id(task_id, client=c)
        assert task.result(timeout=WAIT).result == {"message": "Hello, Id!"}
        assert_exactly_once(list(task.updates(timeout=0)), task, view, GREET_TYPES)
        assert not c._follower.shared_open
    assert [e.path for e in since_mark(proxy, mark, OWN)] == [f"{OWN}{task_id}"]
    assert since_mark(proxy, mark, WATCH_ALL) == []


def test_handle_prepared_longer_ago_than_the_replay_window_uses_its_own_stream(
    rq: LocalRequence,
    proxy: FaultProxy,
    project: str,
    view: Api,
    mark: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A task prepared longer ago than REPLAY_WINDOW is not replayed on the shared
    stream a fresh task opens: it gets its own stream."""
    monkeypatch.setattr(follow, "REPLAY_WINDOW", 0.5)
    with connect(rq, proxy, project) as c:
        old = Task("greet", {"name": "Old", "steps": 3}, client=c)
        ended_on_server(view, [old.task_id(timeout=WAIT)])
        # Prepared more than REPLAY_WINDOW ago now, by the server's Date too (it has
        # whole seconds and is updated once a second).
        time.sleep(2.2)
        # A fresh task still gets the shared stream; the old one is not replayed on it.
        fresh = Task("greet", {"name": "New", "steps": 3}, client=c)
        assert fresh.result(timeout=WAIT).result == {"message": "Hello, New!"}
        assert old.result(timeout=WAIT).result == {"message": "Hello, Old!"}
        assert_exactly_once(list(old.updates(timeout=0)), old, view, GREET_TYPES)
        assert_exactly_once(list(fresh.updates(timeout=0)), fresh, view, GREET_TYPES)
    assert [e.path for e in since_mark(proxy, mark, OWN)] == [f"{OWN}{old.task_id()}"]
    assert len(since_mark(proxy, mark, WATCH_ALL)) == 1


# --- 2b. prepares answered out of order ---------------------------------------------------


def test_task_prepared_just_before_the_stream_opened_still_joins_it(
    rq: LocalRequence,
    proxy: FaultProxy,
    project: str,
    view: Api,
    mark: int,
    gates: Callable[[], str],
) -> None:
    """Two prepares in flight at once (8 workers create tasks), their answers handled
    in the other order: the one with the earlier ``Date`` comes second. The stream
    the first opened replays from SINCE_MARGIN seconds before its own prepare, so it
    carries the second task whole; that task should join it, not take a thread and
    a connection of its own. Made deterministic here: the proxy holds back the body
    of the second prepare's answer (the server made it, Date and all) until the
    other task has opened the stream."""
    key = gates()
    proxy.slow(1, 0.05, path="/task/prepare/greet")
    with connect(rq, proxy, project) as c:
        late = Task("greet", {"name": "Late", "steps": 3}, client=c)
        late_future = late.future
        wait_until(
            lambda: any(e.status == 200 for e in proxy.seen("/task/prepare/greet")),
            WAIT,
            "the held prepare answer's head",
        )
        time.sleep(2.2)  # the server's Date header moves on (it is updated once a second)
        anchor = Task("gated", {"gate": key}, client=c)
        anchor_future = anchor.future
        anchor.task_id(timeout=WAIT)
        wait_until(lambda: c._follower.shared_open, WAIT, "the shared stream")
        proxy.pass_through()
        assert late_future.result(timeout=WAIT).result == {"message": "Hello, Late!"}
        assert late._monitor.prepared_at is not None and anchor._monitor.prepared_at is not None
        assert late._monitor.prepared_at < anchor._monitor.prepared_at  # the set-up worked
        assert_exactly_once(list(late.updates(timeout=0)), late, view, GREET_TYPES)
        gate(key).set()
        assert anchor_future.result(timeout=WAIT).result == {"opened": key}
    assert len(since_mark(proxy, mark, WATCH_ALL)) == 1
    assert since_mark(proxy, mark, OWN) == []


# --- 7. threads and sockets ----------------------------------------------------------------------


def test_200_awaited_tasks_take_one_stream_thread_and_a_bounded_pool(
    rq: LocalRequence,
    proxy: FaultProxy,
    project: str,
    mark: int,
    gates: Callable[[], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """200 gated tasks awaited at once (their futures): the client's threads and
    its connections to Requence (sampled every 10 ms) stay those of its pool and
    the one shared stream; no logger warns (urllib3's "Connection pool is full"
    would say streams outgrew the pool); every result comes once the gate opens."""
    caplog.set_level(logging.WARNING)
    key = gates()
    workers = 4
    before = client_threads()
    peak = {"threads": 0, "connections": 0}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak["threads"] = max(peak["threads"], len(client_threads() - before))
            peak["connections"] = max(peak["connections"], connections_to(proxy.port))
            sampling.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with connect(rq, proxy, project, max_workers=workers) as c:
            first = Task("gated", {"gate": key}, client=c)
            first_future = first.future
            first.task_id(timeout=WAIT)
            wait_until(lambda: c._follower.shared_open, WAIT, "the shared stream")
            tasks = [first] + [Task("gated", {"gate": key}, client=c) for _ in range(199)]
            futures = [first_future] + [t.future for t in tasks[1:]]  # all 200 awaited
            for task in tasks:
                task.finalized(timeout=WAIT)
            time.sleep(0.3)
            gate(key).set()
            _done, pending = concurrent.futures.wait(futures, timeout=30)
            assert not pending
            assert {t.result(timeout=0).result["opened"] for t in tasks} == {key}
    finally:
        sampling.set()
        sampler.join(5)
    # The pool's workers and the shared stream's thread; nothing per task.
    assert 0 < peak["threads"] <= workers + 2, peak
    # The client's connection pool holds up to workers + 16 (usually workers + 1 are
    # open: the workers' and the stream's); a connection per task would be 200.
    assert 0 < peak["connections"] <= workers + 16, peak
    assert len(since_mark(proxy, mark, WATCH_ALL)) == 1
    assert since_mark(proxy, mark, OWN) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in warnings if "Connection pool is full" in m], warnings
    assert warnings == []


# --- 8. handles nobody keeps ---------------------------------------------------------------------


def test_dropped_handles_are_not_kept_by_the_shared_stream(
    rq: LocalRequence,
    proxy: FaultProxy,
    project: str,
    view: Api,
    gates: Callable[[], str],
) -> None:
    """Two batches of 150 tasks whose handles are dropped at once, while an awaited
    task holds the shared stream open: after each, once the stream has read all
    their updates, the follower holds no entry for them (no growth from batch to
    batch) and no monitor of theirs (nor its updates) is alive."""
    key = gates()
    with connect(rq, proxy, project) as c:
        anchor = Task("gated", {"gate": key}, client=c)
        anchor_future = anchor.future
        anchor.task_id(timeout=WAIT)
        wait_until(lambda: c._follower.shared_open, WAIT, "the shared stream")
        follower = c._follower
        anchor_id = anchor.task_id(timeout=0)

        def run_and_drop(n: int, label: int) -> list[weakref.ref[Any]]:
            """``n`` tasks nobody waits on, whose handles are dropped at once."""
            monitors: list[weakref.ref[Any]] = []
            ids: list[str] = []
            for i in range(n):
                task = Task("echo", {"batch": label, "i": i}, client=c)
                ids.append(task.task_id(timeout=WAIT))
                monitors.append(weakref.ref(task._monitor))
                del task
            ended_on_server(view, ids)
            # Started after they all ended, so its end comes after all of theirs on the
            # stream: once it is here, the stream has read every update of the batch.
            flush = Task("echo", {"flush": label}, client=c)
            assert flush.result(timeout=WAIT).result == {"input": {"flush": label}}
            del flush
            gc.collect()
            return monitors

        sizes = []
        for label in range(2):
            monitors = run_and_drop(150, label)
            alive = sum(1 for ref in monitors if ref() is not None)
            sizes.append((set(follower._attached), len(follower._pending), alive))
        assert c._follower.shared_open
        gate(key).set()
        assert anchor_future.result(timeout=WAIT).result == {"opened": key}
    # After each batch only the anchor is attached; no handle of a batch is alive.
    assert sizes == [({anchor_id}, 0, 0)] * 2, sizes


# --- 9. closing the client while many wait -------------------------------------------------------


def test_closing_the_client_ends_every_wait_on_the_shared_stream(
    rq: LocalRequence, proxy: FaultProxy, project: str, gates: Callable[[], str]
) -> None:
    """``Client.close()`` while 18 ``result()`` waits and 6 iterators are on the
    shared stream: each ends within 2 s with a RequenceError, not a time-out."""
    # (The server runs 8 tasks at once: more gated ones would not all have started.)
    keys = [gates() for _ in range(6)]
    c = connect(rq, proxy, project)
    try:
        first = Task("gated", {"gate": keys[0]}, client=c)
        readers = [Reader(first)]
        first.task_id(timeout=WAIT)
        wait_until(lambda: c._follower.shared_open, WAIT, "the shared stream")
        tasks = [first] + [Task("gated", {"gate": key}, client=c) for key in keys[1:]]
        readers += [Reader(t) for t in tasks[1:]]
        errors: list[tuple[BaseException | None, float]] = []
        lock = threading.Lock()

        def wait_result(task: Task) -> None:
            error: BaseException | None = None
            try:
                task.result(timeout=WAIT)
            except BaseException as err:
                error = err
            with lock:
                errors.append((error, time.monotonic()))

        waiters = [threading.Thread(target=wait_result, args=(t,), daemon=True) for t in tasks * 3]
        for waiter in waiters:
            waiter.start()
        wait_until(lambda: all(len(r.updates) == 2 for r in readers), WAIT, "first updates")
        assert c._follower.shared_open
        closed_at = time.monotonic()
    finally:
        c.close()
    for thread in waiters + [r.thread for r in readers]:
        thread.join(5)
        assert not thread.is_alive()
    assert len(errors) == len(waiters)
    outcomes = errors + [(r.error, r.ended_at) for r in readers]
    for error, ended in outcomes:
        assert ended is not None
        assert isinstance(error, RequenceError), error
        assert not isinstance(error, TaskTimeoutError), error
        assert ended - closed_at < 2.0
    assert not c._follower.shared_open


# --- 10. on_update and acks ----------------------------------------------------------------------


def test_on_update_and_acks_over_the_shared_stream(
    rq: LocalRequence,
    proxy: FaultProxy,
    project: str,
    view: Api,
    mark: int,
    gates: Callable[[], str],
) -> None:
    """``on_update`` sees every update once; ``require_ack`` tasks are acked (the
    server's status is SUCCESSFUL, not AWAITING_DELIVERY) before their result is
    given; and an ack the proxy holds back delays only its own task's result, not
    the stream: another task's updates and result come meanwhile."""
    calls: dict[int, list[Update]] = {}

    def recorder(n: int) -> Callable[[Update], None]:
        calls[n] = []
        return calls[n].append

    key = gates()
    with connect(rq, proxy, project) as c:
        anchor = Task("gated", {"gate": key}, client=c)  # holds the stream open
        anchor_future = anchor.future
        anchor.task_id(timeout=WAIT)
        wait_until(lambda: c._follower.shared_open, WAIT, "the shared stream")
        tasks = [
            Task(
                "greet",
                {"name": f"a{n}", "steps": 3},
                client=c,
                require_ack=True,
                on_update=recorder(n),
            )
            for n in range(6)
        ]
        wait_all(tasks)
        for n, task in enumerate(tasks):
            assert task.result(timeout=0).result == {"message": f"Hello, a{n}!"}
            assert_exactly_once(calls[n], task, view, GREET_TYPES)
            assert calls[n][-1].raw["requireAck"] is True
            # Acked (before the result was given): delivered, not awaiting delivery.
            assert view.task(task.task_id(timeout=0))["status"] == "SUCCESSFUL"

        # An ack that hangs holds up its own result only, not the stream.
        proxy.stall(None, path="/task/ack/")
        held = Task("echo", {"held": 1}, client=c, require_ack=True, on_update=recorder(99))
        wait_until(lambda: calls[99] and calls[99][-1].is_terminal, WAIT, "held's end")
        wait_until(lambda: any(e.held for e in proxy.seen("/task/ack/")), WAIT, "a held ack")
        other = Task("greet", {"name": "o", "steps": 3}, client=c, on_update=recorder(100))
        assert other.result(timeout=5).result == {"message": "Hello, o!"}
        with pytest.raises(TaskTimeoutError):
            held.result(timeout=0.1)
        assert view.task(held.task_id(timeout=0))["status"] == "AWAITING_DELIVERY"
        proxy.pass_through()
        assert held.result(timeout=WAIT).result == {"input": {"held": 1}}
        assert view.task(held.task_id(timeout=0))["status"] == "SUCCESSFUL"
        assert_exactly_once(calls[99], held, view, ONE_NODE_TYPES)
        assert_exactly_once(calls[100], other, view, GREET_TYPES)
        assert c._follower.shared_open
        gate(key).set()
        assert anchor_future.result(timeout=WAIT).result == {"opened": key}
    assert len(since_mark(proxy, mark, WATCH_ALL)) == 1
    assert since_mark(proxy, mark, OWN) == []
