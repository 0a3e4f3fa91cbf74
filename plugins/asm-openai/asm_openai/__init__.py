"""asm-openai: the OpenAI provider for asm (Responses API, Chat Completions, compatible servers).

``use = "openai"`` in ``asm.toml``. The ``openai`` SDK is imported only when a provider is built,
never when the plugin is discovered. :mod:`asm_openai.testing` ships a wire-faithful fake OpenAI
HTTP server for tests.
"""

from __future__ import annotations

from .settings import ModelSettings, OpenAISettings

__all__ = ["OpenAISettings", "ModelSettings", "OpenAIProvider", "__version__"]

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    if name == "OpenAIProvider":
        from .provider import OpenAIProvider

        return OpenAIProvider
    raise AttributeError(f"module 'asm_openai' has no attribute {name!r}")
