"""Functions for tasks known by id: abort, protect, ack, get, recreate."""

from __future__ import annotations

import enum
from types import MappingProxyType
from typing import Any

import attrs

from ._client import Client, default_client
from ._errors import ApiError, ConfigurationError
from ._protocol import (
    AWAITING_DELIVERY,
    FAILED,
    IDLE,
    PENDING,
    RUNNING,
    STOPPED,
    SUCCESSFUL,
)
from ._task import Task, check_priority, check_task_id
from ._updates import TaskContext


class TaskStatus(str, enum.Enum):
    """A task's status, as ``get_task`` reports it (parsed in any letter case)."""

    IDLE = IDLE
    """Created (prepared), not started yet."""
    PENDING = PENDING
    """Started and waiting for its turn."""
    RUNNING = RUNNING
    """Running."""
    AWAITING_DELIVERY = AWAITING_DELIVERY
    """Ended; held until a client acknowledges the delivery (``require_ack``)."""
    SUCCESSFUL = SUCCESSFUL
    """Ended with a result."""
    FAILED = FAILED
    """Ended with an error."""
    STOPPED = STOPPED
    """Aborted."""
    UNKNOWN = "UNKNOWN"
    """A status this client does not know; ``TaskInfo.raw_status`` has it."""

    @classmethod
    def parse(cls, value: object) -> TaskStatus:
        """The status for ``value`` in any letter case; ``UNKNOWN`` if none fits."""
        if isinstance(value, str):
            try:
                return cls(value.strip().upper())
            except ValueError:
                pass
        return cls.UNKNOWN

    @property
    def ended(self) -> bool:
        """Whether the task has ended (including one awaiting delivery)."""
        return self in (
            TaskStatus.SUCCESSFUL,
            TaskStatus.FAILED,
            TaskStatus.STOPPED,
            TaskStatus.AWAITING_DELIVERY,
        )


@attrs.frozen
class TaskInfo:
    """What Requence knows of a task now (:func:`get_task`).

    Attributes:
        task_id: The task's id.
        status: Its status.
        raw_status: The status string as sent.
        status_text: Why it has that status (a failure's reason), if given.
        task_template: The template's name.
        name: The task's name.
        branch: The branch the template ran on.
        context: Input, result, node data and node errors by alias.
    """

    task_id: str
    status: TaskStatus
    raw_status: str | None
    status_text: str | None
    task_template: str | None
    name: str | None
    branch: str | None
    context: TaskContext = attrs.field(repr=False)


def _client_for(access_token: str | None, client: Client | None) -> Client:
    if client is not None and access_token is not None:
        raise ConfigurationError(
            "pass either client= or access_token=, not both (a client has its own token)"
        )
    if client is not None:
        if not isinstance(client, Client):
            raise ConfigurationError("client must be a requence_task.Client")
        return client
    return default_client(access_token)


def abort_task(
    task_id: str,
    reason: str | None = None,
    *,
    access_token: str | None = None,
    client: Client | None = None,
) -> None:
    """Abort a task by id.

    Raises:
        TaskNotFoundError: No such task for this token.
        TaskError: The task already ended (``status`` 409).
    """
    check_task_id(task_id)
    if reason is not None and not isinstance(reason, str):
        raise ConfigurationError("reason must be a string or None")
    _client_for(access_token, client)._abort(task_id, reason)


def protect_task(
    task_id: str, *, access_token: str | None = None, client: Client | None = None
) -> None:
    """Protect a task from automatic cleanup, by id.

    Raises:
        TaskNotFoundError: No such task for this token.
    """
    check_task_id(task_id)
    _client_for(access_token, client)._protect(task_id)


def ack_task(
    task_id: str, *, access_token: str | None = None, client: Client | None = None
) -> None:
    """Acknowledge the delivery of a task that ended with ``require_ack``.

    Raises:
        TaskNotFoundError: No such task for this token.
        TaskError: The task is not awaiting delivery (``status`` 409).
    """
    check_task_id(task_id)
    _client_for(access_token, client)._ack(task_id)


def get_task(
    task_id: str, *, access_token: str | None = None, client: Client | None = None
) -> TaskInfo:
    """What Requence knows of a task now: status, template, input, result, node data.

    Raises:
        TaskNotFoundError: No such task for this token (or it was cleaned up).

    Example:
        >>> info = get_task(task_id)  # doctest: +SKIP
        >>> info.status.ended, info.context.result
    """
    check_task_id(task_id)
    body = _client_for(access_token, client)._get(task_id)
    return task_info(task_id, body)


def task_info(task_id: str, body: dict[str, Any]) -> TaskInfo:
    """A :class:`TaskInfo` from the body of ``GET /task/{id}``."""
    nodes_data = body.get("nodesData") or []
    nodes_error = body.get("nodesError") or []
    if not isinstance(nodes_data, list) or not isinstance(nodes_error, list):
        raise ApiError(f"get of task {task_id}: nodesData and nodesError must be lists")
    data = {
        item["alias"]: item.get("data")
        for item in nodes_data
        if isinstance(item, dict) and isinstance(item.get("alias"), str)
    }
    errors = {
        item["alias"]: str(item.get("error"))
        for item in nodes_error
        if isinstance(item, dict) and isinstance(item.get("alias"), str)
    }
    raw_status = body.get("status")

    def text(key: str) -> str | None:
        value = body.get(key)
        return value if isinstance(value, str) else None

    return TaskInfo(
        task_id=task_id,
        status=TaskStatus.parse(raw_status),
        raw_status=raw_status if isinstance(raw_status, str) else None,
        status_text=text("statusText"),
        task_template=text("taskTemplate"),
        name=text("name"),
        branch=text("branch"),
        context=TaskContext(
            task_id,
            body.get("input"),
            body.get("result"),
            MappingProxyType(data),
            MappingProxyType(errors),
        ),
    )


def recreate_task(
    task_id: str,
    *,
    name: str | None = None,
    priority: int | None = None,
    access_token: str | None = None,
    client: Client | None = None,
) -> Task:
    """Start a new task with the template and input of an existing one.

    Args:
        task_id: The task to copy.
        name: The new task's name; by default the old task's.
        priority: The new task's priority (0 low .. 10 high); by default 5.

    Returns:
        The new task's handle, already being created.

    Raises:
        TaskNotFoundError: No such task for this token.
    """
    check_task_id(task_id)
    if priority is not None:
        check_priority(priority)
    if name is not None and not isinstance(name, str):
        raise ConfigurationError(f"name must be a string or None, got {type(name).__name__}")
    the_client = _client_for(access_token, client)
    info = get_task(task_id, client=the_client)
    if info.task_template is None:
        raise ApiError(f"task {task_id} has no template name in Requence's answer")
    return Task(
        info.task_template,
        info.context.input,
        name=name if name is not None else info.name,
        priority=5 if priority is None else priority,
        client=the_client,
    )
