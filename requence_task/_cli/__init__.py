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

The modules: ``_main`` (``main``, the console script's entry point, errors to
one line), ``_exit`` (the exit codes and the errors that choose them),
``_parsing`` (the parser and its shared options), ``_output`` (printing),
``_other`` (another package's ``requence-task`` command), ``_connect`` (the
client of the API commands), and one module per command group: ``_run``,
``_tasks`` (get, abort, protect), ``_watch``, ``_types`` (generate-types) and
``_local`` (local serve, demo).
"""

from __future__ import annotations

# The one template loader (tests/examples import it from here).
from ..testing import load_templates
from ._connect import RETRY_BUDGET_ENV
from ._exit import (
    EXIT_AUTHENTICATION,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    exit_code,
)
from ._main import console_main, main
from ._other import other_command
from ._output import describe
from ._parsing import build_parser as _parser  # noqa: F401 (its name in tests)
from ._run import INTERRUPT_REASON, read_input
from ._types import check_file_name

__all__ = [
    "EXIT_AUTHENTICATION",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "INTERRUPT_REASON",
    "RETRY_BUDGET_ENV",
    "check_file_name",
    "console_main",
    "describe",
    "exit_code",
    "load_templates",
    "main",
    "other_command",
    "read_input",
]
