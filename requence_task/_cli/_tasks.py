"""``requence-task get``, ``abort`` and ``protect``: one task, by its id."""

from __future__ import annotations

import argparse
import json
from typing import Any

from . import _connect
from ._exit import EXIT_OK
from ._output import indented, line_out


def add_parsers(
    commands: argparse._SubParsersAction[Any], parents: list[argparse.ArgumentParser]
) -> None:
    get = commands.add_parser(
        "get",
        parents=parents,
        help="show a task's status, input, result and node data",
        description="Show what Requence knows of a task now.",
    )
    get.add_argument("task_id", metavar="ID", help="the task's id")
    get.add_argument("--json", action="store_true", help="print one JSON object")

    abort = commands.add_parser(
        "abort",
        parents=parents,
        help="abort a task",
        description="Abort a task. A task that has already ended cannot be aborted (exit 2).",
    )
    abort.add_argument("task_id", metavar="ID", help="the task's id")
    abort.add_argument("--reason", metavar="TEXT", help="why; shown with the task")

    protect = commands.add_parser(
        "protect",
        parents=parents,
        help="protect a task from automatic cleanup",
        description="Protect a task from automatic cleanup.",
    )
    protect.add_argument("task_id", metavar="ID", help="the task's id")


def get(args: argparse.Namespace) -> int:
    """``get``: what Requence knows of the task, as text or one JSON object."""
    from .. import TaskStatus, get_task

    with _connect.client(args) as client:
        info = get_task(args.task_id, client=client)
    status = info.raw_status if info.status is TaskStatus.UNKNOWN else info.status.value
    if args.json:
        line_out(
            json.dumps(
                {
                    "taskId": info.task_id,
                    "status": status,
                    "statusText": info.status_text,
                    "template": info.task_template,
                    "name": info.name,
                    "branch": info.branch,
                    "input": info.context.input,
                    "result": info.context.result,
                    "nodeData": dict(info.context.node_data),
                    "nodeErrors": dict(info.context.node_errors),
                },
                default=str,
            )
        )
        return EXIT_OK
    rows = [
        ("Task", info.task_id),
        ("Status", f"{status}" + (f" ({info.status_text})" if info.status_text else "")),
        ("Template", info.task_template),
        ("Name", info.name),
        ("Branch", info.branch),
    ]
    for label, value in rows:
        if value is not None:
            line_out(f"{label + ':':<10}{value}")
    line_out(f"{'Input:':<10}{indented(info.context.input)}")
    if info.context.result is not None or info.status in (
        TaskStatus.SUCCESSFUL,
        TaskStatus.AWAITING_DELIVERY,
    ):
        line_out(f"{'Result:':<10}{indented(info.context.result)}")
    if info.context.node_data:
        line_out("Node data:")
        for alias, data in info.context.node_data.items():
            line_out(f"  {alias}: {indented(data, 4)}")
    if info.context.node_errors:
        line_out("Node errors:")
        for alias, error in info.context.node_errors.items():
            line_out(f"  {alias}: {error}")
    return EXIT_OK


def abort(args: argparse.Namespace) -> int:
    """``abort``: abort the task, with ``--reason`` if given."""
    from .. import abort_task

    with _connect.client(args) as client:
        abort_task(args.task_id, args.reason, client=client)
    line_out(f"Task {args.task_id} aborted.")
    return EXIT_OK


def protect(args: argparse.Namespace) -> int:
    """``protect``: protect the task from automatic cleanup."""
    from .. import protect_task

    with _connect.client(args) as client:
        protect_task(args.task_id, client=client)
    line_out(f"Task {args.task_id} protected.")
    return EXIT_OK
