"""Progress displays: a text bar captured from its file, the notebook widget
under a (simulated) Jupyter kernel, and the message when tqdm is missing."""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import sys
import textwrap
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
    TaskAbortedError,
    TaskError,
    TaskFailedError,
    TaskTimeoutError,
    _progress,
    wait,
)
from requence_task._progress import TaskBar, in_notebook, progress_bar, result_with_progress
from requence_task.local import LocalRequence

from ..client.conftest import open_gate, wait_until
from .conftest import Page

INSTALL = "pip install 'requence_task[progress]'"
INSTALL_NOTEBOOK = "pip install 'requence_task[notebook]'"


def last_draw(text: str) -> str:
    """The bar as it was last drawn (tqdm redraws a line after each carriage return)."""
    return text.rstrip("\n").rsplit("\r", 1)[-1]


# --- the text bar ------------------------------------------------------------------


def test_the_bar_counts_nodes_and_ends_with_the_outcome(nb_client: Client) -> None:
    out = io.StringIO()
    task = Task("steps", client=nb_client)
    result = result_with_progress(task, 30, file=out)
    assert result.result == {"done": True}
    text = out.getvalue()
    assert text.endswith("\n")  # closed, and left on screen
    final = last_draw(text)
    assert final.startswith("steps: 100%")
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


def test_the_bar_of_an_aborted_task_ends_aborted_with_no_node_running(
    nb_client: Client, gates: Callable[[], str]
) -> None:
    key = gates()
    out = io.StringIO()
    task = Task("nb-gated-steps", input={"gate": key}, client=nb_client)
    raised: list[BaseException] = []

    def wait_for_it() -> None:
        try:
            result_with_progress(task, 30, file=out)
        except BaseException as err:
            raised.append(err)

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    try:
        wait_until(lambda: "node=wait" in out.getvalue(), timeout=30, what="the bar to name 'wait'")
        task.abort("enough of that")
    finally:
        waiter.join(30)
    assert len(raised) == 1 and isinstance(raised[0], TaskAbortedError)
    final = last_draw(out.getvalue())
    # 'first' ended, 'wait' was aborted: neither runs, and the outcome says so.
    assert "2/2" in final and "aborted, 1 update]" in final
    assert "node=" not in final
    # The other views say the same.
    assert repr(task).endswith(" aborted>")
    assert Page(task._repr_html_()).nodes()["wait"][0] == "aborted"


def test_the_bar_of_a_rejected_task_says_rejected(nb_client: Client) -> None:
    out = io.StringIO()
    task = Task("greet", input={"age": 3}, client=nb_client)  # "name" is required
    with pytest.raises(TaskError):
        result_with_progress(task, 30, file=out)
    assert "rejected, 0 updates" in last_draw(out.getvalue())
    assert repr(task).endswith(" rejected>")
    assert Page(task._repr_html_()).row("state").startswith("rejected: ")


def test_news_held_back_by_the_redraw_limit_is_drawn_soon_after(
    nb_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_progress, "_REDRAW_EVERY", 1.0)
    task = Task("steps", client=nb_client)
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
    task = Task("steps", client=nb_client)
    out = io.StringIO()
    with pytest.raises(ConfigurationError, match="timeout"):
        result_with_progress(task, -1, file=out)
    assert out.getvalue() == ""
    task.result(timeout=30)


def test_task_result_with_progress_draws_the_bar_on_stderr(
    nb_client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    # The public spelling: Task.result(progress=True), a text bar outside Jupyter.
    task = Task("steps", client=nb_client)
    assert task.result(timeout=30, progress=True).result == {"done": True}
    final = last_draw(capsys.readouterr().err)
    assert final.startswith("steps: 100%") and "3/3" in final
    with pytest.raises(ConfigurationError):
        task.result(timeout=1, progress="yes")  # type: ignore[arg-type]


def test_wait_with_progress_counts_tasks_on_stderr(
    nb_client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = Task.map("steps", [None, None, None], client=nb_client)
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


def test_without_tqdm_in_a_kernel_the_error_names_the_notebook_extra(
    kernel: Any, no_tqdm: None, nb_client: Client
) -> None:
    task = Task("steps", client=nb_client)
    with pytest.raises(ConfigurationError) as caught:
        result_with_progress(task, 30)
    message = str(caught.value)
    assert INSTALL_NOTEBOOK in message
    assert "ipywidgets" in message and "restart the kernel" in message
    assert INSTALL not in message
    task.result(timeout=30)


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


def test_a_kernel_without_ipywidgets_gets_text_in_the_cell_and_one_warning(
    kernel: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tqdm.notebook

    monkeypatch.setattr(tqdm.notebook, "IProgress", None)  # what tqdm sets without ipywidgets
    monkeypatch.setattr(_progress, "_warned_no_widgets", False)
    with pytest.warns(UserWarning) as record:
        bar = progress_bar(total=2, desc="cell", unit="node")
        bar.update(2)
        bar.close()
        again = progress_bar(total=1, desc="again", unit="node")  # no second warning
        again.close()
    assert type(bar).__module__ == "tqdm.std"
    assert len(record) == 1
    message = str(record[0].message)
    assert "ipywidgets is not installed" in message
    assert INSTALL_NOTEBOOK in message and "restart the kernel" in message
    captured = capsys.readouterr()
    assert "cell: 100%" in captured.out and captured.err == ""


def _kernel_outputs(code: str, env: dict[str, str], tmp_path: Path) -> tuple[str, str, list[Any]]:
    """Run ``code`` in a real Jupyter kernel (a process of its own, with ``env``);
    its stdout, its stderr, and the data of what it displayed."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=60, env=env, cwd=tmp_path)
    out: list[str] = []
    err: list[str] = []
    shown: list[Any] = []

    def hook(message: dict[str, Any]) -> None:
        kind, content = message["header"]["msg_type"], message["content"]
        if kind == "stream":
            (out if content["name"] == "stdout" else err).append(content["text"])
        elif kind in ("display_data", "update_progress_data"):
            shown.append(content["data"])
        elif kind == "error":
            err.append("\n".join(content["traceback"]))

    try:
        reply = kc.execute_interactive(code, timeout=60, output_hook=hook)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok", "".join(err)
    return "".join(out), "".join(err), shown


def test_a_real_kernel_without_ipywidgets_warns_once_and_draws_text(
    nb_server: LocalRequence, tmp_path: Path
) -> None:
    # The kernel cannot import ipywidgets: a sitecustomize blocks it before anything runs.
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nsys.modules['ipywidgets'] = None\n", encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if k != "QT_API" and not k.startswith("SPYDER")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(blocker), env.get("PYTHONPATH")]))
    env["IPYTHONDIR"] = str(tmp_path / "ipython")
    code = textwrap.dedent(
        f"""
        import sys
        from requence_task import Client, Task

        assert sys.modules["ipywidgets"] is None
        with Client({nb_server.access_token!r}) as client:
            for _ in range(2):
                task = Task("steps", client=client)
                print(task.result(timeout=30, progress=True).result)
        """
    )
    out, err, shown = _kernel_outputs(code, env, tmp_path)
    assert out.count(str({"done": True})) == 2
    assert "steps: 100%" in out  # the text bar, in the cell's output
    assert not [data for data in shown if "application/vnd.jupyter.widget-view+json" in data]
    assert err.count("ipywidgets is not installed") == 1, err
    assert INSTALL_NOTEBOOK in err
    assert "IProgress not found" not in err  # tqdm's own message never shows


def _widgets(outputs: list[Any]) -> list[Any]:
    from ipywidgets.widgets.widget import _instances

    views = [o.data.get("application/vnd.jupyter.widget-view+json") for o in outputs]
    return [_instances[view["model_id"]] for view in views if view]


def test_result_with_progress_in_a_kernel_drives_a_widget(kernel: Any, nb_client: Client) -> None:
    from IPython.utils.capture import capture_output

    task = Task("steps", client=nb_client)
    with capture_output() as captured:
        result_with_progress(task, 30)
    [box] = _widgets(captured.outputs)
    label, progress, info = box.children
    assert label.value.startswith("steps")
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

    tasks = Task.map("steps", [1, 2], client=nb_client)
    with capture_output() as captured:
        wait(tasks, timeout=30, progress=True)
    [box] = _widgets(captured.outputs)
    assert (box.children[1].value, box.children[1].max) == (2, 2)


def test_the_install_hints_are_the_extras_of_setup_cfg() -> None:
    setup_cfg = (Path(__file__).parents[2] / "setup.cfg").read_text(encoding="utf-8")
    assert "\nprogress =\n    tqdm" in setup_cfg
    assert "\nnotebook =\n    tqdm>=4.66\n    ipywidgets" in setup_cfg
    assert _progress.INSTALL_PROGRESS == INSTALL
    assert _progress.INSTALL_NOTEBOOK == INSTALL_NOTEBOOK
