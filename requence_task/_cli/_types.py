"""``requence-task generate-types``: the Python types of the templates' inputs, as files."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from . import _connect
from ._exit import EXIT_OK, Failure, UsageError
from ._output import line_out

_TYPES_DIR = ("requence", "task")


def add_parser(
    commands: argparse._SubParsersAction[Any], parents: list[argparse.ArgumentParser]
) -> None:
    types = commands.add_parser(
        "generate-types",
        parents=parents,
        help="write Python types of the templates' inputs",
        description=(
            "Fetch the Python types of the task templates' inputs from Requence and write "
            "each file to OUTDIR/requence/task/."
        ),
    )
    types.add_argument(
        "--outdir", default="typings", metavar="OUTDIR", help="the directory (default typings)"
    )


def check_file_name(name: object) -> str:
    """A file name Requence sent for the types, or :class:`Failure` if unsafe."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or ".." in name
        or any(sep in name for sep in ("/", "\\", ":", "\0"))
        or (os.sep in name)
        or (os.altsep is not None and os.altsep in name)
    ):
        raise Failure(
            f"Requence sent a types file named {name!r:.80}; refusing to write it "
            "(a file name must not contain path separators or '..')"
        )
    return name


def generate_types(args: argparse.Namespace) -> int:
    """``generate-types``: fetch the files, check their names, write them to OUTDIR."""
    with _connect.client(args) as client:
        files = client._api.python_types()
    checked: list[tuple[str, str]] = []
    for name, content in files.items():
        if not isinstance(content, str):
            raise Failure(
                f"Requence sent the types file {check_file_name(name)!r} as a JSON "
                f"{type(content).__name__}, not text"
            )
        checked.append((check_file_name(name), content))
    directory = Path(args.outdir, *_TYPES_DIR)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create {directory}: {err.strerror or err}") from None
    for name, content in checked:
        path = directory / name
        try:
            path.write_text(content, encoding="utf-8")
        except OSError as err:
            raise UsageError(f"cannot write {path}: {err.strerror or err}") from None
        line_out(f"Wrote {path}")
    if not checked:
        line_out("Requence sent no type files.")
    return EXIT_OK
