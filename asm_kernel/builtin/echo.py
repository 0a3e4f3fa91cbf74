"""``use = "echo"``: an offline provider that streams the last user message back.

It needs no key and no network, streams in chunks like a real model, and reports usage
estimated from the text, so demos and tests exercise the whole run path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from attrs import field, frozen

from .. import hookimpl
from ..context.tokens import estimate_messages, estimate_text
from ..errors import ConfigError
from ..model import (
    Capability,
    Message,
    MessageDone,
    ModelInfo,
    Price,
    ProviderRequest,
    StreamEvent,
    TextBlock,
    TextDelta,
    Usage,
    UsageUpdate,
)


def _positive(instance: Any, attribute: Any, value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value}")


def _non_negative(instance: Any, attribute: Any, value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


@frozen
class EchoSettings:
    model: str = "echo-1"
    prefix: str = ""
    chunk_size: int = field(default=8, validator=_positive)
    delay: float = field(default=0.0, validator=_non_negative)
    context_window: int = field(default=200_000, validator=_positive)


class EchoProvider:
    """Answers ``prefix + <last user text>``, ``chunk_size`` characters per delta."""

    capabilities = frozenset({Capability.STREAMING, Capability.SYSTEM_PROMPT, Capability.CANCEL, Capability.USAGE})

    def __init__(self, settings: EchoSettings | None = None, name: str = "echo") -> None:
        self.settings = settings or EchoSettings()
        self.name = name

    def __repr__(self) -> str:
        return f"EchoProvider(name={self.name!r}, model={self.settings.model!r})"

    @property
    def models(self) -> Sequence[ModelInfo]:
        return (
            ModelInfo(
                self.settings.model,
                context_window=self.settings.context_window,
                max_output_tokens=self.settings.context_window,
                price=Price(0.0, 0.0, source="echo is free", as_of="2026-11-27"),
            ),
        )

    @property
    def default_model(self) -> str:
        return self.settings.model

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamEvent]:
        last_user = next((m for m in reversed(request.messages) if m.role == "user"), None)
        text = self.settings.prefix + (last_user.text if last_user else "")
        if request.max_tokens is not None:
            text = text[: request.max_tokens * 4]
        input_tokens = estimate_messages(request.messages, request.system)
        yield UsageUpdate(Usage(input_tokens=input_tokens))
        size = self.settings.chunk_size
        for start in range(0, len(text), size):
            if self.settings.delay:
                await asyncio.sleep(self.settings.delay)
            yield TextDelta(text[start : start + size])
        usage = Usage(input_tokens=input_tokens, output_tokens=estimate_text(text))
        yield UsageUpdate(usage)
        yield MessageDone(
            Message("assistant", (TextBlock(text),)),
            stop_reason="end_turn",
            model=request.model or self.settings.model,
            usage=usage,
        )

    async def aclose(self) -> None:
        return None


def build(settings: EchoSettings, context: Any) -> EchoProvider:
    if not settings.model:
        raise ConfigError("model must not be empty", path=f"{context.path}.model")
    return EchoProvider(settings, name=context.name)


@hookimpl
def asm_register_providers(register: Any) -> None:
    register("echo", build, settings=EchoSettings, description="offline: streams your input back")
