"""The client in a process's life: ``os.fork()`` with tasks in flight, interpreter
exit with tasks still running or still being created, and logging."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from requence_task import (
    Client,
    RetryPolicy,
    Task,
    TaskAbortedError,
    TaskFailedError,
    Timeouts,
    Update,
)
from requence_task._token import decode_access_token
from requence_task.local import LocalRequence

from ..local.templates_for_tests import TEMPLATES, gate

WAIT = 10.0
CLIENT_LOGGERS = ("requence_task",)  # the client's logger; requence_task.local is the server

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")


def _client(token: str) -> Client:
    return Client(
        token,
        retry=RetryPolicy(budget=5, initial_backoff=0.02, max_backoff=0.2),
        timeouts=Timeouts(connect=2, read=10, stream_inactivity=20),
    )


# --- fork --------------------------------------------------------------------------


def _run_child(child: Any, limit: float = 15.0) -> tuple[int, dict[str, Any]]:
    """Fork; run ``child()`` (returns a JSON-able dict, ``ok`` in it) in the child.
    Returns the child's exit code and its dict. The child never returns to pytest."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(read_end)
            report = child()
            code = 0 if report.get("ok") else 1
        except BaseException:
            report = {"ok": False, "error": traceback.format_exc()}
        try:
            os.write(write_end, json.dumps(report, default=repr).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    chunks: list[bytes] = []
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([read_end], [], [], 0.05)
            if ready:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the forked child hung; it reported {b''.join(chunks)!r}")
    finally:
        os.close(read_end)
    text = b"".join(chunks).decode()
    return os.waitstatus_to_exitcode(status), (json.loads(text) if text else {})


@needs_fork
def test_child_after_fork_gets_fresh_session_and_pool(server: LocalRequence) -> None:
    key = str(uuid.uuid4())
    client = _client(server.access_token)
    try:
        # Used in the parent: a finished task, and gated ones in flight, being watched.
        assert Task("echo", {"warm": 1}, client=client).result(timeout=WAIT).result == {
            "input": {"warm": 1}
        }
        in_flight = [Task("gated", {"gate": key}, client=client) for _ in range(3)]
        seen: list[list[Update]] = [[] for _ in in_flight]
        for task, sink in zip(in_flight, seen, strict=True):
            threading.Thread(
                target=lambda t=task, s=sink: s.extend(t.updates(timeout=30)), daemon=True
            ).start()
        deadline = time.monotonic() + WAIT
        while sum(bool(s) for s in seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert all(seen), "the parent's tasks did not start"
        parent_session = client._transport.session  # kept alive across the fork
        parent_threads = client._pool.thread_count

        def child() -> dict[str, Any]:
            task = Task("echo", {"child": os.getpid()}, client=client)
            result = task.result(timeout=WAIT).result
            session = client._transport.session
            return {
                "ok": result == {"input": {"child": os.getpid()}},
                "result": result,
                "same_session": session is parent_session,
                "session_id": id(session),
                "pool_threads": client._pool.thread_count,
            }

        code, report = _run_child(child)
        assert report.get("error") is None, report.get("error")
        assert report["ok"] is True, report
        assert code == 0
        assert report["same_session"] is False
        assert report["session_id"] != id(parent_session)
        assert report["pool_threads"] == 1  # a fresh pool: one worker for one task
        assert parent_threads >= 1
        # The parent is untouched: same session, and its tasks complete.
        assert client._transport.session is parent_session
        gate(key).set()
        for task in in_flight:
            assert task.result(timeout=WAIT).result == {"opened": key}
        assert Task("echo", {"after": 1}, client=client).result(timeout=WAIT).result == {
            "input": {"after": 1}
        }
        deadline = time.monotonic() + WAIT
        while any(s[-1].type != "taskEnd" for s in seen) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [[u.type for u in s] for s in seen] == [
            ["taskStart", "nodeStart", "nodeUpdate", "nodeEnd", "taskEnd"]
        ] * 3
    finally:
        gate(key).set()
        client.close()


@needs_fork
@pytest.mark.parametrize("which", ["transport", "pool", "client"])
def test_fork_while_another_thread_holds_a_client_lock(server: LocalRequence, which: str) -> None:
    """The client's locks are each held for a moment by ordinary work: the
    transport's by every request (``Transport.session``), the pool's by every job
    a worker starts or ends, the client's by every stream it tracks. A fork at
    such a moment copies the lock, locked, into the child, where no thread will
    ever release it. The child must still work (a fresh lock, not a wait)."""
    client = _client(server.access_token)
    lock = {
        "transport": client._transport._lock,
        "pool": client._pool._lock,
        "client": client._lock,
    }[which]
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with lock:
            holding.set()
            release.wait(WAIT)

    try:
        assert Task("echo", 1, client=client).result(timeout=WAIT).result == {"input": 1}
        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        assert holding.wait(WAIT)
        try:

            def child() -> dict[str, Any]:
                result = Task("echo", 2, client=client).result(timeout=3).result
                return {"ok": result == {"input": 2}}

            try:
                code, report = _run_child(child, limit=4)
            except AssertionError as err:
                pytest.fail(f"the child deadlocked in os.fork() (the after-fork handler): {err}")
        finally:
            release.set()
            holder.join(WAIT)
        assert report.get("error") is None, report["error"]
        assert report == {"ok": True}
        assert code == 0
    finally:
        client.close()


# --- interpreter exit --------------------------------------------------------------

_MANY_TASKS = textwrap.dedent(
    """
    import sys, time
    from requence_task import Client, Task

    token, key = sys.argv[1], sys.argv[2]
    seen = []
    # Watched, and running (it has a worker first): its stream is open at exit.
    watched = Task("gated", {"gate": key}, access_token=token, on_update=seen.append)
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:  # taskStart, nodeStart
        time.sleep(0.01)
    assert [u.type for u in seen] == ["taskStart", "nodeStart"], seen
    client = Client(token)  # never closed
    tasks = [Task("gated", {"gate": key}, client=client) for _ in range(25)]
    tasks += [Task("gated", {"gate": key}, access_token=token) for _ in range(25)]
    tasks[0].finalized(timeout=10)
    sys.stdout.write(repr(time.time()))
    """
)

_STILL_CREATING = textwrap.dedent(
    """
    import sys, time
    from requence_task import Client, Task

    token = sys.argv[1]
    client = Client(token)
    tasks = [Task("echo", {"i": i}, client=client) for i in range(20)]
    tasks += [Task("echo", {"i": i}, access_token=token) for i in range(5)]
    seen = []
    Task("echo", access_token=token, on_update=seen.append)
    time.sleep(0.2)  # prepares are on the wire, each held for 1 s by the server
    sys.stdout.write(repr(time.time()))
    """
)


def _run_script(script: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``script``; returns the process and how long after its last line it exited."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REQUENCE_TASK_ACCESS_TOKEN", "REQUENCE_ACCESS_TOKEN")
    }
    env["PYTHONWARNINGS"] = "default"  # show, don't hide, warnings at exit
    process = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    ended = time.time()
    try:
        script_end = float(process.stdout)
    except ValueError:
        raise AssertionError(
            f"the script failed (exit {process.returncode}): {process.stdout!r} {process.stderr}"
        ) from None
    return process, ended - script_end


def test_exit_not_held_up_by_running_and_watched_tasks(server: LocalRequence) -> None:
    key = str(uuid.uuid4())
    try:
        started = time.monotonic()
        process, exit_delay = _run_script(_MANY_TASKS, server.access_token, key)
        elapsed = time.monotonic() - started
    finally:
        gate(key).set()
    assert process.stderr == ""
    assert process.returncode == 0
    assert exit_delay < 1.0
    assert elapsed < 5


def test_exit_not_held_up_by_tasks_still_being_created() -> None:
    with LocalRequence(TEMPLATES) as rq:
        rq.faults.latency = 1.0
        started = time.monotonic()
        process, exit_delay = _run_script(_STILL_CREATING, rq.access_token)
        elapsed = time.monotonic() - started
        rq.faults.clear()
    assert process.stderr == ""
    assert process.returncode == 0
    assert exit_delay < 0.8  # not the 1 s each pending prepare still needs
    assert elapsed < 5


# --- logging -----------------------------------------------------------------------


@pytest.fixture()
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="requence_task")
    yield caplog


def test_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("requence_task").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_logging_of_a_full_run(
    server: LocalRequence,
    debug_logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    key = str(uuid.uuid4())
    token = server.access_token
    bearer = decode_access_token(token).bearer
    try:
        with _client(token) as client:
            greet = Task("greet", {"name": "Ada"}, client=client, priority=7)
            assert [u.type for u in greet][-1] == "taskEnd"
            assert greet.result(timeout=WAIT).result == {"message": "Hello, Ada!"}
            failing = Task("fail", {"name": "x"}, client=client)
            with pytest.raises(TaskFailedError):
                failing.result(timeout=WAIT)
            gated = Task("gated", {"gate": key}, client=client)
            gated.protect(timeout=WAIT)
            gated.abort("stop it", timeout=WAIT)
            with pytest.raises(TaskAbortedError):
                gated.result(timeout=WAIT)
            acked = Task("echo", 1, client=client, require_ack=True)
            assert acked.result(timeout=WAIT).result == {"input": 1}
    finally:
        gate(key).set()

    records = debug_logs.records
    client_records = [r for r in records if r.name in CLIENT_LOGGERS]
    assert client_records, "the client logged nothing at DEBUG: the check below would be empty"
    assert [
        (r.name, r.levelname, r.getMessage())
        for r in client_records
        if r.levelno >= logging.WARNING
    ] == []
    for record in records:
        text = " ".join(
            [record.getMessage(), repr(record.args), record.exc_text or "", record.stack_info or ""]
        )
        assert bearer not in text, (record.name, record.getMessage())
        assert token not in text, (record.name, record.getMessage())
    out, err = capfd.readouterr()
    assert out == ""
    assert err == ""
