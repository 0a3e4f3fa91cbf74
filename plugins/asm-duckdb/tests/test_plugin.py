"""Registration through the entry point, settings validation, and the kernel end to end."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from asm_kernel import Kernel
from asm_kernel.errors import ConfigError
from attrs import frozen

from asm_duckdb.settings import DuckDBSettings, build


@frozen
class Ctx:
    name: str = "store"
    path: str = "store"
    home: Path = Path("/nonexistent-home")
    config_dir: Path = Path("/nonexistent-config")


def test_entry_point_is_declared() -> None:
    eps = {ep.name: ep.value for ep in metadata.entry_points(group="asm")}
    assert eps.get("duckdb") == "asm_duckdb.plugin"


def test_plugin_module_does_not_import_duckdb() -> None:
    code = "import sys, asm_duckdb.plugin; print('duckdb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_settings_are_validated_with_their_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build(DuckDBSettings(durability="fastest"), Ctx())  # type: ignore[arg-type]
    assert info.value.path == "store.durability"
    assert "'safe' or 'fast'" in str(info.value)
    bad = [("lock_timeout", -1.0), ("threads", 0), ("memory_limit", "lots"), ("path", ""), ("lean_planning", "yes")]
    for field, value in bad:
        with pytest.raises(ConfigError) as info:
            build(DuckDBSettings(**{field: value}), Ctx())  # type: ignore[arg-type]
        assert info.value.path == f"store.{field}"


def test_kernel_config_errors_name_the_key(tmp_path: Path) -> None:
    kernel = Kernel({"store": {"use": "duckdb", "path": str(tmp_path / "k.duckdb"), "durability": "fastest"}})
    with pytest.raises(ConfigError) as info:
        kernel.build("store", kernel.config.store)  # type: ignore[arg-type]
    assert info.value.path == "store.durability"
    kernel = Kernel({"store": {"use": "duckdb", "lock_timout": 5}})
    with pytest.raises(ConfigError) as info:
        kernel.build("store", kernel.config.store)  # type: ignore[arg-type]
    assert info.value.path == "store.lock_timout"


def test_paths_resolve_against_home_and_config_dir(tmp_path: Path) -> None:
    ctx = Ctx(home=tmp_path / "home", config_dir=tmp_path / "cfg")
    assert build(DuckDBSettings(), ctx).path == tmp_path / "home" / "sessions.duckdb"
    assert build(DuckDBSettings(path="data/s.duckdb"), ctx).path == tmp_path / "cfg" / "data" / "s.duckdb"
    assert build(DuckDBSettings(path=str(tmp_path / "abs.duckdb")), ctx).path == tmp_path / "abs.duckdb"
    store = build(DuckDBSettings(durability="fast", lock_timeout=5, threads=2, memory_limit="256MB"), ctx)
    assert (store.durability, store.lock_timeout, store.threads, store.memory_limit) == ("fast", 5.0, 2, "256MB")


async def test_kernel_end_to_end_through_the_entry_point(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "asm.duckdb"
    config = {"store": {"use": "duckdb", "path": str(path), "threads": 2}}
    async with Kernel(config) as kernel:
        assert type(kernel.store).__name__ == "DuckDBStore"
        assert "duckdb" in kernel.registries["store"]
        result = await kernel.run_once("hello duckdb")
        written = await kernel.store.read(result.session_id)
    assert path.exists()
    async with Kernel(config) as again:
        events = await again.store.read(result.session_id)
        assert [e.id for e in events] == [e.id for e in written]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert events[-1].type == "run_completed"
        run = await again.store.get_run(result.run_id)
        assert run.status.value == result.status.value
        assert (await again.store.get_session(result.session_id)).id == result.session_id


async def test_duckdb_is_the_default_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASM_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    async with Kernel() as kernel:
        assert type(kernel.store).__name__ == "DuckDBStore"
        await kernel.run_once("hi")
    assert (tmp_path / "home" / "sessions.duckdb").exists()


@pytest.mark.parametrize("lean", [True, False])
async def test_lean_planning_turns_off_the_optimizers_asm_does_not_need(tmp_path: Path, lean: bool) -> None:
    import duckdb

    from asm_duckdb.store import LEAN_DISABLED

    path = tmp_path / "lean.duckdb"
    kernel = Kernel({"store": {"use": "duckdb", "path": str(path), "lean_planning": lean}})
    async with kernel:
        result = await kernel.run_once("hello")
        assert result.status.value == "completed"
        # The setting is the database's: SQL on the same database in this process sees it too.
        with duckdb.connect(str(path)) as conn:
            (setting,) = conn.execute("SELECT current_setting('disabled_optimizers')").fetchone()  # type: ignore[misc]
            known = {row[0] for row in conn.execute("SELECT name FROM duckdb_optimizers()").fetchall()}
        assert set(filter(None, setting.split(","))) == (set(LEAN_DISABLED) & known if lean else set())
        assert not lean or {"join_order", "statistics_propagation"} <= set(setting.split(","))
        events = await kernel.sessions.events(result.session_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert events[-1].type == "run_completed"
