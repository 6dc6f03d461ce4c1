"""Templates the local-server tests run. Importable by tests and subprocesses."""

from __future__ import annotations

import threading
from typing import Any

from requence_task.local import (
    NodeContext,
    Output,
    RequenceFile,
    RequenceStream,
    Template,
    logic,
    service,
    subtask,
)

# Tests open a gate to let a "gated" task finish; one gate per task input key.
GATES: dict[str, threading.Event] = {}


def gate(key: str) -> threading.Event:
    return GATES.setdefault(key, threading.Event())


def greet(ctx: NodeContext) -> dict[str, Any]:
    return {"message": f"Hello, {ctx.input['name']}!"}


def count(ctx: NodeContext) -> Any:
    for i in range(int(ctx.input.get("steps", 3)) if isinstance(ctx.input, dict) else 3):
        yield {"step": i + 1}


def boom(ctx: NodeContext) -> None:
    raise RuntimeError("the boiler exploded")


def wait_for_gate(ctx: NodeContext) -> dict[str, Any]:
    # Waits until a test opens the gate named by the input, or the task is aborted.
    event = gate(ctx.input["gate"])
    while not event.wait(0.02):
        if ctx.aborted:
            return {"aborted": True}
    return {"opened": ctx.input["gate"]}


def many(ctx: NodeContext) -> Any:
    for i in range(int(ctx.input["n"])):
        yield {"i": i}


def deferring(ctx: NodeContext) -> Any:
    ctx.defer("waiting for a human")
    yield Output("approved", {"ok": True})


def not_json(ctx: NodeContext) -> Any:
    return {"when": object()}


def files_round_trip(ctx: NodeContext) -> dict[str, Any]:
    # A file and a stream in, a file and a stream out (for the official client).
    doc, chunks = ctx.input["doc"], ctx.input["chunks"]
    return {
        "upper": RequenceFile(doc.read().upper(), mime=doc.mime),
        "doc_size": doc.size,
        "doc_mime": doc.mime,
        "stream_text": chunks.read().decode(),
        "lines": RequenceStream(iter([b"one\n", b"two\n"]), mime="text/plain"),
    }


def big_echo(ctx: NodeContext) -> dict[str, Any]:
    rows = ctx.input["rows"]
    return {"count": len(rows), "rows": rows}


def mail(ctx: NodeContext) -> dict[str, Any]:
    if ctx.input.get("mail_fails"):
        raise RuntimeError("the mail server is down")
    return {"mailed": ctx.node_data("invoice")["total"]}


def branch(ctx: NodeContext) -> Any:
    # Three updates, pausing between them, so that two branches interleave.
    for step in range(3):
        ctx.wait(0.05)
        yield {"step": step, "alias": ctx.alias}


TEMPLATES = [
    Template(
        "two-branches",
        nodes=[service("left", branch), service("right", branch)],
        result=lambda ctx: {"left": ctx.node_data("left"), "right": ctx.node_data("right")},
    ),
    # A sub-task and an on-fail branch (the official client runs it).
    Template(
        "invoice",
        nodes=[
            logic("paid", lambda ctx: ctx.input["total"] > 0),
            service("bill", lambda ctx: {"total": ctx.input["total"]}, after="paid"),
            service("free", lambda ctx: {"total": 0}, after="paid:false"),
        ],
        exits={"billed": ["bill"], "free": ["free"]},
    ),
    Template(
        "order",
        nodes=[
            subtask("invoice", "invoice", input=lambda ctx: {"total": ctx.input["total"]}),
            service("mail", mail, after="invoice:billed", on_fail="notify_ops"),
            service("notify_ops", lambda ctx: {"told": ctx.node_error("mail")}),
        ],
        exits={"done": ["mail"], "rejected": ["notify_ops"]},
    ),
    Template(
        "greet",
        input_schema={
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        },
        nodes=[service("greeter", greet), service("counter", count, after=["greeter"])],
        result=lambda ctx: ctx.node_data("greeter"),
    ),
    Template("echo", nodes=[service("echo", lambda ctx: {"input": ctx.input})]),
    Template("fail", nodes=[service("first", greet), service("boom", boom, after=["first"])]),
    Template(
        "optional-fail",
        nodes=[
            service("boom", boom, optional=True),
            service("after", lambda ctx: {"saw_error": ctx.node_error("boom")}, after=["boom"]),
        ],
    ),
    Template("gated", nodes=[service("wait", wait_for_gate)]),
    Template("many", nodes=[service("many", many)]),
    Template("defer", nodes=[service("defer", deferring)]),
    Template("not-json", nodes=[service("bad", not_json)]),
    Template("dev-branch", nodes=[service("echo", lambda ctx: 1)], branch="feature-x"),
    Template("files-round-trip", nodes=[service("files", files_round_trip)]),
    Template("big-echo", nodes=[service("big", big_echo)]),
]
