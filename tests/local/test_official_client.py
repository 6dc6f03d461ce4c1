"""The proof that the local server speaks the real protocol: the official
``requence`` client (PyPI, Python 3.12+) runs against it unchanged.

The client is installed into a throw-away virtual environment with an
interpreter of 3.12 or newer found on the machine; without one the test is
skipped. Installing needs PyPI.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from requence_task.local import LocalRequence

SCRIPT = Path(__file__).with_name("official_client_script.py")


def _is_312_or_newer(python: str) -> bool:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == "True"


def find_python312() -> str | None:
    """An interpreter of Python 3.12 or newer: $REQUENCE_OFFICIAL_PYTHON, this
    one, one on PATH, or one installed by pyenv."""
    candidates = [os.environ.get("REQUENCE_OFFICIAL_PYTHON"), sys.executable]
    candidates += [shutil.which(f"python3.{minor}") for minor in range(12, 20)]
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(
        glob.glob(os.path.join(pyenv_root, "versions", "3.1[2-9]*", "bin", "python3"))
    )
    for candidate in candidates:
        if candidate and _is_312_or_newer(candidate):
            return candidate
    return None


@pytest.fixture(scope="module")
def official_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    python = find_python312()
    if python is None:
        pytest.skip("no Python 3.12+ interpreter on this machine for the official client")
    venv = tmp_path_factory.mktemp("official-venv")
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    venv_python = str(venv / "bin" / "python")
    install = subprocess.run(
        [venv_python, "-m", "pip", "install", "--quiet", "requence"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, f"pip install requence failed:\n{install.stderr[-3000:]}"
    return venv_python


def test_official_client_runs_tasks_on_the_local_server(
    official_python: str, server: LocalRequence
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REQUENCE_")}
    done = subprocess.run(
        [official_python, str(SCRIPT), server.access_token],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=str(SCRIPT.parent),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    assert seen["updates"] == [
        "taskStart",
        "nodeStart",
        "nodeUpdate",
        "nodeEnd",
        "nodeStart",
        "nodeUpdate",
        "nodeUpdate",
        "nodeEnd",
        "taskEnd",
    ]
    assert seen["result"] == {"message": "Hello, World!"}
    assert seen["node_data"] == {"greeter": {"message": "Hello, World!"}, "counter": {"step": 2}}
    assert seen["task_url"] == f"{server.base_url}/tasks/{seen['task_id']}"
    assert seen["get_status"] == "SUCCESSFUL"
    assert seen["get_input"] == {"name": "World", "steps": 2}
    assert seen["validation_error"].startswith("TaskException: ")
    assert "'name' is a required property" in seen["validation_error"]
    assert seen["failure"] == "TaskException: node 'boom' failed: the boiler exploded"
    assert seen["aborted"] == "TaskException: Task aborted"
    # (The official watcher's "incomplete" flag is only right for taskStart:
    # it never keeps its per-task entry, another of its bugs.)
    assert [update_type for update_type, _ in seen["watched"]] == [
        "taskStart",
        "nodeStart",
        "nodeUpdate",
        "nodeEnd",
    ]
    assert seen["watched"][0] == ["taskStart", False]
    assert server.access_token not in done.stderr
    # Files, streams and claim checks, both ways.
    assert seen["files"] == {
        "upper_type": "RequenceFile",
        "upper": "HELLO OFFICIAL",
        "upper_blob": "HELLO OFFICIAL",
        "doc_size": 14,
        "doc_mime": "text/plain",
        "stream_text": "stream",
        "lines_type": "RequenceStream",
        "lines": "one\ntwo\n",
    }
    assert seen["big"]["count"] == 50_000
    assert seen["big"]["rows_equal"] is True
    # The input arrived by claim check, and the result left as one.
    stored = server.store.task(seen["big"]["task_id"])
    assert stored is not None
    assert "ClaimCheck" in json.dumps(stored.input)
    assert stored.result["__REQUENCE_type"] == "ClaimCheck"
    # A sub-task and an on-fail branch.
    order = seen["order"]
    assert order["result"] == {"mailed": 12}
    assert order["invoice"] == {"total": 12}
    assert order["task_ids"] == [order["task_id"]]  # its stream: its own updates only
    assert order["updates"] == [
        ["taskStart", None],
        ["nodeStart", "invoice"],
        ["nodeUpdate", "invoice"],
        ["nodeEnd", "invoice"],
        ["nodeStart", "mail"],
        ["nodeUpdate", "mail"],
        ["nodeEnd", "mail"],
        ["taskEnd", None],
    ]
    (child,) = server.store.subtasks(order["task_id"])
    assert (child.template, child.exit, child.root_task_id) == (
        "invoice",
        "billed",
        order["task_id"],
    )
    assert seen["order_rejected"] == {
        "result": {"told": "the mail server is down"},
        "errors": {"mail": "the mail server is down"},
    }
