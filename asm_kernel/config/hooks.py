"""The strict cattrs converter every config table is structured with, and its hooks.

No coercion: ``"8"`` is not an integer, ``true`` is not ``1``, a string is not an array. A
union tries the branches whose shape fits the value and re-raises the inner error of the branch
that fits, so a mistake inside an optional table keeps its precise path. A value interpolated
from an unset ``${VAR}`` fails in the hook that meets it. The hooks raise cattrs' own error
tree (class and iterable validation errors with notes), leaves being the private errors below,
which :mod:`.validation` turns into messages.
"""

from __future__ import annotations

import collections.abc as abc
import enum
import json
import re
import types
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn

from ..errors import AsmError
from ..secrets import Secret
from .records import ComponentConfig
from .sources import Unset

__all__ = ["converter", "describe_type"]

_NONE = type(None)
_SEQUENCES = {list, tuple, set, frozenset, abc.Sequence, abc.MutableSequence, abc.Set, abc.MutableSet, abc.Collection}
_MAPPINGS = {dict, abc.Mapping, abc.MutableMapping}

# -- leaf errors raised by the hooks ----------------------------------------------------------


class _Mismatch(TypeError):
    def __init__(self, expected: str, value: Any) -> None:
        super().__init__(expected)
        self.expected = expected
        self.value = value


class _UnsetVariable(ValueError):
    def __init__(self, var: str, where: str = "") -> None:
        super().__init__(var)
        self.var = var
        self.where = where


class _Invalid(ValueError):
    """A value refused with a message: ours, or a validator's (``foreign``: scrubbed before shown)."""

    def __init__(self, message: str, hint: str | None = None, foreign: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.foreign = foreign


class _KeyRef(str):
    """A mapping key as transform_error renders it: a token the path builder turns into ``.key``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "\x01" + json.dumps(str(self)) + "\x01"


def _noted(exc: Exception, note: str) -> Exception:
    exc.__notes__ = [*getattr(exc, "__notes__", []), note]
    return exc


def _attribute(exc: Exception, name: str, tp: Any = None) -> Exception:
    return _noted(exc, AttributeValidationNote(f"Structuring @ attribute {name}", name, tp))


def _item(exc: Exception, index: int | str, tp: Any = None) -> Exception:
    return _noted(exc, IterableValidationNote(f"Structuring @ index {index!r}", index, tp))


def describe_type(tp: Any) -> str:
    """What a value of type ``tp`` is, in the words of a config file."""
    if tp is _NONE:
        return "nothing"
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args if a is not _NONE)
    if (origin or tp) in _SEQUENCES:
        inner = [a for a in args if a is not Ellipsis]
        return f"an array of {_plural(describe_type(inner[0]))}" if len(set(inner)) == 1 else "an array"
    if (origin or tp) in _MAPPINGS or (isinstance(tp, type) and attrs.has(tp)):
        return "a table"
    if tp is Secret:
        return "a string (secret)"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(repr(m.value) for m in tp)
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", Path: "a path string"}
    return names.get(tp, "any value" if tp is Any else getattr(tp, "__name__", str(tp)))


def _plural(text: str) -> str:
    for single, many in (("a string", "strings"), ("an integer", "integers"), ("a number", "numbers"),
                         ("a table", "tables"), ("a path string", "path strings"), ("an array", "arrays")):
        if text.startswith(single):
            return many + text[len(single):]
    return text


# -- hooks ------------------------------------------------------------------------------------


def _check_unset(value: Any) -> None:
    if isinstance(value, Unset):
        raise _UnsetVariable(value.var)


def _find_unset(value: Any) -> tuple[Unset, str] | None:
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, Unset):
            return item, where
        if isinstance(item, Mapping):
            stack.extend((v, f"{where}.{k}") for k, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return None


def _structure_any(value: Any, _: Any) -> Any:
    found = _find_unset(value)
    if found is not None:
        raise _UnsetVariable(found[0].var, found[1])
    return value


def _structure_str(value: Any, tp: Any) -> Any:
    if tp is not str and isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _structure_enum(value, tp)
    _check_unset(value)
    if isinstance(value, str):
        return value
    raise _Mismatch("a string", value)


def _structure_int(value: Any, tp: Any) -> Any:
    if tp is not int and isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _structure_enum(value, tp)
    _check_unset(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _Mismatch("an integer", value)


def _structure_float(value: Any, _: Any) -> float:
    _check_unset(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise _Mismatch("a number of ordinary size", value) from None
    raise _Mismatch("a number", value)


def _structure_bool(value: Any, _: Any) -> bool:
    _check_unset(value)
    if isinstance(value, bool):
        return value
    raise _Mismatch("true or false", value)


def _structure_path(value: Any, _: Any) -> Path:
    _check_unset(value)
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value or "\x00" in value:
        raise _Mismatch("a path string", value)
    try:
        return Path(value).expanduser()
    except RuntimeError:  # ~user of a user that does not exist: keep it literal
        return Path(value)


def _structure_secret(value: Any, _: Any) -> Secret:
    _check_unset(value)
    if isinstance(value, Secret):
        return value
    if isinstance(value, str):
        return Secret(str(value))
    raise _Mismatch("a string (secret)", value)


def _structure_enum(value: Any, tp: Any) -> Any:
    _check_unset(value)
    for member in tp:
        same_kind = type(member.value) is type(value) or (isinstance(value, str) and isinstance(member.value, str))
        if same_kind and member.value == value:
            return member
    raise _Mismatch(f"one of {describe_type(tp)}", value)


def _literal_hook(tp: Any) -> Callable[[Any, Any], Any]:
    args = get_args(tp)

    def structure(value: Any, _: Any) -> Any:
        _check_unset(value)
        for arg in args:
            same_kind = isinstance(value, bool) == isinstance(arg, bool) and isinstance(value, type(arg))
            if same_kind and value == arg:
                return arg
        raise _Mismatch(f"one of {describe_type(tp)}", value)

    return structure


def _fits(value: Any, tp: Any) -> bool:
    """Whether ``value`` has the shape of ``tp`` (so a union's error is the error of that branch)."""
    origin = get_origin(tp) or tp
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in get_args(tp))
    if origin is Literal:
        return any(isinstance(value, type(a)) and value == a for a in get_args(tp))
    if origin in _SEQUENCES:
        return isinstance(value, list | tuple | set | frozenset)
    if origin in _MAPPINGS or (isinstance(tp, type) and attrs.has(tp)):
        return isinstance(value, Mapping)
    if tp in (str, Path, Secret) or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
        return isinstance(value, str) or (tp is not str and isinstance(value, tp))
    if tp is bool:
        return isinstance(value, bool)
    if tp in (int, float):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return number and (tp is float or isinstance(value, int))
    return isinstance(tp, type) and isinstance(value, tp)


def _union_hook(tp: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    args = get_args(tp)
    options = [a for a in args if a is not _NONE]

    def structure(value: Any, _: Any) -> Any:
        _check_unset(value)
        if value is None and _NONE in args:
            return None
        fitting = [a for a in options if _fits(value, a)]
        first: Exception | None = None
        for option in fitting:
            try:
                return conv.structure(value, option)
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first
        raise _Mismatch(describe_type(tp), value)

    return structure


def _sequence_hook(tp: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    origin = get_origin(tp) or tp
    args = [a for a in get_args(tp) if a is not Ellipsis]
    fixed = origin is tuple and len(get_args(tp)) > 0 and Ellipsis not in get_args(tp)
    build: Callable[[list[Any]], Any] = {
        tuple: tuple, set: set, frozenset: frozenset, abc.Set: frozenset, abc.MutableSet: set
    }.get(origin, list)

    def structure(value: Any, _: Any) -> Any:
        _check_unset(value)
        if not isinstance(value, list | tuple | set | frozenset):
            raise _Mismatch(describe_type(tp), value)
        if fixed and len(value) != len(args):
            raise _Mismatch(f"an array of {len(args)} items", value)
        items, errors = [], []
        for i, item in enumerate(value):
            inner = args[i] if fixed else (args[0] if args else Any)
            try:
                items.append(conv.structure(item, inner))
            except Exception as exc:
                errors.append(_item(exc, i, inner))
        if errors:
            raise IterableValidationError(f"While structuring {tp!r}", errors, tp)
        try:
            return build(items)
        except TypeError:  # a set of unhashable items
            raise _Mismatch(describe_type(tp), value) from None

    return structure


def _mapping_hook(tp: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    args = get_args(tp)
    key_type, value_type = (args[0], args[1]) if len(args) == 2 else (str, Any)

    def structure(value: Any, _: Any) -> Any:
        _check_unset(value)
        if not isinstance(value, Mapping):
            raise _Mismatch("a table", value)
        out, errors = {}, []
        for key, item in value.items():
            ref = _KeyRef(key) if isinstance(key, str) else _KeyRef(repr(key))
            try:
                out[conv.structure(key, key_type)] = conv.structure(item, value_type)
            except Exception as exc:
                errors.append(_item(exc, ref, value_type))
        if errors:
            raise IterableValidationError(f"While structuring {tp!r}", errors, tp)
        return out

    return structure


def _blame(cls: type, message: str) -> str | None:
    """The field a constructor's error message names first (validators start with their field)."""
    best: tuple[int, str] | None = None
    for f in attrs.fields(cls):
        if f.init:
            m = re.search(rf"(?<![A-Za-z0-9_]){re.escape(f.name)}(?![A-Za-z0-9_])", message)
            if m and (best is None or m.start() < best[0]):
                best = (m.start(), f.name)
    return best[1] if best else None


def _attrs_hook(cls: type, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    inner: Callable[[Any, Any], Any] = make_dict_structure_fn(
        cls, conv, _cattrs_forbid_extra_keys=True, _cattrs_detailed_validation=True
    )

    def structure(value: Any, _: Any) -> Any:
        _check_unset(value)
        if not isinstance(value, Mapping):
            raise _Mismatch("a table", value)
        try:
            return inner(value, cls)
        except ClassValidationError as exc:
            only = exc.exceptions[0] if len(exc.exceptions) == 1 else None
            if only is None or hasattr(only, "__notes__") or isinstance(only, ForbiddenExtraKeysError):
                raise
            # The class itself refused the values (an attrs validator, __attrs_post_init__).
            if isinstance(only, AsmError):
                refused = _Invalid(only.message, only.hint, foreign=True)
            elif isinstance(only, ValueError | TypeError) and str(only):
                refused = _Invalid(str(only), foreign=True)
            else:
                refused = _Invalid(f"refused: {type(only).__name__}: {only}", foreign=True)
            blamed = _blame(cls, refused.message)
            leaf = _attribute(refused, blamed) if blamed else refused
            raise ClassValidationError(exc.message, [leaf], cls) from None

    return structure


@cache
def converter() -> cattrs.Converter:
    """The strict converter every config table is structured with (built on first use)."""
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    for tp, hook in ((str, _structure_str), (int, _structure_int), (float, _structure_float),
                     (bool, _structure_bool), (Path, _structure_path), (Secret, _structure_secret)):
        conv.register_structure_hook(tp, hook)
    # Function hooks: the one registered last is asked first.
    factories: list[tuple[Callable[[Any], bool], Any]] = [
        (lambda t: isinstance(t, type) and attrs.has(t), _attrs_hook),
        (lambda t: (get_origin(t) or t) in _SEQUENCES, _sequence_hook),
        (lambda t: (get_origin(t) or t) in _MAPPINGS, _mapping_hook),
        (lambda t: get_origin(t) in (Union, types.UnionType), _union_hook),
        (lambda t: get_origin(t) is Literal, _literal_hook),
    ]
    for predicate, factory in factories:
        conv.register_structure_hook_factory(predicate, factory)
    conv.register_structure_hook_func(lambda t: isinstance(t, type) and issubclass(t, enum.Enum), _structure_enum)
    conv.register_structure_hook_func(lambda t: t is Any, _structure_any)
    from .components import structure_component, structure_components

    conv.register_structure_hook(ComponentConfig, structure_component)
    conv.register_structure_hook_func(lambda t: t == tuple[ComponentConfig, ...], structure_components)
    return conv
