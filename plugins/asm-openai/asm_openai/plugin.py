"""asm entry point (group ``asm``, name ``openai``): registers the ``openai`` provider.

Thin on purpose: importing this module imports neither the ``openai`` SDK nor the adapter.
"""

from __future__ import annotations

from typing import Any

from asm_kernel import hookimpl

from .settings import OpenAISettings

__all__ = ["build", "asm_register_providers"]


def build(settings: OpenAISettings, context: Any) -> Any:
    """Factory for ``use = "openai"``: validates the key now, imports the SDK on first use."""
    from .provider import OpenAIProvider

    return OpenAIProvider(settings, name=context.name, path=getattr(context, "path", "providers[0]"))


@hookimpl
def asm_register_providers(register: Any) -> None:
    register(
        "openai",
        build,
        settings=OpenAISettings,
        description="OpenAI Responses / Chat Completions, or any OpenAI-compatible server (base_url)",
    )
