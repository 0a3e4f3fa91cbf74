"""Plugin discovery through real entry points (a distribution laid out on sys.path)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from asm_kernel import Kernel, hookimpl
from asm_kernel._plugins import PluginManager
from asm_kernel.errors import DuplicateComponentError, PluginLoadError

GOOD = """
from asm_kernel import hookimpl
from asm_kernel.builtin.echo import EchoProvider, EchoSettings

def build(settings, context):
    return EchoProvider(EchoSettings(prefix="good:"), name=context.name)

@hookimpl
def asm_register_providers(register):
    register("good-echo", build, settings=EchoSettings)
"""

MARKER = """
import pathlib, os
pathlib.Path(os.environ["ASM_TEST_MARKER"]).write_text("imported")
from asm_kernel import hookimpl

@hookimpl
def asm_register_providers(register):
    pass
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake installed distribution `fakeplug` with four asm entry points."""
    root = tmp_path / "site"
    dist = root / "fakeplug-1.2.3.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text(
        "[asm]\ngood = fk_good\nbroken = fk_broken\nblocked = fk_blocked\nregfail = fk_regfail\n"
    )
    (root / "fk_good.py").write_text(GOOD)
    (root / "fk_broken.py").write_text("raise RuntimeError('boom at import')\n")
    (root / "fk_blocked.py").write_text(MARKER)
    (root / "fk_regfail.py").write_text(
        textwrap.dedent("""
        from asm_kernel import hookimpl
        @hookimpl
        def asm_register_stores(register):
            raise ValueError("cannot register")
    """)
    )
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("ASM_TEST_MARKER", str(tmp_path / "marker"))
    yield root
    for mod in ("fk_good", "fk_broken", "fk_blocked", "fk_regfail", "my_hooks"):
        sys.modules.pop(mod, None)


def test_entry_points_load_quarantine_and_block(site: Path, tmp_path: Path) -> None:
    manager = PluginManager()
    manager.load(disabled=["blocked"])
    registries = manager.collect_components()
    info = {p.name: p for p in manager.info()}
    assert info["good"].status == "loaded"
    assert info["good"].distribution == "fakeplug" and info["good"].version == "1.2.3"
    assert "provider:good-echo" in info["good"].components
    assert "good-echo" in registries["provider"]
    assert info["broken"].status == "quarantined" and "boom at import" in info["broken"].error
    assert info["regfail"].status == "quarantined" and "cannot register" in info["regfail"].error
    assert info["blocked"].status == "blocked"
    assert not (tmp_path / "marker").exists(), "a blocked plugin must never be imported"
    assert info["builtin.echo"].status == "loaded" and "echo" in registries["provider"]


def test_env_switches(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASM_DISABLE_PLUGIN_AUTOLOAD", "1")
    manager = PluginManager()
    manager.load()
    assert "good" not in manager.plugins and "echo" in manager.collect_components()["provider"]

    monkeypatch.delenv("ASM_DISABLE_PLUGIN_AUTOLOAD")
    monkeypatch.setenv("ASM_LOAD_PLUGINS", "good")
    manager = PluginManager()
    manager.load()
    assert manager.plugins["good"].status == "loaded"
    assert manager.plugins["blocked"].status == "blocked"
    assert not (tmp_path / "marker").exists()

    monkeypatch.delenv("ASM_LOAD_PLUGINS")
    monkeypatch.setenv("ASM_DISABLED_PLUGINS", "good,broken")
    manager = PluginManager()
    manager.load()
    assert manager.plugins["good"].status == "blocked" and manager.plugins["broken"].status == "blocked"
    assert (tmp_path / "marker").exists()  # not blocked this time, so imported


def test_installed_provider_is_usable_from_config(site: Path) -> None:
    from asm_kernel.sync import SyncKernel

    with SyncKernel(
        {
            "store": {"use": "memory"},
            "providers": [{"name": "g", "use": "good-echo"}],
            "plugins": {"disabled": ["blocked"]},
        }
    ) as asm:
        assert asm.run_once("hi").output == "good:hi"


def test_config_hook_modules_are_loaded(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_hooks.py").write_text(
        textwrap.dedent("""
        from asm_kernel import hookimpl
        seen = []
        @hookimpl
        def asm_run_started(run):
            seen.append(run.id)
    """)
    )
    from asm_kernel.sync import SyncKernel

    with SyncKernel({"store": {"use": "memory"}, "plugins": {"modules": ["my_hooks"], "autoload": False}}) as asm:
        result = asm.run_once("x")
    import my_hooks  # type: ignore[import-not-found]

    assert my_hooks.seen == [result.run_id]


def test_duplicate_component_names_name_both_plugins() -> None:
    class Dup:
        @hookimpl
        def asm_register_providers(self, register):
            register("echo", lambda s, c: None)

    kernel = Kernel({"store": {"use": "memory"}}, plugins=[Dup()])
    with pytest.raises(DuplicateComponentError) as info:
        kernel._build_all()
    message = str(info.value)
    assert "builtin.echo" in message and "direct-0" in message


def test_a_plugin_with_an_unknown_asm_hook_is_refused() -> None:
    class Typo:
        @hookimpl
        def asm_run_startd(self, run):  # misspelled hook name
            pass

    with pytest.raises(PluginLoadError, match="asm_run_startd"):
        Kernel({"store": {"use": "memory"}}, plugins=[Typo()])


def test_hook_wrappers_are_refused() -> None:
    class Wrapper:
        @hookimpl(wrapper=True)
        def asm_run_started(self, run):
            yield

    with pytest.raises(PluginLoadError, match="hook wrapper"):
        Kernel({"store": {"use": "memory"}}, plugins=[Wrapper()])
