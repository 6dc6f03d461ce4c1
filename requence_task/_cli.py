"""The ``requence-task`` command line.

Commands that talk to Requence (``run``, ``get``, ``abort``, ``protect``,
``watch``, ``generate-types``) use the public client API. The local server
commands (``local serve``, ``demo``) run a :class:`requence_task.local.LocalRequence`.

Run as ``python -m requence_task``, and on a usage error, it warns when the
``requence-task`` command is another package's (the official client installs
one of that name over ours).

Exit codes: 0 success; 1 the task failed or was aborted (or Requence answered
something unexpected); 2 bad usage or input rejected; 3 Requence unreachable;
4 the access token was refused; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import re
import runpy
import shutil
import signal
import sys
import sysconfig
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, NoReturn, TextIO

from . import _fold, _states
from ._wire import update_to_json

if TYPE_CHECKING:
    from . import Client, Task, Update

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTHENTICATION = 4
EXIT_INTERRUPTED = 130

RETRY_BUDGET_ENV = "REQUENCE_TASK_RETRY_BUDGET"
"""Seconds the CLI keeps retrying while Requence is unreachable (default: the client's 30)."""

INTERRUPT_REASON = "interrupted from the command line"
"""The abort reason ``run --abort-on-interrupt`` gives."""

_PROG = "requence-task"
_TICK = 0.1  # seconds between redraws of the status line, and between polls
_TYPES_DIR = ("requence", "task")

_EPILOG = """\
exit codes:
  0    success
  1    the task failed or was aborted (or Requence answered something unexpected)
  2    bad usage: a wrong option, bad --input, no or an invalid access token,
       a task input Requence rejected, an unknown task id, nothing to abort
  3    Requence is unreachable (retried for REQUENCE_TASK_RETRY_BUDGET seconds, default 30)
  4    Requence refused the access token
  130  interrupted (Ctrl-C)

The access token comes from --access-token, else REQUENCE_TASK_ACCESS_TOKEN,
REQUENCE_ACCESS_TOKEN, or pyproject.toml ([tool.requence] task_access_token).
"""


class _UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


class _Failure(Exception):
    """Something went wrong that is not the user's fault: one line, exit code 1."""


# --- another package's requence-task command ------------------------------------------
#
# The official client (``pip install requence``) has a console script of the same
# name; installed after this package, it replaces ours, and ``requence-task local``
# then answers "invalid choice: 'local'". Our code cannot run then, except as
# ``python -m requence_task``: that, and usage errors, say what happened.

_PYTHON_M = "python -m requence_task"
# The line of a console-script wrapper that names its module ("from pkg.cli import main").
_SCRIPT_IMPORT = re.compile(rb"^from ([A-Za-z_][\w.]*) import [A-Za-z_]\w*", re.MULTILINE)
_SCRIPT_LIMIT = 1 << 20  # a wrapper is small; a Windows launcher holds it near its end
_other_command_said = False


def _script_module(path: Path) -> str | None:
    """The module a console-script wrapper runs, or ``None`` if ``path`` is not one."""
    try:
        with path.open("rb") as script:
            head = script.read(_SCRIPT_LIMIT)
    except OSError:
        return None
    found = _SCRIPT_IMPORT.findall(head)
    return found[-1].decode("ascii") if found else None


def _distribution_of(module: str) -> str | None:
    """The installed distribution whose ``requence-task`` console script runs ``module``."""
    from importlib.metadata import entry_points

    try:
        for entry in entry_points(group="console_scripts", name=_PROG):
            if entry.module == module and entry.dist is not None:
                return str(entry.dist.name)
    except Exception:  # a broken distribution elsewhere must not break the command
        return None
    return None


def other_command() -> str | None:
    """A warning if the ``requence-task`` command of this environment (or the one
    first on PATH) runs another package than this one; ``None`` when it is ours or
    there is none. Cheap: it reads a wrapper script or two, never imports them."""
    places = [Path(sysconfig.get_path("scripts"), name) for name in (_PROG, _PROG + ".exe")]
    on_path = shutil.which(_PROG)
    if on_path is not None:
        places.append(Path(on_path))
    for path in places:
        module = _script_module(path)
        if module is None or module.split(".")[0] == __package__:
            continue
        owner = _distribution_of(module)
        where = f"the {owner!r} distribution" if owner else "another package"
        return (
            f"{_PROG}: warning: the {_PROG} command at {path} is not this package's: it runs "
            f"{module} of {where}. The official client (pip install requence) installs a "
            f"{_PROG} command of its own over this one. '{_PYTHON_M} ...' always runs this "
            "one; to have the command back, install requence in a separate virtual "
            "environment and reinstall this package here (pip install --force-reinstall "
            "requence_task)."
        )
    return None


def _say_other_command() -> None:
    """Print :func:`other_command`'s warning on stderr, at most once per run."""
    global _other_command_said
    if _other_command_said:
        return
    _other_command_said = True
    try:
        warning = other_command()
    except Exception:  # never in the way of the command itself
        return
    if warning is not None:
        _err(warning)


def _run_as_python_m() -> bool:
    main_module = sys.modules.get("__main__")
    spec = getattr(main_module, "__spec__", None)
    return getattr(spec, "name", None) == f"{__package__}.__main__"


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors name the help that always works and say when the
    ``requence-task`` command is another package's."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        help_command = _PYTHON_M + self.prog.removeprefix(_PROG)
        _err(f"{self.prog}: error: {message}")
        _err(f"{_PROG}: see '{help_command} --help' (it always runs this package's command)")
        _say_other_command()
        self.exit(EXIT_USAGE)


# --- the parser ------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    from ._protocol import UPDATE_TYPES

    # Options accepted after the subcommand too. SUPPRESS: a subcommand that was
    # not given the option leaves what the main parser read alone.
    common = _Parser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log at debug level, show tracebacks",
    )
    token = _Parser(add_help=False)
    token.add_argument(
        "--access-token",
        metavar="TOKEN",
        default=argparse.SUPPRESS,
        help="the access token (default: REQUENCE_TASK_ACCESS_TOKEN, REQUENCE_ACCESS_TOKEN, "
        "or pyproject.toml)",
    )
    api = [common, token]

    parser = _Parser(
        prog=_PROG,
        description="Start and monitor Requence tasks, and run a local Requence.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="log at debug level, show tracebacks")
    parser.add_argument(
        "--access-token",
        metavar="TOKEN",
        default=None,
        help="the access token (default: REQUENCE_TASK_ACCESS_TOKEN, REQUENCE_ACCESS_TOKEN, "
        "or pyproject.toml)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        parents=api,
        help="start a task and follow it to its result",
        description=(
            "Start a task of TEMPLATE and wait for its result. On a terminal a status\n"
            "line on stderr shows the running nodes; otherwise one line per update is\n"
            "printed. Ctrl-C leaves the task running (exit 130) unless\n"
            "--abort-on-interrupt."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("template", metavar="TEMPLATE", help="the task template's name")
    run.add_argument(
        "--input",
        metavar="JSON",
        help="the task's input: JSON text, @FILE to read a JSON file, or - for standard input",
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

    get = commands.add_parser(
        "get",
        parents=api,
        help="show a task's status, input, result and node data",
        description="Show what Requence knows of a task now.",
    )
    get.add_argument("task_id", metavar="ID", help="the task's id")
    get.add_argument("--json", action="store_true", help="print one JSON object")

    abort = commands.add_parser(
        "abort",
        parents=api,
        help="abort a task",
        description="Abort a task. A task that has already ended cannot be aborted (exit 2).",
    )
    abort.add_argument("task_id", metavar="ID", help="the task's id")
    abort.add_argument("--reason", metavar="TEXT", help="why; shown with the task")

    protect = commands.add_parser(
        "protect",
        parents=api,
        help="protect a task from automatic cleanup",
        description="Protect a task from automatic cleanup.",
    )
    protect.add_argument("task_id", metavar="ID", help="the task's id")

    watch = commands.add_parser(
        "watch",
        parents=api,
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

    types = commands.add_parser(
        "generate-types",
        parents=api,
        help="write Python types of the templates' inputs",
        description=(
            "Fetch the Python types of the task templates' inputs from Requence and write "
            "each file to OUTDIR/requence/task/."
        ),
    )
    types.add_argument(
        "--outdir", default="typings", metavar="OUTDIR", help="the directory (default typings)"
    )

    local = commands.add_parser("local", parents=[common], help="the local Requence server")
    local_commands = local.add_subparsers(dest="local_command", metavar="ACTION", required=True)
    serve = local_commands.add_parser(
        "serve",
        parents=[common],
        help="serve the templates defined in a Python file",
        description=(
            "Load the templates defined in FILE.py (a list named 'templates', or every "
            "Template at module level), serve them on loopback, print the base URL and an "
            "access token, and serve until Ctrl-C."
        ),
    )
    serve.add_argument("file", metavar="FILE.py", help="a Python file that defines templates")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free)")
    serve.add_argument("--db", default=":memory:", help="SQLite file (default: in memory)")
    serve.add_argument("--concurrency", type=int, default=4, help="tasks run at once (default 4)")
    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="run a task on a local Requence and print its updates and result",
        description=(
            "Start a local Requence with a demo template, start a task with the client, "
            "print its live updates and its result, show a rejected input, and stop."
        ),
    )
    demo.add_argument("--name", default="World", help="the name to greet (default World)")
    return parser


# --- local server commands (unchanged behaviour) ------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from . import Client, Task, TaskError
    from .local import LocalRequence
    from .local._demo import DEMO_TEMPLATES

    if not args.debug:  # the demo prints its own story; the server's log would interleave
        logging.getLogger("requence_task.local").setLevel(logging.WARNING)
    with LocalRequence(DEMO_TEMPLATES) as rq, Client(rq.access_token) as client:
        print(f"Local Requence running at {rq.base_url}")
        task = Task("greeting", input={"name": args.name}, name="Demo", client=client)
        print(f"Task {task.task_id(timeout=10)} created: {task.task_url(timeout=10)}")
        for update in task.updates(timeout=30):
            node = getattr(update, "node", None)
            alias = node.alias if node is not None else ""
            data = getattr(update, "data", None)
            detail = json.dumps(data) if data is not None else ""
            print(f"  {update.type:<12} {alias or '':<8} {detail}".rstrip())
        result = task.result(timeout=30)
        print("Result:")
        print(json.dumps(result.result, indent=2))
        rejected = Task("greeting", input={"name": ""}, client=client)
        try:
            rejected.finalized(timeout=10)
        except TaskError as err:
            print(
                f"A task with an empty name is rejected (HTTP {err.status}): {err.server_message}"
            )
    return EXIT_OK


def load_templates(path: str) -> list[Any]:
    """The templates a Python file defines: its ``templates`` list, else every
    ``Template`` among its module-level names."""
    from .local import Template

    try:
        namespace = runpy.run_path(path, run_name="__requence_templates__")
    except FileNotFoundError:
        raise _UsageError(f"no such file: {path}") from None
    except SyntaxError as err:
        raise _UsageError(f"{path} has a syntax error at line {err.lineno}: {err.msg}") from None
    found = namespace.get("templates")
    if found is None:
        found = [value for value in namespace.values() if isinstance(value, Template)]
    try:
        templates = list(found)
    except TypeError:
        raise _UsageError(f"{path}: 'templates' must be a list of Template objects") from None
    wrong = [t for t in templates if not isinstance(t, Template)]
    if wrong:
        raise _UsageError(
            f"{path}: 'templates' holds a {type(wrong[0]).__name__}, not a Template; "
            "make each with requence_task.local.Template(...)"
        )
    if not templates:
        raise _UsageError(
            f"{path} defines no templates: define a list named 'templates' of "
            "requence_task.local.Template objects"
        )
    return templates


def _serve(args: argparse.Namespace) -> int:
    from .local import LocalRequence

    templates = load_templates(args.file)
    try:
        rq = LocalRequence(
            templates,
            host=args.host,
            port=args.port,
            db=args.db,
            concurrency=args.concurrency,
        )
        rq.start()
    except (ValueError, TypeError) as err:
        raise _UsageError(str(err)) from None
    except OSError as err:
        raise _UsageError(f"cannot listen on {args.host}:{args.port}: {err.strerror}") from None

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    names = ", ".join(sorted(rq.templates))
    print(f"Local Requence serving at {rq.base_url}", flush=True)
    print(f"Templates: {names}", flush=True)
    print(f"Access token: {rq.access_token}", flush=True)
    print(f"  export REQUENCE_TASK_ACCESS_TOKEN={rq.access_token}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    rq.serve_forever()
    print("Stopped.", flush=True)
    return EXIT_OK


# --- shared helpers of the API commands ----------------------------------------------


def _retry_budget() -> float | None:
    text = os.environ.get(RETRY_BUDGET_ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise _UsageError(
            f"{RETRY_BUDGET_ENV} must be a positive number of seconds, got {text!r:.40}"
        )
    return value


def _client(args: argparse.Namespace) -> Client:
    from . import Client, RetryPolicy

    budget = _retry_budget()
    retry = None if budget is None else RetryPolicy(budget=budget)
    return Client(args.access_token, retry=retry)


def _out(text: str = "") -> None:
    """A line on stdout, flushed (stdout may be a pipe read line by line)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _node_label(update: Update) -> str:
    node = getattr(update, "node", None)
    if node is None:
        return ""
    return str(node.alias or node.id)


def describe(update: Update) -> str:
    """One line of text for an update: its type, node and details."""
    from . import (
        NodeDeferUpdate,
        NodeErrorUpdate,
        NodeUpdateUpdate,
        TaskAbortedUpdate,
        TaskErrorUpdate,
        UnknownUpdate,
    )

    words = [update.type]
    label = _node_label(update)
    if label:
        words.append(label)
    text = " ".join(words)
    if isinstance(update, NodeUpdateUpdate):
        if update.output is not None:
            text += f" [{update.output}]"
        text += " " + _dumps(update.data)
    elif isinstance(update, NodeErrorUpdate):
        text += f": {update.error}"
    elif isinstance(update, (NodeDeferUpdate, TaskErrorUpdate, TaskAbortedUpdate)):
        if update.reason:
            text += f": {update.reason}"
    elif isinstance(update, UnknownUpdate):
        text += " (not understood" + (f": {update.problem})" if update.problem else ")")
    return text


@contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Warnings of the library (BranchWarning) as ``requence-task: warning: ...``."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        _err(f"{_PROG}: warning: {message}")

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


# --- run -------------------------------------------------------------------------------


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
            raise _UsageError(f"--input -: cannot read standard input: {err}") from None
    elif spec.startswith("@"):
        path = spec[1:]
        where = path
        if not path:
            raise _UsageError("--input @FILE needs a file name after the @")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise _UsageError(f"--input: no such file: {path}") from None
        except UnicodeDecodeError:
            raise _UsageError(f"--input: {path} is not UTF-8 text") from None
        except OSError as err:
            raise _UsageError(f"--input: cannot read {path}: {err.strerror or err}") from None
    else:
        where = "--input"
        text = spec
    if not text.strip():
        raise _UsageError(f"the task input from {where} is empty; give JSON, such as null or {{}}")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        raise _UsageError(
            f"the task input from {where} is not valid JSON: {err.msg} "
            f"(line {err.lineno}, column {err.colno})"
        ) from None
    except ValueError as err:
        raise _UsageError(f"the task input from {where} is not valid JSON: {err}") from None


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
        from . import NodeErrorUpdate

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


def _run(args: argparse.Namespace) -> int:
    from . import Task

    started = time.monotonic()
    task_input = read_input(args.input)
    mode = "json" if args.json else ("terminal" if _is_terminal(sys.stdout) else "plain")
    with _client(args) as client:
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
        _out(json.dumps({"taskId": task_id, "taskUrl": url}))
    else:
        _out(task_id)
        _out(url or "")
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
            update = updates.get_nowait() if finished else updates.get(timeout=_TICK)
        except queue.Empty:
            if finished:
                break
            if progress is not None:
                progress.draw()
            continue
        if mode == "json":
            _out(json.dumps(update_to_json(update), default=str))
        elif mode == "plain":
            _out(describe(update))
        elif progress is not None:
            progress.feed(update)
    result = task.result()  # raises TaskFailedError, TaskAbortedError, creation errors
    if progress is not None:
        progress.clear()
        elapsed = time.monotonic() - started
        _err(
            f"Task {result.task_id} succeeded in {elapsed:.1f} s"
            + (f": {result.task_url}" if result.task_url else "")
        )
    if mode == "json":
        _out(
            json.dumps(
                {"result": result.result, "taskId": result.task_id, "taskUrl": result.task_url},
                default=str,
            )
        )
    else:
        _out(_pretty(result.result))
    return EXIT_OK


def _interrupted(task: Task, *, abort: bool) -> None:
    from . import RequenceError, TaskError

    if abort:
        try:
            task.abort(INTERRUPT_REASON, timeout=10)
        except TaskError as err:
            if err.status == 409:
                _err(f"{_PROG}: interrupted; the task had already ended: {err}")
            else:
                _err(f"{_PROG}: interrupted; the task could not be aborted: {err}")
            return
        except (RequenceError, TimeoutError) as err:
            _err(f"{_PROG}: interrupted; the task could not be aborted: {err}")
            return
        _err(f"{_PROG}: interrupted; task {task.task_id(timeout=0)} aborted")
        return
    try:
        task_id = task.task_id(timeout=0)
    except Exception:
        _err(f"{_PROG}: interrupted before the task was created")
        return
    try:
        url = task.task_url(timeout=0)
    except Exception:
        url = None
    _err(
        f"{_PROG}: interrupted; task {task_id} goes on"
        + (f": {url}" if url else "")
        + f" (abort it with: {_PROG} abort {task_id})"
    )


# --- get, abort, protect ------------------------------------------------------------


def _get(args: argparse.Namespace) -> int:
    from . import TaskStatus, get_task

    with _client(args) as client:
        info = get_task(args.task_id, client=client)
    status = info.raw_status if info.status is TaskStatus.UNKNOWN else info.status.value
    if args.json:
        _out(
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
            _out(f"{label + ':':<10}{value}")
    _out(f"{'Input:':<10}{_indented(info.context.input)}")
    if info.context.result is not None or info.status in (
        TaskStatus.SUCCESSFUL,
        TaskStatus.AWAITING_DELIVERY,
    ):
        _out(f"{'Result:':<10}{_indented(info.context.result)}")
    if info.context.node_data:
        _out("Node data:")
        for alias, data in info.context.node_data.items():
            _out(f"  {alias}: {_indented(data, 4)}")
    if info.context.node_errors:
        _out("Node errors:")
        for alias, error in info.context.node_errors.items():
            _out(f"  {alias}: {error}")
    return EXIT_OK


def _indented(value: Any, by: int = 10) -> str:
    return _pretty(value).replace("\n", "\n" + " " * by)


def _abort(args: argparse.Namespace) -> int:
    from . import abort_task

    with _client(args) as client:
        abort_task(args.task_id, args.reason, client=client)
    _out(f"Task {args.task_id} aborted.")
    return EXIT_OK


def _protect(args: argparse.Namespace) -> int:
    from . import protect_task

    with _client(args) as client:
        protect_task(args.task_id, client=client)
    _out(f"Task {args.task_id} protected.")
    return EXIT_OK


# --- watch -------------------------------------------------------------------------


def _since(text: str) -> str | None:
    word = text.strip().lower()
    if word == "now":
        return datetime.now(timezone.utc).isoformat()
    if word == "all":
        return None
    return text.strip()


def _watch(args: argparse.Namespace) -> int:
    from . import TaskTimeoutError, watch_tasks

    if args.limit is not None and args.limit < 0:
        raise _UsageError(f"--limit must be 0 or more, got {args.limit}")
    if args.timeout is not None and not args.timeout >= 0:
        raise _UsageError(f"--timeout must be 0 or more seconds, got {args.timeout}")
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    since = _since(args.since)
    seen = 0
    with _client(args) as client, watch_tasks(since, only=args.only, client=client) as watcher:
        while args.limit is None or seen < args.limit:
            wait = _TICK * 5
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            try:
                for update in watcher.updates(timeout=wait):
                    if args.json:
                        _out(json.dumps(update_to_json(update), default=str))
                    else:
                        _out(f"{update.timestamp.isoformat()} {update.task_id} {describe(update)}")
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


# --- generate-types ------------------------------------------------------------------


def check_file_name(name: object) -> str:
    """A file name Requence sent for the types, or :class:`_Failure` if unsafe."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or ".." in name
        or any(sep in name for sep in ("/", "\\", ":", "\0"))
        or (os.sep in name)
        or (os.altsep is not None and os.altsep in name)
    ):
        raise _Failure(
            f"Requence sent a types file named {name!r:.80}; refusing to write it "
            "(a file name must not contain path separators or '..')"
        )
    return name


def _generate_types(args: argparse.Namespace) -> int:
    with _client(args) as client:
        files = client._api.python_types()
    checked: list[tuple[str, str]] = []
    for name, content in files.items():
        if not isinstance(content, str):
            raise _Failure(
                f"Requence sent the types file {check_file_name(name)!r} as a JSON "
                f"{type(content).__name__}, not text"
            )
        checked.append((check_file_name(name), content))
    directory = Path(args.outdir, *_TYPES_DIR)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _UsageError(f"cannot create {directory}: {err.strerror or err}") from None
    for name, content in checked:
        path = directory / name
        try:
            path.write_text(content, encoding="utf-8")
        except OSError as err:
            raise _UsageError(f"cannot write {path}: {err.strerror or err}") from None
        _out(f"Wrote {path}")
    if not checked:
        _out("Requence sent no type files.")
    return EXIT_OK


# --- main ----------------------------------------------------------------------------


def exit_code(err: BaseException) -> int:
    """The exit code for an error of the library."""
    from . import (
        AuthenticationError,
        ConfigurationError,
        RequenceUnreachableError,
        TaskAbortedError,
        TaskError,
        TaskFailedError,
        TaskNotFoundError,
    )

    if isinstance(err, AuthenticationError):
        return EXIT_AUTHENTICATION
    if isinstance(err, RequenceUnreachableError):
        return EXIT_UNREACHABLE
    if isinstance(err, (ConfigurationError, TaskNotFoundError, _UsageError)):
        return EXIT_USAGE
    if isinstance(err, (TaskFailedError, TaskAbortedError)):
        return EXIT_FAILED
    if isinstance(err, TaskError) and err.status is not None and 400 <= err.status < 500:
        return EXIT_USAGE  # input rejected, or nothing to abort (409)
    return EXIT_FAILED


def _secrets(args: argparse.Namespace | None) -> list[str]:
    """Every token the command may have used, and the bearers inside them."""
    from ._config import TOKEN_ENV_VARS
    from ._token import decode_access_token

    tokens = [os.environ.get(name, "").strip() for name in TOKEN_ENV_VARS]
    if args is not None and isinstance(getattr(args, "access_token", None), str):
        tokens.append(args.access_token.strip())
    found: list[str] = []
    for token in tokens:
        if not token:
            continue
        found.append(token)
        with suppress(Exception):
            found.append(decode_access_token(token).bearer)
    return sorted({s for s in found if len(s) >= 6}, key=len, reverse=True)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


_COMMANDS = {
    "run": _run,
    "get": _get,
    "abort": _abort,
    "protect": _protect,
    "watch": _watch,
    "generate-types": _generate_types,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    global _other_command_said
    _other_command_said = False
    if argv is None and _run_as_python_m():
        _say_other_command()
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error (already printed)
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "local" and args.local_command == "serve":
            if not args.debug:
                logging.getLogger("uvicorn").setLevel(logging.WARNING)
            return _serve(args)
        if args.command == "demo":
            if not args.debug:
                logging.getLogger("uvicorn").setLevel(logging.WARNING)
            try:
                return _demo(args)
            except BrokenPipeError:  # demo | head
                _silence_stdout()
                return EXIT_FAILED
        command = _COMMANDS[args.command]
    except _UsageError as err:
        _err(f"{_PROG}: error: {err}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return _api_command(command, args)


def _api_command(command: Any, args: argparse.Namespace) -> int:
    from . import RequenceError, RequenceUnreachableError

    try:
        with _warnings_as_lines():
            code: int = command(args)
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILED
    except (RequenceError, _UsageError, _Failure) as err:
        message = str(err)
        if isinstance(err, RequenceUnreachableError):
            message += _where(args)
        if args.debug:
            traceback.print_exc()
        _err(f"{_PROG}: error: {_scrub(message, _secrets(args))}")
        return exit_code(err)
    except Exception as err:
        if args.debug:
            traceback.print_exc()
        _err(
            f"{_PROG}: error: unexpected {type(err).__name__}: "
            f"{_scrub(str(err), _secrets(args))} (run with --debug for the traceback)"
        )
        return EXIT_FAILED


def _where(args: argparse.Namespace) -> str:
    from ._config import resolve_access_token

    try:
        return f" (Requence base URL {resolve_access_token(args.access_token).base_url})"
    except Exception:
        return ""


def _silence_stdout() -> None:
    # The reader went away (`... | head`): no more output, and no second error on exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def console_main() -> None:
    """Entry point of the ``requence-task`` console script."""
    sys.exit(main())
