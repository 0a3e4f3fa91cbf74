"""asm's DuckDB store beside raw DuckDB floors, on a temp file, in one run.

    python bench/bench_store.py [--events 10000] [--sessions 50] [--per-session 200]
                                [--sizes 100000,1000000] [--size-only]

Scenarios
  (a) ``--events`` events appended to one session one call at a time, each awaited;
  (b) ``--sessions`` concurrent sessions x ``--per-session`` events, every append awaited
      (asyncio.gather);
  (c) after reopening the file: load the (a) session in full, and its last 50 events.

Rows
  asm memory   the memory store (no file): the cost of asm's own bookkeeping
  asm safe     DuckDBStore(durability="safe"): every append awaits its commit (group commit)
  asm safe -marks  the same with the lost-event marks (asm_duckdb.marks) switched off: their cost
  asm fast     DuckDBStore(durability="fast", the default): the events are stream deltas under a
               run's lease marked ``durable=False`` (as the kernel marks them), acknowledged
               before their commit (write-behind)
  raw 1/commit one INSERT per commit (autocommit), no executemany - the durable floor per event
  raw 1/commit thr  (a) only: the same INSERTs awaited from asyncio, each run by one worker
               thread - the floor of a store that keeps DuckDB off the event loop

In (a), asm safe, asm safe -marks and both raw rows run interleaved, in rounds of 250 appends
each in turn (each round starting with the next), so a shared machine's drifting speed falls on all four alike.
  raw batch    every row in one transaction (Arrow when pyarrow is installed, else UNNEST lists)

The events are ``message_streamed`` deltas, the type fast mode writes behind.

File-size table (``--sizes``): for each size N, a file of N events in N/200 sessions of 200,
interleaved as concurrent writers leave them (event i belongs to session i mod N/200), built
as asm leaves it: each ``hot_events`` (100,000) rows appended to the log with one SQL
statement, then merged by the store's compactor, the newest 50,000 left hot (the bench prints
the table sizes and the merge time); then, after one warm-up open (it writes the marks file),
on a fresh open: ``open`` (DuckDBStore.open: lease expiry and the lost-event check) plus
``recover`` (``list_runs(lease_expired=True)``), cold ``last(50)`` and a cold full read of a
200-event session (sessions asm has not cached; p50 of 10 sessions), the first append to a
session after open (p50 of 10 sessions), the steady append cost (mean of 200 serial
awaited appends to one session), and open+recover again after a simulated ``kill -9`` (the
marks file without its clean-close line: the open then reads every session's top seq).
Beside it, the same-run raw baseline: the same rows in one plain DuckDB table keyed
(session_id, seq), in arrival order, on a fresh connection: ``open``, ``ORDER BY seq DESC
LIMIT 50``, ``ORDER BY seq`` of the session, and one ``max(seq)`` lookup + INSERT + commit
(first) / one INSERT + commit (steady).
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from asm_duckdb.layout import HOT_EVENTS, LEVELS, LOG, session_key
from asm_duckdb.marks import marks_path
from asm_duckdb.store import DuckDBStore

from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.model import Event, Fence, Run, RunStatus, Session
from asm_kernel.writes import RunWrite, WriteUnit

DDL = """CREATE TABLE events (id VARCHAR NOT NULL, session_id VARCHAR NOT NULL, seq BIGINT NOT NULL,
    run_id VARCHAR, type VARCHAR NOT NULL, payload VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL,
    schema_version INTEGER NOT NULL, PRIMARY KEY (session_id, seq));
CREATE UNIQUE INDEX events_id ON events (id);"""

rows_out: list[dict[str, object]] = []
C = "(c) reopen, then read"


def record(scenario: str, what: str, ops: int, events: int, wall: float, lat: list[float] | None = None,
           commits: int | None = None) -> None:
    mean = (statistics.fmean(lat) if lat else wall / ops) * 1000
    p99 = statistics.quantiles(lat, n=100)[98] * 1000 if lat and len(lat) >= 100 else None
    rows_out.append({
        "scenario": scenario, "what": what, "ops": ops, "events": events, "wall_s": wall,
        "events_s": events / wall if wall else float("inf"), "ms_op": mean, "p99": p99, "commits": commits,
    })
    print(f"  .. {scenario:<24} {what:<17} {wall:7.2f} s", file=sys.stderr, flush=True)


def delta(session_id: str, i: int) -> Event:
    return Event(session_id=session_id, type="message_streamed", payload={"text": f"tok{i} ", "index": 0})


async def new_session(store: object) -> tuple[Session, Fence]:
    """A session with a running run holding a lease (its events are the run's deltas)."""
    s = Session(agent_id="bench")
    run = Run(session_id=s.id).transition(RunStatus.RUNNING, owner="bench", lease_token=1)
    done = await store.commit(WriteUnit(s.id, new_session=s, new_runs=[RunWrite(run, lease_ttl=3600)]))  # type: ignore[attr-defined]
    return s, done.run(run.id).lease


def open_store(path: Path, durability: str) -> object:
    if durability == "memory":
        return MemoryStore()
    return DuckDBStore(path, durability=durability)


def commits(store: object) -> int | None:
    stats = getattr(store, "stats", None)
    return stats.commits if stats is not None else None


def raw_rows(session_id: str, n: int, start: int = 1) -> list[tuple[object, ...]]:
    now = datetime.now(UTC)
    return [
        (uuid.uuid4().hex, session_id, start + i, None, "message_streamed",
         json.dumps({"text": f"tok{i} ", "index": 0}), now, 1)
        for i in range(n)
    ]


# -- asm ----------------------------------------------------------------------------------------


async def asm_one_session(path: Path, durability: str, n: int) -> str:
    store = open_store(path, durability)
    await store.open()  # type: ignore[attr-defined]
    s, fence = await new_session(store)
    commits0 = commits(store)
    lat: list[float] = []
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        await store.append(s.id, [delta(s.id, i)], fence=fence, durable=False)  # type: ignore[attr-defined]
        lat.append(time.perf_counter() - t)
    await store.close()  # type: ignore[attr-defined]  # fast mode: the last commit is part of the cost
    wall = time.perf_counter() - t0
    after = commits(store)
    c = None if after is None or commits0 is None else after - commits0
    record("(a) 1 session, serial", f"asm {durability}", n, n, wall, lat, c)
    return s.id


class _Serial(abc.ABC):
    """One variant of (a): ``step(k)`` makes k awaited appends, timing each."""

    label = ""

    def __init__(self) -> None:
        self.lat: list[float] = []
        self.commits: int | None = None

    async def step(self, k: int) -> None:
        for _ in range(k):
            t = time.perf_counter()
            await self.one()
            self.lat.append(time.perf_counter() - t)

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def one(self) -> None:
        """One append, awaited."""

    async def close(self) -> None:
        pass


class _AsmSafe(_Serial):
    def __init__(self, path: Path, marks: bool) -> None:
        super().__init__()
        self.label = "asm safe" if marks else "asm safe -marks"
        self.path, self.marks, self.i = path, marks, 0

    async def open(self) -> None:
        self.store = DuckDBStore(self.path, durability="safe")
        await self.store.open()
        if not self.marks:  # what the lost-event marks cost: the same without them
            assert self.store._writer is not None
            self.store._writer.on_commit = None
        self.session, self.fence = await new_session(self.store)
        self.commits0 = self.store.stats.commits

    async def one(self) -> None:
        self.i += 1
        sid = self.session.id
        await self.store.append(sid, [delta(sid, self.i)], fence=self.fence, durable=False)

    async def close(self) -> None:
        self.commits = self.store.stats.commits - self.commits0
        await self.store.close()


class _Raw(_Serial):
    """One INSERT per commit (autocommit) on the event loop's thread: the durable floor."""

    label = "raw 1/commit"
    sql = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)"

    def __init__(self, path: Path, n: int) -> None:
        super().__init__()
        self.con = raw_connect(path)
        self.rows = iter(raw_rows(uuid.uuid4().hex, n))

    async def open(self) -> None:
        pass

    async def one(self) -> None:
        self.con.execute(self.sql, next(self.rows))

    async def close(self) -> None:
        self.commits = len(self.lat)
        self.con.close()


class _RawThread(_Raw):
    """The same INSERTs awaited from asyncio, each run by one worker thread: the floor of a
    store that keeps DuckDB off the event loop (two thread wake-ups per write)."""

    label = "raw 1/commit thr"

    async def open(self) -> None:
        import queue
        import threading

        loop = asyncio.get_running_loop()
        self.jobs: queue.SimpleQueue[tuple[tuple[object, ...], asyncio.Future[None]] | None] = queue.SimpleQueue()

        def work() -> None:
            while (job := self.jobs.get()) is not None:
                row, fut = job
                self.con.execute(self.sql, row)
                loop.call_soon_threadsafe(fut.set_result, None)

        self.thread = threading.Thread(target=work, daemon=True)
        self.thread.start()

    async def one(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.jobs.put((next(self.rows), fut))
        await fut

    async def close(self) -> None:
        self.jobs.put(None)
        self.thread.join()
        await super().close()


async def serial_awaited(d: Path, n: int, block: int = 250) -> str:
    """(a)'s awaited variants interleaved: rounds of ``block`` appends each, in turn, so that
    a shared machine's drifting speed falls on all of them alike (their ratios are the point).
    Returns the asm safe session's id (read back in (c))."""
    variants: list[Any] = [
        _AsmSafe(d / "a-safe.duckdb", True),
        _AsmSafe(d / "a-safe-nomarks.duckdb", False),
        _Raw(d / "a-raw1.duckdb", n),
        _RawThread(d / "a-raw1t.duckdb", n),
    ]
    for v in variants:
        await v.open()
    done = turn = 0
    walls = [0.0] * len(variants)
    while done < n:
        k = min(block, n - done)
        for j in range(len(variants)):  # each round starts with the next variant: no place is favoured
            j = (j + turn) % len(variants)
            t = time.perf_counter()
            await variants[j].step(k)
            walls[j] += time.perf_counter() - t
        done += k
        turn += 1
    for j, v in enumerate(variants):
        await v.close()
        record("(a) 1 session, serial", v.label, n, n, walls[j], v.lat, v.commits)
    return variants[0].session.id  # type: ignore[no-any-return]


async def asm_concurrent(path: Path, durability: str, sessions: int, per: int) -> None:
    store = open_store(path, durability)
    await store.open()  # type: ignore[attr-defined]
    made = [await new_session(store) for _ in range(sessions)]
    commits0 = commits(store)
    lat: list[float] = []

    async def writer(s: Session, fence: Fence) -> None:
        for i in range(per):
            t = time.perf_counter()
            await store.append(s.id, [delta(s.id, i)], fence=fence, durable=False)  # type: ignore[attr-defined]
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(writer(s, f) for s, f in made))
    await store.close()  # type: ignore[attr-defined]
    wall = time.perf_counter() - t0
    total = sessions * per
    after = commits(store)
    c = None if after is None or commits0 is None else after - commits0
    record(f"(b) {sessions} sessions x {per}", f"asm {durability}", total, total, wall, lat, c)


async def asm_load(path: Path, session_id: str, n: int) -> None:
    t0 = time.perf_counter()
    store = DuckDBStore(path)
    await store.open()
    opened = time.perf_counter() - t0
    record(C, "asm open", 1, 0, opened)
    t0 = time.perf_counter()
    events = await store.read(session_id)
    wall = time.perf_counter() - t0
    assert len(events) == n, len(events)
    record(C, f"asm read {n}", 1, n, wall)
    lat = []
    for _ in range(50):
        t = time.perf_counter()
        last = await store.last(session_id, 50)
        lat.append(time.perf_counter() - t)
    assert [e.seq for e in last] == list(range(n - 49, n + 1))
    record(C, "asm last 50", len(lat), 50 * len(lat), sum(lat), lat)
    await store.close()


# -- raw DuckDB floors ----------------------------------------------------------------------


def raw_connect(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    con.execute(DDL)
    return con


def raw_autocommit(path: Path, scenario: str, sessions: int, per: int) -> None:
    con = raw_connect(path)
    sids = [uuid.uuid4().hex for _ in range(sessions)]
    data = {sid: raw_rows(sid, per) for sid in sids}
    order = [data[sid][i] for i in range(per) for sid in sids]  # interleaved like concurrent writers
    sql = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    lat = []
    t0 = time.perf_counter()
    for row in order:
        t = time.perf_counter()
        con.execute(sql, row)
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    con.close()
    record(scenario, "raw 1/commit", len(order), len(order), wall, lat, len(order))


def raw_batch(path: Path, scenario: str, sessions: int, per: int) -> str:
    con = raw_connect(path)
    rows = [r for _ in range(sessions) for r in raw_rows(uuid.uuid4().hex, per)]
    t0 = time.perf_counter()
    con.execute("BEGIN")
    try:
        import pyarrow as pa

        cols = list(zip(*rows, strict=True))
        table = pa.table({
            "id": cols[0], "session_id": cols[1], "seq": pa.array(cols[2], pa.int64()),
            "run_id": pa.array(cols[3], pa.string()), "type": cols[4], "payload": cols[5],
            "ts": pa.array(cols[6], pa.timestamp("us", tz="UTC")), "schema_version": pa.array(cols[7], pa.int32()),
        })
        con.register("batch", table)
        con.execute("INSERT INTO events SELECT * FROM batch")
        how = "raw batch/arrow"
    except ImportError:
        con.execute(
            "INSERT INTO events SELECT unnest($1::VARCHAR[]), unnest($2::VARCHAR[]), unnest($3::BIGINT[]), "
            "unnest($4::VARCHAR[]), unnest($5::VARCHAR[]), unnest($6::VARCHAR[]), "
            "unnest($7::TIMESTAMPTZ[]), unnest($8::INTEGER[])",
            [list(c) for c in zip(*rows, strict=True)],
        )
        how = "raw batch/unnest"
    con.execute("COMMIT")
    wall = time.perf_counter() - t0
    con.close()
    record(scenario, how, 1, len(rows), wall, None, 1)
    return rows[0][1]  # type: ignore[return-value]


def raw_load(path: Path, session_id: str, n: int) -> None:
    t0 = time.perf_counter()
    con = duckdb.connect(str(path))
    record(C, "raw open", 1, 0, time.perf_counter() - t0)
    t0 = time.perf_counter()
    got = con.execute("SELECT * FROM events WHERE session_id = ? ORDER BY seq", [session_id]).fetchall()
    wall = time.perf_counter() - t0
    assert len(got) == n
    record(C, f"raw read {n}", 1, n, wall)
    lat = []
    for _ in range(50):
        t = time.perf_counter()
        con.execute("SELECT * FROM events WHERE session_id = ? ORDER BY seq DESC LIMIT 50", [session_id]).fetchall()
        lat.append(time.perf_counter() - t)
    record(C, "raw last 50", len(lat), 50 * len(lat), sum(lat), lat)
    con.close()


# -- file-size table ---------------------------------------------------------------------------

PER = 200
SIZE_ROWS: list[tuple[int, str, float, float, float, float, float, float | None]] = []
#: Per size: (seconds spent merging while building, events per table after the build).
BUILDS: dict[int, tuple[float, dict[str, int]]] = {}


def build_file(path: Path, raw_path: Path, n: int) -> int:
    """An asm file with n events in n/200 interleaved sessions, as asm leaves it after writing
    them: every ``hot_events`` rows are appended to the log with one SQL statement, then merged
    by the store's own compactor (``compact()``, the merge it runs by itself). Beside it, a raw
    DuckDB file with the same rows in one plain table (PRIMARY KEY (session_id, seq), rows in
    arrival order): what a DuckDB event log without asm's layout looks like. Returns the number
    of sessions."""
    sessions = max(1, n // PER)
    chunk = HOT_EVENTS
    merging = 0.0

    async def build() -> dict[str, int]:
        nonlocal merging
        store = DuckDBStore(path, hot_events=chunk)
        await store.open()
        await store.close()
        ids = [f"bench-s{i}" for i in range(sessions)]
        keys = [session_key(i) for i in ids]

        def connect() -> duckdb.DuckDBPyConnection:
            con = duckdb.connect(str(path))
            con.execute("CREATE TEMP TABLE k AS SELECT unnest($1::VARCHAR[]) AS sid, unnest($2::BIGINT[]) AS skey, "
                        "unnest(range(len($1))) AS i", [ids, keys])  # fmt: skip
            return con

        con = connect()
        con.execute("INSERT INTO sessions SELECT sid, 'bench', 'active', '{}', []::VARCHAR[], now(), now() FROM k")
        con.close()
        # Merged chunks of hot_events rows, then half a chunk left hot (a live store holds 0 to
        # hot_events unmerged rows).
        cut = max(0, n - chunk // 2)
        bounds = [*range(0, cut, chunk), cut, n] if cut else [0, n]
        for lo, hi in itertools.pairwise(bounds):
            if hi <= lo:
                continue
            con = connect()
            con.execute("BEGIN")
            con.execute(
                f"INSERT INTO {LOG} SELECT 'bench-e' || e.i, k.sid, e.i // $s + 1, NULL, 'message_streamed', "
                "'{\"text\":\"tok' || e.i || ' \",\"index\":0}', now(), 1, k.skey, e.i + 1 "
                "FROM range($lo, $hi) e(i) JOIN k ON k.i = e.i % $s ORDER BY e.i",
                {"s": sessions, "lo": lo, "hi": hi},
            )
            con.execute("COMMIT")
            con.close()
            if hi == n and cut:
                break  # the newest rows stay hot
            store = DuckDBStore(path, hot_events=chunk)
            await store.open()
            t = time.perf_counter()
            await store.compact()
            merging += time.perf_counter() - t
            await store.close()
        con = duckdb.connect(str(path), read_only=True)
        counts = {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in LEVELS}  # type: ignore[index]
        counts["hot"] = int(con.execute(f"SELECT count(*) FROM {LOG} WHERE payload IS NOT NULL").fetchone()[0])  # type: ignore[index]
        con.close()
        return counts

    counts = asyncio.run(build())
    BUILDS[n] = (merging, counts)
    con = duckdb.connect(str(raw_path))
    for ddl in DDL.split(";"):
        if ddl.strip():
            con.execute(ddl)
    con.execute(f"ATTACH '{path}' AS asm (READ_ONLY)")
    con.execute("INSERT INTO events SELECT id, session_id, seq, run_id, type, payload, ts, schema_version "
                "FROM asm.events ORDER BY id[8:]::BIGINT")  # fmt: skip
    con.close()
    return sessions


def _p50(values: list[float]) -> float:
    return statistics.median(values) * 1000


async def asm_size(path: Path, sessions: int) -> tuple[float, float, float, float, float, float | None]:
    warm = DuckDBStore(path)  # the first open writes the marks file (a file built without asm)
    await warm.open()
    await warm.close()
    t0 = time.perf_counter()
    store = DuckDBStore(path)
    await store.open()
    await store.list_runs(lease_expired=True)
    opened = time.perf_counter() - t0
    step = max(1, sessions // 31)
    picks = [f"bench-s{(i * step) % sessions}" for i in range(31)]
    lasts, fulls, firsts = [], [], []
    for sid in picks[:10]:
        t = time.perf_counter()
        got = await store.last(sid, 50)
        lasts.append(time.perf_counter() - t)
        assert len(got) == min(50, PER)
    for sid in picks[10:20]:
        t = time.perf_counter()
        got = await store.read(sid)
        fulls.append(time.perf_counter() - t)
        assert len(got) == PER, len(got)
    for sid in picks[20:30]:
        t = time.perf_counter()
        await store.append(sid, [Event(session_id=sid, type="note", payload={"i": 0})])
        firsts.append(time.perf_counter() - t)
    sid = picks[30]
    await store.append(sid, [Event(session_id=sid, type="note", payload={"i": 0})])
    t = time.perf_counter()
    for i in range(PER):
        await store.append(sid, [Event(session_id=sid, type="note", payload={"i": i})])
    steady = (time.perf_counter() - t) / PER
    await store.close()
    # What a kill -9 leaves: every mark line, but not the clean close's (asm_duckdb.marks), so
    # the open compares each session's top seq with its mark.
    marks = marks_path(path)
    data = marks.read_bytes().rstrip(b"\0")
    marks.write_bytes(data[: data.rindex(b"#closed")])
    t0 = time.perf_counter()
    store = DuckDBStore(path)
    await store.open()
    await store.list_runs(lease_expired=True)
    after_kill = time.perf_counter() - t0
    await store.close()
    return opened * 1000, _p50(lasts), _p50(fulls), _p50(firsts), steady * 1000, after_kill * 1000


def raw_size(path: Path, sessions: int) -> tuple[float, float, float, float, float, float | None]:
    t0 = time.perf_counter()
    con = duckdb.connect(str(path))
    opened = time.perf_counter() - t0
    step = max(1, sessions // 37)
    picks = [f"bench-s{(i * step + 1) % sessions}" for i in range(31)]  # not the ones asm read
    lasts, fulls, firsts = [], [], []
    for sid in picks[:10]:
        t = time.perf_counter()
        con.execute("SELECT * FROM events WHERE session_id = ? ORDER BY seq DESC LIMIT 50", [sid]).fetchall()
        lasts.append(time.perf_counter() - t)
    for sid in picks[10:20]:
        t = time.perf_counter()
        con.execute("SELECT * FROM events WHERE session_id = ? ORDER BY seq", [sid]).fetchall()
        fulls.append(time.perf_counter() - t)
    sql = "INSERT INTO events VALUES (?, ?, ?, NULL, 'note', '{}', now(), 1)"
    for sid in picks[20:]:
        t = time.perf_counter()
        top = con.execute("SELECT max(seq) FROM events WHERE session_id = ?", [sid]).fetchone()[0]  # type: ignore[index]
        con.execute(sql, [uuid.uuid4().hex, sid, top + 1])
        firsts.append(time.perf_counter() - t)
    sid, top = picks[30], top + 1
    t = time.perf_counter()
    for i in range(PER):
        con.execute(sql, [uuid.uuid4().hex, sid, top + 1 + i])
    steady = (time.perf_counter() - t) / PER
    con.close()
    return opened * 1000, _p50(lasts), _p50(fulls), _p50(firsts), steady * 1000, None


def size_table(d: Path, sizes: list[int]) -> None:
    for n in sizes:
        path = d / f"size-{n}.duckdb"
        raw_path = d / f"size-{n}-raw.duckdb"
        t = time.perf_counter()
        sessions = build_file(path, raw_path, n)
        print(f"  .. built {n} events / {sessions} sessions in {time.perf_counter() - t:.1f} s",
              file=sys.stderr, flush=True)
        SIZE_ROWS.append((n, "asm", *asyncio.run(asm_size(path, sessions))))
        SIZE_ROWS.append((n, "raw", *raw_size(raw_path, sessions)))
        mb = (path.stat().st_size + sum(f.stat().st_size for f in d.glob(f"size-{n}.duckdb.*"))) / 2**20
        print(f"  .. {n}: {mb:.0f} MB", file=sys.stderr, flush=True)
        for f in [*d.glob(f"size-{n}.duckdb*"), *d.glob(f"size-{n}-raw.duckdb*")]:
            f.unlink()


def print_size_table() -> None:
    if not SIZE_ROWS:
        return
    print()
    print(f"File size: one session's reads and appends at N events (sessions of {PER}, interleaved); "
          "ms, p50 of 10 sessions unless noted")
    header = (f"{'events':>9} {'sessions':>8} {'what':<4} {'open+recover':>12} {'cold last50':>11} "
              f"{'cold full200':>12} {'first append':>12} {'steady append':>13} {'open after kill':>15}")
    print(header)
    print("-" * len(header))
    for n, what, opened, last50, full, first, steady, killed in SIZE_ROWS:
        shown = f"{killed:>15.2f}" if killed is not None else f"{'-':>15}"
        print(f"{n:>9} {max(1, n // PER):>8} {what:<4} {opened:>12.2f} {last50:>11.2f} {full:>12.2f} "
              f"{first:>12.2f} {steady:>13.3f} {shown}")
    print("-" * len(header))
    for n, (merging, counts) in BUILDS.items():
        shown = ", ".join(f"{t} {c}" for t, c in counts.items())
        print(f"{n:>9} events: {shown}; merging them took {merging:.1f} s in all (hot_events {HOT_EVENTS})")
    print("raw: the same rows in one plain DuckDB table (PRIMARY KEY (session_id, seq), arrival order), fresh "
          "connection; first append = max(seq) lookup + INSERT + commit, steady = "
          "INSERT + commit (the asm appends are awaited notes outside a run: committed in every mode)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--per-session", type=int, default=200)
    parser.add_argument("--sizes", default="100000,1000000",
                        help="comma-separated file sizes (events) for the file-size table; '' skips it")
    parser.add_argument("--size-only", action="store_true", help="only the file-size table")
    args = parser.parse_args()
    n, sessions, per = args.events, args.sessions, args.per_session
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    with tempfile.TemporaryDirectory(prefix="asm-bench-") as tmp:
        d = Path(tmp)
        t_start = time.perf_counter()
        if args.size_only:
            size_table(d, sizes)
            print_size_table()
            return
        a = "(a) 1 session, serial"
        asyncio.run(asm_one_session(d / "a-memory", "memory", n))
        asyncio.run(asm_one_session(d / "a-fast.duckdb", "fast", n))
        sid = asyncio.run(serial_awaited(d, n))
        raw_sid = raw_batch(d / "a-raw2.duckdb", a, 1, n)
        b = f"(b) {sessions} sessions x {per}"
        asyncio.run(asm_concurrent(d / "b-memory", "memory", sessions, per))
        asyncio.run(asm_concurrent(d / "b-safe.duckdb", "safe", sessions, per))
        asyncio.run(asm_concurrent(d / "b-fast.duckdb", "fast", sessions, per))
        raw_autocommit(d / "b-raw1.duckdb", b, sessions, per)
        raw_batch(d / "b-raw2.duckdb", b, sessions, per)
        asyncio.run(asm_load(d / "a-safe.duckdb", sid, n))
        raw_load(d / "a-raw2.duckdb", raw_sid, n)
        size_table(d, sizes)
        total = time.perf_counter() - t_start

    print(f"asm DuckDB store vs raw DuckDB - duckdb {duckdb.__version__}, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cpus, temp file")
    header = (f"{'scenario':<24} {'what':<17} {'ops':>6} {'events':>6} {'wall s':>7} {'events/s':>9} "
              f"{'ms/op':>7} {'p99 ms':>7} {'commits':>7}")
    print(header)
    print("-" * len(header))
    last = None
    for r in rows_out:
        if last is not None and r["scenario"] != last:
            print("-" * len(header))
        last = r["scenario"]
        p99 = f"{r['p99']:.2f}" if r["p99"] is not None else "-"
        commits = str(r["commits"]) if r["commits"] is not None else "-"
        ev = f"{r['events_s']:.0f}" if r["events"] else "-"
        print(f"{r['scenario']:<24} {r['what']:<17} {r['ops']:>6} {r['events']:>6} {r['wall_s']:>7.3f} "
              f"{ev:>9} {r['ms_op']:>7.3f} {p99:>7} {commits:>7}")
    print("-" * len(header))
    print(f"ms/op: mean latency of one awaited append (asm), one INSERT+commit (raw 1/commit), the whole "
          f"batch (raw batch), one read (c). total bench time {total:.0f} s")
    print_size_table()


if __name__ == "__main__":
    main()
