"""The official ``requence`` client (PyPI, Python 3.12+) in the same scenarios.

``python -m benchmarks.official NAME --n N --server-python PYTHON`` runs on an
interpreter that has ``requence`` installed (the harness makes a virtual
environment for it, see ``run.py``) and imports nothing of ``requence_task``:
the local server runs in a process of its own, on ``PYTHON``, which has
``requence_task[local]``.

Scenarios: ``create`` (every ``task.sync.id``: the task was created and
finalized), ``results`` (every ``task.sync.result``) and ``latency``
(``create`` with 20 ms added to every request by the server). The official
client's waits take no time-out; this process's watchdog (``--timeout``) and
the harness's own time-out bound them instead.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._measure import ServerProcess, emit, measured, watchdog

TEMPLATE = "bench"
INPUT = {"n": 1}
WARMUP = 5
LATENCY = 0.02


def _run(token: str, *, results: bool) -> Any:
    from requence.task import Task

    def run(count: int) -> None:
        tasks = [Task(TEMPLATE, input=INPUT, access_token=token) for _ in range(count)]
        for task in tasks:
            _ = task.sync.result if results else task.sync.id

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.official")
    parser.add_argument("name", choices=["create", "results", "latency"])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--server-python", required=True, help="has requence_task[local]")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this long")
    args = parser.parse_args(argv)

    server_args = ["--concurrency", str(args.concurrency)]
    if args.name == "latency":
        server_args += ["--latency", str(LATENCY)]
    server = ServerProcess(args.server_python, server_args)
    watchdog(args.timeout, on_expiry=server.kill)
    with server:
        run = _run(server.access_token, results=args.name == "results")
        run(WARMUP)
        cpu0 = server.cpu()
        figures = measured(run, args.n)
        figures["server_cpu_s"] = server.cpu() - cpu0
    figures["scenario"] = f"official-{args.name}"
    figures["python"] = sys.version.split()[0]
    emit(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
