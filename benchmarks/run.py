"""The harness: ``python -m benchmarks [--quick] [--json OUT]`` (or ``python benchmarks/run.py``).

Runs every scenario in a fresh process, several times, and prints one table of
medians with the client's ratio to the floor (one keep-alive
``requests.Session`` doing the same calls in a loop). Writes the figures as
JSON (``--json OUT``, default ``benchmarks/last-run.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent

# (name, floor it is compared with)
MEASURED = [
    ("create", "floor-create"),
    ("results", "floor-results"),
    ("floor-create", None),
    ("floor-results", None),
]
METRICS = ["client_cpu_ms_per_task", "wall_s", "peak_threads", "peak_rss_mb", "server_cpu_s"]
# Scenarios of issue 6 this version does not measure yet.
NOT_YET = {
    "in-flight": "1,000 tasks held ~2 s each: peak threads, peak RSS, open sockets",
    "latency": "create with 20 ms added per request: wall time, peak threads",
    "stream": "one task with 100,000 node updates: updates/s vs sseclient-py",
    "official": "the official `requence` client (Python 3.12+) side by side",
}


def run_once(name: str, n: int, concurrency: int) -> dict[str, Any]:
    """Run one scenario in a fresh process and return its JSON line."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.scenario",
            name,
            "--n",
            str(n),
            "--concurrency",
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scenario {name} failed ({proc.returncode}):\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {metric: statistics.median(run[metric] for run in runs) for metric in METRICS}


def format_table(summary: dict[str, dict[str, Any]], n: int, reps: int) -> str:
    head = (
        f"{'scenario':<14} {'CPU ms/task':>11} {'x floor':>8} {'wall s':>8} "
        f"{'x floor':>8} {'threads':>8} {'RSS MB':>8} {'server CPU s':>13}"
    )
    lines = [
        f"N={n} tasks, {reps} repetition(s), medians; client CPU = user+sys of the client process",
        head,
        "-" * len(head),
    ]
    for name, floor in MEASURED:
        row = summary[name]["median"]
        ratio_cpu = ratio_wall = "-"
        if floor is not None:
            base = summary[floor]["median"]
            ratio_cpu = f"{row['client_cpu_ms_per_task'] / base['client_cpu_ms_per_task']:.2f}"
            ratio_wall = f"{row['wall_s'] / base['wall_s']:.2f}"
        lines.append(
            f"{name:<14} {row['client_cpu_ms_per_task']:>11.2f} {ratio_cpu:>8} "
            f"{row['wall_s']:>8.2f} {ratio_wall:>8} {row['peak_threads']:>8.0f} "
            f"{row['peak_rss_mb']:>8.1f} {row['server_cpu_s']:>13.2f}"
        )
    for name, what in NOT_YET.items():
        lines.append(f"{name:<14} not yet measured ({what})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 repetition, N=100 (well under a minute)"
    )
    parser.add_argument(
        "--json",
        default=str(Path(__file__).resolve().parent / "last-run.json"),
        metavar="OUT",
        help="where to write the figures",
    )
    parser.add_argument("--n", type=int, help="tasks per scenario (default 500; 100 with --quick)")
    parser.add_argument("--reps", type=int, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--concurrency", type=int, default=4, help="the server's task concurrency")
    args = parser.parse_args(argv)
    n = args.n or (100 if args.quick else 500)
    reps = args.reps or (1 if args.quick else 3)

    started = time.perf_counter()
    summary: dict[str, dict[str, Any]] = {}
    for name, _floor in MEASURED:
        runs = []
        for rep in range(reps):
            print(f"  {name} rep {rep + 1}/{reps} ...", file=sys.stderr, flush=True)
            runs.append(run_once(name, n, args.concurrency))
        summary[name] = {"runs": runs, "median": medians(runs)}
    for name, floor in MEASURED:
        if floor is not None:
            mine, base = summary[name]["median"], summary[floor]["median"]
            summary[name]["ratio_to_floor"] = {
                "client_cpu_ms_per_task": mine["client_cpu_ms_per_task"]
                / base["client_cpu_ms_per_task"],
                "wall_s": mine["wall_s"] / base["wall_s"],
            }

    table = format_table(summary, n, reps)
    print(table)
    elapsed = time.perf_counter() - started
    report = {
        "command": " ".join(
            ["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])]
        ),
        "quick": args.quick,
        "n": n,
        "reps": reps,
        "concurrency": args.concurrency,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "elapsed_s": elapsed,
        "scenarios": summary,
        "not_yet_measured": NOT_YET,
        "table": table,
    }
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"(took {elapsed:.1f} s; figures written to {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
