"""The client of the commands that talk to Requence: the token, the retry budget."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from ._exit import UsageError

if TYPE_CHECKING:
    from .. import Client

RETRY_BUDGET_ENV = "REQUENCE_TASK_RETRY_BUDGET"
"""Seconds the CLI keeps retrying while Requence is unreachable (default: the client's 30)."""


def retry_budget() -> float | None:
    text = os.environ.get(RETRY_BUDGET_ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise UsageError(
            f"{RETRY_BUDGET_ENV} must be a positive number of seconds, got {text!r:.40}"
        )
    return value


def client(args: argparse.Namespace) -> Client:
    """A :class:`~requence_task.Client` for ``--access-token`` (or the usual places)."""
    from .. import Client, RetryPolicy

    budget = retry_budget()
    retry = None if budget is None else RetryPolicy(budget=budget)
    return Client(args.access_token, retry=retry)
