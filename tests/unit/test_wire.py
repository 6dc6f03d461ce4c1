"""Typed updates and the context folded from them: pure unit tests, no server."""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import cattrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from requence_task import RequenceError, ResultTypeError, _models, _wire
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
    TaskResult,
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
from requence_task._wire import _WIRE, _WIRE_EXPLAINED, structure_update

TASK = "6f1c2a9e"
STAMP = "2025-05-02T09:14:03.120Z"
WHEN = datetime(2025, 5, 2, 9, 14, 3, 120000, tzinfo=timezone.utc)
OCR = {"id": "n2", "type": "service", "alias": "ocr"}


def wire(**fields: Any) -> dict[str, Any]:
    """Update data as the single-task stream sends it, with ``fields`` added."""
    return {"taskId": TASK, "timestamp": STAMP, "updateId": "u-1", **fields}


def fold_one(event_type: str, data: dict[str, Any], position: int | None = 7) -> Update:
    return ContextFolder().fold(event_type, data, position)


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


# --- folding ------------------------------------------------------------------


def realistic() -> list[tuple[str, dict[str, Any]]]:
    ocr = OCR
    mailer = {"id": "n3", "type": "service", "alias": "mailer"}
    gate = {"id": "n4", "type": "or", "alias": None}
    return [
        (TASK_START, wire(input={"customer": "ACME"})),
        (NODE_START, wire(node=ocr)),
        (NODE_UPDATE, wire(node=ocr, data={"pages": 1}, output=None)),
        (NODE_START, wire(node=mailer)),
        (NODE_UPDATE, wire(node=mailer, data="queued", output="status")),
        (NODE_UPDATE, wire(node=ocr, data={"pages": 2}, output=None)),
        (NODE_UPDATE, wire(node=gate, data="ignored: no alias", output=None)),
        (NODE_DEFER, wire(node=mailer, reason="SMTP greylisting")),
        (NODE_ERROR, wire(node=mailer, error="SMTP refused")),
        (NODE_ERROR, wire(node=gate, error="ignored: no alias")),
        (NODE_END, wire(node=ocr)),
        (TASK_END, wire(result={"total": 99}, exit=None, requireAck=False)),
    ]


def test_context_folds_a_realistic_sequence() -> None:
    folder = ContextFolder(TASK)
    updates = [folder.fold(t, d, p) for p, (t, d) in enumerate(realistic(), start=100)]
    final = updates[-1].context
    assert final is folder.context
    assert final.task_id == TASK
    assert final.input == {"customer": "ACME"}
    assert final.result == {"total": 99}
    assert dict(final.node_data) == {"ocr": {"pages": 2}, "mailer": "queued"}
    # Aliases keep the order in which they first sent data.
    assert list(final.node_data) == ["ocr", "mailer"]
    assert dict(final.node_errors) == {"mailer": "SMTP refused"}
    assert final.get_node_data("ocr") == {"pages": 2}
    assert final.get_node_data("nobody") is None
    assert final.get_node_data("nobody", default={}) == {}
    assert final.get_node_error("mailer") == "SMTP refused"
    assert final.get_node_error("ocr") is None
    # Each update carries the context after it.
    assert updates[0].context.input == {"customer": "ACME"}
    assert updates[0].context.node_data == {}
    assert updates[2].context.node_data == {"ocr": {"pages": 1}}
    assert updates[5].context.node_data == {"ocr": {"pages": 2}, "mailer": "queued"}
    assert updates[10].context.result is None
    assert [u.position for u in updates] == list(range(100, 112))


def test_earlier_contexts_are_not_changed_by_later_folds() -> None:
    folder = ContextFolder()
    seen: list[tuple[TaskContext, dict[str, Any]]] = []
    for t, d in realistic():
        context = folder.fold(t, d, None).context
        snapshot = {
            "input": context.input,
            "result": context.result,
            "node_data": dict(context.node_data),
            "node_errors": dict(context.node_errors),
        }
        seen.append((context, snapshot))
    for context, snapshot in seen:
        assert context.input == snapshot["input"]
        assert context.result == snapshot["result"]
        assert dict(context.node_data) == snapshot["node_data"]
        assert dict(context.node_errors) == snapshot["node_errors"]


def test_contexts_are_read_only_and_shared_when_unchanged() -> None:
    folder = ContextFolder(TASK)
    first = folder.fold(NODE_UPDATE, wire(node=OCR, data=1), 1).context
    with pytest.raises(TypeError):
        first.node_data["ocr"] = 2  # type: ignore[index]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        first.input = 3  # type: ignore[misc]
    # Copy-on-write: updates that change nothing share the context object.
    assert folder.fold(NODE_END, wire(node=OCR), 2).context is first
    after_error = folder.fold(NODE_ERROR, wire(node=OCR, error="x"), 3).context
    assert after_error is not first
    assert after_error.node_data is first.node_data


def test_a_context_built_by_hand_copies_its_mappings() -> None:
    data = {"a": 1}
    context = TaskContext("t", node_data=data)
    data["a"] = 2
    assert context.get_node_data("a") == 1
    with pytest.raises(TypeError):
        context.node_data["a"] = 3  # type: ignore[index]


def test_watch_all_data_with_task_id_only() -> None:
    folder = ContextFolder()
    data = {"task_id": "t-9", "rootTaskId": "root-1", "timestamp": STAMP, "input": 5}
    update = folder.fold(TASK_START, data, 3)
    assert type(update) is TaskStartUpdate
    assert update.task_id == "t-9"
    assert update.root_task_id == "root-1"
    assert folder.task_id == "t-9"
    assert update.context == TaskContext("t-9", input=5)
    both = {"taskId": "t-9", "task_id": "t-9", "timestamp": STAMP, "node": OCR, "data": 1}
    assert folder.fold(NODE_UPDATE, both, 4).context.node_data == {"ocr": 1}


def test_a_folder_with_a_task_id_fills_it_in() -> None:
    folder = ContextFolder("known")
    update = folder.fold(NODE_UPDATE, {"node": OCR, "data": 1}, 1)
    assert type(update) is NodeUpdateUpdate
    assert update.task_id == "known"
    assert update.context.task_id == "known"
    assert update.context.node_data == {"ocr": 1}


def test_updates_of_another_task_pass_through_unfolded() -> None:
    folder = ContextFolder(TASK)
    folder.fold(TASK_START, wire(input=1), 1)
    other = folder.fold(NODE_UPDATE, wire(taskId="sub", node=OCR, data=2, rootTaskId=TASK), 2)
    assert type(other) is NodeUpdateUpdate
    assert other.task_id == "sub"
    assert other.context is folder.context
    assert folder.context == TaskContext(TASK, input=1)


def test_unknown_type_is_passed_on_and_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    folder = ContextFolder(TASK)
    before = folder.fold(TASK_START, wire(input=1), 1).context
    with caplog.at_level(logging.WARNING, logger="requence_task"):
        update = folder.fold("nodeTeleport", wire(node=OCR, whatever=[1]), 2)
    assert type(update) is UnknownUpdate
    assert update.type == "nodeTeleport"
    assert update.problem is None
    assert update.task_id == TASK
    assert update.timestamp == WHEN
    assert update.update_id == "u-1"
    assert update.raw == wire(node=OCR, whatever=[1])
    assert update.context is before
    assert folder.context is before
    assert not update.is_terminal
    assert caplog.records == []


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


# --- results --------------------------------------------------------------------


@attrs.frozen
class Line:
    sku: str
    qty: int


@attrs.frozen
class Invoice:
    total: int
    lines: list[Line]


@dataclasses.dataclass
class Receipt:
    total: int
    paid: bool = False


def result_of(value: Any) -> TaskResult:
    folder = ContextFolder(TASK)
    folder.fold(TASK_START, wire(input={"customer": "ACME"}), 1)
    folder.fold(NODE_UPDATE, wire(node=OCR, data={"pages": 2}), 2)
    folder.fold(NODE_ERROR, wire(node={**OCR, "alias": "mailer"}, error="SMTP refused"), 3)
    end = folder.fold(TASK_END, wire(result=value), 4)
    return TaskResult.from_context(end.context, task_url="http://x/tasks/6f1c2a9e")


def test_task_result_from_context() -> None:
    result = result_of({"total": 99})
    assert result.task_id == TASK
    assert result.task_url == "http://x/tasks/6f1c2a9e"
    assert result.input == {"customer": "ACME"}
    assert result.result == {"total": 99}
    assert result.get_node_data("ocr") == {"pages": 2}
    assert result.get_node_data("none", 0) == 0
    assert result.get_node_error("mailer") == "SMTP refused"
    assert result.get_node_error("ocr") is None
    with pytest.raises(TypeError):
        result.node_data["x"] = 1  # type: ignore[index]


def test_result_as_attrs_class() -> None:
    value = {"total": 99, "lines": [{"sku": "A", "qty": 2}], "note": "extra keys are fine"}
    invoice = result_of(value).result_as(Invoice)
    assert invoice == Invoice(total=99, lines=[Line("A", 2)])


def test_result_as_dataclass() -> None:
    assert result_of({"total": 5}).result_as(Receipt) == Receipt(total=5)


def test_result_as_container() -> None:
    assert result_of([1, "2", 3]).result_as(list[int]) == [1, 2, 3]
    assert result_of({"a": 1}).result_as(dict[str, int]) == {"a": 1}


def test_result_as_mismatch_names_the_field() -> None:
    value = {"total": "ninety-nine", "lines": [{"sku": "A"}]}
    with pytest.raises(ResultTypeError) as caught:
        result_of(value).result_as(Invoice)
    err = caught.value
    assert isinstance(err, ValueError)
    assert isinstance(err, RequenceError)
    message = str(err)
    assert TASK in message
    assert "Invoice" in message
    assert "result.total" in message
    assert "expected int" in message
    assert "result.lines[0].qty" in message
    assert "required field missing" in message
    assert err.target is Invoice
    assert len(err.errors) == 2
    assert isinstance(err.cause, cattrs.ClassValidationError)
    assert err.__cause__ is err.cause


def test_result_as_mismatch_of_a_container() -> None:
    with pytest.raises(ResultTypeError, match=r"list\[int\].*result\[1\]"):
        result_of([1, "x"]).result_as(list[int])
    with pytest.raises(ResultTypeError, match="expected int"):
        result_of(None).result_as(int)


def test_result_as_with_own_converter() -> None:
    converter = cattrs.Converter()
    converter.register_structure_hook(Receipt, lambda value, _: Receipt(total=len(value)))
    assert result_of("abc").result_as(Receipt, converter=converter) == Receipt(total=3)
    # The package's own converter did not get that hook.
    with pytest.raises(ResultTypeError):
        result_of("abc").result_as(Receipt)


def test_result_as_a_type_cattrs_cannot_build() -> None:
    class Opaque:
        def __init__(self, x: int) -> None:
            self.x = x

    with pytest.raises(TypeError, match="Opaque"):
        result_of({"x": 1}).result_as(Opaque)


# --- random sequences against a reference model -------------------------------

ALIASES = st.sampled_from(["ocr", "mailer", "gate", "Ω", None])
NODE_TYPES = st.sampled_from(["service", "logic", "or", "reference"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)
OPTIONAL_TEXT = st.none() | st.text(max_size=8)


@st.composite
def events(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    event_type = draw(st.sampled_from(UPDATE_TYPES))
    data: dict[str, Any] = {"taskId": TASK, "timestamp": STAMP}
    if event_type in (NODE_START, NODE_UPDATE, NODE_ERROR, NODE_DEFER, NODE_END):
        alias = draw(ALIASES)
        data["node"] = {"id": f"id-{alias}", "type": draw(NODE_TYPES), "alias": alias}
    if event_type == TASK_START:
        data["input"] = draw(JSON)
    elif event_type == NODE_UPDATE:
        data["data"] = draw(JSON)
        data["output"] = draw(OPTIONAL_TEXT)
    elif event_type == NODE_ERROR:
        data["error"] = draw(st.text(max_size=8))
    elif event_type == NODE_DEFER:
        data["reason"] = draw(OPTIONAL_TEXT)
    elif event_type == TASK_END:
        data["result"] = draw(JSON)
        data["exit"] = draw(OPTIONAL_TEXT)
    if event_type in TERMINAL_UPDATE_TYPES:
        data["requireAck"] = draw(st.booleans())
        if event_type != TASK_END:
            data["reason"] = draw(OPTIONAL_TEXT)
    if draw(st.booleans()):
        data["updateId"] = draw(st.text(max_size=4))
    return event_type, data


def reference_fold(model: dict[str, Any], event_type: str, data: dict[str, Any]) -> None:
    """docs/protocol.md's folding table, as plainly as it can be written."""
    alias = data.get("node", {}).get("alias")
    if event_type == TASK_START:
        model["input"] = data["input"]
    elif event_type == NODE_UPDATE and alias is not None:
        model["node_data"][alias] = data["data"]
    elif event_type == NODE_ERROR and alias is not None:
        model["node_errors"][alias] = data["error"]
    elif event_type == TASK_END:
        model["result"] = data["result"]


@settings(max_examples=200, deadline=None)
@given(st.lists(events(), max_size=30))
def test_folding_random_sequences_matches_the_reference(
    sequence: list[tuple[str, dict[str, Any]]],
) -> None:
    folder = ContextFolder()
    model: dict[str, Any] = {"input": None, "result": None, "node_data": {}, "node_errors": {}}
    history: list[tuple[TaskContext, dict[str, Any]]] = []
    for position, (event_type, data) in enumerate(sequence):
        update = folder.fold(event_type, data, position)
        assert type(update) is not UnknownUpdate
        assert update.type == event_type
        reference_fold(model, event_type, data)
        context = update.context
        expected = {
            "input": model["input"],
            "result": model["result"],
            "node_data": dict(model["node_data"]),
            "node_errors": dict(model["node_errors"]),
        }
        assert context.input == expected["input"]
        assert context.result == expected["result"]
        assert list(context.node_data.items()) == list(expected["node_data"].items())
        assert list(context.node_errors.items()) == list(expected["node_errors"].items())
        history.append((context, expected))
    for context, expected in history:
        assert list(context.node_data.items()) == list(expected["node_data"].items())
        assert list(context.node_errors.items()) == list(expected["node_errors"].items())
