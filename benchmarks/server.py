"""The local server for one scenario run, in a process of its own.

``python -m benchmarks.server [--concurrency K] [--latency S]`` starts a
``LocalRequence`` with the benchmark templates on 127.0.0.1 (any free port)
and prints one JSON line: ``{"access_token": ..., "base_url": ..., "bearer": ...}``.

It then reads commands from stdin, one a line, and answers each with one JSON
line: ``cpu`` (its CPU seconds so far), ``release`` (every ``gate`` node
returns) and ``latency SECONDS`` (the fault knob: seconds added before every
request is handled). When stdin is closed it prints its CPU once more and
exits; it also exits on its own after ``--max-seconds``, so that it never
outlives a harness that died.

Templates:

- ``bench``: one node that returns at once;
- ``hold``: one node that waits ``input["seconds"]`` (default 2) before it returns;
- ``stream``: one generator node that yields ``input["n"]`` node updates;
- ``keep-file``: one node that returns the file of ``input["doc"]`` as it is
  (its reference: nothing is copied);
- ``gate``: one node that waits until the ``release`` command (or the end of
  stdin), at most ``input["seconds"]`` (default 600): every task of it stays
  in flight until the scenario says so, however long creating them took.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
from collections.abc import Iterator
from typing import Any

from requence_task.local import DEFAULT_PROJECT, LocalRequence, Template, service

TEMPLATE = "bench"
HOLD_TEMPLATE = "hold"
STREAM_TEMPLATE = "stream"
FILE_TEMPLATE = "keep-file"
GATE_TEMPLATE = "gate"
_GATE = threading.Event()  # set by the ``release`` command: every gate node returns


def _trivial(ctx: Any) -> dict[str, int]:
    return {"ok": 1}


def _hold(ctx: Any) -> dict[str, float]:
    seconds = float((ctx.input or {}).get("seconds", 2.0))
    ctx.wait(seconds)
    return {"held": seconds}


def _stream(ctx: Any) -> Iterator[dict[str, int]]:
    for index in range(int((ctx.input or {}).get("n", 1000))):
        yield {"i": index}


def _gate(ctx: Any) -> dict[str, bool]:
    # One wait on one event: 10,000 waiting nodes cost no CPU until the release.
    return {"released": _GATE.wait(float((ctx.input or {}).get("seconds", 600.0)))}


def templates() -> list[Template]:
    """The benchmark templates."""
    return [
        Template(TEMPLATE, nodes=[service("noop", _trivial)]),
        Template(HOLD_TEMPLATE, nodes=[service("holder", _hold)]),
        Template(STREAM_TEMPLATE, nodes=[service("streamer", _stream)]),
        Template(FILE_TEMPLATE, nodes=[service("keeper", lambda ctx: {"doc": ctx.input["doc"]})]),
        Template(GATE_TEMPLATE, nodes=[service("gate", _gate)]),
    ]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _answer(payload: dict[str, Any]) -> None:
    print(json.dumps(payload), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server")
    parser.add_argument("--concurrency", type=int, default=4, help="tasks run at once")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument(
        "--max-file-size", type=int, default=1 << 30, help="the files service's limit, bytes"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=1800.0, help="exit on its own after this long"
    )
    args = parser.parse_args(argv)

    def give_up() -> None:
        print("benchmarks.server: --max-seconds reached; exiting", file=sys.stderr, flush=True)
        os._exit(3)

    timer = threading.Timer(args.max_seconds, give_up)
    timer.daemon = True
    timer.start()

    with LocalRequence(
        templates(),
        host="127.0.0.1",
        port=0,
        concurrency=args.concurrency,
        max_file_size=args.max_file_size,
    ) as rq:
        rq.faults.latency = args.latency
        _answer(
            {
                "access_token": rq.access_token,
                "base_url": rq.base_url,
                # For the floor and the baselines, which speak HTTP without our client.
                "bearer": rq.bearer_for(DEFAULT_PROJECT),
            }
        )
        for line in sys.stdin:  # serve until the scenario closes our stdin
            words = line.split()
            if not words:
                continue
            if words[0] == "cpu":
                _answer({"server_cpu_s": _cpu()})
            elif words[0] == "latency" and len(words) == 2:
                rq.faults.latency = float(words[1])
                _answer({"latency": rq.faults.latency})
            elif words[0] == "release":
                _GATE.set()
                _answer({"released": True})
            else:
                _answer({"error": f"unknown command {line.strip()!r}"})
        _GATE.set()  # no gate node outlives the scenario (stop() would wait for them)
    _answer({"server_cpu_s": _cpu()})
    timer.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(main())
