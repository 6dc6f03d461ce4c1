"""The wire: reading Requence's JSON into models, and writing what we send.

The only module that reads a raw wire key (``taskId``, ``rootTaskId``,
``requireAck``, ``finalizeUrl``, ``urls``, ``statusText``, ...), besides
:mod:`requence_task._api`, which calls the parsers here.

Each SSE event of a watch stream (``event:`` type, ``id:`` position, ``data:``
one JSON object; see ``docs/protocol.md``, "The update stream") becomes one
frozen :class:`~requence_task._models.Update` subclass (:func:`structure_update`).
Nothing on the wire is fatal: a type this client does not know, and data that
does not fit its type, both become an ``UnknownUpdate`` (the latter with one
warning on the ``requence_task`` logger that says what was wrong, never the
data itself).

The update data is structured by one private cattrs converter, ``_WIRE``, with
a function per update type made by ``make_dict_structure_fn`` (the camelCase
wire keys renamed, unknown keys ignored) and strict hooks of its own: a string
field takes only a string, never a number; a boolean only a boolean. It skips
cattrs' detailed validation, which costs several times as much on the hot
path (watch-all streams reach 100,000 updates a second); only for data that
failed is it run again with a detailed twin, to say which field and how. The
user's types (``TaskResult.result_as``) get a converter of their own, in
``_models``.

Besides updates: the answers of prepare, finalize and get (:func:`prepared`,
:func:`created`, :func:`task_info`), the bodies we send (:func:`finalize_body`,
:func:`watch_body`), which task an event of the shared stream belongs to
(:func:`route_keys`, :func:`task_key`), whether an end waits for an ack
(:func:`needs_ack`), and an update as the JSON the command line prints
(:func:`update_to_json`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from ._errors import ApiError, ClaimCheckError
from ._files import (
    Opener,
    RequenceCallback,
    RequenceFile,
    RequenceStream,
    remote_file,
    remote_stream,
)
from ._models import (
    NodeDeferUpdate,
    NodeEndUpdate,
    NodeErrorUpdate,
    NodeInfo,
    NodeStartUpdate,
    NodeUpdateUpdate,
    Prepared,
    TaskAbortedUpdate,
    TaskContext,
    TaskEndUpdate,
    TaskErrorUpdate,
    TaskInfo,
    TaskStartUpdate,
    TaskStatus,
    UnknownUpdate,
    Update,
)
from ._protocol import (
    CLAIM_CHECK_MAX_DEPTH,
    DEFAULT_MAX_PAYLOAD_SIZE,
    LIVE_BRANCH,
    NODE_DEFER,
    NODE_END,
    NODE_ERROR,
    NODE_START,
    NODE_UPDATE,
    REFERENCE_TAG,
    TAG_CALLBACK,
    TAG_CLAIM_CHECK,
    TAG_FILE,
    TAG_STREAM,
    TASK_ABORTED,
    TASK_END,
    TASK_ERROR,
    TASK_START,
    WATCH_ALL_FILTER_KEY,
)

log = logging.getLogger("requence_task")

T = TypeVar("T")

_UTC = timezone.utc


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


# --- Events of the shared stream ------------------------------------------------------


def route_keys(data: Mapping[str, Any]) -> tuple[object, object]:
    """Which tasks an event of the shared stream goes to: ``(root, sub)``.

    Every update goes to its top-level task (``rootTaskId``, else its own
    ``taskId``): a task's updates include its sub-tasks'. A sub-task's update
    goes to that sub-task too: ``sub`` is its own id, or ``None`` for an
    update of a top-level task (no ``rootTaskId``, or one equal to its own
    id). ``root`` is ``None`` when the data names no task.
    """
    own = data.get("taskId") or data.get("task_id")
    root = data.get("rootTaskId")
    if not root or root == own:
        return own, None
    return root, own


def task_key(data: Mapping[str, Any]) -> str:
    """The task an event's data names (the task's own, not its root); ``""`` if none."""
    task_id = data.get("taskId") or data.get("task_id")
    return task_id if isinstance(task_id, str) else ""


def update_id(data: Mapping[str, Any]) -> str | None:
    """The server's id of an update (``updateId``) from its data, if it has one."""
    value = data.get("updateId")
    return value if isinstance(value, str) else None


def needs_ack(update: Update) -> bool:
    """Whether a terminal update holds its task until a client acks it.

    Also for an ``UnknownUpdate`` whose other fields did not read: its data
    still asks for the ack (``requireAck: true``).
    """
    return bool(getattr(update, "require_ack", False)) or update.raw.get("requireAck") is True


def raw_exit(data: Mapping[str, Any]) -> str | None:
    """The ``exit`` of a ``taskEnd`` update's data, if it is a string (else ``None``)."""
    value = data.get("exit")
    return value if isinstance(value, str) else None


def raw_result(data: Mapping[str, Any]) -> tuple[bool, Any]:
    """Whether an update's data carries a ``result``, and the result (decoded JSON)."""
    if "result" in data:
        return True, data["result"]
    return False, None


def raw_reason(data: Mapping[str, Any]) -> str | None:
    """The ``reason`` in an update's data, if it is a string."""
    reason = data.get("reason")
    return reason if isinstance(reason, str) else None


# --- Answers ------------------------------------------------------------------------


def error_message(text: str) -> str | None:
    """The message of an error answer's JSON body (``message``, ``error`` or
    ``detail``); ``None`` when the body is not such JSON (then its text is the reason)."""
    if not text.startswith("{"):
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            value = body.get(key)
            if isinstance(value, str):
                return value
    return None


def _size_limit(limits: Mapping[str, Any], key: str) -> int | None:
    value = limits.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def prepared(answer: Mapping[str, Any], *, what: str, server_time: float | None) -> Prepared:
    """The answer of prepare; :class:`ApiError` when it lacks the task's id or finalize URL.

    ``fileUrls`` and ``limits`` are optional: without them the task cannot take
    files (the upload says so), and the payload limit is 4 MiB.
    """
    task_id = answer.get("taskId")
    finalize_url = answer.get("finalizeUrl")
    if not isinstance(task_id, str) or not isinstance(finalize_url, str):
        raise ApiError(f"{what}: the answer lacks taskId or finalizeUrl")
    branch = answer.get("branch") or LIVE_BRANCH
    urls = answer.get("fileUrls")
    urls = urls if isinstance(urls, dict) else {}
    upload, stream = urls.get("uploadUrl"), urls.get("streamUrl")
    limits = answer.get("limits")
    limits = limits if isinstance(limits, dict) else {}
    return Prepared(
        task_id,
        finalize_url,
        str(branch),
        server_time,
        upload_url=upload if isinstance(upload, str) and upload else None,
        stream_url=stream if isinstance(stream, str) and stream else None,
        max_payload_size=_size_limit(limits, "maxPayloadSize") or DEFAULT_MAX_PAYLOAD_SIZE,
        max_file_size=_size_limit(limits, "maxFileSize"),
    )


def created_urls(answer: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """The watch and show URLs of finalize's answer (``urls``); ``None`` without a watch URL."""
    urls = answer.get("urls") or {}
    watch = urls.get("watch") if isinstance(urls, dict) else None
    show = urls.get("show") if isinstance(urls, dict) else None
    if not isinstance(watch, str):
        return None
    return watch, show if isinstance(show, str) else None


def raw_status(answer: Mapping[str, Any]) -> str:
    """The ``status`` of get's answer in upper case (``""`` when it has none)."""
    return str(answer.get("status", "")).upper()


def status_text(answer: Mapping[str, Any]) -> str | None:
    """The ``statusText`` of get's answer (why the task has its status), if a string."""
    text = answer.get("statusText")
    return text if isinstance(text, str) else None


def task_info(task_id: str, body: dict[str, Any]) -> TaskInfo:
    """A :class:`TaskInfo` from the body of ``GET /task/{id}``.

    ``exit`` and ``rootTaskId`` are optional (a server may omit them, or send
    null); any other value than a string there is an :class:`ApiError`.
    """
    nodes_data = body.get("nodesData") or []
    nodes_error = body.get("nodesError") or []
    if not isinstance(nodes_data, list) or not isinstance(nodes_error, list):
        raise ApiError(f"get of task {task_id}: nodesData and nodesError must be lists")
    data = {
        item["alias"]: item.get("data")
        for item in nodes_data
        if isinstance(item, dict) and isinstance(item.get("alias"), str)
    }
    errors = {
        item["alias"]: str(item.get("error"))
        for item in nodes_error
        if isinstance(item, dict) and isinstance(item.get("alias"), str)
    }
    status = body.get("status")

    def text(key: str) -> str | None:
        value = body.get(key)
        return value if isinstance(value, str) else None

    def optional_text(key: str) -> str | None:
        # Newer keys a server may omit (or send as null); any other type is an error.
        value = body.get(key)
        if value is None or isinstance(value, str):
            return value
        raise ApiError(f"get of task {task_id}: '{key}' is {_kind(value)}, not a string or null")

    exit_name, root_task_id = optional_text("exit"), optional_text("rootTaskId")

    return TaskInfo(
        task_id=task_id,
        status=TaskStatus.parse(status),
        raw_status=status if isinstance(status, str) else None,
        status_text=text("statusText"),
        task_template=text("taskTemplate"),
        name=text("name"),
        branch=text("branch"),
        context=TaskContext(
            task_id,
            body.get("input"),
            body.get("result"),
            MappingProxyType(data),
            MappingProxyType(errors),
            exit_name,
        ),
        exit=exit_name,
        root_task_id=root_task_id or None,
    )


# --- What we send ------------------------------------------------------------------


def finalize_body(*, name: str | None, input_json: str, priority: int, require_ack: bool) -> str:
    """The body of finalize (compact JSON), around the input already serialised
    (``input_json``, compact too: the payload limit measures it so).

    Args:
        priority: The wire priority (see ``_protocol.priority_to_wire``).
    """
    return (
        f'{{"name":{compact_json(name)},"input":{input_json},'
        f'"priority":{priority},"requireAck":{json.dumps(require_ack)}}}'
    )


def compact_json(value: object) -> str:
    """JSON as the payload limit measures it: no spaces, UTF-8 text as it is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# --- References: files, streams, claim checks, callbacks -----------------------------


def key_path(parent: str, key: str | int) -> str:
    """The path of a value inside another, as errors spell it: ``input.pages[0].scan``."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if key.isidentifier():
        return f"{parent}.{key}"
    return f"{parent}[{json.dumps(key, ensure_ascii=False)}]"


_TAG_BYTES = f'"{REFERENCE_TAG}"'


def has_references(text: str | bytes) -> bool:
    """Whether JSON text may hold a reference (a quick look before any walk)."""
    if isinstance(text, bytes):
        return _TAG_BYTES.encode() in text
    return _TAG_BYTES in text


def file_reference(url: str, mime: str, size: int, name: str | None = None) -> dict[str, Any]:
    """The reference of a file at the files service."""
    found: dict[str, Any] = {REFERENCE_TAG: TAG_FILE, "url": url, "mime": mime, "size": size}
    if name is not None:
        found["name"] = name
    return found


def stream_reference(url: str, mime: str, name: str | None = None) -> dict[str, Any]:
    """The reference of a stream at the files service."""
    found: dict[str, Any] = {REFERENCE_TAG: TAG_STREAM, "url": url, "mime": mime}
    if name is not None:
        found["name"] = name
    return found


def claim_check_reference(url: str, size: int) -> dict[str, Any]:
    """The reference of a JSON value offloaded to the files service."""
    return {REFERENCE_TAG: TAG_CLAIM_CHECK, "url": url, "size": size}


def shown_reference(item: object) -> object:
    """A file or stream as JSON for people (the command line): type, size, name, no URL."""
    if isinstance(item, RequenceFile):
        shown: dict[str, Any] = {REFERENCE_TAG: TAG_FILE, "mime": item.mime, "size": item.size}
    elif isinstance(item, RequenceStream):
        shown = {REFERENCE_TAG: TAG_STREAM, "mime": item.mime}
    elif isinstance(item, RequenceCallback):
        return {REFERENCE_TAG: TAG_CALLBACK, "lifetime": item.lifetime}
    else:
        raise TypeError(f"{type(item).__name__} is not JSON serialisable")
    if item.name is not None:
        shown["name"] = item.name
    return shown


def _usable_url(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _size(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


class Hydrator:
    """Turns references in received JSON into objects (see ``docs/protocol.md``).

    Args:
        opener: How the objects made read their bytes (the client's files session).
        claim_check: Fetches a claim check's JSON: ``(url, path)`` to the value; it
            raises the error that the update fails with. ``None``: claim checks
            are an error here (:class:`ClaimCheckError`).
    """

    __slots__ = ("claim_check", "opener")

    def __init__(
        self, opener: Opener, claim_check: Callable[[str, str], object] | None = None
    ) -> None:
        self.opener = opener
        self.claim_check = claim_check

    def __call__(self, value: object, path: str) -> object:
        """``value`` with every reference in it turned into its object (or fetched)."""
        return self._walk(value, path, 0)

    def _walk(self, value: object, path: str, depth: int) -> object:
        if isinstance(value, list):
            return [self._walk(item, key_path(path, i), depth) for i, item in enumerate(value)]
        if not isinstance(value, dict):
            return value
        tag = value.get(REFERENCE_TAG)
        if tag is None:
            return {
                key: self._walk(item, key_path(path, key), depth) for key, item in value.items()
            }
        if tag == TAG_FILE:
            url, size, mime = (
                _usable_url(value.get("url")),
                _size(value.get("size")),
                value.get("mime"),
            )
            if url is None or size is None or not isinstance(mime, str):
                raise ApiError(
                    f"{path}: a RequenceFile reference without a usable url, mime and size"
                )
            name = value.get("name")
            return remote_file(
                url,
                mime=mime,
                size=size,
                opener=self.opener,
                name=name if isinstance(name, str) else None,
            )
        if tag == TAG_STREAM:
            url, mime = _usable_url(value.get("url")), value.get("mime")
            if url is None or not isinstance(mime, str):
                raise ApiError(f"{path}: a RequenceStream reference without a usable url and mime")
            name = value.get("name")
            return remote_stream(
                url, mime=mime, opener=self.opener, name=name if isinstance(name, str) else None
            )
        if tag == TAG_CLAIM_CHECK:
            url = _usable_url(value.get("url"))
            if url is None:
                raise ClaimCheckError(
                    f"{path}: a ClaimCheck reference without a usable url, so its value is unknown",
                    path=path,
                )
            if depth >= CLAIM_CHECK_MAX_DEPTH:
                raise ClaimCheckError(
                    f"{path}: claim checks nested more than {CLAIM_CHECK_MAX_DEPTH} deep; "
                    "its value is not read",
                    path=path,
                )
            if self.claim_check is None:
                raise ClaimCheckError(f"{path}: a claim check cannot be fetched here", path=path)
            return self._walk(self.claim_check(url, path), path, depth + 1)
        if tag == TAG_CALLBACK:
            return RequenceCallback(value)
        # An unknown tag stays the plain dict it is (our choice).
        return {key: self._walk(item, key_path(path, key), depth) for key, item in value.items()}


def find_references(value: object) -> bool:
    """Whether parsed JSON holds a reference anywhere."""
    if isinstance(value, list):
        return any(find_references(item) for item in value)
    if isinstance(value, dict):
        return REFERENCE_TAG in value or any(find_references(item) for item in value.values())
    return False


def dehydrate(value: object, convert: Callable[[object, str], object], path: str) -> object:
    """``value`` as JSON with each file, stream or callback replaced by what ``convert``
    makes of it (called with the object and its path). Other values are left to
    ``json.dumps``; dicts and lists are copied, tuples become lists."""
    if isinstance(value, (RequenceFile, RequenceStream, RequenceCallback)):
        return convert(value, path)
    if isinstance(value, dict):
        return {
            key: dehydrate(item, convert, key_path(path, str(key))) for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [dehydrate(item, convert, key_path(path, i)) for i, item in enumerate(value)]
    return value


def has_objects(value: object) -> bool:
    """Whether a value holds a file, stream or callback object anywhere."""
    if isinstance(value, (RequenceFile, RequenceStream, RequenceCallback)):
        return True
    if isinstance(value, dict):
        return any(has_objects(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_objects(item) for item in value)
    return False


def uploaded(answer: Mapping[str, Any], *, kind: str) -> tuple[str, str | None, int | None]:
    """``(url, mime, size)`` of an upload's answer; :class:`ValueError` saying what is
    missing. ``kind``: ``file`` (url, mime, size), ``stream`` (url, mime) or
    ``claim check`` (url, size)."""
    url = _usable_url(answer.get("url"))
    mime = answer.get("mime")
    size = _size(answer.get("size"))
    if url is None:
        raise ValueError("the answer lacks a non-empty string url")
    if kind in ("file", "stream") and not isinstance(mime, str):
        raise ValueError("the answer lacks a string mime")
    if kind in ("file", "claim check") and size is None:
        raise ValueError("the answer lacks an integer size")
    return url, mime if isinstance(mime, str) else None, size


def watch_body(
    *, since: str | None, last_position: int | None, only: list[str] | None = None
) -> bytes:
    """The body of a (re)connect of an update stream: where to resume, which types."""
    body: dict[str, Any] = {}
    if only is not None:
        body[WATCH_ALL_FILTER_KEY] = only
    body["since"] = since
    if last_position is not None:
        body["lastPosition"] = last_position
    return json.dumps(body).encode()


# --- An update as JSON -------------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


_BASE_FIELDS = frozenset(
    {"type", "task_id", "timestamp", "position", "update_id", "root_task_id", "context", "raw"}
    | {"incomplete"}
)


def update_to_json(update: Update) -> dict[str, Any]:
    """An update as a JSON object: type, taskId, position, timestamp, then its
    type's fields (camelCase; ``node`` as ``{id, type, alias}``); an
    ``UnknownUpdate`` adds its ``raw`` data. What ``requence-task`` prints."""
    found: dict[str, Any] = {
        "type": update.type,
        "taskId": update.task_id,
        "position": update.position,
        "timestamp": update.timestamp.isoformat(),
    }
    if update.root_task_id is not None:
        found["rootTaskId"] = update.root_task_id
    for field in attrs.fields(type(update)):
        if field.name in _BASE_FIELDS:
            continue
        value = getattr(update, field.name)
        if isinstance(value, NodeInfo):
            value = {"id": value.id, "type": value.type, "alias": value.alias}
        found[_camel(field.name)] = value
    if isinstance(update, UnknownUpdate):
        found["raw"] = update.raw
    return found
