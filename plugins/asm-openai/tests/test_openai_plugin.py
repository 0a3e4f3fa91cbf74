"""Discovery, settings, declared capabilities and models, secrets in reprs."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest
from asm_kernel import Kernel
from asm_kernel.config import Secret
from asm_kernel.errors import ConfigError
from asm_kernel.model import Capability

from asm_openai.models import KNOWN_MODELS, PRICES_AS_OF
from asm_openai.provider import OpenAIProvider, resolve_api_key
from asm_openai.settings import DEFAULT_MODEL, ModelSettings, OpenAISettings


def test_entry_point_is_registered() -> None:
    (ep,) = [e for e in entry_points(group="asm") if e.name == "openai"]
    assert ep.value == "asm_openai.plugin"


def test_discovery_does_not_import_the_sdk() -> None:
    code = (
        "import sys\n"
        "from asm_kernel import Kernel\n"
        "k = Kernel({'store': {'use': 'memory'}})\n"
        "spec = k.registries['provider'].get('openai')\n"
        "assert spec.plugin and spec.settings.__name__ == 'OpenAISettings', spec\n"
        "assert 'openai' not in sys.modules, 'openai SDK imported at discovery'\n"
        "assert 'asm_openai.provider' not in sys.modules\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_openai_capabilities_per_api() -> None:
    responses = OpenAIProvider(OpenAISettings(api="responses"), api_key="k").capabilities
    chat = OpenAIProvider(OpenAISettings(api="chat"), api_key="k").capabilities
    assert {
        Capability.STREAMING,
        Capability.TOOLS,
        Capability.VISION,
        Capability.JSON_SCHEMA,
        Capability.REASONING,
        Capability.PROMPT_CACHE,
        Capability.CANCEL,
        Capability.USAGE,
    } <= responses
    assert Capability.REASONING not in chat and Capability.TOOLS in chat


def test_compatible_server_defaults_and_overrides() -> None:
    local = OpenAIProvider(OpenAISettings(api="chat", base_url="http://127.0.0.1:8000/v1", model="qwen3"), api_key="x")
    assert Capability.VISION not in local.capabilities and Capability.TOOLS in local.capabilities
    assert [m.name for m in local.models] == ["qwen3"] and local.models[0].price is None
    declared = OpenAIProvider(
        OpenAISettings(
            api="chat",
            base_url="http://127.0.0.1:8000/v1",
            model="qwen3",
            capabilities=["streaming"],
            models={
                "qwen3": ModelSettings(context_window=32768, max_output_tokens=4096, input_price=0, output_price=0)
            },
        ),
        api_key="x",
    )
    assert declared.capabilities == frozenset({"streaming"})
    (info,) = declared.models
    assert info.context_window == 32768 and info.max_output_tokens == 4096 and info.price.input == 0


def test_models_and_prices_are_dated_and_sourced() -> None:
    provider = OpenAIProvider(OpenAISettings(), api_key="k")
    names = [m.name for m in provider.models]
    assert names[0] == DEFAULT_MODEL == provider.default_model
    assert set(KNOWN_MODELS) <= set(names)
    for info in provider.models:
        assert info.price is not None and info.price.as_of == PRICES_AS_OF == "2026-11-27"
        assert "openai.com" in info.price.source
        assert 0 < info.price.cache_read < info.price.input < info.price.output
        assert info.context_window > info.max_output_tokens > 0
    gpt41 = next(m for m in provider.models if m.name == "gpt-4.1")
    assert Capability.REASONING not in gpt41.capabilities


def test_unknown_openai_model_is_declared_without_a_price() -> None:
    provider = OpenAIProvider(OpenAISettings(model="gpt-9-experimental"), api_key="k")
    assert provider.models[0].name == "gpt-9-experimental" and provider.models[0].price is None


def test_key_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError) as info:
        resolve_api_key(OpenAISettings(), "providers[3]")
    assert info.value.path == "providers[3].api_key" and "OPENAI_API_KEY" in str(info.value)
    # api.openai.com given explicitly still needs a key
    with pytest.raises(ConfigError):
        resolve_api_key(OpenAISettings(base_url="https://api.openai.com/v1"), "providers[0]")
    assert resolve_api_key(OpenAISettings(api_key=Secret("sk-cfg")), "p") == "sk-cfg"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert resolve_api_key(OpenAISettings(), "p") == "sk-env"


def test_reprs_never_show_secrets() -> None:
    settings = OpenAISettings(api_key=Secret("sk-very-secret-value"), headers={"api-key": "hdr-secret-value"})
    provider = OpenAIProvider(settings)
    for text in (repr(settings), str(settings), repr(provider)):
        assert "sk-very-secret-value" not in text and "hdr-secret-value" not in text


async def test_kernel_builds_the_provider_from_config() -> None:
    cfg = {
        "store": {"use": "memory"},
        "providers": [
            {"name": "local", "use": "openai", "api": "chat", "base_url": "http://127.0.0.1:9/v1", "model": "llama3"}
        ],
    }
    async with Kernel(cfg) as kernel:
        provider = kernel.providers["local"]
        assert isinstance(provider, OpenAIProvider)
        assert provider.name == "local" and provider.default_model == "llama3"
        assert provider.path == "providers[0]"
