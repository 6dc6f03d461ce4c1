"""The values this package hands out: updates, contexts, results, task infos.

Every model is a frozen attrs class (or an enum) made from already-checked
values; none of them knows the wire. Reading the wire into them is
:mod:`requence_task._wire`'s job, folding updates into contexts is
:mod:`requence_task._fold`'s.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.v import format_exception

from ._errors import ResultTypeError
from ._files import RequenceCallback, RequenceFile, RequenceStream
from ._html import result_html
from ._protocol import (
    AWAITING_DELIVERY,
    DEFAULT_MAX_PAYLOAD_SIZE,
    FAILED,
    IDLE,
    NODE_DEFER,
    NODE_END,
    NODE_ERROR,
    NODE_START,
    NODE_UPDATE,
    PENDING,
    RUNNING,
    STOPPED,
    SUCCESSFUL,
    TASK_ABORTED,
    TASK_END,
    TASK_ERROR,
    TASK_START,
    TERMINAL_UPDATE_TYPES,
)

T = TypeVar("T")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _read_only(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    # A proxy is taken as it is: the folder hands over proxies of dicts it never
    # mutates again, and copying them here would undo its copy-on-write.
    if type(mapping) is MappingProxyType:
        return mapping
    return MappingProxyType(dict(mapping))


# --- Values -------------------------------------------------------------------


@attrs.frozen
class NodeInfo:
    """The node an update is about.

    Attributes:
        id: The node's id within the task's template.
        type: ``service``, ``logic``, ``or`` or ``reference``; any other
            string a newer server sends is kept as it is.
        alias: The node's alias, or ``None`` for a node without one.
    """

    id: str
    type: str
    alias: str | None = None


@attrs.frozen
class TaskContext:
    """What is known about a task after some update: the fold of its updates.

    Contexts are immutable snapshots. The mappings are read-only, and a later
    update never changes a context handed out earlier. They are shallow: the
    values inside are the decoded JSON and are shared, not copied.

    Attributes:
        task_id: The task's id.
        input: The task's input, from its ``taskStart`` update (``None``
            before that).
        result: The task's result, from its ``taskEnd`` update (``None``
            before that).
        node_data: The data of the latest ``nodeUpdate`` of each node alias,
            in the order the aliases first sent data.
        node_errors: The message of the ``nodeError`` of each node alias.
        exit: The name of the exit the task ended through, from its
            ``taskEnd`` update (``None`` before that, and for a task that
            ended without a named exit).
    """

    task_id: str
    input: Any = None
    result: Any = None
    node_data: Mapping[str, Any] = attrs.field(default=_EMPTY, converter=_read_only)
    node_errors: Mapping[str, str] = attrs.field(default=_EMPTY, converter=_read_only)
    exit: str | None = None

    def get_node_data(self, alias: str, default: Any = None) -> Any:
        """The latest data of the node ``alias``.

        Args:
            alias: The node's alias.
            default: What to return when that node has sent no data.

        Returns:
            The node's data, or ``default``.
        """
        return self.node_data.get(alias, default)

    def get_node_error(self, alias: str) -> str | None:
        """The error message of the node ``alias``, or ``None`` if it has none."""
        return self.node_errors.get(alias)


# --- Updates ------------------------------------------------------------------


def _empty_context(update: Update) -> TaskContext:
    return TaskContext(update.task_id)


@attrs.frozen(kw_only=True)
class Update:
    """One update of a task, as sent on a watch stream.

    Use the subclasses: ``isinstance(update, NodeUpdateUpdate)``, or match on
    the class. Types this client does not know arrive as
    :class:`UnknownUpdate`.

    Attributes:
        type: The update type, the SSE ``event:`` name (``taskStart``, ...).
        task_id: The id of the task the update belongs to.
        timestamp: When the server made the update, always timezone-aware.
            A time without a zone is read as UTC; an update without one gets
            the time it was received.
        position: The SSE ``id:`` of the event: its place in the stream, or
            ``None`` if the event had none.
        update_id: The server's id of the update, if it sent one.
        root_task_id: For an update of a sub-task, the id of the top-level
            task; ``None`` otherwise.
        context: The task's context after this update (not shown by
            ``repr``).
        raw: The update's data as received (not shown by ``repr``, not
            compared).
        incomplete: True when the watcher missed the task's ``taskStart``
            (it began watching after the task started), so the context lacks
            what came before.
    """

    type: str
    task_id: str
    timestamp: datetime
    position: int | None = None
    update_id: str | None = None
    root_task_id: str | None = None
    context: TaskContext = attrs.field(
        default=attrs.Factory(_empty_context, takes_self=True), repr=False
    )
    raw: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)
    incomplete: bool = attrs.field(default=False, repr=False)

    @property
    def is_terminal(self) -> bool:
        """Whether this update ends its task: ``taskEnd``, ``taskError`` or ``taskAborted``.

        This goes by :attr:`type` alone, so an :class:`UnknownUpdate` of a
        terminal type whose data was malformed is terminal too: the task has
        ended even if the details could not be read.
        """
        return self.type in TERMINAL_UPDATE_TYPES


@attrs.frozen(kw_only=True)
class TaskStartUpdate(Update):
    """The task started (``taskStart``).

    Attributes:
        input: The task's input.
    """

    type: str = attrs.field(default=TASK_START, init=False)
    input: Any = None


@attrs.frozen(kw_only=True)
class NodeStartUpdate(Update):
    """A node started (``nodeStart``).

    Attributes:
        node: The node.
    """

    type: str = attrs.field(default=NODE_START, init=False)
    node: NodeInfo


@attrs.frozen(kw_only=True)
class NodeUpdateUpdate(Update):
    """A node produced data (``nodeUpdate``); a node can send several.

    Attributes:
        node: The node.
        data: The data, any JSON value.
        output: The name of the node's output the data is for, or ``None``.
    """

    type: str = attrs.field(default=NODE_UPDATE, init=False)
    node: NodeInfo
    data: Any = None
    output: str | None = None


@attrs.frozen(kw_only=True)
class NodeErrorUpdate(Update):
    """A node failed (``nodeError``).

    Attributes:
        node: The node.
        error: The error message.
    """

    type: str = attrs.field(default=NODE_ERROR, init=False)
    node: NodeInfo
    error: str


@attrs.frozen(kw_only=True)
class NodeDeferUpdate(Update):
    """A node is waiting for something outside the task (``nodeDefer``).

    Attributes:
        node: The node.
        reason: Why it waits, if the node said.
    """

    type: str = attrs.field(default=NODE_DEFER, init=False)
    node: NodeInfo
    reason: str | None = None


@attrs.frozen(kw_only=True)
class NodeEndUpdate(Update):
    """A node finished (``nodeEnd``).

    Attributes:
        node: The node.
    """

    type: str = attrs.field(default=NODE_END, init=False)
    node: NodeInfo


@attrs.frozen(kw_only=True)
class TaskEndUpdate(Update):
    """The task succeeded (``taskEnd``); terminal.

    Attributes:
        result: The task's result.
        exit: The name of the exit the task ended through, if any.
        require_ack: Whether the task waits in ``AWAITING_DELIVERY`` for an
            ack of this update (``False`` when the server did not say).
    """

    type: str = attrs.field(default=TASK_END, init=False)
    result: Any = None
    exit: str | None = None
    require_ack: bool = False


@attrs.frozen(kw_only=True)
class TaskErrorUpdate(Update):
    """The task failed (``taskError``); terminal.

    Attributes:
        reason: Why it failed, if the server said.
        require_ack: Whether the task waits in ``AWAITING_DELIVERY`` for an
            ack of this update (``False`` when the server did not say).
    """

    type: str = attrs.field(default=TASK_ERROR, init=False)
    reason: str | None = None
    require_ack: bool = False


@attrs.frozen(kw_only=True)
class TaskAbortedUpdate(Update):
    """The task was aborted (``taskAborted``); terminal.

    Attributes:
        reason: Why it was aborted, if anyone said.
        require_ack: Whether the task waits in ``AWAITING_DELIVERY`` for an
            ack of this update (``False`` when the server did not say).
    """

    type: str = attrs.field(default=TASK_ABORTED, init=False)
    reason: str | None = None
    require_ack: bool = False


@attrs.frozen(kw_only=True)
class UnknownUpdate(Update):
    """An update this client cannot read: passed on, never fatal.

    Either its type is not one this client knows (a newer server), or its
    data did not fit its type. Its :attr:`~Update.raw` data holds everything
    the server sent (it is empty when the data was not a JSON object). It
    does not change the context. Its fields other than ``type`` are read as
    far as they can be: ``task_id`` is empty when nothing names the task, and
    ``timestamp`` is the time of receipt when the data has none that reads.

    Attributes:
        problem: What was wrong with the data of a known type; ``None`` when
            the type itself is unknown.
    """

    problem: str | None = None


# --- Results ------------------------------------------------------------------


# The user's types get their own converter: cattrs caches a hook for every type
# it meets, and nothing users structure should share state with the package.
_results = cattrs.Converter()


def _object_hook(cls: type[Any]) -> Callable[[object, object], Any]:
    def structure(value: object, _: object) -> Any:
        if isinstance(value, cls):
            return value
        raise TypeError(f"expected a {cls.__name__}, got {type(value).__name__}")

    return structure


# Files, streams and callbacks in a result are objects already: fields of these
# types take them as they are.
for _cls in (RequenceFile, RequenceStream, RequenceCallback):
    _results.register_structure_hook(_cls, _object_hook(_cls))


def _type_name(target: object) -> str:
    name = getattr(target, "__qualname__", None)
    if isinstance(name, str) and not getattr(target, "__args__", None):
        return name
    return repr(target).replace("typing.", "")


@attrs.frozen
class TaskResult:
    """The outcome of a task that succeeded: its result and the context it ended with.

    Attributes:
        task_id: The task's id.
        task_url: The task's page, if known.
        input: The task's input.
        result: The task's result, as decoded JSON.
        node_data: The latest data of each node alias.
        node_errors: The error message of each node alias that failed.
        exit: The name of the exit the task ended through (its ``taskEnd``
            update's ``exit``), or ``None`` when it ended without a named exit.
    """

    task_id: str
    task_url: str | None = None
    input: Any = None
    result: Any = None
    node_data: Mapping[str, Any] = attrs.field(default=_EMPTY, converter=_read_only)
    node_errors: Mapping[str, str] = attrs.field(default=_EMPTY, converter=_read_only)
    exit: str | None = None

    @classmethod
    def from_context(cls, context: TaskContext, *, task_url: str | None = None) -> TaskResult:
        """The result held by a task's final context.

        Args:
            context: The context after the task's ``taskEnd`` update.
            task_url: The task's page, if known.

        Returns:
            The result.
        """
        return cls(
            context.task_id,
            task_url,
            context.input,
            context.result,
            context.node_data,
            context.node_errors,
            context.exit,
        )

    def get_node_data(self, alias: str, default: Any = None) -> Any:
        """The latest data of the node ``alias``, or ``default`` if it sent none."""
        return self.node_data.get(alias, default)

    def get_node_error(self, alias: str) -> str | None:
        """The error message of the node ``alias``, or ``None`` if it has none."""
        return self.node_errors.get(alias)

    def _repr_html_(self) -> str:
        """Jupyter's view: the task (linked), its input and result, each node's data."""
        return result_html(
            task_id=self.task_id,
            task_url=self.task_url,
            input=self.input,
            result=self.result,
            node_data=self.node_data,
            node_errors=self.node_errors,
            exit=self.exit,
        )

    def result_as(self, cls: type[T], *, converter: cattrs.Converter | None = None) -> T:
        """The result structured into ``cls``.

        Example::

            @attrs.frozen
            class Invoice:
                total: int
                lines: list[str]

            invoice = task_result.result_as(Invoice)

        Args:
            cls: An attrs class, a dataclass, or a type cattrs can structure
                (``list[int]``, ``dict[str, Invoice]``, ...).
            converter: A cattrs converter with your own hooks; by default a
                private one of this package.

        Returns:
            The result as a ``cls``.

        Raises:
            ResultTypeError: The result does not fit ``cls``; the message
                names every field that does not, with its path.
            TypeError: cattrs cannot structure ``cls`` at all.
        """
        try:
            return (converter or _results).structure(self.result, cls)
        except cattrs.StructureHandlerNotFoundError as err:
            raise TypeError(f"cannot structure a result into {_type_name(cls)}: {err}") from err
        except Exception as err:
            if isinstance(err, cattrs.BaseValidationError):
                errors = cattrs.transform_error(err, path="result")
            else:  # a scalar: no notes of cattrs say which type it wanted
                errors = [f"{format_exception(err, cls)} @ result"]
            message = (
                f"The result of task {self.task_id} does not fit {_type_name(cls)}: "
                + "; ".join(errors)
            )
            raise ResultTypeError(message, target=cls, errors=errors, cause=err) from err


# --- Task infos ---------------------------------------------------------------


class TaskStatus(str, enum.Enum):
    """A task's status, as ``get_task`` reports it (parsed in any letter case)."""

    IDLE = IDLE
    """Created (prepared), not started yet."""
    PENDING = PENDING
    """Started and waiting for its turn."""
    RUNNING = RUNNING
    """Running."""
    AWAITING_DELIVERY = AWAITING_DELIVERY
    """Ended; held until a client acknowledges the delivery (``require_ack``)."""
    SUCCESSFUL = SUCCESSFUL
    """Ended with a result."""
    FAILED = FAILED
    """Ended with an error."""
    STOPPED = STOPPED
    """Aborted."""
    UNKNOWN = "UNKNOWN"
    """A status this client does not know; ``TaskInfo.raw_status`` has it."""

    @classmethod
    def parse(cls, value: object) -> TaskStatus:
        """The status for ``value`` in any letter case; ``UNKNOWN`` if none fits."""
        if isinstance(value, str):
            try:
                return cls(value.strip().upper())
            except ValueError:
                pass
        return cls.UNKNOWN

    @property
    def ended(self) -> bool:
        """Whether the task has ended (including one awaiting delivery)."""
        return self in (
            TaskStatus.SUCCESSFUL,
            TaskStatus.FAILED,
            TaskStatus.STOPPED,
            TaskStatus.AWAITING_DELIVERY,
        )


@attrs.frozen
class TaskInfo:
    """What Requence knows of a task now (:func:`get_task`).

    Attributes:
        task_id: The task's id.
        status: Its status.
        raw_status: The status string as sent.
        status_text: Why it has that status (a failure's reason), if given.
        task_template: The template's name.
        name: The task's name.
        branch: The branch the template ran on.
        context: Input, result, node data and node errors by alias (and the
            exit, as ``exit`` below).
        exit: The name of the exit the task ended through, if it ended
            through a named one and the server says (``None`` otherwise).
        root_task_id: For a sub-task (a task a node of another task started),
            the id of the top-level task; ``None`` for a top-level task, or
            when the server does not say.
    """

    task_id: str
    status: TaskStatus
    raw_status: str | None
    status_text: str | None
    task_template: str | None
    name: str | None
    branch: str | None
    context: TaskContext = attrs.field(repr=False)
    exit: str | None = None
    root_task_id: str | None = None


# --- What prepare and finalize answered (internal) ----------------------------


@attrs.frozen
class Prepared:
    """What prepare told about a new task."""

    task_id: str
    finalize_url: str
    branch: str
    server_time: float | None  # the server's clock at the answer (epoch seconds)
    upload_url: str | None = None  # fileUrls.uploadUrl: files and claim checks go there
    stream_url: str | None = None  # fileUrls.streamUrl: streams are registered there
    max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE  # limits.maxPayloadSize
    max_file_size: int | None = None  # limits.maxFileSize (None: not given)


@attrs.frozen
class Created:
    """What finalize told about a started task."""

    task_id: str
    watch_url: str
    show_url: str | None
