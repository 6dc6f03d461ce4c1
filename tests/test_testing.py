"""``requence_task.testing``: the public testing module, and its one template loader.

``load_templates`` is what both ``requence-task local serve`` and the pytest
plugin's ``requence_templates`` option use; here it loads real files and
modules written to ``tmp_path``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import requence_task.pytest_plugin
import requence_task.testing
from requence_task import ConfigurationError
from requence_task.testing import TemplateLoadError, load_templates

pytest.importorskip("requence_task.local", reason="needs the 'local' extra")

ROOT = Path(__file__).resolve().parents[1]

FLOWS = """
from requence_task.local import Template, service

def _node(ctx):
    return 1

TEMPLATES = [Template("greet", nodes=[service("n", _node)]), Template("bill")]
ONE = Template("one")
NOT_TEMPLATES = ["greet"]
NUMBER = 3
EMPTY = []

def make():
    return [Template("made")]

def boom():
    raise RuntimeError("the factory broke")

class Holder:
    inner = [Template("inner")]
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def names(templates: list[object]) -> list[str]:
    return [t.name for t in templates]  # type: ignore[attr-defined]


def problem_of(*sources: str | Path, **kwargs: object) -> TemplateLoadError:
    with pytest.raises(TemplateLoadError) as caught:
        load_templates(*sources, **kwargs)  # type: ignore[arg-type]
    err = caught.value
    assert str(err) == f"{err.source}: {err.problem}"
    return err


@pytest.fixture
def module_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh module name, importable from ``tmp_path``."""
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"flows_{uuid.uuid4().hex}"
    yield name
    for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[loaded]


# --- what it loads --------------------------------------------------------------------


def test_a_file_by_its_path_uses_its_templates_list(tmp_path: Path) -> None:
    path = write(tmp_path, "flows.py", FLOWS)
    assert names(load_templates(str(path))) == ["greet", "bill"]
    assert names(load_templates(path)) == ["greet", "bill"]  # a Path works the same


def test_without_a_name_templates_then_TEMPLATES_then_every_template(tmp_path: Path) -> None:
    both = write(
        tmp_path,
        "both.py",
        """
        from requence_task.local import Template
        templates = [Template("lower")]
        TEMPLATES = [Template("upper")]
        """,
    )
    assert names(load_templates(both)) == ["lower"]
    loose = write(
        tmp_path,
        "loose.py",
        """
        from requence_task.local import Template
        first = Template("first")
        second = Template("second")
        """,
    )
    assert names(load_templates(loose)) == ["first", "second"]


def test_a_name_after_the_colon(tmp_path: Path) -> None:
    path = write(tmp_path, "flows.py", FLOWS)
    assert names(load_templates(f"{path}:TEMPLATES")) == ["greet", "bill"]
    assert names(load_templates(f"{path}:ONE")) == ["one"]  # one Template
    assert names(load_templates(f"{path}:make")) == ["made"]  # a function returning them
    assert names(load_templates(f"{path}:Holder.inner")) == ["inner"]  # an attribute


def test_relative_paths_start_from_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "conf/tests/flows.py", FLOWS)
    assert names(load_templates("tests/flows.py:ONE", base=tmp_path / "conf")) == ["one"]
    monkeypatch.chdir(tmp_path / "conf")  # no base: the current directory
    assert names(load_templates("tests/flows.py:ONE")) == ["one"]


def test_a_path_object_is_a_file_whatever_its_name(tmp_path: Path) -> None:
    path = write(tmp_path, "templates.txt", FLOWS)
    assert names(load_templates(path)) == ["greet", "bill"]


def test_modules_and_several_sources_in_order(tmp_path: Path, module_name: str) -> None:
    write(tmp_path, f"{module_name}/__init__.py", "")
    write(tmp_path, f"{module_name}/mail.py", FLOWS)
    write(
        tmp_path,
        "other.py",
        "from requence_task.local import Template\ntemplates = [Template('other')]\n",
    )
    loaded = load_templates(
        f"{module_name}.mail:ONE", f"{module_name}.mail:make", tmp_path / "other.py"
    )
    assert names(loaded) == ["one", "made", "other"]
    assert names(load_templates(f" {module_name}.mail ")) == ["greet", "bill"]  # spaces trimmed


# --- what it says when something is wrong ----------------------------------------------


def test_a_missing_file_or_a_directory(tmp_path: Path) -> None:
    missing = tmp_path / "missing.py"
    err = problem_of(str(missing))
    assert err.source == str(missing)
    assert err.problem == f"no such file: {missing} (there is no file at that path)"
    err = problem_of("missing.py", base=tmp_path)  # the message has the full path
    assert (err.source, f"no such file: {missing}" in err.problem) == ("missing.py", True)
    (tmp_path / "pkg.py").mkdir()
    assert (
        problem_of(tmp_path / "pkg.py").problem
        == f"{tmp_path / 'pkg.py'} is a directory, not a Python file."
    )


def test_a_file_that_does_not_run(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.py", "x = 1\ndef broken(:\n")
    err = problem_of(bad)
    assert err.problem.startswith(f"{bad} has a syntax error at line 2: ")
    raising = write(tmp_path, "raising.py", "raise RuntimeError('no database here')\n")
    err = problem_of(raising)
    assert err.problem.startswith(f"running {raising} failed:\nTraceback")
    assert "RuntimeError: no database here" in err.problem  # the user's traceback, as text


def test_a_module_that_does_not_import(tmp_path: Path, module_name: str) -> None:
    err = problem_of(f"{module_name}:TEMPLATES")
    assert err.problem.startswith(f"the module {module_name!r} is not importable. ")
    assert "pip install -e ." in err.problem
    write(tmp_path, f"{module_name}.py", "import no_such_dependency_here\n")
    err = problem_of(module_name)
    assert err.problem.startswith(f"importing {module_name!r} failed:\nTraceback")
    assert "No module named 'no_such_dependency_here'" in err.problem


@pytest.mark.parametrize(
    ("suffix", "problem"),
    [
        (
            ":1x",
            "after ':' must come a name defined in {file!r}, e.g. '{file}:TEMPLATES'; got '1x'.",
        ),
        (":MISSING", "{file!r} defines no name 'MISSING'."),
        (":Holder.nope", "'Holder' has no attribute 'nope'."),
        (":NUMBER", "'NUMBER' must give a list of requence_task.local.Template objects, not int."),
        (
            ":NOT_TEMPLATES",
            "'NOT_TEMPLATES' must give requence_task.local.Template objects; it holds a str: "
            "'greet'. Make each with Template(...).",
        ),
        (
            ":EMPTY",
            "no templates found there: 'EMPTY' is empty; it must give "
            "requence_task.local.Template objects.",
        ),
    ],
)
def test_a_name_that_gives_no_templates(tmp_path: Path, suffix: str, problem: str) -> None:
    file = str(write(tmp_path, "flows.py", FLOWS))
    err = problem_of(file + suffix)
    assert err.source == file + suffix
    assert err.problem == problem.format(file=file)


def test_a_function_that_fails(tmp_path: Path) -> None:
    file = write(tmp_path, "flows.py", FLOWS)
    err = problem_of(f"{file}:boom")
    assert err.problem.startswith("calling boom() failed:\nTraceback")
    assert "RuntimeError: the factory broke" in err.problem


def test_a_file_without_templates(tmp_path: Path) -> None:
    empty = write(tmp_path, "nothing.py", "x = 1\n")
    assert problem_of(empty).problem == (
        f"{empty} defines no templates: define a list named 'templates' (or 'TEMPLATES') "
        "of requence_task.local.Template objects."
    )
    assert problem_of(str(empty)).problem.endswith(", or name them after ':'.")


def test_a_malformed_module_name() -> None:
    err = problem_of("not a module")
    assert err.problem == (
        "expected a module name ('package.module') or a path to a .py file, "
        "optionally followed by ':NAME'."
    )


def test_two_templates_of_one_name(tmp_path: Path) -> None:
    file = str(write(tmp_path, "flows.py", FLOWS))
    err = problem_of(file, f"{file}:TEMPLATES")
    assert err.source == f"{file} {file}:TEMPLATES"
    assert err.problem == "more than one template is named 'bill', 'greet'."


def test_its_errors_are_configuration_errors(tmp_path: Path) -> None:
    err = problem_of(tmp_path / "missing.py")
    assert isinstance(err, ConfigurationError) and isinstance(err, ValueError)
    with pytest.raises(ConfigurationError, match="at least one source"):
        load_templates()
    with pytest.raises(TypeError, match="must be a str or a path, not int"):
        load_templates(3)  # type: ignore[arg-type]


# --- the module ---------------------------------------------------------------------


def test_testing_is_importable_and_its_all_is_documented() -> None:
    testing = requence_task.testing
    assert testing.__all__ == [
        "RequenceLocal",
        "StartedTask",
        "TemplateLoadError",
        "load_templates",
    ]
    assert (testing.__doc__ or "").strip()
    reference = (ROOT / "docs" / "reference" / "testing.md").read_text(encoding="utf-8")
    for name in testing.__all__:
        value = getattr(testing, name)
        assert value.__module__ == "requence_task.testing", name
        assert (value.__doc__ or "").strip(), f"{name} has no docstring"
        assert "Example:" in value.__doc__, f"{name}'s docstring has no example"
        assert re.search(rf"^::: requence_task\.testing\.{name}$", reference, re.MULTILINE), name
    # The plugin's names of old are the same objects.
    for name in requence_task.pytest_plugin.__all__:
        assert getattr(requence_task.pytest_plugin, name) is getattr(testing, name)


def test_importing_testing_imports_no_server_dependency() -> None:
    code = (
        "import sys\n"
        "import requence_task.testing\n"
        "heavy = {'starlette', 'uvicorn', 'jsonschema', 'requence_task.local'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_view_outside_pytest_aborts_its_leftovers_when_its_block_ends() -> None:
    from requence_task import Task, TaskStatus, get_task
    from requence_task.local import LocalRequence, Template, service
    from requence_task.testing import RequenceLocal

    def slow(ctx):  # type: ignore[no-untyped-def]
        ctx.wait(30)  # wakes at once when the task is aborted
        return {"aborted": ctx.aborted}

    quick = Template("quick", nodes=[service("n", lambda ctx: {"ok": True})])
    with LocalRequence([quick, Template("slow", nodes=[service("s", slow)])]) as server:
        with RequenceLocal(server) as view:
            client = view.client
            done = Task("quick", client=client).result(timeout=10)
            left_id = Task("slow", client=client).finalized(timeout=10)
            assert [t.template for t in view.tasks()] == ["quick", "slow"]
        assert client.closed
        assert done.result == {"ok": True}
        assert get_task(left_id, access_token=server.access_token).status is TaskStatus.STOPPED
        with pytest.raises(ConfigurationError, match="timeout must be None"):
            view.wait_idle(timeout=-1)
