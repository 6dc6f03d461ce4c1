"""Two views: start a greeting task, and show a task's status.

``POST /greetings`` with a JSON body starts a task of the template
``greeting`` with that body as its input, waits (at most
``REQUENCE_TASK_FINALIZE_TIMEOUT`` seconds) until Requence accepted it, and
answers ``202 Accepted``, the task's status URL in ``Location``. It does not
wait for the task's result: a client polls ``GET /tasks/<task_id>``.

The SDK's errors become JSON answers in the error handlers at the bottom.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request, url_for
from werkzeug.exceptions import BadRequest

from requence_task import (
    ConfigurationError,
    RequenceError,
    RequenceUnreachableError,
    Task,
    TaskError,
    TaskNotFoundError,
    TaskTimeoutError,
    get_task,
)

from . import requence

bp = Blueprint("tasks", __name__)

TEMPLATE = "greeting"
# Requence's statuses for an input it will not take: bad JSON, too large,
# or failing the template's input schema.
INPUT_REJECTED = (400, 413, 422)

Answer = tuple[dict[str, Any], int, dict[str, str]]  # body (sent as JSON), status, headers


def _problem(
    status: int, error: str, message: str, headers: dict[str, str] | None = None
) -> Answer:
    return {"error": error, "message": message}, status, headers or {}


@bp.post("/greetings")
def start_greeting() -> Answer:
    try:
        # force: any content type; a body that does not parse raises BadRequest.
        payload = request.get_json(force=True)
    except BadRequest:
        return _problem(400, "invalid_json", "The request body must be JSON.")
    task = Task(TEMPLATE, input=payload, client=requence.client())
    task_id = task.finalized(timeout=requence.finalize_timeout())
    status_url = url_for(".task_status", task_id=task_id, _external=True)
    body = {"task_id": task_id, "task_url": task.task_url(timeout=0), "status_url": status_url}
    return body, 202, {"Location": status_url}


@bp.get("/tasks/<task_id>")
def task_status(task_id: str) -> Answer:
    try:
        info = get_task(task_id, client=requence.client())
    except ConfigurationError as err:  # not the shape of a task id; nothing was sent
        return _problem(400, "invalid_task_id", str(err))
    body = {
        "task_id": info.task_id,
        "status": info.status.value,  # IDLE, PENDING, RUNNING, SUCCESSFUL, FAILED, STOPPED...
        "ended": info.status.ended,
        "template": info.task_template,
        "name": info.name,
        "status_text": info.status_text,  # why it failed, or was aborted
        "input": info.context.input,
        "result": info.context.result,
        "node_errors": dict(info.context.node_errors),
    }
    return body, 200, {}


# --- the SDK's errors as answers (Flask picks the handler by the error's class) ---


@bp.errorhandler(TaskError)
def task_rejected(err: TaskError) -> Answer:
    if err.status in INPUT_REJECTED:
        return _problem(400, "input_rejected", err.server_message or err.message)
    # Anything else (an unknown template, say) is this server's problem, not the caller's.
    current_app.logger.error("Requence did not take a %s task: %s", TEMPLATE, err)
    return _problem(502, "bad_gateway", "Requence could not start the task.")


@bp.errorhandler(TaskNotFoundError)
def task_not_found(err: TaskNotFoundError) -> Answer:
    return _problem(404, "not_found", f"There is no task {err.task_id}.")


@bp.errorhandler(TaskTimeoutError)
def requence_slow(err: TaskTimeoutError) -> Answer:
    # The task may still start: a time-out here never stops it.
    current_app.logger.warning("Requence was slow: %s", err)
    return _problem(504, "timeout", f"Requence did not answer within {err.timeout} s.")


@bp.errorhandler(RequenceUnreachableError)
def requence_unreachable(err: RequenceUnreachableError) -> Answer:
    current_app.logger.warning("Requence is unreachable: %s", err)
    return _problem(
        503, "unavailable", "Requence is not reachable; retry later.", {"Retry-After": "5"}
    )


@bp.errorhandler(RequenceError)
def requence_failed(err: RequenceError) -> Answer:
    # A refused token, an unexpected answer: logged for the operator, not shown.
    current_app.logger.error("Requence call failed: %s", err)
    return _problem(502, "bad_gateway", "Requence gave an unexpected answer.")
