"""asm's provider contract, run unchanged against the adapter and the fake server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from asm_anthropic.provider import AnthropicProvider
from asm_anthropic.settings import AnthropicSettings
from asm_anthropic.testing import FakeAnthropic, Reply, text_block

from asm_kernel.config import Secret
from asm_kernel.testing import ProviderConformance


class TestAnthropicConformance(ProviderConformance):
    expected_text = "Hello! How can I help you today?"

    @pytest.fixture
    def provider(self) -> Iterator[AnthropicProvider]:
        with FakeAnthropic(api_key="conformance-key") as fake:
            fake.default = Reply([text_block(self.expected_text)], usage={"input_tokens": 9, "output_tokens": 11})
            yield AnthropicProvider(
                AnthropicSettings(base_url=fake.url, api_key=Secret("conformance-key")), name="claude"
            )
