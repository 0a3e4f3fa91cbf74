"""Real second processes: acknowledged appends survive kill -9; a held file is reported as locked."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from asm_kernel.errors import StoreLockedError

from asm_duckdb.store import DuckDBStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses SIGKILL")

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from asm_duckdb.store import DuckDBStore
    from asm_kernel.model import Event, Session

    async def main(path, writers):
        store = DuckDBStore(path, durability=sys.argv[3])
        await store.open()
        sessions = [await store.create_session(Session()) for _ in range(writers)]

        async def writer(s, w):
            i = 0
            while True:
                kind = "message_streamed" if i % 2 else "note"
                (e,) = await store.append(s.id, [Event(session_id=s.id, type=kind, payload={"w": w, "i": i})])
                if kind == "note":  # only awaited (durable) appends are reported as acknowledged
                    print(s.id, e.seq, flush=True)
                i += 1

        await asyncio.gather(*(writer(s, w) for w, s in enumerate(sessions)))

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)

HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from asm_duckdb.store import DuckDBStore

    async def main(path):
        store = DuckDBStore(path)
        await store.open()
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # hold the file until stdin closes
        await store.close()
        print("released", flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


def _spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("durability", ["safe", "fast"])
def test_acknowledged_appends_survive_kill_9(tmp_path: Path, durability: str) -> None:
    path = tmp_path / "crash.duckdb"
    child = _spawn(WRITER, str(path), "4", durability)
    acked: dict[str, set[int]] = {}
    try:
        assert child.stdout is not None
        for _ in range(200):
            line = child.stdout.readline()
            if not line:
                raise AssertionError(f"writer exited early: {child.stderr.read() if child.stderr else ''}")
            sid, seq = line.split()
            acked.setdefault(sid, set()).add(int(seq))
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL

    async def check() -> None:
        store = DuckDBStore(path)
        await store.open()
        try:
            for sid, seqs in acked.items():
                stored = [e.seq for e in await store.read(sid)]
                assert stored == list(range(1, len(stored) + 1))  # gapless
                missing = seqs - set(stored)
                assert not missing, f"acknowledged but lost after kill -9: {sorted(missing)}"
        finally:
            await store.close()

    asyncio.run(check())


def test_a_file_held_by_another_process_is_locked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "held.duckdb"
    holder = _spawn(HOLDER, str(path))
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "ready"

        async def attempts() -> None:
            with pytest.raises(StoreLockedError) as info:
                await DuckDBStore(path).open()
            assert str(path) in str(info.value)
            assert "in use by another process" in str(info.value)
            assert info.value.retryable

            caplog.set_level(logging.INFO, logger="asm.duckdb")
            with pytest.raises(StoreLockedError, match=r"after waiting 0\.3 s"):
                await DuckDBStore(path, lock_timeout=0.3).open()
            assert any("in use" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)

            # A patient opener gets the file once the holder lets go.
            caplog.clear()
            patient = DuckDBStore(path, lock_timeout=120)
            opening = asyncio.create_task(patient.open())
            for _ in range(5000):
                if any("retrying" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.002)
            assert not opening.done()
            holder.stdin.close()
            await opening
            await patient.close()

        asyncio.run(attempts())
        assert holder.stdout.readline().strip() == "released"
    finally:
        holder.kill()
        holder.wait()
