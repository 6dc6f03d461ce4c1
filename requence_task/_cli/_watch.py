"""``requence-task watch``: the updates of every task the token may see."""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from typing import Any

from .._wire import update_to_json
from . import _connect
from ._exit import EXIT_OK, UsageError
from ._output import TICK, describe, json_default, line_out


def add_parser(
    commands: argparse._SubParsersAction[Any], parents: list[argparse.ArgumentParser]
) -> None:
    from .._protocol import UPDATE_TYPES

    watch = commands.add_parser(
        "watch",
        parents=parents,
        help="print the updates of every task the token may see",
        description=(
            "Print one line per update of every task the token may see, until Ctrl-C "
            "(exit 130), --limit updates, or --timeout seconds (exit 0)."
        ),
    )
    watch.add_argument(
        "--since",
        default="now",
        metavar="ISO|now|all",
        help="updates from this ISO-8601 time on (naive = local time); 'now' (default), "
        "or 'all' for everything Requence still has",
    )
    watch.add_argument(
        "--only",
        nargs="+",
        action="extend",
        choices=UPDATE_TYPES,
        metavar="TYPE",
        help=f"only these update types ({', '.join(UPDATE_TYPES)})",
    )
    watch.add_argument("--json", action="store_true", help="print one JSON object per update")
    watch.add_argument("--limit", type=int, metavar="N", help="stop after N updates (exit 0)")
    watch.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="stop after SECONDS (exit 0), however many updates came",
    )


def _since(text: str) -> str | None:
    word = text.strip().lower()
    if word == "now":
        return datetime.now(timezone.utc).isoformat()
    if word == "all":
        return None
    return text.strip()


def watch(args: argparse.Namespace) -> int:
    """``watch``: one line (or JSON object) per update, until a limit, a timeout or Ctrl-C."""
    from .. import TaskTimeoutError, watch_tasks

    if args.limit is not None and args.limit < 0:
        raise UsageError(f"--limit must be 0 or more, got {args.limit}")
    if args.timeout is not None and not args.timeout >= 0:
        raise UsageError(f"--timeout must be 0 or more seconds, got {args.timeout}")
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    since = _since(args.since)
    seen = 0
    with (
        _connect.client(args) as client,
        watch_tasks(since, only=args.only, client=client) as watcher,
    ):
        while args.limit is None or seen < args.limit:
            wait = TICK * 5
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            try:
                for update in watcher.updates(timeout=wait):
                    if args.json:
                        line_out(json.dumps(update_to_json(update), default=json_default))
                    else:
                        line_out(
                            f"{update.timestamp.isoformat()} {update.task_id} {describe(update)}"
                        )
                    seen += 1
                    if args.limit is not None and seen >= args.limit:
                        break
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                else:
                    break  # the watcher ended
            except TaskTimeoutError:
                continue
            if deadline is not None and time.monotonic() >= deadline:
                break
    return EXIT_OK
