"""Where config data comes from: the file, ``ASM__`` environment overrides and ``${VAR}``.

Everything here works on plain data (the TOML document as dicts and lists) and raises
:class:`~asm_kernel.errors.ConfigError` with the file or key path for anything it cannot read:
invalid UTF-8, invalid TOML, nesting deeper than :data:`MAX_DEPTH`, an override that points
nowhere. Interpolated values and the values of secret-looking keys are wrapped in
:class:`MaskedStr` and registered with :mod:`asm_kernel.secrets` as soon as they are read, so
they are masked in every repr and display and redacted from everything asm prints.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..secrets import register_secret

__all__ = [
    "MASK",
    "MAX_DEPTH",
    "MaskedStr",
    "Unset",
    "is_secret_key",
    "join_key",
    "default_home",
    "find_config_file",
    "read_document",
    "copy_document",
    "apply_env_overrides",
    "interpolate",
    "mark_secret_keys",
]

#: What a secret looks like in every display.
MASK = "********"
#: Deeper config data is refused: nothing asm reads needs it, and it would exhaust recursion.
MAX_DEPTH = 64

_INTERPOLATE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_SECRET_WORDS = {"secret", "token", "password", "passwd", "credential", "credentials", "apikey", "authorization"}
_API_KEY = re.compile(r"api[_-]?key", re.I)
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
# TOML strings and comments (skipped whole) and the brackets that nest arrays and inline tables.
_TOML_TOKEN = re.compile(
    r'"""(?:[^\\]|\\.)*?"""|\'\'\'.*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*|[\[\]{}]', re.S
)


class MaskedStr(str):
    """A config string that must not be shown: interpolated from ``${VAR}``, or under a secret key.

    It is an ordinary ``str`` for the code that uses it; only its ``repr`` is masked, so records
    and dicts holding it print ``'********'``.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(MASK)


class Unset:
    """A value that interpolates ``${VAR}`` with ``VAR`` not set: an error only where it is used."""

    __slots__ = ("var",)

    def __init__(self, var: str) -> None:
        self.var = var

    def __repr__(self) -> str:
        return f"${{{self.var}}}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unset) and other.var == self.var

    def __hash__(self) -> int:
        return hash(("Unset", self.var))


def is_secret_key(key: object) -> bool:
    """Whether a setting named ``key`` holds a secret (``api_key``, ``auth_token``, ``password``...).

    ``token`` counts as a word of the name only, so ``max_tokens`` is not a secret.
    """
    if not isinstance(key, str):
        return False
    if _API_KEY.search(key):
        return True
    return any(word in _SECRET_WORDS for word in re.split(r"[^a-z]+", key.lower()))


def join_key(path: str, key: object) -> str:
    """``path.key``, quoting a key that is not a bare TOML key (``plugins."odd key"``)."""
    text = key if isinstance(key, str) and _BARE_KEY.match(key) else json.dumps(str(key), ensure_ascii=False)
    return f"{path}.{text}" if path else text


def default_home() -> Path:
    """``ASM_HOME``, else the platform's per-user data directory for ``asm``."""
    env = os.environ.get("ASM_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "asm"


# -- the file ---------------------------------------------------------------------------------


def _too_deep(text: str) -> int | None:
    """The line where ``text`` nests brackets deeper than MAX_DEPTH, if it does.

    Checked before parsing: tomllib recurses once per level, and near the interpreter's limit
    even the garbage collector's finalizers fail, printing to stderr.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return None
    depth = 0
    for token in _TOML_TOKEN.finditer(text):
        kind = token.group()
        if kind in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return text.count("\n", 0, token.start()) + 1
        elif kind in "]}":
            depth = max(0, depth - 1)
    return None


def _parse(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror or exc}",
            hint="check the path and its permissions",
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        at = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at line {at})",
            hint="save the file as UTF-8",
        ) from None
    deep = _too_deep(text)
    if deep is not None:
        raise ConfigError(
            f"{path} nests arrays or tables too deeply to read (line {deep})",
            hint=f"config data may nest at most {MAX_DEPTH} levels",
        )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint="fix the syntax at that line") from None
    except RecursionError:
        raise ConfigError(
            f"{path} nests arrays or tables too deeply to read",
            hint=f"config data may nest at most {MAX_DEPTH} levels",
        ) from None
    except ValueError as exc:  # tomllib lets int() refuse a number with thousands of digits
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint="write numbers of at most 19 digits") from None


def find_config_file(explicit: str | os.PathLike[str] | None = None) -> tuple[Path | None, bool]:
    """The config file to read and whether it is a ``pyproject.toml``.

    A ``pyproject.toml`` in the current directory is only used when it has a ``[tool.asm]``
    table; one that cannot be read is an error, since asm cannot tell whether it configures asm.
    """
    chosen = explicit or os.environ.get("ASM_CONFIG")
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"config file {str(path)!r} does not exist",
                hint="pass an existing file with --config/ASM_CONFIG, or run `asm init`",
            )
        return path, path.name == "pyproject.toml"
    here = Path.cwd()
    if (here / "asm.toml").is_file():
        return here / "asm.toml", False
    pyproject = here / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = _parse(pyproject)
        except ConfigError as exc:
            raise ConfigError(
                exc.message,
                hint=f"{exc.hint}; asm reads [tool.asm] from ./pyproject.toml when there is no ./asm.toml",
            ) from None
        tool = data.get("tool")
        if isinstance(tool, dict) and "asm" in tool:
            return pyproject, True
    return None, False


def read_document(path: Path, pyproject: bool) -> dict[str, Any]:
    """The config table of ``path`` (``[tool.asm]`` of a ``pyproject.toml``)."""
    data = _parse(path)
    if not pyproject:
        return data
    tool = data.get("tool", {})
    table = tool.get("asm", {}) if isinstance(tool, dict) else None
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: tool.asm must be a table", path="tool.asm", hint="write it as [tool.asm]")
    return table


def copy_document(data: Mapping[str, Any], root: str = "") -> dict[str, Any]:
    """A deep copy of ``data``; refuses non-string keys and nesting deeper than MAX_DEPTH.

    Iterative, so no nesting depth can exhaust the interpreter's recursion limit.
    """
    out: dict[str, Any] = {}
    stack: list[tuple[Any, Any, str, int]] = [(data, out, root, 0)]
    while stack:
        source, target, path, depth = stack.pop()
        if depth >= MAX_DEPTH:
            shown = path if len(path) <= 80 else path[:77] + "..."
            raise ConfigError(
                f"nested more than {MAX_DEPTH} levels deep", path=shown, hint="flatten it; asm reads nothing that deep"
            )
        items = source.items() if isinstance(source, Mapping) else enumerate(source)
        for key, value in items:
            if isinstance(source, Mapping) and not isinstance(key, str):
                raise ConfigError(f"key {key!r} is not a string", path=path or None, hint="config keys are strings")
            sub = join_key(path, key) if isinstance(source, Mapping) else f"{path}[{key}]"
            if isinstance(value, Mapping):
                copy: Any = {}
            elif isinstance(value, list | tuple):
                copy = [None] * len(value)
            else:
                copy = value
            target[key] = copy
            if isinstance(value, Mapping | list | tuple):
                stack.append((value, copy, sub, depth + 1))
    return out


# -- environment overrides --------------------------------------------------------------------


def _parse_env_value(raw: str) -> Any:
    if _too_deep(raw) is not None:
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, ValueError, RecursionError):  # not a TOML literal: a string
        return raw


def apply_env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> set[str]:
    """Apply every ``ASM__SECTION__KEY=value`` to ``data``; return the paths they set."""
    paths: set[str] = set()
    for key, raw in sorted(env.items()):
        if not key.startswith("ASM__"):
            continue
        parts = [p.lower() for p in key[len("ASM__") :].split("__") if p]
        if not parts:
            continue
        target: Any = data
        path = ""
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(target, list):
                if not part.isdigit() or int(part) >= len(target):
                    raise ConfigError(
                        f"environment override {key} points at list index {part!r}, which does not exist",
                        path=path,
                        hint=f"use an index below {len(target)}",
                    )
                idx = int(part)
                path = f"{path}[{idx}]"
                if last:
                    target[idx] = _parse_env_value(raw)
                else:
                    target = target[idx]
                continue
            if not isinstance(target, dict):
                raise ConfigError(
                    f"environment override {key} sets a key inside a value that is not a table",
                    path=path,
                    hint="override the value itself, or make it a table in the config file",
                )
            path = join_key(path, part)
            if last:
                target[part] = _parse_env_value(raw)
            elif part not in target and parts[i + 1].isdigit():
                raise ConfigError(
                    f"environment override {key} points at list index {parts[i + 1]}, which does not exist",
                    path=path,
                    hint="an override can change a list entry the config file defines, not add one",
                )
            else:
                target = target.setdefault(part, {})
        paths.add(path)
    return paths


# -- interpolation and secrets ----------------------------------------------------------------


def _interpolate_value(value: str, env: Mapping[str, str]) -> MaskedStr | Unset:
    unset: list[str] = []
    found: list[str] = []

    def replace(match: re.Match[str]) -> str:
        var, default = match.group(1), match.group(2)
        if var in env:
            found.append(env[var])
            return env[var]
        if default is not None:
            return default
        unset.append(var)
        return ""

    result = _INTERPOLATE.sub(replace, value)
    if unset:
        return Unset(unset[0])
    for secret in found:
        register_secret(secret, probable=True)
    if found:
        register_secret(result, probable=True)
    return MaskedStr(result)


def interpolate(data: Any, env: Mapping[str, str], path: str = "") -> set[str]:
    """Replace ``${VAR}``/``${VAR:-default}`` in every string of ``data`` in place.

    Returns the paths of the interpolated values. An interpolated value becomes a
    :class:`MaskedStr` (its environment values registered as secrets); one naming a variable
    that is not set, without a default, becomes :class:`Unset` and fails only where it is used.
    """
    paths: set[str] = set()
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in list(items):
        sub = join_key(path, key) if isinstance(data, dict) else f"{path}[{key}]"
        if isinstance(value, str) and "${" in value and _INTERPOLATE.search(value):
            data[key] = _interpolate_value(value, env)
            paths.add(sub)
        elif isinstance(value, dict | list):
            paths |= interpolate(value, env, sub)
    return paths


def _mask_all(value: Any) -> Any:
    if isinstance(value, str) and not isinstance(value, MaskedStr):
        register_secret(value)
        return MaskedStr(value)
    if isinstance(value, list):
        return [_mask_all(v) for v in value]
    if isinstance(value, dict):
        return {k: _mask_all(v) for k, v in value.items()}
    return value


def mark_secret_keys(data: Any, path: str = "") -> set[str]:
    """Wrap (and register) every string under a secret-looking key; return their paths."""
    paths: set[str] = set()
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in list(items):
        sub = join_key(path, key) if isinstance(data, dict) else f"{path}[{key}]"
        if isinstance(data, dict) and is_secret_key(key) and isinstance(value, str | list | dict):
            data[key] = _mask_all(value)
            paths.add(sub)
        elif isinstance(value, dict | list):
            paths |= mark_secret_keys(value, sub)
    return paths
