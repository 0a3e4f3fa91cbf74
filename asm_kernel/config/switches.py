"""Which plugins to load, read even from a config that does not validate.

A blocked plugin must never be imported, whatever else is wrong with the config: the CLI needs
the plugins' commands before it can report the config's error, so it reads the ``[plugins]``
table leniently from the raw file. When even that is impossible (the file is not TOML, the
table is malformed) no entry point is loaded at all, because which ones are blocked is unknown.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from attrs import frozen

from ..errors import ConfigError
from .loading import load_config
from .sources import _parse_env_value, find_config_file, read_document

__all__ = ["PluginSwitches", "read_plugin_switches"]


@frozen
class PluginSwitches:
    """The ``[plugins]`` switches, and the config's error when it has one."""

    disabled: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    autoload: bool = True
    problem: ConfigError | None = None


def _strings(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)


def read_plugin_switches(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> PluginSwitches:
    """The plugin switches of the config at ``path`` (discovered when None).

    From a valid config these are ``config.plugins``; from an invalid one, the ``[plugins]``
    table of the raw file with its ``ASM__PLUGINS__...`` overrides, as far as it can be read.
    ``ASM_DISABLED_PLUGINS`` and the other process-wide switches are applied by the plugin
    manager on top of these.
    """
    env = os.environ if env is None else env
    try:
        plugins = load_config(path, env=env).plugins
        return PluginSwitches(plugins.disabled, plugins.modules, plugins.autoload)
    except ConfigError as exc:
        problem = exc
    blind = PluginSwitches(autoload=False, problem=problem)
    try:
        source, pyproject = find_config_file(path)
        data = read_document(source, pyproject) if source else {}
    except (ConfigError, OSError):
        return blind
    table = data.get("plugins", {})
    if not isinstance(table, dict):
        return blind
    table = dict(table)
    for key, raw in env.items():
        parts = key.split("__")
        if len(parts) == 3 and parts[0] == "ASM" and parts[1].lower() == "plugins":
            table[parts[2].lower()] = _parse_env_value(raw)
    disabled, modules, autoload = table.get("disabled", []), table.get("modules", []), table.get("autoload", True)
    if not _strings(disabled) or not isinstance(autoload, bool):
        return blind
    return PluginSwitches(tuple(disabled), tuple(modules) if _strings(modules) else (), autoload, problem)
