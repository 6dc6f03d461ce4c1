"""The local server for one scenario run, in a process of its own.

``python -m benchmarks.server [--concurrency K]`` starts a ``LocalRequence``
with the benchmark template on 127.0.0.1 (any free port) and prints one JSON
line: ``{"access_token": ..., "base_url": ...}``. It serves until its stdin is
closed, then prints one more JSON line with its own CPU time and exits.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys

from requence_task.local import LocalRequence, Template, service

TEMPLATE = "bench"


def _trivial(ctx: object) -> dict[str, int]:
    return {"ok": 1}


def templates() -> list[Template]:
    """The benchmark templates: one trivial node that returns at once."""
    return [Template(TEMPLATE, nodes=[service("noop", _trivial)])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    with LocalRequence(templates(), host="127.0.0.1", port=0, concurrency=args.concurrency) as rq:
        before = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({"access_token": rq.access_token, "base_url": rq.base_url}), flush=True)
        sys.stdin.read()  # serve until the scenario closes our stdin
        after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(json.dumps({"server_cpu_s": cpu}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
