"""``RequenceApi``: every call of the task API, typed.

Each method is one endpoint: it builds the URL from :mod:`requence_task._protocol`'s
paths, sends through the client's :class:`~requence_task._http.Transport`
(retrying within its budget where a retry is safe), maps the answers this
call may get to the package's errors, and reads the body with
:mod:`requence_task._wire`'s parsers. Nothing else in the package sends a
request; the handle, the follower and the functions by id call these.
"""

from __future__ import annotations

import email.utils
import functools
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any
from urllib.parse import quote

import requests

from ._errors import (
    ApiError,
    ClaimCheckError,
    ClientClosedError,
    FileReadError,
    RequenceError,
    TaskAbortedError,
    TaskError,
    TaskNotFoundError,
    TruncatedError,
    UploadError,
)
from ._files import host_of
from ._http import RetryState, Transport, Unreachable, error_text, timed_out
from ._models import Created, Prepared, TaskInfo
from ._protocol import (
    FILE_SIZE_HEADER,
    IDLE,
    STATUS_ABORTED_BEFORE_FINALIZE,
    STATUS_CONFLICT,
    STATUS_TOO_LARGE,
    STOPPED,
    STREAM_PROTOCOL_FRAMED,
    STREAM_PROTOCOL_HEADER,
    TYPES_PATH,
    WATCH_ALL_PATH,
    abort_path,
    ack_path,
    get_path,
    prepare_path,
    protect_path,
    show_path,
    watch_path,
)
from ._stream import ResumingStream
from ._wire import (
    created_urls,
    prepared,
    raw_status,
    status_text,
    task_info,
    uploaded,
    watch_body,
)

log = logging.getLogger("requence_task")


def _of_task(task_id: str | None) -> str:
    return f"Task {task_id}: " if task_id else ""


def server_time(date_header: str | None) -> float | None:
    """The server's clock (epoch seconds) from an HTTP ``Date`` header."""
    if not date_header:
        return None
    try:
        return email.utils.parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class RequenceApi:
    """The task API of one Requence, through one client's transport.

    Args:
        transport: The client's transport (session, time-outs, retries).
        base_url: The API base URL, from the access token.
    """

    def __init__(self, transport: Transport, base_url: str) -> None:
        self.transport = transport
        self.base_url = base_url

    def __repr__(self) -> str:
        return f"<RequenceApi {self.base_url}>"

    def url(self, path: str) -> str:
        """The URL of a path of the API (from ``_protocol``)."""
        return self.base_url + path

    # --- creating a task ------------------------------------------------------------

    def prepare(self, template: str, *, state: RetryState | None = None) -> Prepared:
        """``POST /task/prepare/{template}``: a new task's id and finalize URL.

        Raises:
            TaskError: Requence refused to create a task of this template.
            ApiError: The answer lacks the task's id or finalize URL.
        """
        transport = self.transport
        url = self.url(prepare_path(quote(template, safe="")))
        what = f"prepare of a task of template {template!r}"

        def attempt() -> tuple[dict[str, Any], str | None]:
            response = transport.send("POST", url)
            if not response.ok:
                message = error_text(response)
                response.close()
                raise TaskError(
                    f"Requence refused to create a task of template {template!r} "
                    f"(HTTP {response.status_code}): {message}",
                    status=response.status_code,
                    template=template,
                    server_message=message,
                )
            date = response.headers.get("Date")
            return transport.json(response, what=what), date

        answer, date = transport.retrying(attempt, what=what, state=state)
        return prepared(answer, what=what, server_time=server_time(date))

    def finalize(
        self,
        task: Prepared,
        body: bytes,
        *,
        template: str | None,
        state: RetryState | None = None,
        aborted_with: Callable[[], str | None] = lambda: None,
    ) -> Created:
        """``POST`` to the finalize URL: send the input and start the task.

        A retry never creates a second task nor reports a false failure: after
        a lost answer it asks whether the first attempt landed, and a conflict
        means an earlier attempt did.

        Args:
            aborted_with: The reason the handle aborted the task with, if it did.

        Raises:
            TaskAbortedError: The task was aborted before it started (410).
            TaskError: Requence rejected the task (its input, say).
        """
        transport = self.transport
        task_id = task.task_id
        what = f"finalize of task {task_id}"

        def attempt() -> Created:
            try:
                response = transport.send(
                    "POST", task.finalize_url, body=body, content_type="application/json"
                )
            except Unreachable:
                # The answer may be lost after the server acted: ask before retrying,
                # so a retry never creates a second task nor reports a false failure.
                if self.finalize_landed(task_id):
                    return self.fallback_created(task_id)
                raise
            if response.ok:
                urls = created_urls(transport.json(response, what=what))
                if urls is None:
                    return self.fallback_created(task_id)
                return Created(task_id, *urls)
            status = response.status_code
            message = error_text(response)
            response.close()
            if status == STATUS_CONFLICT:
                return self.fallback_created(task_id)  # an earlier attempt landed
            if status == STATUS_ABORTED_BEFORE_FINALIZE:
                raise TaskAbortedError(
                    self._abort_reason(task_id, aborted_with()),
                    task_id=task_id,
                    template=template,
                    status=status,
                )
            raise TaskError(
                f"Requence rejected the task of template {template!r} (HTTP {status}): {message}",
                status=status,
                template=template,
                task_id=task_id,
                server_message=message,
            )

        return transport.retrying(attempt, what=what, state=state)

    def _abort_reason(self, task_id: str, ours: str | None) -> str | None:
        """Why a task was aborted before it started: the handle's reason, or Requence's."""
        if ours is not None:
            return ours
        try:
            return status_text(self._get_body(task_id))
        except RequenceError:
            return None

    def finalize_landed(self, task_id: str) -> bool:
        """Whether a finalize whose answer was lost did reach the server (one ``GET``)."""
        try:
            response = self.transport.send("GET", self.url(get_path(quote(task_id, safe=""))))
        except Unreachable:
            return False
        try:
            if not response.ok:
                return False
            answer = response.json()
            if not isinstance(answer, dict):
                return False
            status = raw_status(answer)
        except ValueError:
            return False
        finally:
            response.close()
        return status not in (IDLE, STOPPED, "")

    def fallback_created(self, task_id: str) -> Created:
        """A task's URLs from the protocol's paths, when no finalize answer gave them."""
        quoted = quote(task_id, safe="")
        return Created(task_id, self.url(watch_path(quoted)), self.url(show_path(quoted)))

    # --- files, streams and claim checks ----------------------------------------------------

    def upload(
        self,
        url: str,
        body: Callable[[], bytes | Iterable[bytes] | IO[bytes] | None],
        *,
        mime: str,
        kind: str,
        path: str,
        max_file_size: int | None,
        resend: Callable[[], bool] = lambda: True,
    ) -> tuple[str, str | None, int | None]:
        """``POST`` a file, a stream's registration or body, or a claim check's JSON to a
        file URL (no ``Authorization`` header); ``(url, mime, size)`` of its answer.

        Args:
            body: Makes the body of each attempt (a bytes, a file object, chunks).
            kind: ``file``, ``stream``, ``stream body`` or ``claim check``: what the
                answer must hold, and what messages say.
            path: Where the value is in the input (``input.rows``), for messages.
            resend: Whether an attempt that found Requence unreachable may be
                made again (not for a stream's body once any of it was sent:
                that fails at once).

        Raises:
            UploadError: Requence refused it (413 over its size limit, any other
                non-2xx), or its answer is not what the protocol says.
        """
        transport = self.transport
        what = f"the upload of {path} ({kind})"
        headers = {FILE_SIZE_HEADER: str(max_file_size)} if max_file_size is not None else {}

        def attempt() -> tuple[str, str | None, int | None]:
            try:
                response = transport.send(
                    "POST", url, body=body(), content_type=mime, headers=headers, files=True
                )
            except Unreachable as err:
                if resend():
                    raise
                raise UploadError(
                    f"The upload of {path} was cut off ({err.reason}) after part of the stream "
                    "was sent; a stream can be read only once, so it cannot be sent again. "
                    "The task was not started.",
                    path=path,
                    status=err.status,
                ) from None
            with response:
                if not response.ok:
                    status = response.status_code
                    message = error_text(response)
                    if status == STATUS_TOO_LARGE:
                        raise UploadError(
                            f"{path} is larger than Requence accepts (HTTP 413: {message}); "
                            "the task was not started. Send a smaller file, or split it.",
                            path=path,
                            status=status,
                            server_message=message,
                        )
                    raise UploadError(
                        f"The upload of {path} was refused with HTTP {status}: {message}; "
                        "the task was not started.",
                        path=path,
                        status=status,
                        server_message=message,
                    )
                if kind == "stream body":
                    return url, None, None
                try:
                    return uploaded(transport.json(response, what=what), kind=kind)
                except (ApiError, ValueError) as err:
                    raise UploadError(
                        f"The upload of {path} got an answer the protocol does not allow "
                        f"({err}); the task was not started.",
                        path=path,
                        status=response.status_code,
                    ) from None

        return transport.retrying(attempt, what=what)

    def opener(self, url: str, *, chunk_size: int, framed: bool) -> tuple[Iterator[bytes], bool]:
        """Read a file URL (no ``Authorization`` header): the body's chunks as they
        come, and whether the answer is framed. See :class:`_files.Opener`.

        The request's answer is retried while Requence is unreachable; the body
        has the read time-out as its inactivity time-out, and stops when the
        client is closed.

        Raises:
            FileReadError: Requence answered with an error (404: the file is gone).
        """
        transport = self.transport
        where = host_of(url)
        headers = {STREAM_PROTOCOL_HEADER: STREAM_PROTOCOL_FRAMED} if framed else {}
        what = f"a download from {where}"

        def attempt() -> requests.Response:
            response = transport.send("GET", url, stream=True, headers=headers, files=True)
            if not response.ok:
                status = response.status_code
                message = error_text(response)
                response.close()
                gone = " (it no longer exists, or the URL is wrong)" if status == 404 else ""
                raise FileReadError(
                    f"{what} failed with HTTP {status}{gone}: {message}", status=status
                )
            return response

        response = transport.retrying(attempt, what=what)
        echoed = response.headers.get(STREAM_PROTOCOL_HEADER, "").lower() == STREAM_PROTOCOL_FRAMED
        return self._body(response, chunk_size, what), framed and echoed

    def _body(self, response: requests.Response, chunk_size: int, what: str) -> Iterator[bytes]:
        transport = self.transport
        transport.reading(response)
        seen = 0
        try:
            for chunk in response.iter_content(chunk_size):
                if transport.stop.is_set():
                    raise ClientClosedError(f"{what} stopped: the requence_task client was closed.")
                seen += len(chunk)
                yield chunk
        except (requests.RequestException, OSError) as err:
            if transport.stop.is_set():
                raise ClientClosedError(
                    f"{what} stopped: the requence_task client was closed."
                ) from None
            seconds = transport.timeouts.read
            why = (
                f"no bytes came for {seconds:g} s"
                if timed_out(err)
                else "the connection was cut off"
            )
            raise TruncatedError(f"{what} ended after {seen} bytes: {why}") from None
        finally:
            transport.done_reading(response)
            response.close()

    def fetch_claim_check(self, url: str, path: str, task_id: str | None) -> object:
        """The JSON value behind a claim check (``GET`` its URL, no ``Authorization``).

        Raises:
            ClaimCheckError: It could not be fetched or is not JSON; names ``path``.
        """
        try:
            chunks, _ = self.opener(url, chunk_size=1 << 16, framed=False)
            text = b"".join(chunks)
        except RequenceError as err:
            if isinstance(err, ClientClosedError):
                raise
            raise ClaimCheckError(
                f"{_of_task(task_id)}{path} was sent by claim check, and fetching it failed: {err}",
                path=path,
                task_id=task_id,
            ) from None
        try:
            return json.loads(text)
        except ValueError:
            raise ClaimCheckError(
                f"{_of_task(task_id)}{path} was sent by claim check, and what its URL holds "
                f"({len(text)} bytes from {host_of(url)}) is not JSON",
                path=path,
                task_id=task_id,
            ) from None

    # --- tasks by id ----------------------------------------------------------------------

    def get(
        self,
        task_id: str,
        *,
        inbound: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> TaskInfo:
        """``GET /task/{id}``: what Requence knows of a task now.

        Args:
            inbound: Turns the references of the answer into objects (and fetches
                its claim checks) before it is read.

        Raises:
            TaskNotFoundError: No such task for this token.
        """
        body = self._get_body(task_id)
        return task_info(task_id, inbound(body) if inbound is not None else body)

    def _get_body(self, task_id: str) -> dict[str, Any]:
        transport = self.transport
        url = self.url(get_path(quote(task_id, safe="")))
        what = f"get of task {task_id}"

        def attempt() -> dict[str, Any]:
            response = transport.send("GET", url)
            if response.status_code == 404:
                message = error_text(response)
                response.close()
                raise TaskNotFoundError(
                    f"{what}: no task {task_id} exists for this token ({message})", task_id=task_id
                )
            transport.expect_ok(response, what=what)
            return transport.json(response, what=what)

        return transport.retrying(attempt, what=what)

    def abort(self, task_id: str, reason: str | None) -> None:
        """``POST /task/abort/{id}``, with the reason as the body.

        Raises:
            TaskNotFoundError: No such task for this token.
            TaskError: The task already ended (409).
        """
        self._post_by_id(
            abort_path(quote(task_id, safe="")),
            task_id,
            what=f"abort of task {task_id}",
            body=(reason or "").encode("utf-8"),
        )

    def protect(self, task_id: str) -> None:
        """``POST /task/protect/{id}``: keep the task from automatic cleanup."""
        self._post_by_id(
            protect_path(quote(task_id, safe="")), task_id, what=f"protect of task {task_id}"
        )

    def ack(self, task_id: str) -> None:
        """``POST /task/ack/{id}``: acknowledge the delivery of a task's end.

        Raises:
            TaskError: The task is not awaiting delivery (409).
        """
        self._post_by_id(ack_path(quote(task_id, safe="")), task_id, what=f"ack of task {task_id}")

    def _post_by_id(self, path: str, task_id: str, *, what: str, body: bytes | None = None) -> None:
        transport = self.transport
        url = self.url(path)
        lost = False  # an earlier attempt may have landed with its answer lost

        def attempt() -> None:
            nonlocal lost
            try:
                response = transport.send(
                    "POST", url, body=body, content_type="text/plain; charset=utf-8"
                )
            except Unreachable as err:
                lost = lost or err.status is None
                raise
            status = response.status_code
            if response.ok:
                response.close()
                return
            message = error_text(response)
            response.close()
            if status == 404:
                raise TaskNotFoundError(
                    f"{what}: no task {task_id} exists for this token ({message})", task_id=task_id
                )
            if status == STATUS_CONFLICT:
                if lost:
                    # The conflict is our own earlier attempt's doing: it worked.
                    log.debug("%s: 409 after a lost answer; the first attempt landed", what)
                    return
                raise TaskError(f"{what}: {message}", status=status, task_id=task_id)
            raise TaskError(
                f"{what} failed with HTTP {status}: {message}", status=status, task_id=task_id
            )

        transport.retrying(attempt, what=what)

    # --- the project --------------------------------------------------------------------

    def python_types(self) -> dict[str, Any]:
        """``GET /task/types/python``: the generated type files, by file name."""
        transport = self.transport
        url = self.url(TYPES_PATH)
        what = "the Python types of the task templates"

        def attempt() -> dict[str, Any]:
            response = transport.send("GET", url)
            transport.expect_ok(response, what=what)
            return transport.json(response, what=what)

        return transport.retrying(attempt, what=what)

    # --- update streams -------------------------------------------------------------------

    def watch(
        self,
        url: str,
        *,
        what: str,
        task_id: str | None = None,
        since: str | None = None,
        only: list[str] | None = None,
        stop: threading.Event | None = None,
        on_connect: Callable[[], object] | None = None,
        on_reconnecting: Callable[[int, float], object] | None = None,
    ) -> ResumingStream:
        """The resuming stream of an update stream's URL (a task's ``urls.watch``).

        Nothing is sent until it is iterated.

        Args:
            what: Names the stream in errors and logs.
            task_id: The task, for the attributes of :class:`TaskNotFoundError`.
            since: ISO-8601 ``since`` of the first request (``None``: from the start).
            only: Update types to receive (watch-all's filter).
        """
        transport = self.transport
        return ResumingStream(
            functools.partial(self._connect, url, what, task_id, since, only),
            retry=transport.retry,
            inactivity=transport.timeouts.stream_inactivity,
            what=what,
            stop=stop,
            on_connect=on_connect,
            on_reconnecting=on_reconnecting,
        )

    def watch_all(
        self,
        *,
        what: str,
        since: str | None = None,
        only: list[str] | None = None,
        stop: threading.Event | None = None,
        on_connect: Callable[[], object] | None = None,
        on_reconnecting: Callable[[int, float], object] | None = None,
    ) -> ResumingStream:
        """The resuming stream of every task the token may see (``watch-all``)."""
        return self.watch(
            self.url(WATCH_ALL_PATH),
            what=what,
            since=since,
            only=only,
            stop=stop,
            on_connect=on_connect,
            on_reconnecting=on_reconnecting,
        )

    def _connect(
        self,
        url: str,
        what: str,
        task_id: str | None,
        since: str | None,
        only: list[str] | None,
        last_position: int | None,
    ) -> requests.Response:
        """One connection request of a stream, from ``last_position`` (or ``since``)."""
        transport = self.transport
        response = transport.send(
            "POST",
            url,
            body=watch_body(since=since, last_position=last_position, only=only),
            content_type="application/json",
            stream=True,
            read_timeout=transport.timeouts.stream_inactivity,
            headers={"Accept": "text/event-stream"},
        )
        if response.status_code == 404:
            message = error_text(response)
            response.close()
            raise TaskNotFoundError(
                f"{what}: Requence knows no such task ({message})", task_id=task_id
            )
        if not response.ok:
            message = error_text(response)
            response.close()
            raise ApiError(
                f"{what}: Requence refused the stream with HTTP {response.status_code}: {message}",
                status=response.status_code,
                body=message,
            )
        kind = response.headers.get("Content-Type", "")
        if not kind.startswith("text/event-stream"):
            response.close()
            raise ApiError(
                f"{what}: Requence answered with {kind or 'no content type'}, not an event "
                "stream; is the token's base URL the Requence API?",
                status=response.status_code,
            )
        return response
