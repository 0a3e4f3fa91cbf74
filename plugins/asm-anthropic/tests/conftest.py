from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from anthropic_helpers import TEST_KEY
from asm_anthropic.provider import AnthropicProvider
from asm_anthropic.settings import AnthropicSettings
from asm_anthropic.testing import FakeAnthropic

from asm_kernel.config import Secret

pytest_plugins = ["asm_anthropic.testing.pytest_plugin"]


@pytest.fixture
async def make_provider(fake_anthropic: FakeAnthropic) -> AsyncIterator[Callable[..., AnthropicProvider]]:
    """Build providers pointed at the fake (closed after the test)."""
    made: list[AnthropicProvider] = []

    def make(**settings: Any) -> AnthropicProvider:
        settings.setdefault("base_url", fake_anthropic.url)
        settings.setdefault("api_key", Secret(TEST_KEY))
        name = settings.pop("name", "claude")
        provider = AnthropicProvider(AnthropicSettings(**settings), name=name)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()
