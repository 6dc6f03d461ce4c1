"""``requence-task get``, ``abort`` and ``protect``: one task, by its id."""

from __future__ import annotations

import argparse
import json
import mimetypes
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import human_size
from .._wire import key_path
from . import _connect
from ._exit import EXIT_OK, UsageError
from ._output import PROG, indented, json_default, line_err, line_out

if TYPE_CHECKING:
    from .. import RequenceFile, RequenceStream, TaskContext


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
    get.add_argument(
        "--save-files",
        metavar="DIR",
        help="write the task's files and streams (input, node data, result) into DIR",
    )

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
        if args.save_files is not None:
            save_files(info.context, Path(args.save_files))
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
                    "rootTaskId": info.root_task_id,
                    "exit": info.exit,
                    "input": info.context.input,
                    "result": info.context.result,
                    "nodeData": dict(info.context.node_data),
                    "nodeErrors": dict(info.context.node_errors),
                },
                default=json_default,
            )
        )
        return EXIT_OK
    rows = [
        ("Task", info.task_id),
        ("Status", f"{status}" + (f" ({info.status_text})" if info.status_text else "")),
        ("Template", info.task_template),
        ("Name", info.name),
        ("Branch", info.branch),
        ("Root", info.root_task_id),
        ("Exit", info.exit),
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


def save_files(context: TaskContext, folder: Path) -> None:
    """Write every file and stream of a task into ``folder``, each named after
    where it is (``result.pages[0].scan.pdf``); a line on stderr for each."""
    from .. import RequenceError, RequenceFile, RequenceStream

    found: list[tuple[str, RequenceFile | RequenceStream]] = []

    def walk(value: object, path: str) -> None:
        if isinstance(value, (RequenceFile, RequenceStream)):
            found.append((path, value))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, key_path(path, str(key)))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, key_path(path, index))

    walk(context.input, "input")
    for alias, data in context.node_data.items():
        walk(data, key_path(key_path("nodes", alias), "data"))
    walk(context.result, "result")
    if not found:
        line_err(f"{PROG}: the task has no files to save")
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--save-files: cannot make {folder}: {err.strerror or err}") from None
    for path, item in found:
        target = folder / _file_name(path, item)
        try:
            item.save(target)
        except OSError as err:
            raise UsageError(
                f"--save-files: cannot write {target}: {err.strerror or err}"
            ) from None
        except RequenceError as err:
            raise UsageError(f"--save-files: {path} could not be read: {err}") from None
        size = f" ({human_size(item.size)})" if isinstance(item, RequenceFile) else ""
        line_err(f"saved {path} to {target}{size}")


def _file_name(path: str, item: RequenceFile | RequenceStream) -> str:
    """A file name for a value at ``path``: the path made safe, with an extension
    from the file's name or type."""
    safe = re.sub(r"[^A-Za-z0-9._\[\]-]+", "_", path).strip("._") or "file"
    suffix = Path(item.name).suffix if item.name else ""
    if not suffix:
        suffix = mimetypes.guess_extension(item.mime.split(";")[0].strip()) or ""
    return safe + suffix
