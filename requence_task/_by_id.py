"""Functions for tasks known by id: abort, protect, ack, get, recreate."""

from __future__ import annotations

from ._client import Client, client_for
from ._errors import ApiError
from ._models import TaskInfo
from ._task import Task
from ._validate import check_name, check_priority, check_reason, check_task_id


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
    check_reason(reason)
    client_for(access_token, client)._api.abort(task_id, reason)


def protect_task(
    task_id: str, *, access_token: str | None = None, client: Client | None = None
) -> None:
    """Protect a task from automatic cleanup, by id.

    Raises:
        TaskNotFoundError: No such task for this token.
    """
    check_task_id(task_id)
    client_for(access_token, client)._api.protect(task_id)


def ack_task(
    task_id: str, *, access_token: str | None = None, client: Client | None = None
) -> None:
    """Acknowledge the delivery of a task that ended with ``require_ack``.

    Raises:
        TaskNotFoundError: No such task for this token.
        TaskError: The task is not awaiting delivery (``status`` 409).
    """
    check_task_id(task_id)
    client_for(access_token, client)._api.ack(task_id)


def get_task(
    task_id: str, *, access_token: str | None = None, client: Client | None = None
) -> TaskInfo:
    """What Requence knows of a task now: status, template, input, result, node data.

    Files and streams in it are :class:`RequenceFile` and :class:`RequenceStream`
    objects; claim checks are fetched.

    Raises:
        TaskNotFoundError: No such task for this token (or it was cleaned up).
        ClaimCheckError: A claim check in it could not be fetched.

    Example:
        >>> info = get_task(task_id)  # doctest: +SKIP
        >>> info.status.ended, info.context.result
    """
    check_task_id(task_id)
    the_client = client_for(access_token, client)
    inbound = the_client._follower.inbound
    return the_client._api.get(task_id, inbound=lambda body: inbound.body(body, task_id))


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
    check_name(name)
    the_client = client_for(access_token, client)
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
