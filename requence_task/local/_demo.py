"""The templates of ``requence-task demo``: a small greeting pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ._templates import NodeContext, Template, service


def _greet(ctx: NodeContext) -> dict[str, Any]:
    return {"message": f"Hello, {ctx.input['name']}!"}


def _count(ctx: NodeContext) -> Iterator[dict[str, Any]]:
    for step in range(1, 4):
        if ctx.wait(0.3):  # sleeps, but wakes at once if the task is aborted
            return
        yield {"step": step, "of": 3}


def _shout(ctx: NodeContext) -> dict[str, Any]:
    return {"message": ctx.node_data("greeter")["message"].upper()}


DEMO_TEMPLATES = [
    Template(
        "greeting",
        input_schema={
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}},
        },
        nodes=[
            service("greeter", _greet),
            service("counter", _count, after=["greeter"]),
            service("shouter", _shout, after=["counter"]),
        ],
        result=lambda ctx: {
            "greeting": ctx.node_data("greeter")["message"],
            "shout": ctx.node_data("shouter")["message"],
        },
    ),
]
