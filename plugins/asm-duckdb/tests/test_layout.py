"""The event layout (asm_duckdb.layout): a hot table merged into sorted levels, reads unchanged."""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
from asm_kernel.errors import ConfigError
from asm_kernel.model import Event
from asm_kernel.testing.stores import create_session

from asm_duckdb.layout import LEVELS, LOG, level_caps, merge_target, select_events, session_key
from asm_duckdb.settings import DuckDBSettings, build
from asm_duckdb.store import DuckDBStore


def _events(session_id: str, n: int, start: int = 0) -> list[Event]:
    return [Event(session_id=session_id, type="note", payload={"i": start + i}) for i in range(n)]


def _counts(path: Path) -> dict[str, int]:
    """Rows per table: ``log`` (every event), ``hot`` (log rows not merged), each level, ``events``."""
    with duckdb.connect(str(path), read_only=True) as conn:

        def one(sql: str) -> int:
            return int(conn.execute(sql).fetchone()[0])  # type: ignore[index]

        counts = {t: one(f"SELECT count(*) FROM {t}") for t in LEVELS}
        counts["log"] = one(f"SELECT count(*) FROM {LOG}")
        counts["hot"] = one(f"SELECT count(*) FROM {LOG} WHERE payload IS NOT NULL")
        counts["events"] = one("SELECT count(*) FROM events")
        counts["ids"] = one(f"SELECT count(DISTINCT id) FROM {LOG}")
    return counts


def _sorted_levels(path: Path) -> bool:
    with duckdb.connect(str(path), read_only=True) as conn:
        for level in LEVELS:
            keys = conn.execute(f"SELECT skey, seq FROM {level}").fetchall()  # storage order
            if keys != sorted(keys):
                return False
    return True


def test_session_key_is_stable_and_signed() -> None:
    # Fixed values: a file written by one process is read by another, so the key never changes.
    assert session_key("ses_1") == session_key("ses_1")
    assert session_key("ses_1") != session_key("ses_2")
    assert all(-(2**63) <= session_key(f"s{i}") < 2**63 for i in range(100))
    assert session_key("thread-\udcff") == session_key("thread-\udcff")  # lone surrogates too


def test_merge_target_fills_the_smallest_level_that_fits() -> None:
    assert level_caps(100) == (1000, 10_000, None)
    assert merge_target([0, 0, 0], 100, 100) == 0
    assert merge_target([900, 0, 0], 100, 100) == 0
    assert merge_target([901, 0, 0], 100, 100) == 1  # 1001 rows do not fit level 1
    assert merge_target([950, 9_000, 0], 100, 100) == 2
    assert merge_target([0, 5, 10**9], 100, 100) == 0


async def test_interleaved_sessions_read_the_same_through_merges(tmp_path: Path) -> None:
    """Random interleaved appends across every merge level; each session reads as written."""
    path = tmp_path / "lsm.duckdb"
    store = DuckDBStore(path, durability="safe", hot_events=15, tail_bytes=0, cache_bytes=0)
    await store.open()
    rng = random.Random(7)
    sessions = [(await create_session(store)).id for _ in range(6)]
    written: dict[str, int] = dict.fromkeys(sessions, 0)
    merged = []
    for step in range(400):
        sid = rng.choice(sessions)
        n = rng.randint(1, 4)
        await store.append(sid, _events(sid, n, written[sid]))
        written[sid] += n
        if step % 37 == 0:
            merged.append(await store.compact(full=step % 111 == 0))
    assert any(m is not None and m.level == LEVELS[-1] for m in merged)
    assert {m.level for m in merged if m is not None} | {m.level for m in store._compactor.merges} >= set(LEVELS[:2])  # type: ignore[union-attr]

    async def check(s: DuckDBStore) -> None:
        for sid, n in written.items():
            log = await s.read(sid)
            assert [e.seq for e in log] == list(range(1, n + 1))
            assert [e.payload["i"] for e in log] == list(range(n))
            assert [e.seq for e in await s.last(sid, 5)] == list(range(n - 4, n + 1))
            assert await s.last_seq(sid) == n
            assert [e.seq for e in await s.read(sid, after=n - 7, limit=3)] == [n - 6, n - 5, n - 4]

    await check(store)
    await store.close()
    counts = _counts(path)
    total = sum(written.values())
    assert counts["hot"] + sum(counts[t] for t in LEVELS) == counts["events"] == counts["log"] == counts["ids"] == total
    assert _sorted_levels(path)
    again = DuckDBStore(path, cache_bytes=0, tail_bytes=0)
    await again.open()
    try:
        assert again.lost == {}
        await check(again)
    finally:
        await again.close()


async def test_the_store_merges_by_itself_once_the_hot_table_is_full(tmp_path: Path) -> None:
    path = tmp_path / "auto.duckdb"
    store = DuckDBStore(path, durability="safe", hot_events=50)
    await store.open()
    try:
        s = await create_session(store)
        for i in range(12):
            await store.append(s.id, _events(s.id, 10, 10 * i))
        compactor = store._compactor
        assert compactor is not None
        for _ in range(500):
            if compactor.merges:
                break
            await asyncio.sleep(0.01)
        assert compactor.merges, "no merge after 120 events with hot_events=50"
        assert compactor.merges[0].level == LEVELS[0] and compactor.merges[0].hot_rows >= 50
        assert [e.seq for e in await store.read(s.id)] == list(range(1, 121))
    finally:
        await store.close()


async def test_writes_during_a_merge_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "busy.duckdb"
    store = DuckDBStore(path, durability="safe", hot_events=10**6, tail_bytes=0)  # reads go to the file
    await store.open()
    try:
        sessions = [(await create_session(store)).id for _ in range(20)]
        for sid in sessions:  # enough hot rows that the merge takes a while
            await store.append(sid, _events(sid, 1500))
        merge = asyncio.create_task(store.compact())

        async def writer(sid: str) -> None:
            for i in range(15):
                await store.append(sid, _events(sid, 1, 1500 + i))

        seen: list[int] = []

        async def reader() -> None:  # every read during the merge is whole and gapless
            while not merge.done():
                got = [e.seq for e in await store.read(sessions[3])]
                assert got == list(range(1, len(got) + 1))
                assert not seen or len(got) >= seen[-1]
                seen.append(len(got))

        await asyncio.gather(reader(), *(writer(sid) for sid in sessions))
        done = await merge
        assert seen and seen[0] >= 1500
        assert done is not None and done.level == LEVELS[0]
        await store.compact(full=True)
        for sid in sessions:
            log = await store.read(sid)
            assert [e.seq for e in log] == list(range(1, 1516))
            assert [e.payload["i"] for e in log] == list(range(1515))
    finally:
        await store.close()
    counts = _counts(path)
    assert counts["hot"] == 0 and counts[LEVELS[-1]] == counts["log"] == counts["ids"] == 20 * 1515


async def test_a_retried_event_id_finds_the_stored_event_after_its_merge(tmp_path: Path) -> None:
    path = tmp_path / "ids.duckdb"
    store = DuckDBStore(path, durability="safe")
    await store.open()
    try:
        s = await create_session(store)
        (first,) = await store.append(s.id, _events(s.id, 1))
        await store.append(s.id, _events(s.id, 3, 1))
        await store.compact(full=True)
        await store.close()
        store = DuckDBStore(path, durability="safe")  # nothing cached: the file must say it
        await store.open()
        retry = Event(id=first.id, session_id=s.id, type="note", payload={"i": 0})
        (again,) = await store.append(s.id, [retry])
        assert (again.id, again.seq) == (first.id, 1)
        assert [e.seq for e in await store.read(s.id)] == [1, 2, 3, 4]
    finally:
        await store.close()
    assert _counts(path)["log"] == _counts(path)["events"] == 4


async def test_a_read_touches_one_row_group_per_level(tmp_path: Path) -> None:
    """The point of the layout: DuckDB's zone maps skip the other sessions' row groups."""
    path = tmp_path / "prune.duckdb"
    store = DuckDBStore(path)
    await store.open()
    await store.close()
    sessions = 400
    with duckdb.connect(str(path)) as conn:  # 400 sessions x 1000 events, interleaved
        ids = [f"s{i}" for i in range(sessions)]
        conn.execute("CREATE TEMP TABLE k AS SELECT unnest($1::VARCHAR[]) AS sid, unnest($2::BIGINT[]) AS skey",
                     [ids, [session_key(i) for i in ids]])  # fmt: skip
        conn.execute("INSERT INTO sessions SELECT sid, 'a', 'active', '{}', [], now(), now() FROM k")
        conn.execute(
            f"INSERT INTO {LOG} SELECT 'e' || i, 's' || (i % $s), i // $s + 1, NULL, 'note', '{{}}', now(), 1, "
            "(SELECT skey FROM k WHERE sid = 's' || (i % $s)), i + 1 FROM range($s * 1000) t(i)",
            {"s": sessions},
        )
    store = DuckDBStore(path)
    await store.open()
    try:
        merged = await store.compact(full=True)
        assert merged is not None and merged.rows == sessions * 1000
        assert len(await store.read("s123")) == 1000
    finally:
        await store.close()
    with duckdb.connect(str(path), read_only=True) as conn:
        sql, params = select_events("id, seq, payload", "skey = ? AND seq > 0", [session_key("s123")], sessions * 1000)
        plan = conn.execute(f"EXPLAIN ANALYZE {sql}", params).fetchall()[0][1]
    scanned = [(int(a), int(b)) for a, b in re.findall(r"Row Groups Scanned:\s*(\d+)\s*/\s*(\d+)", plan)]
    # Every row is merged into the last level: the log part and the empty levels are dropped at
    # plan time (their statistics say no row can match); the level is scanned, but only the
    # row group or two that hold the session.
    assert len(scanned) in (1, 2), plan
    for got, of in scanned:
        assert of >= 3, plan
        assert got <= 2, plan


def test_hot_events_is_checked() -> None:
    context = type("C", (), {"home": "/tmp", "config_dir": "/tmp", "path": "store"})()
    with pytest.raises(ConfigError) as err:
        build(DuckDBSettings(hot_events=0), context)
    assert err.value.path == "store.hot_events"
    assert build(DuckDBSettings(hot_events=500), context).hot_events == 500


MERGE_DISK_FULL = textwrap.dedent(
    """
    import asyncio, json, os, resource, signal, sys
    from asm_duckdb.store import DuckDBStore
    from asm_kernel.errors import StorageError
    from asm_kernel.model import Event, Session
    from asm_kernel.writes import WriteUnit

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG

    async def main(path):
        store = DuckDBStore(path, durability="safe", hot_events=10**6)
        await store.open()
        s = Session()
        await store.commit(WriteUnit(s.id, new_session=s))
        for i in range(40):
            await store.append(s.id, [Event(session_id=s.id, type="note", payload={"t": "x" * 300, "i": 100 * i + j})
                                      for j in range(100)])
        await store.flush()
        used = sum(os.path.getsize(p) for p in (path, path + ".wal") if os.path.exists(p))
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (used + 4096, hard))  # no room for the merged copy
        try:
            await store.compact(full=True)
            failed = None
        except StorageError as exc:
            failed = str(exc)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        seqs = [e.seq for e in await store.read(s.id)]
        merged = await store.compact(full=True)
        await store.close()
        print(json.dumps({"session": s.id, "failed": failed, "seqs": len(seqs), "merged": merged.rows}))

    asyncio.run(main(sys.argv[1]))
    """
)


def test_a_merge_that_runs_out_of_disk_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "full.duckdb"
    out = subprocess.run(
        [sys.executable, "-c", MERGE_DISK_FULL, str(path)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["failed"] and "merging the events of" in data["failed"], data
    assert data["seqs"] == 4000 and data["merged"] == 4000
    counts = _counts(path)
    assert counts[LEVELS[-1]] == counts["log"] == counts["events"] == 4000 and counts["hot"] == 0


async def test_a_dropped_events_view_is_made_again(tmp_path: Path) -> None:
    path = tmp_path / "view.duckdb"
    store = DuckDBStore(path)
    await store.open()
    s = await create_session(store)
    await store.append(s.id, _events(s.id, 3))
    await store.close()
    with duckdb.connect(str(path)) as conn:
        conn.execute("DROP VIEW events")
    again = DuckDBStore(path)
    await again.open()
    try:
        assert [e.seq for e in await again.read(s.id)] == [1, 2, 3]
    finally:
        await again.close()
    assert _counts(path)["events"] == 3


async def test_reads_skip_empty_levels_and_requery_when_a_merge_fills_one_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "f.duckdb"
    store = DuckDBStore(path, hot_events=1_000)
    await store.open()
    s = await create_session(store)
    await store.append(s.id, [Event(session_id=s.id, type="note", payload={"i": i}) for i in range(30)])
    await store.close()
    store = DuckDBStore(path, hot_events=1_000)  # reopened: nothing cached, every level empty
    await store.open()
    assert store._filled().levels == ()
    queries: list[str] = []
    inner = store._read

    async def merge_first(fetch: object, sql: str, params: object, *rest: object) -> object:
        # The race: the read chose its levels, then a merge moved the rows into a new level
        # before the read's query took its snapshot.
        if not queries:
            await store.compact()
        queries.append(sql)
        return await inner(fetch, sql, params, *rest)

    store._read = merge_first  # type: ignore[method-assign]
    got = await store.read(s.id)
    assert [e.payload["i"] for e in got] == list(range(30))
    assert len(queries) == 2 and "events_l1" not in queries[0] and all(t in queries[1] for t in LEVELS)
    assert store._filled().levels == ("events_l1",)
    got = await store.last(s.id, 5)  # no merge now: one query, over the filled level only
    assert [e.payload["i"] for e in got] == list(range(25, 30))
    assert len(queries) == 3 and "events_l1" in queries[2] and "events_l2" not in queries[2]
    await store.close()
