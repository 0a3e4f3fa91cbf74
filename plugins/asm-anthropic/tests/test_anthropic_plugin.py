"""Registration, settings validation, lazy SDK import, declared capabilities and models."""

from __future__ import annotations

import subprocess
import sys

import pytest
from asm_anthropic.models import AS_OF, MODELS, TieredPrice, model_info
from asm_anthropic.provider import AnthropicProvider
from asm_anthropic.settings import DEFAULT_MODEL, AnthropicSettings

from asm_kernel import Kernel
from asm_kernel.config import Secret
from asm_kernel.errors import ConfigError
from asm_kernel.model import Capability, Usage


def test_plugin_import_does_not_import_the_sdk() -> None:
    code = (
        "import sys, asm_anthropic, asm_anthropic.plugin, asm_anthropic.settings\n"
        "assert 'anthropic' not in sys.modules, 'SDK imported at discovery'\n"
        "assert not any(m.startswith('httpx') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registered_through_the_entry_point() -> None:
    kernel = Kernel({"store": {"use": "memory"}})
    spec = kernel.registries["provider"].get("anthropic")
    assert spec.settings is AnthropicSettings
    assert spec.plugin  # provenance is recorded


def _build(**settings) -> Kernel:
    kernel = Kernel({"store": {"use": "memory"}, "providers": [{"name": "c", "use": "anthropic", **settings}]})
    kernel._build_all()
    return kernel


def test_settings_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        _build(modle="claude-opus-5-5")
    assert info.value.path == "providers[0].modle" and "model" in str(info.value)
    with pytest.raises(ConfigError) as info:
        _build(thinking="enabled")
    assert info.value.path == "providers[0].thinking" and "thinking_budget" in str(info.value)
    with pytest.raises(ConfigError) as info:
        _build(thinking_budget=100)
    assert info.value.path == "providers[0].thinking_budget" and "1024" in str(info.value)
    with pytest.raises(ConfigError) as info:
        _build(read_timeout=0)
    assert info.value.path == "providers[0].read_timeout"
    with pytest.raises(ConfigError) as info:
        _build(cache_ttl="10m")
    assert info.value.path == "providers[0].cache_ttl"


def test_build_without_key_succeeds(monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    kernel = _build(model="claude-opus-5-5", prompt_cache=True)
    provider = kernel.providers["c"]
    assert isinstance(provider, AnthropicProvider)
    assert provider.name == "c" and provider.default_model == "claude-opus-5-5"
    assert provider.settings.prompt_cache is True


def test_capabilities_declared() -> None:
    provider = AnthropicProvider(AnthropicSettings(api_key=Secret("x")))
    assert provider.capabilities >= {
        Capability.STREAMING, Capability.TOOLS, Capability.VISION, Capability.REASONING,
        Capability.PROMPT_CACHE, Capability.CANCEL, Capability.SYSTEM_PROMPT, Capability.USAGE,
    }
    assert provider.default_model == DEFAULT_MODEL and DEFAULT_MODEL in MODELS


def test_price_table_is_dated_and_sourced() -> None:
    for info in MODELS.values():
        assert info.context_window >= 200_000 and info.max_output_tokens >= 64_000
        assert info.price is not None and info.price.as_of == AS_OF == "2026-11-27"
        assert "Anthropic" in info.price.source
        assert info.price.output > info.price.input > info.price.cache_read
        assert info.price.cache_write >= info.price.input
    assert MODELS["claude-sonnet-5-5"].price.input == 2.0
    assert MODELS["claude-haiku-4-5"].price.output == 5.0


def test_tiered_price_for_long_prompts() -> None:
    price = MODELS["claude-haiku-5-5"].price
    assert isinstance(price, TieredPrice)
    short = Usage(input_tokens=100_000, output_tokens=1_000_000)
    long = Usage(input_tokens=60_000, output_tokens=1_000_000, cache_read_input_tokens=50_000)
    assert price.cost(short) == pytest.approx(0.01 + 0.50)
    assert price.cost(long) == pytest.approx(0.03 + 2.50 + 0.0025)


def test_unknown_model_info() -> None:
    info = model_info("claude-brand-new")
    assert info.price is None and info.context_window == 200_000 and info.max_output_tokens == 8_192
    provider = AnthropicProvider(AnthropicSettings(model="claude-brand-new", api_key=Secret("x")))
    assert "claude-brand-new" in [m.name for m in provider.models]


def test_repr_hides_the_key() -> None:
    provider = AnthropicProvider(AnthropicSettings(api_key=Secret("sk-ant-very-secret")))
    assert "sk-ant-very-secret" not in repr(provider) + repr(provider.settings)


def test_provider_survives_a_new_event_loop() -> None:
    import asyncio

    from anthropic_helpers import collect, make_request
    from asm_anthropic.testing import FakeAnthropic

    with FakeAnthropic() as fake:
        fake.default = fake.reply_text("again")
        provider = AnthropicProvider(AnthropicSettings(base_url=fake.url, api_key=Secret("k")))
        for _ in range(2):  # two asyncio.run calls: two loops, one provider
            items = asyncio.run(collect(provider, make_request()))
            assert items[-1].message.text == "again"
        asyncio.run(provider.aclose())


def test_fixture_importable_from_the_testing_package() -> None:
    from asm_anthropic.testing import fake_anthropic
    from asm_anthropic.testing.pytest_plugin import fake_anthropic as same

    assert fake_anthropic is same


def test_header_values_are_masked_in_reprs() -> None:
    settings = AnthropicSettings(headers={"x-gateway-token": "gw-secret-123"})
    assert "gw-secret-123" not in repr(settings) and "x-gateway-token" in repr(settings)
