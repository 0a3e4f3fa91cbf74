from __future__ import annotations

from typing import Any

from asm_kernel.config import Secret
from asm_kernel.model import Message, ProviderRequest

from asm_openai.provider import OpenAIProvider
from asm_openai.settings import OpenAISettings
from asm_openai.testing import FakeOpenAI

TEST_KEY = "sk-test-abcdefghijklmnopqrstuvwxyz0123456789"

ALL_CAPS = [
    "streaming",
    "tools",
    "vision",
    "json_schema",
    "reasoning",
    "prompt_cache",
    "cancel",
    "system_prompt",
    "usage",
]


def make_provider(fake: FakeOpenAI, api: str = "chat", **settings: Any) -> OpenAIProvider:
    settings.setdefault("capabilities", ALL_CAPS)
    settings.setdefault("api_key", Secret(TEST_KEY))
    return OpenAIProvider(OpenAISettings(api=api, base_url=fake.base_url, **settings), name="gpt")


def request(*messages: Message | str, model: str = "gpt-5.4-mini", **kwargs: Any) -> ProviderRequest:
    msgs = tuple(Message.user(m) if isinstance(m, str) else m for m in messages) or (Message.user("hi"),)
    return ProviderRequest(model=model, messages=msgs, **kwargs)


async def collect(provider: OpenAIProvider, req: ProviderRequest | None = None) -> list[Any]:
    try:
        return [item async for item in provider.stream(req or request())]
    finally:
        await provider.aclose()
