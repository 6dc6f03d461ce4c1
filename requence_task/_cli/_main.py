"""``main``: parse, run the command, turn what went wrong into one line and an exit code."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from contextlib import suppress

from . import _local, _other, _run, _tasks, _types, _watch
from ._exit import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, Failure, UsageError, exit_code
from ._output import PROG, line_err, silence_stdout, warnings_as_lines
from ._parsing import build_parser

# The commands that talk to Requence; `local serve` and `demo` are run apart.
_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _run.run,
    "get": _tasks.get,
    "abort": _tasks.abort,
    "protect": _tasks.protect,
    "watch": _watch.watch,
    "generate-types": _types.generate_types,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    _other.forget_said()
    if argv is None and _other.run_as_python_m():
        _other.say_other_command()
    parser = build_parser()
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
            return _local.serve(args)
        if args.command == "demo":
            if not args.debug:
                logging.getLogger("uvicorn").setLevel(logging.WARNING)
            try:
                return _local.demo(args)
            except BrokenPipeError:  # demo | head
                silence_stdout()
                return EXIT_FAILED
        command = _COMMANDS[args.command]
    except UsageError as err:
        line_err(f"{PROG}: error: {err}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return _api_command(command, args)


def console_main() -> None:
    """Entry point of the ``requence-task`` console script."""
    sys.exit(main())


def _api_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    from .. import RequenceError, RequenceUnreachableError

    try:
        with warnings_as_lines():
            code: int = command(args)
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        silence_stdout()
        return EXIT_FAILED
    except (RequenceError, UsageError, Failure) as err:
        message = str(err)
        if isinstance(err, RequenceUnreachableError):
            message += _where(args)
        if args.debug:
            traceback.print_exc()
        line_err(f"{PROG}: error: {_scrub(message, _secrets(args))}")
        return exit_code(err)
    except Exception as err:
        if args.debug:
            traceback.print_exc()
        line_err(
            f"{PROG}: error: unexpected {type(err).__name__}: "
            f"{_scrub(str(err), _secrets(args))} (run with --debug for the traceback)"
        )
        return EXIT_FAILED


def _secrets(args: argparse.Namespace | None) -> list[str]:
    """Every token the command may have used, and the bearers inside them."""
    from .._config import TOKEN_ENV_VARS
    from .._token import decode_access_token

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


def _where(args: argparse.Namespace) -> str:
    from .._config import resolve_access_token

    try:
        return f" (Requence base URL {resolve_access_token(args.access_token).base_url})"
    except Exception:
        return ""
