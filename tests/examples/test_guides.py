"""docs/django.md and docs/flask.md stay true to the examples.

* Each excerpt of an example's code in a guide (a ```` ```python no-run ````
  block whose first line names the file, ``# taskapp/views.py``) is that
  file's code: its lines appear in the file, in the same order.
* The Flask guide's "Testing your views" sample passes under pytest, with the
  ``requence_local`` fixture of this package's plugin and the example's
  templates. (The Django one needs pytest-django, which the test extra does
  not install; tests/examples/test_django_app.py covers the same ground.)

The samples that do not need a framework are run by tests/test_docs.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..test_docs import samples
from .conftest import EXAMPLES, ROOT

GUIDES = {"flask.md": EXAMPLES / "flask_app", "django.md": EXAMPLES / "django_app"}
_NAMES_FILE = re.compile(r"^# (?P<path>[\w/]+\.py)\s*$")


def excerpts(guide: str) -> list[tuple[int, Path, list[str]]]:
    """``(line, file, code lines)`` of each excerpt of an example file in ``guide``."""
    found = []
    for sample in samples((ROOT / "docs" / guide).read_text(encoding="utf-8")):
        if sample.language != "python" or "no-run" not in sample.flags:
            continue
        first, *rest = sample.code.splitlines()
        match = _NAMES_FILE.match(first)
        if match and (GUIDES[guide] / match["path"]).is_file():
            found.append((sample.line, GUIDES[guide] / match["path"], rest))
    return found


CASES = [(guide, *excerpt) for guide in GUIDES for excerpt in excerpts(guide)]


def test_each_guide_quotes_its_example() -> None:
    assert {guide for guide, *_ in CASES} == set(GUIDES)
    assert len(CASES) >= 6


@pytest.mark.parametrize(
    ("guide", "line", "path", "code"),
    CASES,
    ids=[f"{guide}-line{line}" for guide, line, *_ in CASES],
)
def test_an_excerpt_is_the_example_code(guide: str, line: int, path: Path, code: list[str]) -> None:
    source = [text.rstrip() for text in path.read_text(encoding="utf-8").splitlines()]
    at = 0
    for wanted in (text.rstrip() for text in code):
        if not wanted.strip():
            continue
        try:
            at = source.index(wanted, at) + 1
        except ValueError:
            pytest.fail(
                f"docs/{guide} line {line}: {wanted.strip()!r} is not in "
                f"{path.relative_to(ROOT)} (after line {at}); update the excerpt"
            )


def test_the_flask_guides_test_sample_passes(tmp_path: Path) -> None:
    [sample] = [
        s
        for s in samples((ROOT / "docs" / "flask.md").read_text(encoding="utf-8"))
        if s.code.startswith("# tests/test_views.py")
    ]
    (tmp_path / "test_views.py").write_text(sample.code, encoding="utf-8")
    site = EXAMPLES / "flask_app"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    for name in ("REQUENCE_TASK_ACCESS_TOKEN", "REQUENCE_ACCESS_TOKEN"):
        env.pop(name, None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--requence-templates={site / 'requence_templates.py'}",
            "test_views.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"\b2 passed\b", done.stdout), done.stdout[-3000:]
