"""Another package's ``requence-task`` command.

The official client (``pip install requence``) has a console script of the same
name; installed after this package, it replaces ours, and ``requence-task local``
then answers "invalid choice: 'local'". Our code cannot run then, except as
``python -m requence_task``: that, and usage errors, say what happened.
"""

from __future__ import annotations

import re
import shutil
import sys
import sysconfig
from pathlib import Path

from ._output import PROG, line_err

PYTHON_M = "python -m requence_task"
# This package's name: a console script whose module starts with it is ours.
_PACKAGE = __name__.split(".")[0]
# The line of a console-script wrapper that names its module ("from pkg.cli import main").
_SCRIPT_IMPORT = re.compile(rb"^from ([A-Za-z_][\w.]*) import [A-Za-z_]\w*", re.MULTILINE)
_SCRIPT_LIMIT = 1 << 20  # a wrapper is small; a Windows launcher holds it near its end
_said = False


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
        for entry in entry_points(group="console_scripts", name=PROG):
            if entry.module == module and entry.dist is not None:
                return str(entry.dist.name)
    except Exception:  # a broken distribution elsewhere must not break the command
        return None
    return None


def other_command() -> str | None:
    """A warning if the ``requence-task`` command of this environment (or the one
    first on PATH) runs another package than this one; ``None`` when it is ours or
    there is none. Cheap: it reads a wrapper script or two, never imports them."""
    places = [Path(sysconfig.get_path("scripts"), name) for name in (PROG, PROG + ".exe")]
    on_path = shutil.which(PROG)
    if on_path is not None:
        places.append(Path(on_path))
    for path in places:
        module = _script_module(path)
        if module is None or module.split(".")[0] == _PACKAGE:
            continue
        owner = _distribution_of(module)
        where = f"the {owner!r} distribution" if owner else "another package"
        return (
            f"{PROG}: warning: the {PROG} command at {path} is not this package's: it runs "
            f"{module} of {where}. The official client (pip install requence) installs a "
            f"{PROG} command of its own over this one. '{PYTHON_M} ...' always runs this "
            "one; to have the command back, install requence in a separate virtual "
            "environment and reinstall this package here (pip install --force-reinstall "
            "requence_task)."
        )
    return None


def forget_said() -> None:
    """A new run of the command line: :func:`say_other_command` may speak again."""
    global _said
    _said = False


def say_other_command() -> None:
    """Print :func:`other_command`'s warning on stderr, at most once per run."""
    global _said
    if _said:
        return
    _said = True
    try:
        warning = other_command()
    except Exception:  # never in the way of the command itself
        return
    if warning is not None:
        line_err(warning)


def run_as_python_m() -> bool:
    """Whether this process is ``python -m requence_task``."""
    main_module = sys.modules.get("__main__")
    spec = getattr(main_module, "__spec__", None)
    return getattr(spec, "name", None) == f"{_PACKAGE}.__main__"
