"""``Task``: a handle on one Requence task, with thread-backed futures.

The handle only: its requests are :class:`~requence_task._api.RequenceApi`'s,
its updates come from its :class:`~requence_task._follow.Monitor`, its state
from :mod:`requence_task._fold`, and its views, bars and asyncio waits from
``_html``, ``_progress`` and ``_aio``.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping
from typing import Any

from . import _aio
from ._client import Client, check_client, client_for
from ._errors import (
    ClientClosedError,
    ConfigurationError,
    RequenceError,
    TaskAbortedError,
    TaskTimeoutError,
)
from ._fold import NodeFold, fold_task, known_id, task_state
from ._follow import Monitor
from ._follow import settle as _settle
from ._html import task_html
from ._http import RetryState
from ._models import Created, Prepared, TaskResult, Update
from ._outcome import Outcome, mirrored
from ._progress import result_with_progress
from ._protocol import LIVE_BRANCH, PRIORITY_DEFAULT, priority_to_wire
from ._states import SUCCEEDED
from ._transfer import Outbound, PendingInput, accept_objects, snapshot_input
from ._validate import (
    check_flag,
    check_input,
    check_name,
    check_on_update,
    check_priority,
    check_reason,
    check_task_id,
    check_template,
    check_timeout,
)
from ._wire import finalize_body

log = logging.getLogger("requence_task")

UpdateCallback = Callable[[Update], Any]


def _timed_out(what: str, timeout: float | None) -> TaskTimeoutError:
    return TaskTimeoutError(
        f"{what} did not come within {timeout} s; the task goes on. "
        "Call again to wait longer, or abort() it.",
        timeout=timeout,
    )


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
        check_template(template)
        check_name(name)
        check_priority(priority)
        check_flag(require_ack, "require_ack")
        check_on_update(on_update)
        pending = snapshot_input(input)
        the_client = client_for(access_token, client)
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
        # The input as it is now (serialised once, above); its files go up after prepare.
        self._pending: PendingInput | None = pending
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
        self._prepared: Outcome[str] = Outcome()
        self._created: Outcome[Created] = Outcome()
        self._result: Outcome[TaskResult] = Outcome()
        self._future: concurrent.futures.Future[TaskResult] | None = None  # made when asked for
        self._monitor = Monitor(
            client._follower,
            template=template,
            created=self._created,
            result=self._result,
            on_update=on_update,
            fallback=client._api.fallback_created,
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
        check_client(access_token, client)
        check_on_update(on_update)
        task = cls.__new__(cls)
        task._setup(
            client_for(access_token, client),
            template=None,
            name=None,
            priority=None,
            require_ack=False,
            on_update=on_update,
        )
        task._monitor.prepared(task_id, None)
        task._prepared.set_result(task_id)
        task._created.set_result(task._client._api.fallback_created(task_id))
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
        client = self._client
        template = self.template
        assert template is not None  # only handles made by __init__ are created here
        prepared = client._api.prepare(template, state=self._creation)
        task_id = prepared.task_id
        self._prepared_answer: Prepared | None = prepared
        self._monitor.prepared(task_id, prepared.server_time)
        client._follower.prepared(self._monitor)
        self._prepared.set_result(task_id)
        if prepared.branch != LIVE_BRANCH and not self._suppress_branch_warning:
            client._warn_branch(template, prepared.branch)
        return task_id

    def _finalize_body(self, input_json: str) -> bytes:
        assert self.priority is not None
        return finalize_body(
            name=self.name,
            input_json=input_json,
            priority=priority_to_wire(self.priority),
            require_ack=self.require_ack,
        ).encode("utf-8")

    def _finalize(self, task_id: str) -> Created:
        pending, self._pending = self._pending, None  # (its bytes are not kept)
        prepared, self._prepared_answer = self._prepared_answer, None  # (nor the answer)
        assert pending is not None and prepared is not None
        body = Outbound(
            self._client._api,
            prepared,
            template=self.template,
            body=self._finalize_body,
        ).finalize_body(pending)
        return self._client._api.finalize(
            prepared,
            body,
            template=self.template,
            state=self._creation,
            aborted_with=lambda: self._aborted_with,
        )

    # --- accessors -------------------------------------------------------------

    def _wait(
        self,
        future: Outcome[Any],
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
            return future.result(check_timeout(timeout))
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
        created: Created = self._wait(self._created, timeout, "The task's URL")
        return created.show_url

    def finalized(self, timeout: float | None = None) -> str:
        """Wait until the input passed validation and the task started; returns its id.

        Cheap: it never opens the task's update stream.

        Raises:
            TaskError: Requence rejected the task (``status``, ``message``, ``template``).
            TaskTimeoutError: Not started within ``timeout`` seconds.
        """
        created: Created = self._wait(self._created, timeout, "The task's start")
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
        if check_flag(progress, "progress"):
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
        return self._ensure_monitoring().iterate(check_timeout(timeout))

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
        check_reason(reason)
        task_id = self.task_id(timeout)
        self._aborted_with = reason
        self._client._api.abort(task_id, reason)

    def protect(self, *, timeout: float | None = 60.0) -> None:
        """Protect the task from automatic cleanup (at any moment once it is created)."""
        self._client._api.protect(self.task_id(timeout))

    # --- concurrent.futures view ------------------------------------------------

    @property
    def future(self) -> concurrent.futures.Future[TaskResult]:
        """A ``concurrent.futures.Future`` of the result (for ``wait``, ``as_completed``).

        Reading it starts monitoring. Cancelling it does not abort the task, nor
        change what :meth:`result` says. The same future each time.
        """
        self._ensure_monitoring()
        with self._lock:
            if self._future is None:
                self._future = mirrored(self._result)
            return self._future

    def done(self) -> bool:
        """Whether the task has ended (or could not be created). Starts monitoring."""
        self._ensure_monitoring()
        return self._result.done()

    def add_done_callback(self, callback: Callable[[Task], Any]) -> None:
        """Call ``callback(task)`` once the task has ended (at once if it has)."""
        self._ensure_monitoring()
        self._result.add_done_callback(lambda _outcome: callback(self))

    # --- notebooks, fan-out, asyncio ------------------------------------------------------

    def _repr_html_(self) -> str:
        """Jupyter's view: template, id linked to the task's page, state, nodes so far.

        Never waits: it shows what the handle knows now (asking starts monitoring).
        """
        self._ensure_monitoring()  # asking starts monitoring; the view shows what is known now
        result = self._result
        fold = fold_task(self)
        state, detail = task_state(self, fold)
        created = self._created
        started = created.done() and not created.cancelled() and created.exception() is None
        ended_well = result.done() and not result.cancelled() and result.exception() is None
        return task_html(
            template=self.template,
            name=self.name,
            task_id=known_id(self),
            url=self.task_url(0) if started else None,
            state=state,
            detail=detail,
            result=(result.result().result,) if state == SUCCEEDED and ended_well else None,
            nodes=fold.nodes,
        )

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
        if isinstance(inputs, (str, bytes, Mapping)) or not isinstance(inputs, Iterable):
            raise ConfigurationError(
                f"Task.map takes an iterable of inputs (a list, one input per task), got "
                f"{type(inputs).__name__}; for one task, use Task(template, input)."
            )
        if "input" in options:
            raise ConfigurationError(
                "Task.map takes the inputs as its second argument, one per task; "
                "do not pass input= as well"
            )
        allowed = {
            name
            for name, parameter in inspect.signature(cls.__init__).parameters.items()
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        }
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ConfigurationError(
                f"Task.map got unknown option(s) {', '.join(unknown)}; "
                f"it takes those of Task: {', '.join(sorted(allowed))}"
            )
        items = list(inputs)
        for index, item in enumerate(items):
            check_input(item, index=index, default=accept_objects)
        # The first handle checks the template and the options before it sends anything,
        # so a wrong option raises here with no task started.
        return [cls(template, item, **options) for item in items]

    def __await__(self) -> Generator[Any, None, TaskResult]:
        """``await task``: the result, as :meth:`result` gives it, with no thread.

        Cancelling the ``await`` does not abort the task.
        """
        return _aio.result(self).__await__()

    async def aresult(self, timeout: float | None = None) -> TaskResult:
        """The result, for asyncio code: ``await task.aresult(timeout=60)``.

        Waits with no thread; cancelling the ``await`` does not abort the task.

        Raises:
            TaskTimeoutError: Not ended within ``timeout`` seconds; it goes on.
            TaskFailedError, TaskAbortedError, TaskError: As :meth:`result`.
        """
        return await _aio.result(self, timeout)

    async def afinalized(self, timeout: float | None = None) -> str:
        """:meth:`finalized` for asyncio code: the id once the task started.

        Raises:
            TaskError: Requence rejected the task.
            TaskTimeoutError: Not started within ``timeout`` seconds.
        """
        return await _aio.finalized(self, timeout)

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
        return _aio.TaskUpdates(self, check_timeout(timeout))

    # --- internals ------------------------------------------------------------------

    def _ensure_monitoring(self) -> Monitor:
        self._monitor.demand()
        return self._monitor

    def _listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Start monitoring; call ``callback()`` (from any thread, must be quick) after
        each new update and when monitoring ends. Returns a function that stops it."""
        return self._ensure_monitoring().listen(callback)

    def _updates_since(
        self, index: int, *, demand: bool = True, reader: object = None
    ) -> tuple[list[Update], bool, BaseException | None]:
        """The updates from ``index`` on, whether no more will come, and with what error.

        With ``demand=False`` only what the handle has seen, without starting to follow it.
        ``reader``: the callback given to ``_listen`` by the one reading.
        """
        if demand:
            self._ensure_monitoring()
        return self._monitor.since(index, reader)

    def _nodes(self) -> NodeFold:
        """The task's nodes as the handle has seen them (never starts following it)."""
        return self._monitor.nodes()

    def __repr__(self) -> str:
        # The state the HTML view, the progress bar and the command line show; never
        # waits, and never starts following the task.
        state, _detail = task_state(self)
        return f"<requence_task.Task {self.template!r} id={known_id(self)} {state}>"
