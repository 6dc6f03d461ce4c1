"""Checks of the arguments users pass, each written once.

Every check raises :class:`ConfigurationError` with a message that says what
was wrong and what it takes, before any request is sent. Nothing here knows a
client, a task or the wire: these are checks of plain values. (Which client a
call uses, ``client=`` or ``access_token=``, is decided in ``_client``, which
owns clients.)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import date, datetime

from ._errors import ConfigurationError
from ._protocol import PRIORITY_MAX, PRIORITY_MIN


def check_timeout(timeout: object) -> float | None:
    """``timeout`` as seconds, or :class:`ConfigurationError` if it cannot be one."""
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or math.isnan(timeout)
        or timeout < 0
    ):
        raise ConfigurationError(
            f"timeout must be None (wait as long as it takes) or a number of seconds >= 0, "
            f"got {timeout!r}"
        )
    return float(timeout)


def check_priority(priority: object) -> int:
    """A priority as given, or :class:`ConfigurationError` if it is not 0..10."""
    if (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not PRIORITY_MIN <= priority <= PRIORITY_MAX
    ):
        raise ConfigurationError(
            f"priority must be a whole number from {PRIORITY_MIN} (low) to {PRIORITY_MAX} "
            f"(high), got {priority!r}"
        )
    return priority


def check_task_id(task_id: object) -> str:
    """A task id as given, or :class:`ConfigurationError` if it cannot be one."""
    if (
        not isinstance(task_id, str)
        or not task_id
        or len(task_id) > 200
        or any(c.isspace() or c in "/?#" for c in task_id)
        or not task_id.strip(".")
    ):
        raise ConfigurationError(
            f"{task_id!r:.80} is not a task id: pass the id that task_id() returned "
            "(a non-empty string without spaces or slashes)."
        )
    return task_id


def check_template(template: object) -> str:
    """A template name as given, or :class:`ConfigurationError`."""
    if not isinstance(template, str) or not template.strip():
        raise ConfigurationError(
            f"template must be the template's name, a non-empty string; got {template!r}"
        )
    return template


def check_name(name: object) -> str | None:
    """A task name (a string or ``None``) as given, or :class:`ConfigurationError`."""
    if name is not None and not isinstance(name, str):
        raise ConfigurationError(f"name must be a string or None, got {type(name).__name__}")
    return name


def check_reason(reason: object) -> str | None:
    """An abort reason (a string or ``None``) as given, or :class:`ConfigurationError`."""
    if reason is not None and not isinstance(reason, str):
        raise ConfigurationError("reason must be a string or None")
    return reason


def check_flag(value: object, name: str) -> bool:
    """A ``True``/``False`` argument as given, or :class:`ConfigurationError` naming it."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False")
    return value


def check_on_update(on_update: object) -> None:
    """An ``on_update`` callback: ``None`` or a callable."""
    if on_update is not None and not callable(on_update):
        raise ConfigurationError("on_update must be a callable taking one update")


def check_input(
    value: object,
    *,
    index: int | None = None,
    default: Callable[[object], object] | None = None,
) -> str:
    """A task's input as JSON text, or :class:`ConfigurationError` if JSON cannot carry it.

    Args:
        value: The input.
        index: Its index among the inputs of ``Task.map``; the message says it.
        default: What other objects become (``json.dumps``' ``default``: files
            and streams, see ``_transfer``); it raises ``TypeError`` for others.

    Returns:
        The JSON text, compact (no NaN nor infinities; UTF-8 encodable).
    """
    try:
        text = json.dumps(
            value, allow_nan=False, ensure_ascii=False, separators=(",", ":"), default=default
        )
        text.encode("utf-8")  # lone surrogates cannot travel
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigurationError):  # from ``default``: says it all
            raise
        if index is not None:
            raise ConfigurationError(
                f"Task.map: inputs[{index}] is not JSON-serialisable ({err}); "
                "no task was started. Inputs must be dicts, lists, strings, numbers, "
                "booleans, None, RequenceFile or RequenceStream."
            ) from None
        raise ConfigurationError(
            f"input must be JSON-serialisable (dicts, lists, strings, numbers, booleans, "
            f"None, RequenceFile, RequenceStream): {err}"
        ) from None
    return text


def since_text(since: datetime | date | str | None) -> str | None:
    """``watch_tasks``' ``since`` as ISO-8601 text (``None`` stays ``None``)."""
    if since is None:
        return None
    if isinstance(since, (datetime, date)):
        return since.isoformat()
    if isinstance(since, str):
        try:
            datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigurationError(
                f"since must be a datetime, a date or an ISO-8601 string, got {since!r:.60}"
            ) from None
        return since
    raise ConfigurationError(
        f"since must be a datetime, a date, an ISO-8601 string or None, not {type(since).__name__}"
    )
