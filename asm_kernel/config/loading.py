"""Layering: file, Python overrides, environment, interpolation and defaults into one Config."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from attrs import evolve, field, frozen

from ..errors import ConfigError
from .records import (
    ComponentConfig,
    Config,
    ContextSettings,
    PluginsConfig,
    ResilienceConfig,
    RunDefaults,
    RuntimeConfig,
    ToolCallsConfig,
)
from .sources import (
    apply_env_overrides,
    copy_document,
    default_home,
    find_config_file,
    interpolate,
    is_secret_key,
    mark_secret_keys,
    read_document,
)
from .validation import structure

__all__ = ["config_from_dict", "load_config", "TOP_LEVEL"]


@frozen
class _Document:
    """The shape of a config file; structured in one pass, so every mistake is found at once."""

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
    #: ``[serve]``: kept as data for the ``asm serve`` plugin (asm-serve), which validates it.
    serve: Mapping[str, Any] = field(factory=dict)
    tool_calls: ToolCallsConfig = field(factory=ToolCallsConfig)
    home: Path | None = None
    context: ContextSettings = field(factory=ContextSettings)


#: Every top-level key of a config.
TOP_LEVEL = frozenset(f.name for f in attrs.fields(_Document))

_LISTS = ("providers", "policies", "telemetry", "tools")


def _placed(doc: _Document) -> dict[str, Any]:
    """The component tables with their config paths, names checked for duplicates."""
    out: dict[str, Any] = {}
    for single in ("store", "router"):
        component = getattr(doc, single)
        out[single] = evolve(component, path=single) if component is not None else None
    for section in _LISTS:
        items = tuple(evolve(c, path=f"{section}[{i}]") for i, c in enumerate(getattr(doc, section)))
        seen: dict[str, str] = {}
        for item in items:
            if item.name in seen:
                raise ConfigError(
                    f"name {item.name!r} is used twice (also at {seen[item.name]})",
                    path=f"{item.path}.name",
                    hint="give each entry a distinct `name`",
                )
            seen[item.name] = item.path
        out[section] = items
    return out


def _deep_merge(target: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = value


def config_from_dict(
    source_data: Mapping[str, Any],
    *,
    source: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Validate already-parsed config data (a TOML document as a dict).

    Layers, each over the previous: ``source_data``, ``ASM__...`` variables of ``env``
    (default ``os.environ``), ``overrides``; then ``${VAR}`` interpolation from ``env``.
    """
    env = os.environ if env is None else env
    if not isinstance(source_data, Mapping):
        raise ConfigError(f"expected a table, got {type(source_data).__name__}", hint="pass the config as a dict")
    data = copy_document(source_data)
    env_paths = apply_env_overrides(data, env)
    if overrides:
        _deep_merge(data, copy_document(overrides))
    secret_paths = interpolate(data, env)
    secret_paths |= mark_secret_keys(data)
    secret_paths |= {p for p in env_paths if is_secret_key(p.rsplit(".", 1)[-1])}

    doc: _Document = structure(data, _Document)
    home = doc.home if doc.home is not None else default_home()
    if source is not None and not home.is_absolute():
        home = source.parent / home
    return Config(
        **_placed(doc),
        plugins=doc.plugins,
        run=doc.run,
        runtime=doc.runtime,
        resilience=doc.resilience,
        serve=dict(doc.serve),
        context=doc.context,
        tool_calls=doc.tool_calls,
        home=home,
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
    data = read_document(source, is_pyproject) if source else {}
    return config_from_dict(data, source=source, env=env, overrides=overrides)
