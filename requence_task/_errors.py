"""The one tree of errors this package raises.

Every error is a ``RequenceError``; a built-in in brackets is a base class too:

    RequenceError
    ├── ConfigurationError (ValueError)      a setting or argument is wrong
    │   ├── InvalidTokenError                the access token does not decode
    │   └── MissingTokenError                no access token anywhere
    ├── AuthenticationError                  401/403: the token was refused
    ├── RequenceUnreachableError             refused, DNS, time-outs, 502/503/504
    │   └── (also a TimeoutError)            when a wait ends while the client still retries
    ├── ApiError                             an answer the protocol does not expect
    ├── ClientClosedError                    the Client was closed
    ├── TaskNotFoundError (LookupError)      404 for a task id
    ├── TaskError                            the task could not be created, or did not succeed
    │   ├── TaskFailedError                  it ran and failed
    │   ├── TaskAbortedError                 it was aborted
    │   └── UploadError                      a file or stream of the input could not be uploaded
    ├── FileReadError                        a remote file or stream could not be read
    │   └── TruncatedError                   it ended before all its bytes came
    ├── ClaimCheckError                      a claim check of the task could not be fetched
    ├── CallbackError (TypeError)            a RequenceCallback was called
    ├── TaskTimeoutError (TimeoutError)      a wait passed its time-out; the task goes on
    └── ResultTypeError (ValueError)         result_as(): the result does not fit the class

Every message says what was wrong and what to do. None ever contains an
access token: not the encoded token, not the bearer inside it. Attributes
never raise; where a value is unknown it is ``None``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._models import TaskContext


class RequenceError(Exception):
    """Base class of every error raised by ``requence_task``."""


class ConfigurationError(RequenceError, ValueError):
    """A setting or argument is wrong; fix it and call again."""


class InvalidTokenError(ConfigurationError):
    """An access token could not be decoded.

    The message says which rule the token broke, never the token itself.
    """


class MissingTokenError(ConfigurationError):
    """No access token was given, and none was found in the usual places."""


class AuthenticationError(RequenceError):
    """Requence refused the access token (HTTP 401 or 403).

    Attributes:
        status: The HTTP status, 401 or 403.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RequenceUnreachableError(RequenceError):
    """Requence could not be reached within the retry budget. Retry later.

    Raised for a refused connection, a DNS failure, a connect time-out, or a
    gateway status (502, 503, 504), once retries with backoff used up the
    client's budget.

    Attributes:
        status: The last gateway status, or ``None`` when no answer came.
        attempts: How many attempts were made.
    """

    def __init__(
        self, message: str | None = None, *, status: int | None = None, attempts: int = 1
    ) -> None:
        super().__init__(
            message
            or "Requence is not reachable right now"
            + (f" (HTTP {status})" if status else "")
            + f" after {attempts} attempt{'s' if attempts != 1 else ''}; retry later."
        )
        self.status = status
        self.attempts = attempts


class _UnreachableWhileWaiting(RequenceUnreachableError, TimeoutError):
    """A wait ended while the client was still retrying an unreachable Requence.

    Raised instead of :class:`TaskTimeoutError` (which says that the task goes
    on): what held the wait up was Requence, not the task. Catchable as
    :class:`RequenceUnreachableError` and as the built-in ``TimeoutError``.

    Attributes:
        timeout: The caller's time-out, in seconds.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        attempts: int = 1,
        timeout: float | None = None,
    ) -> None:
        super().__init__(message, status=status, attempts=attempts)
        self.timeout = timeout


class ApiError(RequenceError):
    """Requence answered with a status this call does not expect.

    Attributes:
        status: The HTTP status.
        body: The answer's text (at most 2,000 characters).
    """

    def __init__(self, message: str, *, status: int | None = None, body: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ClientClosedError(RequenceError):
    """The :class:`Client` was closed: it starts and waits for nothing any more."""


class TaskNotFoundError(RequenceError, LookupError):
    """No task with this id exists for this token (HTTP 404).

    Attributes:
        task_id: The id asked for.
    """

    def __init__(self, message: str, *, task_id: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id


class TaskError(RequenceError):
    """The task could not be created or started, or it did not succeed.

    Raised by ``finalized()`` and ``result()`` when Requence rejected the task
    (for instance its input failed the template's input schema).

    Attributes:
        message: The whole message (also ``str(error)``).
        server_message: The server's own reason, as it gave it, if it gave one.
        status: The HTTP status of the rejecting answer, if there was one.
        template: The task template's name.
        task_id: The task's id, if it got one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        template: str | None = None,
        task_id: str | None = None,
        server_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.server_message = server_message
        self.status = status
        self.template = template
        self.task_id = task_id


class TaskFailedError(TaskError):
    """The task ran and failed (a ``taskError`` update).

    Attributes:
        reason: The task's reason, as Requence gave it.
        context: What was folded from the task's updates up to its end:
            input, node data and node errors by alias.
    """

    def __init__(
        self,
        reason: str | None,
        *,
        task_id: str | None = None,
        template: str | None = None,
        context: TaskContext | None = None,
    ) -> None:
        super().__init__(
            f"Task {task_id} failed: {reason or 'no reason given'}",
            template=template,
            task_id=task_id,
        )
        self.reason = reason
        self.context = context


class TaskAbortedError(TaskError):
    """The task was aborted (a ``taskAborted`` update, or aborted before it started).

    Attributes:
        reason: The reason given to abort, or ``None``.
    """

    def __init__(
        self,
        reason: str | None,
        *,
        task_id: str | None = None,
        template: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(
            f"Task {task_id} was aborted" + (f": {reason}" if reason else ""),
            template=template,
            task_id=task_id,
            status=status,
        )
        self.reason = reason


class TaskTimeoutError(RequenceError, TimeoutError):
    """A wait passed its time-out. The task itself goes on; wait again, or abort it.

    Catchable as the built-in ``TimeoutError``.

    Attributes:
        timeout: The time-out that passed, in seconds.
    """

    def __init__(self, message: str, *, timeout: float | None = None) -> None:
        super().__init__(message)
        self.timeout = timeout


class ResultTypeError(RequenceError, ValueError):
    """A task's result does not fit the type asked for (:meth:`TaskResult.result_as`).

    Attributes:
        target: The type asked for.
        errors: One line per mismatch, each ending in the path of the value
            (``invalid value for type, expected int @ result.total``).
        cause: The cattrs exception behind it.
    """

    def __init__(
        self, message: str, *, target: object, errors: list[str], cause: BaseException
    ) -> None:
        """Make the error; ``message`` is its whole text."""
        super().__init__(message)
        self.target = target
        self.errors = errors
        self.cause = cause


class UploadError(TaskError):
    """A file, stream or offloaded value of the input could not be uploaded.

    The task's creation fails with it and no finalize is sent, so the task never
    starts. Raised by ``task_id()``-dependent waits (``finalized()``, ``result()``).

    Attributes:
        path: Where the value was in the input (``input.pages[0].scan``).
    """

    def __init__(
        self,
        message: str,
        *,
        path: str,
        status: int | None = None,
        template: str | None = None,
        task_id: str | None = None,
        server_message: str | None = None,
    ) -> None:
        super().__init__(
            message,
            status=status,
            template=template,
            task_id=task_id,
            server_message=server_message,
        )
        self.path = path


class FileReadError(RequenceError):
    """A remote file or stream could not be read (an error answer, a lost connection).

    Attributes:
        status: The HTTP status of the answer, if one came.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TruncatedError(FileReadError):
    """A file or stream ended before all of it came: a file shorter than its size,
    a framed stream without its end frame, or one its producer stopped early."""


class ClaimCheckError(RequenceError):
    """A claim check (a large value Requence sent by reference) could not be fetched.

    The update that held it is not delivered with a reference in its place.

    Attributes:
        path: The field that held it (``result.rows``, ``nodes.ocr.data.text``).
        task_id: The task's id.
    """

    def __init__(self, message: str, *, path: str, task_id: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.task_id = task_id


class CallbackError(RequenceError, TypeError):
    """A :class:`RequenceCallback` was called: a task client may only look at it."""


def _summary(value: Any, limit: int = 2000) -> str:
    """A bounded text for messages and attributes."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
