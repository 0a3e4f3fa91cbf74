"""Configuration: file, environment and arguments layered into one validated :class:`Config`.

Sources, lowest precedence first:

1. built-in defaults;
2. the file: ``--config``/``ASM_CONFIG``, else ``./asm.toml``, else ``[tool.asm]`` in
   ``./pyproject.toml``;
3. environment overrides ``ASM__SECTION__KEY=value`` (``ASM__STORE__PATH=/tmp/x.duckdb``,
   ``ASM__PROVIDERS__0__MODEL=...``); values are parsed as TOML literals when they parse;
4. explicit overrides passed by the caller (``overrides=``).

``${VAR}`` and ``${VAR:-default}`` in string values are replaced from the environment. A value
interpolated from ``${VAR}``, or whose key looks like a secret (``api_key``, ``token``,
``password``, ...), is registered with :mod:`asm_kernel.secrets` and masked in every display
and repr. Every error names the path of the offending key and never shows a secret.

The package: :mod:`.sources` (file, environment, interpolation), :mod:`.records` (the attrs
records), :mod:`.validation` (the strict cattrs converter and its errors), :mod:`.loading`
(layering), :mod:`.switches` (plugin switches read leniently), :mod:`.starter`.
"""

from __future__ import annotations

from ..secrets import Secret
from .loading import TOP_LEVEL, config_from_dict, load_config
from .records import (
    ComponentConfig,
    Config,
    PluginsConfig,
    ResilienceConfig,
    RunDefaults,
    RuntimeConfig,
    ToolCallsConfig,
    mask,
)
from .sources import MASK, MaskedStr, Unset, default_home, find_config_file, is_secret_key
from .starter import STARTER_CONFIG, starter_config
from .switches import PluginSwitches, read_plugin_switches
from .validation import Problem, did_you_mean, validate_settings

__all__ = [
    "Secret",
    "ComponentConfig",
    "PluginsConfig",
    "RunDefaults",
    "RuntimeConfig",
    "ResilienceConfig",
    "ToolCallsConfig",
    "Config",
    "load_config",
    "config_from_dict",
    "validate_settings",
    "default_home",
    "find_config_file",
    "STARTER_CONFIG",
    "starter_config",
    "MASK",
    "MaskedStr",
    "Unset",
    "Problem",
    "PluginSwitches",
    "read_plugin_switches",
    "is_secret_key",
    "did_you_mean",
    "mask",
    "TOP_LEVEL",
]

#: The top-level keys (kept under its old name for the docs check).
_TOP_LEVEL = TOP_LEVEL
