"""Two views: start a greeting task, and show a task's status.

``POST /greetings/`` with a JSON body starts a task of the template
``greeting`` with that body as its input, waits (at most
``REQUENCE_TASK["FINALIZE_TIMEOUT"]`` seconds) until Requence accepted it, and
answers ``202 Accepted``, the task's status URL in ``Location``. It does not
wait for the task's result: a client polls ``GET /tasks/<task_id>/``.
"""

from __future__ import annotations

import json
import logging

from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

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

log = logging.getLogger(__name__)

TEMPLATE = "greeting"
# Requence's statuses for an input it will not take: bad JSON, too large,
# or failing the template's input schema.
INPUT_REJECTED = (400, 413, 422)


def _problem(status: int, error: str, message: str) -> JsonResponse:
    return JsonResponse({"error": error, "message": message}, status=status)


# A JSON API for programs, with no session or cookie to protect: no CSRF token.
# If browsers of logged-in users post here, drop csrf_exempt and send the token.
@csrf_exempt
@require_POST
def start_greeting(request: HttpRequest) -> JsonResponse:
    try:
        payload = json.loads(request.body)
    except ValueError:  # not JSON, or not UTF-8
        return _problem(400, "invalid_json", "The request body must be JSON.")
    try:
        task = Task(TEMPLATE, input=payload, client=requence.get_client())
        task_id = task.finalized(timeout=requence.finalize_timeout())
        task_url = task.task_url(timeout=0)
    except RequenceError as err:
        return _error_answer(err)
    status_url = request.build_absolute_uri(reverse("task_api:task-status", args=[task_id]))
    response = JsonResponse(
        {"task_id": task_id, "task_url": task_url, "status_url": status_url}, status=202
    )
    response["Location"] = status_url
    return response


@require_GET
def task_status(request: HttpRequest, task_id: str) -> JsonResponse:
    try:
        info = get_task(task_id, client=requence.get_client())
    except ConfigurationError as err:  # not the shape of a task id; nothing was sent
        return _problem(400, "invalid_task_id", str(err))
    except RequenceError as err:
        return _error_answer(err)
    return JsonResponse(
        {
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
    )


def _error_answer(err: RequenceError) -> JsonResponse:
    """The answer for an error of the SDK."""
    if isinstance(err, TaskError) and err.status in INPUT_REJECTED:
        return _problem(400, "input_rejected", err.server_message or err.message)
    if isinstance(err, TaskNotFoundError):
        return _problem(404, "not_found", f"There is no task {err.task_id}.")
    if isinstance(err, TaskTimeoutError):
        # The task may still start: a time-out here never stops it.
        log.warning("Requence was slow: %s", err)
        return _problem(504, "timeout", f"Requence did not answer within {err.timeout} s.")
    if isinstance(err, RequenceUnreachableError):
        log.warning("Requence is unreachable: %s", err)
        response = _problem(503, "unavailable", "Requence is not reachable; retry later.")
        response["Retry-After"] = "5"
        return response
    # An unknown template, a refused token, an unexpected answer: this server's
    # problem, not the caller's. Logged for the operator, not shown.
    log.error("Requence call failed: %s", err)
    return _problem(502, "bad_gateway", "Requence could not do this.")
