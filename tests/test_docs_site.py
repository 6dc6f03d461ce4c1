"""The documentation site builds with ``mkdocs build --strict``, and has what it should.

The site is built once, into a temporary directory, by the ``mkdocs`` of the
running interpreter (the ``docs`` extra: mkdocs, mkdocs-material,
mkdocstrings[python]). Without that extra the tests are skipped, unless
``REQUENCE_TASK_REQUIRE_DOCS=1`` is set (as CI does): then they fail.

Strict mode turns every warning into a failure: a page missing from the nav,
a nav entry without a page, a broken link or anchor, an unknown reference
target, a docstring that Griffe cannot read.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import requence_task

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CONFIG = ROOT / "mkdocs.yml"
HOOKS = DOCS / "reference" / "_site_hooks.py"
BUILD_TIMEOUT = 240
# The first test that uses the site also waits for its build.
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT + 60)

# The guides issue 7 asks for, beside the home page; each must be in the nav.
REQUIRED_PAGES = [
    "index.md",
    "scripts.md",
    "notebooks.md",
    "django.md",
    "flask.md",
    "testing.md",
    "protocol.md",
    "migrating.md",
]
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _docs_extra_missing() -> str | None:
    wanted = {
        "mkdocs": "mkdocs",
        "material": "mkdocs-material",
        "mkdocstrings_handlers.python": "mkdocstrings[python]",
        "yaml": "PyYAML",
    }
    for module, package in wanted.items():
        try:
            found = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            found = None
        if found is None:
            return f"{package} is not installed (pip install -e '.[docs]')"
    return None


def _require_docs_extra() -> None:
    missing = _docs_extra_missing()
    if missing is None:
        return
    if os.environ.get("REQUENCE_TASK_REQUIRE_DOCS") == "1":
        pytest.fail(f"REQUENCE_TASK_REQUIRE_DOCS=1 but {missing}")
    pytest.skip(f"the docs extra is needed to build the site: {missing}")


def _load_config() -> dict[str, Any]:
    """mkdocs.yml as plain data (mkdocs' own ``!relative`` tags become strings)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> str:
        return str(getattr(node, "value", ""))

    Loader.add_multi_constructor("!", tagged)
    config = yaml.load(CONFIG.read_text(encoding="utf-8"), Loader=Loader)
    assert isinstance(config, dict)
    return config


def _nav_files(nav: Any) -> list[str]:
    """Every page path named in a nav, in order."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [path for item in nav for path in _nav_files(item)]
    if isinstance(nav, dict):
        return [path for value in nav.values() for path in _nav_files(value)]
    return []


def _output_of(page: str) -> str:
    """The HTML file ``mkdocs`` writes for a Markdown page (directory URLs)."""
    stem = page[: -len(".md")]
    if stem == "index" or stem.endswith("/index"):
        return stem + ".html"
    return stem + "/index.html"


class Site:
    def __init__(self, path: Path, output: str, seconds: float, returncode: int) -> None:
        self.path = path
        self.output = output
        self.seconds = seconds
        self.returncode = returncode

    def page(self, page: str) -> str:
        return (self.path / _output_of(page)).read_text(encoding="utf-8")

    def reference_ids(self) -> set[str]:
        ids: set[str] = set()
        for file in (self.path / "reference").rglob("*.html"):
            ids.update(re.findall(r'\bid="([^"]+)"', file.read_text(encoding="utf-8")))
        return {html.unescape(i) for i in ids}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    _require_docs_extra()
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(CONFIG), "-d", str(out)],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    return Site(out, done.stdout + done.stderr, time.monotonic() - started, done.returncode)


def test_the_site_builds_strict(site: Site) -> None:
    warnings = [line for line in site.output.splitlines() if "WARNING" in line or "ERROR" in line]
    assert site.returncode == 0, (
        f"mkdocs build --strict failed after {site.seconds:.1f} s:\n"
        + "\n".join(warnings or site.output.splitlines()[-40:])
    )
    assert not warnings, "\n".join(warnings)
    assert (site.path / "index.html").is_file()
    assert (site.path / "search" / "search_index.json").is_file()
    assert (site.path / "sitemap.xml").is_file()


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page() -> None:
    _require_docs_extra()
    config = _load_config()
    in_nav = _nav_files(config["nav"])
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(set(in_nav)) == sorted(in_nav), "a page is in the nav twice"
    assert not [p for p in pages if p not in in_nav], "pages missing from the nav of mkdocs.yml"
    absent = [p for p in in_nav if not (DOCS / p).is_file()]
    assert not absent, f"the nav of mkdocs.yml names pages that do not exist yet: {absent}"
    assert [p for p in REQUIRED_PAGES if p not in in_nav] == []


def test_the_site_has_the_settings_we_rely_on() -> None:
    _require_docs_extra()
    config = _load_config()
    assert config["theme"]["name"] == "material"
    assert "content.code.copy" in config["theme"]["features"]
    assert config["strict"] is True
    assert config["site_dir"] == "site"
    plugins = [p if isinstance(p, str) else next(iter(p)) for p in config["plugins"]]
    assert {"search", "mkdocstrings"} <= set(plugins)
    validation = config["validation"]
    assert validation["nav"]["omitted_files"] == "warn"
    assert validation["links"]["anchors"] == "warn"


def test_every_page_is_built(site: Site) -> None:
    assert site.returncode == 0, "the build failed; see test_the_site_builds_strict"
    for page in _nav_files(_load_config()["nav"]):
        assert (site.path / _output_of(page)).is_file(), page


def test_the_reference_documents_every_public_name(site: Site) -> None:
    assert site.returncode == 0, "the build failed; see test_the_site_builds_strict"
    local = pytest.importorskip("requence_task.local", reason="needs the 'local' extra")
    ids = site.reference_ids()
    public = [f"requence_task.{name}" for name in requence_task.__all__]
    public += [f"requence_task.local.{name}" for name in local.__all__]
    missing = [name for name in public if name not in ids]
    assert not missing, (
        f"public names without a reference entry: {missing}; add a '::: NAME' line to the "
        "right page of docs/reference/"
    )
    # Private modules never show as headings.
    private = sorted(i for i in ids if re.match(r"requence_task\.(local\.)?_[a-z]", i))
    assert not private


def test_reference_pages_read_the_docstrings_as_written(site: Site) -> None:
    assert site.returncode == 0, "the build failed; see test_the_site_builds_strict"
    client = site.page("reference/client.md")
    # An attrs class gets its generated __init__ in the signature.
    start = client.index('id="requence_task.Timeouts"')
    signature = client[start : client.index("</code></pre>", start)]
    for field in ("connect", "read", "stream_inactivity"):
        assert field in signature
    # Sphinx roles are rendered as code, and linked when the site has the target.
    task = site.page("reference/task.md")
    assert ":class:" not in task and ":meth:" not in task
    assert 'href="../errors/#requence_task.TaskTimeoutError"' in task
    # "Example:" sections are examples: highlighted code, not quoted text.
    assert "<blockquote>" not in client


def test_every_sample_renders_as_a_code_block(site: Site) -> None:
    """The test flags of a fence (```python no-run) do not break its rendering."""
    assert site.returncode == 0, "the build failed; see test_the_site_builds_strict"
    wrong = []
    for page in sorted(p.name for p in DOCS.glob("*.md")):
        fences = len(_FENCE.findall((DOCS / page).read_text(encoding="utf-8")))
        rendered = site.page(page)
        blocks = len(re.findall(r'<div class="(?:language-[\w-]+ )?highlight">', rendered))
        if blocks < fences:
            wrong.append(f"{page}: {fences} fenced blocks, {blocks} rendered as code")
    assert not wrong


def _hooks() -> Any:
    _require_docs_extra()
    spec = importlib.util.spec_from_file_location("_site_hooks_under_test", HOOKS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("```python no-run", "```python"),
        ("```python pytest", "```python"),
        ("  ````python no-run  ", "  ````python"),
        ("```python", "```python"),
        ("```bash", "```bash"),
        ('```python title="app.py"', '```python title="app.py"'),
        ("text ```python no-run", "text ```python no-run"),
    ],
)
def test_the_hook_drops_test_flags_from_fences(line: str, expected: str) -> None:
    assert _hooks().on_page_markdown(f"a\n{line}\nb\n") == f"a\n{expected}\nb\n"
