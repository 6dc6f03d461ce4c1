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

- ``requence_local`` (function scope): a :class:`~requence_task.testing.RequenceLocal`.
  While the test runs, ``REQUENCE_TASK_ACCESS_TOKEN`` and ``REQUENCE_ACCESS_TOKEN`` hold
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

The fixture's object (``RequenceLocal``), the tasks it shows (``StartedTask``)
and the template loader (``load_templates``) live in :mod:`requence_task.testing`;
``RequenceLocal`` and ``StartedTask`` are importable from here too. This module
holds only the options, the fixtures and the report hook.

The plugin never imports the server (Starlette, Uvicorn, jsonschema) unless a
test uses the fixture; without the ``local`` extra, only such tests fail, each
with a message saying ``pip install 'requence_task[local]'``.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from ._config import TOKEN_ENV_VARS
from .testing import (
    RequenceLocal,
    StartedTask,
    TemplateLoadError,
    _check_templates,
    _NotTemplates,
    load_templates,
)

if TYPE_CHECKING:
    from .local import LocalRequence, Template

__all__ = ["RequenceLocal", "StartedTask"]

INSTALL_HINT = "pip install 'requence_task[local]'"
INI_NAME = "requence_templates"
OPTION = "--requence-templates"

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
    try:
        return load_templates(*specs, base=base)
    except TemplateLoadError as err:
        _fail(f"{origin} = {err.source!r}: {err.problem}")


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
            view.close()


# --- the server --------------------------------------------------------------------


class _Servers:
    """The session's server, replaced when a test asks for other templates or options."""

    def __init__(self) -> None:
        self._server: LocalRequence | None = None
        self._templates: list[Template] = []
        self._options: dict[str, Any] = {}

    def get(self, templates: Any, options: Any) -> LocalRequence:
        from .local import LocalRequence

        try:
            wanted = _check_templates(templates, "the requence_templates fixture")
        except _NotTemplates as err:
            _fail(str(err))
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
