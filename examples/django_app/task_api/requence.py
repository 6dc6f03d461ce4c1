"""The project's one ``requence_task.Client``, made from ``settings.REQUENCE_TASK``.

``get_client()`` creates the client on first use and hands the same one to
every later request of the process: it holds the keep-alive connections and
the threads that create tasks. Creating it lazily means ``manage.py`` commands
that never reach Requence need no token. Under gunicorn it is also safe to
create it before the workers fork (``--preload``): each forked worker gets a
fresh connection pool and threads on first use.

Settings (all optional)::

    REQUENCE_TASK = {
        "ACCESS_TOKEN": None,       # None: REQUENCE_TASK_ACCESS_TOKEN from the environment
        "FINALIZE_TIMEOUT": 10.0,   # seconds a request waits for Requence to accept a task
        "CONNECT_TIMEOUT": 2.0,     # socket time-outs of every request to Requence
        "READ_TIMEOUT": 5.0,
        "RETRY_BUDGET": 5.0,        # seconds one call retries while Requence is unreachable
    }
"""

from __future__ import annotations

import math
import threading
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from requence_task import Client, ConfigurationError, RetryPolicy, Timeouts

DEFAULTS: dict[str, Any] = {
    "ACCESS_TOKEN": None,
    "FINALIZE_TIMEOUT": 10.0,
    "CONNECT_TIMEOUT": 2.0,
    "READ_TIMEOUT": 5.0,
    "RETRY_BUDGET": 5.0,
}

_lock = threading.Lock()
_client: Client | None = None


def options() -> dict[str, Any]:
    """``settings.REQUENCE_TASK`` over the defaults, checked.

    Raises:
        ImproperlyConfigured: An unknown key, or a time that is not a positive number.
    """
    configured = getattr(settings, "REQUENCE_TASK", None) or {}
    if not isinstance(configured, dict):
        raise ImproperlyConfigured("settings.REQUENCE_TASK must be a dict")
    unknown = sorted(set(configured) - set(DEFAULTS))
    if unknown:
        raise ImproperlyConfigured(
            f"settings.REQUENCE_TASK has unknown keys {unknown}; known: {sorted(DEFAULTS)}"
        )
    merged = {**DEFAULTS, **configured}
    for key in DEFAULTS:
        value = merged[key]
        if key != "ACCESS_TOKEN" and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ImproperlyConfigured(
                f"settings.REQUENCE_TASK[{key!r}] must be a positive number of seconds, "
                f"got {value!r}"
            )
    return merged


def get_client() -> Client:
    """The process's client, created from the settings on first use."""
    global _client
    with _lock:
        if _client is None or _client.closed:
            config = options()
            try:
                _client = Client(
                    config["ACCESS_TOKEN"],
                    timeouts=Timeouts(
                        connect=config["CONNECT_TIMEOUT"], read=config["READ_TIMEOUT"]
                    ),
                    retry=RetryPolicy(budget=config["RETRY_BUDGET"]),
                )
            except ConfigurationError as err:  # its message never contains the token
                raise ImproperlyConfigured(f"settings.REQUENCE_TASK: {err}") from err
        return _client


def finalize_timeout() -> float:
    """How long a request waits for Requence to accept a task, in seconds."""
    return float(options()["FINALIZE_TIMEOUT"])


def close_client() -> None:
    """Close the client; the next ``get_client()`` makes a new one."""
    global _client
    with _lock:
        old, _client = _client, None
    if old is not None:
        old.close()


def reset_on_setting_change(*, setting: str, **kwargs: Any) -> None:
    """``setting_changed`` receiver: tests that override REQUENCE_TASK get a new client."""
    if setting == "REQUENCE_TASK":
        close_client()
