"""Live progress bars: of one task's nodes, and of many tasks' ends.

The bars come from tqdm, an optional extra
(``pip install 'requence_task[progress]'``): an ipywidgets widget under a
Jupyter kernel (``pip install 'requence_task[notebook]'`` brings both), a
text bar anywhere else, and in a kernel without ipywidgets (with a warning,
once). The bar is drawn on the waiting thread only; the task's updates wake
it through the handle's listener.

What a task and its nodes are (running, aborted, ...) comes from
:mod:`requence_task._fold`, as for ``repr(task)``, the HTML views and the
command line.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

from ._errors import ConfigurationError, TaskTimeoutError
from ._fold import NodeFold, known_id, task_state
from ._models import TaskResult, Update
from ._states import NODE_ACTIVE, NODE_DEFERRED, SUCCEEDED
from ._validate import check_timeout

if TYPE_CHECKING:
    from ._task import Task

INSTALL_PROGRESS = "pip install 'requence_task[progress]'"
INSTALL_NOTEBOOK = "pip install 'requence_task[notebook]'"

# Shortest time between two redraws of a bar (tqdm's own default).
_REDRAW_EVERY = 0.1


def _future_error(future: Any) -> BaseException | None:
    """A settled future's error, without ever waiting (``None`` if it has none)."""
    if not future.done() or future.cancelled():
        return None
    error: BaseException | None = future.exception()
    return error


# --- progress bars --------------------------------------------------------------------


def require_tqdm() -> Any:
    """The ``tqdm.std`` module, or a :class:`ConfigurationError` saying how to get it
    (the ``notebook`` extra under a Jupyter kernel, the ``progress`` extra elsewhere)."""
    try:
        return importlib.import_module("tqdm.std")
    except ImportError:
        if in_notebook():
            how = (
                f"{INSTALL_NOTEBOOK} (tqdm, and ipywidgets for the widget), then restart the kernel"
            )
        else:
            how = INSTALL_PROGRESS
        raise ConfigurationError(
            f"progress=True needs the tqdm package, which is not installed: {how}"
        ) from None


def in_notebook() -> bool:
    """Whether this runs under a Jupyter kernel whose front end can show widgets.

    It looks at an IPython that is running already (never imports it): its
    shell is a kernel's ``ZMQInteractiveShell`` (or a subclass, as Colab's),
    and the front end is not a Qt console or Spyder, which cannot show them.
    """
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    if get_ipython is None:
        return False
    try:
        shell = get_ipython()
    except Exception:
        return False
    if shell is None:
        return False
    if any(name == "QT_API" or name.startswith("SPYDER") for name in os.environ):
        return False
    return any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


def _notebook_tqdm() -> Any:
    """``tqdm.notebook.tqdm`` if ipywidgets is there, else ``None``."""
    try:
        notebook = importlib.import_module("tqdm.notebook")
    except ImportError:
        return None
    if getattr(notebook, "IProgress", None) is None:  # no ipywidgets
        return None
    return notebook.tqdm


_warned_no_widgets = False
_NO_WIDGETS = (
    "progress=True: ipywidgets is not installed, so the progress bar is text in the cell's "
    f"output instead of a widget. For the widget: {INSTALL_NOTEBOOK} (or pip install "
    "ipywidgets), then restart the kernel."
)


def _warn_no_widgets() -> None:
    """Say once per process why a kernel gets a text bar (not tqdm's own error)."""
    global _warned_no_widgets
    if _warned_no_widgets:
        return
    _warned_no_widgets = True
    # (stacklevel: the caller of Task.result or wait, through progress_bar and its caller)
    warnings.warn(_NO_WIDGETS, UserWarning, stacklevel=5)


def progress_bar(*, total: int | None, desc: str, unit: str, file: IO[str] | None = None) -> Any:
    """A tqdm bar: a widget under a Jupyter kernel, a text bar elsewhere or on ``file``.

    Under a kernel without ipywidgets, a text bar in the cell's output, and a
    warning (once) that says how to get the widget.
    """
    std = require_tqdm()
    if file is None and in_notebook():
        notebook_tqdm = _notebook_tqdm()
        if notebook_tqdm is not None:
            return notebook_tqdm(total=total, desc=desc, unit=unit, leave=True)
        _warn_no_widgets()
        file = sys.stdout  # no widgets: a text bar in the cell's output, not red stderr
    return std.tqdm(total=total, desc=desc, unit=unit, file=file, leave=True)


def _widget(bar: Any) -> Any:
    """The progress widget of a notebook bar (``None`` for a text bar)."""
    container = getattr(bar, "container", None)
    children = getattr(container, "children", None)
    return children[-2] if children else None


def _set_total(bar: Any, total: int) -> None:
    bar.total = total
    widget = _widget(bar)
    if widget is not None:  # the widget keeps its own maximum, and started as "unknown"
        widget.max = total
        if widget.bar_style == "info":
            widget.bar_style = ""
            widget.layout.width = None


class TaskBar:
    """One task's bar: nodes finished out of the nodes seen, and the current node.

    A node counts as finished once it is not running nor deferred (see
    :mod:`requence_task._fold`: after an abort, the node it stopped is
    ``aborted``, so finished).
    """

    def __init__(self, bar: Any, task_id: str | None = None) -> None:
        self.bar = bar
        self.fold = NodeFold(task_id)
        self._drawn_at = 0.0
        self._stale = False  # counted, not drawn yet

    @property
    def node_updates(self) -> int:
        return self.fold.node_updates

    def feed(self, updates: list[Update]) -> None:
        """Count ``updates``; redraw unless the last redraw is younger than 0.1 s."""
        self.fold.feed_all(updates)
        if updates:
            self._stale = True
        if self._stale:
            self._draw(force=False)

    def redraw_in(self) -> float | None:
        """Seconds until news held back (redraws are at most every 0.1 s) is due."""
        if not self._stale:
            return None
        return max(0.0, self._drawn_at + _REDRAW_EVERY - time.monotonic())

    @property
    def finished(self) -> int:
        return sum(node.state not in NODE_ACTIVE for node in self.fold.nodes)

    def _postfix(self, outcome: str | None) -> str:
        updates = f"{self.node_updates} update{'s' if self.node_updates != 1 else ''}"
        if outcome is not None:
            return f"{outcome}, {updates}"
        active = self.fold.active()
        if not active:
            return f"node=-, {updates}"
        current = active[-1]
        deferred = " (deferred)" if current.state == NODE_DEFERRED else ""
        return f"node={current.label}{deferred}, {updates}"

    def _draw(self, *, force: bool, outcome: str | None = None) -> None:
        bar = self.bar
        total = len(self.fold.nodes)
        if total and total != bar.total:
            _set_total(bar, total)
        finished = self.finished
        if finished > bar.n:
            bar.update(finished - bar.n)
        bar.set_postfix_str(self._postfix(outcome), refresh=False)
        now = time.monotonic()
        if force or now - self._drawn_at >= _REDRAW_EVERY:
            self._drawn_at = now
            self._stale = False
            bar.refresh()

    def close(self, outcome: str, *, failed: bool) -> None:
        """Draw the outcome and close the bar (a notebook bar turns red on failure)."""
        try:
            self._draw(force=False, outcome=outcome)
            widget = _widget(self.bar)
            if failed and widget is not None:
                widget.bar_style = "danger"
        finally:
            self.bar.close()


def result_with_progress(
    task: Task, timeout: float | None = None, *, file: IO[str] | None = None
) -> TaskResult:
    """``task.result(timeout, progress=True)``: wait for the result with a live bar.

    The bar counts the nodes that finished out of those seen so far (the
    client cannot know how many a template has), names the node running, and
    counts node updates. It is drawn on this thread and closed at the end,
    whatever the end is.

    Args:
        task: The task.
        timeout: Seconds to wait; ``None`` waits as long as it takes.
        file: Where a text bar goes (default: a widget in Jupyter, stderr
            elsewhere); given a file, the bar is always text.

    Raises:
        ConfigurationError: tqdm is not installed (before waiting).
        TaskTimeoutError: The task did not end within ``timeout``; it goes on.
        TaskFailedError, TaskAbortedError, TaskError: As ``task.result()``.
    """
    seconds = check_timeout(timeout)
    require_tqdm()
    future = task.future
    wake = threading.Event()
    listener = wake.set
    undo = task._listen(listener)
    future.add_done_callback(lambda _future: wake.set())
    deadline = None if seconds is None else time.monotonic() + seconds
    bar = TaskBar(
        progress_bar(total=None, desc=task.template or "task", unit="node", file=file),
        known_id(task),
    )
    outcome, failed = "timed out", True
    try:
        index = 0
        while not future.done():
            wake.clear()
            updates, _finished, _error = task._updates_since(index, reader=listener)
            index += len(updates)
            bar.feed(updates)
            if future.done():
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TaskTimeoutError(
                    f"The task's result did not come within {timeout} s; the task goes on. "
                    "Call again to wait longer, or abort() it.",
                    timeout=seconds,
                )
            redraw = bar.redraw_in()  # wake to draw news held back, too
            if redraw is not None and (remaining is None or redraw < remaining):
                remaining = redraw
            wake.wait(remaining)
        updates, _finished, _error = task._updates_since(index)
        bar.feed(updates)
        try:
            result = task.result(timeout=0)
        except BaseException:
            outcome = task_state(task, bar.fold)[0]  # what repr, the HTML and the CLI say
            raise
        outcome, failed = SUCCEEDED, False
        return result
    finally:
        undo()
        bar.close(outcome, failed=failed)


def wait_with_progress(
    tasks: list[Task],
    steps: Iterable[tuple[Task | None, set[Task], set[Task]]],
    *,
    file: IO[str] | None = None,
) -> tuple[set[Task], set[Task]]:
    """``wait(..., progress=True)``: a bar of the tasks ended out of all of them.

    Args:
        tasks: The tasks waited for.
        steps: The steps of the wait (``_fanout.wait_stepwise``): the task that
            ended (``None`` first), then the tasks done and not done.
    """
    require_tqdm()
    bar = progress_bar(total=len(tasks), desc="tasks", unit="task", file=file)
    answer: tuple[set[Task], set[Task]] = (set(), set(tasks))
    failures = 0
    try:
        for ended, done, not_done in steps:
            answer = (done, not_done)
            newly = list(done) if ended is None else [ended]
            failures += sum(_future_error(task.future) is not None for task in newly)
            if failures:
                bar.set_postfix_str(f"{failures} did not succeed", refresh=False)
            bar.update(len(newly))
        return answer
    finally:
        bar.close()
