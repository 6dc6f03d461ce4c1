"""The pytest plugin, as a user meets it: their own test files, run by pytest.

Most runs are subprocesses (``runpytest_subprocess``): the plugin is loaded
through its ``pytest11`` entry point, as in a user's environment, and each
run has its own modules, environment and server. Runs that only check a
set-up error, and start no server, run in-process.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from requence_task import ConfigurationError
from requence_task.local import LocalRequence
from requence_task.pytest_plugin import RequenceLocal

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 90
# Inner runs skip the cache and the unrelated plugins of this environment (hypothesis'
# alone doubles an in-process run, which re-imports it every time).
INNER_ARGS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:anyio")

GREET_CONFTEST = """
import pytest

from requence_task.local import Template, service


def greet(ctx):
    return {"message": f"Hello, {ctx.input['name']}!"}


def boil(ctx):
    raise RuntimeError("the boiler exploded")


def slow(ctx):
    ctx.wait(30)  # wakes at once when the task is aborted
    return {"aborted": ctx.aborted}


TEMPLATES = [
    Template(
        "greet",
        input_schema={"type": "object", "required": ["name"]},
        nodes=[service("greeter", greet)],
    ),
    Template("boiler", nodes=[service("boil", boil)]),
    Template("slow", nodes=[service("slow", slow)]),
]


@pytest.fixture(scope="session")
def requence_templates():
    return TEMPLATES
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*INNER_ARGS, *args, timeout=RUN_TIMEOUT)


def test_a_users_test_sees_the_tasks_its_code_started(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The outer environment: the fixture must replace it during a test, and restore it.
    monkeypatch.setenv("REQUENCE_TASK_ACCESS_TOKEN", "outer-sentinel")
    monkeypatch.delenv("REQUENCE_ACCESS_TOKEN", raising=False)
    pytester.makeconftest(
        GREET_CONFTEST
        + textwrap.dedent(
            """
            @pytest.fixture(scope="session")
            def requence_local_options():
                return {"concurrency": 2}
            """
        )
    )
    pytester.makepyfile(
        test_app="""
        import os

        from requence_task import Task, get_task


        def start_greeting(name):  # the code under test: default client, no token
            Task("greet", input={"name": name}, name="greeting", priority=7)


        def test_env_before():
            assert os.environ["REQUENCE_TASK_ACCESS_TOKEN"] == "outer-sentinel"
            assert "REQUENCE_ACCESS_TOKEN" not in os.environ


        def test_started_task_is_seen(requence_local):
            token = requence_local.access_token
            assert os.environ["REQUENCE_TASK_ACCESS_TOKEN"] == token
            assert os.environ["REQUENCE_ACCESS_TOKEN"] == token
            assert requence_local.server.concurrency == 2
            assert requence_local.base_url == requence_local.server.base_url
            assert requence_local.templates == ["boiler", "greet", "slow"]

            start_greeting("Ada")
            [task] = requence_local.wait_for(1, template="greet")
            assert (task.template, task.name, task.input) == ("greet", "greeting", {"name": "Ada"})
            assert task.status == "SUCCESSFUL" and task.outcome == "SUCCESSFUL"
            assert task.result == {"message": "Hello, Ada!"}
            assert task.nodes == {"greeter": {"message": "Hello, Ada!"}}
            assert task.node_errors == {} and task.error is None
            assert task.started and task.ended and task.priority == 7
            assert task.url == f"{requence_local.base_url}/tasks/{task.id}"
            assert requence_local.last_task() == task == requence_local.task(task.id)
            assert [kind for kind, _ in requence_local.updates(task)] == [
                "taskStart", "nodeStart", "nodeUpdate", "nodeEnd", "taskEnd"
            ]
            assert get_task(task.id, client=requence_local.client).status == "SUCCESSFUL"
            assert token not in repr(requence_local)


        def test_env_after():
            assert os.environ["REQUENCE_TASK_ACCESS_TOKEN"] == "outer-sentinel"
            assert "REQUENCE_ACCESS_TOKEN" not in os.environ
        """
    )
    result = run(pytester, "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_started_task_is_seen PASSED*"])


def test_a_failing_node_surfaces_in_the_task_and_in_the_report(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(GREET_CONFTEST)
    pytester.makepyfile(
        test_boil="""
        from requence_task import Task


        def test_the_failure_is_in_the_task(requence_local):
            Task("boiler", name="first boil").finalized(timeout=10)
            [task] = requence_local.wait_for(1)
            assert task.status == "FAILED" and task.outcome == "FAILED"
            assert task.error == "node 'boil' failed: the boiler exploded"
            assert task.node_errors == {"boil": "the boiler exploded"}
            assert requence_local.tasks(status="failed") == [task]
            assert requence_local.tasks(status="SUCCESSFUL") == []


        def test_a_failing_test_lists_its_tasks(requence_local):
            Task("boiler", name="second boil").finalized(timeout=10)
            requence_local.wait_for(1)
            assert False, "the user's own assertion"
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*requence_local: tasks of this test*",
            "* boiler 'second boil' FAILED: node 'boil' failed: the boiler exploded",
        ]
    )
    assert "first boil" not in result.stdout.str()  # the other test's task is not listed


def test_each_test_sees_only_its_own_tasks_and_leftovers_are_aborted(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(GREET_CONFTEST)
    pytester.makepyfile(
        test_isolation="""
        import pytest

        from requence_task import Task, TaskError

        SEEN = {}


        def test_a_leaves_a_task_running(requence_local):
            SEEN["server"] = requence_local.server
            SEEN["slow"] = Task("slow").finalized(timeout=10)
            requence_local.faults.fail_next(50, endpoint="get")
            [task] = requence_local.wait_for(1, ended=False)
            assert task.status in ("PENDING", "RUNNING")


        def test_b_sees_none_of_it(requence_local):
            assert requence_local.server is SEEN["server"]  # one server for the session
            assert requence_local.tasks(include_unstarted=True) == []
            with pytest.raises(LookupError):
                requence_local.task(SEEN["slow"])
            left = requence_local.server.store.task(SEEN["slow"])
            assert left.status == "STOPPED"
            assert "the test that started it ended" in left.status_text
            assert requence_local.faults.pending_failures == 0

            rejected = Task("greet", input={})
            with pytest.raises(TaskError):
                rejected.finalized(timeout=10)
            assert requence_local.tasks() == []
            [unstarted] = requence_local.tasks(include_unstarted=True)
            assert unstarted.status == "IDLE" and not unstarted.started
            with pytest.raises(TimeoutError, match=r"1 task\\(s\\) to start and end"):
                requence_local.wait_for(1, timeout=0.2)
            assert requence_local.wait_idle(timeout=1) == []
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_other_templates_in_another_directory_get_their_own_server(
    pytester: pytest.Pytester,
) -> None:
    for name in ("alpha", "beta"):
        pytester.mkpydir(name)
        (pytester.path / name / "conftest.py").write_text(
            textwrap.dedent(
                f"""
                import pytest

                from requence_task.local import Template, service

                TEMPLATES = [Template("{name}", nodes=[service("n", lambda ctx: "{name}")])]


                @pytest.fixture
                def requence_templates():  # function scope, the same objects each time
                    return TEMPLATES
                """
            )
        )
        (pytester.path / name / f"test_{name}.py").write_text(
            textwrap.dedent(
                f"""
                import threading

                from requence_task import Task


                def test_{name}_one(requence_local):
                    assert requence_local.templates == ["{name}"]
                    assert Task("{name}").result(timeout=10).result == "{name}"


                def test_{name}_two(requence_local):
                    assert requence_local.templates == ["{name}"]
                    workers = [
                        t for t in threading.enumerate()
                        if t.name.startswith("requence-local-worker")
                    ]
                    assert len(workers) == requence_local.server.concurrency  # the old one stopped
                """
            )
        )
    run(pytester).assert_outcomes(passed=4)


def test_the_ini_option_names_templates_by_module_and_by_file(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".ini",
        pytest="""
        [pytest]
        requence_templates = myflows:TEMPLATES defs/more.py:make_templates plainflows
        pythonpath = .
        """,
    )
    pytester.makepyfile(
        myflows="""
        from requence_task.local import Template, service

        TEMPLATES = [Template("from-module", nodes=[service("n", lambda ctx: "module")])]
        """,
        plainflows="""
        from requence_task.local import Template, service

        templates = [Template("listed", nodes=[service("n", lambda ctx: "listed")])]
        stray = Template("not-listed")  # the 'templates' list wins over module-level names
        """,
    )
    pytester.mkdir("defs")
    (pytester.path / "defs" / "more.py").write_text(
        textwrap.dedent(
            """
            from requence_task.local import Template, service


            def make_templates():
                return Template("from-file", nodes=[service("n", lambda ctx: "file")])
            """
        )
    )
    pytester.makepyfile(
        test_named="""
        from requence_task import Task


        def test_all_named_templates_are_served(requence_local):
            assert requence_local.templates == ["from-file", "from-module", "listed"]
            assert Task("from-module").result(timeout=10).result == "module"
            assert Task("from-file").result(timeout=10).result == "file"
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_the_command_line_option_wins_over_the_ini_option(pytester: pytest.Pytester) -> None:
    pytester.makefile(".ini", pytest="[pytest]\nrequence_templates = no_such_module:TEMPLATES\n")
    pytester.makepyfile(
        cli_flows="""
        from requence_task.local import Template, service

        TEMPLATES = [Template("from-cli", nodes=[service("n", lambda ctx: "cli")])]
        """,
        test_cli="""
        def test_served(requence_local):
            assert requence_local.templates == ["from-cli"]
        """,
    )
    run(pytester, "--requence-templates=cli_flows.py:TEMPLATES").assert_outcomes(passed=1)
    # Without the option the ini's (bad) module is used: the same test errors.
    run(pytester).assert_outcomes(errors=1)


FLOWS = """
from requence_task.local import Template, service

TEMPLATES = [Template("greet", nodes=[service("n", lambda ctx: 1)])]
NOT_TEMPLATES = ["greet"]
EMPTY = []
"""

BROKEN_FLOWS = """
from requence_task.local import Template, service

TEMPLATES = [
    Template("loop", nodes=[service("a", print, after=["b"]), service("b", print, after=["a"])])
]
"""


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (None, "requence_local has no templates to serve"),
        ("no_such_module:TEMPLATES", "the module 'no_such_module' is not importable"),
        ("flows:MISSING", "'flows' defines no name 'MISSING'"),
        ("flows:NOT_TEMPLATES", "holds a str: 'greet'"),
        ("flows:EMPTY", "no templates found there"),
        ("flows:1x", "after ':' must come a name defined in 'flows'"),
        ("missing.py", "there is no file"),
        ("broken_flows", "the nodes 'a', 'b' form a cycle"),
        ("flows flows:TEMPLATES", "more than one template is named 'greet'"),
    ],
)
def test_a_bad_templates_spec_fails_only_the_tests_that_use_it_with_a_clear_message(
    pytester: pytest.Pytester, spec: str | None, message: str
) -> None:
    if spec is not None:
        pytester.makefile(".ini", pytest=f"[pytest]\nrequence_templates = {spec}\npythonpath = .\n")
    pytester.makepyfile(
        flows=FLOWS,
        broken_flows=BROKEN_FLOWS,
        test_spec="""
        def test_uses_the_fixture(requence_local):
            pass


        def test_does_not_use_it():
            pass
        """,
    )
    result = pytester.runpytest(*INNER_ARGS)
    result.assert_outcomes(passed=1, errors=1)
    output = result.stdout.str()
    assert message in output
    if spec is not None:
        assert "requence_templates in pytest.ini" in output  # where the bad spec is


# Where a templates spec can come from: (config file name, its text, extra pytest arguments,
# what the message must name). The spec is bad in each, so the fixture fails naming it.
BAD = "no_such_module:TEMPLATES"
SPEC_SOURCES = {
    "pyproject.toml": (
        "pyproject.toml",
        f'[tool.pytest.ini_options]\nrequence_templates = "{BAD}"\n',
        [],
        "requence_templates in pyproject.toml = ",
    ),
    "pytest.ini": (
        "pytest.ini",
        f"[pytest]\nrequence_templates = {BAD}\n",
        [],
        "requence_templates in pytest.ini = ",
    ),
    "tox.ini": (
        "tox.ini",
        f"[pytest]\nrequence_templates = {BAD}\n",
        [],
        "requence_templates in tox.ini = ",
    ),
    "setup.cfg": (
        "setup.cfg",
        f"[tool:pytest]\nrequence_templates = {BAD}\n",
        [],
        "requence_templates in setup.cfg = ",
    ),
    # An override beside a config file that has a good spec, and one that has none at all.
    "-o over pyproject.toml": (
        "pyproject.toml",
        '[tool.pytest.ini_options]\nrequence_templates = "flows"\npythonpath = "."\n',
        ["-o", f"requence_templates={BAD}"],
        "requence_templates from -o/--override-ini = ",
    ),
    "--override-ini over tox.ini": (
        "tox.ini",
        "[pytest]\npythonpath = .\n",
        [f"--override-ini=requence_templates={BAD}"],
        "requence_templates from -o/--override-ini = ",
    ),
    "-o without a config file": (
        None,
        "",
        ["-o", f"requence_templates={BAD}"],
        "requence_templates from -o/--override-ini = ",
    ),
    "--requence-templates over pyproject.toml": (
        "pyproject.toml",
        '[tool.pytest.ini_options]\nrequence_templates = "flows"\npythonpath = "."\n',
        [f"--requence-templates={BAD}"],
        "--requence-templates = ",
    ),
}


def _message_lines(result: pytest.RunResult, phrase: str) -> list[str]:
    """The lines of the errors' own text with ``phrase``, not those of the short
    summary at the end (which repeats whole messages where ``CI`` is set)."""
    return [ln for ln in result.stdout.lines if phrase in ln and not ln.startswith("ERROR ")]


@pytest.mark.parametrize("source", list(SPEC_SOURCES))
def test_a_bad_spec_is_reported_with_its_real_source(
    pytester: pytest.Pytester, source: str
) -> None:
    config_file, config_text, args, named = SPEC_SOURCES[source]
    if config_file is not None:
        (pytester.path / config_file).write_text(config_text, encoding="utf-8")
    pytester.makepyfile(flows=FLOWS, test_it="def test_it(requence_local):\n    pass\n")
    result = pytester.runpytest(*INNER_ARGS, *args)
    result.assert_outcomes(errors=1)
    # The header names the config file too ("configfile: ..."): look at the message alone.
    [line] = _message_lines(result, "the module 'no_such_module' is not")
    assert f"{named}'{BAD}'" in line, line
    # No other source is named: in particular not the config file an override overrides.
    for other in {"pyproject.toml", "pytest.ini", "tox.ini", "setup.cfg"}:
        assert other in named or other not in line, line
    assert ("override" in named) == ("override" in line), line


def test_an_overridden_fixture_is_named_not_the_config_file(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(f'[tool.pytest.ini_options]\nrequence_templates = "{BAD}"\n')
    pytester.makeconftest(
        "import pytest\n\n\n@pytest.fixture(scope='session')\n"
        "def requence_templates():\n    return 'greet'\n"
    )
    pytester.makepyfile(test_it="def test_it(requence_local):\n    pass\n")
    result = pytester.runpytest(*INNER_ARGS, "-o", f"requence_templates={BAD}")
    result.assert_outcomes(errors=1)
    [line] = _message_lines(result, "must give a list of")
    assert "the requence_templates fixture must give" in line, line
    assert "pyproject.toml" not in line and "override" not in line, line


@pytest.mark.parametrize(
    ("conftest", "message"),
    [
        (
            "def requence_templates():\n    return 'greet'\n",
            "must give a list of requence_task.local.Template objects, not str",
        ),
        (
            "def requence_templates():\n    return [FLOW]\n\n\n"
            "@pytest.fixture\ndef requence_local_options():\n    return {'concurrency': 0}\n",
            "could not set up the local Requence: concurrency must be a positive integer",
        ),
        (
            "def requence_templates():\n    return [FLOW]\n\n\n"
            "@pytest.fixture\ndef requence_local_options():\n    return ['concurrency']\n",
            "must return a dict of LocalRequence keyword arguments, not list",
        ),
    ],
)
def test_bad_fixture_overrides_fail_with_a_clear_message(
    pytester: pytest.Pytester, conftest: str, message: str
) -> None:
    pytester.makeconftest(
        "import pytest\n\nfrom requence_task.local import Template\n\n"
        "FLOW = Template('greet')\n\n\n@pytest.fixture\n" + conftest
    )
    pytester.makepyfile(test_it="def test_it(requence_local):\n    pass\n")
    result = pytester.runpytest(*INNER_ARGS)
    result.assert_outcomes(errors=1)
    assert message in result.stdout.str()


def test_without_the_local_extra_only_tests_using_the_fixture_fail(
    pytester: pytest.Pytester,
) -> None:
    pytester.makefile(".ini", pytest="[pytest]\nrequence_templates = flows\npythonpath = .\n")
    pytester.makeconftest(
        """
        import sys

        # As if the 'local' extra were not installed: importing these fails.
        for name in ("starlette", "uvicorn", "jsonschema"):
            sys.modules[name] = None
        """
    )
    pytester.makepyfile(
        flows=FLOWS,
        test_extra="""
        import sys


        def test_plain():
            assert "requence_task.pytest_plugin" in sys.modules
            assert "requence_task.local" not in sys.modules


        def test_uses_the_fixture(requence_local):
            pass
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    assert (
        "requence_local needs the local Requence, which needs the 'local' extra "
        "(Starlette, Uvicorn, jsonschema): pip install 'requence_task[local]'"
    ) in result.stdout.str()


def test_loading_the_plugin_imports_no_server_dependency() -> None:
    code = (
        "import sys\n"
        "import requence_task.pytest_plugin\n"
        "heavy = {'starlette', 'uvicorn', 'jsonschema', 'requence_task.local'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _python_blocks(text: str, heading: str | None = None, flag: str = "") -> list[str]:
    if heading is not None:
        text = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"^```python{flag}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def test_the_guide_and_readme_samples_pass_under_pytest(pytester: pytest.Pytester) -> None:
    [guide] = _python_blocks((ROOT / "docs" / "testing.md").read_text("utf-8"), flag=" pytest")
    [readme] = _python_blocks(
        (ROOT / "README.md").read_text("utf-8"), heading="## Testing your own code"
    )
    pytester.makepyfile(test_guide=guide, test_readme=readme)
    expected = guide.count("\ndef test_") + readme.count("\ndef test_")
    assert expected >= 5
    run(pytester).assert_outcomes(passed=expected)


# --- the fixture's object, on the suite's own server ----------------------------------


def test_arguments_are_checked_before_anything_else(server: LocalRequence) -> None:
    view = RequenceLocal(server)
    with pytest.raises(ConfigurationError, match="serves no template named 'nope'"):
        view.tasks("nope")
    with pytest.raises(ConfigurationError, match="status must be one of"):
        view.tasks(status="DONE")
    with pytest.raises(ConfigurationError, match="count must be a positive integer"):
        view.wait_for(0)
    with pytest.raises(ConfigurationError, match=r"timeout must be None .* seconds >= 0"):
        view.wait_idle(timeout=-1)
    with pytest.raises(LookupError, match="No task was started during this test"):
        view.last_task()
    assert view.describe() == "No tasks were created during this test."
