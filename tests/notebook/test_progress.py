"""Progress displays: a text bar captured from its file, the notebook widget
under a (simulated) Jupyter kernel, and the message when tqdm is missing."""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from requence_task import (
    Client,
    ConfigurationError,
    Task,
    TaskFailedError,
    TaskTimeoutError,
    _display,
    wait,
)
from requence_task._display import TaskBar, in_notebook, progress_bar, result_with_progress

from ..client.conftest import wait_until
from .conftest import open_gate

INSTALL = "pip install 'requence_task[progress]'"


def last_draw(text: str) -> str:
    """The bar as it was last drawn (tqdm redraws a line after each carriage return)."""
    return text.rstrip("\n").rsplit("\r", 1)[-1]


# --- the text bar ------------------------------------------------------------------


def test_the_bar_counts_nodes_and_ends_with_the_outcome(nb_client: Client) -> None:
    out = io.StringIO()
    task = Task("nb-steps", client=nb_client)
    result = result_with_progress(task, 30, file=out)
    assert result.result == {"done": True}
    text = out.getvalue()
    assert text.endswith("\n")  # closed, and left on screen
    final = last_draw(text)
    assert final.startswith("nb-steps: 100%")
    assert "3/3" in final  # three nodes seen, three finished
    assert "succeeded, 4 updates" in final  # a and c sent one, b two


def test_the_bar_shows_the_node_running_while_the_task_runs(
    nb_client: Client, gates: Callable[[], str]
) -> None:
    key = gates()
    out = io.StringIO()
    task = Task("nb-gated-steps", input={"gate": key}, client=nb_client)
    answer: list[Any] = []
    waiter = threading.Thread(
        target=lambda: answer.append(result_with_progress(task, 30, file=out))
    )
    waiter.start()
    try:
        wait_until(lambda: "node=wait" in out.getvalue(), timeout=30, what="the bar to name 'wait'")
        assert "1/2" in last_draw(out.getvalue())  # 'first' ended, 'wait' runs
        assert not task.done()
    finally:
        open_gate(key)
        waiter.join(30)
    assert answer and answer[0].result == {"opened": key}
    assert "2/2" in last_draw(out.getvalue())


def test_the_bar_closes_on_a_time_out_and_the_task_goes_on(
    nb_client: Client, gates: Callable[[], str]
) -> None:
    key = gates()
    out = io.StringIO()
    task = Task("nb-gated-steps", input={"gate": key}, client=nb_client)
    started = time.monotonic()
    with pytest.raises(TaskTimeoutError) as caught:
        result_with_progress(task, 0.5, file=out)
    assert 0.5 <= time.monotonic() - started < 10
    assert caught.value.timeout == 0.5
    assert out.getvalue().endswith("\n")
    assert "timed out" in last_draw(out.getvalue())
    assert not task.done()
    open_gate(key)
    assert task.result(timeout=30).result == {"opened": key}


def test_the_bar_closes_on_failure(nb_client: Client) -> None:
    out = io.StringIO()
    task = Task("nb-fail", client=nb_client)
    with pytest.raises(TaskFailedError):
        result_with_progress(task, 30, file=out)
    final = last_draw(out.getvalue())
    assert out.getvalue().endswith("\n")
    assert "2/2" in final and "failed" in final


def test_news_held_back_by_the_redraw_limit_is_drawn_soon_after(
    nb_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_display, "_REDRAW_EVERY", 1.0)
    task = Task("nb-steps", client=nb_client)
    task.result(timeout=30)
    updates = list(task.updates(timeout=5))
    out = io.StringIO()
    bar = TaskBar(progress_bar(total=None, desc="x", unit="node", file=out))
    try:
        bar.feed(updates[:3])  # drawn at once: the first draw
        assert "node=a" in last_draw(out.getvalue())
        bar.feed(updates[3:])  # within the second: counted, held back
        assert "3/3" not in last_draw(out.getvalue())
        due = bar.redraw_in()
        assert due is not None and 0 < due <= 1.0
        time.sleep(due)
        bar.feed([])
        assert "3/3" in last_draw(out.getvalue())
        assert bar.redraw_in() is None
    finally:
        bar.close("succeeded", failed=False)


def test_a_bad_timeout_is_refused_before_anything(nb_client: Client) -> None:
    task = Task("nb-steps", client=nb_client)
    out = io.StringIO()
    with pytest.raises(ConfigurationError, match="timeout"):
        result_with_progress(task, -1, file=out)
    assert out.getvalue() == ""
    task.result(timeout=30)


def test_task_result_with_progress_draws_the_bar_on_stderr(
    nb_client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    # The public spelling: Task.result(progress=True), a text bar outside Jupyter.
    task = Task("nb-steps", client=nb_client)
    assert task.result(timeout=30, progress=True).result == {"done": True}
    final = last_draw(capsys.readouterr().err)
    assert final.startswith("nb-steps: 100%") and "3/3" in final
    with pytest.raises(ConfigurationError):
        task.result(timeout=1, progress="yes")  # type: ignore[arg-type]


def test_wait_with_progress_counts_tasks_on_stderr(
    nb_client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = Task.map("nb-steps", [None, None, None], client=nb_client)
    done, not_done = wait(tasks, timeout=30, progress=True)
    assert done == set(tasks) and not_done == set()
    final = last_draw(capsys.readouterr().err)
    assert final.startswith("tasks: 100%") and "3/3" in final


def test_wait_with_progress_counts_failures_and_stops_at_the_time_out(
    nb_client: Client, gates: Callable[[], str], capsys: pytest.CaptureFixture[str]
) -> None:
    failing = Task("nb-fail", client=nb_client)
    gated = Task("gated", input={"gate": gates()}, client=nb_client)
    failing.future.exception(timeout=30)
    done, not_done = wait([failing, gated], timeout=0.5, progress=True)
    assert done == {failing} and not_done == {gated}
    final = last_draw(capsys.readouterr().err)
    assert "1/2" in final and "1 did not succeed" in final


# --- without tqdm --------------------------------------------------------------------


@pytest.fixture()
def no_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if tqdm were not installed: importing it fails."""
    for name in [n for n in sys.modules if n == "tqdm" or n.startswith("tqdm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tqdm", None)


@pytest.mark.usefixtures("no_tqdm")
def test_without_tqdm_the_error_names_the_extra_before_waiting(
    nb_client: Client, gates: Callable[[], str]
) -> None:
    task = Task("gated", input={"gate": gates()}, client=nb_client)
    started = time.monotonic()
    with pytest.raises(ConfigurationError) as caught:
        result_with_progress(task, 30)
    assert INSTALL in str(caught.value)
    with pytest.raises(ConfigurationError) as caught:
        wait([task], timeout=30, progress=True)
    assert INSTALL in str(caught.value)
    assert time.monotonic() - started < 5  # neither waited for the task
    assert not task.done()


# --- which display: the notebook widget or a text bar --------------------------------


@contextlib.contextmanager
def ipython_shell(name: str, monkeypatch: pytest.MonkeyPatch, home: Path) -> Iterator[Any]:
    """A running IPython shell of a class called ``name``; everything it changes
    in the process (``__main__``, builtins, warning filters) is put back after."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    monkeypatch.setenv("IPYTHONDIR", str(home))
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    builtins_before = set(vars(builtins))
    shell_class = type(name, (InteractiveShell,), {})
    config = Config()
    config.HistoryManager.enabled = False  # no history thread, no database
    with warnings.catch_warnings():
        shell = shell_class.instance(config=config)
        try:
            yield shell
        finally:
            shell_class.clear_instance()
            for added in set(vars(builtins)) - builtins_before:
                delattr(builtins, added)


@pytest.fixture()
def kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """An IPython shell whose class is a Jupyter kernel's (``ZMQInteractiveShell``).

    ipykernel itself is not installed; what the choice looks at is the running
    shell's class, so a shell of that name stands in for a kernel's.
    """
    for name in [n for n in os.environ if n == "QT_API" or n.startswith("SPYDER")]:
        monkeypatch.delenv(name)
    with ipython_shell("ZMQInteractiveShell", monkeypatch, tmp_path) as shell:
        yield shell


def test_outside_a_kernel_the_bar_is_text() -> None:
    assert not in_notebook()
    bar = progress_bar(total=2, desc="x", unit="node", file=io.StringIO())
    try:
        assert type(bar).__module__ == "tqdm.std"
    finally:
        bar.close()


def test_a_plain_ipython_terminal_gets_text(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with ipython_shell("TerminalInteractiveShell", monkeypatch, tmp_path):
        assert not in_notebook()


def test_a_kernel_gets_the_widget_unless_a_file_is_given(kernel: Any) -> None:
    from IPython.utils.capture import capture_output

    assert in_notebook()
    with capture_output() as captured:
        bar = progress_bar(total=2, desc="x", unit="node")
        bar.close()
    assert type(bar).__module__ == "tqdm.notebook"
    assert "application/vnd.jupyter.widget-view+json" in captured.outputs[0].data
    text_bar = progress_bar(total=2, desc="x", unit="node", file=io.StringIO())
    text_bar.close()
    assert type(text_bar).__module__ == "tqdm.std"


def test_a_qt_console_gets_text(kernel: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QT_API", "pyqt5")
    assert not in_notebook()


def test_a_kernel_without_ipywidgets_gets_text_in_the_cell(
    kernel: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tqdm.notebook

    monkeypatch.setattr(tqdm.notebook, "IProgress", None)  # what tqdm sets without ipywidgets
    bar = progress_bar(total=2, desc="cell", unit="node")
    bar.update(2)
    bar.close()
    assert type(bar).__module__ == "tqdm.std"
    captured = capsys.readouterr()
    assert "cell: 100%" in captured.out and captured.err == ""


def _widgets(outputs: list[Any]) -> list[Any]:
    from ipywidgets.widgets.widget import _instances

    views = [o.data.get("application/vnd.jupyter.widget-view+json") for o in outputs]
    return [_instances[view["model_id"]] for view in views if view]


def test_result_with_progress_in_a_kernel_drives_a_widget(kernel: Any, nb_client: Client) -> None:
    from IPython.utils.capture import capture_output

    task = Task("nb-steps", client=nb_client)
    with capture_output() as captured:
        result_with_progress(task, 30)
    [box] = _widgets(captured.outputs)
    label, progress, info = box.children
    assert label.value.startswith("nb-steps")
    assert (progress.value, progress.max) == (3, 3)
    assert progress.bar_style == "success"
    assert "succeeded" in info.value


def test_a_failure_turns_the_widget_red(kernel: Any, nb_client: Client) -> None:
    from IPython.utils.capture import capture_output

    task = Task("nb-fail", client=nb_client)
    with capture_output() as captured, pytest.raises(TaskFailedError):
        result_with_progress(task, 30)
    [box] = _widgets(captured.outputs)
    progress = box.children[1]
    assert (progress.value, progress.max) == (2, 2)
    assert progress.bar_style == "danger"


def test_wait_in_a_kernel_drives_a_widget(kernel: Any, nb_client: Client) -> None:
    from IPython.utils.capture import capture_output

    tasks = Task.map("nb-steps", [1, 2], client=nb_client)
    with capture_output() as captured:
        wait(tasks, timeout=30, progress=True)
    [box] = _widgets(captured.outputs)
    assert (box.children[1].value, box.children[1].max) == (2, 2)


def test_the_install_hint_is_the_extra_of_setup_cfg() -> None:
    setup_cfg = (Path(__file__).parents[2] / "setup.cfg").read_text(encoding="utf-8")
    assert "\nprogress =\n    tqdm" in setup_cfg
    assert _display.INSTALL_PROGRESS == INSTALL
