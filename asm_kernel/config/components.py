"""Hooks for component tables (``[store]``, ``[[providers]]``...): ``use``, ``name``, settings.

A component's own settings are not validated here but when it is built, against the settings
class its plugin registered, so a command that does not build it is not stopped by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from cattrs.errors import ClassValidationError, IterableValidationError

from .hooks import _attribute, _check_unset, _Invalid, _item, _Mismatch, _UnsetVariable
from .records import ComponentConfig
from .sources import Unset

__all__ = ["structure_component", "structure_components"]


def structure_component(value: Any, _: Any) -> ComponentConfig:
    _check_unset(value)
    if not isinstance(value, Mapping):
        raise _Mismatch('a table with use = "<name>"', value)
    errors: list[Exception] = []
    use, name = value.get("use"), value.get("name")
    if use is None:
        hint = 'name a registered implementation, e.g. use = "echo"; `asm plugins` lists them'
        errors.append(_attribute(_Invalid("missing required key", hint), "use"))
    for key, item in (("use", use), ("name", name)):
        if isinstance(item, Unset):
            errors.append(_attribute(_UnsetVariable(item.var), key))
        elif item is not None and (not isinstance(item, str) or not item):
            errors.append(_attribute(_Mismatch("a non-empty string", item), key))
    if errors:
        raise ClassValidationError("While structuring a component table", errors, ComponentConfig)
    settings = {k: v for k, v in value.items() if k not in ("use", "name")}
    use = cast(str, use)
    return ComponentConfig(use=use, name=use if name is None else cast(str, name), settings=settings, path="")


def structure_components(value: Any, _: Any) -> tuple[ComponentConfig, ...]:
    _check_unset(value)
    if isinstance(value, Mapping):
        value = [value]  # a single [providers] table is a list of one
    if not isinstance(value, list | tuple):
        raise _Mismatch("an array of tables", value)
    items, errors = [], []
    for i, item in enumerate(value):
        try:
            items.append(structure_component(item, ComponentConfig))
        except Exception as exc:
            errors.append(_item(exc, i, ComponentConfig))
    if errors:
        raise IterableValidationError("While structuring components", errors, tuple)
    return tuple(items)
