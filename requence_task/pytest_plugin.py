"""pytest plugin: ``requence_local``, a local Requence with your templates.

Installed with the package and loaded by pytest on its own (entry point
``pytest11``). It gives your tests a running :class:`~requence_task.local.LocalRequence`
that serves *your* templates, points the default client at it, and lets a
test look at the tasks it started. See ``docs/testing.md`` for the guide.

Name the templates once, in your pytest configuration::

    [tool.pytest.ini_options]
    requence_templates = "myproject.workflows:TEMPLATES"

or override the ``requence_templates`` fixture in a ``conftest.py``. Then:

Example:
    >>> def test_import_starts_a_task(requence_local):       # doctest: +SKIP
    ...     run_daily_import()          # your code: Task("daily-import", ...)
    ...     [task] = requence_local.wait_for(1, template="daily-import")
    ...     assert task.status == "SUCCESSFUL"

Fixtures:

- ``requence_local`` (function scope): a :class:`RequenceLocal`. While the
  test runs, ``REQUENCE_TASK_ACCESS_TOKEN`` and ``REQUENCE_ACCESS_TOKEN`` hold
  the local server's token, so code that creates ``Task(...)`` without a token
  talks to it; both are restored afterwards. Its view of tasks covers the
  tasks created during the test only.
- ``requence_templates``: the templates to serve. The default reads the
  ``--requence-templates`` option, else the ``requence_templates`` ini option;
  override the fixture to build them in Python.
- ``requence_local_options``: keyword arguments for ``LocalRequence``
  (``concurrency``, ``retention``...); ``{}`` by default.

One server serves the whole session while the templates (the same objects)
and options stay the same; a test whose overrides give other ones gets a new
server, and the previous one stops.

The plugin never imports the server (Starlette, Uvicorn, jsonschema) unless a
test uses the fixture; without the ``local`` extra, only such tests fail, each
with a message saying ``pip install 'requence_task[local]'``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import os
import runpy
import time
import traceback
from collections.abc import Generator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from ._client import Client
from ._config import TOKEN_ENV_VARS
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

if TYPE_CHECKING:
    from .local import Faults, LocalRequence, Template
    from .local._store import TaskRow

__all__ = ["RequenceLocal", "StartedTask"]

INSTALL_HINT = "pip install 'requence_task[local]'"
INI_NAME = "requence_templates"
OPTION = "--requence-templates"

_ALL_STATUSES = (IDLE, PENDING, RUNNING, SUCCESSFUL, FAILED, STOPPED, AWAITING_DELIVERY)
_BUSY_STATUSES = frozenset({PENDING, RUNNING})
_POLL_INTERVAL = 0.02
_TEARDOWN_REASON = "the test that started it ended (requence_local aborts what a test leaves)"

_NO_TEMPLATES = (
    "requence_local has no templates to serve. Either override the fixture in your "
    "conftest.py:\n\n"
    '    @pytest.fixture(scope="session")\n'
    "    def requence_templates():\n"
    "        return [Template(...), ...]   # requence_task.local.Template\n\n"
    "or name them in your pytest configuration (a module or a .py file, then an optional "
    "':ATTRIBUTE'):\n\n"
    "    [tool.pytest.ini_options]\n"
    '    requence_templates = "myproject.workflows:TEMPLATES"\n\n'
    f"or on the command line: {OPTION}=myproject.workflows:TEMPLATES"
)


# --- hooks ---------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--requence-templates`` and the ``requence_templates`` ini option."""
    help_text = (
        "templates for the requence_local fixture: 'package.module', 'package.module:NAME', "
        "'path/file.py' or 'path/file.py:NAME'; NAME may be a list of Template objects, one "
        "Template, or a function returning them. Without NAME: the module's 'templates' or "
        "'TEMPLATES' list, else every Template at its top level."
    )
    group = parser.getgroup("requence", "requence_task local server")
    group.addoption(
        OPTION,
        action="append",
        default=[],
        dest="requence_templates_cli",
        metavar="SPEC",
        help=help_text + " May be given more than once; overrides the ini option.",
    )
    parser.addini(
        INI_NAME,
        type="args",
        default=[],
        help=help_text + " Several specs are separated by spaces; paths are relative to the "
        "configuration file.",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """On a failed test that used ``requence_local``, list the tasks it started."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    view = getattr(item, "funcargs", {}).get("requence_local")
    if isinstance(view, RequenceLocal):
        try:
            text = view.describe()
        except Exception as err:  # the report must not fail because the server did
            text = f"(the tasks could not be listed: {err})"
        report.sections.append(("requence_local: tasks of this test", text))


# --- what a test sees ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StartedTask:
    """A task as the local server holds it, seen from a test.

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
            the boiler exploded"``), else ``None``.
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


class RequenceLocal:
    """The ``requence_local`` fixture: a running local Requence, and this test's tasks.

    The fixture makes one per test. You may also make one for a server of
    your own; it then shows the tasks that server creates from now on.

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
        import json

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
        timeout: float = 10.0,
    ) -> list[StartedTask]:
        """Wait until this test has started ``count`` tasks, and each has ended.

        For code that starts tasks in the background: ``Task(...)`` returns
        before the task reaches the server.

        Args:
            count: How many tasks (at least).
            template: Count only tasks of this template.
            ended: Also wait until every such task has ended; ``False`` waits
                only until they started.
            timeout: Seconds to wait at most.

        Returns:
            Every such task (possibly more than ``count``), oldest first.

        Raises:
            TaskTimeoutError: Not so within ``timeout`` (catchable as
                ``TimeoutError``); the message lists what the test did start.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigurationError(f"count must be a positive integer, got {count!r}")
        self._check_template(template)
        deadline = time.monotonic() + _check_timeout(timeout)
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

    def wait_idle(self, timeout: float = 10.0) -> list[StartedTask]:
        """Wait until no task of this test is queued or running; returns them all.

        Tasks still being created by a client in the background are not
        known yet; wait for those with :meth:`wait_for`, or call
        ``task.finalized()`` first.

        Raises:
            TaskTimeoutError: Some were still busy after ``timeout`` seconds.
        """
        deadline = time.monotonic() + _check_timeout(timeout)
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
        """Every task created during this test, one line each (shown on failure)."""
        found = self.tasks(include_unstarted=True)
        if not found:
            return "No tasks were created during this test."
        return "\n".join(task.summary() for task in found)

    def __repr__(self) -> str:
        return f"<RequenceLocal {self.base_url}, templates: {', '.join(self.templates)}>"

    # --- internals ---------------------------------------------------------------

    def _rows(self) -> list[TaskRow]:
        rows = self.server.store.tasks_with_status(_ALL_STATUSES)
        mine = [row for row in rows if row.created_at >= self._since]
        mine.sort(key=lambda row: row.created_at)
        return mine

    def _to_task(self, row: TaskRow) -> StartedTask:
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
        )

    def _check_template(self, template: str | None) -> None:
        if template is not None and template not in self.server.templates:
            known = ", ".join(repr(n) for n in self.templates) or "none"
            raise ConfigurationError(
                f"The local Requence serves no template named {template!r}; it serves: {known}."
            )

    def _seen(self) -> str:
        return "Tasks created during this test:\n" + self.describe()

    def _close(self) -> None:
        """End of the test: abort what it left running, close its client, clear faults."""
        from .local._engine import ApiError

        try:
            if not self.server.running:  # the test stopped it; the next test starts another
                return
            for row in self._rows():
                if row.status in (IDLE, PENDING, RUNNING):
                    with contextlib.suppress(ApiError):  # it ended meanwhile
                        self.server.engine.abort(row.id, row.project, _TEARDOWN_REASON)
        finally:
            if self._client is not None:
                self._client.close()
            self.server.faults.clear()


# --- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def requence_templates(request: pytest.FixtureRequest) -> list[Template]:
    """The templates ``requence_local`` serves.

    By default from ``--requence-templates``, else the ``requence_templates``
    ini option. Override it in a ``conftest.py`` to build them in Python; any
    scope works, but return the *same* objects each time (a module-level list,
    or ``scope="session"``), since other objects start another server.

    Example:
        >>> @pytest.fixture(scope="session")                     # doctest: +SKIP
        ... def requence_templates():
        ...     return [Template("greet", nodes=[service("greeter", greet)])]
    """
    specs, base, origin = _configured_specs(request.config)
    if not specs:
        _fail(_NO_TEMPLATES)
    _require_local()
    templates: list[Template] = []
    for spec in specs:
        templates.extend(_load_spec(spec, base, origin))
    names = [t.name for t in templates]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        _fail(f"{origin}: more than one template is named {', '.join(map(repr, twice))}.")
    return templates


@pytest.fixture(scope="session")
def requence_local_options() -> dict[str, Any]:
    """Keyword arguments for the ``LocalRequence`` of ``requence_local``; override
    to change them, e.g. ``return {"concurrency": 1}``."""
    return {}


@pytest.fixture(scope="session")
def _requence_local_servers() -> Iterator[_Servers]:
    servers = _Servers()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def requence_local(
    requence_templates: Any,
    requence_local_options: Any,
    _requence_local_servers: _Servers,
) -> Iterator[RequenceLocal]:
    """A running local Requence with your templates; see :class:`RequenceLocal`.

    While the test runs, the token environment variables point at it. When
    it ends they are restored, tasks the test left unfinished are aborted,
    injected faults are cleared, and :attr:`RequenceLocal.client` is closed.
    """
    _require_local()
    server = _requence_local_servers.get(requence_templates, requence_local_options)
    view = RequenceLocal(server)
    with pytest.MonkeyPatch.context() as patch:
        for name in TOKEN_ENV_VARS:
            patch.setenv(name, view.access_token)
        try:
            yield view
        finally:
            view._close()


# --- the server --------------------------------------------------------------------


class _Servers:
    """The session's server, replaced when a test asks for other templates or options."""

    def __init__(self) -> None:
        self._server: LocalRequence | None = None
        self._templates: list[Template] = []
        self._options: dict[str, Any] = {}

    def get(self, templates: Any, options: Any) -> LocalRequence:
        from .local import LocalRequence

        wanted = _as_templates(templates, "the requence_templates fixture")
        if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
            _fail(
                "the requence_local_options fixture must return a dict of LocalRequence "
                f"keyword arguments, not {type(options).__name__}."
            )
        if "templates" in options:
            _fail("requence_local_options must not hold 'templates'; use requence_templates.")
        current = self._server
        if (
            current is not None
            and current.running
            and len(wanted) == len(self._templates)
            and all(a is b for a, b in zip(wanted, self._templates, strict=True))
            and dict(options) == self._options
        ):
            return current
        self.stop()
        try:
            server = LocalRequence(wanted, **options)
        except (TypeError, ValueError) as err:
            _fail(f"requence_local could not set up the local Requence: {err}")
        try:
            server.start()
        except (OSError, RuntimeError) as err:
            _fail(f"requence_local could not start the local Requence: {err}")
        self._server, self._templates, self._options = server, wanted, dict(options)
        return server

    def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.stop()


# --- naming templates in the configuration -----------------------------------------


def _configured_specs(config: pytest.Config) -> tuple[list[str], Path, str]:
    """The template specs, the directory relative paths start from, and where they came from."""
    cli = [s for s in config.getoption("requence_templates_cli") or [] if s.strip()]
    if cli:
        return cli, Path(config.invocation_params.dir), OPTION
    specs = [str(s) for s in config.getini(INI_NAME) if str(s).strip()]
    inipath = config.inipath
    base = inipath.parent if inipath is not None else Path(config.rootpath)
    return specs, base, _ini_origin(config)


def _ini_origin(config: pytest.Config) -> str:
    """Where the ini option's value came from, as the messages name it.

    ``-o``/``--override-ini`` wins over the configuration file (pytest takes the
    last ``-o`` of a name), so an override is named even when the file has the
    option too.
    """
    overrides = config.getoption("override_ini", None) or []
    if any(str(item).split("=", 1)[0] == INI_NAME for item in overrides):
        return f"{INI_NAME} from -o/--override-ini"
    if config.inipath is not None:
        return f"{INI_NAME} in {config.inipath.name}"
    return f"the ini option {INI_NAME}"


def _load_spec(spec: str, base: Path, origin: str) -> list[Template]:
    """Load ``module``, ``module:NAME``, ``file.py`` or ``file.py:NAME``."""
    from .local import Template

    spec = spec.strip()
    where = f"{origin} = {spec!r}"
    target, attribute = spec, ""
    if not spec.endswith(".py") and ":" in spec:
        target, attribute = spec.rsplit(":", 1)
        if not all(part.isidentifier() for part in attribute.split(".")):
            _fail(
                f"{where}: after ':' must come a name defined in {target!r}, "
                f"e.g. '{target}:TEMPLATES'; got {attribute!r}."
            )
    namespace: Mapping[str, Any]
    if target.endswith(".py") or "/" in target or os.sep in target:
        path = base / target
        if not path.is_file():
            _fail(f"{where}: there is no file {path}.")
        try:
            namespace = runpy.run_path(str(path), run_name="__requence_templates__")
        except Exception as err:
            _fail(f"{where}: running {path} failed:\n{_trace(err)}")
    else:
        if not target or not all(part.isidentifier() for part in target.split(".")):
            _fail(
                f"{where}: expected a module name ('package.module') or a path to a .py "
                "file, optionally followed by ':NAME'."
            )
        try:
            namespace = vars(importlib.import_module(target))
        except ModuleNotFoundError as err:
            if err.name is not None and target.startswith(err.name):
                _fail(
                    f"{where}: the module {err.name!r} is not importable from the tests. "
                    "Install your project (pip install -e .), or add the directory that "
                    "holds it to the pytest option pythonpath (e.g. pythonpath = .)."
                )
            _fail(f"{where}: importing {target!r} failed:\n{_trace(err)}")
        except Exception as err:
            _fail(f"{where}: importing {target!r} failed:\n{_trace(err)}")
    if attribute:
        first, *rest = attribute.split(".")
        if first not in namespace:
            _fail(f"{where}: {target!r} defines no name {first!r}.")
        value = namespace[first]
        for part in rest:
            if not hasattr(value, part):
                _fail(f"{where}: {first!r} has no attribute {part!r}.")
            value = getattr(value, part)
        if callable(value) and not isinstance(value, Template):
            try:
                value = value()
            except Exception as err:
                _fail(f"{where}: calling {attribute}() failed:\n{_trace(err)}")
    else:
        value = next(
            (namespace[n] for n in ("templates", "TEMPLATES") if namespace.get(n) is not None),
            None,
        )
        if value is None:
            value = [v for v in namespace.values() if isinstance(v, Template)]
    templates = _as_templates(value, where)
    if not templates:
        _fail(
            f"{where}: no templates found there; it must give requence_task.local.Template objects."
        )
    return templates


def _as_templates(value: Any, where: str) -> list[Template]:
    from .local import Template

    if isinstance(value, Template):
        return [value]
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        _fail(
            f"{where} must give a list of requence_task.local.Template objects, "
            f"not {type(value).__name__}."
        )
    found = list(value)
    for item in found:
        if not isinstance(item, Template):
            _fail(
                f"{where} must give requence_task.local.Template objects; it holds a "
                f"{type(item).__name__}: {_short(item)}. Make each with Template(...)."
            )
    return found


# --- small helpers -------------------------------------------------------------------


def _require_local() -> None:
    try:
        import requence_task.local  # noqa: F401
    except ImportError as err:
        _fail(
            "requence_local needs the local Requence, which needs the 'local' extra "
            f"(Starlette, Uvicorn, jsonschema): {INSTALL_HINT} "
            f"(import error: {err.__cause__ or err})"
        )


def _fail(message: str) -> NoReturn:
    """Fail the test at set-up with ``message`` alone: no traceback of the plugin, and
    no chained exception (messages about the user's code carry their traceback)."""
    raise pytest.fail.Exception(message, pytrace=False) from None


def _trace(err: BaseException) -> str:
    return "".join(traceback.format_exception(type(err), err, err.__traceback__)).rstrip()


def _check_timeout(timeout: float) -> float:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout < 0
    ):
        raise ConfigurationError(f"timeout must be zero or more seconds, got {timeout!r}")
    return float(timeout)


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
