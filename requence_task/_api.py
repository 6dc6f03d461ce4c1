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
import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import requests

from ._errors import ApiError, RequenceError, TaskAbortedError, TaskError, TaskNotFoundError
from ._http import RetryState, Transport, Unreachable, error_text
from ._models import Created, Prepared, TaskInfo
from ._protocol import (
    IDLE,
    STATUS_ABORTED_BEFORE_FINALIZE,
    STATUS_CONFLICT,
    STOPPED,
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
from ._wire import created_urls, prepared, raw_status, status_text, task_info, watch_body

log = logging.getLogger("requence_task")


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

    # --- tasks by id ----------------------------------------------------------------------

    def get(self, task_id: str) -> TaskInfo:
        """``GET /task/{id}``: what Requence knows of a task now.

        Raises:
            TaskNotFoundError: No such task for this token.
        """
        return task_info(task_id, self._get_body(task_id))

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
