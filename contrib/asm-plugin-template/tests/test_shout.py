"""The template's tests: the provider contract, then the plugin end to end through a config."""

from __future__ import annotations

from pathlib import Path

import pytest
from asm_plugin_template import plugin
from asm_plugin_template.plugin import ShoutSettings
from asm_plugin_template.shout import ShoutProvider

from asm_kernel import Kernel, SyncKernel
from asm_kernel.errors import ConfigError
from asm_kernel.testing import ProviderConformance, run_async

CONFIG = {
    "store": {"use": "memory"},
    "providers": [{"name": "loud", "use": "shout", "exclamations": 3}],
}


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's config, asm home or plugin switches."""
    for name in ("ASM_CONFIG", "ASM_DISABLE_PLUGIN_AUTOLOAD", "ASM_LOAD_PLUGINS", "ASM_DISABLED_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASM_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


class TestShoutProvider(ProviderConformance):
    """The contract every provider passes (asm_kernel.testing), run unchanged."""

    expected_text = "SAY HELLO.!"  # the suite sends "Say hello."

    @pytest.fixture
    def provider(self) -> ShoutProvider:
        return ShoutProvider(ShoutSettings())


def test_the_entry_point_registers_the_provider() -> None:
    kernel = Kernel(CONFIG)
    assert "shout" in kernel.registries["provider"]
    info = {p.name: p for p in kernel.plugins.info()}["template"]
    assert info.status == "loaded" and info.distribution == "asm-plugin-template"
    assert info.components == ["provider:shout"] and "asm_run_finished" in info.hooks


def test_runs_through_the_config_and_the_hook_counts_them() -> None:
    before = plugin.RUNS["completed"]
    with SyncKernel(CONFIG) as asm:
        first = asm.run_once("hello there")
        second = asm.run(first.session_id, "and again")
        transcript = asm.transcript(first.session_id)
    assert first.output == "HELLO THERE!!!" and first.provider == "loud" and first.model == "shout-1"
    assert second.output == "AND AGAIN!!!"
    assert [(m.role, m.text) for m in transcript][-2:] == [("user", "and again"), ("assistant", "AND AGAIN!!!")]
    assert plugin.RUNS["completed"] == before + 2


def test_streaming_through_the_async_kernel() -> None:
    async def main() -> list[str]:
        async with Kernel.open(CONFIG) as kernel:
            session = await kernel.sessions.create()
            return [
                event.payload["text"]
                async for event in kernel.stream_run(session.id, "stream me")
                if getattr(event, "type", None) == "message_streamed"
            ]

    assert "".join(run_async(main())) == "STREAM ME!!!"


@pytest.mark.parametrize(
    ("settings", "path", "fragment"),
    [
        ({"exclamations": -1}, "providers[0].exclamations", ">= 0"),
        ({"exclamation": 2}, "providers[0].exclamation", 'did you mean "exclamations"?'),
        ({"chunk_size": "4"}, "providers[0].chunk_size", "expected an integer"),
    ],
)
def test_settings_are_validated_with_their_config_path(settings: dict, path: str, fragment: str) -> None:
    config = {"store": {"use": "memory"}, "providers": [{"use": "shout", **settings}]}
    with pytest.raises(ConfigError) as info:
        SyncKernel(config)
    assert info.value.path == path and fragment in str(info.value)
