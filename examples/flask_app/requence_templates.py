"""The task template this example's views start, for a local Requence.

Serve it from this directory with ``requence-task local serve requence_templates.py``.
"""

from requence_task.local import Template, service


def greet(ctx):
    # A second of work, so that a status request can see the task running.
    if ctx.wait(1.0):  # True: the task was aborted meanwhile
        return None
    return {"message": f"Hello, {ctx.input['name']}!"}


templates = [
    Template(
        "greeting",
        input_schema={
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}},
        },
        nodes=[service("greeter", greet)],
        result=lambda ctx: {"greeting": ctx.node_data("greeter")["message"]},
    ),
]
