"""The HTTP face of the local server: a Starlette app serving the task API.

:func:`build_app` makes the app over one :class:`~._context.Context`; the
server (:mod:`._server`) builds that and hands it over. Every route is made
by :func:`._endpoint.route` (faults, bearer token, errors, the log), every
pattern comes from :mod:`requence_task._protocol`, and the watch routes answer
with :func:`._feed.feed`. The pages' routes come from :mod:`._pages`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .._protocol import (
    ABORT_ROUTE,
    ACK_ROUTE,
    FINALIZE_ROUTE,
    GET_ROUTE,
    PREPARE_ROUTE,
    PRIORITY_DEFAULT,
    PRIORITY_MAX,
    PRIORITY_MIN,
    PROTECT_ROUTE,
    TYPES_PATH,
    WATCH_ALL_FILTER_KEY,
    WATCH_ALL_PATH,
    WATCH_ROUTE,
    finalize_path,
    get_path,
    priority_to_wire,
    show_path,
    watch_path,
)
from ._context import Context
from ._endpoint import Handler, route
from ._engine import ApiError
from ._feed import feed
from ._fileroutes import file_routes
from ._pages import page_routes
from ._store import compact_json

_WATCH_BODY_LIMIT = 64 * 1024
"""Largest body of a watch, a watch-all or an abort, in bytes."""


def build_app(context: Context) -> Starlette:
    """The ASGI app of one server: the API's routes and the pages', over ``context``."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        context.hub.attach(asyncio.get_running_loop())
        yield

    def api(pattern: str, name: str, handler: Handler, method: str) -> Route:
        return route(context, pattern, name, handler, method)

    return Starlette(
        routes=[
            api(PREPARE_ROUTE, "prepare", prepare, "POST"),
            api(FINALIZE_ROUTE, "finalize", finalize, "POST"),
            api(WATCH_ALL_PATH, "watch-all", watch_all, "POST"),
            api(WATCH_ROUTE, "watch", watch, "POST"),
            api(ABORT_ROUTE, "abort", abort, "POST"),
            api(PROTECT_ROUTE, "protect", protect, "POST"),
            api(ACK_ROUTE, "ack", ack, "POST"),
            api(TYPES_PATH, "types", types, "GET"),
            api(GET_ROUTE, "get", get, "GET"),
            # The files service (capability URLs, no token).
            *file_routes(context),
            # The browser pages: the task list at /, and each task's live page.
            *page_routes(context),
        ],
        lifespan=lifespan,
    )


# --- the API's handlers ------------------------------------------------------------


async def prepare(context: Context, request: Request, project: str) -> Response:
    task = context.engine.prepare(project, request.path_params["template"])
    config = context.config
    return JSONResponse(
        {
            "taskId": task.id,
            "finalizeUrl": config.base_url + finalize_path(task.id),
            "branch": task.branch,
            "fileUrls": context.files.file_urls(task.id),
            "limits": {
                "maxPayloadSize": config.max_payload_size,
                "maxFileSize": config.max_file_size,
            },
        }
    )


async def finalize(context: Context, request: Request, project: str) -> Response:
    task_id = request.path_params["task_id"]
    body = await _json_object(request, context.config.max_payload_size)
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise ApiError(400, "'name' must be a string or null.")
    priority = body.get("priority", priority_to_wire(PRIORITY_DEFAULT))
    if (
        not isinstance(priority, int)
        or isinstance(priority, bool)
        or not PRIORITY_MIN <= priority <= PRIORITY_MAX
    ):
        raise ApiError(400, f"'priority' must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX}.")
    require_ack = body.get("requireAck", False)
    if require_ack is None:
        require_ack = False
    if not isinstance(require_ack, bool):
        raise ApiError(400, "'requireAck' must be true or false.")
    task = context.engine.finalize(
        task_id,
        project,
        name=name,
        input=body.get("input"),
        priority=priority,
        require_ack=require_ack,
    )
    base_url = context.config.base_url
    return JSONResponse(
        {
            "taskId": task.id,
            "urls": {
                "watch": base_url + watch_path(task.id),
                "show": base_url + show_path(task.id),
            },
        }
    )


async def watch(context: Context, request: Request, project: str) -> Response:
    task_id = request.path_params["task_id"]
    context.engine.owned(task_id, project)
    after, since = _cursor(await _json_object(request, _WATCH_BODY_LIMIT, empty_ok=True))
    return feed(context, task_id=task_id, after=after, since=since)


async def watch_all(context: Context, request: Request, project: str) -> Response:
    body = await _json_object(request, _WATCH_BODY_LIMIT, empty_ok=True)
    after, since = _cursor(body)
    only = body.get(WATCH_ALL_FILTER_KEY)
    types: frozenset[str] | None = None
    if only is not None:
        if not isinstance(only, list) or not all(isinstance(t, str) for t in only):
            raise ApiError(400, f"'{WATCH_ALL_FILTER_KEY}' must be a list of update type names.")
        types = frozenset(only)
    return feed(context, project=project, after=after, since=since, types=types)


async def abort(context: Context, request: Request, project: str) -> Response:
    raw = await request.body()
    if len(raw) > _WATCH_BODY_LIMIT:
        raise ApiError(413, "The abort reason is longer than 64 KiB.")
    try:
        reason = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ApiError(400, "The abort reason must be UTF-8 text.") from err
    context.engine.abort(request.path_params["task_id"], project, reason or None)
    return PlainTextResponse("aborted")


async def protect(context: Context, request: Request, project: str) -> Response:
    context.engine.protect(request.path_params["task_id"], project)
    return PlainTextResponse("protected")


async def ack(context: Context, request: Request, project: str) -> Response:
    context.engine.ack(request.path_params["task_id"], project)
    return PlainTextResponse("acknowledged")


async def get(context: Context, request: Request, project: str) -> Response:
    if get_path(request.path_params["task_id"]) == WATCH_ALL_PATH:  # GET of a POST-only path
        return PlainTextResponse("Method Not Allowed", 405, headers={"Allow": "POST"})
    task, data, errors = context.engine.get(request.path_params["task_id"], project)
    return JSONResponse(
        {
            "status": task.status,
            "statusText": task.status_text,
            "taskTemplate": task.template,
            "name": task.name,
            "branch": task.branch,
            "input": task.input,
            "result": task.result,
            "nodesData": [{"alias": a, "data": d} for a, d in data],
            "nodesError": [{"alias": a, "error": e} for a, e in errors],
            "exit": task.exit,
            "rootTaskId": task.root_task_id,
        }
    )


async def types(context: Context, request: Request, project: str) -> Response:
    from ._typegen import generate_python_types

    schemas = {name: t.input_schema for name, t in context.engine.templates.items()}
    return JSONResponse(generate_python_types(schemas))


# --- reading requests ----------------------------------------------------------------


async def _json_object(request: Request, limit: int, *, empty_ok: bool = False) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(
            413, f"The request body is larger than this server's limit of {limit} bytes."
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413, f"The request body is larger than this server's limit of {limit} bytes."
            )
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if empty_ok:
            return {}
        raise ApiError(400, "The request body is empty; send a JSON object.")
    try:
        body = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
        # What cannot be written back as strict UTF-8 JSON (lone surrogates) is refused
        # here, not deep in storage after a stream has begun.
        compact_json(body).encode("utf-8")
    except RecursionError:
        raise ApiError(400, "The request body is JSON nested too deeply.") from None
    except (UnicodeError, ValueError) as err:
        raise ApiError(400, f"The request body is not valid JSON: {err}.") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"The request body must be a JSON object, not {type(body).__name__}.")
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
"""What ``json.loads(raw, parse_constant=_reject_constant)`` uses, made once."""


def _cursor(body: dict[str, Any]) -> tuple[int | None, float | None]:
    """``(lastPosition, since as epoch seconds)`` of a watch request body."""
    last = body.get("lastPosition")
    if last is not None and (
        not isinstance(last, int) or isinstance(last, bool) or not 0 <= last < 2**63
    ):
        raise ApiError(400, "'lastPosition' must be a non-negative integer below 2**63, or absent.")
    since = parse_since(body.get("since"))  # checked even when lastPosition wins
    return (last, None) if last is not None else (None, since)


def parse_since(value: Any) -> float | None:
    """``since`` as epoch seconds: null, an ISO-8601 date-time (naive = local), or a date."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "'since' must be an ISO-8601 date or date-time string, or null.")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ApiError(
                400, f"'since' is not an ISO-8601 date or date-time: {value[:64]!r}."
            ) from None
        moment = datetime(day.year, day.month, day.day)
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        raise ApiError(400, f"'since' is out of the range of dates: {value[:64]!r}.") from None
