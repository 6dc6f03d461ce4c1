"""The HTTP face of the files service: upload, stream registration and body, download.

Routes (capability URLs, no token: clients never send the bearer to them):

- ``POST /files/upload/{task_id}/{key}``: body = the bytes, ``Content-Type`` =
  the MIME type; answers ``{"url", "mime", "size"}``. A claim check is the
  same call with ``application/json``.
- ``POST /files/stream/{task_id}/{key}``: no body; registers a stream and
  answers ``{"url", "mime"}``.
- ``POST /files/{id}``: the body of a registered stream, written as it comes.
- ``GET /files/{id}``: a file's bytes; a stream's bytes as they are written,
  framed when asked with ``x-requence-stream-protocol: framed``.

Bodies are read and written in chunks, never whole into memory; more than
``max_file_size`` bytes is 413 (and nothing is kept, or the stream is truncated).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Final

import anyio
import anyio.to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .._errors import TruncatedError
from .._files import CHUNK_SIZE, DEFAULT_MIME, frame
from .._protocol import (
    FILE_ROUTE,
    FILE_SIZE_HEADER,
    FILES_STREAM_ROUTE,
    FILES_UPLOAD_ROUTE,
    FRAME_DATA,
    FRAME_END,
    FRAME_TRUNCATED,
    STATUS_CONFLICT,
    STATUS_TOO_LARGE,
    STREAM_PROTOCOL_FRAMED,
    STREAM_PROTOCOL_HEADER,
)
from ._blobs import FileStore, StreamClosed, StreamWriter, TooLarge
from ._context import Context
from ._endpoint import Handler, route
from ._engine import ApiError

DISCONNECT_REASON: Final = "the writer's connection closed before the stream's end"
_NO_SUCH_URL: Final = "No such files URL on this local Requence (or its task was deleted)."


def file_routes(context: Context) -> list[Route]:
    """The files service's routes, over ``context`` (no token)."""
    logging.getLogger("uvicorn.error").addFilter(_quiet_abort)

    def files(pattern: str, name: str, handler: Handler, method: str) -> Route:
        return route(context, pattern, name, handler, method, auth=False)

    return [
        files(FILES_UPLOAD_ROUTE, "files-upload", upload, "POST"),
        files(FILES_STREAM_ROUTE, "files-stream", register, "POST"),
        files(FILE_ROUTE, "files-body", stream_body, "POST"),
        files(FILE_ROUTE, "files-get", download, "GET"),
    ]


# --- handlers ----------------------------------------------------------------------


def _task_of(context: Context, request: Request) -> str:
    task_id = request.path_params["task_id"]
    if not context.files.key_ok(task_id, request.path_params["key"]):
        raise ApiError(404, _NO_SUCH_URL)
    if context.store.task(task_id) is None:
        raise ApiError(404, _NO_SUCH_URL)
    return str(task_id)


def _mime(request: Request) -> str:
    mime = request.headers.get("content-type", "").strip()
    return mime if "/" in mime else DEFAULT_MIME


def _limit(context: Context, request: Request) -> int:
    """The largest body accepted: ``max_file_size``, or a smaller ``file-size`` header."""
    limit = context.config.max_file_size
    asked = request.headers.get(FILE_SIZE_HEADER, "").strip()
    if asked.isdigit() and 0 < int(asked) < limit:
        limit = int(asked)
    return limit


def _too_large(limit: int) -> ApiError:
    return ApiError(
        STATUS_TOO_LARGE,
        f"The file is larger than this server's limit of {limit} bytes (max_file_size).",
    )


def _declared_over(request: Request, limit: int) -> bool:
    declared = request.headers.get("content-length", "").strip()
    return declared.isdigit() and int(declared) > limit


async def upload(context: Context, request: Request, project: str) -> Response:
    files = context.files
    task_id = _task_of(context, request)
    mime, limit = _mime(request), _limit(context, request)
    if _declared_over(request, limit):
        raise _too_large(limit)
    file_id = files.new_id()
    part = files.part_path(file_id)
    size = 0
    try:
        with part.open("wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                out.write(chunk)
    except ClientDisconnect:
        part.unlink(missing_ok=True)
        raise ApiError(400, "The upload's connection closed before its end.") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    row = files.commit(file_id, task_id, mime, size)
    return JSONResponse({"url": files.url(row.id), "mime": row.mime, "size": size})


async def register(context: Context, request: Request, project: str) -> Response:
    files = context.files
    task_id = _task_of(context, request)
    row = files.register_stream(task_id, _mime(request))
    return JSONResponse({"url": files.url(row.id), "mime": row.mime})


async def stream_body(context: Context, request: Request, project: str) -> Response:
    files = context.files
    file_id = request.path_params["file_id"]
    row = files.row(file_id)
    if row is None:
        raise ApiError(404, _NO_SUCH_URL)
    if row.kind != "stream":
        raise ApiError(STATUS_CONFLICT, "This URL is a file; only a stream takes a body.")
    limit = _limit(context, request)
    writer = files.begin_stream(file_id, limit)
    if writer is None:
        raise ApiError(STATUS_CONFLICT, "This stream already has its body (or had it).")
    if _declared_over(request, limit):
        writer.truncate(str(TooLarge(limit)))
        raise _too_large(limit)
    await _write_body(request, writer)
    return JSONResponse({"url": files.url(file_id), "mime": row.mime, "size": writer.size})


async def _write_body(request: Request, writer: StreamWriter) -> None:
    try:
        async for chunk in request.stream():
            writer.write(chunk)
    except TooLarge as err:
        raise _too_large(err.limit) from None
    except StreamClosed as err:
        raise ApiError(STATUS_CONFLICT, str(err)) from None
    except ClientDisconnect:
        writer.truncate(DISCONNECT_REASON)
        raise ApiError(400, DISCONNECT_REASON) from None
    except BaseException as err:
        writer.truncate(f"the local Requence failed while writing the stream: {err}")
        raise
    writer.finish()


async def download(context: Context, request: Request, project: str) -> Response:
    files = context.files
    file_id = request.path_params["file_id"]
    row = files.row(file_id)
    if row is None:
        raise ApiError(404, _NO_SUCH_URL)
    if row.kind == "file":
        # The type exactly as stored (no charset added).
        return FileResponse(files.path(file_id), headers={"content-type": row.mime})
    framed = request.headers.get(STREAM_PROTOCOL_HEADER, "").strip().lower() == (
        STREAM_PROTOCOL_FRAMED
    )
    return LiveStream(files, file_id, row.mime, framed=framed)


# --- a stream's answer, live ---------------------------------------------------------


class _AbortBody(Exception):
    """Ends an answer abruptly (no final chunk): a raw reader of a truncated stream
    sees an incomplete body. Never logged (see :func:`_quiet_abort`)."""


def _quiet_abort(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, _AbortBody)


def _empty() -> Iterator[bytes]:
    return iter(())


def _next(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


class LiveStream(StreamingResponse):
    """A stream's bytes as they are written: framed (data frames, then the end or
    truncated frame) or raw (aborted without its final chunk if truncated)."""

    def __init__(self, files: FileStore, file_id: str, mime: str, *, framed: bool) -> None:
        headers = {"content-type": mime}
        if framed:
            headers[STREAM_PROTOCOL_HEADER] = STREAM_PROTOCOL_FRAMED
        super().__init__(_empty(), headers=headers)
        self.files = files
        self.file_id = file_id
        self.framed = framed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cancelled = threading.Event()
        chunks = self.files.read_stream(self.file_id, CHUNK_SIZE, cancelled)
        truncated = False
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )

        async def body() -> None:
            nonlocal truncated
            while True:
                try:
                    chunk = await anyio.to_thread.run_sync(_next, chunks, abandon_on_cancel=True)
                except TruncatedError as err:
                    if not self.framed:
                        truncated = True
                        return
                    reason = str(err).encode("utf-8", "replace")
                    await send(
                        {
                            "type": "http.response.body",
                            "body": frame(FRAME_TRUNCATED, reason),
                            "more_body": True,
                        }
                    )
                    break
                if chunk is None:
                    if self.framed:
                        await send(
                            {
                                "type": "http.response.body",
                                "body": frame(FRAME_END),
                                "more_body": True,
                            }
                        )
                    break
                data = frame(FRAME_DATA, chunk) if self.framed else chunk
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        try:
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    await disconnected()
                    group.cancel_scope.cancel()

                group.start_soon(watch)
                await body()
                group.cancel_scope.cancel()
        finally:
            cancelled.set()
        if truncated:
            raise _AbortBody()
