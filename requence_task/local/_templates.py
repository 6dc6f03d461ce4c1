"""Templates and their nodes (service, logic, Or, sub-task), written as plain Python functions."""

from __future__ import annotations

import inspect
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import jsonschema

from .._errors import ConfigurationError
from .._protocol import LIVE_BRANCH

NodeFunction = Callable[["NodeContext"], Any]
ResultFunction = Callable[["NodeContext"], Any]
InputFunction = Callable[["NodeContext"], Any]


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


ON_FAIL = "onFail"
"""The output name of a node's "on fail" edge (``after="alias:onFail"``)."""

LOGIC_TRUE, LOGIC_FALSE = "true", "false"
"""A logic node's two outputs; ``after="alias"`` means its ``"true"`` output."""

DEFAULT_MAX_PARALLEL = 4


class TemplateError(ConfigurationError):
    """A template's definition is wrong; raised when it is made or the server starts.

    Attributes:
        template: The template's name.
        node: The alias of the node at fault, if one is.
    """

    def __init__(self, template: str, node: str | None, problem: str) -> None:
        about = f"node {node!r}"
        if node is not None and not problem.startswith(about):
            problem = f"{about}: {problem}"
        super().__init__(f"template {template!r}: {problem}")
        self.template = template
        self.node = node


@attrs.frozen
class Edge:
    """An incoming edge of a node: ``source``'s ``output`` (``None``: its default one)."""

    source: str
    output: str | None = None

    def __str__(self) -> str:
        return self.source if self.output is None else f"{self.source}:{self.output}"


@attrs.frozen
class Node:
    """One node of a template; make it with :func:`service`, :func:`logic`,
    :func:`first_of` or :func:`subtask`."""

    alias: str
    function: NodeFunction | None
    after: tuple[str, ...] = ()
    optional: bool = False
    type: str = "service"
    on_fail: str | None = None
    template: str | None = None  # a sub-task's template
    input: InputFunction | None = None  # a sub-task's input

    @property
    def inputs(self) -> tuple[Edge, ...]:
        """The ``after=`` edges, parsed (``"alias"`` or ``"alias:output"``)."""
        return tuple(_edge(text) for text in self.after)


def _edge(text: str) -> Edge:
    source, sep, output = text.partition(":")
    return Edge(source, output if sep else None)


def _alias(alias: object) -> str:
    if not isinstance(alias, str) or not alias:
        raise ValueError("a node's alias must be a non-empty string")
    if ":" in alias:
        raise ValueError(
            f"node {alias!r}: an alias may not contain ':' (after='alias:output' names an output)"
        )
    return alias


def _after(alias: str, after: Iterable[str] | str) -> tuple[str, ...]:
    edges = (after,) if isinstance(after, str) else tuple(after)
    for edge in edges:
        if not isinstance(edge, str) or not edge or edge.startswith(":"):
            raise ValueError(
                f"node {alias!r}: after= takes aliases ('alias' or 'alias:output'), got {edge!r}"
            )
    return edges


def _on_fail(alias: str, on_fail: str | None) -> str | None:
    if on_fail is not None and (not isinstance(on_fail, str) or not on_fail):
        raise ValueError(f"node {alias!r}: on_fail= takes the alias of a node, got {on_fail!r}")
    return on_fail


def _plain_function(alias: str, function: object, what: str) -> None:
    if not callable(function):
        raise TypeError(f"node {alias!r}: {what} must be callable, not {type(function).__name__}")
    if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
        raise TypeError(
            f"node {alias!r}: async functions are not supported; write a plain function "
            "(nodes run on worker threads, so blocking calls are fine)"
        )


def service(
    alias: str,
    function: NodeFunction,
    *,
    after: Iterable[str] | str = (),
    on_fail: str | None = None,
    optional: bool = False,
) -> Node:
    """Define a service node.

    Args:
        alias: The node's alias: the key of its data in the task's context.
        function: Called with a :class:`NodeContext`. Its return value becomes
            one ``nodeUpdate`` (``None`` sends none); a generator sends one
            ``nodeUpdate`` per yielded value; :class:`Output` names the output.
        after: The node's inputs: aliases of the nodes that must all finish
            before it starts (AND). ``"alias:output"`` waits for that named
            output of the node (``"check:false"`` for a logic node's false
            branch, ``"invoice:paid"`` for a sub-task's exit ``paid``).
        on_fail: The alias of the node that runs if this one raises: its
            ``nodeError`` is sent and the task goes on there. Without it (and
            without ``optional``), an error ends the task at once.
        optional: If true, an exception in this node emits ``nodeError`` and
            the task goes on as if the node had finished.

    Example:
        >>> node = service("greeter", lambda ctx: {"message": "hi"})
        >>> node.alias, node.type
        ('greeter', 'service')
    """
    _alias(alias)
    _plain_function(alias, function, "function")
    return Node(
        alias=alias,
        function=function,
        after=_after(alias, after),
        optional=optional,
        on_fail=_on_fail(alias, on_fail),
    )


def logic(
    alias: str,
    condition: Callable[[NodeContext], Any],
    *,
    after: Iterable[str] | str = (),
    on_fail: str | None = None,
) -> Node:
    """Define a logic node: a condition that picks a branch.

    ``condition(ctx)`` is true or false; the node sends one ``nodeUpdate``
    (``data`` = the truth value, ``output`` = ``"true"`` or ``"false"``) and
    ends. Nodes ``after="alias"`` (or ``"alias:true"``) run when it was true,
    nodes ``after="alias:false"`` when it was false; the other branch does not
    run.

    Example:
        >>> node = logic("big", lambda ctx: ctx.input["n"] > 10)
        >>> node.type
        'logic'
    """
    _alias(alias)
    _plain_function(alias, condition, "condition")
    return Node(
        alias=alias,
        function=condition,
        after=_after(alias, after),
        type="logic",
        on_fail=_on_fail(alias, on_fail),
    )


def first_of(alias: str, *, after: Iterable[str] | str) -> Node:
    """Define an Or node: it fires on the first of its inputs to arrive.

    The node starts and ends as soon as one input arrives; the others are
    ignored. It needs at least two inputs.

    Example:
        >>> first_of("either", after=["fast", "slow"]).type
        'or'
    """
    _alias(alias)
    return Node(alias=alias, function=None, after=_after(alias, after), type="or")


def subtask(
    alias: str,
    template: str,
    *,
    input: InputFunction | None = None,
    after: Iterable[str] | str = (),
    on_fail: str | None = None,
) -> Node:
    """Define a sub-task node: it runs a task of another template.

    The sub-task is a task of its own (its own id, stream and page; on the
    watch-all stream its updates carry the root task's id as ``rootTaskId``).
    When it succeeds, the node sends its result as ``nodeUpdate`` data, with
    the sub-task's exit as the output (``after="alias:exit"``), and ends;
    when it fails or is aborted, the node fails (``on_fail`` applies).
    Aborting the task aborts its sub-tasks.

    Args:
        alias: The node's alias.
        template: The sub-task's template, by name (checked when the server
            starts).
        input: Called with a :class:`NodeContext`; returns the sub-task's
            input. By default the task's own input.

    Example:
        >>> subtask("invoice", "invoice", input=lambda ctx: {"total": 3}).type
        'reference'
    """
    _alias(alias)
    if not isinstance(template, str) or not template:
        raise ValueError(f"node {alias!r}: template= takes a template's name, got {template!r}")
    if input is not None:
        _plain_function(alias, input, "input")
    return Node(
        alias=alias,
        function=None,
        after=_after(alias, after),
        type="reference",
        on_fail=_on_fail(alias, on_fail),
        template=template,
        input=input,
    )


@attrs.define(eq=False)
class Template:
    """A task template: an input schema, nodes forming a graph, exits and a result.

    A task starts at the nodes without inputs. A node starts once all of its
    inputs arrived (an Or node: the first one); independent branches run at
    the same time, at most ``max_parallel`` nodes of one task at once (and
    never more than the server's ``concurrency``).

    Args:
        name: The template's name, as clients pass it to ``Task(...)``.
        nodes: The nodes; their ``after=`` and ``on_fail=`` edges must form a
            graph without cycles over their aliases.
        input_schema: A JSON schema the task input must satisfy at finalize;
            ``None`` accepts any input.
        result: Called with a :class:`NodeContext` when the task ends; its
            value is the task's result (``ctx.exit`` names the exit). By
            default the data of the last node that produced any (of the exit's
            nodes, when the task ended through an exit).
        branch: The branch reported by prepare; anything but ``"live"`` makes
            clients warn that the template runs on a development branch.
        exits: Exit names to the nodes that must all have finished for the
            task to end there (``taskEnd.exit`` names it). The task ends at the
            first exit reached, stopping what still runs; if none can be
            reached any more it fails. Without exits the task ends when no
            node runs or can start.
        continuous: A continuous task does not end when its nodes are done:
            it runs until aborted (or until it reaches an exit, if it has
            any).
        max_parallel: How many nodes of one task may run at once.

    Raises:
        TemplateError: Duplicate aliases, an edge naming no node, a cycle, an
            on-fail target that is also an ordinary successor, an Or node with
            fewer than two inputs, an exit naming no node, an invalid JSON
            schema; checked here, not when a task runs (sub-task templates are
            checked when the server starts).
    """

    name: str
    nodes: Sequence[Node] = ()
    input_schema: Mapping[str, Any] | None = None
    result: ResultFunction | None = None
    branch: str = LIVE_BRANCH
    exits: Mapping[str, Sequence[str]] | None = None
    continuous: bool = False
    max_parallel: int = DEFAULT_MAX_PARALLEL
    order: tuple[Node, ...] = attrs.field(init=False, repr=False)
    by_alias: dict[str, Node] = attrs.field(init=False, repr=False)
    step: dict[str, int] = attrs.field(init=False, repr=False)  # alias -> place in order
    successors: dict[str, tuple[tuple[Edge, str], ...]] = attrs.field(init=False, repr=False)
    _incoming: dict[str, tuple[Edge, ...]] = attrs.field(init=False, repr=False)
    validator: jsonschema.protocols.Validator | None = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(
                f"a template's name must be a non-empty string without '/', got {self.name!r}"
            )
        if not isinstance(self.max_parallel, int) or self.max_parallel < 1:
            raise TemplateError(
                self.name,
                None,
                f"max_parallel must be a positive integer, got {self.max_parallel!r}",
            )
        self.order = _check_graph(self.name, list(self.nodes))
        self.by_alias = {node.alias: node for node in self.order}
        self.step = {node.alias: index for index, node in enumerate(self.order)}
        self._incoming = {node.alias: _incoming(node, self.order) for node in self.order}
        successors: dict[str, list[tuple[Edge, str]]] = {node.alias: [] for node in self.order}
        for node in self.order:
            for edge in self._incoming[node.alias]:
                successors[edge.source].append((edge, node.alias))
        self.successors = {alias: tuple(edges) for alias, edges in successors.items()}
        self.exits = _check_exits(self.name, self.exits, self.by_alias)
        self.validator = None
        if self.input_schema is not None:
            schema = dict(self.input_schema)
            cls = jsonschema.validators.validator_for(
                schema, default=jsonschema.Draft202012Validator
            )
            try:
                cls.check_schema(schema)
            except jsonschema.SchemaError as err:
                raise TemplateError(
                    self.name, None, f"input_schema is not a valid JSON schema: {err.message}"
                ) from err
            self.validator = cls(schema)

    def node_id(self, alias: str) -> str:
        """A stable id for a node of this template."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"requence-local:{self.name}:{alias}"))

    def inputs(self, alias: str) -> tuple[Edge, ...]:
        """Every incoming edge of a node: its ``after=`` ones and on-fail ones."""
        return self._incoming[alias]


def _incoming(node: Node, nodes: Sequence[Node]) -> tuple[Edge, ...]:
    edges = list(node.inputs)
    edges += [Edge(other.alias, ON_FAIL) for other in nodes if other.on_fail == node.alias]
    return tuple(edges)


def _check_graph(template: str, nodes: list[Node]) -> tuple[Node, ...]:
    """The nodes in an order that honours every edge; every rule of the graph checked."""
    by_alias: dict[str, Node] = {}
    for node in nodes:
        if not isinstance(node, Node):
            raise TypeError(
                f"template {template!r}: nodes must be made with service(), logic(), "
                f"first_of() or subtask(), not {type(node).__name__}"
            )
        if node.alias in by_alias:
            raise TemplateError(template, None, f"two nodes have the alias {node.alias!r}")
        by_alias[node.alias] = node
    for node in nodes:
        for edge in node.inputs:
            if edge.source not in by_alias:
                raise TemplateError(
                    template,
                    node.alias,
                    f"node {node.alias!r} runs after {edge.source!r}, "
                    "which is not a node of this template",
                )
            source = by_alias[edge.source]
            if source.type == "or" and edge.output is not None:
                raise TemplateError(
                    template, node.alias, f"an Or node ({edge.source!r}) has no named outputs"
                )
            if source.type == "logic" and edge.output not in (
                None,
                LOGIC_TRUE,
                LOGIC_FALSE,
                ON_FAIL,
            ):
                raise TemplateError(
                    template,
                    node.alias,
                    f"the logic node {edge.source!r} has the outputs 'true' and 'false', "
                    f"not {edge.output!r}",
                )
        if node.on_fail is not None:
            if node.type == "or":
                raise TemplateError(template, node.alias, "an Or node cannot fail: no on_fail")
            if node.on_fail not in by_alias:
                raise TemplateError(
                    template,
                    node.alias,
                    f"on_fail names {node.on_fail!r}, which is not a node of this template",
                )
            target = by_alias[node.on_fail]
            if any(e.source == node.alias and e.output != ON_FAIL for e in target.inputs):
                raise TemplateError(
                    template,
                    node.alias,
                    f"{node.on_fail!r} is both its on-fail target and an ordinary successor "
                    f"(after={node.alias!r}); a node runs either on success or on failure",
                )
            if node.optional:
                raise TemplateError(
                    template, node.alias, "optional=True and on_fail= exclude each other"
                )
    for node in nodes:
        if node.type == "or" and len(_incoming(node, nodes)) < 2:
            raise TemplateError(
                template,
                node.alias,
                "an Or node needs at least two inputs (it fires on the first to arrive)",
            )
    done: set[str] = set()
    order: list[Node] = []
    remaining = list(nodes)
    while remaining:
        ready = [n for n in remaining if all(e.source in done for e in _incoming(n, nodes))]
        if not ready:
            cycle = ", ".join(repr(n.alias) for n in remaining if _on_cycle(n, remaining, nodes))
            raise TemplateError(template, None, f"the nodes {cycle} form a cycle")
        first = ready[0]
        order.append(first)
        done.add(first.alias)
        remaining.remove(first)
    return tuple(order)


def _on_cycle(node: Node, remaining: list[Node], nodes: list[Node]) -> bool:
    """Whether ``node`` can reach itself through the nodes left unsorted."""
    left = {n.alias: n for n in remaining}
    successors: dict[str, set[str]] = {alias: set() for alias in left}
    for n in remaining:
        for edge in _incoming(n, nodes):
            if edge.source in left:
                successors[edge.source].add(n.alias)
    seen: set[str] = set()
    stack = list(successors[node.alias])
    while stack:
        alias = stack.pop()
        if alias == node.alias:
            return True
        if alias not in seen:
            seen.add(alias)
            stack.extend(successors[alias])
    return False


def _check_exits(
    template: str, exits: Mapping[str, Sequence[str]] | None, by_alias: Mapping[str, Node]
) -> dict[str, tuple[str, ...]] | None:
    if exits is None:
        return None
    if not isinstance(exits, Mapping):
        raise TemplateError(
            template, None, f"exits= maps exit names to aliases, not {type(exits).__name__}"
        )
    checked: dict[str, tuple[str, ...]] = {}
    for name, aliases in exits.items():
        if not isinstance(name, str) or not name:
            raise TemplateError(
                template, None, f"an exit's name must be a non-empty string, got {name!r}"
            )
        members = (aliases,) if isinstance(aliases, str) else tuple(aliases)
        if not members:
            raise TemplateError(template, None, f"the exit {name!r} names no node")
        for alias in members:
            if alias not in by_alias:
                raise TemplateError(
                    template,
                    None,
                    f"the exit {name!r} names {alias!r}, which is not a node of this template",
                )
        checked[name] = members
    return checked


def check_templates(templates: Mapping[str, Template]) -> None:
    """What one template cannot check alone: sub-tasks name templates that
    exist, and no template runs itself through its sub-tasks."""
    for template in templates.values():
        for node in template.order:
            if node.template is not None and node.template not in templates:
                known = ", ".join(repr(n) for n in sorted(templates)) or "none"
                raise TemplateError(
                    template.name,
                    node.alias,
                    f"the sub-task's template {node.template!r} is not on this server "
                    f"(templates: {known})",
                )
    for name in templates:
        path = _subtask_cycle(name, templates, [name])
        if path is not None:
            chain = " -> ".join(repr(p) for p in path)
            raise TemplateError(
                name, None, f"the template runs itself through its sub-tasks ({chain})"
            )


def _subtask_cycle(
    name: str, templates: Mapping[str, Template], path: list[str]
) -> list[str] | None:
    for node in templates[name].order:
        child = node.template
        if child is None:
            continue
        if child == path[0]:
            return [*path, child]
        if child in path:
            continue
        found = _subtask_cycle(child, templates, [*path, child])
        if found is not None:
            return found
    return None


class NodeContext:
    """What a node (or a template's ``result``) sees of its task.

    Attributes:
        task_id: The task's id.
        input: The task's input, as validated at finalize, with its files and
            streams as ``RequenceFile`` / ``RequenceStream`` objects and its claim
            checks fetched.
        name: The task's name, or ``None``.
        alias: The alias of the running node (``None`` in ``result``).
        exit: In ``result``: the exit the task ends through (``None`` without
            exits).
    """

    def __init__(
        self,
        *,
        task_id: str,
        input: Any,
        name: str | None,
        abort_event: threading.Event,
        emit: Callable[[str, dict[str, Any]], None] | None = None,
        alias: str | None = None,
        data: dict[str, Any] | None = None,
        errors: dict[str, str] | None = None,
    ) -> None:
        self.task_id = task_id
        self.input = input
        self.name = name
        self.alias = alias
        self.exit: str | None = None
        self._abort_event = abort_event
        self._emit = emit
        # Shared by the contexts of one task's nodes (the runner writes them).
        self._data: dict[str, Any] = {} if data is None else data
        self._errors: dict[str, str] = {} if errors is None else errors

    def node_data(self, alias: str, default: Any = None) -> Any:
        """The latest data an earlier node sent, by alias."""
        return self._data.get(alias, default)

    def node_error(self, alias: str) -> str | None:
        """The error message of an earlier node that failed (an optional one, or
        one whose on-fail branch runs now)."""
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
