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

import duckdb
import pytest
from asm_kernel.errors import StoreLockedError

from asm_duckdb.layout import LEVELS, LOG
from asm_duckdb.store import DuckDBStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses SIGKILL")

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from asm_duckdb.store import DuckDBStore
    from asm_kernel.model import Event, Run, RunStatus, Session
    from asm_kernel.writes import RunWrite, WriteUnit

    async def main(path, writers):
        store = DuckDBStore(path, durability=sys.argv[3], hot_events=int(sys.argv[4]))
        await store.open()
        leases = []
        for _ in range(writers):
            s = Session()
            run = Run(session_id=s.id).transition(RunStatus.RUNNING, owner="w", lease_token=1)
            done = await store.commit(WriteUnit(s.id, new_session=s, new_runs=[RunWrite(run, lease_ttl=600)]))
            leases.append((s, done.run(run.id).lease))

        async def writer(s, fence, w):
            i = 0
            while True:
                if i % 2:  # a stream delta under the run's lease: written behind in fast mode
                    unit = WriteUnit(s.id, [Event(session_id=s.id, type="message_streamed", payload={"i": i})],
                                     fence=fence, durable=False)
                    mark = "B" if sys.argv[3] == "fast" else "D"
                else:  # an event outside any run: awaited to its commit in every mode
                    unit = WriteUnit(s.id, [Event(session_id=s.id, type="note", payload={"w": w, "i": i})])
                    mark = "D"
                (e,) = (await store.commit(unit)).events
                print(mark, s.id, e.seq, flush=True)
                i += 1

        await asyncio.gather(*(writer(s, fence, w) for w, (s, fence) in enumerate(leases)))

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


@pytest.mark.parametrize(
    ("durability", "hot_events"),
    [("safe", 100_000), ("fast", 100_000), ("safe", 40), ("fast", 40)],
    ids=["safe", "fast", "safe-merging", "fast-merging"],
)
def test_acknowledged_durable_events_survive_kill_9(tmp_path: Path, durability: str, hot_events: int) -> None:
    """Every event acknowledged as durable is stored with the seq it was acknowledged with.

    In fast mode, deltas acknowledged before their commit ("B") may be lost - at most the last
    BEHIND_MAX_DELAY seconds of them, and only after the last durable point; the log stays
    gapless. In safe mode every acknowledged event is durable. With ``hot_events=40`` the store
    merges its hot table into the sorted levels all the time, so the kill lands in merges too.
    """
    path = tmp_path / "crash.duckdb"
    child = _spawn(WRITER, str(path), "4", durability, str(hot_events))
    durable: dict[str, set[int]] = {}
    behind: dict[str, set[int]] = {}
    try:
        assert child.stdout is not None
        for _ in range(600):
            line = child.stdout.readline()
            if not line:
                raise AssertionError(f"writer exited early: {child.stderr.read() if child.stderr else ''}")
            mark, sid, seq = line.split()
            (durable if mark == "D" else behind).setdefault(sid, set()).add(int(seq))
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.communicate()  # reaps it and closes its pipes
    assert child.returncode == -signal.SIGKILL

    async def check() -> None:
        store = DuckDBStore(path)
        await store.open()
        try:
            for sid, seqs in durable.items():
                stored = [e.seq for e in await store.read(sid)]
                assert stored == list(range(1, len(stored) + 1))  # gapless
                missing = seqs - set(stored)
                assert not missing, f"acknowledged durable events lost after kill -9: {sorted(missing)}"
                # Only what came after the last durable point can be lost.
                lost = behind.get(sid, set()) - set(stored)
                assert all(seq > max(seqs) for seq in lost), (sorted(lost), max(seqs))
            assert store.lost == {}
        finally:
            await store.close()

    asyncio.run(check())
    with duckdb.connect(str(path), read_only=True) as conn:
        count = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in (*LEVELS, LOG, "events")}  # type: ignore[index]
    assert count["events"] == count[LOG]  # a merge moved rows whole or not at all
    if hot_events < 100:
        assert sum(count[t] for t in LEVELS) > 0, count


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
        for pipe in (holder.stdin, holder.stdout, holder.stderr):
            if pipe is not None:
                pipe.close()


APPENDER = textwrap.dedent(
    """
    import asyncio, sys
    from asm_duckdb.store import DuckDBStore
    from asm_kernel.model import Event, Session
    from asm_kernel.writes import WriteUnit

    async def main(path, n):
        store = DuckDBStore(path, durability="safe")
        await store.open()  # the sessions are checkpointed into the file by this close
        sessions = [Session() for _ in range(n)]
        for s in sessions:
            await store.commit(WriteUnit(s.id, new_session=s))
        await store.close()
        store = DuckDBStore(path, durability="safe")
        await store.open()
        i = 0
        while True:  # from here on every commit lives in the .wal until a checkpoint
            s = sessions[i % n]
            (e,) = (await store.commit(WriteUnit(s.id, [Event(session_id=s.id, type="note", payload={"i": i})]))).events
            print(s.id, e.seq, flush=True)
            i += 1

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


def test_a_truncated_wal_is_reported_as_lost_events(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """kill -9, then cut the WAL: the committed events it held are reported per session, not hidden."""
    path = tmp_path / "wal.duckdb"
    child = _spawn(APPENDER, str(path), "3")
    acked: dict[str, int] = {}
    try:
        assert child.stdout is not None
        for _ in range(300):
            line = child.stdout.readline()
            if not line:
                raise AssertionError(f"appender exited early: {child.stderr.read() if child.stderr else ''}")
            sid, seq = line.split()
            acked[sid] = max(acked.get(sid, 0), int(seq))
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.communicate()
    wal = path.with_name(path.name + ".wal")
    size = wal.stat().st_size
    assert size > 0, "the appends should still be in the WAL"
    with open(wal, "r+b") as f:
        f.truncate(size // 2)

    async def reopen() -> tuple[dict[str, int], dict[str, int], list[dict[str, object]]]:
        store = DuckDBStore(path)
        await store.open()
        try:
            stored = {sid: await store.last_seq(sid) for sid in acked}
            return stored, dict(store.lost), list(store.lost_before)
        finally:
            await store.close()

    caplog.set_level(logging.WARNING, logger="asm.duckdb")
    stored, lost, before = asyncio.run(reopen())
    expected = {sid: acked[sid] - stored[sid] for sid in acked if acked[sid] > stored[sid]}
    assert expected, "cutting the WAL in half should have dropped committed events"
    # Every acknowledged event was committed before its mark, so the loss is exact.
    assert lost == expected
    assert before == []
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "lost" in r.getMessage()]
    assert warning and f"lost {sum(expected.values())} committed event(s)" in warning[0]

    # The loss is reported once, then remembered; the log carries on from what survived.
    caplog.clear()
    stored2, lost2, before2 = asyncio.run(reopen())
    assert stored2 == stored and lost2 == {}
    assert [entry["sessions"] for entry in before2] == [expected]
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
