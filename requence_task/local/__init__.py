"""A local Requence: the task API on loopback, for development and tests.

Templates are graphs of nodes (service, logic, Or and sub-task nodes) written
as plain Python functions; tasks and their
events live in SQLite. The server speaks the same wire API as Requence, so
this package's client and the official ``requence`` client both work against
it unchanged.

Example:
    >>> from requence_task.local import LocalRequence, Template, service
    >>> def greet(ctx):
    ...     return {"message": f"Hello, {ctx.input['name']}!"}
    >>> greeter = Template(
    ...     "my-template",
    ...     input_schema={"type": "object", "required": ["name"],
    ...                   "properties": {"name": {"type": "string"}}},
    ...     nodes=[service("greeter", greet)],
    ... )
    >>> with LocalRequence([greeter]) as rq:
    ...     token = rq.access_token
"""

from __future__ import annotations

try:
    import jsonschema  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the install
    raise ImportError(
        "requence_task.local needs the 'local' extra: pip install 'requence_task[local]'"
    ) from err

# The file objects that nodes get and send; the client package documents them
# (re-exported here, outside ``__all__``, for templates' convenience).
from .._files import RequenceFile as RequenceFile
from .._files import RequenceStream as RequenceStream
from ._faults import Faults
from ._server import DEFAULT_PROJECT, LocalRequence
from ._templates import (
    NodeContext,
    Output,
    TaskAbortedSignal,
    Template,
    TemplateError,
    first_of,
    logic,
    service,
    subtask,
)

__all__ = [
    "DEFAULT_PROJECT",
    "Faults",
    "LocalRequence",
    "NodeContext",
    "Output",
    "TaskAbortedSignal",
    "Template",
    "TemplateError",
    "first_of",
    "logic",
    "service",
    "subtask",
]

for _name in __all__:
    if _name != "DEFAULT_PROJECT":  # a str: no __module__
        globals()[_name].__module__ = __name__
