"""The ``requence-task`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import runpy
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

EXIT_OK = 0
EXIT_USAGE = 2


class _UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="requence-task",
        description="Start and monitor Requence tasks, and run a local Requence.",
    )
    parser.add_argument("--debug", action="store_true", help="log at debug level, show tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    local = commands.add_parser("local", help="the local Requence server")
    local_commands = local.add_subparsers(dest="local_command", metavar="ACTION", required=True)
    serve = local_commands.add_parser(
        "serve",
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
        help="run a task on a local Requence and print its updates and result",
        description=(
            "Start a local Requence with a demo template, start a task with the client, "
            "print its live updates and its result, show a rejected input, and stop."
        ),
    )
    demo.add_argument("--name", default="World", help="the name to greet (default World)")
    return parser


def _demo(args: argparse.Namespace) -> int:
    from . import Client, Task, TaskError
    from .local import LocalRequence
    from .local._demo import DEMO_TEMPLATES

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.debug:
        logging.getLogger("uvicorn").setLevel(logging.WARNING)
    try:
        if args.command == "local" and args.local_command == "serve":
            return _serve(args)
        if args.command == "demo":
            return _demo(args)
    except _UsageError as err:
        print(f"requence-task: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    parser.error("unknown command")
    return EXIT_USAGE  # pragma: no cover


def console_main() -> None:
    """Entry point of the ``requence-task`` console script."""
    sys.exit(main())
