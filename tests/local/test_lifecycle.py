"""Task life cycle of the local Requence: abort, protect and cleanup, requireAck,
restart on the same database, resource leaks, the CLI, and logging."""

from __future__ import annotations

import gc
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sseclient

from requence_task._token import decode_access_token
from requence_task.local import LocalRequence, NodeContext, Template, service

from ..conftest import TIMEOUT, Api
from .templates_for_tests import TEMPLATES, gate

REPO = Path(__file__).resolve().parents[2]
TERMINAL = ("taskEnd", "taskError", "taskAborted")

Events = list[tuple[int, str, dict[str, Any]]]

# A node that records that it saw ctx.aborted (keyed by its input["key"]).
SAW_ABORT: dict[str, threading.Event] = {}


def _watchful(ctx: NodeContext) -> dict[str, Any]:
    seen = SAW_ABORT.setdefault(ctx.input["key"], threading.Event())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if ctx.aborted:
            seen.set()
            return {"saw": "aborted"}
        time.sleep(0.01)
    return {"saw": "nothing"}


WATCHFUL = Template("watchful", nodes=[service("watch", _watchful)])


def key() -> str:
    return uuid.uuid4().hex


def types_of(events: Events) -> list[str]:
    return [type_ for _, type_, _ in events]


def stored_types(rq: LocalRequence, task_id: str) -> list[str]:
    """Every update stored for a task (inspected through the Python API)."""
    return [e.type for e in rq.store.task_events(task_id, after=None, since=None, limit=10_000)]


def wait_until(predicate: Any, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def started_node(api: Api, task_id: str) -> Events:
    """Block until the task's first node started; returns the first two updates."""
    events = api.events(f"/task/watch/{task_id}", {"since": None}, limit=2)
    assert types_of(events) == ["taskStart", "nodeStart"]
    return events


def replay_all(api: Api, body: dict[str, Any] | None = None, timeout: float = 5.0) -> Events:
    """The history watch-all replays, up to its first keep-alive comment (the
    server needs a small keepalive_interval)."""
    response = api.open_stream("/task/watch-all", body or {"since": None})
    assert response.status_code == 200, response.text
    found: Events = []
    frame: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    try:
        for raw in response.iter_lines(chunk_size=None):
            if time.monotonic() > deadline:
                raise AssertionError("watch-all replay did not reach a keep-alive")
            line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            if line.startswith(":"):
                break
            if not line:
                if frame:
                    found.append((int(frame["id"]), frame["event"], json.loads(frame["data"])))
                    frame = {}
                continue
            field, _, value = line.partition(": ")
            frame[field] = value
    finally:
        response.close()
    return found


def api_for(rq: LocalRequence) -> Api:
    return Api(rq.access_token)


# --- abort --------------------------------------------------------------------


def test_abort_idle_task(api: Api) -> None:
    prepared = api.prepare("echo")
    task_id = prepared["taskId"]
    response = api.post(f"/task/abort/{task_id}", data=b"changed my mind")
    assert response.status_code == 200, response.text
    events = api.watch(task_id)
    assert types_of(events) == ["taskAborted"]
    assert events[0][2]["reason"] == "changed my mind"
    assert events[0][2]["requireAck"] is False
    assert events[0][2]["taskId"] == task_id
    info = api.task(task_id)
    assert info["status"] == "STOPPED"
    assert info["statusText"] == "changed my mind"
    late = api.finalize(prepared, input={"x": 1})
    assert late.status_code == 410, late.text
    assert task_id in late.text
    # Still nothing after the abort, and still STOPPED.
    assert api.watch(task_id) == events
    assert api.task(task_id)["status"] == "STOPPED"


def test_abort_pending_task_never_runs() -> None:
    with LocalRequence(TEMPLATES, concurrency=1) as rq:
        api = api_for(rq)
        gate_key = key()
        blocker = api.start("gated", {"gate": gate_key})
        started_node(api, blocker)
        waiting = api.start("echo", {"queued": True})
        assert api.task(waiting)["status"] == "PENDING"
        response = api.post(f"/task/abort/{waiting}", data=b"not needed any more")
        assert response.status_code == 200, response.text
        events = api.watch(waiting)
        assert types_of(events) == ["taskStart", "taskAborted"]
        assert events[-1][2]["reason"] == "not needed any more"
        assert api.task(waiting)["status"] == "STOPPED"
        gate(gate_key).set()
        api.wait_status(blocker, "SUCCESSFUL")
        # The worker is free again; a later task runs, the aborted one never does.
        later = api.start("echo", {"later": True})
        api.wait_status(later, "SUCCESSFUL")
        assert stored_types(rq, waiting) == ["taskStart", "taskAborted"]
        assert api.task(waiting)["status"] == "STOPPED"
        assert api.task(waiting)["nodesData"] == []
        api.close()


def test_abort_running_task() -> None:
    with LocalRequence([*TEMPLATES, WATCHFUL], concurrency=1) as rq:
        api = api_for(rq)
        watch_key = key()
        task_id = api.start("watchful", {"key": watch_key})
        started_node(api, task_id)
        assert api.task(task_id)["status"] == "RUNNING"
        reason = "No longer needed ✓"
        response = api.post(
            f"/task/abort/{task_id}",
            data=reason.encode("utf-8"),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        assert response.status_code == 200, response.text
        events = api.watch(task_id)
        assert types_of(events) == ["taskStart", "nodeStart", "taskAborted"]
        assert events[-1][2]["reason"] == reason
        assert events[-1][2]["requireAck"] is False
        # The node sees ctx.aborted, and the only worker becomes free.
        assert SAW_ABORT[watch_key].wait(5)
        later = api.start("echo", {"after": "abort"})
        assert api.wait_status(later, "SUCCESSFUL")["result"] == {"input": {"after": "abort"}}
        # Nothing after taskAborted, although the node returned data.
        assert stored_types(rq, task_id) == ["taskStart", "nodeStart", "taskAborted"]
        info = api.task(task_id)
        assert info["status"] == "STOPPED"
        assert info["statusText"] == reason
        assert info["nodesData"] == []
        assert info["result"] is None
        api.close()


def test_abort_running_gated_task_frees_the_worker() -> None:
    # The gate is never opened: the next task can only run if the gated node
    # noticed ctx.aborted and returned.
    with LocalRequence(TEMPLATES, concurrency=1) as rq:
        api = api_for(rq)
        task_id = api.start("gated", {"gate": key()})
        started_node(api, task_id)
        response = api.post(f"/task/abort/{task_id}", data=b"stop")
        assert response.status_code == 200
        later = api.start("echo", 7)
        api.wait_status(later, "SUCCESSFUL", timeout=5)
        assert stored_types(rq, task_id) == ["taskStart", "nodeStart", "taskAborted"]
        api.close()


def test_abort_with_empty_body_has_null_reason(api: Api) -> None:
    task_id = api.start("gated", {"gate": key()})
    started_node(api, task_id)
    response = api.post(f"/task/abort/{task_id}", data=b"")
    assert response.status_code == 200, response.text
    events = api.watch(task_id)
    assert events[-1][1] == "taskAborted"
    assert events[-1][2]["reason"] is None
    info = api.task(task_id)
    assert info["status"] == "STOPPED"
    assert info["statusText"] is None


def test_abort_finished_task_is_409(api: Api) -> None:
    task_id = api.start("echo", 1)
    api.wait_status(task_id, "SUCCESSFUL")
    response = api.post(f"/task/abort/{task_id}", data=b"too late")
    assert response.status_code == 409, response.text
    assert task_id in response.text
    assert api.task(task_id)["status"] == "SUCCESSFUL"
    assert types_of(api.watch(task_id))[-1] == "taskEnd"


def test_abort_twice_is_409(api: Api) -> None:
    task_id = api.start("gated", {"gate": key()})
    first = api.post(f"/task/abort/{task_id}", data=b"once")
    assert first.status_code == 200, first.text
    second = api.post(f"/task/abort/{task_id}", data=b"twice")
    assert second.status_code == 409, second.text
    events = api.watch(task_id)
    assert [t for t in types_of(events) if t in TERMINAL] == ["taskAborted"]
    assert events[-1][2]["reason"] == "once"


def test_abort_with_a_reason_that_is_not_utf8_is_400(api: Api) -> None:
    gate_key = key()
    task_id = api.start("gated", {"gate": gate_key})
    response = api.post(f"/task/abort/{task_id}", data=b"\xff\xfe bad")
    assert response.status_code == 400, response.text
    assert "UTF-8" in response.text
    gate(gate_key).set()
    assert api.wait_status(task_id, "SUCCESSFUL")["status"] == "SUCCESSFUL"


def test_abort_unknown_task_is_404(api: Api) -> None:
    unknown = str(uuid.uuid4())
    response = api.post(f"/task/abort/{unknown}", data=b"why")
    assert response.status_code == 404
    assert unknown in response.text


# --- protect and cleanup --------------------------------------------------------


def test_cleanup_deletes_finished_unprotected_tasks_only() -> None:
    with LocalRequence(
        TEMPLATES, retention=1.0, cleanup_interval=0.1, keepalive_interval=0.2
    ) as rq:
        api = api_for(rq)
        gate_key = key()
        running = api.start("gated", {"gate": gate_key})
        kept = api.start("echo", "kept")
        assert api.post(f"/task/protect/{kept}").status_code == 200
        doomed = api.start("echo", "doomed")
        api.wait_status(kept, "SUCCESSFUL")
        api.wait_status(doomed, "SUCCESSFUL")
        doomed_positions = {p for p, _, _ in api.watch(doomed)}
        assert doomed_positions
        started_node(api, running)

        def gone() -> bool:
            return api.get(f"/task/{doomed}").status_code == 404

        wait_until(gone, 5, "the finished task to be cleaned up")
        assert api.post(f"/task/watch/{doomed}", json={"since": None}).status_code == 404
        # Several more cleanup rounds: the protected and the running task stay.
        time.sleep(0.5)
        assert api.task(kept)["status"] == "SUCCESSFUL"
        assert api.task(kept)["result"] == {"input": "kept"}
        assert api.task(running)["status"] == "RUNNING"
        replay = replay_all(api)
        replayed_tasks = {d["taskId"] for _, _, d in replay}
        assert doomed not in replayed_tasks
        assert not doomed_positions & {p for p, _, _ in replay}
        assert {kept, running} <= replayed_tasks
        gate(gate_key).set()
        api.wait_status(running, "SUCCESSFUL")
        api.close()


def test_protect_unknown_task_is_404(api: Api) -> None:
    unknown = str(uuid.uuid4())
    response = api.post(f"/task/protect/{unknown}")
    assert response.status_code == 404
    assert unknown in response.text


def test_protect_prepared_task_is_200(api: Api) -> None:
    prepared = api.prepare("echo")
    assert api.post(f"/task/protect/{prepared['taskId']}").status_code == 200
    assert api.finalize(prepared, input=1).status_code == 200


def test_cleanup_now_returns_deleted_ids() -> None:
    with LocalRequence(TEMPLATES, retention=0, cleanup_interval=3600, concurrency=1) as rq:
        api = api_for(rq)
        protected = api.start("echo", 2)
        api.post(f"/task/protect/{protected}").raise_for_status()
        done = api.start("echo", 1)
        api.wait_status(done, "SUCCESSFUL")
        api.wait_status(protected, "SUCCESSFUL")
        # With one worker, "done" ran last: it holds the largest position.
        last_position = api.watch(done)[-1][0]
        assert last_position > api.watch(protected)[-1][0]
        assert rq.cleanup() == [done]
        assert rq.cleanup() == []
        assert api.get(f"/task/{done}").status_code == 404
        assert api.get(f"{rq.base_url}/tasks/{done}").status_code == 404
        assert api.task(protected)["status"] == "SUCCESSFUL"
        # Positions never go back, even after the newest events were deleted.
        newer = api.start("echo", 3)
        assert api.watch(newer)[0][0] > last_position
        api.close()


def test_prepare_ttl_discards_idle_tasks() -> None:
    with LocalRequence(TEMPLATES, prepare_ttl=0.3, cleanup_interval=3600) as rq:
        api = api_for(rq)
        idle = api.prepare("echo")
        finalized = api.prepare("gated")
        gate_key = key()
        assert api.finalize(finalized, input={"gate": gate_key}).status_code == 200
        assert rq.cleanup() == []
        assert api.task(idle["taskId"])["status"] == "IDLE"
        time.sleep(0.4)
        assert rq.cleanup() == [idle["taskId"]]
        assert api.get(f"/task/{idle['taskId']}").status_code == 404
        assert api.finalize(idle, input=1).status_code == 404
        assert api.task(finalized["taskId"])["status"] in ("PENDING", "RUNNING")
        gate(gate_key).set()
        api.wait_status(finalized["taskId"], "SUCCESSFUL")
        api.close()


def test_prepare_ttl_is_applied_by_the_periodic_cleanup() -> None:
    with LocalRequence(TEMPLATES, prepare_ttl=0.2, cleanup_interval=0.05) as rq:
        api = api_for(rq)
        idle = api.prepare("echo")["taskId"]
        wait_until(lambda: api.get(f"/task/{idle}").status_code == 404, 5, "idle discard")
        api.close()


# --- requireAck -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "terminal", "final"),
    [("echo", "taskEnd", "SUCCESSFUL"), ("fail", "taskError", "FAILED")],
)
def test_require_ack_holds_the_task_until_acked(
    api: Api, template: str, terminal: str, final: str
) -> None:
    task_id = api.start(template, {"name": "Ack"}, requireAck=True)
    events = api.watch(task_id)
    assert events[-1][1] == terminal
    assert events[-1][2]["requireAck"] is True
    assert api.wait_status(task_id, "AWAITING_DELIVERY")["status"] == "AWAITING_DELIVERY"
    # Still awaiting after a moment: nothing acks on its own.
    time.sleep(0.1)
    assert api.task(task_id)["status"] == "AWAITING_DELIVERY"
    # An awaiting task has finished: abort is a conflict.
    assert api.post(f"/task/abort/{task_id}", data=b"late").status_code == 409
    first = api.post(f"/task/ack/{task_id}")
    assert first.status_code == 200, first.text
    assert api.task(task_id)["status"] == final
    second = api.post(f"/task/ack/{task_id}")
    assert second.status_code == 409, second.text
    assert api.task(task_id)["status"] == final
    # The stream is unchanged by the ack.
    assert api.watch(task_id) == events


def test_require_ack_of_aborted_task_becomes_stopped(api: Api) -> None:
    task_id = api.start("gated", {"gate": key()}, requireAck=True)
    started_node(api, task_id)
    assert api.post(f"/task/abort/{task_id}", data=b"enough").status_code == 200
    events = api.watch(task_id)
    assert events[-1][1] == "taskAborted"
    assert events[-1][2]["requireAck"] is True
    assert api.task(task_id)["status"] == "AWAITING_DELIVERY"
    assert api.post(f"/task/ack/{task_id}").status_code == 200
    info = api.task(task_id)
    assert info["status"] == "STOPPED"
    assert info["statusText"] == "enough"


def test_ack_of_a_task_without_require_ack_is_409(api: Api) -> None:
    task_id = api.start("echo", 1)
    api.wait_status(task_id, "SUCCESSFUL")
    response = api.post(f"/task/ack/{task_id}")
    assert response.status_code == 409, response.text
    assert api.task(task_id)["status"] == "SUCCESSFUL"


def test_ack_of_a_running_task_is_409(api: Api) -> None:
    gate_key = key()
    task_id = api.start("gated", {"gate": gate_key}, requireAck=True)
    assert api.post(f"/task/ack/{task_id}").status_code == 409
    gate(gate_key).set()
    api.wait_status(task_id, "AWAITING_DELIVERY")
    assert api.post(f"/task/ack/{task_id}").status_code == 200
    assert api.task(task_id)["status"] == "SUCCESSFUL"


def test_ack_of_unknown_task_is_404(api: Api) -> None:
    assert api.post(f"/task/ack/{uuid.uuid4()}").status_code == 404


def test_cleanup_keeps_awaiting_delivery() -> None:
    with LocalRequence(TEMPLATES, retention=0, cleanup_interval=3600) as rq:
        api = api_for(rq)
        task_id = api.start("echo", 1, requireAck=True)
        api.wait_status(task_id, "AWAITING_DELIVERY")
        time.sleep(0.05)
        assert rq.cleanup() == []
        assert api.task(task_id)["status"] == "AWAITING_DELIVERY"
        assert api.post(f"/task/ack/{task_id}").status_code == 200
        assert rq.cleanup() == [task_id]
        assert api.get(f"/task/{task_id}").status_code == 404
        api.close()


# --- restart on the same database -------------------------------------------------


def test_restart_keeps_finished_tasks_and_events(tmp_path: Path) -> None:
    db = str(tmp_path / "requence.db")
    with LocalRequence(TEMPLATES, db=db) as first:
        api = api_for(first)
        bearer = first.bearer_for("default")
        task_id = api.start("greet", {"name": "Ada"}, name="persisted")
        before = api.watch(task_id)
        assert types_of(before)[-1] == "taskEnd"
        info_before = api.task(task_id)
        api.close()
    with LocalRequence(TEMPLATES, db=db) as second:
        assert second.bearer_for("default") == bearer
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {second.bearer_for('default')}"
        api = Api(second.access_token)
        assert decode_access_token(second.access_token).bearer == bearer
        # The old bearer, spelled out, works against the new base URL.
        response = session.get(f"{second.base_url}/task/{task_id}", timeout=TIMEOUT)
        assert response.status_code == 200
        assert response.json() == info_before
        assert api.watch(task_id) == before
        # Resuming after a position still works across the restart.
        assert api.watch(task_id, lastPosition=before[2][0]) == before[3:]
        newer = api.start("echo", "after restart")
        new_events = api.watch(newer)
        assert min(p for p, _, _ in new_events) > max(p for p, _, _ in before)
        session.close()
        api.close()


def test_restart_on_the_same_port_keeps_the_access_token(tmp_path: Path) -> None:
    db = str(tmp_path / "requence.db")
    with LocalRequence(TEMPLATES, db=db) as first:
        token, port = first.access_token, first.port
        api = Api(token)
        task_id = api.start("echo", "same port")
        api.wait_status(task_id, "SUCCESSFUL")
        api.close()
    try:
        second = LocalRequence(TEMPLATES, db=db, port=port).start()
    except OSError as err:  # pragma: no cover - someone took the port meanwhile
        pytest.skip(f"port {port} was taken after the first server stopped: {err}")
    try:
        assert second.access_token == token
        api = Api(token)
        assert api.task(task_id)["result"] == {"input": "same port"}
        api.close()
    finally:
        second.stop()


def test_restart_of_the_same_instance_keeps_token_and_awaiting_delivery(tmp_path: Path) -> None:
    rq = LocalRequence(TEMPLATES, db=str(tmp_path / "requence.db"))
    rq.start()
    try:
        token, port = rq.access_token, rq.port
        api = Api(token)
        task_id = api.start("echo", "ack me", requireAck=True)
        api.wait_status(task_id, "AWAITING_DELIVERY")
        api.close()
        rq.stop()
        assert not rq.running
        rq.start()
        assert rq.port == port
        assert rq.access_token == token
        api = Api(token)
        assert api.task(task_id)["status"] == "AWAITING_DELIVERY"
        assert api.post(f"/task/ack/{task_id}").status_code == 200
        assert api.task(task_id)["status"] == "SUCCESSFUL"
        assert api.post(f"/task/ack/{task_id}").status_code == 409
        later = api.start("echo", "second life")
        assert api.wait_status(later, "SUCCESSFUL")["result"] == {"input": "second life"}
        api.close()
    finally:
        rq.stop()


def test_running_task_is_interrupted_by_a_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "requence.db")
    gate_key = key()
    seen: Events = []
    ended = threading.Event()
    with LocalRequence(TEMPLATES, db=db) as first:
        api = api_for(first)
        task_id = api.start("gated", {"gate": gate_key})
        started_node(api, task_id)
        response = api.open_stream(f"/task/watch/{task_id}", {"since": None})
        assert response.status_code == 200

        def read() -> None:
            try:
                for event in sseclient.SSEClient(response).events():
                    seen.append((int(event.id), event.event, json.loads(event.data)))
            except requests.RequestException:
                pass
            finally:
                response.close()
                ended.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        wait_until(lambda: len(seen) >= 2, 5, "the watcher to get the history")
        api.close()
    # The stream ends with the server, before any terminal update.
    assert ended.wait(10)
    reader.join(5)
    assert types_of(seen) == ["taskStart", "nodeStart"]
    with LocalRequence(TEMPLATES, db=db) as second:
        api = api_for(second)
        resumed = api.watch(task_id, lastPosition=seen[-1][0])
        assert types_of(resumed) == ["taskError"]
        assert resumed[0][0] > seen[-1][0]
        assert resumed[0][2]["reason"].startswith("interrupted")
        assert resumed[0][2]["requireAck"] is False
        info = api.task(task_id)
        assert info["status"] == "FAILED"
        assert info["statusText"].startswith("interrupted")
        assert types_of(api.watch(task_id)) == ["taskStart", "nodeStart", "taskError"]
        # The gate opening later changes nothing.
        gate(gate_key).set()
        time.sleep(0.1)
        assert stored_types(second, task_id) == ["taskStart", "nodeStart", "taskError"]
        api.close()


def test_pending_task_runs_after_a_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "requence.db")
    gate_key = key()
    with LocalRequence(TEMPLATES, db=db, concurrency=1) as first:
        api = api_for(first)
        blocker = api.start("gated", {"gate": gate_key})
        started_node(api, blocker)
        waiting = api.start("greet", {"name": "Later"}, name="queued")
        time.sleep(0.05)
        assert api.task(waiting)["status"] == "PENDING"
        api.close()
    with LocalRequence(TEMPLATES, db=db, concurrency=2) as second:
        api = api_for(second)
        info = api.wait_status(waiting, "SUCCESSFUL")
        assert info["result"] == {"message": "Hello, Later!"}
        assert info["name"] == "queued"
        events = api.watch(waiting)
        types = types_of(events)
        assert types.count("taskStart") == 1
        assert types[0] == "taskStart"
        assert types[-1] == "taskEnd"
        assert api.task(blocker)["status"] == "FAILED"
        api.close()


# --- leaks --------------------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _one_cycle() -> None:
    with LocalRequence(TEMPLATES, concurrency=1) as rq:
        parts = decode_access_token(rq.access_token)
        response = requests.post(
            f"{parts.base_url}/task/prepare/echo",
            headers={"Authorization": f"Bearer {parts.bearer}", "Connection": "close"},
            timeout=TIMEOUT,
        )
        assert response.status_code == 200, response.text
        response.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_start_stop_a_hundred_times_leaks_no_threads_or_fds() -> None:
    _one_cycle()  # warm-up: lazily created globals
    gc.collect()
    threads, fds = threading.active_count(), _open_fds()
    for _ in range(100):
        _one_cycle()
    gc.collect()
    wait_until(lambda: threading.active_count() <= threads + 2, 5, "threads to end")
    assert threading.active_count() <= threads + 2, [t.name for t in threading.enumerate()]
    assert _open_fds() <= fds + 3, sorted(os.listdir("/proc/self/fd"))


# --- the command line -----------------------------------------------------------------


class Served:
    """``python -m requence_task local serve ...`` in a subprocess, read line by line."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "requence_task", "local", "serve", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, prefix: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line starting {prefix!r}; got {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"output ended before {prefix!r}; got {self.seen}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def rest(self, timeout: float = 5) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
        return self.seen

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture()
def served() -> Iterator[Served]:
    instance = Served("examples/templates.py", "--port", "0")
    yield instance
    instance.kill()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_cli_serves_and_stops_on_signal(served: Served, signum: int) -> None:
    base_line = served.until("Local Requence serving at ")
    match = re.fullmatch(r"Local Requence serving at (http://127\.0\.0\.1:(\d+))", base_line)
    assert match, base_line
    base_url, port = match.group(1), int(match.group(2))
    assert port != 0
    token = served.until("Access token: ").removeprefix("Access token: ").strip()
    parts = decode_access_token(token)
    assert parts.base_url == base_url
    response = requests.post(
        f"{base_url}/task/prepare/my-template",
        headers={"Authorization": f"Bearer {parts.bearer}"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    assert response.json()["finalizeUrl"].startswith(base_url)
    served.process.send_signal(signum)
    assert served.process.wait(10) == 0
    assert "Stopped." in served.rest()
    assert served.process.stderr is not None
    assert token not in served.process.stderr.read()


def test_cli_file_without_templates_exits_2(tmp_path: Path) -> None:
    empty = tmp_path / "nothing.py"
    empty.write_text("x = 1\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "requence_task", "local", "serve", str(empty), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert done.returncode == 2, done
    assert "defines no templates" in done.stderr
    assert str(empty) in done.stderr
    assert "Traceback" not in done.stderr
    assert "serving" not in done.stdout


def test_cli_missing_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.py"
    done = subprocess.run(
        [sys.executable, "-m", "requence_task", "local", "serve", str(missing), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert done.returncode == 2, done
    assert f"no such file: {missing}" in done.stderr
    assert "Traceback" not in done.stderr


# --- logging ------------------------------------------------------------------------


def test_requests_are_logged_without_secrets(
    server: LocalRequence, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="requence_task.local")
    token = server.access_token
    bearer = server.bearer_for("default")
    bodies: list[str] = []

    def keep(response: requests.Response) -> requests.Response:
        bodies.append(response.text)
        return response

    prepared = api.prepare("echo")
    task_id = prepared["taskId"]
    keep(api.post(f"/task/protect/{task_id}"))
    keep(api.finalize(prepared, input={"x": 1}, requireAck=True))
    events = api.watch(task_id)
    keep(api.post(f"/task/ack/{task_id}"))
    keep(api.get(f"/task/{task_id}"))
    keep(api.get("/task/types/python"))
    api.events("/task/watch-all", {"since": None, "lastPosition": events[0][0] - 1}, limit=1)
    page = keep(api.get(f"{server.base_url}/tasks/{task_id}"))
    assert page.status_code == 200
    other = api.start("gated", {"gate": key()})
    keep(api.post(f"/task/abort/{other}", data=b"bye"))
    # Error answers.
    keep(api.post("/task/prepare/no-such-template"))
    keep(api.post(f"/task/ack/{task_id}"))
    keep(requests.post(f"{server.base_url}/task/prepare/echo", timeout=TIMEOUT))
    wrong = keep(
        requests.post(
            f"{server.base_url}/task/prepare/echo",
            headers={"Authorization": f"Bearer {bearer}x"},
            timeout=TIMEOUT,
        )
    )
    assert wrong.status_code == 401
    keep(api.post(prepared["finalizeUrl"], data=b"not json"))

    messages = [record.getMessage() for record in caplog.records]
    expected = [
        r"POST /task/prepare/echo -> 200 \(\d+\.\d ms\)",
        rf"POST /task/protect/{task_id} -> 200 ",
        rf"POST /task/finalize/{task_id} -> 200 ",
        rf"POST /task/watch/{task_id} -> 200 ",
        rf"POST /task/ack/{task_id} -> 200 ",
        rf"GET /task/{task_id} -> 200 ",
        r"GET /task/types/python -> 200 ",
        r"POST /task/watch-all -> 200 ",
        rf"GET /tasks/{task_id} -> 200 ",
        rf"POST /task/abort/{other} -> 200 ",
        r"POST /task/prepare/no-such-template -> 404 ",
        rf"POST /task/ack/{task_id} -> 409 ",
        r"POST /task/prepare/echo -> 401 ",
        rf"POST /task/finalize/{task_id} -> 400 ",
    ]
    for pattern in expected:
        assert any(re.match(pattern, m) for m in messages), (pattern, messages)
    everything = messages + [
        str(record.args) + (record.exc_text or "") for record in caplog.records
    ]
    for secret in (token, bearer):
        assert not any(secret in text for text in everything)
        assert not any(secret in body for body in bodies)
    assert all(record.levelno <= logging.INFO for record in caplog.records), [
        (r.levelname, r.getMessage()) for r in caplog.records if r.levelno > logging.INFO
    ]
