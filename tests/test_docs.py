"""Every Python sample in docs/*.md runs.

Samples of docs/local-server.md start their own servers. Samples of the other
pages run against a local Requence with the demo templates, its token in
``REQUENCE_TASK_ACCESS_TOKEN``, as a reader's would be.

Fenced blocks are chosen by their info string:

- ```` ```python ````: run with ``exec`` in a fresh namespace, with the repo
  root as working directory (so ``examples/templates.py`` resolves); the test
  fails if the sample raises.
- ```` ```python pytest ````: a test module; it is written to a temporary
  directory and run by pytest in a subprocess, which must pass every test.
- ```` ```python no-run ````: only compiled (it needs another package, or a
  terminal and Ctrl-C).

Other languages (``bash``, ``text``) are not run. The samples of README.md run
as those of docs/*.md do, except the ones that define tests:
tests/plugin/test_pytest_plugin.py runs those under pytest.

The rejected path. A sample that catches ``TaskError`` (or ``RequenceError``)
around a wait on a task says what happens when Requence rejects the input.
Its run is traced: if it took that branch (it gave a bad input on purpose),
that run tested it. If not, it runs once more, with the same token variable,
on a local Requence whose templates of the same names reject every input.
There it must take the branch, print Requence's reason if the branch prints
or exits, and end without a traceback: normally, or by ``SystemExit`` with a
message or a non-zero status. Only one thing differs in that run: ``assert``
statements outside ``except`` clauses are evaluated but not checked, since
they state what the accepted input gives. The samples of docs/local-server.md
serve their own templates, so they must take such a branch themselves.
"""

from __future__ import annotations

import ast
import copy
import io
import os
import re
import runpy
import subprocess
import sys
import threading
import traceback
import types
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
DOC = ROOT / "docs" / "local-server.md"
SELF_SERVED = {"local-server.md"}

_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


class Sample:
    def __init__(self, info: str, code: str, line: int) -> None:
        words = info.split()
        self.language = words[0] if words else ""
        self.flags = frozenset(words[1:])
        self.code = code
        self.line = line

    @property
    def id(self) -> str:
        flags = "-".join(sorted(self.flags))
        return f"line{self.line}" + (f"-{flags}" if flags else "")


def samples(text: str) -> list[Sample]:
    found = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        found.append(Sample(match.group(1).strip(), match.group(2), line))
    return found


PYTHON = [s for s in samples(DOC.read_text(encoding="utf-8")) if s.language == "python"]
CLIENT_SAMPLES = [
    (doc.name, s)
    for doc in [README, *DOCS]
    if doc.name not in SELF_SERVED
    for s in samples(doc.read_text(encoding="utf-8"))
    if s.language == "python" and not (doc is README and re.search(r"^def test_", s.code, re.M))
]
KNOWN_FLAGS = {"no-run", "pytest"}


@contextmanager
def cwd(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _server_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("requence-local")}


def test_the_doc_has_samples_of_every_kind() -> None:
    assert len(PYTHON) >= 10
    assert {flag for s in PYTHON for flag in s.flags} <= KNOWN_FLAGS
    assert sum("pytest" in s.flags for s in PYTHON) == 1
    assert sum("no-run" in s.flags for s in PYTHON) <= 2


def test_the_sample_parser_sees_fences() -> None:
    text = "a\n```python\nx = 1\n```\n\n```python no-run\ny\n```\n```bash\nls\n```\n"
    found = samples(text)
    assert [(s.language, sorted(s.flags), s.code, s.line) for s in found] == [
        ("python", [], "x = 1\n", 2),
        ("python", ["no-run"], "y\n", 6),
        ("bash", [], "ls\n", 9),
    ]


def test_a_raising_sample_fails() -> None:
    with pytest.raises(AssertionError):
        run_sample(Sample("python", "assert 1 == 2\n", 1))


def run_sample(sample: Sample) -> None:
    filename = f"{DOC.name}:{sample.line}"
    tree = ast.parse(sample.code, filename)
    with lines_run(filename) as ran:
        exec_sample(compile(tree, filename, "exec"))
    # These samples start their own servers: no other server can reject their input,
    # so a branch for a rejected input must be one they take themselves.
    untaken = [h for h in rejection_handlers(tree) if h.body[0].lineno not in ran]
    assert not untaken, (
        f"{filename}: the except clause at line {untaken[0].lineno} handles a rejected "
        "input, but the sample never takes it. Give it an input its template rejects."
    )


@pytest.mark.parametrize("sample", PYTHON, ids=[s.id for s in PYTHON])
def test_sample(sample: Sample, tmp_path: Path) -> None:
    if "no-run" in sample.flags:
        compile(sample.code, f"{DOC.name}:{sample.line}", "exec")
        pytest.skip("marked no-run")
    before = _server_threads()
    if "pytest" in sample.flags:
        run_pytest_sample(sample, tmp_path)
    else:
        run_sample(sample)
    # A sample that starts a server must stop it.
    assert _server_threads() <= before


def run_pytest_sample(sample: Sample, tmp_path: Path) -> None:
    """Run a ```python pytest sample as a test module, by pytest in a subprocess."""
    module = tmp_path / "test_doc_sample.py"
    module.write_text(sample.code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"\b[1-9]\d* passed\b", done.stdout), done.stdout[-3000:]
    assert not re.search(r"\b(failed|error|errors|skipped)\b", done.stdout), done.stdout


def sample_templates() -> list[Any]:
    """What the client samples run on: the demo's ``greeting``, and the
    ``my-template`` of examples/templates.py (README.md's)."""
    from requence_task.local._demo import DEMO_TEMPLATES

    examples = runpy.run_path(str(ROOT / "examples" / "templates.py"))["templates"]
    return [*DEMO_TEMPLATES, *examples]


# Every input fails this schema, and Requence's reason quotes it: a sample that
# prints the reason prints this.
REJECTING_SCHEMA_VALUE = "an input no doc sample gives"


@pytest.fixture(scope="module")
def demo_token() -> Iterator[str]:
    from requence_task.local import LocalRequence

    with LocalRequence(sample_templates(), concurrency=4) as rq:
        yield rq.access_token


@pytest.fixture(scope="module")
def rejecting_token() -> Iterator[str]:
    """A local Requence with a template of each name the samples use, each of
    which rejects every input."""
    from requence_task.local import LocalRequence, Template

    rejecting = [
        Template(t.name, input_schema={"const": REJECTING_SCHEMA_VALUE}) for t in sample_templates()
    ]
    with LocalRequence(rejecting) as rq:
        yield rq.access_token


def test_client_pages_have_samples() -> None:
    pages = {name for name, _ in CLIENT_SAMPLES}
    assert {
        "README.md",
        "starting-tasks.md",
        "streaming-updates.md",
        "tasks-by-id.md",
        "watching-tasks.md",
    } <= pages


@pytest.mark.parametrize(
    ("page", "sample"), CLIENT_SAMPLES, ids=[f"{p}-{s.id}" for p, s in CLIENT_SAMPLES]
)
def test_client_sample(
    page: str,
    sample: Sample,
    demo_token: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    filename = f"{page}:{sample.line}"
    if "no-run" in sample.flags:
        compile(sample.code, filename, "exec")
        pytest.skip("marked no-run")
    if "pytest" in sample.flags:
        run_pytest_sample(sample, tmp_path)
        return
    monkeypatch.delenv("REQUENCE_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("REQUENCE_TASK_ACCESS_TOKEN", demo_token)
    tree = ast.parse(sample.code, filename)
    # Client samples may write files (docs/files.md's notes.txt): they run in a
    # folder of their own, which has the checkout's examples/ as they expect.
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    with lines_run(filename) as ran:
        exec_sample(compile(tree, filename, "exec"), where=tmp_path)
    if any(h.body[0].lineno not in ran for h in rejection_handlers(tree)):
        monkeypatch.setenv("REQUENCE_TASK_ACCESS_TOKEN", request.getfixturevalue("rejecting_token"))
        run_rejected(tree, filename, where=tmp_path)


# --- the rejected path -------------------------------------------------------------

# What a sample catches a rejection as, and the calls that wait for a task of its own.
_REJECTION_CLASSES = {"TaskError", "RequenceError"}
_TASK_WAITS = {"Task", "map", "finalized", "task_id", "task_url", "result", "updates"}


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _called(node: ast.AST) -> str | None:
    return _name(node.func) if isinstance(node, ast.Call) else None


def rejection_handlers(tree: ast.AST) -> list[ast.ExceptHandler]:
    """The ``except TaskError`` / ``except RequenceError`` clauses of a ``try``
    that starts or waits for a task (a call in ``_TASK_WAITS``, or a ``for``
    over its updates): where a sample says what a rejected input does."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        inside = [n for stmt in node.body for n in ast.walk(stmt)]
        if not any(_called(n) in _TASK_WAITS or isinstance(n, ast.For) for n in inside):
            continue
        for handler in node.handlers:
            caught = set() if handler.type is None else set(map(_name, ast.walk(handler.type)))
            if caught & _REJECTION_CLASSES:
                found.append(handler)
    return found


def _reports(handler: ast.ExceptHandler) -> bool:
    """Whether the clause prints something or exits with a message."""
    for node in ast.walk(handler):
        if _called(node) == "print":
            return True
        exc = node.exc if isinstance(node, ast.Raise) else None
        if isinstance(exc, ast.Call) and _called(exc) == "SystemExit" and exc.args:
            return True
    return False


class _AssertsUnchecked(ast.NodeTransformer):
    """``assert X`` becomes ``X`` outside ``except`` clauses (inside one, it is
    a promise about the error and stays)."""

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.ExceptHandler:
        return node

    def visit_Assert(self, node: ast.Assert) -> ast.Expr:
        return ast.copy_location(ast.Expr(node.test), node)


@contextmanager
def lines_run(filename: str) -> Iterator[set[int]]:
    """The line numbers run, in this thread, of code compiled as ``filename``."""
    ran: set[int] = set()

    def in_sample(frame: types.FrameType, event: str, arg: object) -> Any:
        if event == "line":
            ran.add(frame.f_lineno)
        return in_sample

    def on_call(frame: types.FrameType, event: str, arg: object) -> Any:
        return in_sample if frame.f_code.co_filename == filename else None

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        yield ran
    finally:
        sys.settrace(previous)


def run_rejected(tree: ast.Module, filename: str, where: Path = ROOT) -> str:
    """Run a sample on a Requence that rejects its input (the caller's token);
    returns what it printed. Fails unless it takes its rejected branch, says
    Requence's reason if that branch prints or exits, and ends without a
    traceback."""
    handlers = rejection_handlers(tree)
    unchecked = ast.fix_missing_locations(_AssertsUnchecked().visit(copy.deepcopy(tree)))
    output = io.StringIO()
    escaped = exit_code = None
    stopped = False
    with lines_run(filename) as ran, redirect_stdout(output), redirect_stderr(output):
        try:
            exec_sample(compile(unchecked, filename, "exec"), where=where)
        except SystemExit as stop:
            stopped, exit_code = True, stop.code
            if isinstance(stop.code, str):  # Python prints it, as the script's last words
                print(stop.code, file=sys.stderr)
        except Exception:
            escaped = traceback.format_exc()
    printed = output.getvalue()
    where = f"{filename}, with an input its template rejects"
    assert escaped is None, (
        f"{where}: the sample raised instead of handling the rejection. Its except clause "
        "must end the script (e.g. raise SystemExit(f'rejected: {err.server_message}')) "
        "rather than go on with the rejected task.\n"
        f"It printed:\n{printed}\n{escaped}"
    )
    assert not stopped or exit_code not in (None, 0), (
        f"{where}: the sample exited with status 0; a rejected input is a failure, so exit "
        "with a message or a non-zero status."
    )
    taken = [h for h in handlers if h.body[0].lineno in ran]
    assert taken, (
        f"{where}: the sample ended without going through its except clause (line "
        f"{', '.join(str(h.lineno) for h in handlers)}). It printed:\n{printed}"
    )
    if any(_reports(h) for h in taken):
        assert REJECTING_SCHEMA_VALUE in printed, (
            f"{where}: the except clause reports the rejection without Requence's reason; "
            f"print err.server_message (or the error). It printed:\n{printed}"
        )
    return printed


def exec_sample(code: types.CodeType, where: Path = ROOT) -> None:
    """Run a sample as the module ``__doc_sample__`` (dataclasses need a real
    module), in the folder ``where``."""
    module = types.ModuleType("__doc_sample__")
    sys.modules[module.__name__] = module
    try:
        with cwd(where):
            exec(code, module.__dict__)
    finally:
        del sys.modules[module.__name__]


# --- the rejected path, checked itself -------------------------------------------------

GOES_ON = """
from requence_task import Task, TaskError

task = Task("greeting", input={"name": "Ada"})
try:
    task.finalized(timeout=10)
except TaskError as err:
    print("rejected:", err.server_message)
for update in task:
    print(update.type)
"""

STOPS = GOES_ON.replace(
    'print("rejected:", err.server_message)', 'raise SystemExit(f"rejected: {err.server_message}")'
)


def _rejected(code: str, token: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("REQUENCE_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("REQUENCE_TASK_ACCESS_TOKEN", token)
    return run_rejected(ast.parse(code, "check.md:1"), "check.md:1")


def test_the_rejected_run_passes_a_sample_that_stops_with_the_reason(
    rejecting_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    printed = _rejected(STOPS, rejecting_token, monkeypatch)
    assert printed.startswith("rejected: The input failed the template's input schema")
    assert REJECTING_SCHEMA_VALUE in printed


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (GOES_ON, "the sample raised instead of handling the rejection"),
        (STOPS.replace('f"rejected: {err.server_message}"', "0"), "exited with status 0"),
        (STOPS.replace("{err.server_message}", "sorry"), "without Requence's reason"),
        (STOPS.replace("except TaskError", "except ValueError"), "raised instead of handling"),
        (
            "from requence_task import Task, TaskError\n\n"
            "task = Task('greeting', input={'name': 'Ada'})\n"
            "try:\n    task.task_id(timeout=10)\nexcept TaskError as err:\n    print(err)\n",
            "without going through its except clause (line 6)",
        ),
    ],
    ids=["goes-on", "exit-0", "no-reason", "wrong-class", "not-taken"],
)
def test_the_rejected_run_fails_a_sample_that_mishandles_a_rejection(
    code: str, message: str, rejecting_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(AssertionError, match=re.escape(message)):
        _rejected(code, rejecting_token, monkeypatch)


def test_rejection_handlers_are_those_around_a_wait_on_a_task() -> None:
    code = """
from requence_task import RequenceError, Task, TaskError, abort_task
import requence_task

task = Task("greeting", input={"name": "Ada"})
try:
    task.finalized(timeout=10)
except (KeyError, requence_task.TaskError):
    pass
try:
    for update in task:
        pass
except RequenceError:
    pass
try:
    abort_task(task_id)              # a conflict, not a rejected input
except TaskError:
    pass
try:
    task.result(timeout=10)
except ValueError:
    pass
"""
    assert [h.lineno for h in rejection_handlers(ast.parse(code))] == [8, 13]


def test_a_self_served_sample_must_take_its_rejected_branch() -> None:
    code = (
        "from requence_task import TaskError\n\n\n"
        "def never_called(task):\n"
        "    try:\n"
        "        task.finalized(timeout=10)\n"
        "    except TaskError as err:\n"
        "        raise SystemExit(err.server_message)\n"
    )
    with pytest.raises(AssertionError, match="never takes it"):
        run_sample(Sample("python", code, 1))
