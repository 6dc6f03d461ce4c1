"""Folding a task's updates: its context, and the state of the task and its nodes.

Two folds, each the one of its kind:

- :class:`ContextFolder`, the running fold of one task's updates into its
  :class:`~requence_task._models.TaskContext` (input, the latest data and the
  errors of each node alias, result and exit), attached to every update as it stands
  *after* that update;
- :class:`NodeFold` and :func:`task_state`, the state of a task and of each of
  its nodes, which every view shows.

The state of a task and of each of its nodes, from what a handle knows.

One source for every view of a task: ``repr(task)``, its HTML view in
Jupyter, the bar of ``result(progress=True)``, and the status line of
``requence-task run`` on a terminal. Nothing here waits or sends a request.

A task's state (:func:`task_state`), the word and what it means:

``creating``
    The handle is asking Requence for an id (prepare).
``could not be created``
    Prepare failed (unknown template, token refused, Requence unreachable),
    or finalize failed without an answer from Requence. The detail is the error.
``created``
    The task has an id; its input is being sent (finalize).
``started``
    Requence accepted the input; no update has come yet.
``running``
    Updates are coming; the task has not ended.
``succeeded``
    ``taskEnd``: ``result()`` returns the result.
``failed``
    ``taskError``: ``result()`` raises ``TaskFailedError``. The detail is the reason.
``aborted``
    ``taskAborted``, or aborted before it started: ``result()`` raises
    ``TaskAbortedError``. The detail is the reason.
``rejected``
    Requence refused the task's input (an error answer to finalize). The
    detail is Requence's message.
``error``
    Following the task failed in another way (its end could not be read, the
    client was closed); the task may go on. The detail is the error.

The terminal update decides as soon as it is seen, even while the result is
still being settled (an ack is on its way, say).

A node's state (:class:`NodeFold`), from the updates of its task:

``running``
    It started (or sent anything) and has not ended.
``deferred``
    ``nodeDefer``: it waits (for a person, say); the detail is the reason.
``ended``
    ``nodeEnd``.
``failed``
    ``nodeError``; the detail is the error. A node that failed stays failed,
    whatever comes after.

A node still running or deferred when its task ends cannot go on, so it is
never shown as running after the end. It becomes:

``aborted``
    after ``taskAborted``: the abort stopped it;
``stopped``
    after ``taskError``: the task failed elsewhere, and this node did not
    fail itself;
``ended``
    after ``taskEnd``: the task succeeded, so the node's work is over (its
    own ``nodeEnd`` did not come).

The task's own end settles every node, its sub-tasks' included; a sub-task's
end settles that sub-task's nodes only. A task's own updates are those of
its id when it is known, else those without a ``root_task_id``. Updates of a
node after its state was settled by an end change nothing but a failure (and
a node first seen after the end starts in the state the end gives).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from ._errors import TaskAbortedError, TaskError, TaskFailedError
from ._models import (
    NodeDeferUpdate,
    NodeEndUpdate,
    NodeErrorUpdate,
    NodeInfo,
    NodeUpdateUpdate,
    TaskContext,
    TaskEndUpdate,
    TaskStartUpdate,
    UnknownUpdate,
    Update,
)
from ._outcome import Outcome
from ._protocol import TASK_ABORTED, TASK_END, TASK_ERROR
from ._states import (
    ABORTED,
    CREATED,
    CREATING,
    ERROR,
    FAILED,
    NODE_ABORTED,
    NODE_ACTIVE,
    NODE_DEFERRED,
    NODE_ENDED,
    NODE_FAILED,
    NODE_RUNNING,
    NODE_STOPPED,
    NOT_CREATED,
    REJECTED,
    RUNNING,
    STARTED,
    SUCCEEDED,
)
from ._wire import raw_exit, raw_result, structure_update

if TYPE_CHECKING:
    from ._task import Task

__all__ = [
    "ContextFolder",
    "Node",
    "NodeFold",
    "fold_task",
    "known_id",
    "state_of",
    "task_state",
]

# What a node still running or deferred becomes when its task ends this way.
_SETTLED_BY: Final = {
    TASK_END: NODE_ENDED,
    TASK_ERROR: NODE_STOPPED,
    TASK_ABORTED: NODE_ABORTED,
}
_TASK_STATE_OF_END: Final = {TASK_END: SUCCEEDED, TASK_ERROR: FAILED, TASK_ABORTED: ABORTED}


# --- the context ----------------------------------------------------------------------


class ContextFolder:
    """The running fold of one task's updates.

    Feed it the events of one task in stream order; :meth:`fold` returns each
    update with the task's context after it. The fold is copy-on-write: an
    update that does not change the context shares the previous context
    object, and one that does copies only the one mapping it changes.

    Updates of another task (a sub-task's, where a stream carries them) and
    every :class:`UnknownUpdate` pass through without changing the context.
    """

    __slots__ = ("_context", "_incomplete", "_node_data", "_node_errors", "_task_id")

    def __init__(self, task_id: str | None = None) -> None:
        """Start an empty fold.

        Args:
            task_id: The task's id, if known; used for updates that do not
                name their task. Without it, the first update's task is taken.
        """
        self._task_id = task_id
        self._incomplete: bool | None = None  # known at the task's first update
        # The dicts behind the current context's read-only proxies. They are
        # never changed once handed out: a change copies them first.
        self._node_data: dict[str, Any] = {}
        self._node_errors: dict[str, str] = {}
        self._context = TaskContext(
            task_id or "",
            node_data=MappingProxyType(self._node_data),
            node_errors=MappingProxyType(self._node_errors),
        )

    @property
    def task_id(self) -> str | None:
        """The folded task's id, once known."""
        return self._task_id

    @property
    def context(self) -> TaskContext:
        """The context after the last folded update."""
        return self._context

    def fold(self, event_type: str, data: dict[str, Any], position: int | None) -> Update:
        """Read one event and fold it into the context.

        Never raises; see :func:`requence_task._wire.structure_update`.

        Args:
            event_type: The SSE ``event:`` name.
            data: The decoded ``data:`` JSON.
            position: The SSE ``id:`` as an integer, if the event had one.

        Returns:
            The typed update, its ``context`` the fold after it.
        """
        before = self._context
        update = structure_update(event_type, data, position, before)
        if type(update) is UnknownUpdate:
            has_result, result = raw_result(data) if isinstance(data, dict) else (False, None)
            if (
                event_type == TASK_END
                and has_result
                and (self._task_id is None or update.task_id == self._task_id)
            ):
                # A taskEnd whose other fields are malformed: its result is still
                # the task's result (anything JSON is a result), so fold it, and
                # its exit if that reads.
                after = TaskContext(
                    before.task_id,
                    before.input,
                    result,
                    before.node_data,
                    before.node_errors,
                    raw_exit(data),
                )
                object.__setattr__(update, "context", after)
                self._context = after
            return update
        if self._task_id is None:
            self._task_id = update.task_id
            before = TaskContext(
                update.task_id,
                before.input,
                before.result,
                before.node_data,
                before.node_errors,
                before.exit,
            )
        elif update.task_id != self._task_id:
            return update
        after = before
        if isinstance(update, NodeUpdateUpdate):
            alias = update.node.alias
            if alias is not None:
                node_data = self._node_data.copy()
                node_data[alias] = update.data
                self._node_data = node_data
                after = TaskContext(
                    before.task_id,
                    before.input,
                    before.result,
                    MappingProxyType(node_data),
                    before.node_errors,
                    before.exit,
                )
        elif isinstance(update, NodeErrorUpdate):
            alias = update.node.alias
            if alias is not None:
                node_errors = self._node_errors.copy()
                node_errors[alias] = update.error
                self._node_errors = node_errors
                after = TaskContext(
                    before.task_id,
                    before.input,
                    before.result,
                    before.node_data,
                    MappingProxyType(node_errors),
                    before.exit,
                )
        elif isinstance(update, TaskStartUpdate):
            after = TaskContext(
                before.task_id,
                update.input,
                before.result,
                before.node_data,
                before.node_errors,
                before.exit,
            )
        elif isinstance(update, TaskEndUpdate):
            after = TaskContext(
                before.task_id,
                before.input,
                update.result,
                before.node_data,
                before.node_errors,
                update.exit,
            )
        if self._incomplete is None:
            self._incomplete = not isinstance(update, TaskStartUpdate)
        if self._incomplete:
            object.__setattr__(update, "incomplete", True)
        if after is not update.context:
            # The update is brand new and nobody has seen it yet: setting its
            # context here is cheaper than building it twice (attrs documents
            # object.__setattr__ as the way past frozen).
            object.__setattr__(update, "context", after)
        self._context = after
        return update


# --- nodes ----------------------------------------------------------------------------


class Node:
    """One node of a task as its updates show it (a sub-task's nodes too)."""

    __slots__ = ("data", "error", "has_data", "label", "node_id", "reason", "state", "task_id")

    def __init__(self, task_id: str, node: NodeInfo) -> None:
        self.task_id = task_id
        self.node_id = node.id
        self.label: str = node.alias or node.id
        self.state: str = NODE_RUNNING
        self.data: Any = None
        self.has_data = False  # data can be None: whether a nodeUpdate came
        self.error: str | None = None
        self.reason: str | None = None

    @property
    def active(self) -> bool:
        """Whether it has not finished (running or deferred)."""
        return self.state in NODE_ACTIVE

    def __repr__(self) -> str:
        return f"<Node {self.label!r} of {self.task_id} {self.state}>"


class NodeFold:
    """The nodes of a task, folded from its updates in the order they came.

    Feed it updates (all at once, or one by one as they arrive); ``nodes``
    are in the order they first appeared. It also keeps the task's own
    terminal update, which :func:`task_state` reads.

    Args:
        task_id: The task's id, if known: updates of other ids are of
            sub-tasks. Unknown, a task's own updates are those without a
            ``root_task_id``.
    """

    def __init__(self, task_id: str | None = None, updates: Iterable[Update] = ()) -> None:
        self.task_id = task_id
        self._nodes: dict[tuple[str, str], Node] = {}
        self.seen = 0  # updates fed
        self.node_updates = 0  # nodeUpdate updates among them
        self.terminal: Update | None = None  # the task's own taskEnd/taskError/taskAborted
        self.feed_all(updates)

    @property
    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    def count(self, state: str) -> int:
        """How many nodes are in ``state``."""
        return sum(node.state == state for node in self._nodes.values())

    def active(self) -> list[Node]:
        """The nodes running or deferred, in the order they appeared."""
        return [node for node in self._nodes.values() if node.active]

    def copy(self) -> NodeFold:
        """A snapshot: what is fed to this fold later does not change it."""
        other = NodeFold(self.task_id)
        other._nodes = {key: copy.copy(node) for key, node in self._nodes.items()}
        other.seen, other.node_updates, other.terminal = self.seen, self.node_updates, self.terminal
        return other

    def feed_all(self, updates: Iterable[Update]) -> None:
        for update in updates:
            self.feed(update)

    def _own(self, update: Update) -> bool:
        if self.task_id is not None:
            return update.task_id == self.task_id
        return update.root_task_id is None

    def feed(self, update: Update) -> Node | None:
        """Fold one update; returns the node it was about (``None`` if none)."""
        self.seen += 1
        if update.is_terminal:
            self._settle(update)
            return None
        node = getattr(update, "node", None)
        if not isinstance(node, NodeInfo):
            return None
        key = (update.task_id, node.id)
        entry = self._nodes.get(key)
        if entry is None:
            entry = self._nodes[key] = Node(update.task_id, node)
            if self.terminal is not None:  # a straggler after the end: never running
                entry.state = _SETTLED_BY.get(self.terminal.type, NODE_RUNNING)
        if isinstance(update, NodeUpdateUpdate):
            self.node_updates += 1
            entry.data, entry.has_data = update.data, True
        elif isinstance(update, NodeErrorUpdate):
            entry.state, entry.error, entry.reason = NODE_FAILED, update.error, None
        elif not entry.active:
            pass  # ended, failed, or settled by an end: only a failure changes that
        elif isinstance(update, NodeDeferUpdate):
            entry.state, entry.reason = NODE_DEFERRED, update.reason
        elif isinstance(update, NodeEndUpdate):
            entry.state, entry.reason = NODE_ENDED, None
        return entry

    def _settle(self, terminal: Update) -> None:
        own = self._own(terminal)
        if own:
            if self.terminal is not None:
                return  # the first end counts
            self.terminal = terminal
        becomes = _SETTLED_BY.get(terminal.type)
        if becomes is None:
            return
        for node in self._nodes.values():
            if node.active and (own or node.task_id == terminal.task_id):
                node.state, node.reason = becomes, None


# --- the task -------------------------------------------------------------------------


def _error_of(future: Outcome[Any]) -> BaseException | None:
    """A settled future's error, never waiting (``None`` if it has none, or is not done)."""
    if not future.done() or future.cancelled():
        return None
    return future.exception()


def state_of(
    prepared: Outcome[Any],
    created: Outcome[Any],
    result: Outcome[Any],
    fold: NodeFold,
) -> tuple[str, str | None]:
    """A task's state and its detail (a reason, an error, or ``None``), never waiting.

    Args:
        prepared: Settled with the task's id, or the error of prepare.
        created: Settled once finalize answered, or with its error.
        result: The result's future.
        fold: The updates the handle has seen, folded.
    """
    if not prepared.done():
        return CREATING, None
    error = _error_of(prepared)
    if error is not None:
        return NOT_CREATED, str(error)
    if result.done() and not result.cancelled():
        error = result.exception()
        if error is None:
            return SUCCEEDED, None
        if isinstance(error, TaskFailedError):
            return FAILED, error.reason
        if isinstance(error, TaskAbortedError):
            return ABORTED, error.reason
        if error is _error_of(created):
            if isinstance(error, TaskError):
                return REJECTED, error.server_message or str(error)
            return NOT_CREATED, str(error)
        return ERROR, str(error)
    terminal = fold.terminal
    if terminal is not None:  # the result is being settled (an ack, say)
        return _TASK_STATE_OF_END[terminal.type], getattr(terminal, "reason", None)
    if not created.done():
        # Updates come only once the task started: they may outrun finalize's answer.
        return (RUNNING if fold.seen else CREATED), None
    error = _error_of(created)
    if error is not None:
        if isinstance(error, TaskAbortedError):
            return ABORTED, error.reason
        if isinstance(error, TaskError):
            return REJECTED, error.server_message or str(error)
        return NOT_CREATED, str(error)
    return (RUNNING if fold.seen else STARTED), None


def known_id(task: Task) -> str | None:
    """The task's id if the handle has it (never waits)."""
    prepared = task._prepared
    if prepared.done() and not prepared.cancelled() and prepared.exception() is None:
        return prepared.result()
    return None


def fold_task(task: Task, updates: Iterable[Update] | None = None) -> NodeFold:
    """The nodes of ``task`` from ``updates`` (default: all the handle has seen)."""
    if updates is None:
        return task._nodes()
    return NodeFold(known_id(task), updates)


def task_state(task: Task, fold: NodeFold | None = None) -> tuple[str, str | None]:
    """``task``'s state and detail now, from its handle and ``fold`` (default: all it saw).

    Reads the handle only: it never waits, and never starts following the task.
    """
    if fold is None:
        fold = fold_task(task)
    return state_of(task._prepared, task._created, task._result, fold)
