"""Many tasks at once: :func:`as_completed` and :func:`wait`.

Nothing here holds a thread per task. (``Task.map``, which starts many, only
builds handles: their creation runs on the client's pool, so at most
``Client.max_workers`` tasks are being created at any moment however many
inputs there are.) :func:`as_completed` and :func:`wait` wait on
the tasks' ``concurrent.futures`` futures, as the functions of that module of
the same names do, on the calling thread.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterable, Iterator, Mapping

from ._errors import ConfigurationError, TaskTimeoutError
from ._progress import wait_with_progress
from ._task import Task
from ._validate import check_flag, check_timeout

__all__ = ["ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION", "as_completed", "wait"]

FIRST_COMPLETED = concurrent.futures.FIRST_COMPLETED
"""``wait()`` returns as soon as one task has ended."""
FIRST_EXCEPTION = concurrent.futures.FIRST_EXCEPTION
"""``wait()`` returns as soon as one task did not succeed, or when all have ended."""
ALL_COMPLETED = concurrent.futures.ALL_COMPLETED
"""``wait()`` returns when every task has ended (the default)."""

_RETURN_WHEN = (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION)


def _check_tasks(tasks: object, what: str) -> list[Task]:
    if isinstance(tasks, Task):  # iterable too, but over its updates
        raise ConfigurationError(f"{what} takes an iterable of Task handles: pass [task]")
    if isinstance(tasks, (str, bytes, Mapping)) or not isinstance(tasks, Iterable):
        raise ConfigurationError(
            f"{what} takes an iterable of Task handles (a list), got {type(tasks).__name__}"
        )
    unique: dict[int, Task] = {}
    for index, task in enumerate(tasks):
        if not isinstance(task, Task):
            raise ConfigurationError(
                f"{what}: tasks[{index}] is a {type(task).__name__}, not a requence_task.Task"
            )
        unique.setdefault(id(task), task)
    return list(unique.values())


def as_completed(tasks: Iterable[Task], timeout: float | None = None) -> Iterator[Task]:
    """Yield the tasks as they end: the ended ones first, then each as it ends.

    A task that failed, was aborted or could not be created is yielded too:
    call its ``result()`` to get its result or its error. Each task is yielded
    once, even if it is listed twice. The tasks are followed on their
    ``concurrent.futures`` futures, with no thread per task.

    Args:
        tasks: The tasks (for instance from ``Task.map``).
        timeout: Seconds for the whole iteration; ``None`` waits as long as it
            takes.

    Yields:
        Each task, as it ends.

    Raises:
        TaskTimeoutError: Some tasks had not ended when ``timeout`` passed
            (a ``TimeoutError``); they go on.
        ConfigurationError: ``tasks`` is not an iterable of tasks, or
            ``timeout`` is not a number of seconds (raised by the call, before
            iterating).

    Example:
        >>> tasks = Task.map("greeting", [{"name": n} for n in names])  # doctest: +SKIP
        >>> for task in as_completed(tasks, timeout=300):  # doctest: +SKIP
        ...     print(task.result().result)
    """
    seconds = check_timeout(timeout)
    found = _check_tasks(tasks, "as_completed()")
    return _as_completed(found, seconds)


def _as_completed(tasks: list[Task], timeout: float | None) -> Iterator[Task]:
    by_future = {task.future: task for task in tasks}
    count = 0
    try:
        for future in concurrent.futures.as_completed(by_future, timeout):
            count += 1
            yield by_future[future]
    except concurrent.futures.TimeoutError:
        left = len(by_future) - count
        raise TaskTimeoutError(
            f"{left} of {len(by_future)} task{'s' if len(by_future) != 1 else ''} had not "
            f"ended within {timeout} s; they go on. Iterate again to wait longer, or abort them.",
            timeout=timeout,
        ) from None


def wait(
    tasks: Iterable[Task],
    timeout: float | None = None,
    return_when: str = ALL_COMPLETED,
    *,
    progress: bool = False,
) -> tuple[set[Task], set[Task]]:
    """Wait for tasks to end, like ``concurrent.futures.wait``.

    It never raises for a task's failure, nor when ``timeout`` passes: look at
    the two sets it returns, and call ``result()`` on the ended tasks.

    Args:
        tasks: The tasks.
        timeout: Seconds to wait at most; ``None`` waits as long as it takes.
        return_when: :data:`ALL_COMPLETED` (every task has ended),
            :data:`FIRST_COMPLETED` (one has) or :data:`FIRST_EXCEPTION`
            (one did not succeed, or all ended); the constants of
            ``concurrent.futures`` are the same strings.
        progress: Show a progress bar of the tasks ended (a widget in
            Jupyter, a bar on the terminal's stderr otherwise). Needs
            ``pip install 'requence_task[progress]'``.

    Returns:
        ``(done, not_done)``: the tasks that ended (succeeded, failed, were
        aborted or could not be created) and those that go on.

    Raises:
        ConfigurationError: A wrong argument, or ``progress=True`` without
            tqdm installed (before waiting).

    Example:
        >>> done, not_done = wait(tasks, timeout=60)  # doctest: +SKIP
        >>> results = [task.result() for task in done if task.future.exception() is None]
    """
    seconds = check_timeout(timeout)
    if return_when not in _RETURN_WHEN:
        raise ConfigurationError(
            f"return_when must be ALL_COMPLETED, FIRST_COMPLETED or FIRST_EXCEPTION, "
            f"got {return_when!r}"
        )
    check_flag(progress, "progress")
    found = _check_tasks(tasks, "wait()")
    if progress:
        return wait_with_progress(found, wait_stepwise(found, seconds, return_when))
    futures = {task.future: task for task in found}
    done, not_done = concurrent.futures.wait(futures, seconds, return_when)
    return {futures[f] for f in done}, {futures[f] for f in not_done}


def wait_stepwise(
    tasks: list[Task], timeout: float | None, return_when: str
) -> Iterator[tuple[Task | None, set[Task], set[Task]]]:
    """The steps of :func:`wait`: ``(task that ended, done, not_done)`` after each end.

    The first step has ``None`` for the task (the tasks that had ended already
    are in ``done``); the last step is the answer of ``wait``.
    """
    futures = {task.future: task for task in tasks}
    done = {futures[f] for f in futures if f.done()}
    not_done = set(tasks) - done
    yield None, done, not_done
    if _satisfied(done, not_done, return_when):
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    pending = [f for f in futures if not f.done()]
    try:
        for future in concurrent.futures.as_completed(pending, remaining):
            task = futures[future]
            done.add(task)
            not_done.discard(task)
            yield task, done, not_done
            if _satisfied(done, not_done, return_when):
                return
    except concurrent.futures.TimeoutError:
        return


def _satisfied(done: set[Task], not_done: set[Task], return_when: str) -> bool:
    if not not_done:
        return True
    if return_when == FIRST_COMPLETED:
        return bool(done)
    if return_when == FIRST_EXCEPTION:
        return any(
            not task.future.cancelled() and task.future.exception() is not None for task in done
        )
    return False
