"""Validation of config data into attrs records, on cattrs.

One strict converter (:func:`.hooks.converter`) structures every config table: the kernel's own
sections and every component's ``settings`` class, so the same rules hold everywhere:

* unknown keys are refused (cattrs' forbidden extra keys) with a did-you-mean;
* missing required keys, wrong types (no coercion: ``"8"`` is not an integer, ``true`` is not
  ``1``), unknown ``Literal``/enum values and values an attrs validator refuses are errors;
* a union tries the branches whose shape fits the value and reports the inner error of the
  branch that fits, so a mistake inside an optional table keeps its precise path;
* a value interpolated from an unset ``${VAR}`` fails where it is used, naming the variable.

Errors come back as one :class:`~asm_kernel.errors.ConfigError` whose path is precise
(``providers[1].model``); cattrs' :func:`cattrs.transform_error` walks the error tree. Messages
never contain a secret: values are described by type when they are interpolated or sit under
a secret-looking key, and any text a validator wrote is scrubbed of every secret in the data.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import attrs
from attrs import frozen

from ..errors import ConfigError
from ..secrets import Secret, redact_text
from .sources import MASK, MaskedStr, Unset, is_secret_key, join_key

# cattrs and the hooks are imported when something is validated, not when asm_kernel is:
# `asm --help` needs neither.

__all__ = ["Problem", "structure", "validate_settings", "did_you_mean", "config_error", "secret_values"]
_NONE = type(None)

T = TypeVar("T")
_KEY_TOKEN = re.compile(r"\[\x01(.*?)\x01\]")
_LEAF_TOKEN = re.compile(r"\x00(\d+)\x00 @ (.*)", re.S)


@frozen
class Problem:
    """One thing wrong with the config: where, what, and how to fix it."""

    path: str
    message: str
    hint: str | None = None

    def render(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        return f"{text} ({self.hint})" if self.hint else text


def _show(value: Any, hidden: bool) -> str:
    """A value as an error message may show it: by type only when it may be secret."""
    if isinstance(value, Unset):
        return f"${{{value.var}}}, which is not set"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if hidden or isinstance(value, MaskedStr) or (len(value) > 20 and " " not in value):
            return "a string"
        return f"the string {value!r}"
    if isinstance(value, int):
        return f"the integer {value}" if value.bit_length() <= 64 else "a very large integer"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, Secret):
        return "a secret"
    kinds = [(Mapping, "a table"), (list | tuple | set | frozenset, "an array"), (dt.datetime, "a date-time"),
             (dt.date, "a date"), (dt.time, "a time"), (_NONE, "nothing")]
    return next((name for kind, name in kinds if isinstance(value, kind)), f"a {type(value).__name__}")


def did_you_mean(key: str, options: Iterable[str]) -> str:
    """``did you mean "x"?`` for the closest option, else the list of options."""
    options = sorted(options)
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
    return f'did you mean "{close[0]}"?' if close else f"known keys: {', '.join(options) or 'none'}"


# -- errors -----------------------------------------------------------------------------------


def _problem(exc: BaseException, tp: Any, path: str, secrets: list[str]) -> list[Problem]:
    from cattrs.errors import ForbiddenExtraKeysError, StructureHandlerNotFoundError

    from .hooks import _Invalid, _Mismatch, _UnsetVariable, describe_type

    last = path.rsplit(".", 1)[-1]
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [f.name for f in attrs.fields(exc.cl) if f.init] if attrs.has(exc.cl) else []
        return [Problem(join_key(path, key), f"unknown key; {did_you_mean(key, known)}")
                for key in sorted(map(str, exc.extra_fields))]
    if isinstance(exc, _Mismatch):
        hidden = is_secret_key(last.strip('"'))
        return [Problem(path, f"expected {exc.expected}, got {_show(exc.value, hidden)}")]
    if isinstance(exc, _UnsetVariable):
        hint = f"export {exc.var}=..., or write ${{{exc.var}:-default}} in the config"
        return [Problem(path + exc.where, f"environment variable {exc.var} is not set", hint)]
    if isinstance(exc, _Invalid):
        if exc.foreign:  # a validator's own words may quote the value
            return [Problem(path, _scrub(exc.message, secrets) or "refused", _scrub(exc.hint, secrets))]
        return [Problem(path, exc.message, exc.hint)]
    if isinstance(exc, KeyError):
        return [Problem(path, "missing required key", f"set it to {describe_type(tp)}" if tp is not None else None)]
    if isinstance(exc, StructureHandlerNotFoundError):
        return [Problem(path, f"cannot be validated: its settings declare the type {exc.type_!r}, which asm "
                              "cannot read", "this is a bug in the plugin that registered the component")]
    return [Problem(path, f"invalid value ({type(exc).__name__})")]


def _problems(exc: BaseException, root: str, secrets: list[str]) -> list[Problem]:
    import cattrs

    leaves: list[tuple[BaseException, Any]] = []

    def token(leaf: BaseException, tp: Any) -> str:
        leaves.append((leaf, tp))
        return f"\x00{len(leaves) - 1}\x00"

    found: list[Problem] = []
    for line in cattrs.transform_error(exc, path=root, format_exception=token):
        match = _LEAF_TOKEN.fullmatch(line)
        if match is None:  # not one of ours; transform_error's own wording
            found.append(Problem(root, "invalid value"))
            continue
        path = _KEY_TOKEN.sub(lambda m: _key_segment(json.loads(m.group(1))), match.group(2)).lstrip(".")
        leaf, tp = leaves[int(match.group(1))]
        found.extend(_problem(leaf, tp, path, secrets))
    return found or [Problem(root, "invalid value")]


def _key_segment(key: str) -> str:
    return "." + join_key("", key)


def secret_values(data: Any) -> list[str]:
    """Every secret string in config ``data`` (interpolated, under a secret key, Secret), longest first."""
    found: set[str] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        item, secret = stack.pop()
        if isinstance(item, Secret):
            found.add(item.reveal())
        elif isinstance(item, str):
            if secret or isinstance(item, MaskedStr):
                found.add(str(item))
        elif isinstance(item, Mapping):
            stack.extend((v, secret or is_secret_key(k)) for k, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((v, secret) for v in item)
    return sorted((s for s in found if s), key=len, reverse=True)


def _scrub(text: str | None, secrets: list[str]) -> str | None:
    """``text`` without any secret, or any run of four or more characters of one."""
    if not text:
        return text
    for secret in secrets:
        text = text.replace(secret, MASK)
        for size in range(min(len(secret) - 1, 64), 3, -1):
            for start in range(len(secret) - size + 1):
                part = secret[start : start + size]
                if part in text:
                    text = text.replace(part, MASK)
    return redact_text(text)


def config_error(exc: BaseException, root: str, data: Any) -> ConfigError:
    """The ConfigError for a failed structure of ``data`` at ``root``: every problem, scrubbed."""
    problems = [
        Problem(p.path, redact_text(p.message), redact_text(p.hint) if p.hint else None)
        for p in _problems(exc, root, secret_values(data))
    ]
    first = problems[0]
    hint = first.hint
    if len(problems) > 1:
        more = ", ".join(p.path or "(top level)" for p in problems[1:4]) + (", ..." if len(problems) > 4 else "")
        more = f"{len(problems) - 1} more problem{'s' if len(problems) > 2 else ''}: {more}"
        hint = f"{hint}; {more}" if hint else more
    return ConfigError(first.message, path=first.path or None, hint=hint, problems=[p.render() for p in problems])


def structure(data: Any, tp: Any, path: str = "") -> Any:
    """``data`` structured as ``tp`` by the config converter, or one path-precise ConfigError."""
    from .hooks import converter

    try:
        return converter().structure(data, tp)
    except RecursionError:
        raise ConfigError("nested too deeply to validate", path=path or None, hint="flatten the data") from None
    except Exception as exc:
        raise config_error(exc, path, data) from None


def validate_settings(cls: type[T], data: Mapping[str, Any], path: str) -> T:
    """Build attrs ``cls`` from config ``data``, with a path-precise :class:`ConfigError`.

    Unknown keys (with a did-you-mean), missing required keys and wrong types are refused;
    an attrs validator that raises becomes a ConfigError at the key it names. Every problem
    is listed in the error's ``details["problems"]``; the message shows the first.
    """
    return structure(data, cls, path)  # type: ignore[no-any-return]
