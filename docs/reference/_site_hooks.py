"""Build helpers of the documentation site; ``mkdocs.yml`` loads this file twice.

As a MkDocs hook (``hooks:``), it drops the flags that ``tests/test_docs.py``
reads from fenced samples (```` ```python no-run ````, ```` ```python pytest ````):
Markdown takes the whole info string for the language and would not
highlight such a block at all.

As a Griffe extension (``RequenceDocstrings``, in the mkdocstrings options),
it reads the package's docstrings as they are written for ``help()``:

- an attrs class gets the ``__init__`` that attrs generates (Griffe reads
  source, so it sees no ``__init__`` on such a class otherwise);
- a Sphinx role (``:class:`Task```, ``:meth:`abort```) becomes code, linked
  to the object's reference entry when the site has one;
- an ``Example:`` section is an examples section, like ``Examples:`` (so
  ``>>>`` lines become highlighted code), and ``Example::`` with an indented
  block becomes one with a Python code block;
- an enum's members are not labelled as class and instance attributes.

Nothing here imports the package: it works on what Griffe read.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

# --- MkDocs hook ----------------------------------------------------------------

_FENCE_FLAGS = re.compile(
    r"^(?P<fence>[ \t]*(?:`{3,}|~{3,})[ \t]*[\w#.+-]+)(?P<flags>(?:[ \t]+[\w-]+)+)[ \t]*$"
)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Drop test flags (bare words after the language) from fence info strings."""
    return "\n".join(_FENCE_FLAGS.sub(r"\g<fence>", line) for line in markdown.split("\n"))


# --- Griffe extension -------------------------------------------------------------

_ATTRS_DECORATORS = {
    "attrs.define",
    "attrs.frozen",
    "attrs.mutable",
    "attr.define",
    "attr.frozen",
    "attr.mutable",
}
_ATTRS_FIELDS = {"attrs.field", "attr.field", "attr.ib", "attr.attrib"}
_ATTRS_FACTORIES = {"attrs.Factory", "attr.Factory"}
_ROLE = re.compile(
    r":(?:py:)?(?P<role>class|meth|func|attr|mod|exc|data|obj|const):`(?P<tilde>~?)(?P<target>[\w.]+)(?:\(\))?`"
)
_EXAMPLE_HEADING = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$", re.MULTILINE)
# reStructuredText's "Example::" and the indented block after it.
_LITERAL_EXAMPLE = re.compile(
    r"^(?P<indent>[ \t]*)Examples?::[ \t]*\n(?P<block>(?:[ \t]*\n|(?P=indent)[ \t]+\S.*\n?)+)",
    re.MULTILINE,
)


def _fenced_example(match: re.Match[str]) -> str:
    """``Example::`` and its literal block as an examples section with a Python fence."""
    lines = match["block"].rstrip("\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    margin = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    fence = " " * margin + "```"
    body = "\n".join([fence + "python", *lines, fence])
    return f"{match['indent']}Examples:\n{body}\n\n"


def _call_args(expr: object) -> dict[str, Any]:
    """The keyword arguments of a call expression, as Griffe expressions or strings."""
    if not isinstance(expr, griffe.ExprCall):
        return {}
    found: dict[str, Any] = {}
    for argument in expr.arguments:
        if isinstance(argument, griffe.ExprKeyword):
            found[argument.name] = argument.value
    return found


def _attrs_decorator(cls: griffe.Class) -> griffe.Expr | None:
    for decorator in cls.decorators:
        value = decorator.value
        if isinstance(value, griffe.Expr) and value.canonical_path in _ATTRS_DECORATORS:
            return value
    return None


def _in_method(cls: griffe.Class, attribute: griffe.Attribute) -> bool:
    """Whether the attribute was assigned inside a method (``self.x = ...``), not declared."""
    for member in cls.members.values():
        if member.is_alias or not member.is_function:
            continue
        start, end = member.lineno or 0, member.endlineno or 0
        if attribute.lineno is not None and start <= attribute.lineno <= end:
            return True
    return False


def _attrs_parameters(
    cls: griffe.Class, class_kw_only: bool
) -> list[tuple[str, griffe.Parameter | None]]:
    """The class's own fields, each with its ``__init__`` parameter (``None``: ``init=False``)."""
    parameters: list[tuple[str, griffe.Parameter | None]] = []
    for member in list(cls.members.values()):
        if member.is_alias or not member.is_attribute:
            continue
        attribute: griffe.Attribute = member  # type: ignore[assignment]
        if attribute.annotation is None or "property" in attribute.labels:
            continue
        if "class-attribute" in attribute.labels and "instance-attribute" not in attribute.labels:
            continue  # a ClassVar
        if _in_method(cls, attribute):
            continue
        value = attribute.value
        field_args: dict[str, Any] = {}
        if isinstance(value, griffe.ExprCall) and value.canonical_path in _ATTRS_FIELDS:
            field_args = _call_args(value)
            value = None
        if str(field_args.get("init", "True")) == "False":
            parameters.append((attribute.name, None))  # it still replaces an inherited field
            continue
        if "factory" in field_args:
            default: Any = griffe.ExprCall(function=field_args["factory"], arguments=[])
        elif "default" in field_args:
            default = field_args["default"]
        else:
            default = value
        if isinstance(default, griffe.ExprCall) and default.canonical_path in _ATTRS_FACTORIES:
            default = griffe.ExprCall(function=default.arguments[0], arguments=[])
        kw_only = class_kw_only or str(field_args.get("kw_only", "False")) == "True"
        alias = field_args.get("alias")
        name = str(alias).strip("'\"") if alias is not None else attribute.name.lstrip("_")
        parameter = griffe.Parameter(
            name,
            annotation=attribute.annotation,
            kind=(
                griffe.ParameterKind.keyword_only
                if kw_only
                else griffe.ParameterKind.positional_or_keyword
            ),
            default=default,
            docstring=attribute.docstring,
        )
        parameters.append((attribute.name, parameter))
    return parameters


def _add_attrs_init(cls: griffe.Class) -> None:
    decorator = _attrs_decorator(cls)
    if decorator is None or "__init__" in cls.members:
        return
    args = _call_args(decorator)
    if str(args.get("init", "True")) == "False":
        return
    # attrs collects the fields of attrs base classes first, then the class's own.
    parameters: dict[str, griffe.Parameter] = {}  # by field name, in attrs' order
    try:
        bases = list(reversed(cls.mro()))
    except ValueError:
        bases = []
    for base in [*bases, cls]:
        base_decorator = _attrs_decorator(base)
        if base_decorator is None:
            continue
        base_kw_only = str(_call_args(base_decorator).get("kw_only", "False")) == "True"
        for field, parameter in _attrs_parameters(base, base_kw_only):
            parameters.pop(field, None)
            if parameter is not None:
                parameters[field] = parameter
    ordered = sorted(parameters.values(), key=lambda p: p.kind is griffe.ParameterKind.keyword_only)
    cls.set_member(
        "__init__",
        griffe.Function(
            "__init__",
            lineno=0,
            endlineno=0,
            parent=cls,
            parameters=griffe.Parameters(
                griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword),
                *ordered,
            ),
            returns="None",
        ),
    )


def _label_enum_members(cls: griffe.Class) -> None:
    """An enum's members are its values, not class and instance attributes."""
    if not any(str(base).split(".")[-1] in ("Enum", "IntEnum", "StrEnum") for base in cls.bases):
        return
    for member in cls.members.values():
        if not member.is_alias and member.is_attribute:
            member.labels.difference_update({"class-attribute", "instance-attribute"})


class RequenceDocstrings(griffe.Extension):
    """Read the package's docstrings and attrs classes the way ``help()`` does."""

    def __init__(self) -> None:
        super().__init__()
        self._public: dict[str, str] = {}  # exported name -> public path
        self._canonical: dict[str, str] = {}  # canonical path -> public path

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Fix up every object of this project's package once it is loaded."""
        if pkg.path != "requence_task":
            return  # packages loaded to resolve names (attrs, concurrent, ...) stay as they are
        self._learn_exports(pkg)
        for obj in self._walk(pkg, set()):
            if isinstance(obj, griffe.Class):
                _add_attrs_init(obj)
                _label_enum_members(obj)
        for obj in self._walk(pkg, set()):
            if obj.docstring is not None:
                obj.docstring.value = self._rewrite(obj, obj.docstring.value)

    def _learn_exports(self, module: griffe.Module) -> None:
        for name in module.exports or ():
            name = str(name)
            public = f"{module.path}.{name}"
            self._public.setdefault(name, public)
            member = module.members.get(name)
            if member is not None and member.is_alias:
                self._canonical[member.target_path] = public  # type: ignore[union-attr]
        for submodule in module.modules.values():
            if not submodule.is_alias:
                self._learn_exports(submodule)

    def _walk(self, obj: griffe.Object, seen: set[str]) -> list[griffe.Object]:
        if obj.path in seen:
            return []
        seen.add(obj.path)
        found = [obj]
        for member in list(obj.members.values()):
            if not member.is_alias:
                found.extend(self._walk(member, seen))  # type: ignore[arg-type]
        return found

    def _target(self, obj: griffe.Object, target: str) -> str:
        """The identifier a role's target most likely names on this site."""
        for prefix in ("requence_task.local.", "requence_task."):
            if target.startswith(prefix) and target[len(prefix) :].split(".")[0] in self._public:
                target = target[len(prefix) :]
        head, _, rest = target.partition(".")
        if head in self._public:
            return self._public[head] + (f".{rest}" if rest else "")
        owner = obj if obj.is_class else obj.parent  # a method's or attribute's class
        if owner is not None and owner.is_class and owner.path in self._canonical:
            return f"{self._canonical[owner.path]}.{target}"
        return target

    def _rewrite(self, obj: griffe.Object, text: str) -> str:
        def role(match: re.Match[str]) -> str:
            target = match["target"]
            shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
            if match["role"] in ("meth", "func"):
                shown += "()"
            identifier = self._target(obj, target)
            return f'<autoref identifier="{identifier}" optional><code>{shown}</code></autoref>'

        text = _ROLE.sub(role, text)
        text = _LITERAL_EXAMPLE.sub(_fenced_example, text)
        return _EXAMPLE_HEADING.sub(r"\g<indent>Examples:", text)
