"""``TaskResult`` built from a folded context, and ``result_as``. Pure unit tests, no server."""

from __future__ import annotations

import dataclasses
from typing import Any

import attrs
import cattrs
import pytest

from requence_task import RequenceError, ResultTypeError
from requence_task._fold import ContextFolder
from requence_task._models import (
    TaskResult,
)
from requence_task._protocol import (
    NODE_ERROR,
    NODE_UPDATE,
    TASK_END,
    TASK_START,
)

from .wire_data import OCR, TASK, wire

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
