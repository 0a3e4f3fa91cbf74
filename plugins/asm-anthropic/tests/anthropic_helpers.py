"""Helpers shared by the asm-anthropic tests."""

from __future__ import annotations

from typing import Any

from asm_anthropic.provider import AnthropicProvider

from asm_kernel.model import Message, ProviderRequest

TEST_KEY = "sk-ant-test-0123456789abcdef"


def make_request(*messages: Message | str, **fields: Any) -> ProviderRequest:
    msgs = tuple(Message.user(m) if isinstance(m, str) else m for m in messages) or (Message.user("hi"),)
    fields.setdefault("model", "claude-sonnet-5-5")
    return ProviderRequest(messages=msgs, **fields)


async def collect(provider: AnthropicProvider, req: ProviderRequest) -> list[Any]:
    return [item async for item in provider.stream(req)]
