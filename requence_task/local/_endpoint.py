"""One way to serve a handler: injected faults, the bearer token, errors, the log.

Every route of the local server, the API's and the pages', is made by
:func:`route`, so they all answer an :class:`~._engine.ApiError` the same way
and are logged alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .._protocol import FILES_PREFIX
from ._context import Context
from ._engine import ApiError

log = logging.getLogger("requence_task.local")

Handler = Callable[[Context, Request, str], Awaitable[Response]]
"""A route's handler: ``(context, request, project)``; the project is ``""`` without auth."""


def shown_path(path: str) -> str:
    """What the log shows of a path: a files URL is a secret, so only ``/files/…``."""
    return f"{FILES_PREFIX}…" if path.startswith(FILES_PREFIX) else path


def route(
    context: Context,
    pattern: str,
    name: str,
    handler: Handler,
    method: str,
    *,
    auth: bool = True,
) -> Route:
    """The route ``method pattern`` served by ``handler``.

    With ``auth``, the request needs a bearer token of a project of this
    server, and the injected faults of endpoint ``name`` apply to it.
    """

    async def serve(request: Request) -> Response:
        started = time.perf_counter()
        try:
            response = await _faulted(context, name) if auth else None
            if response is None:
                project = _authenticate(context, request) if auth else ""
                response = await handler(context, request, project)
        except ApiError as err:
            response = PlainTextResponse(err.message, err.status)
        except Exception:
            log.exception("%s %s failed", request.method, shown_path(request.url.path))
            response = PlainTextResponse("Internal error of the local Requence; see its log.", 500)
        if log.isEnabledFor(logging.DEBUG):  # the request's URL is not made otherwise
            log.debug(
                "%s %s -> %d (%.1f ms)",
                request.method,
                shown_path(request.url.path),
                response.status_code,
                (time.perf_counter() - started) * 1000,
            )
        return response

    return Route(pattern, serve, methods=[method], name=name)


async def _faulted(context: Context, name: str) -> Response | None:
    faults = context.faults
    if faults.latency > 0:
        await asyncio.sleep(faults.latency)
    status = faults.take_failure(name)
    if status is not None:
        return PlainTextResponse("Service unavailable (injected fault).", status)
    return None


def _authenticate(context: Context, request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, bearer = header.partition(" ")
    if scheme.lower() != "bearer" or not bearer.strip():
        raise ApiError(401, "Missing bearer token: send 'Authorization: Bearer <token>'.")
    project = context.projects.project_of(bearer.strip())
    if project is None:
        raise ApiError(401, "Unknown bearer token: it belongs to no project of this server.")
    return project
