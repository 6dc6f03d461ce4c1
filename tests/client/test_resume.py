"""The client's update stream survives trouble: cut streams, silence, 503 storms,
a restarted server, and a server that sends malformed or odd streams.

Against the local server (its fault injection) where it can make the trouble,
and against a tiny SSE server of this module's own where it cannot (malformed
frames, HTML instead of a stream, positions with gaps).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from requence_task import (
    ApiError,
    Client,
    NodeStartUpdate,
    RequenceUnreachableError,
    RetryPolicy,
    Task,
    TaskEndUpdate,
    TaskErrorUpdate,
    TaskFailedError,
    TaskStartUpdate,
    Timeouts,
    UnknownUpdate,
    Update,
)
from requence_task._token import encode_access_token
from requence_task.local import LocalRequence, Template, service

from ..conftest import Api
from ..local.templates_for_tests import TEMPLATES, gate

WAIT = 10.0  # bound of every wait in this module, in seconds
MANY_TYPES = ["taskStart", "nodeStart", *["nodeUpdate"] * 25, "nodeEnd", "taskEnd"]
VOLATILE = ("taskId", "task_id", "timestamp", "updateId")


def _client(token: str, **kwargs: Any) -> Client:
    # Each task on its own stream here (the shared stream: tests/faults/test_shared_stream.py).
    kwargs.setdefault("shared_stream", False)
    kwargs.setdefault("retry", RetryPolicy(budget=5, initial_backoff=0.01, max_backoff=0.1))
    kwargs.setdefault("timeouts", Timeouts(connect=2, read=5, stream_inactivity=5))
    return Client(token, **kwargs)


@pytest.fixture(scope="module")
def client(server: LocalRequence) -> Iterator[Client]:
    with _client(server.access_token) as c:
        yield c


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _triples(updates: list[Update]) -> list[tuple[int | None, str, dict[str, Any]]]:
    return [(u.position, u.type, u.raw) for u in updates]


def _stable(updates: list[Update]) -> list[tuple[str, dict[str, Any]]]:
    """Types and data without what differs from task to task."""
    return [(u.type, {k: v for k, v in u.raw.items() if k not in VOLATILE}) for u in updates]


def _server_events(api: Api, task_id: str) -> list[tuple[int | None, str, dict[str, Any]]]:
    return [(p, t, d) for p, t, d in api.watch(task_id)]


def _collect(task: Task, sink: list[Update], errors: list[BaseException]) -> None:
    try:
        for update in task.updates(timeout=WAIT):
            sink.append(update)
    except BaseException as err:  # reported by the test
        errors.append(err)


# --- cut streams on the local server ------------------------------------------


@pytest.fixture(scope="module")
def unfaulted_many(client: Client) -> list[Update]:
    task = Task("many", {"n": 25}, client=client)
    updates = list(task.updates(timeout=WAIT))
    assert task.result(timeout=WAIT).result == {"i": 24}
    return updates


@pytest.mark.parametrize("cut_after", [1, 2, 3, 4, 5, 6])
def test_cut_streams_yield_every_update_once_in_order(
    server: LocalRequence,
    client: Client,
    api: Api,
    unfaulted_many: list[Update],
    cut_after: int,
) -> None:
    server.faults.cut_streams_after = cut_after
    task = Task("many", {"n": 25}, client=client)
    updates = list(task.updates(timeout=WAIT))
    result = task.result(timeout=WAIT)
    server.faults.clear()

    assert [u.type for u in updates] == MANY_TYPES
    assert _stable(updates) == _stable(unfaulted_many)
    # Exactly what the server holds for this task: positions, types and data.
    assert _triples(updates) == _server_events(api, task.task_id())
    positions = [u.position for u in updates]
    assert positions == sorted(set(positions))
    assert result.result == {"i": 24}
    assert result.get_node_data("many") == {"i": 24}
    assert isinstance(updates[-1], TaskEndUpdate)
    # 29 events cut every `cut_after`: that many reconnects at least.
    assert task._monitor is not None and task._monitor.stream is not None
    assert task._monitor.stream.reconnects >= (len(MANY_TYPES) - 1) // cut_after


def test_cut_streams_while_several_threads_iterate(
    server: LocalRequence, client: Client, api: Api
) -> None:
    server.faults.cut_streams_after = 2
    task = Task("many", {"n": 25}, client=client)
    sinks: list[list[Update]] = [[] for _ in range(5)]
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_collect, args=(task, sink, errors)) for sink in sinks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)
    server.faults.clear()
    assert errors == []
    expected = _server_events(api, task.task_id())
    assert [t for _, t, _ in expected] == MANY_TYPES
    for sink in sinks:
        assert _triples(sink) == expected
    # And one more iterator afterwards still sees everything from the first update.
    assert _triples(list(task.updates(timeout=WAIT))) == expected
    assert task.result(timeout=WAIT).result == {"i": 24}


# --- a silent stream --------------------------------------------------------------


def _stall(ctx: Any) -> dict[str, Any]:
    time.sleep(2.0)  # silent: no update, and the server's keep-alive is 30 s
    return {"slept": True}


STALL_TEMPLATES = [
    Template(
        "stall",
        nodes=[
            service("before", lambda ctx: {"before": 1}),
            service("sleepy", _stall, after=["before"]),
            service("after", lambda ctx: {"after": 2}, after=["sleepy"]),
        ],
    )
]


def test_silent_stream_is_treated_as_dropped_and_resumed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="requence_task.local")
    with (
        LocalRequence(STALL_TEMPLATES, keepalive_interval=30) as rq,
        _client(
            rq.access_token,
            timeouts=Timeouts(connect=2, read=5, stream_inactivity=0.3),
            retry=RetryPolicy(budget=10, initial_backoff=0.05, max_backoff=0.2),
        ) as client,
    ):
        api = Api(rq.access_token)
        try:
            started = time.monotonic()
            task = Task("stall", client=client)
            updates = list(task.updates(timeout=WAIT))
            elapsed = time.monotonic() - started
            result = task.result(timeout=WAIT)
            watches = [
                r
                for r in caplog.records
                if r.name == "requence_task.local"
                and f"POST /task/watch/{task.task_id()} -> 200" in r.getMessage()
            ]
            expected = _server_events(api, task.task_id())
        finally:
            api.close()
    assert [u.type for u in updates] == [
        "taskStart",
        *["nodeStart", "nodeUpdate", "nodeEnd"] * 3,
        "taskEnd",
    ]
    assert _triples(updates) == expected
    assert result.result == {"after": 2}
    assert result.get_node_data("sleepy") == {"slept": True}
    assert task._monitor is not None and task._monitor.stream is not None
    # 2 s of silence with a 0.3 s inactivity window: several reconnects.
    assert task._monitor.stream.reconnects >= 3
    assert len(watches) == task._monitor.stream.reconnects + 1
    assert elapsed < 5


# --- a 503 storm on the watch ------------------------------------------------------


def test_watch_503_storm_longer_than_budget_raises_unreachable(server: LocalRequence) -> None:
    key = str(uuid.uuid4())
    with _client(
        server.access_token,
        timeouts=Timeouts(connect=2, read=5, stream_inactivity=0.3),
        retry=RetryPolicy(budget=0.5, initial_backoff=0.01, max_backoff=0.05),
    ) as client:
        try:
            task = Task("gated", {"gate": key}, client=client)
            seen: list[Update] = []
            started = time.monotonic()
            with pytest.raises(RequenceUnreachableError) as caught:
                for update in task.updates(timeout=WAIT):
                    seen.append(update)
                    if isinstance(update, NodeStartUpdate):
                        # From now on every watch answers 503; the stream drops after
                        # 0.3 s of silence and every reconnect meets the storm.
                        server.faults.fail_next(100_000, endpoint="watch")
            assert time.monotonic() - started < 5
            assert caught.value.status == 503
            assert [u.type for u in seen] == ["taskStart", "nodeStart"]
            with pytest.raises(RequenceUnreachableError) as from_result:
                task.result(timeout=WAIT)
            assert from_result.value.status == 503
            assert from_result.value.attempts >= 2
            assert "HTTP 503" in str(from_result.value)
            # Another iterator gets what there was, then the same error.
            again: list[str] = []
            with pytest.raises(RequenceUnreachableError):
                for update in task.updates(timeout=WAIT):
                    again.append(update.type)
            assert again == ["taskStart", "nodeStart"]
        finally:
            server.faults.clear()
            gate(key).set()


# --- the server restarts on the same database -----------------------------------------


def test_server_restart_mid_task_resumes_with_interrupted_error(tmp_path: Path) -> None:
    key = str(uuid.uuid4())
    port = _free_port()
    db = str(tmp_path / "t.db")
    first = LocalRequence(TEMPLATES, db=db, port=port).start()
    second: LocalRequence | None = None
    token = first.access_token
    try:
        with _client(
            token, retry=RetryPolicy(budget=15, initial_backoff=0.05, max_backoff=0.25)
        ) as client:
            task = Task("gated", {"gate": key}, client=client)
            updates: list[Update] = []
            errors: list[BaseException] = []
            started = threading.Event()

            def follow() -> None:
                try:
                    for update in task.updates(timeout=30):
                        updates.append(update)
                        if isinstance(update, NodeStartUpdate):
                            started.set()
                except BaseException as err:
                    errors.append(err)

            reader = threading.Thread(target=follow)
            reader.start()
            assert started.wait(WAIT)
            first.stop()
            second = LocalRequence(TEMPLATES, db=db, port=port).start()
            assert second.access_token == token  # the same project, from the same database
            reader.join(WAIT)
            assert not reader.is_alive()
            assert errors == []
            assert [u.type for u in updates] == ["taskStart", "nodeStart", "taskError"]
            positions = [u.position for u in updates]
            assert positions == sorted(set(positions))
            last = updates[-1]
            assert isinstance(last, TaskErrorUpdate)
            assert last.reason is not None and last.reason.startswith("interrupted")
            with pytest.raises(TaskFailedError) as caught:
                task.result(timeout=WAIT)
            assert caught.value.reason == last.reason
            assert caught.value.task_id == task.task_id()
            api = Api(second.access_token)
            try:
                assert _triples(updates) == _server_events(api, task.task_id())
            finally:
                api.close()
    finally:
        gate(key).set()
        first.stop()
        if second is not None:
            second.stop()


# --- a fake Requence of this module's own -----------------------------------------------

TASK_ID = "t-1"
BEARER = "fake-bearer"


def frame(position: int | str | None, event: str, data: Any) -> bytes:
    lines = [] if position is None else [f"id: {position}"]
    lines.append(f"event: {event}")
    lines.append(f"data: {data if isinstance(data, str) else json.dumps(data)}")
    return ("\n".join(lines) + "\n\n").encode()


def update_data(**fields: Any) -> dict[str, Any]:
    return {
        "taskId": TASK_ID,
        "timestamp": "2024-05-01T12:00:00+00:00",
        "updateId": str(uuid.uuid4()),
        **fields,
    }


Watch = Callable[["_Handler", dict[str, Any]], None]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-answer is part of these tests


class FakeRequence:
    """Prepare and finalize answered properly; each watch request runs the next
    scripted answer (404 once the script is used up)."""

    def __init__(self, watches: list[Watch]) -> None:
        self.watches = list(watches)
        self.watch_bodies: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.lock = threading.Lock()
        self.httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.fake = self  # type: ignore[attr-defined]
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def access_token(self) -> str:
        return encode_access_token(BEARER, self.base_url)

    def __enter__(self) -> FakeRequence:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def fake(self) -> FakeRequence:
        return self.server.fake  # type: ignore[attr-defined,no-any-return]

    def send_json(self, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def stream(self, *frames: bytes) -> None:
        self.start_stream()
        for part in frames:
            self.chunk(part)
        self.end_stream()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        base = self.fake.base_url
        if self.path.startswith("/task/prepare/"):
            self.send_json(
                200,
                {
                    "taskId": TASK_ID,
                    "finalizeUrl": f"{base}/task/finalize/{TASK_ID}",
                    "branch": "live",
                },
            )
        elif self.path == f"/task/finalize/{TASK_ID}":
            self.send_json(
                200,
                {
                    "taskId": TASK_ID,
                    "urls": {"watch": f"{base}/task/watch/{TASK_ID}", "show": f"{base}/x"},
                },
            )
        elif self.path == f"/task/watch/{TASK_ID}":
            body = json.loads(raw)
            with self.fake.lock:
                self.fake.watch_bodies.append(body)
                self.fake.authorizations.append(self.headers.get("Authorization"))
                script = self.fake.watches.pop(0) if self.fake.watches else None
            if script is None:
                self.send_json(404, {"message": "the script is used up"})
            else:
                script(self, body)
        else:
            self.send_json(404, {"message": f"no route {self.path}"})


def _fake_client(fake: FakeRequence) -> Client:
    return _client(
        fake.access_token,
        retry=RetryPolicy(budget=3, initial_backoff=0.01, max_backoff=0.05),
        timeouts=Timeouts(connect=2, read=3, stream_inactivity=3),
    )


def test_malformed_events_are_skipped_unknown_types_passed_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="requence_task")

    def watch(handler: _Handler, body: dict[str, Any]) -> None:
        handler.stream(
            frame(1, "taskStart", update_data(input={"a": 1})),
            frame(2, "nodeUpdate", "{not json"),
            frame(3, "nodeUpdate", "[1, 2, 3]"),
            frame(4, "somethingNew", update_data(extra=[1])),
            frame("five", "nodeUpdate", update_data(node={"id": "n", "type": "service"})),
            frame(6, "taskEnd", update_data(result={"ok": True}, exit=None, requireAck=False)),
        )

    with FakeRequence([watch]) as fake, _fake_client(fake) as client:
        task = Task("tpl", {"a": 1}, client=client)
        updates = list(task.updates(timeout=WAIT))
        result = task.result(timeout=WAIT)
    assert [type(u) for u in updates] == [TaskStartUpdate, UnknownUpdate, TaskEndUpdate]
    assert [(u.type, u.position) for u in updates] == [
        ("taskStart", 1),
        ("somethingNew", 4),
        ("taskEnd", 6),
    ]
    unknown = updates[1]
    assert isinstance(unknown, UnknownUpdate)
    assert unknown.problem is None
    assert unknown.raw["extra"] == [1]
    assert result.result == {"ok": True}
    assert result.input == {"a": 1}
    assert result.task_id == TASK_ID
    assert fake.watch_bodies == [{"since": None}]
    assert fake.authorizations == [f"Bearer {BEARER}"]
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "requence_task" and r.levelno >= 30
    ]
    assert len(warnings) == 3, warnings
    assert any("not JSON" in w for w in warnings)
    assert any("not a JSON object" in w for w in warnings)
    assert any("id is not an integer" in w for w in warnings)
    assert not any(BEARER in r.getMessage() for r in caplog.records)


def test_watch_answered_with_html_raises_api_error_quickly() -> None:
    def html(handler: _Handler, body: dict[str, Any]) -> None:
        page = b"<!doctype html><title>Login</title><p>Please log in"
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html; charset=utf-8")
        handler.send_header("Content-Length", str(len(page)))
        handler.end_headers()
        handler.wfile.write(page)

    with FakeRequence([html]) as fake, _fake_client(fake) as client:
        task = Task("tpl", client=client)
        started = time.monotonic()
        with pytest.raises(ApiError) as caught:
            task.result(timeout=WAIT)
        assert time.monotonic() - started < 2
        assert "text/html" in str(caught.value)
        assert caught.value.status == 200
        with pytest.raises(ApiError):
            list(task.updates(timeout=WAIT))
        assert len(fake.watch_bodies) == 1  # not retried


def test_stream_ending_without_terminal_update_resumes_from_last_position() -> None:
    def first(handler: _Handler, body: dict[str, Any]) -> None:
        handler.stream(
            frame(1000, "taskStart", update_data(input=None)),
            b": keep-alive\n\n",
            frame(
                1003, "nodeStart", update_data(node={"id": "n1", "type": "service", "alias": "a"})
            ),
        )  # ends cleanly, no terminal update

    def second(handler: _Handler, body: dict[str, Any]) -> None:
        node = {"id": "n1", "type": "service", "alias": "a"}
        handler.stream(
            frame(1010, "nodeUpdate", update_data(node=node, data={"x": 1}, output=None)),
            frame(1011, "nodeEnd", update_data(node=node)),
            frame(1500, "taskEnd", update_data(result={"x": 1}, exit=None, requireAck=False)),
        )

    with FakeRequence([first, second]) as fake, _fake_client(fake) as client:
        task = Task("tpl", client=client)
        updates = list(task.updates(timeout=WAIT))
        result = task.result(timeout=WAIT)
    assert [(u.position, u.type) for u in updates] == [
        (1000, "taskStart"),
        (1003, "nodeStart"),
        (1010, "nodeUpdate"),
        (1011, "nodeEnd"),
        (1500, "taskEnd"),
    ]
    assert fake.watch_bodies == [{"since": None}, {"since": None, "lastPosition": 1003}]
    assert result.result == {"x": 1}
    assert result.get_node_data("a") == {"x": 1}


def test_positions_starting_at_1000_with_gaps() -> None:
    node = {"id": "n1", "type": "service", "alias": "a"}

    def watch(handler: _Handler, body: dict[str, Any]) -> None:
        handler.stream(
            frame(1000, "taskStart", update_data(input=[1])),
            frame(1002, "nodeStart", update_data(node=node)),
            frame(1999, "nodeUpdate", update_data(node=node, data=1, output=None)),
            frame(5000, "nodeUpdate", update_data(node=node, data=2, output="out")),
            frame(5001, "nodeEnd", update_data(node=node)),
            frame(90000, "taskEnd", update_data(result=2, exit="done", requireAck=False)),
        )

    with FakeRequence([watch]) as fake, _fake_client(fake) as client:
        task = Task("tpl", client=client)
        updates = list(task.updates(timeout=WAIT))
        result = task.result(timeout=WAIT)
    assert [u.position for u in updates] == [1000, 1002, 1999, 5000, 5001, 90000]
    assert result.result == 2
    assert result.input == [1]
    assert result.get_node_data("a") == 2
    last = updates[-1]
    assert isinstance(last, TaskEndUpdate) and last.exit == "done"
    assert len(fake.watch_bodies) == 1


def test_stream_ending_cleanly_inside_the_terminal_update_still_ends_the_task() -> None:
    """The body may end cleanly in the middle of a frame (a proxy ending the response
    between two chunks that split it). The resume must fetch that update whole:
    here it is the terminal one, and without it the task never ends."""
    end = frame(8, "taskEnd", update_data(result={"done": 1}, exit=None, requireAck=False))

    def first(handler: _Handler, body: dict[str, Any]) -> None:
        handler.stream(frame(7, "taskStart", update_data(input=None)), end[: len(end) // 2])

    def resume(handler: _Handler, body: dict[str, Any]) -> None:
        if body.get("lastPosition") == 7:
            handler.stream(end)
        else:  # the client took the torn update as seen: nothing is left to send
            handler.stream(b": keep-alive\n\n")

    with FakeRequence([first, resume]) as fake, _fake_client(fake) as client:
        task = Task("tpl", client=client)
        try:
            outcome: Any = task.result(timeout=WAIT).result
        except Exception as err:
            outcome = f"{type(err).__name__}: {err}"
    assert fake.watch_bodies[1] == {"since": None, "lastPosition": 7}
    assert outcome == {"done": 1}
