"""Example templates for the local Requence.

Serve them with ``requence-task local serve examples/templates.py``.
"""

from requence_task import RequenceFile, RequenceStream
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


def count_words(ctx):
    # A file in the input is a RequenceFile: read it like any file.
    text = ctx.input["document"].text()
    counts = {}
    for word in text.split():
        counts[word.lower()] = counts.get(word.lower(), 0) + 1
    report = "\n".join(f"{word}\t{n}" for word, n in sorted(counts.items()))
    # A file in the output: the local Requence stores it and sends a reference.
    return {
        "words": len(text.split()),
        "report": RequenceFile(
            report.encode(), mime="text/tab-separated-values", name="report.tsv"
        ),
    }


def export_lines(ctx):
    text = ctx.input["document"].text()

    def lines():
        for number, line in enumerate(text.splitlines(), 1):
            yield f"{number},{line}\n".encode()

    # A stream in the output: readers get its bytes while it is written.
    return {"lines": RequenceStream(lines(), mime="text/csv", name="lines.csv")}


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
    Template(
        "word-count",
        input_schema={"type": "object", "required": ["document"]},
        nodes=[
            service("counter", count_words),
            service("exporter", export_lines),
        ],
        result=lambda ctx: {
            "words": ctx.node_data("counter")["words"],
            "report": ctx.node_data("counter")["report"],
            "lines": ctx.node_data("exporter")["lines"],
        },
    ),
]
