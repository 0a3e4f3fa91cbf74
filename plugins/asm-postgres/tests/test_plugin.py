"""Registration, settings, secrets, and the kernel and CLI end to end on Postgres (across processes)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from asm_kernel import Kernel
from asm_kernel.errors import ConfigError
from asm_kernel.model import Event
from asm_kernel.secrets import redact_text
from pg_helpers import DSN, Context, store_for

from asm_postgres import PostgresSettings, build

ASM = [sys.executable, "-m", "asm_kernel.cli"]


def test_entry_point_is_declared() -> None:
    eps = {ep.name: ep.value for ep in metadata.entry_points(group="asm")}
    assert eps.get("postgres") == "asm_postgres.plugin"


def test_loading_the_plugin_imports_no_driver() -> None:
    code = "import sys, asm_postgres.plugin; print([m for m in ('psycopg', 'psycopg_pool') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("schema", "Bad-Name"),
        ("schema", "pg_asm"),
        ("schema", "x" * 60),
        ("pool_min_size", 5),  # above pool_max_size below
        ("pool_max_size", 0),
        ("pool_timeout", 0),
        ("connect_timeout", -1),
        ("statement_timeout", float("inf")),
        ("durability", "fastest"),
        ("application_name", "é"),
        ("dsn", "   "),
        ("dsn", "host=a broken"),
        ("shema", "asm"),
    ],
)
def test_settings_errors_name_the_key(key: str, value: Any) -> None:
    settings = {"dsn": DSN, "pool_max_size": 3, key: value} if key != "pool_max_size" else {key: value}
    kernel = Kernel({"plugins": {"autoload": True}, "store": {"use": "postgres", **settings}})
    with pytest.raises(ConfigError) as info:
        kernel.build("store", kernel.config.store)  # type: ignore[arg-type]
    want = "store.pool_max_size" if key == "pool_min_size" else f"store.{key}"
    assert info.value.path == want, info.value


def test_no_password_in_reprs_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "Url-Secret-" + uuid.uuid4().hex[:8]
    url = build(PostgresSettings(dsn=f"postgresql://asm:{secret}@db.example:6543/prod"), Context())
    kv = build(PostgresSettings(dsn=f"host=db.example dbname=prod user=asm password='{secret}x'"), Context())
    setting = build(PostgresSettings(dsn="postgresql://asm@db.example/prod", password=secret + "y"), Context())
    for store in (url, kv, setting):
        assert str(store.target) == "asm@db.example:" + store.target.port + "/prod (schema asm)"
        for text in (repr(store), repr(store.conninfo), str(store.target), store.conninfo.masked):
            assert secret not in text, text
    assert url.target.port == "6543"
    assert "password=" in setting.conninfo.conninfo  # given to libpq...
    assert redact_text(f"echoed: {secret}y") == "echoed: [redacted]"  # ...and registered as a secret
    assert secret not in repr(PostgresSettings(dsn=f"postgresql://asm:{secret}@h/db"))
    with pytest.raises(ConfigError) as info:
        build(PostgresSettings(dsn=f"postgresql://asm:{secret}@[::1/db"), Context())
    assert secret not in str(info.value) and info.value.path == "store.dsn"


def test_without_a_dsn_the_pg_environment_applies(monkeypatch: pytest.MonkeyPatch, pg_schema: str) -> None:
    for var, value in {"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGUSER": "postgres", "PGDATABASE": "test"}.items():
        monkeypatch.setenv(var, value)
    store = build(PostgresSettings(schema=pg_schema), Context())
    assert str(store.target) == f"postgres@127.0.0.1:5432/test (schema {pg_schema})"
    assert "PG* environment" in store.conninfo.masked

    async def use() -> None:
        await store.open()
        await store.close()

    asyncio.run(use())


def test_capabilities() -> None:
    caps = store_for("asm_caps").capabilities
    assert (caps.shared, caps.durable, caps.leases, caps.cross_process_notify, caps.sql) == (True,) * 5
    assert caps.durability == "safe" and caps.durability_modes == ("safe", "fast")
    assert store_for("asm_caps", durability="fast").capabilities.durability == "fast"


def _config(tmp_path: Path, schema: str) -> Path:
    path = tmp_path / "asm.toml"
    path.write_text(f'[store]\nuse = "postgres"\ndsn = "{DSN}"\nschema = "{schema}"\n')
    return path


def _asm(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ASM_CONFIG": str(config)}
    return subprocess.run([*ASM, *args], capture_output=True, text=True, env=env, timeout=120)


def test_a_run_in_one_process_is_read_by_another(pg_schema: str, tmp_path: Path) -> None:
    config = _config(tmp_path, pg_schema)
    done = _asm(config, "run", "hello from process one", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "completed" and "hello from process one" in result["output"]
    shown = _asm(config, "events", result["session_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    events = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert "run_completed" in [e["type"] for e in events]


async def _append_elsewhere(schema: str, session_id: str, event_id: str) -> list[int]:
    """Append one event from another process (the worker script); returns the seqs it was told."""
    worker = Path(__file__).with_name("pg_worker.py")
    args = json.dumps({"mode": "append_one", "schema": schema, "dsn": DSN, "session": session_id, "id": event_id})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(worker), args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate(b"go\n")
    assert proc.returncode == 0
    ready, answer = out.decode().splitlines()
    assert ready == "ready"
    return list(json.loads(answer))


async def test_follow_and_subscribe_see_appends_of_other_processes(pg_schema: str, tmp_path: Path) -> None:
    config = _config(tmp_path, pg_schema)
    async with Kernel.open(str(config)) as kernel:
        session = await kernel.sessions.create()
        after = await kernel.store.last_seq(session.id)
        env = {**os.environ, "ASM_CONFIG": str(config)}
        follower = await asyncio.create_subprocess_exec(
            *ASM, "events", session.id, "--follow", "--json", "--after", str(after), "--interval", "0.1",
            env=env, stdout=asyncio.subprocess.PIPE,
        )
        updates = kernel.runtime.subscribe(session.id, after=after, poll=30)
        first = asyncio.create_task(updates.__anext__())
        try:
            # Another process appends; this one's subscriber and the CLI's follower both see it.
            event_id = f"evt_{uuid.uuid4().hex}"
            assert await _append_elsewhere(pg_schema, session.id, event_id) == [after + 1]
            got: Event = await asyncio.wait_for(first, 60)
            assert (got.id, got.seq) == (event_id, after + 1)
            assert kernel.store._listener.notifications >= 1  # woken by NOTIFY, not by its 30 s poll
            assert follower.stdout is not None
            line = json.loads(await asyncio.wait_for(follower.stdout.readline(), 60))
            assert (line["id"], line["seq"]) == (event_id, after + 1)
        finally:
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
            await updates.aclose()
            follower.terminate()
            await follower.wait()


def test_config_show_masks_the_supported_ways_of_giving_a_password(tmp_path: Path) -> None:
    """``dsn = "${VAR}"`` and the ``password`` key are masked by ``asm config show``.

    (A password written literally inside a ``dsn`` in the file is not: the kernel masks by key
    name and interpolation only - see docs/plugins/postgres.md.)
    """
    secret = "Show-Secret-" + uuid.uuid4().hex[:8]
    path = tmp_path / "asm.toml"
    path.write_text(f'[store]\nuse = "postgres"\ndsn = "${{TEST_PG_DSN}}"\npassword = "{secret}p"\n')
    env = {**os.environ, "TEST_PG_DSN": f"postgresql://asm:{secret}@db.example/prod"}
    shown = subprocess.run([*ASM, "config", "show", "--json", "--config", str(path)], capture_output=True,
                           text=True, env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    store = json.loads(shown.stdout)["config"]["store"]
    assert store["use"] == "postgres" and secret not in shown.stdout
    assert store["dsn"] != env["TEST_PG_DSN"] and store["password"] != f"{secret}p"
