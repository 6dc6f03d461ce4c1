"""One scenario run, in a fresh process: ``python -m benchmarks.scenario NAME --n N``.

It starts the local server in a subprocess (``benchmarks.server``), runs a few
warm-up tasks, then measures the scenario and prints one JSON line. The
figures (see ``_measure.measured``):

- ``client_cpu_s``: user+sys CPU of this process (``RUSAGE_SELF``, all
  threads) over the measured part only, less the sampler thread's own CPU;
  and ``client_cpu_ms_per_task``;
- ``wall_s``: wall time of the measured part;
- ``peak_threads``: highest ``threading.active_count()`` seen by the sampler
  (every 20 ms; 50 ms with sockets), not counting the sampler itself;
- ``peak_sockets``: (in-flight) highest number of socket descriptors in
  ``/proc/self/fd``;
- ``peak_rss_mb``: ``ru_maxrss`` of this process at the end;
- ``server_cpu_s``: the server process's CPU over the measured part.

The client under test is driven through its public API only (``Client``,
``Task``, ``finalized()``, ``result()``, iteration), so that the harness
keeps working whatever the client does inside.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ._measure import ServerProcess, measured, watchdog

# Not ``from .server import ...``: that would import requence_task.local here.
TEMPLATE = "bench"
HOLD_TEMPLATE = "hold"
STREAM_TEMPLATE = "stream"
FILE_TEMPLATE = "keep-file"
GATE_TEMPLATE = "gate"
WARMUP = 5
INPUT = {"n": 1}
HOLD_SECONDS = 2.0
LATENCY = 0.02
WAIT = 300.0  # every single wait of a scenario ends by then
# The server's workers in memory: that many gate tasks run, the rest wait in its
# queue, all of them in flight to the client. With a worker per task (10,013)
# the release woke 10,000 threads at once: a load average of 4,500 on 2 cores,
# and the server did not answer the release within 30 s; where it did, the
# client's figures were those of 64 or 4 workers (216 MB peak, 10 threads).
MEMORY_WORKERS = 64
ENDED = {"SUCCESSFUL", "FAILED", "STOPPED", "AWAITING_DELIVERY"}

Run = Callable[[int], None]


class Context:
    """What a scenario gets: the server and its options."""

    def __init__(self, server: ServerProcess, bearer: str, args: argparse.Namespace) -> None:
        self.server = server
        self.token = server.access_token
        self.base_url = server.base_url
        self.bearer = bearer
        self.args = args


# --- the client under test ------------------------------------------------


def _client(ctx: Context, template: str, task_input: Any, *, results: bool) -> tuple[Run, Any]:
    from requence_task import Client, Task

    client = Client(ctx.token)

    def run(count: int) -> None:
        tasks = [Task(template, input=task_input, client=client) for _ in range(count)]
        for task in tasks:
            if results:
                task.result(timeout=WAIT)
            else:
                task.finalized(timeout=WAIT)

    return run, client.close


# --- the floor: one keep-alive requests.Session ---------------------------


def _session(ctx: Context) -> Any:
    import requests

    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {ctx.bearer}"
    return http


def _floor_create(ctx: Context, http: Any, template: str, task_input: Any) -> str:
    """Prepare and finalize one task; returns its watch URL."""
    body = {"name": None, "input": task_input, "priority": 0, "requireAck": False}
    prepared = http.post(f"{ctx.base_url}/task/prepare/{template}", timeout=30)
    prepared.raise_for_status()
    started = http.post(prepared.json()["finalizeUrl"], json=body, timeout=30)
    started.raise_for_status()
    watch: str = started.json()["urls"]["watch"]
    return watch


def _floor(ctx: Context, template: str, task_input: Any, *, results: bool) -> tuple[Run, Any]:
    http = _session(ctx)

    def run(count: int) -> None:
        watch_urls = [_floor_create(ctx, http, template, task_input) for _ in range(count)]
        if results:
            for url in watch_urls:
                with http.post(
                    url,
                    json={"since": None},
                    headers={"Accept": "text/event-stream"},
                    stream=True,
                    timeout=(30, WAIT),
                ) as stream:
                    stream.raise_for_status()
                    for _chunk in stream.iter_content(chunk_size=None):
                        pass

    return run, http.close


# --- scenarios --------------------------------------------------------------


def _standard(factory: Callable[..., tuple[Run, Any]], **kwargs: Any) -> Callable[..., Any]:
    """Warm up, then measure ``run(n)`` with the standard figures."""

    def scenario(ctx: Context) -> dict[str, Any]:
        run, close = factory(ctx, **kwargs)
        sockets = ctx.args.sockets
        try:
            run(WARMUP)
            cpu0 = ctx.server.cpu()
            figures = measured(run, ctx.args.n, interval=0.05 if sockets else 0.02, sockets=sockets)
            figures["server_cpu_s"] = ctx.server.cpu() - cpu0
        finally:
            close()
        return figures

    return scenario


def _hold_input() -> dict[str, float]:
    return {"seconds": HOLD_SECONDS}


def _ended_stream_task(ctx: Context, n: int) -> tuple[str, str, float]:
    """A task of ``stream`` with ``n`` node updates, created over plain HTTP and
    awaited to its end by polling: (its id, its watch URL, seconds it took)."""
    http = _session(ctx)
    try:
        body = {"name": None, "input": {"n": n}, "priority": 0, "requireAck": False}
        prepared = http.post(f"{ctx.base_url}/task/prepare/{STREAM_TEMPLATE}", timeout=30)
        prepared.raise_for_status()
        task_id = prepared.json()["taskId"]
        started = http.post(prepared.json()["finalizeUrl"], json=body, timeout=30)
        started.raise_for_status()
        watch_url = started.json()["urls"]["watch"]
        generated0 = time.perf_counter()
        deadline = time.monotonic() + WAIT * 2
        while True:
            status = http.get(f"{ctx.base_url}/task/{task_id}", timeout=30)
            status.raise_for_status()
            if status.json()["status"] in ENDED:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stream task did not end within {WAIT * 2:.0f} s")
            time.sleep(0.25)
        generated = time.perf_counter() - generated0
    finally:
        http.close()
    return task_id, watch_url, generated


def stream_scenario(ctx: Context) -> dict[str, Any]:
    """One task with N node updates, read after it ended: ours vs sseclient-py."""
    import requests
    import sseclient

    from requence_task import Client, Task

    n, rounds = ctx.args.n, ctx.args.rounds
    task_id, watch_url, generated = _ended_stream_task(ctx, n)
    expected = n + 4  # taskStart, nodeStart, n x nodeUpdate, nodeEnd, taskEnd

    def baseline(_count: int) -> None:
        seen = 0
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {ctx.bearer}"
            response = session.post(
                watch_url,
                json={"since": None},
                headers={"Accept": "text/event-stream"},
                stream=True,
                timeout=(30, 60),
            )
            response.raise_for_status()
            for event in sseclient.SSEClient(response).events():
                json.loads(event.data)
                seen += 1
            response.close()
        if seen != expected:
            raise AssertionError(f"sseclient-py read {seen} events, expected {expected}")

    client = Client(ctx.token)

    def ours(_count: int) -> None:
        task = Task.from_id(task_id, client=client)
        seen = sum(1 for _update in task.updates(timeout=60))
        if seen != expected:
            raise AssertionError(f"requence_task read {seen} updates, expected {expected}")

    results: dict[str, list[dict[str, Any]]] = {"ours": [], "baseline": []}
    try:
        for _round in range(rounds):  # alternate, so that noise hits both alike
            results["baseline"].append(measured(baseline, expected))
            results["ours"].append(measured(ours, expected))
    finally:
        client.close()

    def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
        # The median round (by wall time) of this process.
        return sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]

    mine, base = best(results["ours"]), best(results["baseline"])
    return {
        "n": n,
        "updates": expected,
        "generate_s": generated,
        "updates_per_s": expected / mine["wall_s"],
        "baseline_updates_per_s": expected / base["wall_s"],
        "client_cpu_us_per_update": mine["client_cpu_s"] * 1e6 / expected,
        "baseline_cpu_us_per_update": base["client_cpu_s"] * 1e6 / expected,
        "wall_s": mine["wall_s"],
        "baseline_wall_s": base["wall_s"],
        "peak_threads": mine["peak_threads"],
        "peak_rss_mb": mine["peak_rss_mb"],
        "rounds": results,
    }


def _rss_now() -> tuple[int, int]:
    """(current, peak) resident set of this process, bytes (Linux /proc)."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024
    return found["VmRSS"], found["VmHWM"]


def _reset_peak() -> None:
    """Start the peak resident set (VmHWM) afresh at the current size."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def files_scenario(ctx: Context) -> dict[str, Any]:
    """Upload and download of one N MB file: ours vs plain ``requests`` doing the
    same calls, alternating rounds; throughput and peak RSS growth of each."""
    import tempfile

    import requests

    from requence_task import Client, RequenceFile, Task

    size = ctx.args.n << 20
    chunk = 1 << 20
    folder = tempfile.mkdtemp(prefix="bench-files-")
    path = os.path.join(folder, "big.bin")
    with open(path, "wb") as out:
        block = os.urandom(chunk)
        for _ in range(ctx.args.n):
            out.write(block)

    client = Client(ctx.token)

    def ours() -> dict[str, float]:
        doc = RequenceFile.from_path(path, mime="application/octet-stream")
        began = time.perf_counter()
        task = Task(FILE_TEMPLATE, {"doc": doc}, client=client)
        task.finalized(timeout=WAIT)
        up = time.perf_counter() - began
        back = task.result(timeout=WAIT).get_node_data("keeper")["doc"]
        began = time.perf_counter()
        seen = sum(len(part) for part in back.iter_bytes(chunk))
        down = time.perf_counter() - began
        if seen != size:
            raise AssertionError(f"requence_task read {seen} bytes, expected {size}")
        return {"upload_s": up, "download_s": down}

    def plain() -> dict[str, float]:
        with requests.Session() as api, requests.Session() as files:
            api.headers["Authorization"] = f"Bearer {ctx.bearer}"
            began = time.perf_counter()
            prepared = api.post(f"{ctx.base_url}/task/prepare/{FILE_TEMPLATE}", timeout=30)
            prepared.raise_for_status()
            answer = prepared.json()
            with open(path, "rb") as body:
                uploaded = files.post(
                    answer["fileUrls"]["uploadUrl"],
                    data=body,
                    headers={"Content-Type": "application/octet-stream"},
                    timeout=(30, 60),
                )
            uploaded.raise_for_status()
            reference = {"__REQUENCE_type": "RequenceFile", **uploaded.json()}
            started = api.post(
                answer["finalizeUrl"],
                json={
                    "name": None,
                    "input": {"doc": reference},
                    "priority": 5,
                    "requireAck": False,
                },
                timeout=30,
            )
            started.raise_for_status()
            up = time.perf_counter() - began
            task_id = answer["taskId"]
            deadline = time.monotonic() + WAIT
            while True:
                status = api.get(f"{ctx.base_url}/task/{task_id}", timeout=30).json()
                if status["status"] in ENDED:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("the file task did not end")
                time.sleep(0.05)
            url = status["nodesData"][0]["data"]["doc"]["url"]
            began = time.perf_counter()
            with files.get(url, stream=True, timeout=(30, 60)) as response:
                response.raise_for_status()
                seen = sum(len(part) for part in response.iter_content(chunk))
            down = time.perf_counter() - began
        if seen != size:
            raise AssertionError(f"plain requests read {seen} bytes, expected {size}")
        return {"upload_s": up, "download_s": down}

    def round_of(run: Callable[[], dict[str, float]]) -> dict[str, float]:
        _reset_peak()
        before, _ = _rss_now()
        cpu0 = time.process_time()
        figures = run()
        figures["cpu_s"] = time.process_time() - cpu0
        figures["rss_growth_mb"] = (_rss_now()[1] - before) / 2**20
        return figures

    runs: dict[str, list[dict[str, float]]] = {"ours": [], "plain": []}
    try:
        round_of(ours)  # warm-up: connections, imports
        for _round in range(ctx.args.rounds):  # alternate, so that noise hits both alike
            runs["plain"].append(round_of(plain))
            runs["ours"].append(round_of(ours))
    finally:
        client.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
            os.rmdir(folder)

    def middle(which: str, key: str) -> float:
        values = sorted(run[key] for run in runs[which])
        return values[len(values) // 2]

    mb = size / 2**20
    figures: dict[str, Any] = {"n": ctx.args.n, "size_mb": mb, "rounds": runs}
    for which in ("ours", "plain"):
        figures[f"{which}_upload_mb_per_s"] = mb / middle(which, "upload_s")
        figures[f"{which}_download_mb_per_s"] = mb / middle(which, "download_s")
        figures[f"{which}_rss_growth_mb"] = max(run["rss_growth_mb"] for run in runs[which])
    figures["wall_s"] = middle("ours", "upload_s") + middle("ours", "download_s")
    figures["peak_threads"] = threading.active_count()
    figures["peak_rss_mb"] = figures["ours_rss_growth_mb"]
    return figures


def memory_scenario(ctx: Context) -> dict[str, Any]:
    """Issue 14's memory figures, in three parts of one process.

    1. ``--n`` tasks of the ``gate`` template, all in flight at once: every one
       created (``finalized()``) and followed (``done()``, which starts
       monitoring) before the server releases them, then every ``result()``;
       the server runs ``MEMORY_WORKERS`` of them, the rest wait in its queue
       (to the client, all are created, followed and not ended). The standard
       figures of that part: peak threads (the sampler, all the while) and
       peak RSS (``ru_maxrss``: this process's peak since it started, which
       this part is), and the RSS just before the release.
    2. ``--handles`` tasks of the trivial template, every ``result()`` awaited,
       the handles kept: the memory they retain, per handle.
    3. One task of ``stream`` with ``--updates`` node updates, read fully with
       ``for update in task.updates()`` after it ended, the handle kept: the
       memory it retains, per update.

    Retained memory is measured with ``tracemalloc``, not with RSS deltas: the
    bytes of the Python allocations made during the part that are still alive
    after ``gc.collect()``, exactly, whatever the allocator does. An RSS delta
    here would mostly measure pymalloc's arenas: part 1 leaves many of them
    free, and parts 2 and 3 refill them without the RSS moving, so it would say
    less than the handles hold, and vary from run to run. What tracemalloc
    misses (C buffers outside Python's allocators) is not held per handle or
    per update. It slows allocation down, so it is on only in parts 2 and 3,
    after part 1's peak RSS and CPU were taken.
    """
    import gc
    import tracemalloc

    from requence_task import Client, Task

    n, handles, updates = ctx.args.n, ctx.args.handles, ctx.args.updates
    client = Client(ctx.token)
    try:
        for task in [Task(TEMPLATE, input=INPUT, client=client) for _ in range(WARMUP)]:
            task.result(timeout=WAIT)
        in_flight_at_release = 0
        held: dict[str, float] = {}

        def in_flight(count: int) -> None:
            nonlocal in_flight_at_release
            tasks = [
                Task(GATE_TEMPLATE, input={"seconds": WAIT}, client=client) for _ in range(count)
            ]
            for task in tasks:
                task.finalized(timeout=WAIT)
            in_flight_at_release = sum(1 for task in tasks if not task.done())
            held["rss_at_release_mb"] = _rss_now()[0] / 2**20
            ctx.server.command("release")
            for task in tasks:
                task.result(timeout=WAIT)

        cpu0 = ctx.server.cpu()
        figures = measured(in_flight, n, interval=0.05, sockets=True)
        figures["server_cpu_s"] = ctx.server.cpu() - cpu0
        figures["in_flight_at_release"] = in_flight_at_release
        figures.update(held)  # RSS with every task in flight, before the ends come in

        def retained(build: Callable[[], Any]) -> tuple[int, int, Any]:
            """(bytes, blocks) still allocated after ``build()`` and a collection,
            with what it built kept alive."""
            gc.collect()
            tracemalloc.start()
            try:
                kept = build()
                gc.collect()
                snapshot = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
            stats = snapshot.statistics("filename")
            return sum(s.size for s in stats), sum(s.count for s in stats), kept

        def record_retained(per: str, count: int, make: Callable[[], Any]) -> None:
            """``kb_per_<per>`` and ``blocks_per_<per>``: what ``make()``'s result holds."""
            size, blocks, _kept = retained(make)  # (kept alive until here)
            figures[f"kb_per_{per}"] = size / count / 1024
            figures[f"blocks_per_{per}"] = blocks / count

        def finished() -> list[Any]:
            tasks = [Task(TEMPLATE, input=INPUT, client=client) for _ in range(handles)]
            for task in tasks:
                task.result(timeout=WAIT)
            return tasks

        figures["handles"] = handles
        record_retained("handle", handles, finished)
        # Made over plain HTTP while no handle of this client is alive (its shared
        # stream is closed then): nothing of it reaches the client before part 3.
        stream_id, _watch_url, figures["generate_s"] = _ended_stream_task(ctx, updates)
        expected = updates + 4  # taskStart, nodeStart, n x nodeUpdate, nodeEnd, taskEnd

        def read() -> Any:
            task = Task.from_id(stream_id, client=client)
            seen = sum(1 for _update in task.updates(timeout=60))
            if seen != expected:
                raise AssertionError(f"requence_task read {seen} updates, expected {expected}")
            return task

        figures["updates"] = expected
        record_retained("update", expected, read)
    finally:
        client.close()
    return figures


def throughput_scenario(ctx: Context) -> dict[str, Any]:
    """Task creations per second the server sustains, from load processes."""
    procs, seconds = ctx.args.procs, ctx.args.seconds
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [os.path.dirname(os.path.dirname(__file__)), env.get("PYTHONPATH")])
    )
    start_at = time.time() + 3.0  # every load process is up and warm by then
    command = [
        sys.executable,
        "-m",
        "benchmarks.scenario",
        "load",
        "--base-url",
        ctx.base_url,
        "--start-at",
        repr(start_at),
        "--seconds",
        str(seconds),
        "--threads",
        str(ctx.args.threads),
        "--load-client",
        ctx.args.load_client,
    ]
    loads = [
        subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(procs)
    ]
    outputs: list[dict[str, Any]] = []
    try:
        for load in loads:
            assert load.stdin is not None
            load.stdin.write(ctx.bearer + "\n")  # not on the command line: ps shows that
            load.stdin.close()
        time.sleep(max(0.0, start_at - time.time()))
        cpu0 = ctx.server.cpu()
        for load in loads:
            load.wait(timeout=max(0.0, start_at - time.time()) + seconds + 60)
            assert load.stdout is not None
            out = load.stdout.read()  # one short line: it never filled the pipe
            if load.returncode != 0:
                raise RuntimeError(f"a load process failed with status {load.returncode}")
            outputs.append(json.loads(out.strip().splitlines()[-1]))
        server_cpu = ctx.server.cpu() - cpu0
    finally:
        for load in loads:
            if load.poll() is None:
                load.kill()
                load.wait(timeout=10)
    created = sum(o["created"] for o in outputs)
    wall = max(o["wall_s"] for o in outputs)
    client_cpu = sum(o["cpu_s"] for o in outputs)
    return {
        "n": created,
        "procs": procs,
        "threads": ctx.args.threads,
        "load_client": ctx.args.load_client,
        "wall_s": wall,
        "creations_per_s": created / wall,
        "server_cpu_s": server_cpu,
        "server_cpu_ms_per_creation": server_cpu * 1000 / created if created else 0.0,
        "server_cpu_share": server_cpu / wall,
        "load_cpu_share": client_cpu / wall,
    }


def load_main(args: argparse.Namespace) -> int:
    """A load process of ``throughput``: create tasks from ``--threads`` threads."""
    from ._measure import cpu_seconds

    bearer = sys.stdin.readline().strip()
    if args.load_client == "requests":
        import requests

        def connect() -> Any:
            http = requests.Session()
            http.headers["Authorization"] = f"Bearer {bearer}"
            return http

        def create(http: Any) -> None:
            body = {"name": None, "input": INPUT, "priority": 0, "requireAck": False}
            prepared = http.post(f"{args.base_url}/task/prepare/{TEMPLATE}", timeout=30)
            prepared.raise_for_status()
            started = http.post(prepared.json()["finalizeUrl"], json=body, timeout=30)
            started.raise_for_status()
            started.json()

    else:
        import http.client
        from urllib.parse import urlsplit

        where = urlsplit(args.base_url)
        payload = json.dumps(
            {"name": None, "input": INPUT, "priority": 0, "requireAck": False}
        ).encode()
        headers = {"Authorization": f"Bearer {bearer}"}
        json_headers = {**headers, "Content-Type": "application/json"}

        def connect() -> Any:
            return http.client.HTTPConnection(where.hostname, where.port, timeout=30)

        def create(conn: Any) -> None:
            conn.request("POST", f"/task/prepare/{TEMPLATE}", headers=headers)
            answer = conn.getresponse()
            if answer.status != 200:
                raise RuntimeError(f"prepare: HTTP {answer.status}")
            finalize = urlsplit(json.loads(answer.read())["finalizeUrl"]).path
            conn.request("POST", finalize, body=payload, headers=json_headers)
            answer = conn.getresponse()
            if answer.status != 200:
                raise RuntimeError(f"finalize: HTTP {answer.status}")
            json.loads(answer.read())

    counts = [0] * args.threads
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        conn = connect()
        try:
            for _ in range(WARMUP):
                create(conn)
            time.sleep(max(0.0, args.start_at - time.time()))
            end = args.start_at + args.seconds
            while time.time() < end:
                create(conn)
                counts[index] += 1
        except BaseException as err:  # reported below, the process fails
            failures.append(err)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.threads)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, args.start_at - time.time()))
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    for thread in threads:
        thread.join(timeout=args.seconds + WAIT)
    if failures or any(thread.is_alive() for thread in threads):
        print(f"load: {failures[:1] or 'a worker did not finish'}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "created": sum(counts),
                "wall_s": time.perf_counter() - wall0,
                "cpu_s": cpu_seconds() - cpu0,
            }
        ),
        flush=True,
    )
    return 0


# name: (server arguments from the options, the scenario)
SCENARIOS: dict[str, tuple[Callable[[argparse.Namespace], list[str]], Callable[..., Any]]] = {
    "create": (
        lambda a: [],
        _standard(_client, template=TEMPLATE, task_input=INPUT, results=False),
    ),
    "results": (
        lambda a: [],
        _standard(_client, template=TEMPLATE, task_input=INPUT, results=True),
    ),
    "floor-create": (
        lambda a: [],
        _standard(_floor, template=TEMPLATE, task_input=INPUT, results=False),
    ),
    "floor-results": (
        lambda a: [],
        _standard(_floor, template=TEMPLATE, task_input=INPUT, results=True),
    ),
    "in-flight": (
        lambda a: ["--concurrency", str(a.n + WARMUP + 8)],
        _standard(_client, template=HOLD_TEMPLATE, task_input=_hold_input(), results=True),
    ),
    "floor-in-flight": (
        lambda a: ["--concurrency", str(a.n + WARMUP + 8)],
        _standard(_floor, template=HOLD_TEMPLATE, task_input=_hold_input(), results=True),
    ),
    "latency": (
        lambda a: ["--latency", str(LATENCY)],
        _standard(_client, template=TEMPLATE, task_input=INPUT, results=False),
    ),
    "stream": (lambda a: [], stream_scenario),
    "files": (lambda a: ["--max-file-size", str((a.n + 1) << 20)], files_scenario),
    "memory": (lambda a: ["--concurrency", str(MEMORY_WORKERS)], memory_scenario),
    "throughput": (lambda a: [], throughput_scenario),
    "throughput-peer": (lambda a: [], throughput_scenario),
}
# Scenarios served by the peer (``benchmarks.peer``) instead of the local server.
PEER_SCENARIOS = {"throughput-peer"}
SOCKET_SCENARIOS = {"in-flight", "floor-in-flight", "memory"}


@contextlib.contextmanager
def _hogs(count: int) -> Iterator[None]:
    """``count`` processes that keep a core busy each, while the block runs."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        if hogs:
            time.sleep(0.5)  # the load is there before the scenario starts
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scenario")
    parser.add_argument("name", choices=[*sorted(SCENARIOS), "load"])
    parser.add_argument(
        "--n",
        type=int,
        default=500,
        help="tasks (memory: in flight at once; stream: node updates; files: megabytes)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="the server's task concurrency")
    parser.add_argument("--rounds", type=int, default=3, help="stream: alternating rounds")
    parser.add_argument("--handles", type=int, default=2000, help="memory: finished handles")
    parser.add_argument("--updates", type=int, default=100_000, help="memory: node updates")
    parser.add_argument("--procs", type=int, default=2, help="throughput: load processes")
    parser.add_argument("--threads", type=int, default=2, help="throughput: threads per process")
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput: load duration")
    parser.add_argument("--load-client", choices=["http.client", "requests"], default="http.client")
    parser.add_argument("--base-url", help="load: the server")
    parser.add_argument("--start-at", type=float, default=0.0, help="load: epoch start time")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this long")
    parser.add_argument(
        "--hogs", type=int, default=0, help="busy-loop processes running beside (a loaded machine)"
    )
    args = parser.parse_args(argv)
    args.sockets = args.name in SOCKET_SCENARIOS
    if args.name == "load":
        watchdog(args.seconds + WAIT)
        return load_main(args)

    server_args, scenario = SCENARIOS[args.name]
    extra = server_args(args)
    if "--concurrency" not in extra:
        extra += ["--concurrency", str(args.concurrency)]
    module = "benchmarks.peer" if args.name in PEER_SCENARIOS else "benchmarks.server"
    server = ServerProcess(sys.executable, extra, module=module)
    watchdog(args.timeout, on_expiry=server.kill)
    with server, _hogs(args.hogs):
        figures = scenario(Context(server, server.bearer, args))
    figures["scenario"] = args.name
    if args.hogs:
        figures["hogs"] = args.hogs
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
