"""The ``shout`` provider: streams the last user message back, upper-cased.

A real provider imports its vendor SDK at the top of this module; the plugin's entry point
(``plugin.py``) imports this module only when the provider is built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from asm_kernel import (
    Capability,
    Message,
    MessageDone,
    ModelInfo,
    ProviderRequest,
    TextBlock,
    TextDelta,
    Usage,
    UsageUpdate,
)

from .plugin import ShoutSettings


def _tokens(text: str) -> int:
    return len(text) // 4 + 1


class ShoutProvider:
    """Implements :class:`asm_kernel.interfaces.Provider` (no base class needed)."""

    capabilities = frozenset({Capability.STREAMING, Capability.USAGE})

    def __init__(self, settings: ShoutSettings | None = None, name: str = "shout") -> None:
        self.settings = settings or ShoutSettings()
        self.name = name

    @property
    def models(self) -> Sequence[ModelInfo]:
        return (ModelInfo(self.settings.model, context_window=8_192, max_output_tokens=8_192),)

    @property
    def default_model(self) -> str:
        return self.settings.model

    async def stream(self, request: ProviderRequest) -> AsyncIterator[TextDelta | UsageUpdate | MessageDone]:
        last_user = next((m for m in reversed(request.messages) if m.role == "user"), None)
        text = (last_user.text if last_user else "").upper() + "!" * self.settings.exclamations
        size = self.settings.chunk_size
        for start in range(0, len(text), size):
            yield TextDelta(text[start : start + size])
        usage = Usage(
            input_tokens=sum(_tokens(m.text) for m in request.messages),
            output_tokens=_tokens(text),
        )
        yield UsageUpdate(usage)
        # Always last, exactly once: the complete message.
        yield MessageDone(
            Message("assistant", (TextBlock(text),) if text else ()),
            stop_reason="end_turn",
            model=request.model,
            usage=usage,
        )

    async def aclose(self) -> None:
        """Release connections; nothing to do here."""
