"""The creation pool sizes itself to the work: two workers to start, more only
while jobs wait on something other than the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from requence_task import _pool
from requence_task._pool import WorkerPool


def _run(pool: WorkerPool, jobs: list[object], timeout: float = 30.0) -> None:
    done = threading.Semaphore(0)
    for job in jobs:
        pool.submit(lambda job=job: (job(), done.release()))  # type: ignore[operator]
    for _ in jobs:
        assert done.acquire(timeout=timeout)


def test_waiting_jobs_grow_the_pool_to_its_bound() -> None:
    pool = WorkerPool(8, name="test-pool")
    try:
        _run(pool, [lambda: time.sleep(0.1)] * 40)
        assert pool.thread_count == 8
    finally:
        pool.close()


def test_the_pool_starts_with_two_workers_and_never_passes_its_bound() -> None:
    pool = WorkerPool(1, name="test-pool")
    try:
        _run(pool, [lambda: time.sleep(0.01)] * 5)
        assert pool.thread_count == 1
    finally:
        pool.close()
    pool = WorkerPool(8, name="test-pool")
    try:
        release = threading.Event()
        started = threading.Semaphore(0)

        def hold() -> None:
            started.release()
            release.wait(10)

        for _ in range(4):  # queued at once, then nothing more comes by
            pool.submit(hold)
        assert started.acquire(timeout=5) and started.acquire(timeout=5)
        # The two running jobs turn long: the pool looks again by itself and
        # starts workers for the two waiting ones, and no more than that.
        assert started.acquire(timeout=5) and started.acquire(timeout=5)
        time.sleep(0.6)
        assert pool.thread_count == 4
        release.set()
    finally:
        pool.close()


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


@pytest.mark.skipif(not _pool._SCHEDSTAT, reason="needs Linux's per-thread schedstat")
def test_cpu_bound_jobs_on_a_loaded_machine_do_not_grow_the_pool() -> None:
    # Other processes keep every core busy: this one runs less than it would. Its
    # jobs are CPU-bound all the same; more workers would only cost more.
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    pool = WorkerPool(8, name="test-pool")
    try:
        time.sleep(0.2)
        for _round in range(3):  # submitted in bursts, as Task() calls come
            _run(pool, [lambda: _spin(0.01)] * 30)
        assert pool.thread_count == 2
    finally:
        pool.close()
        for hog in hogs:
            hog.kill()
            hog.wait(10)
