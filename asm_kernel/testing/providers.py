"""The provider conformance suite.

Subclass :class:`ProviderConformance` and provide a ``provider`` fixture: a provider ready to
answer a one-line prompt with some text (for an HTTP adapter, point it at a fake server that is
scripted to answer). Optionally override ``expected_text`` when the answer is known::

    class TestMyProvider(ProviderConformance):
        expected_text = "Hello!"

        @pytest.fixture
        def provider(self, fake_server):
            fake_server.reply_text("Hello!")
            return MyProvider(base_url=fake_server.url)
"""

from __future__ import annotations

from typing import Any

import pytest

from ..model import Message, MessageDone, ModelInfo, ProviderRequest, TextDelta, ThinkingDelta, UsageUpdate
from .stores import run_async

__all__ = ["ProviderConformance"]


class ProviderConformance:
    """Contract tests for :class:`asm_kernel.interfaces.Provider` implementations."""

    #: The text the ``provider`` fixture answers with, when known (None: any text).
    expected_text: str | None = None

    @pytest.fixture
    def provider(self) -> Any:  # pragma: no cover - must be overridden
        raise NotImplementedError("define a provider fixture in your subclass")

    def _request(self, provider: Any, prompt: str = "Say hello.") -> ProviderRequest:
        return ProviderRequest(model=provider.default_model, messages=(Message.user(prompt),), max_tokens=64)

    def test_declares_name_capabilities_and_models(self, provider: Any) -> None:
        assert isinstance(provider.name, str) and provider.name
        caps = provider.capabilities
        assert isinstance(caps, frozenset) and all(isinstance(c, str) for c in caps)
        models = list(provider.models)
        assert models, "a provider declares at least one model"
        for info in models:
            assert isinstance(info, ModelInfo)
            assert info.context_window > 0 and info.max_output_tokens > 0
        assert isinstance(provider.default_model, str) and provider.default_model

    def test_stream_ends_with_exactly_one_final_message(self, provider: Any) -> None:
        async def body() -> list[Any]:
            try:
                return [item async for item in provider.stream(self._request(provider))]
            finally:
                await provider.aclose()

        items = run_async(body())
        assert items and isinstance(items[-1], MessageDone)
        assert sum(isinstance(i, MessageDone) for i in items) == 1
        assert all(isinstance(i, TextDelta | ThinkingDelta | UsageUpdate | MessageDone) for i in items)
        done = items[-1]
        assert done.message.role == "assistant"
        streamed = "".join(i.text for i in items if isinstance(i, TextDelta))
        assert streamed == done.message.text
        if self.expected_text is not None:
            assert done.message.text == self.expected_text
        assert isinstance(done.stop_reason, str) and done.stop_reason
        if "usage" in provider.capabilities:
            usage = done.usage or next((i.usage for i in reversed(items) if isinstance(i, UsageUpdate)), None)
            assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0

    def test_closing_the_stream_early_is_clean(self, provider: Any) -> None:
        async def body() -> None:
            stream = provider.stream(self._request(provider))
            try:
                first = await stream.__anext__()
                assert isinstance(first, TextDelta | ThinkingDelta | UsageUpdate | MessageDone)
            finally:
                await stream.aclose()
                await provider.aclose()

        run_async(body())
