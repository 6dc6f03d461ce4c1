"""The command line's parser: the options every command shares, then each command group's."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from . import _local, _run, _tasks, _types, _watch
from ._exit import EXIT_USAGE
from ._other import PYTHON_M, say_other_command
from ._output import PROG, line_err

EPILOG = """\
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


class Parser(argparse.ArgumentParser):
    """argparse, whose usage errors name the help that always works and say when the
    ``requence-task`` command is another package's."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        help_command = PYTHON_M + self.prog.removeprefix(PROG)
        line_err(f"{self.prog}: error: {message}")
        line_err(f"{PROG}: see '{help_command} --help' (it always runs this package's command)")
        say_other_command()
        self.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The ``requence-task`` parser, with every command."""
    from .. import __version__

    # Options accepted after the subcommand too. SUPPRESS: a subcommand that was
    # not given the option leaves what the main parser read alone.
    common = Parser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log at debug level, show tracebacks",
    )
    token = Parser(add_help=False)
    token.add_argument(
        "--access-token",
        metavar="TOKEN",
        default=argparse.SUPPRESS,
        help="the access token (default: REQUENCE_TASK_ACCESS_TOKEN, REQUENCE_ACCESS_TOKEN, "
        "or pyproject.toml)",
    )
    api: list[argparse.ArgumentParser] = [common, token]

    parser = Parser(
        prog=PROG,
        description="Start and monitor Requence tasks, and run a local Requence.",
        epilog=EPILOG,
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
    # The order here is the order of `requence-task --help`.
    _run.add_parser(commands, api, EPILOG)
    _tasks.add_parsers(commands, api)
    _watch.add_parser(commands, api)
    _types.add_parser(commands, api)
    _local.add_parsers(commands, common)
    return parser
