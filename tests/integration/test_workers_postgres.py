"""Several `asm worker` processes on one PostgreSQL store: claiming, kill -9 failover, rolling stop.

And sessions moved from a DuckDB file to Postgres with `asm export` / `asm import`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("asm_postgres")
pytest.importorskip("asm_duckdb")

from asm_kernel import Kernel, RunStatus
from asm_kernel.testing import assert_record_and_log_agree
from asm_kernel.testing.backends import drop_schema, postgres_dsn

DSN = postgres_dsn()


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"asm_it_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        drop_schema(name)


def write_config(tmp_path: Path, schema: str, **runtime: Any) -> Path:
    runtime_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in runtime.items())
    path = tmp_path / "asm.toml"
    path.write_text(
        f"""
[store]
use = "postgres"
dsn = "{DSN}"
schema = "{schema}"

[[providers]]
name = "slow"
use = "scripted"
turns = [[{{text = "working on it "}}, {{delay = 1.5}}, {{text = "done"}}]]

[runtime]
{runtime_lines}
"""
    )
    return path


def asm(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ASM_HOME": str(tmp_path / "home")}
    return subprocess.run(
        [sys.executable, "-m", "asm_kernel.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_worker(tmp_path: Path, name: str) -> subprocess.Popen[str]:
    env = {**os.environ, "ASM_HOME": str(tmp_path / "home"), "ASM__RUNTIME__WORKER_ID": f'"{name}"'}
    return subprocess.Popen(
        [sys.executable, "-m", "asm_kernel.cli", "worker", "--concurrency", "4", "--poll", "0.1", "--grace", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def reap(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.kill()
    return proc.communicate(timeout=30)


async def _runs(config: Path) -> list[Any]:
    async with Kernel.open(config) as k:
        found = []
        for s in await k.sessions.list(limit=1000):
            found.extend(await k.sessions.runs(s.id, limit=1000))
        return found


def runs(config: Path) -> list[Any]:
    return asyncio.run(_runs(config))


def test_a_killed_worker_s_runs_are_recovered_by_another_and_nothing_runs_twice(tmp_path: Path, schema: str) -> None:
    config = write_config(tmp_path, schema, lease_ttl=1.0, heartbeat_interval=0.2, recovery="requeue")
    submitted = []
    for i in range(6):
        done = asm(tmp_path, "submit", f"job {i}", "--json")
        assert done.returncode == 0, done.stderr
        submitted.append(json.loads(done.stdout))
    doomed = start_worker(tmp_path, "doomed")
    survivor = None
    try:
        # Wait until the doomed worker is executing runs, then kill it without warning.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(r.status is RunStatus.RUNNING and r.owner == "doomed" for r in runs(config)):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the worker never started a run: {reap(doomed)[1]}")
        os.kill(doomed.pid, signal.SIGKILL)
        reap(doomed)
        survivor = start_worker(tmp_path, "survivor")
        results = []
        for item in submitted:
            waited = asm(tmp_path, "wait", item["run_id"], "--json", "--timeout", "90")
            results.append(json.loads(waited.stdout))
        os.kill(survivor.pid, signal.SIGTERM)  # a rolling stop: it exits cleanly
        _, err = survivor.communicate(timeout=60)
        assert survivor.returncode == 0, err
        assert "stopped" in err
    finally:
        reap(doomed)
        if survivor is not None:
            reap(survivor)
    crashed = [r for r in results if r["status"] == "failed"]
    assert crashed and all(r["error"]["code"] == "runtime.crashed" for r in crashed)
    assert all(r["status"] in ("completed", "failed") for r in results)
    every = runs(config)
    # Each crashed run was requeued once and the copy completed on the surviving worker.
    copies = [r for r in every if r.metadata.get("asm.recovery_of")]
    assert sorted(r.metadata["asm.recovery_of"] for r in copies) == sorted(r["run_id"] for r in crashed)
    assert all(r.status is RunStatus.COMPLETED and r.owner == "survivor" for r in copies)

    async def check() -> None:
        async with Kernel.open(config) as k:
            for s in await k.sessions.list(limit=1000):
                await assert_record_and_log_agree(k.store, s.id)
                log = await k.sessions.events(s.id)
                starts = [e.run_id for e in log if e.type == "run_started"]
                assert len(starts) == len(set(starts)), "a run was started twice"

    asyncio.run(check())


def test_sessions_move_from_a_duckdb_file_to_postgres(tmp_path: Path, schema: str) -> None:
    duck = tmp_path / "duck"
    duck.mkdir()
    (duck / "asm.toml").write_text('[store]\nuse = "duckdb"\npath = "s.duckdb"\n')
    for prompt in ("first", "second"):
        assert asm(duck, "run", prompt).returncode == 0
    exported = asm(duck, "export", "--all")
    assert exported.returncode == 0, exported.stderr
    dump = tmp_path / "sessions.jsonl"
    dump.write_text(exported.stdout)
    pg = tmp_path / "pg"
    pg.mkdir()
    write_config(pg, schema)
    imported = asm(pg, "import", str(dump), "--json")
    assert imported.returncode == 0, imported.stderr
    report = json.loads(imported.stdout)
    assert report["sessions_created"] == 2 and report["conflicts"] == []
    again = json.loads(asm(pg, "import", str(dump), "--json").stdout)
    assert (again["events_stored"], again["runs_stored"]) == (0, 0)  # idempotent
    left = json.loads("[" + ",".join(asm(duck, "sessions", "list", "--json").stdout.split()) + "]")
    right = json.loads("[" + ",".join(asm(pg, "sessions", "list", "--json").stdout.split()) + "]")
    assert sorted(s["id"] for s in left) == sorted(s["id"] for s in right)
    for s in left:
        a = [json.loads(x) for x in asm(duck, "events", s["id"], "--json").stdout.splitlines()]
        b = [json.loads(x) for x in asm(pg, "events", s["id"], "--json").stdout.splitlines()]
        assert [(e["id"], e["seq"], e["type"]) for e in a] == [(e["id"], e["seq"], e["type"]) for e in b]
