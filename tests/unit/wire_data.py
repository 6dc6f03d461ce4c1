"""Update data as the wire carries it, for the unit tests of the wire and the folds."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from requence_task._fold import ContextFolder
from requence_task._models import Update
from requence_task._protocol import (
    NODE_DEFER,
    NODE_END,
    NODE_ERROR,
    NODE_START,
    NODE_UPDATE,
    TASK_END,
    TASK_START,
)

TASK = "6f1c2a9e"
STAMP = "2025-05-02T09:14:03.120Z"
WHEN = datetime(2025, 5, 2, 9, 14, 3, 120000, tzinfo=timezone.utc)
OCR = {"id": "n2", "type": "service", "alias": "ocr"}


def wire(**fields: Any) -> dict[str, Any]:
    """Update data as the single-task stream sends it, with ``fields`` added."""
    return {"taskId": TASK, "timestamp": STAMP, "updateId": "u-1", **fields}


def fold_one(event_type: str, data: dict[str, Any], position: int | None = 7) -> Update:
    return ContextFolder().fold(event_type, data, position)


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
