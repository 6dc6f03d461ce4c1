"""``requence-task local serve`` and ``requence-task demo``: a local Requence."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Any

from ._exit import EXIT_OK, UsageError
from ._output import dumps, pretty


def add_parsers(commands: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    """``local serve``, then ``demo`` (neither takes an access token)."""
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


def demo(args: argparse.Namespace) -> int:
    """``demo``: a task on a local Requence, its live updates, its result, a rejected input."""
    from .. import Client, Task, TaskError
    from ..local import LocalRequence
    from ..local._demo import DEMO_TEMPLATES

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
            detail = dumps(data) if data is not None else ""
            print(f"  {update.type:<12} {alias or '':<8} {detail}".rstrip())
        result = task.result(timeout=30)
        print("Result:")
        print(pretty(result.result))
        rejected = Task("greeting", input={"name": ""}, client=client)
        try:
            rejected.finalized(timeout=10)
        except TaskError as err:
            print(
                f"A task with an empty name is rejected (HTTP {err.status}): {err.server_message}"
            )
    return EXIT_OK


def serve(args: argparse.Namespace) -> int:
    """``local serve``: serve FILE.py's templates until Ctrl-C or SIGTERM."""
    from ..local import LocalRequence
    from ..testing import TemplateLoadError, load_templates

    try:
        templates = load_templates(Path(args.file))
    except TemplateLoadError as err:
        raise UsageError(str(err)) from None
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
        raise UsageError(str(err)) from None
    except OSError as err:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {err.strerror}") from None

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
