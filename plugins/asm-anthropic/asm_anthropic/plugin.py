"""Entry point of asm-anthropic (group ``asm``): registers ``use = "anthropic"``.

Thin on purpose: discovering the plugin imports attrs and the kernel only. The anthropic SDK is
imported when a provider is built.
"""

from __future__ import annotations

from typing import Any

from asm_kernel import hookimpl
from asm_kernel.errors import ConfigError

from .settings import AnthropicSettings


def build(settings: AnthropicSettings, context: Any) -> Any:
    """Factory for ``use = "anthropic"``: ``build(settings, context)``."""
    path = getattr(context, "path", None) or "providers[0]"
    try:
        from .provider import AnthropicProvider
    except ImportError as exc:  # pragma: no cover - only without the SDK
        raise ConfigError(
            f"the anthropic SDK is not importable: {exc}",
            path=f"{path}.use",
            hint="pip install asm-anthropic (it depends on anthropic)",
        ) from exc
    return AnthropicProvider(settings, name=getattr(context, "name", "anthropic"), path=path)


@hookimpl
def asm_register_providers(register: Any) -> None:
    register(
        "anthropic",
        build,
        settings=AnthropicSettings,
        description="Claude models via the Anthropic Messages API (official anthropic SDK)",
    )
