"""The kernel's provider conformance suite, for both wire APIs, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from asm_kernel.testing import ProviderConformance
from openai_helpers import make_provider

from asm_openai.testing import FakeOpenAI, Reply, Text


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(default=Reply([Text("Hello from the fake!")])) as fake:
        yield fake


class TestChatConformance(ProviderConformance):
    expected_text = "Hello from the fake!"

    @pytest.fixture
    def provider(self, server: FakeOpenAI):
        return make_provider(server, "chat")


class TestResponsesConformance(ProviderConformance):
    expected_text = "Hello from the fake!"

    @pytest.fixture
    def provider(self, server: FakeOpenAI):
        return make_provider(server, "responses")


class TestCompatibleServerConformance(ProviderConformance):
    """Default capabilities of a compatible server (no explicit list), no key configured."""

    expected_text = "Hello from the fake!"

    @pytest.fixture
    def provider(self, server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch):
        from asm_openai.provider import OpenAIProvider
        from asm_openai.settings import OpenAISettings

        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        return OpenAIProvider(OpenAISettings(api="chat", base_url=server.base_url, model="qwen3"), name="local")
