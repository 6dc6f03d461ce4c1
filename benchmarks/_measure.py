"""What every scenario process measures with, in the standard library only.

The official client's scenarios (``benchmarks.official``) run on another
interpreter that has neither ``requence_task`` nor its dependencies, so this
module imports nothing but the standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT = 60.0
SERVER_REPLY_TIMEOUT = 30.0


def cpu_seconds() -> float:
    """User+sys CPU of this process, all threads, since it started."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """The kernel's peak resident set size of this process (``ru_maxrss``), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def thread_count() -> int:
    """Threads of this process (OS threads where ``/proc`` tells), less the harness's own.

    The harness's threads (sampler, watchdog) are named ``bench-*``.
    """
    harness = sum(1 for t in threading.enumerate() if t.name.startswith("bench-"))
    try:
        total = len(os.listdir("/proc/self/task"))
    except OSError:
        total = threading.active_count()
    return total - harness


def open_sockets() -> int:
    """How many of this process's file descriptors are sockets (Linux ``/proc``)."""
    count = 0
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return -1  # not Linux: unknown
    for name in names:
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:
            pass  # closed between listdir and readlink
    return count


class Sampler:
    """Samples thread count (and optionally open sockets) on a thread of its own.

    Its own CPU time (``time.thread_time`` of the sampler thread) is reported
    in :attr:`cpu`, so that a scenario can take it out of the process's CPU:
    the measuring must not be billed to the client under test. The sampler
    harness's own threads are not counted in :attr:`peak_threads`.
    """

    def __init__(self, interval: float = 0.02, *, sockets: bool = False) -> None:
        self.interval = interval
        self.sockets = sockets
        self.peak_threads = thread_count()
        self.peak_sockets = open_sockets() if sockets else -1
        self.cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def _run(self) -> None:
        start = time.thread_time()
        try:
            while True:
                self.peak_threads = max(self.peak_threads, thread_count())
                if self.sockets:
                    self.peak_sockets = max(self.peak_sockets, open_sockets())
                if self._stop.wait(self.interval):
                    return
        finally:
            self.cpu = time.thread_time() - start

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class Window:
    """The measured part of a scenario: wall time and CPU, less the sampler's CPU."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.wall = 0.0
        self.cpu = 0.0

    def __enter__(self) -> Window:
        self._cpu0 = cpu_seconds()
        self._wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall0
        self.cpu = cpu_seconds() - self._cpu0


def measured(
    run: Any, count: int, *, interval: float = 0.02, sockets: bool = False
) -> dict[str, Any]:
    """Run ``run(count)`` inside a sampler and return the standard figures."""
    with Sampler(interval, sockets=sockets) as sampler:
        window = Window(sampler)
        with window:
            run(count)
    cpu = max(0.0, window.cpu - sampler.cpu)
    figures: dict[str, Any] = {
        "n": count,
        "client_cpu_s": cpu,
        "client_cpu_ms_per_task": cpu * 1000 / count if count else 0.0,
        "sampler_cpu_s": sampler.cpu,
        "wall_s": window.wall,
        "peak_threads": sampler.peak_threads,
        "peak_rss_mb": peak_rss_mb(),
    }
    if sockets:
        figures["peak_sockets"] = sampler.peak_sockets
    return figures


def watchdog(seconds: float, on_expiry: Any = None) -> threading.Timer:
    """End this process (exit status 3) if it is still running after ``seconds``."""

    def expire() -> None:
        print(
            f"benchmark watchdog: still running after {seconds:.0f} s; giving up", file=sys.stderr
        )
        if on_expiry is not None:
            with contextlib.suppress(Exception):  # on the way out, whatever happens
                on_expiry()
        os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.name = "bench-watchdog"
    timer.daemon = True
    timer.start()
    return timer


class _Lines:
    """Lines from a pipe, each read with a time-out (``select``; no helper thread,
    which would show in the thread counts)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._fd = pipe.fileno()
        self._buffer = b""

    def readline(self, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._fd], [], [], max(0.0, left))
            if not ready:
                raise TimeoutError(
                    f"no answer from the benchmark server ({what}) within {timeout:.0f} s"
                )
            chunk = os.read(self._fd, 65536)
            if not chunk:
                raise EOFError(f"the benchmark server ended ({what})")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


class ServerProcess:
    """The local server in a process of its own (``python -m benchmarks.server``).

    Context-managed: on exit (or any failure) its stdin is closed, and it is
    killed if it does not end within a few seconds.

    Args:
        python: The interpreter that has ``requence_task[local]`` installed.
        args: Extra arguments for ``benchmarks.server``.
        module: The server's module (``benchmarks.peer`` for the throughput peer).
    """

    def __init__(
        self,
        python: str = sys.executable,
        args: list[str] | None = None,
        module: str = "benchmarks.server",
    ) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            [python, "-m", module, *(args or [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            cwd=ROOT,
            env=env,
        )
        try:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._stdin = self._proc.stdin
            self._lines = _Lines(self._proc.stdout)
            hello = json.loads(self._lines.readline(SERVER_START_TIMEOUT, "start"))
        except BaseException:
            self.kill()
            raise
        self.access_token: str = hello["access_token"]
        self.base_url: str = hello["base_url"]
        self.bearer: str = hello["bearer"]
        self.pid = self._proc.pid

    def command(self, line: str) -> dict[str, Any]:
        """Send one command line (``cpu``, ``latency SECONDS``) and return its JSON answer."""
        self._stdin.write(line.encode() + b"\n")
        answer: dict[str, Any] = json.loads(self._lines.readline(SERVER_REPLY_TIMEOUT, line))
        return answer

    def cpu(self) -> float:
        """The server process's CPU seconds so far (user+sys, all its threads)."""
        return float(self.command("cpu")["server_cpu_s"])

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)

    def close(self) -> None:
        try:
            if self._proc.poll() is None:
                self._stdin.close()
                self._proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            self.kill()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def emit(figures: dict[str, Any]) -> None:
    """Print the scenario's figures as the last line of stdout (what the driver reads)."""
    print(json.dumps(figures), flush=True)
