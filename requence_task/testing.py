"""Testing your code against a local Requence: what the ``requence_local`` fixture gives.

The pytest plugin (:mod:`requence_task.pytest_plugin`) is a thin layer over
this module: its fixture hands each test a :class:`RequenceLocal`, and it
names templates in the pytest configuration through :func:`load_templates`.
Outside pytest (another test runner, a script, a notebook) use them directly.

Importing this module does not import the local server (Starlette, Uvicorn,
jsonschema); :func:`load_templates` and a :class:`RequenceLocal` need the
``local`` extra: ``pip install 'requence_task[local]'``.

Example:
    >>> from requence_task import Task
    >>> from requence_task.local import LocalRequence
    >>> from requence_task.testing import RequenceLocal, load_templates
    >>> templates = load_templates("myproject.workflows:TEMPLATES")  # doctest: +SKIP
    >>> with LocalRequence(templates) as server:                     # doctest: +SKIP
    ...     view = RequenceLocal(server)
    ...     Task("daily-import", input={}, client=view.client)
    ...     [task] = view.wait_for(1, template="daily-import")
    ...     assert task.status == "SUCCESSFUL"
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import runpy
import time
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ._client import Client
from ._errors import ConfigurationError, TaskNotFoundError, TaskTimeoutError
from ._models import TaskStatus
from ._protocol import (
    AWAITING_DELIVERY,
    FAILED,
    IDLE,
    PENDING,
    RUNNING,
    STOPPED,
    SUCCESSFUL,
    priority_from_wire,
    show_path,
)
from ._validate import check_timeout

if TYPE_CHECKING:
    from .local import Faults, LocalRequence, Template

__all__ = ["RequenceLocal", "StartedTask", "TemplateLoadError", "load_templates"]

_ALL_STATUSES = (IDLE, PENDING, RUNNING, SUCCESSFUL, FAILED, STOPPED, AWAITING_DELIVERY)
_BUSY_STATUSES = frozenset({PENDING, RUNNING})
_POLL_INTERVAL = 0.02
_TEARDOWN_REASON = "the test that started it ended (requence_local aborts what a test leaves)"
_DEFAULT_NAMES = ("templates", "TEMPLATES")
_TEMPLATE = "requence_task.local.Template"


# --- loading templates -------------------------------------------------------------


class TemplateLoadError(ConfigurationError):
    """:func:`load_templates` could not load the templates of one of its sources.

    The message is ``"SOURCE: PROBLEM"``; a problem in the source's own code
    (an import that fails, an exception while it runs) carries that code's
    traceback as text.

    Attributes:
        source: The source as it was given (e.g. ``"myproject.workflows:TEMPLATES"``
            or ``"tests/templates.py"``); for names defined twice, every source,
            separated by spaces.
        problem: What was wrong, without the source.

    Example:
        >>> from requence_task.testing import TemplateLoadError, load_templates
        >>> try:                                                  # doctest: +SKIP
        ...     load_templates("tests/no_such_file.py")
        ... except TemplateLoadError as err:
        ...     print(err.source, "->", err.problem)
        tests/no_such_file.py -> no such file: tests/no_such_file.py (there is no file at that path)
    """

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class _NotTemplates(Exception):
    """A value that should be templates is not: the message says why."""


def load_templates(
    *sources: str | os.PathLike[str],
    base: str | os.PathLike[str] | None = None,
) -> list[Template]:
    """Load the templates that Python modules or files define.

    Each source is one of:

    - ``"package.module"``: the module is imported (it must be importable,
      e.g. your installed project);
    - ``"path/file.py"``: the file is run (a ``str`` that ends with ``.py`` or
      holds a path separator, or any :class:`os.PathLike`, which is always a
      file, whatever its name);
    - either, then ``":NAME"`` (``str`` sources only): the templates are that
      name in it (``NAME.attribute`` works too). It may be a list (or any
      iterable) of :class:`~requence_task.local.Template` objects, one
      ``Template``, or a function that returns either.

    Without ``:NAME``, the module's ``templates`` list is used, else its
    ``TEMPLATES`` list, else every ``Template`` defined at its top level.

    Args:
        *sources: Where the templates are, in order.
        base: The directory relative file paths start from; by default the
            current directory. (Module names are looked up on ``sys.path``.)

    Returns:
        The templates of every source, in order.

    Raises:
        TemplateLoadError: A source is malformed, missing, fails to import or
            run, or gives no templates or something else than templates; or
            two templates have the same name. The message names the source
            and the file, and says what was wrong.
        ConfigurationError: No source was given.
        TypeError: A source is neither a ``str`` nor a path.
        ImportError: The ``local`` extra is not installed.

    Example:
        >>> from requence_task.testing import load_templates
        >>> templates = load_templates("myproject.workflows:TEMPLATES")  # doctest: +SKIP
        >>> load_templates("tests/templates.py", "myproject.billing")    # doctest: +SKIP
        [Template('greet', ...), Template('invoice', ...)]
    """
    if not sources:
        raise ConfigurationError("load_templates() needs at least one source")
    for source in sources:
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(
                f"a templates source must be a str or a path, not {type(source).__name__}"
            )
    start = None if base is None else Path(base)
    templates: list[Template] = []
    given: list[str] = []
    for source in sources:
        text = source.strip() if isinstance(source, str) else os.fspath(source)
        given.append(text)
        templates.extend(_load_one(source, start))
    names = [t.name for t in templates]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TemplateLoadError(
            " ".join(given), f"more than one template is named {', '.join(map(repr, twice))}."
        )
    return templates


def _load_one(source: str | os.PathLike[str], base: Path | None) -> list[Template]:
    """The templates of one source (see :func:`load_templates`)."""
    from .local import Template

    if isinstance(source, str):
        spec = source.strip()
        target, attribute = spec, ""
        if not spec.endswith(".py") and ":" in spec:
            target, attribute = spec.rsplit(":", 1)
            if not all(part.isidentifier() for part in attribute.split(".")):
                raise TemplateLoadError(
                    spec,
                    f"after ':' must come a name defined in {target!r}, "
                    f"e.g. '{target}:TEMPLATES'; got {attribute!r}.",
                )
        is_file = target.endswith(".py") or "/" in target or os.sep in target
    else:
        spec = target = os.fspath(source)
        attribute = ""
        is_file = True

    namespace: Mapping[str, Any]
    if is_file:
        path = Path(target) if base is None else base / target
        namespace = _run_file(spec, path)
        what = str(path)
    else:
        namespace = _import_module(spec, target)
        what = f"the module {target!r}"

    if attribute:
        value = _named_value(spec, target, attribute, namespace)
        subject = f"{attribute!r}"
    else:
        name = next((n for n in _DEFAULT_NAMES if namespace.get(n) is not None), None)
        if name is None:
            found = [v for v in namespace.values() if isinstance(v, Template)]
            if not found:
                after = "" if not isinstance(source, str) else ", or name them after ':'"
                raise TemplateLoadError(
                    spec,
                    f"{what} defines no templates: define a list named 'templates' "
                    f"(or 'TEMPLATES') of {_TEMPLATE} objects{after}.",
                )
            return found
        value, subject = namespace[name], f"{name!r}"
    try:
        templates = _check_templates(value, subject)
    except _NotTemplates as err:
        raise TemplateLoadError(spec, str(err)) from None
    if not templates:
        raise TemplateLoadError(
            spec, f"no templates found there: {subject} is empty; it must give {_TEMPLATE} objects."
        )
    return templates


def _run_file(spec: str, path: Path) -> Mapping[str, Any]:
    if path.is_dir():
        raise TemplateLoadError(spec, f"{path} is a directory, not a Python file.")
    if not path.is_file():
        raise TemplateLoadError(spec, f"no such file: {path} (there is no file at that path)")
    try:
        return runpy.run_path(str(path), run_name="__requence_templates__")
    except SyntaxError as err:
        raise TemplateLoadError(
            spec, f"{path} has a syntax error at line {err.lineno}: {err.msg}"
        ) from None
    except Exception as err:
        raise TemplateLoadError(spec, f"running {path} failed:\n{_trace(err)}") from None


def _import_module(spec: str, target: str) -> Mapping[str, Any]:
    if not target or not all(part.isidentifier() for part in target.split(".")):
        raise TemplateLoadError(
            spec,
            "expected a module name ('package.module') or a path to a .py file, "
            "optionally followed by ':NAME'.",
        )
    try:
        return vars(importlib.import_module(target))
    except ModuleNotFoundError as err:
        if err.name is not None and target.startswith(err.name):
            raise TemplateLoadError(
                spec,
                f"the module {err.name!r} is not importable. Install your project "
                "(pip install -e .), or put the directory that holds it on sys.path "
                "(under pytest: the pythonpath option, e.g. pythonpath = .).",
            ) from None
        raise TemplateLoadError(spec, f"importing {target!r} failed:\n{_trace(err)}") from None
    except Exception as err:
        raise TemplateLoadError(spec, f"importing {target!r} failed:\n{_trace(err)}") from None


def _named_value(
    spec: str,
    target: str,
    attribute: str,
    namespace: Mapping[str, Any],
) -> Any:
    from .local import Template

    first, *rest = attribute.split(".")
    if first not in namespace:
        raise TemplateLoadError(spec, f"{target!r} defines no name {first!r}.")
    value = namespace[first]
    for part in rest:
        if not hasattr(value, part):
            raise TemplateLoadError(spec, f"{first!r} has no attribute {part!r}.")
        value = getattr(value, part)
    if callable(value) and not isinstance(value, Template):
        try:
            value = value()
        except Exception as err:
            raise TemplateLoadError(spec, f"calling {attribute}() failed:\n{_trace(err)}") from None
    return value


def _check_templates(value: object, subject: str) -> list[Template]:
    """``value`` as a list of templates (one ``Template``, or an iterable of them);
    else :class:`_NotTemplates`, whose message starts with ``subject``."""
    from .local import Template

    if isinstance(value, Template):
        return [value]
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise _NotTemplates(
            f"{subject} must give a list of {_TEMPLATE} objects, not {type(value).__name__}."
        )
    found = list(value)
    for item in found:
        if not isinstance(item, Template):
            raise _NotTemplates(
                f"{subject} must give {_TEMPLATE} objects; it holds a "
                f"{type(item).__name__}: {_short(item)}. Make each with Template(...)."
            )
    return found


# --- what a test sees ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StartedTask:
    """A task as the local server holds it, seen from a test.

    A snapshot: ask the :class:`RequenceLocal` again for fresh values.

    Attributes:
        id: The task's id.
        template: The template's name.
        name: The task's name, or ``None``.
        input: The input it was started with (``None`` if it never started).
        status: Its status now (a ``str`` enum: ``task.status == "SUCCESSFUL"`` works).
        outcome: How it ended (``SUCCESSFUL``, ``FAILED`` or ``STOPPED``),
            also while it awaits delivery; ``None`` until it ends.
        result: Its result once successful, else ``None``.
        error: Why it failed or was aborted (e.g. ``"node 'greeter' failed:
            the boiler exploded"``), or why finalize rejected its input (the
            task is then still ``IDLE``), else ``None``.
        nodes: The latest data each node sent, by alias.
        node_errors: The error message of each node that failed, by alias.
        priority: The priority it was started with (0 low .. 10 high), or ``None``.
        require_ack: Whether it was started with ``require_ack``.
        protected: Whether it is protected from cleanup.
        project: The server project it belongs to (``"default"`` for the
            fixture's token).
        started: Whether it was started (finalized). A task whose input was
            rejected was created but never started.
        url: The task's page on the local server.
        exit: The exit it ended through, if its template has exits.
        root_task_id: For a sub-task (started by a ``subtask`` node), the
            top-level task's id; else ``None``.

    Example:
        >>> [task] = requence_local.wait_for(1, template="greet")  # doctest: +SKIP
        >>> task.status, task.result
        (<TaskStatus.SUCCESSFUL: 'SUCCESSFUL'>, {'message': 'Hello, Ada!'})
        >>> task.summary()
        "3f2a... greet SUCCESSFUL -> {'message': 'Hello, Ada!'}"
    """

    id: str
    template: str
    name: str | None
    input: Any
    status: TaskStatus
    outcome: TaskStatus | None
    result: Any
    error: str | None
    nodes: dict[str, Any]
    node_errors: dict[str, str]
    priority: int | None
    require_ack: bool
    protected: bool
    project: str
    started: bool
    url: str
    exit: str | None = None
    root_task_id: str | None = None

    @property
    def ended(self) -> bool:
        """Whether it has ended (including awaiting delivery)."""
        return self.status.ended

    def summary(self) -> str:
        """One line: id, template, status, and the error or result."""
        detail = ""
        if self.error is not None:
            detail = f": {self.error}"
        elif self.result is not None:
            detail = f" -> {_short(self.result)}"
        label = f" {self.name!r}" if self.name is not None else ""
        started = "" if self.started else " (never started)"
        return f"{self.id} {self.template}{label} {self.status.value}{started}{detail}"


class _Row(Protocol):
    """What :class:`RequenceLocal` reads of a task the server stores."""

    @property
    def id(self) -> str: ...
    @property
    def project(self) -> str: ...
    @property
    def template(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def input(self) -> Any: ...
    @property
    def priority(self) -> int | None: ...
    @property
    def require_ack(self) -> bool: ...
    @property
    def status(self) -> str: ...
    @property
    def final_status(self) -> str | None: ...
    @property
    def exit(self) -> str | None: ...
    @property
    def root_task_id(self) -> str | None: ...
    @property
    def status_text(self) -> str | None: ...
    @property
    def result(self) -> Any: ...
    @property
    def protected(self) -> bool: ...
    @property
    def created_at(self) -> float: ...
    @property
    def finalized_at(self) -> float | None: ...


class RequenceLocal:
    """A running local Requence, and the tasks created on it from now on.

    The ``requence_local`` fixture makes one per test, so a test sees only
    its own tasks. You may also make one for a server of your own; it then
    shows the tasks that server creates from now on.

    Args:
        server: A running :class:`~requence_task.local.LocalRequence`.

    Attributes:
        server: The :class:`~requence_task.local.LocalRequence` itself (shared by
            the tests of the session: change its settings with care).
        access_token: The server's access token (default project). It is also in
            ``REQUENCE_TASK_ACCESS_TOKEN`` and ``REQUENCE_ACCESS_TOKEN`` while
            the test runs.

    Example:
        >>> def test_greets(requence_local):                    # doctest: +SKIP
        ...     task = Task("greet", input={"name": "Ada"})     # no token: the env's
        ...     assert task.result(timeout=10).result == {"message": "Hello, Ada!"}
        ...     [started] = requence_local.tasks(template="greet")
        ...     assert started.input == {"name": "Ada"}
    """

    def __init__(self, server: LocalRequence) -> None:
        self.server = server
        self.access_token = server.access_token
        # A task belongs to the test if the server created it after this moment
        # (the server stamps tasks with the same clock).
        self._since = time.time()
        self._client: Client | None = None

    @property
    def base_url(self) -> str:
        """The server's base URL, e.g. ``http://127.0.0.1:40123``."""
        return self.server.base_url

    @property
    def client(self) -> Client:
        """A :class:`~requence_task.Client` for the server, closed when the test ends."""
        if self._client is None or self._client.closed:
            self._client = Client(self.access_token)
        return self._client

    @property
    def faults(self) -> Faults:
        """The server's fault injection (``fail_next``, ``latency``...); cleared
        when the test ends."""
        return self.server.faults

    @property
    def templates(self) -> list[str]:
        """The names of the templates the server runs."""
        return sorted(self.server.templates)

    def tasks(
        self,
        template: str | None = None,
        *,
        status: str | None = None,
        include_unstarted: bool = False,
    ) -> list[StartedTask]:
        """The tasks started during this test, oldest first.

        Args:
            template: Only tasks of this template.
            status: Only tasks with this status (any letter case), e.g. ``"FAILED"``.
            include_unstarted: Also list tasks that were created but never
                started, e.g. because the server rejected their input.

        Returns:
            A snapshot; call again for fresh statuses.

        Raises:
            ConfigurationError: ``template`` is not served, or ``status`` is no status.

        Example:
            >>> [task] = requence_local.tasks("greet", status="SUCCESSFUL")  # doctest: +SKIP
        """
        self._check_template(template)
        wanted: TaskStatus | None = None
        if status is not None:
            wanted = TaskStatus.parse(status)
            if wanted is TaskStatus.UNKNOWN:
                known = ", ".join(_ALL_STATUSES)
                raise ConfigurationError(f"status must be one of {known}; got {status!r}")
        found = []
        for row in self._rows():
            if template is not None and row.template != template:
                continue
            if not include_unstarted and row.finalized_at is None:
                continue
            task = self._to_task(row)
            if wanted is not None and task.status is not wanted:
                continue
            found.append(task)
        return found

    def task(self, task_id: str) -> StartedTask:
        """One task of this test, by id, as it is now.

        Raises:
            TaskNotFoundError: No task of this test has that id.

        Example:
            >>> requence_local.task(task.task_id()).status  # doctest: +SKIP
            <TaskStatus.RUNNING: 'RUNNING'>
        """
        row = self.server.store.task(task_id) if isinstance(task_id, str) else None
        if row is None or row.created_at < self._since:
            raise TaskNotFoundError(
                f"No task with id {task_id!r} was created during this test.", task_id=task_id
            )
        return self._to_task(row)

    def last_task(self, template: str | None = None) -> StartedTask:
        """The task started last in this test (of ``template``, if given).

        Raises:
            TaskNotFoundError: The test has started no such task (yet). Code
                that starts tasks in the background may not have reached the
                server; use :meth:`wait_for` then.

        Example:
            >>> requence_local.last_task("greet").input  # doctest: +SKIP
            {'name': 'Ada'}
        """
        found = self.tasks(template)
        if not found:
            of = f" of template {template!r}" if template is not None else ""
            raise TaskNotFoundError(
                f"No task{of} was started during this test (yet). {self._seen()}"
            )
        return found[-1]

    def updates(self, task: StartedTask | str) -> list[tuple[str, dict[str, Any]]]:
        """The updates a task sent so far, in order, as ``(type, data)`` pairs.

        Example:
            >>> [t for t, _ in requence_local.updates(task)]  # doctest: +SKIP
            ['taskStart', 'nodeStart', 'nodeUpdate', 'nodeEnd', 'taskEnd']
        """
        task_id = task.id if isinstance(task, StartedTask) else task
        self.task(task_id)  # only this test's tasks
        events = self.server.store.task_events(task_id, after=None, since=None, limit=1_000_000)
        return [(event.type, json.loads(event.data)) for event in events]

    def wait_for(
        self,
        count: int = 1,
        *,
        template: str | None = None,
        ended: bool = True,
        timeout: float | None = 10.0,
    ) -> list[StartedTask]:
        """Wait until this test has started ``count`` tasks, and each has ended.

        For code that starts tasks in the background: ``Task(...)`` returns
        before the task reaches the server.

        Args:
            count: How many tasks (at least).
            template: Count only tasks of this template.
            ended: Also wait until every such task has ended; ``False`` waits
                only until they started.
            timeout: Seconds to wait at most; ``None`` waits as long as it takes.

        Returns:
            Every such task (possibly more than ``count``), oldest first.

        Raises:
            TaskTimeoutError: Not so within ``timeout`` (catchable as
                ``TimeoutError``); the message lists what the test did start.

        Example:
            >>> run_daily_import()          # doctest: +SKIP
            >>> [task] = requence_local.wait_for(1, template="daily-import")
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigurationError(f"count must be a positive integer, got {count!r}")
        self._check_template(template)
        deadline = _deadline(timeout)
        while True:
            found = self.tasks(template)
            if len(found) >= count and (not ended or all(t.ended for t in found)):
                return found
            if time.monotonic() >= deadline:
                of = f" of template {template!r}" if template is not None else ""
                what = "start and end" if ended else "start"
                raise TaskTimeoutError(
                    f"Waited {timeout} s for {count} task(s){of} to {what}; they did not. "
                    + self._seen(),
                    timeout=timeout,
                )
            time.sleep(_POLL_INTERVAL)

    def wait_idle(self, timeout: float | None = 10.0) -> list[StartedTask]:
        """Wait until no task of this test is queued or running; returns them all.

        Tasks still being created by a client in the background are not
        known yet; wait for those with :meth:`wait_for`, or call
        ``task.finalized()`` first.

        Raises:
            TaskTimeoutError: Some were still busy after ``timeout`` seconds.

        Example:
            >>> done = requence_local.wait_idle(timeout=30)  # doctest: +SKIP
        """
        deadline = _deadline(timeout)
        while True:
            found = self.tasks()
            if not any(t.status.value in _BUSY_STATUSES for t in found):
                return found
            if time.monotonic() >= deadline:
                raise TaskTimeoutError(
                    f"After {timeout} s, tasks of this test were still busy. {self._seen()}",
                    timeout=timeout,
                )
            time.sleep(_POLL_INTERVAL)

    def describe(self) -> str:
        """Every task created during this test, one line each (shown on failure).

        Example:
            >>> print(requence_local.describe())  # doctest: +SKIP
            3f2a... greet 'greeting' SUCCESSFUL -> {'message': 'Hello, Ada!'}
        """
        found = self.tasks(include_unstarted=True)
        if not found:
            return "No tasks were created during this test."
        return "\n".join(task.summary() for task in found)

    def __enter__(self) -> RequenceLocal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RequenceLocal {self.base_url}, templates: {', '.join(self.templates)}>"

    # --- internals ---------------------------------------------------------------

    def _rows(self) -> list[_Row]:
        rows = self.server.store.tasks_with_status(_ALL_STATUSES)
        mine: list[_Row] = [row for row in rows if row.created_at >= self._since]
        mine.sort(key=lambda row: row.created_at)
        return mine

    def _to_task(self, row: _Row) -> StartedTask:
        data, errors = self.server.store.node_outputs(row.id)
        return StartedTask(
            id=row.id,
            template=row.template,
            name=row.name,
            input=row.input,
            status=TaskStatus.parse(row.status),
            outcome=None if row.final_status is None else TaskStatus.parse(row.final_status),
            result=row.result,
            error=row.status_text,
            nodes=dict(data),
            node_errors=dict(errors),
            priority=None if row.priority is None else priority_from_wire(row.priority),
            require_ack=row.require_ack,
            protected=row.protected,
            project=row.project,
            started=row.finalized_at is not None,
            url=self.base_url + show_path(row.id),
            exit=row.exit,
            root_task_id=row.root_task_id,
        )

    def _check_template(self, template: str | None) -> None:
        if template is not None and template not in self.server.templates:
            known = ", ".join(repr(n) for n in self.templates) or "none"
            raise ConfigurationError(
                f"The local Requence serves no template named {template!r}; it serves: {known}."
            )

    def _seen(self) -> str:
        return "Tasks created during this test:\n" + self.describe()

    def close(self) -> None:
        """End of the test: abort what it left running, close its client, clear faults.

        The ``requence_local`` fixture calls it when each test ends; the
        server itself keeps running. A ``with`` block calls it on leaving.

        Example:
            >>> with RequenceLocal(server) as requence:        # doctest: +SKIP
            ...     Task("greet", input={"name": "Ada"}).result(timeout=10)
        """
        try:
            if not self.server.running:  # the test stopped it; the next test starts another
                return
            for row in self._rows():
                if row.status in (IDLE, PENDING, RUNNING):
                    try:
                        self.server.engine.abort(row.id, row.project, _TEARDOWN_REASON)
                    except Exception as err:
                        # The engine answers as the API does, with a status: the task
                        # ended meanwhile (409), or cleanup removed it (404).
                        if not isinstance(getattr(err, "status", None), int):
                            raise
        finally:
            if self._client is not None:
                self._client.close()
            self.server.faults.clear()


# --- small helpers -------------------------------------------------------------------


def _trace(err: BaseException) -> str:
    return "".join(traceback.format_exception(type(err), err, err.__traceback__)).rstrip()


def _deadline(timeout: float | None) -> float:
    seconds = check_timeout(timeout)
    return math.inf if seconds is None else time.monotonic() + seconds


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
