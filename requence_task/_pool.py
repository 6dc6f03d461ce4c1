"""A small bounded pool of daemon threads.

``concurrent.futures.ThreadPoolExecutor`` joins its workers at interpreter
exit, so a script that ends with tasks still being created would wait for
them; the SDK promises never to hold up exit. These workers are daemons,
started on demand up to ``max_workers``, and replaced after ``fork``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable

from ._errors import ClientClosedError

log = logging.getLogger("requence_task")

_STOP = object()


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

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job``; it runs on a worker thread. Exceptions are logged."""
        with self._lock:
            if self._closed:
                raise ClientClosedError("The requence_task client was closed.")
            if self._pid != os.getpid():
                self._reset_locked()
            self._queue.put(job)
            if self._queue.qsize() > self._idle and len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _work(self) -> None:
        work_queue = self._queue
        while True:
            with self._lock:
                self._idle += 1
            job = work_queue.get()
            with self._lock:
                self._idle -= 1
            if job is _STOP:
                return
            try:
                job()  # type: ignore[operator]
            except BaseException:  # never lose a worker to a job's error
                log.exception("a requence_task background job failed")
            del job  # an idle worker must not keep the last job's task alive

    @property
    def thread_count(self) -> int:
        with self._lock:
            return sum(t.is_alive() for t in self._threads)

    def _reset_locked(self) -> None:
        # After fork only the forking thread exists in the child: start afresh.
        self._queue = queue.SimpleQueue()
        self._threads = []
        self._idle = 0
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
            threads = list(self._threads)
            for _ in threads:
                self._queue.put(_STOP)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
