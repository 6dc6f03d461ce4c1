"""What the command line prints: lines on stdout and stderr, JSON, one line per update."""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, TextIO

from .._wire import shown_reference

if TYPE_CHECKING:
    from .. import Update

PROG = "requence-task"
TICK = 0.1  # seconds between redraws of the status line, and between polls


def line_out(text: str = "") -> None:
    """A line on stdout, flushed (stdout may be a pipe read line by line)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def line_err(text: str) -> None:
    """A line on stderr, flushed."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def json_default(value: object) -> object:
    """What JSON output makes of other objects: a file or stream as its type, size
    and name (never its URL, a capability), anything else as its text."""
    try:
        return shown_reference(value)
    except TypeError:
        return str(value)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=json_default)


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=json_default)


def indented(value: Any, by: int = 10) -> str:
    return pretty(value).replace("\n", "\n" + " " * by)


def _node_label(update: Update) -> str:
    node = getattr(update, "node", None)
    if node is None:
        return ""
    return str(node.alias or node.id)


def describe(update: Update) -> str:
    """One line of text for an update: its type, node and details."""
    from .. import (
        NodeDeferUpdate,
        NodeErrorUpdate,
        NodeUpdateUpdate,
        TaskAbortedUpdate,
        TaskEndUpdate,
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
        text += " " + dumps(update.data)
    elif isinstance(update, NodeErrorUpdate):
        text += f": {update.error}"
    elif isinstance(update, (NodeDeferUpdate, TaskErrorUpdate, TaskAbortedUpdate)):
        if update.reason:
            text += f": {update.reason}"
    elif isinstance(update, TaskEndUpdate):
        if update.exit is not None:
            text += f" (exit {update.exit})"
    elif isinstance(update, UnknownUpdate):
        text += " (not understood" + (f": {update.problem})" if update.problem else ")")
    return text


@contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Warnings of the library (BranchWarning) as ``requence-task: warning: ...``."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        line_err(f"{PROG}: warning: {message}")

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def silence_stdout() -> None:
    """The reader went away (``... | head``): no more output, and no second error on exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
