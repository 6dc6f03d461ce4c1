"""``Task.map``, ``as_completed`` and ``wait``: many tasks, collected as they end."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from requence_task import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    Client,
    ConfigurationError,
    Task,
    TaskError,
    TaskFailedError,
    TaskTimeoutError,
    as_completed,
    wait,
)
from requence_task._token import encode_access_token
from requence_task.local import LocalRequence

from ..faults.proxy import FaultProxy
from .conftest import make_client, open_gate, wait_until


@pytest.fixture()
def proxy(busy_server: LocalRequence) -> Iterator[FaultProxy]:
    with FaultProxy(busy_server.base_url) as p:
        yield p


def proxied_client(busy_server: LocalRequence, proxy: FaultProxy, **kwargs: object) -> Client:
    token = encode_access_token(busy_server.bearer_for("default"), proxy.base_url)
    return make_client(token, **kwargs)  # type: ignore[arg-type]


# --- Task.map ------------------------------------------------------------------------


def test_map_starts_one_task_per_input_in_order(busy_client: Client) -> None:
    inputs = [{"n": i} for i in range(12)]
    tasks = Task.map("echo", inputs, name="fan", priority=7, client=busy_client)
    assert [t.template for t in tasks] == ["echo"] * 12
    assert {(t.name, t.priority) for t in tasks} == {("fan", 7)}
    results = [t.result(timeout=30).result for t in tasks]
    assert results == [{"input": item} for item in inputs]


def test_map_takes_any_iterable(busy_client: Client) -> None:
    tasks = Task.map("echo", (i * i for i in range(3)), client=busy_client)
    assert [t.result(timeout=30).result for t in tasks] == [
        {"input": 0},
        {"input": 1},
        {"input": 4},
    ]
    assert Task.map("echo", [], client=busy_client) == []


def test_map_checks_every_input_before_any_request(
    busy_server: LocalRequence, proxy: FaultProxy
) -> None:
    with proxied_client(busy_server, proxy) as client:
        with pytest.raises(ConfigurationError, match=r"inputs\[2\] is not JSON-serialisable"):
            Task.map("echo", [{"ok": 1}, [2], {"bad": object()}, 4], client=client)
        with pytest.raises(ConfigurationError, match=r"inputs\[1\]"):
            Task.map("echo", [1.0, float("nan")], client=client)
        with pytest.raises(ConfigurationError, match="priority"):
            Task.map("echo", [1, 2], priority=11, client=client)
        with pytest.raises(ConfigurationError, match="template"):
            Task.map("", [1, 2], client=client)
        with pytest.raises(ConfigurationError, match=r"unknown option.*colour"):
            Task.map("echo", [1, 2], colour="red", client=client)
        with pytest.raises(ConfigurationError, match="input="):
            Task.map("echo", [1, 2], input=3, client=client)
        for not_inputs in ("abc", {"name": "x"}, 5):
            with pytest.raises(ConfigurationError, match="iterable of inputs"):
                Task.map("echo", not_inputs, client=client)  # type: ignore[arg-type]
        time.sleep(0.2)
        assert proxy.seen() == []  # not one request went out


def test_map_creates_at_most_max_workers_tasks_at_once(
    busy_server: LocalRequence, proxy: FaultProxy
) -> None:
    with proxied_client(busy_server, proxy, max_workers=3) as client:
        proxy.stall(None, path="/task/prepare")  # hold every prepare until released
        tasks = Task.map("echo", list(range(12)), client=client)
        wait_until(lambda: len(proxy.live) == 3, timeout=10, what="three prepares in flight")
        time.sleep(0.5)  # room for more, if anything would send them
        assert len(proxy.live) == 3
        assert len(proxy.seen("/task/prepare")) == 3
        proxy.pass_through()
        assert wait(tasks, timeout=30) == (set(tasks), set())
        assert len(proxy.seen("/task/prepare")) == 12
        assert [t.result(timeout=0).result for t in tasks] == [{"input": i} for i in range(12)]


# --- as_completed --------------------------------------------------------------------


def test_as_completed_yields_in_the_order_tasks_end(
    busy_client: Client, gates: Callable[[], str]
) -> None:
    keys = [gates() for _ in range(4)]
    tasks = Task.map("gated", [{"gate": k} for k in keys], client=busy_client)
    for task in tasks:
        task.finalized(timeout=30)
    ended = as_completed(tasks, timeout=60)
    for index in (2, 0, 3, 1):
        open_gate(keys[index])
        assert next(ended) is tasks[index]
    with pytest.raises(StopIteration):
        next(ended)


def test_as_completed_follows_durations(busy_client: Client) -> None:
    seconds = [2.0, 0.0, 1.0]
    tasks = Task.map("sleep", [{"seconds": s} for s in seconds], client=busy_client)
    order = [tasks.index(t) for t in as_completed(tasks, timeout=60)]
    assert order == [1, 2, 0]


def test_as_completed_yields_failures_too(busy_client: Client) -> None:
    ok = Task("echo", input=1, client=busy_client)
    failed = Task("late-fail", client=busy_client)
    rejected = Task("greet", input={}, client=busy_client)  # "name" is required
    seen = list(as_completed([ok, failed, rejected], timeout=60))
    assert sorted(map(id, seen)) == sorted(map(id, [ok, failed, rejected]))
    assert ok.result(timeout=0).result == {"input": 1}
    with pytest.raises(TaskFailedError):
        failed.result(timeout=0)
    with pytest.raises(TaskError) as caught:
        rejected.result(timeout=0)
    assert caught.value.status == 422


def test_as_completed_times_out_and_the_rest_go_on(
    busy_client: Client, gates: Callable[[], str]
) -> None:
    key = gates()
    quick = Task("echo", input=1, client=busy_client)
    slow = Task("gated", input={"gate": key}, client=busy_client)
    yielded = []
    started = time.monotonic()
    with pytest.raises(TaskTimeoutError) as caught:
        for task in as_completed([quick, slow], timeout=1.0):
            yielded.append(task)
    assert 1.0 <= time.monotonic() - started < 10
    assert yielded == [quick]
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.timeout == 1.0
    assert "1 of 2 tasks" in str(caught.value)
    assert not slow.done()
    open_gate(key)
    assert list(as_completed([slow], timeout=30)) == [slow]


def test_as_completed_yields_each_task_once(busy_client: Client) -> None:
    task = Task("echo", input=1, client=busy_client)
    assert list(as_completed([task, task, task], timeout=30)) == [task]
    assert list(as_completed([], timeout=0)) == []


def test_as_completed_checks_its_arguments_when_called(busy_client: Client) -> None:
    task = Task("echo", input=1, client=busy_client)
    with pytest.raises(ConfigurationError, match=r"tasks\[1\] is a str"):
        as_completed([task, "abc"])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="timeout"):
        as_completed([task], timeout=-1)
    with pytest.raises(ConfigurationError, match=r"pass \[task\]"):
        as_completed(task)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="iterable of Task"):
        wait(5)  # type: ignore[arg-type]
    task.result(timeout=30)


# --- wait ------------------------------------------------------------------------------


def test_wait_all_completed(busy_client: Client) -> None:
    tasks = Task.map("echo", [1, 2, 3], client=busy_client)
    done, not_done = wait(tasks, timeout=30, return_when=ALL_COMPLETED)
    assert done == set(tasks) and not_done == set()
    assert wait([]) == (set(), set())


def test_wait_first_completed(busy_client: Client, gates: Callable[[], str]) -> None:
    keys = [gates() for _ in range(3)]
    tasks = Task.map("gated", [{"gate": k} for k in keys], client=busy_client)
    for task in tasks:
        task.finalized(timeout=30)
    open_gate(keys[1])
    done, not_done = wait(tasks, timeout=30, return_when=FIRST_COMPLETED)
    assert done == {tasks[1]} and not_done == {tasks[0], tasks[2]}


def test_wait_first_exception(busy_client: Client, gates: Callable[[], str]) -> None:
    ok = Task("echo", input=1, client=busy_client)
    ok.result(timeout=30)
    gated = Task("gated", input={"gate": gates()}, client=busy_client)
    failing = Task("late-fail", client=busy_client)
    done, not_done = wait([ok, gated, failing], timeout=30, return_when=FIRST_EXCEPTION)
    assert failing in done and ok in done
    assert not_done == {gated}
    # Without a failure, FIRST_EXCEPTION waits for all.
    done, not_done = wait([ok], timeout=30, return_when=FIRST_EXCEPTION)
    assert done == {ok}


def test_wait_returns_at_the_time_out_without_raising(
    busy_client: Client, gates: Callable[[], str]
) -> None:
    quick = Task("echo", input=1, client=busy_client)
    slow = Task("gated", input={"gate": gates()}, client=busy_client)
    quick.result(timeout=30)
    started = time.monotonic()
    done, not_done = wait([quick, slow], timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 10
    assert done == {quick} and not_done == {slow}


def test_wait_checks_its_arguments(busy_client: Client) -> None:
    task = Task("echo", input=1, client=busy_client)
    with pytest.raises(ConfigurationError, match="return_when"):
        wait([task], return_when="SOMETIME")
    with pytest.raises(ConfigurationError, match="progress"):
        wait([task], progress="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"tasks\[0\]"):
        wait([task.future])  # type: ignore[list-item]
    task.result(timeout=30)


def test_waiting_on_many_tasks_holds_no_thread_per_task(
    busy_client: Client, gates: Callable[[], str]
) -> None:
    keys = [gates() for _ in range(30)]
    tasks = Task.map("gated", [{"gate": k} for k in keys], client=busy_client)
    for task in tasks:
        task.finalized(timeout=30)
        task.future  # noqa: B018  (start following each)
    wait_until(lambda: all(t._updates_since(0)[0] for t in tasks), timeout=30, what="updates")
    before = threading.active_count()
    answers: list[tuple[set[Task], set[Task]]] = []
    order: list[Task] = []
    waiters = [
        threading.Thread(target=lambda: answers.append(wait(tasks, timeout=60))),
        threading.Thread(target=lambda: order.extend(as_completed(tasks, timeout=60))),
    ]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.3)
    assert threading.active_count() <= before + len(waiters)
    for key in keys:
        open_gate(key)
    for waiter in waiters:
        waiter.join(60)
    assert answers == [(set(tasks), set())]
    assert sorted(map(id, order)) == sorted(map(id, tasks))
