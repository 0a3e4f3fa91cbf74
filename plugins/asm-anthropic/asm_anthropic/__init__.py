"""asm-anthropic: Claude models in asm through the Anthropic Messages API.

``use = "anthropic"`` in a ``[[providers]]`` table. :mod:`asm_anthropic.testing` holds a
wire-faithful fake Anthropic server for tests. Importing this package does not import the
anthropic SDK; :class:`~asm_anthropic.provider.AnthropicProvider` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import DEFAULT_MODEL, AnthropicSettings, ModelOverride

if TYPE_CHECKING:
    from .provider import AnthropicProvider

__version__ = "0.1.0"
__all__ = ["AnthropicProvider", "AnthropicSettings", "ModelOverride", "DEFAULT_MODEL", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "AnthropicProvider":
        from .provider import AnthropicProvider

        return AnthropicProvider
    raise AttributeError(f"module 'asm_anthropic' has no attribute {name!r}")
