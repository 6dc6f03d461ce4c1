"""One scenario run, in a fresh process: ``python -m benchmarks.scenario NAME --n N``.

It starts the local server in a subprocess (``benchmarks.server``), runs a few
warm-up tasks, then measures the scenario and prints one JSON line:

- ``client_cpu_s``: user+sys CPU of this process (``RUSAGE_SELF``) over the
  measured part only, and ``client_cpu_ms_per_task``;
- ``wall_s``: wall time of the measured part;
- ``peak_threads``: highest ``threading.active_count()`` seen by a sampler
  thread every 10 ms, not counting the sampler itself;
- ``peak_rss_mb``: ``ru_maxrss`` of this process at the end;
- ``server_cpu_s``: the server process's CPU over its whole serving time
  (warm-up included).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .server import TEMPLATE

WARMUP = 5
INPUT = {"n": 1}


class ThreadSampler:
    """Samples ``threading.active_count()`` every ``interval`` seconds."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = threading.active_count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, threading.active_count() - 1)
            self._stop.wait(self.interval)

    def __enter__(self) -> ThreadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the client under test ------------------------------------------------


def _client_run(token: str, n: int, *, results: bool) -> Callable[[int], None]:
    from requence_task import Client, Task

    client = Client(token)

    def run(count: int) -> None:
        tasks = [Task(TEMPLATE, input=INPUT, client=client) for _ in range(count)]
        for task in tasks:
            if results:
                task.result(timeout=120)
            else:
                task.finalized(timeout=120)

    run.close = client.close  # type: ignore[attr-defined]
    return run


# --- the floor: one keep-alive requests.Session ---------------------------


def _floor_run(token: str, n: int, *, results: bool) -> Callable[[int], None]:
    import requests

    from requence_task._token import decode_access_token

    parts = decode_access_token(token)
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {parts.bearer}"
    prepare_url = f"{parts.base_url}/task/prepare/{TEMPLATE}"
    body = {"name": None, "input": INPUT, "priority": 0, "requireAck": False}

    def run(count: int) -> None:
        watch_urls = []
        for _ in range(count):
            prepared = http.post(prepare_url, timeout=30)
            prepared.raise_for_status()
            started = http.post(prepared.json()["finalizeUrl"], json=body, timeout=30)
            started.raise_for_status()
            watch_urls.append(started.json()["urls"]["watch"])
        if results:
            for url in watch_urls:
                with http.post(
                    url,
                    json={"since": None},
                    headers={"Accept": "text/event-stream"},
                    stream=True,
                    timeout=120,
                ) as stream:
                    stream.raise_for_status()
                    for _chunk in stream.iter_content(chunk_size=None):
                        pass

    run.close = http.close  # type: ignore[attr-defined]
    return run


SCENARIOS: dict[str, Callable[..., Callable[[int], None]]] = {
    "create": lambda token, n: _client_run(token, n, results=False),
    "results": lambda token, n: _client_run(token, n, results=True),
    "floor-create": lambda token, n: _floor_run(token, n, results=False),
    "floor-results": lambda token, n: _floor_run(token, n, results=True),
}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_scenario(name: str, n: int, concurrency: int) -> dict[str, Any]:
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.server", "--concurrency", str(concurrency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        token = json.loads(server.stdout.readline())["access_token"]
        run = SCENARIOS[name](token, n)
        run(WARMUP)
        with ThreadSampler() as sampler:
            cpu0, wall0 = _cpu(), time.perf_counter()
            run(n)
            wall = time.perf_counter() - wall0
            cpu = _cpu() - cpu0
        run.close()  # type: ignore[attr-defined]
        server.stdin.close()
        server_cpu = json.loads(server.stdout.readline())["server_cpu_s"]
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return {
        "scenario": name,
        "n": n,
        "client_cpu_s": cpu,
        "client_cpu_ms_per_task": cpu * 1000 / n,
        "wall_s": wall,
        "peak_threads": sampler.peak,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "server_cpu_s": server_cpu,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scenario")
    parser.add_argument("name", choices=sorted(SCENARIOS))
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    print(json.dumps(run_scenario(args.name, args.n, args.concurrency)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
