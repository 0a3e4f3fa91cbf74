"""Configuration: file, environment and arguments layered into one validated :class:`Config`.

Sources, lowest precedence first:

1. built-in defaults;
2. the file: ``--config``/``ASM_CONFIG``, else ``./asm.toml``, else ``[tool.asm]`` in
   ``./pyproject.toml``;
3. environment overrides ``ASM__SECTION__KEY=value`` (``ASM__STORE__PATH=/tmp/x.duckdb``,
   ``ASM__PROVIDERS__0__MODEL=...``); values are parsed as TOML literals when they parse;
4. explicit overrides passed by the caller (CLI flags).

``${VAR}`` and ``${VAR:-default}`` in string values are replaced from the environment. A value
interpolated from ``${VAR}``, or whose key looks like a secret (``api_key``, ``token``,
``password``, ...), is masked in every display.
Every error names the path of the offending key.
"""

from __future__ import annotations

import difflib
import enum
import os
import re
import sys
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import attrs
from attrs import field, frozen

from .errors import ConfigError
from .secrets import Secret

__all__ = [
    "Secret",
    "ComponentConfig",
    "PluginsConfig",
    "RunDefaults",
    "RuntimeConfig",
    "ResilienceConfig",
    "Config",
    "load_config",
    "config_from_dict",
    "validate_settings",
    "default_home",
    "find_config_file",
    "STARTER_CONFIG",
]

_SECRET_KEY = re.compile(r"(api[_-]?key|secret|token|password|passwd|credential)", re.I)
_INTERPOLATE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
MASK = "********"


class _Unset:
    """An interpolated variable that is not set; an error only if the component is built."""

    __slots__ = ("var",)

    def __init__(self, var: str) -> None:
        self.var = var

    def __repr__(self) -> str:
        return f"${{{self.var}}}"


@frozen
class ComponentConfig:
    """One ``[store]``/``[[providers]]``/... table: ``use`` plus the component's own settings."""

    use: str
    name: str
    settings: Mapping[str, Any]
    path: str


@frozen
class PluginsConfig:
    disabled: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    autoload: bool = True


@frozen
class RunDefaults:
    """``[run]``: defaults for every run unless the call overrides them."""

    provider: str | None = None
    model: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    max_turns: int = 8
    agent_id: str = "default"
    requires: tuple[str, ...] = ()
    prefers: tuple[str, ...] = ()


def _at_least_one(instance: Any, attribute: Any, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer of at least 1, got {value!r}")


def _positive_number(instance: Any, attribute: Any, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive number of seconds, got {value!r}")


def _non_negative_number(instance: Any, attribute: Any, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{attribute.name} must be a number >= 0, got {value!r}")


def _non_negative_int(instance: Any, attribute: Any, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be an integer >= 0, got {value!r}")


@frozen
class ResilienceConfig:
    """``[resilience]``: retries, failover and circuit breakers."""

    max_attempts: int = field(default=2, validator=_at_least_one)
    initial_backoff: float = field(default=0.5, validator=_non_negative_number)
    max_backoff: float = field(default=8.0, validator=_non_negative_number)
    multiplier: float = field(default=2.0, validator=_positive_number)
    jitter: bool = True
    deadline: float = field(default=120.0, validator=_positive_number)
    failover: bool = True
    breaker_threshold: int = field(default=5, validator=_at_least_one)
    breaker_cooldown: float = field(default=30.0, validator=_positive_number)


@frozen
class RuntimeConfig:
    """``[runtime]``: run queues, concurrency limits and crash recovery (see the serving guide)."""

    max_concurrent_runs: int = field(default=1, validator=_at_least_one)
    max_queued_runs: int = field(default=100, validator=_at_least_one)
    max_active_sessions: int = field(default=10_000, validator=_at_least_one)
    max_running_runs: int = field(default=1_000, validator=_at_least_one)
    idle_timeout: float = field(default=300.0, validator=_positive_number)
    shutdown_grace: float = field(default=10.0, validator=_positive_number)
    on_paused: Literal["wait", "reject"] = "wait"
    recovery: Literal["fail", "requeue"] = "fail"
    max_recovery_attempts: int = field(default=3, validator=_non_negative_int)
    #: Seconds a run's lease lasts without a heartbeat; a run whose lease expired is taken to
    #: belong to a dead process and may be recovered by another.
    lease_ttl: float = field(default=30.0, validator=_positive_number)
    #: Seconds between heartbeats that renew the lease of a running run (default lease_ttl / 3).
    heartbeat_interval: float | None = None
    #: This process's worker id (owner of its runs' leases); default ``host:pid:random``.
    worker_id: str | None = None


@frozen
class Config:
    store: ComponentConfig | None = None
    providers: tuple[ComponentConfig, ...] = ()
    router: ComponentConfig | None = None
    policies: tuple[ComponentConfig, ...] = ()
    telemetry: tuple[ComponentConfig, ...] = ()
    tools: tuple[ComponentConfig, ...] = ()
    plugins: PluginsConfig = field(factory=PluginsConfig)
    run: RunDefaults = field(factory=RunDefaults)
    runtime: RuntimeConfig = field(factory=RuntimeConfig)
    resilience: ResilienceConfig = field(factory=ResilienceConfig)
    home: Path = field(factory=lambda: default_home())
    source: Path | None = None
    secret_paths: frozenset[str] = frozenset()
    raw: Mapping[str, Any] = field(factory=dict)

    @property
    def config_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    def masked(self) -> dict[str, Any]:
        """The effective config as data, with every secret replaced by ``********``."""
        return _mask(self.raw, "", self.secret_paths)


def _mask(value: Any, path: str, secrets: frozenset[str]) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if sub in secrets or (_SECRET_KEY.search(str(key)) and isinstance(item, str | _Unset)):
                out[key] = MASK
            else:
                out[key] = _mask(item, sub, secrets)
        return out
    if isinstance(value, list):
        return [_mask(item, f"{path}[{i}]", secrets) for i, item in enumerate(value)]
    if isinstance(value, _Unset):
        return repr(value)
    return value


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


def find_config_file(explicit: str | os.PathLike[str] | None = None) -> tuple[Path | None, bool]:
    """The config file to read and whether it is a ``pyproject.toml``."""
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
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, OSError):
            return None, False
        if "asm" in data.get("tool", {}):
            return pyproject, True
    return None, False


def _read_file(path: Path, pyproject: bool) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint="fix the syntax at that line") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if pyproject:
        data = data.get("tool", {}).get("asm", {})
    return data


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply_env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> set[str]:
    paths: set[str] = set()
    for key, raw in env.items():
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
            path = f"{path}.{part}" if path else part
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


def _interpolate(value: Any, path: str, env: Mapping[str, str], secrets: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{path}.{k}" if path else k, env, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", env, secrets) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = _INTERPOLATE.fullmatch(value)
    if whole and whole.group(1) not in env and whole.group(2) is None:
        secrets.add(path)
        return _Unset(whole.group(1))

    def replace(match: re.Match[str]) -> str:
        var, default = match.group(1), match.group(2)
        if var in env:
            return env[var]
        if default is not None:
            return default
        raise ConfigError(
            f"environment variable {var} is not set",
            path=path,
            hint=f"export {var}=... or use ${{{var}:-default}}",
        )

    secrets.add(path)
    return _INTERPOLATE.sub(replace, value)


_TOP_LEVEL = {
    "store",
    "providers",
    "router",
    "policies",
    "telemetry",
    "tools",
    "plugins",
    "run",
    "runtime",
    "resilience",
    "home",
}


def _did_you_mean(key: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.6)
    return f'did you mean "{close[0]}"?' if close else f"known keys: {', '.join(sorted(options))}"


def _component(data: Any, path: str, default_name: str | None = None) -> ComponentConfig:
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a table, got {type(data).__name__}", path=path, hint='write it as a table with use = "<name>"'
        )
    use = data.get("use")
    if use is None and default_name is not None:
        use = default_name
    if not isinstance(use, str) or not use:
        raise ConfigError(
            "missing required key `use`",
            path=f"{path}.use",
            hint='name a registered implementation, e.g. use = "echo"; `asm plugins` lists them',
        )
    name = data.get("name", use)
    if not isinstance(name, str) or not name:
        raise ConfigError("`name` must be a non-empty string", path=f"{path}.name")
    settings = {k: v for k, v in data.items() if k not in ("use", "name")}
    return ComponentConfig(use=use, name=name, settings=settings, path=path)


def _components(data: Any, path: str) -> tuple[ComponentConfig, ...]:
    if data is None:
        return ()
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ConfigError(
            f"expected an array of tables, got {type(data).__name__}", path=path, hint=f"write [[{path}]] tables"
        )
    items = tuple(_component(item, f"{path}[{i}]") for i, item in enumerate(data))
    seen: dict[str, str] = {}
    for item in items:
        if item.name in seen:
            raise ConfigError(
                f"name {item.name!r} is used twice (also at {seen[item.name]})",
                path=f"{item.path}.name",
                hint="give each entry a distinct `name`",
            )
        seen[item.name] = item.path
    return items


def config_from_dict(
    source_data: Mapping[str, Any],
    *,
    source: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Validate already-parsed config data (a TOML document as a dict)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = _deep_copy(dict(source_data))
    env_paths = _apply_env_overrides(data, env)
    if overrides:
        _deep_merge(data, overrides)
    secret_paths: set[str] = set()
    data = _interpolate(data, "", env, secret_paths)
    secret_paths |= {p for p in env_paths if _SECRET_KEY.search(p)}

    for key in data:
        if key not in _TOP_LEVEL:
            raise ConfigError(f"unknown key; {_did_you_mean(key, _TOP_LEVEL)}", path=key)

    plugins = data.get("plugins", {})
    if not isinstance(plugins, dict):
        raise ConfigError("expected a table", path="plugins")
    plugins_cfg = validate_settings(PluginsConfig, plugins, "plugins")
    run_cfg = validate_settings(RunDefaults, data.get("run", {}), "run")
    runtime_cfg = validate_settings(RuntimeConfig, data.get("runtime", {}), "runtime")
    resilience_cfg = validate_settings(ResilienceConfig, data.get("resilience", {}), "resilience")

    home = data.get("home")
    if home is not None and not isinstance(home, str):
        raise ConfigError("expected a path string", path="home")
    home_path = Path(home).expanduser() if home else default_home()
    if source is not None and not home_path.is_absolute():
        home_path = source.parent / home_path

    return Config(
        store=_component(data["store"], "store") if "store" in data else None,
        providers=_components(data.get("providers"), "providers"),
        router=_component(data["router"], "router") if "router" in data else None,
        policies=_components(data.get("policies"), "policies"),
        telemetry=_components(data.get("telemetry"), "telemetry"),
        tools=_components(data.get("tools"), "tools"),
        plugins=plugins_cfg,
        run=run_cfg,
        runtime=runtime_cfg,
        resilience=resilience_cfg,
        home=home_path,
        source=source,
        secret_paths=frozenset(secret_paths),
        raw=data,
    )


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Find, read, layer and validate the configuration."""
    source, is_pyproject = find_config_file(path)
    data = _read_file(source, is_pyproject) if source else {}
    return config_from_dict(data, source=source, env=env, overrides=overrides)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _deep_merge(target: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = _deep_copy(value)


# -- settings validation ----------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "nothing"
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if origin in (list, tuple, typing.Sequence, frozenset):
        return f"a list of {_type_name(get_args(tp)[0])}" if get_args(tp) else "a list"
    if origin in (dict, Mapping):
        return "a table"
    if tp is Secret:
        return "a string (secret)"
    if isinstance(tp, type) and attrs.has(tp):
        return "a table"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(repr(m.value) for m in tp)
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false", Path: "a path string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(value: Any, tp: Any, path: str) -> Any:
    if isinstance(value, _Unset):
        raise ConfigError(
            f"environment variable {value.var} is not set",
            path=path,
            hint=f"export {value.var}=...; the config reads it from ${{{value.var}}}",
        )
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"expected {_type_name(tp)}, got {_show(value)}", path=path)
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"expected one of {_type_name(tp)}, got {_show(value)}", path=path)
    if origin in (list, tuple, typing.Sequence, frozenset):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"expected {_type_name(tp)}, got {_show(value)}", path=path)
        elems = [a for a in get_args(tp) if a is not Ellipsis]
        inner = elems[0] if elems else Any
        items = [_coerce(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
        if origin is frozenset:
            return frozenset(items)
        return items if origin is list else tuple(items)
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise ConfigError(f"expected a table, got {_show(value)}", path=path)
        args = get_args(tp)
        inner = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, inner, f"{path}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and attrs.has(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"expected a table, got {_show(value)}", path=path)
        return validate_settings(tp, value, path)
    if tp is Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return Secret(value)
        raise ConfigError(f"expected a string, got {type(value).__name__}", path=path)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"expected one of {_type_name(tp)}, got {_show(value)}", path=path) from None
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, str | Path):
            return Path(value).expanduser()
    else:
        if isinstance(tp, type) and isinstance(value, tp):
            return value
    raise ConfigError(f"expected {_type_name(tp)}, got {_show(value)}", path=path)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"the string {value[:40]!r}" if not _looks_secret(value) else "a string"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _looks_secret(value: str) -> bool:
    return len(value) > 20 and " " not in value


def validate_settings(cls: type, data: Mapping[str, Any], path: str) -> Any:
    """Build attrs ``cls`` from config ``data``, with a path-precise :class:`ConfigError`.

    Unknown keys (with a did-you-mean), missing required keys and wrong types are refused.
    An attrs validator that raises ``ValueError``/``TypeError`` becomes a ConfigError at its key.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a table, got {_show(data)}", path=path)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    aliases = {(f.alias or f.name): f for f in fields.values() if f.init}

    def sub(key: str) -> str:
        return f"{path}.{key}" if path else key

    for key in data:
        if key not in aliases:
            raise ConfigError(f"unknown key; {_did_you_mean(key, aliases)}", path=sub(key))
    kwargs: dict[str, Any] = {}
    for alias, f in aliases.items():
        if alias in data:
            kwargs[alias] = _coerce(data[alias], hints.get(f.name, Any), sub(alias))
        elif f.default is attrs.NOTHING:
            raise ConfigError(
                "missing required key", path=sub(alias), hint=f"set it to {_type_name(hints.get(f.name, Any))}"
            )
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        message = str(exc)
        bad = next((a for a in kwargs if f"'{a}'" in message or a in message), None)
        raise ConfigError(message, path=sub(bad) if bad else path) from None


STARTER_CONFIG = """\
# asm configuration. Every key is documented in docs/reference/config.md.
# Values like ${VAR} are read from the environment when asm starts; they are never stored.

[store]
use = "duckdb"                 # the embedded default (pip install asm-duckdb); "memory" keeps nothing
path = "sessions.duckdb"       # relative to this file

[[providers]]
name = "echo"                  # what runs and `asm run --provider` refer to
use = "echo"                   # offline provider that answers with your input

# [[providers]]
# name = "claude"
# use = "anthropic"            # pip install asm-anthropic
# model = "claude-sonnet-5-5"
# api_key = "${ANTHROPIC_API_KEY}"

# [[providers]]
# name = "local"
# use = "openai"               # pip install asm-openai; any OpenAI-compatible server
# api = "chat"
# base_url = "http://127.0.0.1:8000/v1"
# model = "qwen3"

[run]
# provider = "echo"            # default provider for runs (else the first one above)
# system = "You are a helpful assistant."
max_turns = 8                  # model calls per run when tools are involved

[plugins]
disabled = []                  # plugin names never to import
modules = []                   # your own hook modules, e.g. ["my_hooks"]
"""
