"""``requence-task run``: start a task and follow it to its result."""

from __future__ import annotations

import argparse
import json
import queue
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from .. import _fold, _states
from .._wire import update_to_json
from . import _connect
from ._exit import EXIT_INTERRUPTED, EXIT_OK, UsageError
from ._output import (
    PROG,
    TICK,
    describe,
    is_terminal,
    json_default,
    line_err,
    line_out,
    pretty,
)

if TYPE_CHECKING:
    from .. import Task, Update

INTERRUPT_REASON = "interrupted from the command line"
"""The abort reason ``run --abort-on-interrupt`` gives."""


def add_parser(
    commands: argparse._SubParsersAction[Any],
    parents: list[argparse.ArgumentParser],
    epilog: str,
) -> None:
    run = commands.add_parser(
        "run",
        parents=parents,
        help="start a task and follow it to its result",
        description=(
            "Start a task of TEMPLATE and wait for its result. On a terminal a status\n"
            "line on stderr shows the running nodes; otherwise one line per update is\n"
            "printed. Ctrl-C leaves the task running (exit 130) unless\n"
            "--abort-on-interrupt."
        ),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("template", metavar="TEMPLATE", help="the task template's name")
    run.add_argument(
        "--input",
        metavar="JSON",
        help="the task's input: JSON text, @FILE to read a JSON file, or - for standard input",
    )
    run.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="KEY=PATH",
        help="put the file at PATH into the input under KEY (a.b for nested keys); repeatable",
    )
    run.add_argument("--name", help="a human-readable name for the task")
    run.add_argument(
        "--priority", type=int, default=5, metavar="N", help="0 (low) to 10 (high); default 5"
    )
    run.add_argument(
        "--no-wait",
        action="store_true",
        help="return once the task has started, printing its id and URL",
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="print JSON only: one object per update, then the result",
    )
    run.add_argument(
        "--abort-on-interrupt",
        action="store_true",
        help=f"on Ctrl-C, abort the task (reason {INTERRUPT_REASON!r}) instead of leaving it",
    )


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def read_input(spec: str | None) -> Any:
    """The task input of ``--input``: JSON text, ``@file``, or ``-`` for stdin."""
    if spec is None:
        return None
    if spec == "-":
        where = "standard input"
        try:
            text = sys.stdin.read()
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"--input -: cannot read standard input: {err}") from None
    elif spec.startswith("@"):
        path = spec[1:]
        where = path
        if not path:
            raise UsageError("--input @FILE needs a file name after the @")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"--input: no such file: {path}") from None
        except UnicodeDecodeError:
            raise UsageError(f"--input: {path} is not UTF-8 text") from None
        except OSError as err:
            raise UsageError(f"--input: cannot read {path}: {err.strerror or err}") from None
    else:
        where = "--input"
        text = spec
    if not text.strip():
        raise UsageError(f"the task input from {where} is empty; give JSON, such as null or {{}}")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        raise UsageError(
            f"the task input from {where} is not valid JSON: {err.msg} "
            f"(line {err.lineno}, column {err.colno})"
        ) from None
    except ValueError as err:
        raise UsageError(f"the task input from {where} is not valid JSON: {err}") from None


def with_files(task_input: Any, specs: list[str]) -> Any:
    """The input with each ``--file KEY=PATH`` put in as a :class:`RequenceFile`."""
    if not specs:
        return task_input
    from .. import ConfigurationError, RequenceFile

    if task_input is None:
        task_input = {}
    if not isinstance(task_input, dict):
        raise UsageError("--file needs the input to be a JSON object (or no --input)")
    for spec in specs:
        key, sep, path = spec.partition("=")
        if not sep or not key or not path:
            raise UsageError(f"--file takes KEY=PATH (such as scan=invoice.pdf), not {spec!r}")
        try:
            item = RequenceFile.from_path(path)
        except ConfigurationError as err:
            raise UsageError(f"--file {key}: {err}") from None
        *parents, last = key.split(".")
        place = task_input
        for part in parents:
            place = place.setdefault(part, {})
            if not isinstance(place, dict):
                raise UsageError(f"--file {key}: the input's {part!r} is not an object")
        place[last] = item
    return task_input


# The status line's words for a task's state with no node running (else "task <state>").
_PHASES = {
    _states.CREATING: "creating the task",
    _states.CREATED: "starting the task",
    _states.STARTED: "task started",
    _states.RUNNING: "running",
    _states.NOT_CREATED: "the task could not be created",
}


class _Progress:
    """The status line of ``run`` on a terminal: one line on stderr, redrawn with ``\\r``.

    The task's state and its nodes' come from :mod:`requence_task._state`, as
    for ``repr(task)`` and the notebook views: after an abort the node it
    stopped shows as aborted, never as running.
    """

    def __init__(self, stream: TextIO, started: float, task: Task) -> None:
        self.stream = stream
        self.started = started
        self.task = task
        # (The id may not be known yet: then the task's own updates are those
        # without a root task id.)
        self.fold = _fold.NodeFold(_fold.known_id(task))
        self.shown = 0

    def feed(self, update: Update) -> None:
        from .. import NodeErrorUpdate

        node = self.fold.feed(update)
        if node is not None and isinstance(update, NodeErrorUpdate):
            self.say(f"node {node.label} failed: {update.error}")
        self.draw()

    def text(self) -> str:
        fold = self.fold
        state, _detail = _fold.task_state(self.task, fold)
        active = fold.active()
        if active:
            what = "running " + ", ".join(
                node.label + (" (deferred)" if node.state == _states.NODE_DEFERRED else "")
                for node in active
            )
        else:
            what = _PHASES.get(state, f"task {state}")
        ended = fold.count(_states.NODE_ENDED)
        done = f"{ended} node{'s' if ended != 1 else ''} done"
        for word in (_states.NODE_FAILED, _states.NODE_ABORTED, _states.NODE_STOPPED):
            count = fold.count(word)
            if count:
                done += f", {count} {word}"
        elapsed = time.monotonic() - self.started
        return f"{what} · {done} · {elapsed:.1f} s"

    def draw(self) -> None:
        width = max(shutil.get_terminal_size((80, 24)).columns - 1, 20)
        text = self.text()
        if len(text) > width:
            text = text[: width - 1] + "…"
        self.stream.write("\r" + text.ljust(self.shown))
        self.stream.flush()
        self.shown = len(text)

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * self.shown + "\r")
            self.stream.flush()
            self.shown = 0

    def say(self, line: str) -> None:
        """A line that stays, above the status line."""
        self.clear()
        self.stream.write(line + "\n")
        self.stream.flush()


def run(args: argparse.Namespace) -> int:
    """``run``: start the task, then follow it (or not, with ``--no-wait``)."""
    from .. import Task

    started = time.monotonic()
    task_input = with_files(read_input(args.input), args.file)
    mode = "json" if args.json else ("terminal" if is_terminal(sys.stdout) else "plain")
    with _connect.client(args) as client:
        updates: queue.SimpleQueue[Update] = queue.SimpleQueue()
        task = Task(
            args.template,
            task_input,
            name=args.name,
            priority=args.priority,
            client=client,
            on_update=None if args.no_wait else updates.put,
        )
        progress = _Progress(sys.stderr, started, task) if mode == "terminal" else None
        try:
            if args.no_wait:
                return _started(task, json_output=args.json)
            return _follow(task, updates, mode, progress, started)
        except KeyboardInterrupt:
            if progress is not None:
                progress.clear()
            _interrupted(task, abort=args.abort_on_interrupt)
            return EXIT_INTERRUPTED
        finally:
            if progress is not None:
                progress.clear()


def _started(task: Task, *, json_output: bool) -> int:
    task_id = task.finalized()
    url = task.task_url()
    if json_output:
        line_out(json.dumps({"taskId": task_id, "taskUrl": url}))
    else:
        line_out(task_id)
        line_out(url or "")
    return EXIT_OK


def _follow(
    task: Task,
    updates: queue.SimpleQueue[Update],
    mode: str,
    progress: _Progress | None,
    started: float,
) -> int:
    if progress is not None:
        progress.draw()
    while True:
        finished = task.done()  # all updates are queued before the task is done
        try:
            update = updates.get_nowait() if finished else updates.get(timeout=TICK)
        except queue.Empty:
            if finished:
                break
            if progress is not None:
                progress.draw()
            continue
        if mode == "json":
            line_out(json.dumps(update_to_json(update), default=json_default))
        elif mode == "plain":
            line_out(describe(update))
        elif progress is not None:
            progress.feed(update)
    result = task.result()  # raises TaskFailedError, TaskAbortedError, creation errors
    if progress is not None:
        progress.clear()
        elapsed = time.monotonic() - started
        line_err(
            f"Task {result.task_id} succeeded"
            + (f" through exit {result.exit!r}" if result.exit is not None else "")
            + f" in {elapsed:.1f} s"
            + (f": {result.task_url}" if result.task_url else "")
        )
    if mode == "json":
        line_out(
            json.dumps(
                {
                    "result": result.result,
                    "exit": result.exit,
                    "taskId": result.task_id,
                    "taskUrl": result.task_url,
                },
                default=json_default,
            )
        )
    else:
        line_out(pretty(result.result))
    return EXIT_OK


def _interrupted(task: Task, *, abort: bool) -> None:
    from .. import RequenceError, TaskError

    if abort:
        try:
            task.abort(INTERRUPT_REASON, timeout=10)
        except TaskError as err:
            if err.status == 409:
                line_err(f"{PROG}: interrupted; the task had already ended: {err}")
            else:
                line_err(f"{PROG}: interrupted; the task could not be aborted: {err}")
            return
        except (RequenceError, TimeoutError) as err:
            line_err(f"{PROG}: interrupted; the task could not be aborted: {err}")
            return
        line_err(f"{PROG}: interrupted; task {task.task_id(timeout=0)} aborted")
        return
    try:
        task_id = task.task_id(timeout=0)
    except Exception:
        line_err(f"{PROG}: interrupted before the task was created")
        return
    try:
        url = task.task_url(timeout=0)
    except Exception:
        url = None
    line_err(
        f"{PROG}: interrupted; task {task_id} goes on"
        + (f": {url}" if url else "")
        + f" (abort it with: {PROG} abort {task_id})"
    )
