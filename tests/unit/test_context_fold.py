"""A task's context folded from its updates (``_fold.ContextFolder``), by example and
against a reference model on random sequences. Pure unit tests, no server."""

from __future__ import annotations

import logging
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from requence_task._fold import ContextFolder
from requence_task._models import (
    NodeUpdateUpdate,
    TaskContext,
    TaskStartUpdate,
    UnknownUpdate,
)
from requence_task._protocol import (
    NODE_DEFER,
    NODE_END,
    NODE_ERROR,
    NODE_START,
    NODE_UPDATE,
    TASK_END,
    TASK_START,
    TERMINAL_UPDATE_TYPES,
    UPDATE_TYPES,
)

from .wire_data import OCR, STAMP, TASK, WHEN, realistic, wire

# --- folding ------------------------------------------------------------------


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
