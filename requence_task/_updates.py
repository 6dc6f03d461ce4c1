"""Typed updates of the update stream, and the context folded from them.

Each SSE event of a watch stream (``event:`` type, ``id:`` position, ``data:``
one JSON object; see ``docs/protocol.md``, "The update stream") becomes one
frozen :class:`Update` subclass. A :class:`ContextFolder` keeps the running
fold of one task (its input, the latest data and the errors of each node
alias, its result) and attaches to every update the :class:`TaskContext` as it
stands *after* that update.

Nothing on the wire is fatal: a type this client does not know, and data that
does not fit its type, both become an :class:`UnknownUpdate` (the latter with
one warning on the ``requence_task`` logger that says what was wrong, never
the data itself).

The wire data is structured by one private cattrs converter, ``_WIRE``, with
a function per update type made by ``make_dict_structure_fn`` (the camelCase
wire keys renamed, unknown keys ignored) and strict hooks of its own: a string
field takes only a string, never a number; a boolean only a boolean. It skips
cattrs' detailed validation, which costs several times as much on the hot
path (watch-all streams reach 100,000 updates a second); only for data that
failed is it run again with a detailed twin, to say which field and how. The
user's types (:meth:`TaskResult.result_as`) get a converter of their own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override
from cattrs.v import format_exception

from ._errors import RequenceError
from ._protocol import (
    NODE_DEFER,
    NODE_END,
    NODE_ERROR,
    NODE_START,
    NODE_UPDATE,
    TASK_ABORTED,
    TASK_END,
    TASK_ERROR,
    TASK_START,
    TERMINAL_UPDATE_TYPES,
)

__all__ = [
    "NodeDeferUpdate",
    "NodeEndUpdate",
    "NodeErrorUpdate",
    "NodeInfo",
    "NodeStartUpdate",
    "NodeUpdateUpdate",
    "ResultTypeError",
    "TaskAbortedUpdate",
    "TaskContext",
    "TaskEndUpdate",
    "TaskErrorUpdate",
    "TaskResult",
    "TaskStartUpdate",
    "UnknownUpdate",
    "Update",
]

log = logging.getLogger("requence_task")

T = TypeVar("T")

_UTC = timezone.utc
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
    """

    task_id: str
    input: Any = None
    result: Any = None
    node_data: Mapping[str, Any] = attrs.field(default=_EMPTY, converter=_read_only)
    node_errors: Mapping[str, str] = attrs.field(default=_EMPTY, converter=_read_only)

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


# --- Reading the wire ---------------------------------------------------------


class _Malformed(ValueError):
    """A value on the wire does not fit its field.

    The message says how, after the field's name (``is a number, not a
    string``); it never quotes the value.
    """


def _kind(value: object) -> str:
    # Names a value's JSON kind, so that messages never quote the data.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


_TIMESTAMP = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)"
    r"(?:[Tt ](\d\d)(?::?(\d\d)(?::?(\d\d)(?:[.,](\d+))?)?)?)?"
    r" ?(?:([Zz])|([+-])(\d\d)(?::?(\d\d))?)?"
)


def _parse_timestamp_slowly(text: str) -> datetime:
    # Python 3.10's fromisoformat takes only what isoformat() writes; servers
    # also send any number of fraction digits, "+0200", "+02" and the like.
    match = _TIMESTAMP.fullmatch(text.strip())
    if match is None:
        raise _Malformed("is not an ISO-8601 date-time")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        tz: timezone | None = None
        if zulu:
            tz = _UTC
        elif sign:
            offset = timedelta(hours=int(off_h), minutes=int(off_m or 0))
            tz = timezone(-offset if sign == "-" else offset)
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=tz,
        )
    except ValueError as err:  # out of range: month 13, offset of 24 hours, ...
        raise _Malformed("is not a valid date-time") from err


# The hooks of the wire converter. Each takes the value and the type asked for
# (which they know already) and checks strictly: cattrs' own hooks would take
# 5 for the string "5" and "yes" for True.


def _parse_timestamp(value: object, _: object = datetime) -> datetime:
    # An update without a time (null, or no key: see structure_update) gets
    # the time it was received.
    if value is None:
        return datetime.now(_UTC)
    if not isinstance(value, str):
        raise _Malformed(f"is {_kind(value)}, not an ISO-8601 string")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = _parse_timestamp_slowly(value)
    if parsed.tzinfo is None:
        # The server's clock is UTC; a zone-less time can only mean that.
        return parsed.replace(tzinfo=_UTC)
    return parsed


def _str(value: object, _: object) -> str:
    if isinstance(value, str):
        return value
    raise _Malformed(f"is {_kind(value)}, not a string")


def _optional_str(value: object, _: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _Malformed(f"is {_kind(value)}, not a string or null")


def _bool(value: object, _: object) -> bool:
    if value is True or value is False:
        return value
    raise _Malformed(f"is {_kind(value)}, not a boolean")


def _require_ack(value: object, _: object) -> bool:
    # Null, like no key at all, means the server did not ask for an ack.
    return False if value is None else _bool(value, _)


def _task_id(value: object, _: object) -> str:
    if isinstance(value, str) and value:
        return value
    if value is None:
        raise _Malformed("is missing: the update names no task")
    if value == "":
        raise _Malformed("is empty: the update names no task")
    raise _Malformed(f"is {_kind(value)}, not a string")


def _as_is(value: T, _: object) -> T:
    return value


# Node infos are immutable and repeat all along a stream (every update of a node
# names it again), so they are shared rather than built again: building one
# costs more than the lookup. Bounded, since a watch-all stream meets many.
# Only infos the converter built are kept, so every key holds strings (and None).
_NODES: dict[tuple[object, object, object], NodeInfo] = {}
_NODES_MAX = 4096


def _node_hook(structure: Callable[[Any, Any], NodeInfo]) -> Callable[[object, object], NodeInfo]:
    def node(value: object, _: object) -> NodeInfo:
        if not isinstance(value, dict):
            raise _Malformed(f"is {_kind(value)}, not an object")
        key = (value.get("id"), value.get("type"), value.get("alias"))
        try:
            return _NODES[key]
        except (KeyError, TypeError):  # TypeError: an unhashable value, malformed
            pass
        info = structure(value, NodeInfo)
        if len(_NODES) >= _NODES_MAX:
            _NODES.clear()
        _NODES[key] = info
        return info

    return node


_UPDATE_CLASSES: dict[str, type[Update]] = {
    TASK_START: TaskStartUpdate,
    NODE_START: NodeStartUpdate,
    NODE_UPDATE: NodeUpdateUpdate,
    NODE_ERROR: NodeErrorUpdate,
    NODE_DEFER: NodeDeferUpdate,
    NODE_END: NodeEndUpdate,
    TASK_END: TaskEndUpdate,
    TASK_ERROR: TaskErrorUpdate,
    TASK_ABORTED: TaskAbortedUpdate,
}

# The camelCase wire key of each field whose name differs from it.
_WIRE_KEYS = {
    "task_id": "taskId",
    "update_id": "updateId",
    "root_task_id": "rootTaskId",
    "require_ack": "requireAck",
}

# The keys under which structure_update hands the converter what the folder,
# not the wire, supplies. It sets them on its copy of the wire data after
# copying, so that no key on the wire can stand in for them.
_POSITION = "(position)"
_CONTEXT = "(context)"
_RAW = "(raw)"


def _wire_converter(*, detailed_validation: bool) -> cattrs.Converter:
    converter = cattrs.Converter(detailed_validation=detailed_validation, forbid_extra_keys=False)
    converter.register_structure_hook(str, _str)
    converter.register_structure_hook(str | None, _optional_str)
    converter.register_structure_hook(bool, _bool)
    converter.register_structure_hook(datetime, _parse_timestamp)
    converter.register_structure_hook(
        NodeInfo,
        _node_hook(make_dict_structure_fn(NodeInfo, converter, _cattrs_forbid_extra_keys=False)),
    )
    # Typed Any so that mypy lets ** pass them beside make_dict_structure_fn's own flags.
    common: dict[str, Any] = {
        "task_id": override(rename=_WIRE_KEYS["task_id"], struct_hook=_task_id),
        "update_id": override(rename=_WIRE_KEYS["update_id"]),
        "root_task_id": override(rename=_WIRE_KEYS["root_task_id"]),
        "position": override(rename=_POSITION, struct_hook=_as_is),
        "context": override(rename=_CONTEXT, struct_hook=_as_is),
        "raw": override(rename=_RAW, struct_hook=_as_is),
        "incomplete": override(omit=True),  # set by the folder, which knows
    }
    for cls in _UPDATE_CLASSES.values():
        overrides = dict(common)
        if "require_ack" in attrs.fields_dict(cls):
            overrides["require_ack"] = override(
                rename=_WIRE_KEYS["require_ack"], struct_hook=_require_ack
            )
        converter.register_structure_hook(
            cls,
            make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=False, **overrides),
        )
    return converter


# The wire converter: every known update type is structured by it (and by
# nothing else). It does not say where data failed to fit, which makes it
# several times faster than a detailed one on the stream's hot path;
# _WIRE_EXPLAINED, made the same way but detailed, runs only on data that
# failed, to say which field did not fit and how.
_WIRE = _wire_converter(detailed_validation=False)
_WIRE_EXPLAINED = _wire_converter(detailed_validation=True)

# The converter's hook of each update type, looked up once rather than on
# every update by _WIRE.structure.
_STRUCTURE: dict[str, tuple[type[Update], Callable[[Any, Any], Update]]] = {
    event_type: (cls, _WIRE.get_structure_hook(cls)) for event_type, cls in _UPDATE_CLASSES.items()
}


def _say(error: str) -> str:
    # One line of cattrs.transform_error ("is a number, not a string @ .node.id")
    # as a sentence naming the field by its wire key.
    description, _, path = error.rpartition(" @ ")
    if not path:
        return f"the update {description}"
    field = ".".join(_WIRE_KEYS.get(name, name) for name in path.lstrip(".").split("."))
    return f"'{field}' {description}"


def _describe(err: BaseException, _: object) -> str:
    # For cattrs.transform_error: what is wrong, without the value.
    if isinstance(err, _Malformed):
        return str(err)
    if isinstance(err, KeyError):
        return "is missing"
    return f"could not be read ({type(err).__name__})"


def _explain(wire: dict[str, Any], cls: type[Update], err: Exception) -> str:
    """Why ``wire`` does not fit ``cls``, naming each field that does not."""
    try:
        _WIRE_EXPLAINED.structure(wire, cls)
    except cattrs.BaseValidationError as detailed:
        return "; ".join(
            _say(error)
            for error in cattrs.transform_error(detailed, path="", format_exception=_describe)
        )
    except Exception as other:  # a bug of ours: still no data in the message
        err = other
    return f"it could not be read ({type(err).__name__})"


def _salvage(
    event_type: str,
    data: object,
    position: int | None,
    context: TaskContext,
    problem: str | None,
) -> UnknownUpdate:
    # Reads what it can and checks nothing: for a type whose shape is unknown,
    # and for data that failed its type's checks.
    raw: dict[str, Any] = data if isinstance(data, dict) else {}
    task_id = raw.get("taskId")
    if not isinstance(task_id, str):
        task_id = raw.get("task_id")
    if not isinstance(task_id, str):
        task_id = context.task_id
    try:
        timestamp = _parse_timestamp(raw.get("timestamp"))
    except _Malformed:
        timestamp = datetime.now(_UTC)
    update_id = raw.get("updateId")
    root_task_id = raw.get("rootTaskId")
    return UnknownUpdate(
        type=event_type,
        task_id=task_id,
        timestamp=timestamp,
        position=position,
        update_id=update_id if isinstance(update_id, str) else None,
        root_task_id=root_task_id if isinstance(root_task_id, str) else None,
        context=context,
        raw=raw,
        problem=problem,
    )


def structure_update(
    event_type: str, data: dict[str, Any], position: int | None, context: TaskContext
) -> Update:
    """Turn one SSE event into its typed update, with ``context`` attached as it is.

    This never raises. A type this client does not know becomes an
    :class:`UnknownUpdate`, read as far as it goes. Data that does not fit its
    known type becomes an :class:`UnknownUpdate` too, and logs one warning on
    the ``requence_task`` logger saying what was wrong (never the data).

    Args:
        event_type: The SSE ``event:`` name.
        data: The decoded ``data:`` JSON; anything but an object is malformed.
        position: The SSE ``id:`` as an integer, if the event had one.
        context: The context to attach. Its ``task_id`` is used when the data
            names no task.

    Returns:
        The update.
    """
    known = _STRUCTURE.get(event_type)
    if known is None:
        return _salvage(event_type, data, position, context, None)
    if isinstance(data, dict):
        cls, structure = known
        # A copy, never the caller's dict: with what the folder supplies, and
        # the fields no field hook can fill in, as they fall back to others.
        wire = data.copy()  # faster than {**data, ...}
        wire[_POSITION] = position
        wire[_CONTEXT] = context
        wire[_RAW] = data
        if wire.get("taskId") is None:
            task_id = wire.get("task_id")  # the watch-all stream's spelling
            wire["taskId"] = (context.task_id or None) if task_id is None else task_id
        wire.setdefault("timestamp", None)  # none: the time of receipt
        try:
            return structure(wire, cls)
        except Exception as err:  # cattrs, a hook, or a bug of ours: never the stream's end
            problem = _explain(wire, cls, err)
    else:
        problem = f"the data is {_kind(data)}, not an object"
    log.warning(
        "Passing on a malformed %s update (position %s) as an UnknownUpdate: %s.",
        event_type,
        position,
        problem,
    )
    return _salvage(event_type, data, position, context, problem)


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

        Never raises; see :func:`structure_update`.

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
            if (
                event_type == TASK_END
                and isinstance(data, dict)
                and "result" in data
                and (self._task_id is None or update.task_id == self._task_id)
            ):
                # A taskEnd whose other fields are malformed: its result is still
                # the task's result (anything JSON is a result), so fold it.
                after = TaskContext(
                    before.task_id,
                    before.input,
                    data["result"],
                    before.node_data,
                    before.node_errors,
                )
                object.__setattr__(update, "context", after)
                self._context = after
            return update
        if self._task_id is None:
            self._task_id = update.task_id
            before = TaskContext(
                update.task_id, before.input, before.result, before.node_data, before.node_errors
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
                )
        elif isinstance(update, TaskStartUpdate):
            after = TaskContext(
                before.task_id, update.input, before.result, before.node_data, before.node_errors
            )
        elif isinstance(update, TaskEndUpdate):
            after = TaskContext(
                before.task_id, before.input, update.result, before.node_data, before.node_errors
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


# --- Results ------------------------------------------------------------------


class ResultTypeError(RequenceError, ValueError):
    """A task's result does not fit the type asked for (:meth:`TaskResult.result_as`).

    Attributes:
        target: The type asked for.
        errors: One line per mismatch, each ending in the path of the value
            (``invalid value for type, expected int @ result.total``).
        cause: The cattrs exception behind it.
    """

    def __init__(
        self, message: str, *, target: object, errors: list[str], cause: BaseException
    ) -> None:
        """Make the error; ``message`` is its whole text."""
        super().__init__(message)
        self.target = target
        self.errors = errors
        self.cause = cause


# The user's types get their own converter: cattrs caches a hook for every type
# it meets, and nothing users structure should share state with the package.
_results = cattrs.Converter()


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
    """

    task_id: str
    task_url: str | None = None
    input: Any = None
    result: Any = None
    node_data: Mapping[str, Any] = attrs.field(default=_EMPTY, converter=_read_only)
    node_errors: Mapping[str, str] = attrs.field(default=_EMPTY, converter=_read_only)

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
        )

    def get_node_data(self, alias: str, default: Any = None) -> Any:
        """The latest data of the node ``alias``, or ``default`` if it sent none."""
        return self.node_data.get(alias, default)

    def get_node_error(self, alias: str) -> str | None:
        """The error message of the node ``alias``, or ``None`` if it has none."""
        return self.node_errors.get(alias)

    def _repr_html_(self) -> str:
        """Jupyter's view: the task (linked), its input and result, each node's data."""
        from ._display import result_html

        return result_html(self)

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
