"""The HTTP face of the local server: a Starlette app serving the task API."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from .._protocol import (
    PRIORITY_DEFAULT,
    PRIORITY_MAX,
    PRIORITY_MIN,
    TERMINAL_UPDATE_TYPES,
    WATCH_ALL_FILTER_KEY,
    finalize_path,
    priority_to_wire,
    show_path,
    watch_path,
)
from ._engine import ApiError
from ._pages import page_routes
from ._store import ENDED_STATUSES, Event

if TYPE_CHECKING:
    from ._server import LocalRequence

log = logging.getLogger("requence_task.local")

Handler = Callable[[Request, str], Awaitable[Response]]
_PAGE = 500


def build_app(rq: LocalRequence) -> Starlette:
    """The ASGI app of one :class:`LocalRequence`."""

    def endpoint(
        name: str, handler: Handler, *, auth: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await _faulted(name) if auth else None
                if response is None:
                    project = _authenticate(request) if auth else ""
                    response = await handler(request, project)
            except ApiError as err:
                response = PlainTextResponse(err.message, err.status)
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                response = PlainTextResponse(
                    "Internal error of the local Requence; see its log.", 500
                )
            log.debug(
                "%s %s -> %d (%.1f ms)",
                request.method,
                request.url.path,
                response.status_code,
                (time.perf_counter() - started) * 1000,
            )
            return response

        return serve

    async def _faulted(name: str) -> Response | None:
        faults = rq.faults
        if faults.latency > 0:
            await asyncio.sleep(faults.latency)
        status = faults.take_failure(name)
        if status is not None:
            return PlainTextResponse("Service unavailable (injected fault).", status)
        return None

    def _authenticate(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, bearer = header.partition(" ")
        if scheme.lower() != "bearer" or not bearer.strip():
            raise ApiError(401, "Missing bearer token: send 'Authorization: Bearer <token>'.")
        project = rq.project_of(bearer.strip())
        if project is None:
            raise ApiError(401, "Unknown bearer token: it belongs to no project of this server.")
        return project

    async def prepare(request: Request, project: str) -> Response:
        task = rq.engine.prepare(project, request.path_params["template"])
        return JSONResponse(
            {
                "taskId": task.id,
                "finalizeUrl": rq.base_url + finalize_path(task.id),
                "branch": task.branch,
                "limits": {
                    "maxPayloadSize": rq.max_payload_size,
                    "maxFileSize": rq.max_file_size,
                },
            }
        )

    async def finalize(request: Request, project: str) -> Response:
        task_id = request.path_params["task_id"]
        body = await _json_object(request, rq.max_payload_size)
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise ApiError(400, "'name' must be a string or null.")
        priority = body.get("priority", priority_to_wire(PRIORITY_DEFAULT))
        if (
            not isinstance(priority, int)
            or isinstance(priority, bool)
            or not PRIORITY_MIN <= priority <= PRIORITY_MAX
        ):
            raise ApiError(
                400, f"'priority' must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX}."
            )
        require_ack = body.get("requireAck", False)
        if require_ack is None:
            require_ack = False
        if not isinstance(require_ack, bool):
            raise ApiError(400, "'requireAck' must be true or false.")
        task = rq.engine.finalize(
            task_id,
            project,
            name=name,
            input=body.get("input"),
            priority=priority,
            require_ack=require_ack,
        )
        return JSONResponse(
            {
                "taskId": task.id,
                "urls": {
                    "watch": rq.base_url + watch_path(task.id),
                    "show": rq.base_url + show_path(task.id),
                },
            }
        )

    async def watch(request: Request, project: str) -> Response:
        task_id = request.path_params["task_id"]
        rq.engine.owned(task_id, project)
        after, since = _cursor(await _json_object(request, 64 * 1024, empty_ok=True))
        return _sse(_stream(task_id=task_id, project=None, after=after, since=since, types=None))

    async def watch_all(request: Request, project: str) -> Response:
        body = await _json_object(request, 64 * 1024, empty_ok=True)
        after, since = _cursor(body)
        only = body.get(WATCH_ALL_FILTER_KEY)
        types: frozenset[str] | None = None
        if only is not None:
            if not isinstance(only, list) or not all(isinstance(t, str) for t in only):
                raise ApiError(
                    400, f"'{WATCH_ALL_FILTER_KEY}' must be a list of update type names."
                )
            types = frozenset(only)
        return _sse(_stream(task_id=None, project=project, after=after, since=since, types=types))

    async def abort(request: Request, project: str) -> Response:
        raw = await request.body()
        if len(raw) > 64 * 1024:
            raise ApiError(413, "The abort reason is longer than 64 KiB.")
        try:
            reason = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ApiError(400, "The abort reason must be UTF-8 text.") from err
        rq.engine.abort(request.path_params["task_id"], project, reason or None)
        return PlainTextResponse("aborted")

    async def protect(request: Request, project: str) -> Response:
        rq.engine.protect(request.path_params["task_id"], project)
        return PlainTextResponse("protected")

    async def ack(request: Request, project: str) -> Response:
        rq.engine.ack(request.path_params["task_id"], project)
        return PlainTextResponse("acknowledged")

    async def get(request: Request, project: str) -> Response:
        if request.path_params["task_id"] == "watch-all":  # GET of a POST-only path
            return PlainTextResponse("Method Not Allowed", 405, headers={"Allow": "POST"})
        task, data, errors = rq.engine.get(request.path_params["task_id"], project)
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
            }
        )

    async def types(request: Request, project: str) -> Response:
        from ._typegen import generate_python_types

        schemas = {name: t.input_schema for name, t in rq.engine.templates.items()}
        return JSONResponse(generate_python_types(schemas))

    def _sse(frames: AsyncIterator[bytes]) -> Response:
        return StreamingResponse(
            frames,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _stream(
        *,
        task_id: str | None,
        project: str | None,
        after: int | None,
        since: float | None,
        types: frozenset[str] | None,
    ) -> AsyncIterator[bytes]:
        """Frames of one stream: history from the store, then live events."""
        store, hub = rq.engine.store, rq.hub
        sub = hub.subscribe(task_id=task_id, project=project)
        sent = 0
        cut_after = rq.faults.cut_streams_after

        def read() -> list[Event]:
            if task_id is not None:
                return store.task_events(task_id, after=after, since=since, limit=_PAGE)
            assert project is not None
            return store.project_events(project, after=after, since=since, types=types, limit=_PAGE)

        def frame(event: Event) -> bytes:
            return f"id: {event.position}\nevent: {event.type}\ndata: {event.data}\n\n".encode()

        try:
            while True:
                # Catch up from the store, page by page.
                while True:
                    events = read()
                    # One write per page of history: a reader that went away
                    # costs one failed write, not one per event.
                    batch: list[bytes] = []
                    done = False
                    for event in events:
                        batch.append(frame(event))
                        after = event.position
                        sent += 1
                        if task_id is not None and event.type in TERMINAL_UPDATE_TYPES:
                            done = True
                            break
                        if cut_after is not None and sent >= cut_after:
                            done = True
                            break
                    if batch:
                        yield b"".join(batch)
                    if done:
                        return
                    if len(events) < _PAGE:
                        break
                if task_id is not None:
                    task = store.task(task_id)
                    if task is None or task.status in ENDED_STATUSES:
                        if task is not None and read():
                            continue  # the end arrived while we looked: send it
                        return
                # Live: new events from the hub, keep-alive comments meanwhile.
                while not sub.overflowed:
                    try:
                        event_or_none = await asyncio.wait_for(
                            sub.queue.get(), rq.keepalive_interval
                        )
                    except asyncio.TimeoutError:
                        yield b": keep-alive\n\n"
                        if task_id is not None and store.task(task_id) is None:
                            return  # discarded by cleanup
                        continue
                    if event_or_none is None:
                        return  # server shutdown
                    event = event_or_none
                    if after is not None and event.position <= after:
                        continue
                    if types is not None and event.type not in types:
                        continue
                    terminal = task_id is not None and event.type in TERMINAL_UPDATE_TYPES
                    if after is None and since is not None and event.created_at < since:
                        if terminal:
                            return  # the end came before `since`: nothing more to send
                        continue
                    yield frame(event)
                    after = event.position
                    sent += 1
                    if terminal:
                        return
                    if cut_after is not None and sent >= cut_after:
                        return
                sub.reset()
        finally:
            sub.close()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        rq.hub.attach(asyncio.get_running_loop())
        yield

    def route(path: str, name: str, handler: Handler, method: str, auth: bool = True) -> Route:
        return Route(path, endpoint(name, handler, auth=auth), methods=[method], name=name)

    return Starlette(
        routes=[
            route("/task/prepare/{template:path}", "prepare", prepare, "POST"),
            route("/task/finalize/{task_id}", "finalize", finalize, "POST"),
            route("/task/watch-all", "watch-all", watch_all, "POST"),
            route("/task/watch/{task_id}", "watch", watch, "POST"),
            route("/task/abort/{task_id}", "abort", abort, "POST"),
            route("/task/protect/{task_id}", "protect", protect, "POST"),
            route("/task/ack/{task_id}", "ack", ack, "POST"),
            route("/task/types/python", "types", types, "GET"),
            route("/task/{task_id}", "get", get, "GET"),
            # The browser pages: the task list at /, and each task's live page.
            *page_routes(rq, route=route, stream=_stream),
        ],
        lifespan=lifespan,
    )


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
        body = json.loads(raw, parse_constant=_reject_constant)
        # What cannot be written back as strict UTF-8 JSON (lone surrogates) is refused
        # here, not deep in storage after a stream has begun.
        json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except RecursionError:
        raise ApiError(400, "The request body is JSON nested too deeply.") from None
    except (UnicodeError, ValueError) as err:
        raise ApiError(400, f"The request body is not valid JSON: {err}.") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"The request body must be a JSON object, not {type(body).__name__}.")
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


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
