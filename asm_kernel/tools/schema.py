"""JSON Schema for a Python function's arguments, derived from its signature and annotations.

The mapping (also in docs/guides/tools-and-policies.md):

=============================  =====================================================================
annotation                     JSON Schema
=============================  =====================================================================
``str``                        ``{"type": "string"}``
``int``                        ``{"type": "integer"}``
``float``                      ``{"type": "number"}`` (an integer is accepted too)
``bool``                       ``{"type": "boolean"}``
``None``                       ``{"type": "null"}``
an ``enum.Enum``               ``{"enum": [values]}`` (with ``"type"`` when the values share one)
``Literal["a", "b"]``          ``{"enum": ["a", "b"]}`` (same)
``list[T]``, ``Sequence[T]``   ``{"type": "array", "items": schema(T)}``
``set[T]``, ``frozenset[T]``   the same with ``"uniqueItems": true``
``tuple[T, ...]``              ``{"type": "array", "items": schema(T)}``
``tuple[A, B]``                ``{"type": "array", "prefixItems": [...], "minItems": 2, "maxItems": 2}``
``dict[str, T]``, ``Mapping``  ``{"type": "object", "additionalProperties": schema(T)}``
an attrs class                 ``{"type": "object", "properties": ..., "required": ...,
                               "additionalProperties": false}`` (fields, defaults, docstring)
``T | None``, ``Optional[T]``  ``{"anyOf": [schema(T), {"type": "null"}]}``
``A | B``                      ``{"anyOf": [schema(A), schema(B)]}``
``Annotated[T, "text"]``       ``schema(T)`` with ``"description": "text"``
``Any``, no annotation         ``{}`` (any value)
=============================  =====================================================================

A parameter with a default is optional and its (JSON-representable) default is shown as
``"default"``. Parameter descriptions come from ``Annotated[..., "text"]`` or the docstring's
``Args:`` section (Google style) or ``:param name:`` lines. Anything else (a ``datetime``, a
plain class) is refused with a :class:`~asm_kernel.errors.ToolDefinitionError` naming the
parameter: the model could not produce it from JSON.
"""

from __future__ import annotations

import collections.abc as abc
import enum
import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import attrs

from ..errors import ToolDefinitionError

__all__ = ["schema_for", "function_schema", "parameter_docs", "Parameter", "parameters_of", "NONE"]

NONE = type(None)
SEQUENCES = {list, tuple, set, frozenset, abc.Sequence, abc.MutableSequence, abc.Set, abc.MutableSet,
             abc.Collection, abc.Iterable}
MAPPINGS = {dict, abc.Mapping, abc.MutableMapping}
_PRIMITIVES: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    NONE: {"type": "null"},
}
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", NONE: "null"}


@attrs.frozen
class Parameter:
    """One argument of a function tool: its name, annotation and default (``inspect._empty`` when none)."""

    name: str
    annotation: Any
    default: Any = inspect.Parameter.empty
    kind: Any = inspect.Parameter.POSITIONAL_OR_KEYWORD
    description: str | None = None

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


def _enum_schema(values: list[Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"enum": values}
    kinds = {_JSON_TYPES.get(type(v)) for v in values}
    if len(kinds) == 1 and None not in kinds:
        schema = {"type": kinds.pop(), **schema}
    return schema


def _strip_annotated(tp: Any) -> tuple[Any, str | None]:
    if get_origin(tp) is Annotated:
        base, *extra = get_args(tp)
        text = next((e for e in extra if isinstance(e, str)), None)
        return base, text
    return tp, None


def schema_for(tp: Any, where: str = "value", _seen: frozenset[type] = frozenset()) -> dict[str, Any]:
    """The JSON Schema of values of annotation ``tp`` (see the module docstring)."""
    tp, description = _strip_annotated(tp)
    schema = _schema(tp, where, _seen)
    if description:
        schema = {**schema, "description": description}
    return schema


def _schema(tp: Any, where: str, seen: frozenset[type]) -> dict[str, Any]:
    if tp is Any or tp is inspect.Parameter.empty or tp is object:
        return {}
    if tp is None:
        tp = NONE
    if tp in _PRIMITIVES:
        return dict(_PRIMITIVES[tp])
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is Literal:
        return _enum_schema(list(args))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_schema([m.value for m in tp])
    if origin in (Union, types.UnionType):
        branches = [schema_for(a, where, seen) for a in args]
        return {"anyOf": branches}
    if (origin or tp) in SEQUENCES:
        container = origin or tp
        if container is tuple and args and Ellipsis not in args:
            items = [schema_for(a, f"{where}[{i}]", seen) for i, a in enumerate(args)]
            return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}
        inner = args[0] if args else Any
        schema: dict[str, Any] = {"type": "array", "items": schema_for(inner, f"{where}[]", seen)}
        if container in (set, frozenset, abc.Set, abc.MutableSet):
            schema["uniqueItems"] = True
        return schema
    if (origin or tp) in MAPPINGS:
        key, value = (args[0], args[1]) if len(args) == 2 else (str, Any)
        if key is not str and _strip_annotated(key)[0] is not str:
            raise ToolDefinitionError(
                f"{where}: a mapping's keys must be str (JSON object keys are strings), got {key!r}",
                hint="annotate it as dict[str, ...]",
            )
        return {"type": "object", "additionalProperties": schema_for(value, f"{where}[]", seen)}
    if isinstance(tp, type) and attrs.has(tp):
        if tp in seen:
            raise ToolDefinitionError(
                f"{where}: {tp.__name__} refers to itself; a tool's arguments must not be recursive",
            )
        return _attrs_schema(tp, where, seen | {tp})
    raise ToolDefinitionError(
        f"{where}: asm cannot describe the annotation {_name(tp)} as JSON",
        hint="use str, int, float, bool, an Enum, Literal, list, dict, an attrs class, or Optional/Union of them",
    )


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or repr(tp)


def _attrs_schema(cls: type, where: str, seen: frozenset[type]) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception as exc:  # a forward reference that does not resolve
        raise ToolDefinitionError(
            f"{where}: the annotations of {cls.__qualname__} cannot be resolved: {exc}",
            hint="define the class, and every type it names, at module level",
        ) from None
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in attrs.fields(cls):
        if not field.init:
            continue
        name = field.alias or field.name
        declared = field.type if field.type is not None and not isinstance(field.type, str) else Any
        prop = schema_for(hints.get(field.name, declared), f"{where}.{name}", seen)
        if field.default is attrs.NOTHING:
            required.append(name)
        else:
            default = field.default
            if not isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                _set_default(prop, default)
        properties[name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    doc = _summary(cls.__doc__)
    if doc and not doc.startswith(f"{cls.__name__}("):  # attrs' generated repr-like docstring says nothing
        schema["description"] = doc
    return schema


def _set_default(schema: dict[str, Any], default: Any) -> None:
    if isinstance(default, enum.Enum):
        default = default.value
    try:
        json.dumps(default, allow_nan=False)
    except (TypeError, ValueError):
        return
    schema["default"] = default


def _summary(doc: str | None) -> str:
    """A docstring's description: everything before its ``Args:``/``:param`` part, cleaned."""
    if not doc:
        return ""
    text = inspect.cleandoc(doc)
    cut = re.search(r"^\s*(Args|Arguments|Parameters|Returns|Raises)\s*:\s*$|^\s*:(param|return|raises)", text, re.M)
    if cut:
        text = text[: cut.start()]
    return text.strip()


def parameter_docs(doc: str | None) -> dict[str, str]:
    """Parameter descriptions from a docstring: Google ``Args:`` sections and ``:param x:`` lines."""
    if not doc:
        return {}
    text = inspect.cleandoc(doc)
    found: dict[str, str] = {}
    for match in re.finditer(r"^\s*:param\s+(?:[^:\s]+\s+)?(\w+)\s*:\s*(.*)$", text, re.M):
        found[match.group(1)] = match.group(2).strip()
    section = re.search(r"^(Args|Arguments|Parameters)\s*:\s*\n((?:[ \t]+.*\n?|\s*\n)+)", text + "\n", re.M)
    if section:
        current: str | None = None
        indent: int | None = None
        for line in section.group(2).splitlines():
            if not line.strip():
                continue
            width = len(line) - len(line.lstrip())
            entry = re.match(r"\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line)
            if entry and (indent is None or width <= indent):
                indent = width
                current = entry.group(1).lstrip("*")
                found[current] = entry.group(2).strip()
            elif current is not None:
                found[current] = f"{found[current]} {line.strip()}".strip()
    return found


def parameters_of(func: Callable[..., Any], where: str) -> list[Parameter]:
    """The parameters of ``func`` the model fills in, with resolved annotations."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise ToolDefinitionError(f"{where}: cannot read the signature of {func!r}: {exc}") from None
    # A callable object's annotations are its __call__'s.
    annotated = func if inspect.isroutine(func) or inspect.isclass(func) else type(func).__call__  # type: ignore[operator]
    try:
        hints = typing.get_type_hints(annotated, include_extras=True)
    except Exception as exc:  # a forward reference that does not resolve
        raise ToolDefinitionError(
            f"{where}: the annotations of {getattr(func, '__qualname__', func)!r} cannot be resolved: {exc}",
            hint="import every type its annotations name at module level",
        ) from None
    docs = parameter_docs(getattr(func, "__doc__", None))
    params: list[Parameter] = []
    for p in signature.parameters.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            raise ToolDefinitionError(
                f"{where}: *{p.name} cannot be filled from JSON arguments",
                hint="give the tool named parameters (a list parameter takes many values)",
            )
        annotation = hints.get(p.name, Any)
        described = _strip_annotated(annotation)[1]
        params.append(Parameter(p.name, annotation, p.default, p.kind, described or docs.get(p.name)))
    return params


def function_schema(params: list[Parameter], where: str) -> dict[str, Any]:
    """The ``input_schema`` of a tool taking ``params``: an object, one property per parameter."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    extra: dict[str, Any] | bool = False
    for p in params:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            extra = schema_for(p.annotation, f"{where}.**{p.name}") if p.annotation is not Any else True
            continue
        prop = schema_for(p.annotation, f"{where}.{p.name}")
        if p.description and "description" not in prop:
            prop["description"] = p.description
        if p.required:
            required.append(p.name)
        else:
            _set_default(prop, p.default)
        properties[p.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": extra}
    if required:
        schema["required"] = required
    return schema
