"""``Task``: a handle on one Requence task, with thread-backed futures."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator
from typing import Any
from urllib.parse import quote

from ._client import Client, default_client
from ._errors import (
    ApiError,
    ClientClosedError,
    ConfigurationError,
    RequenceError,
    TaskAbortedError,
    TaskError,
    TaskTimeoutError,
)
from ._follow import Created as _Created
from ._follow import Monitor, server_time
from ._follow import settle as _settle
from ._http import RetryState, Unreachable, error_text
from ._protocol import (
    IDLE,
    LIVE_BRANCH,
    PRIORITY_DEFAULT,
    PRIORITY_MAX,
    PRIORITY_MIN,
    STATUS_ABORTED_BEFORE_FINALIZE,
    STATUS_CONFLICT,
    STOPPED,
    prepare_path,
    priority_to_wire,
    show_path,
    watch_path,
)
from ._updates import TaskResult, Update

log = logging.getLogger("requence_task")

UpdateCallback = Callable[[Update], Any]


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or math.isnan(timeout)
        or timeout < 0
    ):
        raise ConfigurationError(
            f"timeout must be None (wait as long as it takes) or a number of seconds >= 0, "
            f"got {timeout!r}"
        )
    return float(timeout)


def _timed_out(what: str, timeout: float | None) -> TaskTimeoutError:
    return TaskTimeoutError(
        f"{what} did not come within {timeout} s; the task goes on. "
        "Call again to wait longer, or abort() it.",
        timeout=timeout,
    )


def check_priority(priority: object) -> int:
    """A priority as given, or :class:`ConfigurationError` if it is not 0..10."""
    if (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not PRIORITY_MIN <= priority <= PRIORITY_MAX
    ):
        raise ConfigurationError(
            f"priority must be a whole number from {PRIORITY_MIN} (low) to {PRIORITY_MAX} "
            f"(high), got {priority!r}"
        )
    return priority


def check_task_id(task_id: object) -> str:
    """A task id as given, or :class:`ConfigurationError` if it cannot be one."""
    if (
        not isinstance(task_id, str)
        or not task_id
        or len(task_id) > 200
        or any(c.isspace() or c in "/?#" for c in task_id)
        or not task_id.strip(".")
    ):
        raise ConfigurationError(
            f"{task_id!r:.80} is not a task id: pass the id that task_id() returned "
            "(a non-empty string without spaces or slashes)."
        )
    return task_id


def _fallback_created(client: Client, task_id: str) -> _Created:
    """A task's URLs from the protocol's paths, when no finalize answer gave them."""
    base, quoted = client.base_url, quote(task_id, safe="")
    return _Created(task_id, base + watch_path(quoted), base + show_path(quoted))


class Task:
    """A Requence task: starts at once, in the background; wait for what you need.

    ``Task(...)`` validates its arguments and returns immediately; creation
    (prepare, then finalize) runs on the client's thread pool. Each accessor
    waits only for what it needs, up to ``timeout`` seconds (``None`` waits as
    long as it takes) and raises :class:`TaskTimeoutError` (a ``TimeoutError``)
    when it passes. A time-out never stops the task: only :meth:`abort` does.

    Args:
        template: The task template's name.
        input: The task's input: anything JSON can carry. Required when the
            template defines an input schema.
        name: A human-readable name for the task.
        priority: 0 (low) to 10 (high); default 5.
        access_token: The access token, if not from the environment or
            ``pyproject.toml``. Use either this or ``client``.
        require_ack: Hold the task's end until this client received it
            (the client acks it); nothing is lost if the client was away.
        suppress_branch_warning: Do not warn when the template runs on a
            development branch.
        on_update: Called with every update, on the task's monitor thread.
            Starts monitoring at once.
        client: The :class:`Client` to use; by default a shared one per token.

    Raises:
        ConfigurationError: A wrong argument (before any request is sent).
        MissingTokenError, InvalidTokenError: No usable access token.

    Example:
        >>> task = Task("my-template", input={"name": "World"})  # doctest: +SKIP
        >>> task.finalized(timeout=10)  # validation passed, the task started
        >>> task.result(timeout=60).result
    """

    def __init__(
        self,
        template: str,
        input: Any = None,
        *,
        name: str | None = None,
        priority: int = PRIORITY_DEFAULT,
        access_token: str | None = None,
        require_ack: bool = False,
        suppress_branch_warning: bool = False,
        on_update: UpdateCallback | None = None,
        client: Client | None = None,
    ) -> None:
        if not isinstance(template, str) or not template.strip():
            raise ConfigurationError(
                f"template must be the template's name, a non-empty string; got {template!r}"
            )
        if name is not None and not isinstance(name, str):
            raise ConfigurationError(f"name must be a string or None, got {type(name).__name__}")
        check_priority(priority)
        if not isinstance(require_ack, bool):
            raise ConfigurationError("require_ack must be True or False")
        if on_update is not None and not callable(on_update):
            raise ConfigurationError("on_update must be a callable taking one update")
        try:
            input_json = json.dumps(input, allow_nan=False, ensure_ascii=False)
            input_json.encode("utf-8")  # lone surrogates cannot travel
        except (TypeError, ValueError) as err:
            raise ConfigurationError(
                f"input must be JSON-serialisable (dicts, lists, strings, numbers, booleans, "
                f"None): {err}"
            ) from None
        if client is not None and access_token is not None:
            raise ConfigurationError(
                "pass either client= or access_token=, not both (a client has its own token)"
            )
        if client is not None and not isinstance(client, Client):
            raise ConfigurationError("client must be a requence_task.Client")
        the_client = client if client is not None else default_client(access_token)
        if the_client.closed:
            raise ClientClosedError(
                "This Client was closed; create tasks with an open one (or none, for the default)."
            )
        self._setup(
            the_client,
            template=template,
            name=name,
            priority=priority,
            require_ack=require_ack,
            on_update=on_update,
        )
        # The finalize body, with the input serialised once (above).
        self._body = (
            f'{{"name": {json.dumps(name)}, "input": {input_json}, '
            f'"priority": {priority_to_wire(priority)}, "requireAck": {json.dumps(require_ack)}}}'
        )
        self._suppress_branch_warning = suppress_branch_warning
        self._client._pool.submit(self._create)
        if on_update is not None:
            self._ensure_monitoring()

    def _setup(
        self,
        client: Client,
        *,
        template: str | None,
        name: str | None,
        priority: int | None,
        require_ack: bool,
        on_update: UpdateCallback | None,
    ) -> None:
        self._client = client
        self.template = template
        self.name = name
        self.priority = priority
        self.require_ack = require_ack
        self._on_update = on_update
        self._prepared: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._created: concurrent.futures.Future[_Created] = concurrent.futures.Future()
        self._result: concurrent.futures.Future[TaskResult] = concurrent.futures.Future()
        self._monitor = Monitor(
            client,
            template=template,
            created=self._created,
            result=self._result,
            on_update=on_update,
            fallback=lambda task_id: _fallback_created(client, task_id),
        )
        self._aborted_with: str | None = None
        self._lock = threading.Lock()
        # Whether creation is retrying an unreachable Requence right now, and why.
        self._creation = RetryState()

    @classmethod
    def from_id(
        cls,
        task_id: str,
        *,
        access_token: str | None = None,
        client: Client | None = None,
        on_update: UpdateCallback | None = None,
    ) -> Task:
        """A handle for an existing task, for example one another process created.

        Its result, updates (replayed from the first), ``abort()`` and
        ``protect()`` work as on the handle that created it; ``template``,
        ``name`` and ``priority`` are ``None`` (see ``get_task`` for them).

        Example:
            >>> task = Task.from_id(task_id)  # doctest: +SKIP
            >>> task.result(timeout=60).result
        """
        check_task_id(task_id)
        if client is not None and access_token is not None:
            raise ConfigurationError(
                "pass either client= or access_token=, not both (a client has its own token)"
            )
        if client is not None and not isinstance(client, Client):
            raise ConfigurationError("client must be a requence_task.Client")
        if on_update is not None and not callable(on_update):
            raise ConfigurationError("on_update must be a callable taking one update")
        task = cls.__new__(cls)
        task._setup(
            client if client is not None else default_client(access_token),
            template=None,
            name=None,
            priority=None,
            require_ack=False,
            on_update=on_update,
        )
        task._monitor.prepared(task_id, None)
        task._prepared.set_result(task_id)
        task._created.set_result(task._fallback_created(task_id))
        if on_update is not None:
            task._ensure_monitoring()
        return task

    # --- creation (on the client's pool) -------------------------------------

    def _create(self) -> None:
        follower = self._client._follower
        try:
            task_id = self._prepare()
        except BaseException as err:
            for future in (self._prepared, self._created, self._result):
                _settle(future, err)
            follower.creation_failed(self._monitor, err)
            return
        try:
            created = self._finalize(task_id)
        except BaseException as err:
            _settle(self._result, err)  # first: the monitor finishes when _created is done
            _settle(self._created, err)
            if not (isinstance(err, TaskAbortedError) and err.task_id is not None):
                follower.creation_failed(self._monitor, err)
            # (Aborted before it started: its stream still brings the taskAborted update.)
            return
        self._created.set_result(created)

    def _prepare(self) -> str:
        client, transport = self._client, self._client._transport
        template = self.template
        assert template is not None  # only handles made by __init__ are created here
        url = client._url(prepare_path(quote(template, safe="")))
        what = f"prepare of a task of template {self.template!r}"

        def attempt() -> tuple[dict[str, Any], str | None]:
            response = transport.send("POST", url)
            if not response.ok:
                message = error_text(response)
                response.close()
                raise TaskError(
                    f"Requence refused to create a task of template {self.template!r} "
                    f"(HTTP {response.status_code}): {message}",
                    status=response.status_code,
                    template=self.template,
                    server_message=message,
                )
            date = response.headers.get("Date")
            return transport.json(response, what=what), date

        prepared, date = transport.retrying(attempt, what=what, state=self._creation)
        task_id = prepared.get("taskId")
        finalize_url = prepared.get("finalizeUrl")
        if not isinstance(task_id, str) or not isinstance(finalize_url, str):
            raise ApiError(f"{what}: the answer lacks taskId or finalizeUrl")
        self._finalize_url = finalize_url
        self._monitor.prepared(task_id, server_time(date))
        client._follower.prepared(self._monitor)
        self._prepared.set_result(task_id)
        branch = prepared.get("branch") or LIVE_BRANCH
        if branch != LIVE_BRANCH and not self._suppress_branch_warning:
            client._warn_branch(template, str(branch))
        return task_id

    def _finalize(self, task_id: str) -> _Created:
        transport = self._client._transport
        what = f"finalize of task {task_id}"
        body = self._body.encode("utf-8")

        def attempt() -> _Created:
            try:
                response = transport.send(
                    "POST", self._finalize_url, body=body, content_type="application/json"
                )
            except Unreachable:
                # The answer may be lost after the server acted: ask before retrying,
                # so a retry never creates a second task nor reports a false failure.
                if self._finalize_landed(task_id):
                    return self._fallback_created(task_id)
                raise
            if response.ok:
                answer = transport.json(response, what=what)
                urls = answer.get("urls") or {}
                watch = urls.get("watch") if isinstance(urls, dict) else None
                show = urls.get("show") if isinstance(urls, dict) else None
                if not isinstance(watch, str):
                    return self._fallback_created(task_id)
                return _Created(task_id, watch, show if isinstance(show, str) else None)
            status = response.status_code
            message = error_text(response)
            response.close()
            if status == STATUS_CONFLICT:
                return self._fallback_created(task_id)  # an earlier attempt landed
            if status == STATUS_ABORTED_BEFORE_FINALIZE:
                raise TaskAbortedError(
                    self._abort_reason(task_id),
                    task_id=task_id,
                    template=self.template,
                    status=status,
                )
            raise TaskError(
                f"Requence rejected the task of template {self.template!r} "
                f"(HTTP {status}): {message}",
                status=status,
                template=self.template,
                task_id=task_id,
                server_message=message,
            )

        return transport.retrying(attempt, what=what, state=self._creation)

    def _abort_reason(self, task_id: str) -> str | None:
        """Why a task was aborted before it started: this handle's reason, or Requence's."""
        if self._aborted_with is not None:
            return self._aborted_with
        try:
            text = self._client._get(task_id).get("statusText")
        except RequenceError:
            return None
        return text if isinstance(text, str) else None

    def _finalize_landed(self, task_id: str) -> bool:
        """Whether a finalize whose answer was lost did reach the server."""
        try:
            response = self._client._transport.send(
                "GET", self._client._url(f"/task/{quote(task_id, safe='')}")
            )
        except Unreachable:
            return False
        try:
            if not response.ok:
                return False
            status = str(response.json().get("status", "")).upper()
        except (ValueError, AttributeError):
            return False
        finally:
            response.close()
        return status not in (IDLE, STOPPED, "")

    def _fallback_created(self, task_id: str) -> _Created:
        return _fallback_created(self._client, task_id)

    # --- accessors -------------------------------------------------------------

    def _wait(
        self,
        future: concurrent.futures.Future[Any],
        timeout: float | None,
        what: str,
        *,
        follows: bool = False,
    ) -> Any:
        """``future``'s result within ``timeout``; an honest error when it does not come.

        Args:
            follows: The wait is for the task's updates (not only its creation).
        """
        try:
            return future.result(_check_timeout(timeout))
        except concurrent.futures.TimeoutError:
            raise self._wait_ended(what, timeout, follows=follows) from None

    def _wait_ended(self, what: str, timeout: float | None, *, follows: bool) -> RequenceError:
        """Why a wait ended: Requence unreachable while the client retries, or the task
        is simply not there yet (a :class:`TaskTimeoutError`)."""
        return self._unreachable(what, timeout, follows=follows) or _timed_out(what, timeout)

    def _unreachable(
        self, what: str, timeout: float | None, *, follows: bool
    ) -> RequenceError | None:
        """The error for a wait that ended while the client still retries an unreachable
        Requence for this task (its creation, or its updates if ``follows``), or ``None``."""
        creation = self._creation
        if creation.failing and not self._created.done():
            if not self._prepared.done():
                meanwhile = (
                    "no task was created yet; the client keeps trying to create it "
                    "until its retry budget is spent."
                )
            else:
                meanwhile = (
                    f"task {self._prepared.result()} was prepared but has not started; the "
                    "client keeps trying to start it until its retry budget is spent."
                )
            return creation.wait_ended(what, timeout, meanwhile)
        if follows:
            stream = self._monitor.stream
            if stream is not None and stream.retry_state.failing:
                return stream.retry_state.wait_ended(
                    what,
                    timeout,
                    "the task's updates cannot be read, so whether it goes on is not known; "
                    "the client keeps reconnecting. Wait again later.",
                )
        return None

    def task_id(self, timeout: float | None = None) -> str:
        """The task's id, as soon as the task is created (before it is started).

        Raises:
            TaskTimeoutError: Not created within ``timeout`` seconds.
            TaskError, RequenceUnreachableError, AuthenticationError: creation failed.
        """
        return self._wait(self._prepared, timeout, "The task's id")  # type: ignore[no-any-return]

    def task_url(self, timeout: float | None = None) -> str | None:
        """The URL to view the task, once it is started."""
        created: _Created = self._wait(self._created, timeout, "The task's URL")
        return created.show_url

    def finalized(self, timeout: float | None = None) -> str:
        """Wait until the input passed validation and the task started; returns its id.

        Cheap: it never opens the task's update stream.

        Raises:
            TaskError: Requence rejected the task (``status``, ``message``, ``template``).
            TaskTimeoutError: Not started within ``timeout`` seconds.
        """
        created: _Created = self._wait(self._created, timeout, "The task's start")
        return created.task_id

    def result(self, timeout: float | None = None, *, progress: bool = False) -> TaskResult:
        """Wait for the task's end and return its result.

        Args:
            timeout: Seconds to wait; ``None`` waits as long as it takes.
            progress: Show a live progress bar while waiting (a widget in
                Jupyter, a text bar on stderr elsewhere); needs
                ``pip install 'requence_task[progress]'``.

        Raises:
            TaskFailedError: The task failed (``reason``, ``context``).
            TaskAbortedError: The task was aborted (``reason``).
            TaskError: The task could not be created.
            TaskTimeoutError: Not ended within ``timeout`` seconds; it goes on.
            ConfigurationError: ``progress=True`` without tqdm (before waiting).
        """
        if not isinstance(progress, bool):
            raise ConfigurationError("progress must be True or False")
        if progress:
            from ._display import result_with_progress

            return result_with_progress(self, timeout)
        self._ensure_monitoring()
        return self._wait(  # type: ignore[no-any-return]
            self._result, timeout, "The task's result", follows=True
        )

    def updates(self, timeout: float | None = None) -> Iterator[Update]:
        """Iterate the task's updates from the first one, ending after the terminal one.

        Every iterator sees every update, however many there are and from
        whichever thread. ``timeout`` bounds the wait for each next update.
        """
        return self._ensure_monitoring().iterate(_check_timeout(timeout))

    def __iter__(self) -> Iterator[Update]:
        return self.updates()

    def abort(self, reason: str | None = None, *, timeout: float | None = 60.0) -> None:
        """Abort the task (at any moment once it is created).

        Args:
            reason: Why; shown with the task and given to ``TaskAbortedError``.
            timeout: How long to wait for the task to be created first.

        Raises:
            TaskError: The task already ended (HTTP 409).
        """
        if reason is not None and not isinstance(reason, str):
            raise ConfigurationError("reason must be a string or None")
        task_id = self.task_id(timeout)
        self._aborted_with = reason
        self._client._abort(task_id, reason)

    def protect(self, *, timeout: float | None = 60.0) -> None:
        """Protect the task from automatic cleanup (at any moment once it is created)."""
        self._client._protect(self.task_id(timeout))

    # --- concurrent.futures view ------------------------------------------------

    @property
    def future(self) -> concurrent.futures.Future[TaskResult]:
        """A ``concurrent.futures.Future`` of the result (for ``wait``, ``as_completed``).

        Reading it starts monitoring. Cancelling it does not abort the task.
        """
        self._ensure_monitoring()
        return self._result

    def done(self) -> bool:
        """Whether the task has ended (or could not be created). Starts monitoring."""
        return self.future.done()

    def add_done_callback(self, callback: Callable[[Task], Any]) -> None:
        """Call ``callback(task)`` once the task has ended (at once if it has)."""
        self.future.add_done_callback(lambda _future: callback(self))

    # --- notebooks, fan-out, asyncio (in _display, _fanout, _aio) -------------------

    def _repr_html_(self) -> str:
        """Jupyter's view: template, id linked to the task's page, state, nodes so far.

        Never waits: it shows what the handle knows now (asking starts monitoring).
        """
        from ._display import task_html

        return task_html(self)

    @classmethod
    def map(cls, template: str, inputs: Iterable[Any], **options: Any) -> list[Task]:
        """Start one task of ``template`` per input; returns the handles at once.

        Every input is checked (JSON-serialisable) and the options too before
        any request is sent. Creation runs on the client's pool, so at most
        ``Client.max_workers`` tasks (8 by default) are being created at any
        moment; the others wait their turn in order. Pass
        ``client=Client(max_workers=...)`` to change that bound. Collect the
        results with :func:`as_completed` or :func:`wait`.

        Args:
            template: The task template's name.
            inputs: One input per task (a list, a generator, ...).
            **options: Keyword options of :class:`Task` (``name``,
                ``priority``, ``client``, ...), the same for every task.

        Returns:
            The tasks, in the order of ``inputs``.

        Raises:
            ConfigurationError: An input is not JSON-serialisable (the message
                gives its index), or an option is wrong; no task was started.

        Example:
            >>> tasks = Task.map("greeting", [{"name": n} for n in names])  # doctest: +SKIP
            >>> for task in as_completed(tasks, timeout=300):  # doctest: +SKIP
            ...     print(task.result().result)
        """
        from ._fanout import map_tasks

        return map_tasks(cls, template, inputs, options)

    def __await__(self) -> Generator[Any, None, TaskResult]:
        """``await task``: the result, as :meth:`result` gives it, with no thread.

        Cancelling the ``await`` does not abort the task.
        """
        from ._aio import result

        return result(self).__await__()

    async def aresult(self, timeout: float | None = None) -> TaskResult:
        """The result, for asyncio code: ``await task.aresult(timeout=60)``.

        Waits with no thread; cancelling the ``await`` does not abort the task.

        Raises:
            TaskTimeoutError: Not ended within ``timeout`` seconds; it goes on.
            TaskFailedError, TaskAbortedError, TaskError: As :meth:`result`.
        """
        from ._aio import result

        return await result(self, timeout)

    async def afinalized(self, timeout: float | None = None) -> str:
        """:meth:`finalized` for asyncio code: the id once the task started.

        Raises:
            TaskError: Requence rejected the task.
            TaskTimeoutError: Not started within ``timeout`` seconds.
        """
        from ._aio import finalized

        return await finalized(self, timeout)

    def aiter(self, timeout: float | None = None) -> AsyncIterator[Update]:
        """The task's updates for ``async for``, from the first to the terminal one.

        No thread per iterator: it is woken by the handle's monitoring. It
        stops listening when it ends, on ``aclose()``, or when it is garbage
        collected.

        Args:
            timeout: Seconds to wait for each next update; ``None`` waits as
                long as it takes.

        Raises:
            TaskTimeoutError: No update came within ``timeout`` (from
                ``__anext__``); the task goes on.

        Example:
            >>> async for update in task.aiter(timeout=60):  # doctest: +SKIP
            ...     print(update.type)
        """
        from ._aio import TaskUpdates
        from ._fanout import check_timeout

        return TaskUpdates(self, check_timeout(timeout))

    # --- internals ------------------------------------------------------------------

    def _ensure_monitoring(self) -> Monitor:
        self._monitor.demand()
        return self._monitor

    def _listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Start monitoring; call ``callback()`` (from any thread, must be quick) after
        each new update and when monitoring ends. Returns a function that stops it."""
        return self._ensure_monitoring().listen(callback)

    def _updates_since(
        self, index: int, *, demand: bool = True
    ) -> tuple[list[Update], bool, BaseException | None]:
        """The updates from ``index`` on, whether no more will come, and with what error.

        With ``demand=False`` only what the handle has seen, without starting to follow it.
        """
        if demand:
            self._ensure_monitoring()
        return self._monitor.since(index)

    def __repr__(self) -> str:
        # The state the HTML view, the progress bar and the command line show; never
        # waits, and never starts following the task.
        from ._state import known_id, task_state

        state, _detail = task_state(self)
        return f"<requence_task.Task {self.template!r} id={known_id(self)} {state}>"
