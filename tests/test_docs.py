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

Other languages (``bash``, ``text``) are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
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
    for doc in DOCS
    if doc.name not in SELF_SERVED
    for s in samples(doc.read_text(encoding="utf-8"))
    if s.language == "python"
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
    exec_sample(compile(sample.code, f"{DOC.name}:{sample.line}", "exec"))


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


@pytest.fixture(scope="module")
def demo_token() -> Iterator[str]:
    from requence_task.local import LocalRequence
    from requence_task.local._demo import DEMO_TEMPLATES

    with LocalRequence(DEMO_TEMPLATES, concurrency=4) as rq:
        yield rq.access_token


def test_client_pages_have_samples() -> None:
    pages = {name for name, _ in CLIENT_SAMPLES}
    assert {
        "starting-tasks.md",
        "streaming-updates.md",
        "tasks-by-id.md",
        "watching-tasks.md",
    } <= pages


@pytest.mark.parametrize(
    ("page", "sample"), CLIENT_SAMPLES, ids=[f"{p}-{s.id}" for p, s in CLIENT_SAMPLES]
)
def test_client_sample(
    page: str, sample: Sample, demo_token: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if "no-run" in sample.flags:
        compile(sample.code, f"{page}:{sample.line}", "exec")
        pytest.skip("marked no-run")
    if "pytest" in sample.flags:
        run_pytest_sample(sample, tmp_path)
        return
    monkeypatch.delenv("REQUENCE_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("REQUENCE_TASK_ACCESS_TOKEN", demo_token)
    exec_sample(compile(sample.code, f"{page}:{sample.line}", "exec"))


def exec_sample(code: types.CodeType) -> None:
    """Run a sample as the module ``__doc_sample__`` (dataclasses need a real module)."""
    module = types.ModuleType("__doc_sample__")
    sys.modules[module.__name__] = module
    try:
        with cwd(ROOT):
            exec(code, module.__dict__)
    finally:
        del sys.modules[module.__name__]
