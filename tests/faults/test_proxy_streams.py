"""The client through a proxy that cuts, stalls, slows, loses and corrupts its
traffic (issue 5): every update exactly once and in order, the right result,
never a hang, a clear error for garbage, and exactly one task when an answer is
lost.

The proxy (``tests/faults/proxy.py``) sits between a ``requence_task.Client``
and a ``LocalRequence`` of this module's own; the client's token points at the
proxy. What the server itself holds (read straight from it, around the proxy)
is the reference every stream is compared with.

Not repeated here: cuts every K events straight to the server, a silent server
(no keep-alive), malformed SSE frames and HTML from a fake server
(tests/client/test_resume.py), split bytes and CRLF (tests/test_stream_parsing.py),
gateway storms and a server that is down (tests/faults/test_unreachable.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import sseclient

from requence_task import (
    ApiError,
    Client,
    RequenceError,
    RequenceUnreachableError,
    RetryPolicy,
    Task,
    TaskError,
    TaskFailedError,
    TaskTimeoutError,
    Timeouts,
    Update,
)
from requence_task._token import encode_access_token
from requence_task.local import DEFAULT_PROJECT, LocalRequence

from ..client.conftest import own_server, wait_until
from ..conftest import Api
from ..local.templates_for_tests import gate
from .proxy import Exchange, FaultProxy, endless_line, html_answer

WAIT = 10.0  # bound of every wait that is not itself under test
GREET = {"name": "Ada", "steps": 3}
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
VOLATILE = ("taskId", "task_id", "timestamp", "updateId")
# Progress-making reconnects happen at once; the backoff is for the others.
FAST = RetryPolicy(budget=5, initial_backoff=0.01, max_backoff=0.1)
TIMEOUTS = Timeouts(connect=2, read=5, stream_inactivity=5)


# --- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def rq() -> Iterator[LocalRequence]:
    with own_server() as server:
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


@pytest.fixture(scope="module")
def server_api(rq: LocalRequence) -> Iterator[Api]:
    """The server's own view, around the proxy."""
    api = Api(rq.access_token)
    yield api
    api.close()


def proxy_token(rq: LocalRequence, proxy: FaultProxy, project: str = DEFAULT_PROJECT) -> str:
    return encode_access_token(rq.bearer_for(project), proxy.base_url)


def proxied(rq: LocalRequence, proxy: FaultProxy, **kwargs: Any) -> Client:
    # These tests follow each task on its own stream; tests/faults/test_shared_stream.py
    # puts the shared (watch-all) stream through the same faults.
    kwargs.setdefault("shared_stream", False)
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("timeouts", TIMEOUTS)
    project = kwargs.pop("project", DEFAULT_PROJECT)
    return Client(proxy_token(rq, proxy, project), **kwargs)


@pytest.fixture(scope="module")
def client(rq: LocalRequence, proxy: FaultProxy) -> Iterator[Client]:
    with proxied(rq, proxy) as c:
        yield c


@pytest.fixture()
def gate_key() -> Iterator[str]:
    key = uuid.uuid4().hex
    gate(key)
    yield key
    gate(key).set()


def triples(updates: list[Update]) -> list[tuple[int | None, str, dict[str, Any]]]:
    return [(u.position, u.type, u.raw) for u in updates]


def stable(updates: list[Update]) -> list[tuple[str, dict[str, Any]]]:
    """Types and data without what differs from task to task."""
    return [(u.type, {k: v for k, v in u.raw.items() if k not in VOLATILE}) for u in updates]


def held_by_server(api: Api, task_id: str) -> list[tuple[int | None, str, dict[str, Any]]]:
    return [(p, t, d) for p, t, d in api.watch(task_id)]


def reconnects(task: Task) -> int:
    assert task._monitor is not None and task._monitor.stream is not None
    return task._monitor.stream.reconnects


def settled(exchanges: list[Exchange]) -> list[Exchange]:
    """``exchanges`` once none is still open: the proxy may relay the end of an
    answer a moment after the client has what it needs."""
    wait_until(lambda: all(e.outcome != "open" for e in exchanges), what="exchanges to end")
    return exchanges


def watch_path(task: Task) -> str:
    return f"/task/watch/{task.task_id(timeout=WAIT)}"


def task_starts(rq: LocalRequence, project: str) -> list[dict[str, Any]]:
    """The ``taskStart`` events of ``project``, read from the server's watch-all
    stream (around the proxy) until it has been silent for 0.5 s."""
    api = Api(rq.token_for(project))
    found: list[dict[str, Any]] = []
    response = api.post(
        "/task/watch-all",
        json={"since": None},
        headers={"Accept": "text/event-stream"},
        stream=True,
        timeout=(2, 0.5),
    )
    try:
        assert response.status_code == 200, response.text
        try:
            for event in sseclient.SSEClient(response).events():
                if event.event == "taskStart":
                    found.append(json.loads(event.data))
        except requests.ConnectionError:  # 0.5 s of silence: the history is over
            pass
    finally:
        response.close()
        api.close()
    return found


@pytest.fixture(scope="module")
def uncut(client: Client) -> list[Update]:
    """A run of the same task with nothing in the way."""
    task = Task("greet", GREET, client=client)
    updates = list(task.updates(timeout=WAIT))
    assert task.result(timeout=WAIT).result == {"message": "Hello, Ada!"}
    assert reconnects(task) == 0
    return updates


def assert_exactly_once(
    updates: list[Update], task: Task, api: Api, uncut: list[Update] | None = None
) -> None:
    """Every update once, in order: what the server holds, positions included."""
    assert triples(updates) == held_by_server(api, task.task_id())
    positions = [u.position for u in updates]
    assert positions == sorted(set(positions))
    if uncut is not None:
        assert stable(updates) == stable(uncut)


# --- the proxy itself -----------------------------------------------------------------------


def test_pass_through_sends_everything_via_the_proxy(
    client: Client, proxy: FaultProxy, server_api: Api, uncut: list[Update]
) -> None:
    task = Task("greet", GREET, client=client)
    updates = list(task.updates(timeout=WAIT))
    task_id = task.task_id()
    assert [u.type for u in updates] == GREET_TYPES
    assert_exactly_once(updates, task, server_api, uncut)
    # finalizeUrl and urls.watch were rewritten: finalize and watch went via the proxy too.
    assert task.task_url(timeout=WAIT) == f"{proxy.base_url}/tasks/{task_id}"
    assert [
        (e.method, e.path, e.status, e.outcome)
        for e in settled(proxy.seen(f"/task/finalize/{task_id}"))
    ] == [("POST", f"/task/finalize/{task_id}", 200, "ok")]
    watches = settled(proxy.seen(f"/task/watch/{task_id}"))
    assert [(e.status, e.outcome) for e in watches] == [(200, "ok")]


def test_proxy_stops_cleanly_with_stalled_and_streaming_connections(
    rq: LocalRequence, gate_key: str
) -> None:
    with FaultProxy(rq.base_url) as proxy, proxied(rq, proxy) as c:
        task = Task("gated", {"gate": gate_key}, client=c)
        updates = task.updates(timeout=WAIT)
        assert next(updates).type == "taskStart"  # a live stream through the proxy
        proxy.stall(None, path="/task/prepare/", live=False)
        stalled = Task("echo", client=c)
        wait_until(lambda: any(e.held for e in proxy.live), what="a held prepare")
        assert len(proxy.threads) >= 3  # accept, the stream, the held prepare
    assert proxy.threads == []
    assert not [t for t in threading.enumerate() if t.name.startswith(f"fault-proxy-{proxy.port}")]
    assert {e.outcome for e in proxy.exchanges} <= {"ok", "stopped", "client-gone"}
    # The client, closed with the proxy, ends its waits.
    with pytest.raises(RequenceError):
        stalled.task_id(timeout=WAIT)
    with pytest.raises(RequenceError):
        task.result(timeout=WAIT)


# --- streams cut every K bytes -----------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377])
def test_stream_cut_every_k_bytes(
    client: Client, proxy: FaultProxy, server_api: Api, uncut: list[Update], k: int
) -> None:
    """Every connection is cut at the first multiple of ``k`` content bytes past its
    first whole event (see proxy.py): at least one event per connection, so even
    k=1 makes progress and needs no more connections than there are events; the
    cut lands at a different byte of a later event for each ``k``. A cut that
    never lets an event through is the next test."""
    proxy.cut_every(k)
    task = Task("greet", GREET, client=client)
    updates = list(task.updates(timeout=WAIT))
    result = task.result(timeout=WAIT)

    assert [u.type for u in updates] == GREET_TYPES
    assert_exactly_once(updates, task, server_api, uncut)
    assert result.result == {"message": "Hello, Ada!"}
    assert result.get_node_data("counter") == {"step": 3}
    watches = settled(proxy.seen(watch_path(task)))
    cuts = [e for e in watches if e.outcome == "cut"]
    # Events are 250-400 bytes: every connection is cut, or all but the last.
    assert len(cuts) >= len(watches) - 1 >= 2
    assert all(e.body_bytes % k == 0 for e in cuts)
    assert reconnects(task) == len(watches) - 1


def test_stream_that_never_completes_an_event_gives_up_within_the_budget(
    rq: LocalRequence, proxy: FaultProxy
) -> None:
    """Cut after 40 bytes on every connection: no event ever gets through, so no
    client can make progress; it must give up in time and yield nothing."""
    proxy.cut_every(40, progress=False)
    budget = RetryPolicy(budget=1, initial_backoff=0.01, max_backoff=0.1)
    with proxied(rq, proxy, retry=budget) as c:
        task = Task("greet", GREET, client=c)
        task.finalized(timeout=WAIT)
        seen: list[Update] = []
        started = time.monotonic()
        with pytest.raises(RequenceUnreachableError) as info:
            for update in task.updates(timeout=WAIT):
                seen.append(update)
        elapsed = time.monotonic() - started
        assert seen == []
        assert elapsed < budget.budget + 1.5
        assert info.value.status is None
        assert info.value.attempts >= 2
        with pytest.raises(RequenceUnreachableError):
            task.result(timeout=WAIT)
        watches = settled(proxy.seen(watch_path(task)))
        assert len(watches) >= 2
        assert {(e.outcome, e.body_bytes) for e in watches} == {("cut", 40)}


# --- streams cut every K events (the server's own fault) -----------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_stream_cut_every_k_events(
    rq: LocalRequence,
    client: Client,
    proxy: FaultProxy,
    server_api: Api,
    uncut: list[Update],
    k: int,
) -> None:
    rq.faults.cut_streams_after = k
    task = Task("greet", GREET, client=client)
    updates = list(task.updates(timeout=WAIT))
    result = task.result(timeout=WAIT)
    rq.faults.clear()

    assert [u.type for u in updates] == GREET_TYPES
    assert_exactly_once(updates, task, server_api, uncut)
    assert result.result == {"message": "Hello, Ada!"}
    connections = math.ceil(len(GREET_TYPES) / k)
    assert reconnects(task) == connections - 1
    watches = settled(proxy.seen(watch_path(task)))
    assert [(e.status, e.outcome) for e in watches] == [(200, "ok")] * connections


# --- slow and stalled streams -----------------------------------------------------------------


def test_slow_stream_arrives_whole(
    rq: LocalRequence, proxy: FaultProxy, server_api: Api, uncut: list[Update]
) -> None:
    proxy.slow(16, 0.003, path="/task/watch/")
    with proxied(rq, proxy, timeouts=Timeouts(connect=2, read=5, stream_inactivity=0.3)) as c:
        task = Task("greet", GREET, client=c)
        task.finalized(timeout=WAIT)
        started = time.monotonic()
        updates = list(task.updates(timeout=WAIT))
        elapsed = time.monotonic() - started
        assert task.result(timeout=WAIT).result == {"message": "Hello, Ada!"}
    assert_exactly_once(updates, task, server_api, uncut)
    assert reconnects(task) == 0
    (watch,) = settled(proxy.seen(watch_path(task)))
    assert watch.outcome == "ok"
    # ~3 KB in 16-byte pieces, 3 ms apart: it really was slow.
    assert elapsed >= (watch.body_bytes // 16) * 0.003 * 0.9
    assert elapsed < 5


def test_stream_stalled_forever_is_dropped_after_the_inactivity_window(
    rq: LocalRequence, proxy: FaultProxy, server_api: Api, gate_key: str
) -> None:
    with proxied(rq, proxy, timeouts=Timeouts(connect=2, read=5, stream_inactivity=0.3)) as c:
        task = Task("gated", {"gate": gate_key}, client=c)
        updates: list[Update] = []
        stalled_at = 0.0
        for update in task.updates(timeout=WAIT):
            updates.append(update)
            if update.type == "nodeStart":
                # The live stream goes silent (connection open, nothing forwarded);
                # new connections pass.
                proxy.stall(None, path="/task/watch/", new=False)
                stalled_at = time.monotonic()
                gate(gate_key).set()
        elapsed = time.monotonic() - stalled_at
        assert task.result(timeout=WAIT).result == {"opened": gate_key}
    assert [u.type for u in updates] == [
        "taskStart",
        "nodeStart",
        "nodeUpdate",
        "nodeEnd",
        "taskEnd",
    ]
    assert_exactly_once(updates, task, server_api)
    assert reconnects(task) == 1
    assert 0.3 <= elapsed < 2.5
    first, second = settled(proxy.seen(watch_path(task)))
    # The client hung up on the silent connection; the proxy saw it go.
    wait_until(lambda: first.outcome == "client-gone", what="the stalled exchange to end")
    assert second.outcome == "ok"


def test_stream_stalled_for_a_while_resumes_after(
    rq: LocalRequence, proxy: FaultProxy, server_api: Api, gate_key: str
) -> None:
    with proxied(rq, proxy, timeouts=Timeouts(connect=2, read=5, stream_inactivity=0.3)) as c:
        task = Task("gated", {"gate": gate_key}, client=c)
        updates: list[Update] = []
        stalled_at = 0.0
        for update in task.updates(timeout=WAIT):
            updates.append(update)
            if update.type == "nodeStart":
                proxy.stall(1.0, path="/task/watch/")  # live ones and new ones, for 1 s
                stalled_at = time.monotonic()
                gate(gate_key).set()
        elapsed = time.monotonic() - stalled_at
        assert task.result(timeout=WAIT).result == {"opened": gate_key}
    assert [u.type for u in updates] == [
        "taskStart",
        "nodeStart",
        "nodeUpdate",
        "nodeEnd",
        "taskEnd",
    ]
    assert_exactly_once(updates, task, server_api)
    assert 0.95 <= elapsed < 3
    watches = settled(proxy.seen(watch_path(task)))
    assert reconnects(task) == len(watches) - 1 >= 2
    assert watches[-1].outcome == "ok"


def test_prepare_stalled_forever_times_out_and_gives_up_within_the_budget(
    rq: LocalRequence, proxy: FaultProxy
) -> None:
    mark = len(proxy.exchanges)
    proxy.stall(None, path="/task/prepare/", live=False)
    budget = RetryPolicy(budget=1.5, initial_backoff=0.01, max_backoff=0.1)
    timeouts = Timeouts(connect=1, read=0.5, stream_inactivity=5)
    with proxied(rq, proxy, retry=budget, timeouts=timeouts) as c:
        task = Task("echo", {"stalled": True}, client=c)
        started = time.monotonic()
        with pytest.raises(RequenceUnreachableError) as info:
            task.task_id(timeout=WAIT)
        elapsed = time.monotonic() - started
        with pytest.raises(RequenceUnreachableError):
            task.result(timeout=WAIT)
    err = info.value
    assert err.status is None
    # Attempts at 0 and 0.51 s, each given up after the 0.5 s read time-out; a third
    # could not get its answer before the budget ends, so none starts.
    assert err.attempts == 2
    # The budget bounds the whole call, from its start.
    assert budget.budget <= elapsed < budget.budget + 0.5
    prepares = [e for e in proxy.exchanges[mark:] if e.path.startswith("/task/prepare/")]
    assert len(prepares) == err.attempts
    # Every attempt was held (never reached the server), and the client hung up on each.
    wait_until(lambda: all(e.outcome == "client-gone" for e in prepares), what="hang-ups")
    assert all(e.status is None for e in prepares)


# --- refused connections ------------------------------------------------------------------------


def test_refused_connections_during_a_task_then_recovery(
    rq: LocalRequence, proxy: FaultProxy, server_api: Api, gate_key: str
) -> None:
    with proxied(rq, proxy) as c:
        task = Task("gated", {"gate": gate_key}, client=c)
        updates: list[Update] = []
        refused_at = 0.0
        for update in task.updates(timeout=WAIT):
            updates.append(update)
            if update.type == "nodeStart":
                proxy.refuse()  # the live stream is reset; connects are refused
                refused_at = time.monotonic()
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
                gate(gate_key).set()
                threading.Timer(0.6, proxy.accept).start()
        elapsed = time.monotonic() - refused_at
        assert task.result(timeout=WAIT).result == {"opened": gate_key}
    assert [u.type for u in updates] == [
        "taskStart",
        "nodeStart",
        "nodeUpdate",
        "nodeEnd",
        "taskEnd",
    ]
    assert_exactly_once(updates, task, server_api)
    assert 0.6 <= elapsed < 3
    watches = settled(proxy.seen(watch_path(task)))
    assert [e.outcome for e in watches] == ["reset", "ok"]
    assert reconnects(task) >= 2  # the reset, and at least one refused connect


# --- lost answers -------------------------------------------------------------------------------


LOST = [
    pytest.param("echo", {"lost": 1}, ["/task/finalize/"], id="finalize"),
    pytest.param("echo", {"lost": 2}, ["/task/finalize/", "/task/"], id="finalize-and-check"),
    pytest.param("fail", {"name": "x"}, ["/task/finalize/"], id="finalize-of-a-failing-task"),
    pytest.param("greet", {"name": 5}, ["/task/finalize/"], id="finalize-rejected"),
]


@pytest.mark.parametrize(("template", "input", "lost"), LOST)
def test_lost_finalize_answer_makes_exactly_one_task_and_reports_its_outcome(
    rq: LocalRequence, proxy: FaultProxy, template: str, input: Any, lost: list[str]
) -> None:
    project = f"lost-{uuid.uuid4().hex}"
    for path in lost:
        proxy.drop_next(path, method="GET" if path == "/task/" else "POST")
    with proxied(rq, proxy, project=project) as c:
        task = Task(template, input, client=c)
        task_id = task.task_id(timeout=WAIT)
        if template == "echo":
            assert task.finalized(timeout=WAIT) == task_id
            assert task.result(timeout=WAIT).result == {"input": input}
        elif template == "fail":
            assert task.finalized(timeout=WAIT) == task_id
            with pytest.raises(TaskFailedError) as failed:
                task.result(timeout=WAIT)
            assert failed.value.reason == "node 'boom' failed: the boiler exploded"
        else:
            with pytest.raises(TaskError) as rejected:
                task.finalized(timeout=WAIT)
            assert type(rejected.value) is TaskError
            assert rejected.value.status == 422
            assert rejected.value.server_message is not None
            assert "name" in rejected.value.server_message
    dropped = [e for e in proxy.exchanges if e.outcome == "dropped" and task_id in e.path]
    assert len(dropped) == len(lost)
    starts = task_starts(rq, project)
    expected = 0 if template == "greet" else 1
    assert [s["taskId"] for s in starts] == [task_id] * expected


def test_lost_watch_answer_at_the_start(
    client: Client, proxy: FaultProxy, server_api: Api, uncut: list[Update]
) -> None:
    proxy.drop_next("/task/watch/")
    task = Task("greet", GREET, client=client)
    updates = list(task.updates(timeout=WAIT))
    assert task.result(timeout=WAIT).result == {"message": "Hello, Ada!"}
    assert_exactly_once(updates, task, server_api, uncut)
    watches = settled(proxy.seen(watch_path(task)))
    assert [e.outcome for e in watches] == ["dropped", "ok"]
    assert reconnects(task) == 1


# --- garbage from the server's side ----------------------------------------------------------


@pytest.mark.parametrize(
    ("piece", "limit"),
    [(2**20, 15.0), (64 * 2**10, 5.0)],
    ids=["1MiB-chunks", "64KiB-chunks"],
)
def test_endless_line_instead_of_a_stream_is_a_clear_error(
    rq: LocalRequence, proxy: FaultProxy, piece: int, limit: float
) -> None:
    """A 200 event stream that is one line of 'x' that never ends (40 MiB, in HTTP
    chunks of ``piece`` bytes): an ApiError within a few seconds, and the buffered
    line bounded (the client gives up at 32 MiB). Big chunks get a looser limit:
    they only show that the bound and the error work at all."""
    proxy.replace_next("/task/watch/", endless_line(40 * 2**20, piece), count=None)
    error: ApiError | None = None
    with proxied(rq, proxy) as c:
        task = Task("echo", {"endless": piece}, client=c)
        task.finalized(timeout=WAIT)
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            started = time.monotonic()
            with contextlib.suppress(TaskTimeoutError):
                try:
                    task.result(timeout=limit)
                except ApiError as err:
                    error = err
            elapsed = time.monotonic() - started
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    (watch,) = proxy.seen(watch_path(task))
    wait_until(lambda: watch.outcome == "replaced", what="the proxy to see the client go")
    assert peak < 160 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert error is not None, (
        f"no error within {limit} s: the client had been sent {watch.body_bytes / 2**20:.0f} "
        "MiB of the endless line and was still buffering it"
    )
    assert "larger than 32 MiB" in str(error)
    assert 32 * 2**20 <= watch.body_bytes <= 40 * 2**20
    assert elapsed < limit


def test_html_instead_of_a_stream_is_a_clear_error(rq: LocalRequence, proxy: FaultProxy) -> None:
    proxy.replace_next("/task/watch/", html_answer(), count=None)
    with proxied(rq, proxy) as c:
        task = Task("echo", {"html": True}, client=c)
        task.finalized(timeout=WAIT)
        started = time.monotonic()
        with pytest.raises(ApiError) as info:
            task.result(timeout=WAIT)
        assert time.monotonic() - started < 1
    err = info.value
    assert err.status == 200
    assert "text/html" in str(err) and "not an event stream" in str(err)
    assert len(proxy.seen(watch_path(task))) == 1  # not retried


# --- answers cut in the middle (not streams) ------------------------------------------------


def test_prepare_answer_cut_mid_body_is_retried(
    rq: LocalRequence, proxy: FaultProxy, server_api: Api
) -> None:
    """The connection breaks after 20 bytes of prepare's JSON answer. Prepare is safe
    to retry (an unfinalized task is discarded), so the client should retry it like
    any other broken connection, not fail the task."""
    proxy.cut_every(20, path="/task/prepare/", progress=False, count=1)
    with proxied(rq, proxy) as c:
        task = Task("echo", {"cut": "prepare"}, client=c)
        assert task.result(timeout=WAIT).result == {"input": {"cut": "prepare"}}
    assert [e.outcome for e in settled(proxy.seen("/task/prepare/echo"))][-2:] == ["cut", "ok"]


def test_finalize_answer_cut_mid_body_is_no_false_failure(
    rq: LocalRequence, proxy: FaultProxy
) -> None:
    """The connection breaks after 20 bytes of finalize's JSON answer: the server
    started the task, the client lost the answer. Like a lost answer, that must
    be neither a second task nor a reported failure."""
    project = f"cut-{uuid.uuid4().hex}"
    proxy.cut_every(20, path="/task/finalize/", progress=False, count=1)
    with proxied(rq, proxy, project=project) as c:
        task = Task("echo", {"cut": "finalize"}, client=c)
        task_id = task.task_id(timeout=WAIT)
        try:
            assert task.result(timeout=WAIT).result == {"input": {"cut": "finalize"}}
        finally:
            assert [s["taskId"] for s in task_starts(rq, project)] == [task_id]
    assert proxy.seen(f"/task/finalize/{task_id}")[0].outcome == "cut"


# --- closing the client while its stream is between two reads -----------------------------


def test_closing_the_client_between_two_reads_ends_waits_with_a_requence_error(
    rq: LocalRequence, proxy: FaultProxy, gate_key: str
) -> None:
    """``Client.close()`` while the monitor thread handles an update (here: from its
    ``on_update``, so it is deterministic; in real life another thread's close that
    lands between two reads). Every error is a RequenceError: waits must end with
    one, not with what the closed connection raises inside urllib3."""
    c = proxied(rq, proxy)

    def close_at_start(update: Update) -> None:
        if update.type == "taskStart":
            c.close()

    task = Task("gated", {"gate": gate_key}, client=c, on_update=close_at_start)
    try:
        with pytest.raises(RequenceError):
            task.result(timeout=WAIT)
    finally:
        c.close()
