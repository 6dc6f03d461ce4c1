"""Typed updates from the wire: each type field by field, timestamps, malformed data, the
wire converter and reprs. Pure unit tests, no server."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import cattrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from requence_task import _models, _wire
from requence_task._fold import ContextFolder
from requence_task._models import (
    NodeDeferUpdate,
    NodeEndUpdate,
    NodeErrorUpdate,
    NodeInfo,
    NodeStartUpdate,
    NodeUpdateUpdate,
    TaskAbortedUpdate,
    TaskContext,
    TaskEndUpdate,
    TaskErrorUpdate,
    TaskStartUpdate,
    UnknownUpdate,
    Update,
)
from requence_task._protocol import (
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
    UPDATE_TYPES,
)
from requence_task._wire import _WIRE, _WIRE_EXPLAINED, error_message, structure_update

from .wire_data import OCR, STAMP, TASK, WHEN, fold_one, realistic, wire

# --- each type, field by field ------------------------------------------------


def test_task_start() -> None:
    update = fold_one(TASK_START, wire(input={"customer": "ACME"}))
    assert type(update) is TaskStartUpdate
    assert update.type == TASK_START
    assert update.task_id == TASK
    assert update.timestamp == WHEN
    assert update.position == 7
    assert update.update_id == "u-1"
    assert update.root_task_id is None
    assert update.input == {"customer": "ACME"}
    assert update.raw == wire(input={"customer": "ACME"})
    assert not update.is_terminal


def test_node_start() -> None:
    update = fold_one(NODE_START, wire(node=OCR))
    assert type(update) is NodeStartUpdate
    assert update.type == NODE_START
    assert update.node == NodeInfo(id="n2", type="service", alias="ocr")


def test_node_update() -> None:
    update = fold_one(NODE_UPDATE, wire(node=OCR, data={"pages": 2}, output="pages"))
    assert type(update) is NodeUpdateUpdate
    assert update.type == NODE_UPDATE
    assert update.node == NodeInfo("n2", "service", "ocr")
    assert update.data == {"pages": 2}
    assert update.output == "pages"


def test_node_update_takes_any_json_data_and_a_missing_output() -> None:
    update = fold_one(NODE_UPDATE, wire(node=OCR, data=[1, "two"]))
    assert isinstance(update, NodeUpdateUpdate)
    assert update.data == [1, "two"]
    assert update.output is None


def test_node_error() -> None:
    node = {"id": "n3", "type": "logic", "alias": None}
    update = fold_one(NODE_ERROR, wire(node=node, error="SMTP refused"))
    assert type(update) is NodeErrorUpdate
    assert update.type == NODE_ERROR
    assert update.node == NodeInfo("n3", "logic", None)
    assert update.error == "SMTP refused"


def test_node_defer() -> None:
    update = fold_one(NODE_DEFER, wire(node=OCR, reason="waiting for a human"))
    assert type(update) is NodeDeferUpdate
    assert update.type == NODE_DEFER
    assert update.reason == "waiting for a human"
    assert isinstance(fold_one(NODE_DEFER, wire(node=OCR)), NodeDeferUpdate)


def test_node_end_and_an_unknown_node_type() -> None:
    update = fold_one(NODE_END, wire(node={"id": "n9", "type": "quantum", "alias": "q"}))
    assert type(update) is NodeEndUpdate
    assert update.type == NODE_END
    assert update.node == NodeInfo("n9", "quantum", "q")


def test_node_without_alias_key_has_none() -> None:
    update = fold_one(NODE_START, wire(node={"id": "n1", "type": "or"}))
    assert isinstance(update, NodeStartUpdate)
    assert update.node.alias is None


def test_task_end() -> None:
    update = fold_one(TASK_END, wire(result={"total": 99}, exit="paid", requireAck=True))
    assert type(update) is TaskEndUpdate
    assert update.type == TASK_END
    assert update.result == {"total": 99}
    assert update.exit == "paid"
    assert update.require_ack is True
    assert update.is_terminal


def test_task_error() -> None:
    update = fold_one(TASK_ERROR, wire(reason="node 'ocr' failed", requireAck=False))
    assert type(update) is TaskErrorUpdate
    assert update.type == TASK_ERROR
    assert update.reason == "node 'ocr' failed"
    assert update.require_ack is False
    assert update.is_terminal


def test_task_aborted() -> None:
    update = fold_one(TASK_ABORTED, wire(reason=None, requireAck=True))
    assert type(update) is TaskAbortedUpdate
    assert update.type == TASK_ABORTED
    assert update.reason is None
    assert update.require_ack is True
    assert update.is_terminal


def test_missing_optional_fields_have_defaults() -> None:
    before = datetime.now(timezone.utc)
    update = fold_one(TASK_END, {"taskId": TASK}, position=None)
    assert isinstance(update, TaskEndUpdate)
    assert update.result is None
    assert update.exit is None
    assert update.require_ack is False
    assert update.update_id is None
    assert update.root_task_id is None
    assert update.position is None
    # No timestamp: the time of receipt, aware.
    assert before <= update.timestamp <= datetime.now(timezone.utc)


def test_root_task_id_is_kept() -> None:
    update = fold_one(NODE_END, wire(node=OCR, rootTaskId="root-1"))
    assert update.root_task_id == "root-1"


def test_type_is_fixed_per_class() -> None:
    with pytest.raises(TypeError):
        TaskStartUpdate(type=TASK_END, task_id=TASK, timestamp=WHEN)  # type: ignore[call-arg]
    update = TaskStartUpdate(task_id=TASK, timestamp=WHEN, input=1)
    assert update.type == TASK_START
    # Built by hand, an update gets an empty context of its task.
    assert update.context == TaskContext(TASK)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        update.input = 2  # type: ignore[misc]


def test_every_protocol_type_has_a_class_and_terminal_ones_say_so() -> None:
    for event_type in UPDATE_TYPES:
        data = wire(node=OCR, error="e", input=None)
        update = fold_one(event_type, data)
        assert type(update) is not UnknownUpdate
        assert update.type == event_type
        assert update.is_terminal is (event_type in TERMINAL_UPDATE_TYPES)


# --- timestamps ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-05-02T09:14:03.120Z", WHEN),
        ("2025-05-02T09:14:03.120z", WHEN),
        ("2025-05-02T09:14:03.120000+00:00", WHEN),
        (
            "2025-05-02T11:14:03.120+02:00",
            datetime(2025, 5, 2, 11, 14, 3, 120000, tzinfo=timezone(timedelta(hours=2))),
        ),
        # Naive: the server's clock is UTC.
        ("2025-05-02T09:14:03.120", WHEN),
        ("2025-05-02T09:14:03", WHEN.replace(microsecond=0)),
        # Beyond what Python 3.10's fromisoformat reads.
        ("2025-05-02T09:14:03.1Z", WHEN.replace(microsecond=100000)),
        ("2025-05-02T09:14:03.1200000Z", WHEN),
        ("2025-05-02T09:14:03,12Z", WHEN),
        (
            "2025-05-02T04:14:03.12-0500",
            datetime(2025, 5, 2, 4, 14, 3, 120000, tzinfo=timezone(timedelta(hours=-5))),
        ),
        ("2025-05-02T11:14:03.12+02", WHEN.astimezone(timezone(timedelta(hours=2)))),
        ("2025-05-02", datetime(2025, 5, 2, tzinfo=timezone.utc)),
    ],
)
def test_timestamps(text: str, expected: datetime) -> None:
    update = fold_one(NODE_END, wire(node=OCR, timestamp=text))
    assert type(update) is NodeEndUpdate
    assert update.timestamp == expected
    assert update.timestamp.utcoffset() == expected.utcoffset()
    assert update.timestamp.tzinfo is not None


# --- malformed data -----------------------------------------------------------

SECRET = "s3cr3t-payload"

MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    (TASK_START, wire(timestamp=SECRET), "'timestamp' is not an ISO-8601 date-time"),
    (TASK_START, wire(taskId=[SECRET]), "'taskId' is an array, not a string"),
    (NODE_START, wire(node=[SECRET]), "'node' is an array, not an object"),
    (NODE_START, wire(node=None), "'node' is null, not an object"),
    (NODE_UPDATE, wire(node={"id": 2, "type": "service"}), "'node.id' is a number"),
    (NODE_UPDATE, wire(node=OCR, output={SECRET: 1}), "'output' is an object"),
    (NODE_ERROR, wire(node=OCR, error=None), "'error' is null, not a string"),
    (NODE_ERROR, wire(node={"id": "n", "type": None}, error=SECRET), "'node.type' is null"),
    (NODE_DEFER, wire(node=OCR, reason=[SECRET]), "'reason' is an array"),
    (NODE_END, wire(node={"id": "n", "type": "or", "alias": [SECRET]}), "'node.alias'"),
    (TASK_END, wire(result=SECRET, requireAck="yes"), "'requireAck' is a string"),
    (TASK_END, wire(updateId=17), "'updateId' is a number"),
    (TASK_ERROR, wire(reason=SECRET, timestamp=1746177243), "'timestamp' is a number"),
    (TASK_ERROR, wire(timestamp="2025-13-02T09:14:03Z"), "'timestamp' is not a valid"),
    (TASK_ERROR, wire(timestamp="2025-05-02T09:14:03+24:00"), "'timestamp' is not a valid"),
    (TASK_ABORTED, wire(rootTaskId=False), "'rootTaskId' is a boolean"),
    (TASK_ABORTED, {"timestamp": STAMP, "reason": SECRET}, "names no task"),
    (TASK_ABORTED, wire(taskId="", reason=SECRET), "'taskId' is empty: the update names no task"),
    # Where cattrs' own hooks would take a number for a string, or for a boolean.
    (NODE_UPDATE, wire(node=OCR, output=5), "'output' is a number, not a string or null"),
    (NODE_ERROR, wire(node=OCR, error=5), "'error' is a number, not a string"),
    (NODE_START, wire(node={"id": "n", "type": 5}), "'node.type' is a number, not a string"),
    (TASK_END, wire(exit=0, result=SECRET), "'exit' is a number, not a string or null"),
    (TASK_ERROR, wire(requireAck=1), "'requireAck' is a number, not a boolean"),
    (TASK_START, wire(taskId=6), "'taskId' is a number, not a string"),
    # Required fields missing.
    (NODE_START, wire(), "'node' is missing"),
    (NODE_ERROR, wire(node=OCR), "'error' is missing"),
    (NODE_END, wire(node={"type": "or", "alias": SECRET}), "'node.id' is missing"),
]


@pytest.mark.parametrize(("event_type", "data", "problem"), MALFORMED)
def test_malformed_data_becomes_unknown_with_a_warning(
    event_type: str, data: dict[str, Any], problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder = ContextFolder()
    with caplog.at_level(logging.WARNING, logger="requence_task"):
        update = folder.fold(event_type, data, 42)
    assert type(update) is UnknownUpdate
    assert update.type == event_type
    assert update.raw is data
    assert update.position == 42
    assert update.problem is not None and problem in update.problem
    assert update.timestamp.tzinfo is not None
    assert update.is_terminal is (event_type in TERMINAL_UPDATE_TYPES)
    assert update.context is folder.context  # folded as a no-op
    [record] = caplog.records
    assert record.name == "requence_task"
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert problem in message
    assert event_type in message
    assert "42" in message
    assert SECRET not in message


ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=8,
)
WIRE_KEYS = st.sampled_from(
    [
        "taskId",
        "task_id",
        "timestamp",
        "updateId",
        "rootTaskId",
        "node",
        "input",
        "data",
        "output",
        "error",
        "reason",
        "result",
        "exit",
        "requireAck",
        "id",
        "type",
        "alias",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    event_type=st.sampled_from([*UPDATE_TYPES, "somethingNew"]),
    data=st.dictionaries(WIRE_KEYS, ANY_JSON | st.dictionaries(WIRE_KEYS, ANY_JSON)) | ANY_JSON,
)
def test_fold_never_raises(event_type: str, data: Any) -> None:
    logging.getLogger("requence_task").disabled = True
    try:
        update = ContextFolder().fold(event_type, data, 1)
    finally:
        logging.getLogger("requence_task").disabled = False
    assert isinstance(update, Update)
    assert update.type == event_type
    assert update.timestamp.tzinfo is not None
    repr(update)


def test_malformed_data_keeps_what_can_be_read(caplog: pytest.LogCaptureFixture) -> None:
    data = wire(taskId="t-1", rootTaskId="r", node="n")
    update = ContextFolder().fold(NODE_START, data, 1)
    assert type(update) is UnknownUpdate
    assert (update.task_id, update.timestamp, update.update_id) == ("t-1", WHEN, "u-1")
    assert update.root_task_id == "r"


@pytest.mark.parametrize("data", [[1, 2], "text", None, 3])
def test_data_that_is_not_an_object(data: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="requence_task"):
        update = ContextFolder("t").fold(NODE_UPDATE, data, 5)
    assert type(update) is UnknownUpdate
    assert update.task_id == "t"
    assert update.raw == {}
    assert update.problem is not None and "not an object" in update.problem
    assert len(caplog.records) == 1


def test_malformed_after_valid_keeps_the_fold(caplog: pytest.LogCaptureFixture) -> None:
    folder = ContextFolder()
    good = folder.fold(NODE_UPDATE, wire(node=OCR, data=1), 1).context
    bad = folder.fold(NODE_UPDATE, wire(node=OCR, data=2, output=3), 2)
    assert type(bad) is UnknownUpdate
    assert bad.context is good
    assert folder.context.node_data == {"ocr": 1}


def test_every_problem_is_named(caplog: pytest.LogCaptureFixture) -> None:
    data = wire(node={"id": 2, "type": "or"}, output=[SECRET], updateId=False)
    with caplog.at_level(logging.WARNING, logger="requence_task"):
        update = fold_one(NODE_UPDATE, data)
    assert type(update) is UnknownUpdate
    assert update.problem is not None
    for problem in ("'node.id' is a number", "'output' is an array", "'updateId' is a boolean"):
        assert problem in update.problem
    [record] = caplog.records
    assert update.problem in record.getMessage()
    assert SECRET not in record.getMessage()


def test_a_bug_of_ours_is_passed_on_too(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(data: Any, cls: Any) -> Update:
        raise RuntimeError(SECRET)

    monkeypatch.setitem(_wire._STRUCTURE, NODE_END, (NodeEndUpdate, broken))
    with caplog.at_level(logging.WARNING, logger="requence_task"):
        update = fold_one(NODE_END, wire(node=OCR))
    assert type(update) is UnknownUpdate
    assert update.problem == "it could not be read (RuntimeError)"
    [record] = caplog.records
    assert SECRET not in record.getMessage()


def test_null_optional_fields_read_as_missing() -> None:
    before = datetime.now(timezone.utc)
    data = wire(timestamp=None, updateId=None, rootTaskId=None, exit=None, requireAck=None)
    update = fold_one(TASK_END, data)
    assert type(update) is TaskEndUpdate
    assert before <= update.timestamp <= datetime.now(timezone.utc)
    assert (update.update_id, update.root_task_id, update.exit) == (None, None, None)
    assert update.require_ack is False


def test_the_wire_cannot_supply_what_the_folder_does() -> None:
    folder = ContextFolder(TASK)
    started = folder.fold(TASK_START, wire(input=1), 1).context
    spoof = {
        "position": 99,
        "context": {"task_id": "x"},
        "raw": {},
        "incomplete": True,
        "type": TASK_END,
        _wire._POSITION: 99,
        _wire._CONTEXT: "x",
        _wire._RAW: {},
    }
    data = wire(node=OCR, **spoof)
    update = folder.fold(NODE_END, data, 3)
    assert type(update) is NodeEndUpdate
    assert update.type == NODE_END
    assert update.position == 3
    assert update.context is started
    assert update.raw is data
    assert update.incomplete is False
    # And the caller's dict is left as it came.
    assert data == wire(node=OCR, **spoof)


def test_structure_update_attaches_the_context_given() -> None:
    context = TaskContext("given", input=1)
    update = structure_update(TASK_START, {"input": 2}, None, context)
    assert type(update) is TaskStartUpdate
    assert update.task_id == "given"
    assert update.context is context


# --- the wire converter ---------------------------------------------------------

CLASS_OF: dict[str, type[Update]] = {
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


def every_field() -> dict[str, Any]:
    """Data with a value for every field of every type (each reads its own)."""
    return wire(
        rootTaskId="root-1",
        node=OCR,
        input={"customer": "ACME"},
        data=[1, "two"],
        output="pages",
        error="SMTP refused",
        reason="because",
        result={"total": 99},
        exit="paid",
        requireAck=True,
    )


def test_every_protocol_type_has_a_class_here() -> None:
    assert set(CLASS_OF) == set(UPDATE_TYPES)


@pytest.mark.parametrize("event_type", UPDATE_TYPES)
def test_structure_update_is_the_wire_converter(event_type: str) -> None:
    cls = CLASS_OF[event_type]
    data = every_field()
    expected = _WIRE.structure(data, cls)
    assert type(expected) is cls
    assert expected.task_id == TASK
    assert expected.timestamp == WHEN
    assert expected.update_id == "u-1"
    assert expected.root_task_id == "root-1"
    # Without a position and with the context the converter gives by default.
    assert structure_update(event_type, data, None, TaskContext(TASK)) == expected
    # What the caller supplies replaces those.
    context = TaskContext(TASK, input="folded")
    update = structure_update(event_type, data, 9, context)
    assert type(update) is cls
    assert update == attrs.evolve(expected, position=9, context=context)
    assert update.raw is data
    # The converter's own hook, as make_dict_structure_fn made it, is the one used.
    hook = _WIRE.get_structure_hook(cls)
    assert _wire._STRUCTURE[event_type] == (cls, hook)
    renames = {name: o.rename for name, o in hook.overrides.items()}  # type: ignore[attr-defined]
    assert renames["task_id"] == "taskId"
    assert renames["update_id"] == "updateId"
    assert renames["root_task_id"] == "rootTaskId"
    if "require_ack" in attrs.fields_dict(cls):
        assert renames["require_ack"] == "requireAck"


@pytest.mark.parametrize("event_type", UPDATE_TYPES)
def test_the_wire_converter_refuses_what_structure_update_does(event_type: str) -> None:
    # A string field given a number, in every type: for the converter an error,
    # for structure_update an UnknownUpdate.
    data = {**every_field(), "updateId": 5}
    with pytest.raises(Exception):  # noqa: B017 - the fast converter names no field
        _WIRE.structure(data, CLASS_OF[event_type])
    with pytest.raises(cattrs.ClassValidationError):
        _WIRE_EXPLAINED.structure(data, CLASS_OF[event_type])
    logging.getLogger("requence_task").disabled = True
    try:
        update = structure_update(event_type, data, 1, TaskContext(TASK))
    finally:
        logging.getLogger("requence_task").disabled = False
    assert type(update) is UnknownUpdate
    assert update.problem == "'updateId' is a number, not a string or null"


def test_the_wire_converter_is_strict_where_cattrs_is_lenient() -> None:
    lenient = cattrs.Converter()
    assert lenient.structure(5, str) == "5"
    assert lenient.structure("yes", bool) is True
    for converter in (_WIRE, _WIRE_EXPLAINED):
        assert converter.structure("5", str) == "5"
        assert converter.structure(None, str | None) is None  # type: ignore[arg-type]
        assert converter.structure(False, bool) is False
        for value, target in [(5, str), (5, str | None), ("yes", bool), (1, bool), (0, bool)]:
            with pytest.raises(ValueError, match="not a"):
                converter.structure(value, target)  # type: ignore[arg-type]


def test_the_converters_are_private() -> None:
    assert _WIRE is not cattrs.global_converter
    assert _WIRE_EXPLAINED is not cattrs.global_converter
    # The fast one for the stream; the detailed one only to explain a failure.
    assert _WIRE.detailed_validation is False
    assert _WIRE_EXPLAINED.detailed_validation is True
    # The users' types get a converter of their own: their hooks never reach the wire.
    assert _models._results not in (_WIRE, _WIRE_EXPLAINED, cattrs.global_converter)


# --- repr -----------------------------------------------------------------------


def test_reprs_never_show_raw() -> None:
    folder = ContextFolder()
    for t, d in [*realistic(), ("nodeTeleport", wire(x=1))]:
        d = {**d, "secretRawField": SECRET}
        update = folder.fold(t, d, 1)
        assert SECRET not in repr(update)
        assert "raw" not in repr(update)
        assert "secretRawField" in update.raw
    malformed = folder.fold(NODE_START, wire(node=None, secretRawField=SECRET), 2)
    assert SECRET not in repr(malformed)


def test_updates_compare_without_raw() -> None:
    a = fold_one(NODE_END, wire(node=OCR, extra=1))
    b = fold_one(NODE_END, wire(node=OCR, extra=2))
    assert a == b


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"message": "template not found"}', "template not found"),
        ('{"error": "bad input", "detail": "x"}', "bad input"),
        ('{"detail": "no such task"}', "no such task"),
        ('{"message": 7, "detail": "the string one"}', "the string one"),
        ('{"status": 404}', None),
        ("[1, 2]", None),
        ("{not json", None),
        ("plain words", None),
    ],
)
def test_error_message_reads_the_json_reason_only(body: str, message: str | None) -> None:
    assert error_message(body) == message
