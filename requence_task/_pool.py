"""A small bounded pool of daemon threads, sized to the work.

``concurrent.futures.ThreadPoolExecutor`` joins its workers at interpreter
exit, so a script that ends with tasks still being created would wait for
them; the SDK promises never to hold up exit. These workers are daemons,
started on demand up to ``max_workers``, and replaced after ``fork``.

More threads only help while the jobs wait on the network. When they are
CPU-bound (a fast server: most of a creation is the client's own Python)
extra threads only hand the GIL back and forth, which costs CPU on every
switch. So the pool starts with two workers and adds one only when a job is
waiting and either the process is not busy on the CPU (over the last moments
its threads ran, or waited for a CPU to run on, under ``_BUSY`` of one core:
so the workers are waiting on the network) or a running job has taken over
``_LONG`` seconds (a slow upload must not hold up the jobs behind it). When
it declines with jobs waiting, a one-shot timer looks again ``_LONG``
seconds later.

The time spent waiting for a CPU matters on a loaded machine: there the
process runs less than it would, which its CPU time alone would take for
workers waiting on the network (and more workers then cost the most). Linux
tells it per thread (``/proc/self/task/*/schedstat``); elsewhere the pool
goes by the process's CPU time.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable

from ._errors import ClientClosedError

log = logging.getLogger("requence_task")

_STOP = object()
_FIRST = 2  # workers started without a measure of the work
_BUSY = 0.75  # the process's CPU share of one core above which a worker more does not help
_LONG = 0.25  # a job running longer than this lets another worker start anyway
_WINDOW = 0.05  # seconds over which the process's CPU share is measured
_TASKS = "/proc/self/task"
_SCHEDSTAT = os.path.exists("/proc/self/schedstat")


def _cpu_demand() -> dict[str, int]:
    """Nanoseconds each thread of this process has run or waited to run on a CPU
    (on Linux, from their schedstat; elsewhere the process's CPU time, as one)."""
    if _SCHEDSTAT:
        try:
            tids = os.listdir(_TASKS)
        except OSError:
            tids = []
        found = {}
        for tid in tids:
            try:
                with open(f"{_TASKS}/{tid}/schedstat", "rb") as stat:
                    ran, waited = stat.read().split()[:2]
                found[tid] = int(ran) + int(waited)
            except (OSError, ValueError):
                continue  # a thread that just ended
        if found:
            return found
    return {"": time.process_time_ns()}


def _demanded(before: dict[str, int], after: dict[str, int]) -> float:
    """Seconds of CPU demand between two readings (threads that ended meanwhile
    take their time with them: the ones in both, and the new ones, count)."""
    return sum(max(ns - before.get(tid, 0), 0) for tid, ns in after.items()) / 1e9


class WorkerPool:
    """Runs submitted callables on at most ``max_workers`` daemon threads."""

    def __init__(self, max_workers: int, *, name: str) -> None:
        self.max_workers = max_workers
        self._name = name
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False
        self._pid = os.getpid()
        # When each running job started (monotonic), by worker.
        self._running: dict[int, float] = {}
        # The process's CPU time at the start of the current window, and its share.
        self._window = (time.monotonic(), _cpu_demand())
        self._recheck: threading.Timer | None = None
        self._busy = 1.0  # until measured: two workers, and more once they are seen to wait

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job``; it runs on a worker thread. Exceptions are logged."""
        with self._lock:
            if self._closed:
                raise ClientClosedError("The requence_task client was closed.")
            if self._pid != os.getpid():
                self._reset_locked()
            self._queue.put(job)
            self._grow_locked(time.monotonic())

    def _grow_locked(self, now: float, *, every_waiting: bool = False) -> None:
        """Start a worker (``every_waiting``: one per waiting job) if a job
        waits and one more would help."""
        count = len(self._threads)
        waiting = self._queue.qsize() - self._idle
        if waiting <= 0 or count >= self.max_workers:
            return
        if count >= _FIRST:
            self._measure_locked(now)
            if self._busy >= _BUSY and not any(
                now - began > _LONG for began in self._running.values()
            ):
                # Look again once the running jobs could be long: nothing else
                # may come by (every job queued at once, every one stalled).
                if self._recheck is None and not self._closed:
                    self._recheck = threading.Timer(_LONG, self._look_again)
                    self._recheck.daemon = True
                    self._recheck.start()
                return
        for _ in range(min(waiting, self.max_workers - count) if every_waiting else 1):
            thread = threading.Thread(
                target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _look_again(self) -> None:
        with self._lock:
            self._recheck = None
            if not self._closed and self._pid == os.getpid():
                self._grow_locked(time.monotonic(), every_waiting=True)

    def _measure_locked(self, now: float) -> None:
        began, cpu_then = self._window
        if now - began < _WINDOW:
            return
        cpu = _cpu_demand()
        if now - began <= 4 * _WINDOW:  # an older window says nothing of this moment
            self._busy = _demanded(cpu_then, cpu) / (now - began)
        self._window = (now, cpu)

    def _work(self) -> None:
        work_queue = self._queue
        me = threading.get_ident()
        while True:
            with self._lock:
                self._idle += 1
            job = work_queue.get()
            with self._lock:
                self._idle -= 1
                if job is _STOP:
                    return
                self._running[me] = time.monotonic()
            try:
                job()  # type: ignore[operator]
            except BaseException:  # never lose a worker to a job's error
                log.exception("a requence_task background job failed")
            del job  # an idle worker must not keep the last job's task alive
            with self._lock:
                del self._running[me]
                self._grow_locked(time.monotonic())

    @property
    def thread_count(self) -> int:
        with self._lock:
            return sum(t.is_alive() for t in self._threads)

    def _reset_locked(self) -> None:
        # After fork only the forking thread exists in the child: start afresh.
        self._queue = queue.SimpleQueue()
        self._threads = []
        self._idle = 0
        self._running = {}
        self._recheck = None
        self._pid = os.getpid()

    def reset_after_fork(self) -> None:
        # Another thread may have held the lock at fork: the child gets a new one.
        self._lock = threading.Lock()
        self._reset_locked()

    def close(self, timeout: float = 1.0) -> None:
        """Stop taking jobs; workers end after the jobs already queued."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._recheck is not None:
                self._recheck.cancel()
                self._recheck = None
            threads = list(self._threads)
            for _ in threads:
                self._queue.put(_STOP)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
