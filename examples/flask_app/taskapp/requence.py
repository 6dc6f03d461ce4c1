"""The app's one ``requence_task.Client``, made from ``app.config`` at start-up.

``init_app(app)`` reads the ``REQUENCE_TASK_*`` settings, creates the client
and keeps it in ``app.extensions["requence_task"]``; views reach it through
:func:`client`. One client serves every request of the process: it holds the
keep-alive connections and the threads that create tasks. Under gunicorn it is
safe to create it before the workers fork (``--preload``): each forked worker
gets a fresh connection pool and threads on first use.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

from flask import Flask, current_app

from requence_task import Client, RetryPolicy, Timeouts

EXTENSION = "requence_task"

DEFAULTS: dict[str, Any] = {
    # None: the client reads REQUENCE_TASK_ACCESS_TOKEN from the environment
    # (or pyproject.toml), so the token need not be in any config file.
    "REQUENCE_TASK_ACCESS_TOKEN": None,
    # How long a request waits for Requence to accept a task (its input
    # passed validation and it started). A web worker never waits longer.
    "REQUENCE_TASK_FINALIZE_TIMEOUT": 10.0,
    # Socket time-outs of every request to Requence.
    "REQUENCE_TASK_CONNECT_TIMEOUT": 2.0,
    "REQUENCE_TASK_READ_TIMEOUT": 5.0,
    # How long one call keeps retrying while Requence is unreachable.
    "REQUENCE_TASK_RETRY_BUDGET": 5.0,
}


def init_app(app: Flask) -> Client:
    """Create the app's client from its config and register it on the app.

    The client is closed when the app is garbage-collected or the
    interpreter exits.

    Raises:
        ValueError: A ``REQUENCE_TASK_*`` setting is wrong, or no usable
            access token was found (``requence_task.ConfigurationError``).
    """
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    # Checked now, so that a wrong setting fails at start-up, not at a request.
    finalize_timeout(app)
    new_client = Client(
        app.config["REQUENCE_TASK_ACCESS_TOKEN"],
        timeouts=Timeouts(
            connect=_seconds(app.config, "REQUENCE_TASK_CONNECT_TIMEOUT"),
            read=_seconds(app.config, "REQUENCE_TASK_READ_TIMEOUT"),
        ),
        retry=RetryPolicy(budget=_seconds(app.config, "REQUENCE_TASK_RETRY_BUDGET")),
    )
    app.extensions[EXTENSION] = new_client
    # Flask has no shutdown hook; this runs at exit or when the app goes away.
    weakref.finalize(app, new_client.close)
    return new_client


def client() -> Client:
    """The current app's client (inside a request or an app context)."""
    found: Client = current_app.extensions[EXTENSION]
    return found


def finalize_timeout(app: Flask | None = None) -> float:
    """How long a request waits for Requence to accept a task, in seconds."""
    config = (app if app is not None else current_app).config
    return _seconds(config, "REQUENCE_TASK_FINALIZE_TIMEOUT")


def _seconds(config: Any, key: str) -> float:
    value = config[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{key} must be a positive number of seconds, got {value!r}")
    return float(value)
