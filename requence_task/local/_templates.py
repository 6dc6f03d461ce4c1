"""Templates and their service nodes, written as plain Python functions."""

from __future__ import annotations

import inspect
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import jsonschema

from .._protocol import LIVE_BRANCH

NodeFunction = Callable[["NodeContext"], Any]
ResultFunction = Callable[["NodeContext"], Any]

_NODE_TYPES = ("service", "logic", "or", "reference")


class TaskAbortedSignal(Exception):
    """Raised inside a node by :meth:`NodeContext.check_aborted` once the task is aborted.

    Nodes may let it propagate; the runner knows the task already ended as
    aborted and emits nothing more for it.
    """


@attrs.frozen
class Output:
    """A value for a *named* output: yield or return ``Output("name", data)``.

    The ``nodeUpdate`` then carries ``"output": "name"``; plain values carry
    ``"output": null``.
    """

    name: str
    data: Any


@attrs.frozen
class Node:
    """One node of a template; make it with :func:`service`."""

    alias: str
    function: NodeFunction
    after: tuple[str, ...] = ()
    optional: bool = False
    type: str = "service"


def service(
    alias: str,
    function: NodeFunction,
    *,
    after: Iterable[str] = (),
    optional: bool = False,
) -> Node:
    """Define a service node.

    Args:
        alias: The node's alias: the key of its data in the task's context.
        function: Called with a :class:`NodeContext`. Its return value becomes
            one ``nodeUpdate`` (``None`` sends none); a generator sends one
            ``nodeUpdate`` per yielded value.
        after: Aliases of the nodes that must finish before this one starts.
        optional: If true, an exception in this node emits ``nodeError`` but
            does not fail the task.

    Example:
        >>> node = service("greeter", lambda ctx: {"message": "hi"})
        >>> node.alias
        'greeter'
    """
    if not isinstance(alias, str) or not alias:
        raise ValueError("a node's alias must be a non-empty string")
    if not callable(function):
        raise TypeError(f"node {alias!r}: function must be callable, not {type(function).__name__}")
    if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
        raise TypeError(
            f"node {alias!r}: async functions are not supported; write a plain function "
            "(nodes run on worker threads, so blocking calls are fine)"
        )
    after_tuple = (after,) if isinstance(after, str) else tuple(after)
    return Node(alias=alias, function=function, after=after_tuple, optional=optional)


@attrs.define(eq=False)
class Template:
    """A task template: an input schema, nodes forming a DAG, and a result.

    Args:
        name: The template's name, as clients pass it to ``Task(...)``.
        nodes: The nodes; ``after=`` edges must form a DAG over their aliases.
            Nodes run one at a time, in an order that honours ``after=``
            (declaration order among independent nodes).
        input_schema: A JSON schema the task input must satisfy at finalize;
            ``None`` accepts any input.
        result: Called with a :class:`NodeContext` once every node ran; its
            value is the task's result. By default the data of the last node
            that produced any.
        branch: The branch reported by prepare; anything but ``"live"`` makes
            clients warn that the template runs on a development branch.

    Raises:
        ValueError: Duplicate aliases, an ``after`` naming no node, a cycle, or
            an invalid JSON schema; checked here, not when a task runs.
    """

    name: str
    nodes: Sequence[Node] = ()
    input_schema: Mapping[str, Any] | None = None
    result: ResultFunction | None = None
    branch: str = LIVE_BRANCH
    order: tuple[Node, ...] = attrs.field(init=False, repr=False)
    validator: jsonschema.protocols.Validator | None = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(
                f"a template's name must be a non-empty string without '/', got {self.name!r}"
            )
        self.order = _topological(self.name, list(self.nodes))
        self.validator = None
        if self.input_schema is not None:
            schema = dict(self.input_schema)
            cls = jsonschema.validators.validator_for(
                schema, default=jsonschema.Draft202012Validator
            )
            try:
                cls.check_schema(schema)
            except jsonschema.SchemaError as err:
                raise ValueError(
                    f"template {self.name!r}: input_schema is not a valid JSON schema: "
                    f"{err.message}"
                ) from err
            self.validator = cls(schema)

    def node_id(self, alias: str) -> str:
        """A stable id for a node of this template."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"requence-local:{self.name}:{alias}"))


def _topological(template: str, nodes: list[Node]) -> tuple[Node, ...]:
    by_alias: dict[str, Node] = {}
    for node in nodes:
        if not isinstance(node, Node):
            raise TypeError(
                f"template {template!r}: nodes must be made with service(), "
                f"not {type(node).__name__}"
            )
        if node.alias in by_alias:
            raise ValueError(f"template {template!r}: two nodes have the alias {node.alias!r}")
        by_alias[node.alias] = node
    for node in nodes:
        for dep in node.after:
            if dep not in by_alias:
                raise ValueError(
                    f"template {template!r}: node {node.alias!r} runs after {dep!r}, "
                    f"which is not a node of this template"
                )
    done: set[str] = set()
    order: list[Node] = []
    remaining = list(nodes)
    while remaining:
        ready = [n for n in remaining if all(d in done for d in n.after)]
        if not ready:
            cycle = ", ".join(repr(n.alias) for n in remaining)
            raise ValueError(f"template {template!r}: the nodes {cycle} form a cycle")
        first = ready[0]
        order.append(first)
        done.add(first.alias)
        remaining.remove(first)
    return tuple(order)


class NodeContext:
    """What a node (or a template's ``result``) sees of its task.

    Attributes:
        task_id: The task's id.
        input: The task's input, as validated at finalize, with its files and
            streams as ``RequenceFile`` / ``RequenceStream`` objects and its claim
            checks fetched.
        name: The task's name, or ``None``.
        alias: The alias of the running node (``None`` in ``result``).
    """

    def __init__(
        self,
        *,
        task_id: str,
        input: Any,
        name: str | None,
        abort_event: threading.Event,
        emit: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.task_id = task_id
        self.input = input
        self.name = name
        self.alias: str | None = None
        self._abort_event = abort_event
        self._emit = emit
        self._data: dict[str, Any] = {}
        self._errors: dict[str, str] = {}

    def node_data(self, alias: str, default: Any = None) -> Any:
        """The latest data an earlier node sent, by alias."""
        return self._data.get(alias, default)

    def node_error(self, alias: str) -> str | None:
        """The error message of an earlier (optional) node that failed."""
        return self._errors.get(alias)

    @property
    def aborted(self) -> bool:
        """True once the task was aborted, or the server is stopping; long nodes
        should return then (what they produce afterwards is discarded)."""
        return self._abort_event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on abort. Returns :attr:`aborted`."""
        return self._abort_event.wait(seconds)

    def check_aborted(self) -> None:
        """Raise :class:`TaskAbortedSignal` if the task was aborted."""
        if self._abort_event.is_set():
            raise TaskAbortedSignal()

    def defer(self, reason: str | None = None) -> None:
        """Send a ``nodeDefer`` update: this node waits for something outside."""
        if self._emit is None or self.alias is None:
            raise RuntimeError("defer() is only available inside a running node")
        self._emit("defer", {"reason": reason})
