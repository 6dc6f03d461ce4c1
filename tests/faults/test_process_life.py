"""The client over a process's life (issue 5): interpreter exit with 1,000 tasks
in flight, 10,000 tasks created and awaited in one process without growth in
threads, sockets or memory, and ``os.fork()`` with tasks in flight.

Covered in tests/client/test_process.py and not repeated: a fork (inside
pytest) while the parent's started tasks are watched, and a fork while another
thread holds one of the client's locks; exit with 50 running or still-created
tasks. Here the fork runs in a script of its own, so that the child also ends
the ordinary way (interpreter shutdown, not ``os._exit``), with tasks that were
still being created when it forked.
"""

from __future__ import annotations

import concurrent.futures
import gc
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from requence_task import Client, Task, TaskResult
from requence_task.local import LocalRequence

from ..client.conftest import wait_until
from ..local.templates_for_tests import TEMPLATES, gate

ROOT = Path(__file__).resolve().parents[2]  # the repository: `tests` is importable from here
MONITOR = "requence-task-monitor"


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REQUENCE_TASK_ACCESS_TOKEN", "REQUENCE_ACCESS_TOKEN")
    }
    env["PYTHONWARNINGS"] = "default"  # show, don't hide, warnings at exit
    return env


def _run(script: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=ROOT,
    )


# --- interpreter exit with 1,000 tasks in flight -------------------------------------------------

_THOUSAND = textwrap.dedent(
    """
    import sys, threading, time
    from requence_task import Client, Task

    def started(task):
        try:
            task.finalized(timeout=0)
        except Exception:  # not yet (TaskTimeoutError)
            return False
        return True

    token, key = sys.argv[1], sys.argv[2]
    client = Client(token)  # never closed
    seen = []
    tasks = []
    for i in range(1000):
        if i % 20 == 0:  # 50 tasks watched through on_update (a monitor thread each)
            tasks.append(Task("gated", {"gate": key}, client=client, on_update=seen.append))
        else:
            tasks.append(Task("gated", {"gate": key}, client=client))
    # 20 user threads wait for results (daemons: a user's own thread that waits
    # for ever would rightly hold up exit; the SDK's must not).
    for task in tasks[1:41:2]:
        threading.Thread(target=task.result, daemon=True).start()
    # Some run and are watched (4 workers on the server); most are still being
    # created or wait in the queue: wait until streams are open.
    deadline = time.monotonic() + 20
    while len(seen) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(seen) >= 8, [u.type for u in seen]
    count = sum(started(t) for t in tasks)
    sys.stdout.write(f"{time.time()!r} {count}")
    """
)


def test_exit_with_1000_tasks_in_flight() -> None:
    key = uuid.uuid4().hex
    gate(key)
    with LocalRequence(TEMPLATES, concurrency=4) as rq:
        try:
            started = time.monotonic()
            process = _run(_THOUSAND, rq.access_token, key, timeout=60)
            elapsed = time.monotonic() - started
            ended = time.time()
        finally:
            gate(key).set()
        assert process.stderr == ""
        assert process.returncode == 0
        script_end, created = (float(x) for x in process.stdout.split())
        exit_delay = ended - script_end
        assert 0 < created < 1000, f"{created} of 1,000 tasks started: not 'in flight'"
        assert exit_delay < 1.0, f"exit took {exit_delay:.2f} s after the script's last line"
        assert elapsed < 10, f"the script ran {elapsed:.1f} s"


# --- 10,000 tasks in one process -----------------------------------------------------------------

_SERVER = textwrap.dedent(
    """
    import sys
    from requence_task.local import LocalRequence
    from tests.local.templates_for_tests import TEMPLATES

    with LocalRequence(TEMPLATES, concurrency=8) as rq:
        sys.stdout.write(rq.access_token + "\\n")
        sys.stdout.flush()
        sys.stdin.read()  # until the test closes stdin
    """
)


@pytest.fixture()
def server_process() -> Iterator[str]:
    """A LocalRequence(TEMPLATES, concurrency=8) in a process of its own; yields its
    token. The test process then holds only the client: its threads, sockets and
    memory are the client's alone (and the two share no GIL)."""
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None and process.stdin is not None
        token = process.stdout.readline().strip()
        assert token, "the server process did not start"
        yield token
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:  # closed while we looked
            pass
    return count


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def _monitors() -> int:
    return sum(1 for t in threading.enumerate() if t.name == MONITOR)


def _run_batches(client: Client, start: int, count: int, batch: int) -> float:
    """Create ``batch`` echo tasks, await them all (``concurrent.futures.wait`` on
    ``t.future``), check each result, drop them; until ``count``. Returns seconds."""
    began = time.monotonic()
    for first in range(start, start + count, batch):
        tasks = [Task("echo", {"i": i}, client=client) for i in range(first, first + batch)]
        _done, pending = concurrent.futures.wait([t.future for t in tasks], timeout=60)
        assert not pending, f"{len(pending)} tasks not done within 60 s"
        for offset, task in enumerate(tasks):
            result = task.result(timeout=0)
            assert isinstance(result, TaskResult)
            assert result.result == {"input": {"i": first + offset}}
        del tasks, task, result
    return time.monotonic() - began


class _Usage:
    def __init__(self) -> None:
        gc.collect()
        self.threads = threading.active_count()
        self.sockets = _sockets()
        self.objects = len(gc.get_objects())
        self.rss_kib = _rss_kib()

    def __repr__(self) -> str:
        return (
            f"threads={self.threads} sockets={self.sockets} objects={self.objects} "
            f"rss={self.rss_kib / 1024:.1f} MiB"
        )


def _settle() -> None:
    """Let the monitor threads of finished tasks end (they end just after the result)."""
    wait_until(lambda: _monitors() == 0, 10, "the monitor threads to end")
    gc.collect()


@pytest.mark.timeout(400)
def test_10000_tasks_without_growth(server_process: str, record_property: Any) -> None:
    """10,000 echo tasks on Client(max_workers=8), created and awaited 500 at a time
    (``concurrent.futures.wait`` on ``t.future``), in a client process of its own
    (this test process holds servers, browsers and the rest of the suite, whose
    memory would blur the client's).

    After they finish, compared with the state after a warm-up of 200 tasks run
    the same way (tolerances): threads not more, but for the creation pool's
    workers (it grows to at most 8 as the work asks, and they stay; the shared
    stream's thread ends); open sockets at most 24 more (the keep-alive
    pool holds up to max_workers + 16 = 24 idle connections, a different number
    at each moment; a leak would be thousands); gc-tracked objects at most 1,000
    more (a leak of one object per task would be 10,000); resident memory
    (VmRSS) at most 16 MiB more (500 handles alive at once raise the allocator's
    high-water mark above that of the 200 of the warm-up). So that a small leak
    per task still shows, RSS after all 10,000 must also be within 4 MiB of RSS
    after the first 2,000 (a leak of 0.5 KiB per task would add 4 MiB over the
    other 8,000).
    """
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys\n"
            "from tests.faults.test_process_life import _soak\n"
            "print(json.dumps(_soak(sys.argv[1])))",
            server_process,
        ],
        capture_output=True,
        text=True,
        timeout=380,
        env=_env(),
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    warm, part, after = found["warm"], found["part"], found["after"]
    summary = found["summary"]
    record_property("tasks_10000", summary)
    sys.stderr.write(summary + "\n")  # shown with -s or on failure
    pool, warm_pool = found["pool_threads"], found["warm_pool_threads"]
    assert warm_pool <= pool <= 8
    assert (
        after["threads"] - pool <= warm["threads"] - warm_pool,
        after["sockets"] <= warm["sockets"] + 24,
        after["objects"] <= warm["objects"] + 1_000,
        after["rss_kib"] <= warm["rss_kib"] + 16 * 1024,
        after["rss_kib"] <= part["rss_kib"] + 4 * 1024,
    ) == (True, True, True, True, True), summary


def _soak(token: str) -> dict[str, Any]:
    """The client's side of the 10,000-task test (run in a process of its own)."""
    batch, total, first_part = 500, 10_000, 2_000
    with Client(token, max_workers=8) as client:
        _run_batches(client, 0, 200, 200)
        _settle()
        warm = _Usage()
        warm_pool_threads = client._pool.thread_count
        took = _run_batches(client, 200, first_part, batch)
        _settle()
        part = _Usage()
        took += _run_batches(client, 200 + first_part, total - first_part, batch)
        _settle()
        after = _Usage()
        pool_threads = client._pool.thread_count
    summary = (
        f"10,000 tasks in {took:.1f} s ({total / took:.0f}/s); warm-up: {warm}; "
        f"after 2,000: {part}; after 10,000: {after}"
    )
    return {
        "summary": summary,
        "pool_threads": pool_threads,
        "warm_pool_threads": warm_pool_threads,
        "warm": vars(warm),
        "part": vars(part),
        "after": vars(after),
    }


def test_many_awaited_tasks_share_one_stream(
    server: LocalRequence, caplog: pytest.LogCaptureFixture
) -> None:
    """100 gated tasks awaited at once are followed over the client's one shared
    stream: no socket, no thread per task (the pool keeps max_workers + 16 = 24
    connections), no WARNING from any logger (urllib3 logs "Connection pool is
    full, discarding connection" when streams outgrow it), and every result
    comes once the gate opens."""
    caplog.set_level(logging.WARNING)
    key = uuid.uuid4().hex
    gate(key)
    try:
        with Client(server.access_token, max_workers=8) as client:
            sockets, threads = _sockets(), threading.active_count()
            tasks = [Task("gated", {"gate": key}, client=client) for _ in range(100)]
            futures = [t.future for t in tasks]  # all 100 awaited
            for task in tasks:
                task.finalized(timeout=10)
            wait_until(lambda: client._follower.shared_open, 10, "the shared stream")
            time.sleep(0.3)
            held = (_sockets() - sockets, threading.active_count() - threads)
            gate(key).set()
            _done, pending = concurrent.futures.wait(futures, timeout=30)
            assert not pending
            assert {t.result(timeout=0).result["opened"] for t in tasks} == {key}
            # 8 creating workers + the shared stream's thread, and their connections
            # (both ends: the server runs in this process).
            assert held[0] <= 2 * (8 + 1) and held[1] <= 8 + 1, held
            del tasks, futures
            _settle()
            assert _sockets() <= sockets + 24
    finally:
        gate(key).set()
    noise = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert noise == [], f"{len(noise)} warnings, the first: {noise[:1]}"


# --- os.fork() with tasks in flight --------------------------------------------------------------

_FORK = textwrap.dedent(
    """
    import json, os, sys, warnings
    from requence_task import Client, RetryPolicy, Task, TaskTimeoutError, Timeouts

    # Python 3.12+ warns on every fork of a process with threads; that is Python's
    # notice about fork itself, not the SDK's noise.
    warnings.filterwarnings(
        "ignore", message=r".*fork\\(\\) may lead to deadlocks", category=DeprecationWarning
    )
    token = sys.argv[1]
    client = Client(token, retry=RetryPolicy(budget=5, initial_backoff=0.02),
                    timeouts=Timeouts(connect=2, read=10, stream_inactivity=20))
    warm = Task("echo", {"warm": 1}, client=client).result(timeout=10).result
    assert warm == {"input": {"warm": 1}}
    watched = Task("echo", {"watched": 1}, client=client)
    watched.finalized(timeout=10)
    iterator = iter(watched)  # its monitor thread is running at the fork
    in_flight = [Task("echo", {"parent": i}, client=client) for i in range(20)]
    parent_session = client._transport.session
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        report = {"side": "child", "pid": os.getpid()}
        own = Task("echo", {"child": os.getpid()}, client=client)
        report["own"] = own.result(timeout=10).result == {"input": {"child": os.getpid()}}
        report["session_is_new"] = client._transport.session is not parent_session
        report["pool_threads"] = client._pool.thread_count
        # A handle of the parent's, still being created at the fork: never ours.
        try:
            in_flight[-1].result(timeout=1)
            report["parent_handle"] = "result"
        except TaskTimeoutError:
            report["parent_handle"] = "timeout"
        except Exception as err:
            report["parent_handle"] = type(err).__name__
        sys.stdout.write(json.dumps(report) + "\\n")
        sys.stdout.flush()
        # and the child ends the ordinary way: interpreter shutdown
    else:
        results = [t.result(timeout=10).result for t in in_flight]
        ok = results == [{"input": {"parent": i}} for i in range(20)]
        types = [u.type for u in iterator]
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(json.dumps({
            "side": "parent",
            "parent_tasks": ok,
            "watched": types,
            "child_exit": os.waitstatus_to_exitcode(status),
            "parent_threads_after": client._pool.thread_count,
        }) + "\\n")
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_fork_with_tasks_being_created(server: LocalRequence) -> None:
    server.faults.latency = 0.05  # every request takes a moment: creation is mid-way at the fork
    started = time.monotonic()
    process = _run(_FORK, server.access_token, timeout=60)
    elapsed = time.monotonic() - started
    server.faults.clear()
    assert process.stderr == ""
    assert process.returncode == 0
    lines = [json.loads(line) for line in process.stdout.splitlines()]
    by_side = {line["side"]: line for line in lines}
    assert set(by_side) == {"parent", "child"}, process.stdout
    child, parent = by_side["child"], by_side["parent"]
    assert parent["parent_tasks"] is True
    assert parent["watched"] == ["taskStart", "nodeStart", "nodeUpdate", "nodeEnd", "taskEnd"]
    assert parent["child_exit"] == 0
    assert child["own"] is True
    assert child["session_is_new"] is True
    assert child["pool_threads"] == 1
    assert elapsed < 15
    # What a parent's handle does in the child (documented, not promised by the issue).
    assert child["parent_handle"] in ("timeout", "result")
