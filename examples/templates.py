"""Example templates for the local Requence.

Serve them with ``requence-task local serve examples/templates.py``.
"""

from requence_task.local import Template, service


def greet(ctx):
    return {"message": f"Hello, {ctx.input['name']}!"}


def count(ctx):
    # A generator node: every yield is one live update.
    for step in range(1, 4):
        if ctx.wait(0.2):  # sleeps, but wakes at once if the task is aborted
            return
        yield {"step": step, "of": 3}


def shout(ctx):
    return {"message": ctx.node_data("greeter")["message"].upper()}


templates = [
    Template(
        "my-template",
        input_schema={
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}},
        },
        nodes=[
            service("greeter", greet),
            service("counter", count, after=["greeter"]),
            service("shouter", shout, after=["counter"]),
        ],
        result=lambda ctx: {
            "greeting": ctx.node_data("greeter")["message"],
            "shout": ctx.node_data("shouter")["message"],
        },
    ),
]
