"""Validating the arguments a model sends: structured with cattrs into the annotated types.

The model's arguments (a JSON object) are structured by a strict cattrs converter into the
types the function declares, so what the function receives is what it asked for (an attrs
instance, an Enum member, a tuple) and nothing is coerced: ``"8"`` is not an integer, ``1`` is
not ``true``, a string is not an array. Every problem is reported with its path into the
arguments (``items[2].qty``), through :func:`cattrs.transform_error`, in one
:class:`~asm_kernel.errors.ToolArgumentsError` that the model gets as an error result.
"""

from __future__ import annotations

import enum
import inspect
import json
import types
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin

import attrs

from ..errors import ToolArgumentsError
from .schema import MAPPINGS, NONE, SEQUENCES, Parameter, _strip_annotated

__all__ = ["structure_arguments", "converter", "describe"]


class _Mismatch(TypeError):
    def __init__(self, expected: str, value: Any) -> None:
        super().__init__(expected)
        self.expected = expected
        self.value = value


def describe(tp: Any) -> str:
    """What a value of ``tp`` is, in JSON words ("an array of integers")."""
    tp = _strip_annotated(tp)[0]
    if tp is NONE or tp is None:
        return "null"
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(json.dumps(m.value) for m in tp)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if (origin or tp) in SEQUENCES:
        inner = [a for a in args if a is not Ellipsis]
        if len(set(inner)) == 1:
            return f"an array of {_plural(describe(inner[0]))}"
        return f"an array of {len(inner)} items" if inner else "an array"
    if (origin or tp) in MAPPINGS or (isinstance(tp, type) and attrs.has(tp)):
        return "an object"
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
    return names.get(tp, "any value")


def _plural(text: str) -> str:
    for single, many in (("a string", "strings"), ("an integer", "integers"), ("a number", "numbers"),
                         ("a boolean", "booleans"), ("an object", "objects"), ("an array", "arrays")):
        if text.startswith(single):
            return many + text[len(single):]
    return text


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {json.dumps(value[:40])}{'...' if len(value) > 40 else ''}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return f"a {type(value).__name__}"


# -- hooks ------------------------------------------------------------------------------------


def _str(value: Any, _: Any) -> str:
    if isinstance(value, str):
        return value
    raise _Mismatch("a string", value)


def _int(value: Any, _: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():  # JSON Schema: 2.0 is an integer
        return int(value)
    raise _Mismatch("an integer", value)


def _float(value: Any, _: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise _Mismatch("a number of ordinary size", value) from None
    raise _Mismatch("a number", value)


def _bool(value: Any, _: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise _Mismatch("a boolean", value)


def _none(value: Any, _: Any) -> None:
    if value is None:
        return None
    raise _Mismatch("null", value)


def _any(value: Any, _: Any) -> Any:
    return value


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same JSON kind (``1`` is not ``true``, ``1.0`` is not the string ``"1"``)."""
    return isinstance(a, bool) == isinstance(b, bool) and isinstance(a, str) == isinstance(b, str) and a == b


def _enum(value: Any, tp: Any) -> Any:
    for member in tp:
        if _same(member.value, value):
            return member
    raise _Mismatch(describe(tp), value)


def _literal_hook(tp: Any) -> Callable[[Any, Any], Any]:
    args = get_args(tp)

    def structure(value: Any, _: Any) -> Any:
        for arg in args:
            if _same(arg, value):
                return arg
        raise _Mismatch(describe(tp), value)

    return structure


def _fits(value: Any, tp: Any) -> bool:
    """Whether ``value`` has the JSON shape of ``tp`` (a union reports the error of the branch that fits)."""
    tp = _strip_annotated(tp)[0]
    origin = get_origin(tp) or tp
    if tp is Any:
        return True
    if tp is NONE or tp is None:
        return value is None
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in get_args(tp))
    if origin is Literal:
        return any(_same(a, value) for a in get_args(tp))
    if origin in SEQUENCES:
        return isinstance(value, list | tuple)
    if origin in MAPPINGS or (isinstance(tp, type) and attrs.has(tp)):
        return isinstance(value, Mapping)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return any(_same(m.value, value) for m in tp)
    if tp is bool:
        return isinstance(value, bool)
    if tp in (int, float):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return number and (tp is float or isinstance(value, int) or float(value).is_integer())
    if tp is str:
        return isinstance(value, str)
    return False


def _union_hook(tp: Any, conv: Any) -> Callable[[Any, Any], Any]:
    options = get_args(tp)

    def structure(value: Any, _: Any) -> Any:
        first: Exception | None = None
        for option in [o for o in options if _fits(value, o)]:
            try:
                return conv.structure(value, option)
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first
        raise _Mismatch(describe(tp), value)

    return structure


def _sequence_hook(tp: Any, conv: Any) -> Callable[[Any, Any], Any]:
    from cattrs.errors import IterableValidationError, IterableValidationNote

    origin = get_origin(tp) or tp
    all_args = get_args(tp)
    args = [a for a in all_args if a is not Ellipsis]
    fixed = origin is tuple and bool(all_args) and Ellipsis not in all_args
    build: Callable[[list[Any]], Any] = {tuple: tuple, set: set, frozenset: frozenset}.get(origin, list)

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise _Mismatch(describe(tp), value)
        if fixed and len(value) != len(args):
            raise _Mismatch(f"an array of {len(args)} items", value)
        if origin in (set, frozenset) and len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
            raise _Mismatch(f"{describe(tp)} without duplicates", value)  # the schema says uniqueItems
        items, errors = [], []
        for i, item in enumerate(value):
            inner = args[i] if fixed else (args[0] if args else Any)
            try:
                items.append(conv.structure(item, inner))
            except Exception as exc:
                exc.__notes__ = [*getattr(exc, "__notes__", []), IterableValidationNote(f"@ {i}", i, inner)]
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {tp!r}", errors, tp)
        try:
            return build(items)
        except TypeError:  # a set of unhashable items
            raise _Mismatch(describe(tp), value) from None

    return structure


class _Key(str):
    """A mapping key as transform_error renders it: a token the path builder turns into ``.key``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "\x01" + json.dumps(str(self)) + "\x01"


def _mapping_hook(tp: Any, conv: Any) -> Callable[[Any, Any], Any]:
    from cattrs.errors import IterableValidationError, IterableValidationNote

    args = get_args(tp)
    value_type = args[1] if len(args) == 2 else Any

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _Mismatch("an object", value)
        out, errors = {}, []
        for key, item in value.items():
            try:
                out[_str(key, str)] = conv.structure(item, value_type)
            except Exception as exc:
                note = IterableValidationNote(f"@ {key!r}", _Key(str(key)), value_type)
                exc.__notes__ = [*getattr(exc, "__notes__", []), note]
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {tp!r}", errors, tp)
        return out

    return structure


def _attrs_hook(cls: type, conv: Any) -> Callable[[Any, Any], Any]:
    from cattrs.gen import make_dict_structure_fn

    inner: Callable[[Any, Any], Any] = make_dict_structure_fn(
        cls, conv, _cattrs_forbid_extra_keys=True, _cattrs_detailed_validation=True
    )

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _Mismatch("an object", value)
        return inner(value, cls)

    return structure


@cache
def converter() -> Any:
    """The strict converter tool arguments are structured with (built on first use)."""
    import cattrs

    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    for tp, hook in ((str, _str), (int, _int), (float, _float), (bool, _bool), (NONE, _none)):
        conv.register_structure_hook(tp, hook)
    # Function hooks: the one registered last is asked first.
    factories: list[tuple[Callable[[Any], bool], Any]] = [
        (lambda t: isinstance(t, type) and attrs.has(t), _attrs_hook),
        (lambda t: (get_origin(t) or t) in SEQUENCES, _sequence_hook),
        (lambda t: (get_origin(t) or t) in MAPPINGS, _mapping_hook),
        (lambda t: get_origin(t) in (Union, types.UnionType), _union_hook),
        (lambda t: get_origin(t) is Literal, _literal_hook),
    ]
    for predicate, factory in factories:
        conv.register_structure_hook_factory(predicate, factory)
    conv.register_structure_hook_func(lambda t: isinstance(t, type) and issubclass(t, enum.Enum), _enum)
    conv.register_structure_hook_func(lambda t: t is Any or t is object, _any)
    return conv


# -- the arguments object ---------------------------------------------------------------------

_LEAF = "\x00"


def _problems(exc: BaseException, root: str) -> list[str]:
    import cattrs
    from cattrs.errors import ForbiddenExtraKeysError

    leaves: list[BaseException] = []

    def token(leaf: BaseException, tp: Any) -> str:
        leaves.append(leaf)
        return f"{_LEAF}{len(leaves) - 1}{_LEAF}"

    found: list[str] = []
    for line in cattrs.transform_error(exc, path=root, format_exception=token):
        text, _, path = line.partition(" @ ")
        path = _render_path(path)
        if not (text.startswith(_LEAF) and text.endswith(_LEAF)):
            found.append(f"{path}: invalid value")
            continue
        leaf = leaves[int(text.strip(_LEAF))]
        if isinstance(leaf, _Mismatch):
            found.append(f"{path}: expected {leaf.expected}, got {_show(leaf.value)}")
        elif isinstance(leaf, ForbiddenExtraKeysError):
            known = sorted(f.alias or f.name for f in attrs.fields(leaf.cl)) if attrs.has(leaf.cl) else []
            for key in sorted(map(str, leaf.extra_fields)):
                found.append(f"{path}.{key}: unknown field (known: {', '.join(known) or 'none'})")
        elif isinstance(leaf, KeyError):
            found.append(f"{path}: missing required field")
        else:
            found.append(f"{path}: {type(leaf).__name__}: {leaf}")
    return found


def _render_path(path: str) -> str:
    """``$.a[\x01"k"\x01][0]`` as ``a.k[0]``."""
    import re

    path = re.sub(r"\[\x01(.*?)\x01\]", lambda m: "." + json.loads(m.group(1)), path)
    return path.lstrip("$").lstrip(".")


def structure_arguments(tool: str, params: Sequence[Parameter], arguments: Any) -> tuple[list[Any], dict[str, Any]]:
    """``(args, kwargs)`` to call the tool's function with, or :class:`ToolArgumentsError`.

    Positional-only parameters go in ``args``; every problem found is listed (not just the first).
    """
    if not isinstance(arguments, Mapping):
        raise ToolArgumentsError(
            f"the arguments of tool {tool!r} must be a JSON object, got {_show(arguments)}",
            tool=tool,
            problems=f"expected an object, got {_show(arguments)}",
        )
    conv = converter()
    problems: list[str] = []
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    extra_param = next((p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD), None)
    named = {p.name: p for p in params if p is not extra_param}
    for key in arguments:
        if key not in named and extra_param is None:
            problems.append(f"{key}: unknown argument (this tool takes: {', '.join(named) or 'none'})")
    for p in named.values():
        if p.name not in arguments:
            if p.required:
                problems.append(f"{p.name}: missing required argument")
            elif p.kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(p.default)  # keeps the positions of the ones after it
            continue
        try:
            value = conv.structure(arguments[p.name], p.annotation)
        except Exception as exc:
            problems.extend(_problems(exc, p.name))
            continue
        if p.kind is inspect.Parameter.POSITIONAL_ONLY:
            args.append(value)
        else:
            kwargs[p.name] = value
    if extra_param is not None:
        for key, raw in arguments.items():
            if key in named:
                continue
            try:
                kwargs[key] = conv.structure(raw, extra_param.annotation)
            except Exception as exc:
                problems.extend(_problems(exc, key))
    if problems:
        raise ToolArgumentsError(
            f"invalid arguments for tool {tool!r}: " + "; ".join(problems),
            hint="call the tool again with arguments that match its input schema",
            tool=tool,
            problems="; ".join(problems),
        )
    return args, kwargs
