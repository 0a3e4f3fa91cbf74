"""asm's Postgres store beside raw psycopg floors, on the local server, in one run.

    python bench/bench_postgres.py [--events 2000] [--sessions 50] [--per-session 200] [--runs 200]

Needs a server at ASM_PG_DSN (default postgresql://postgres@127.0.0.1:5432/test); every scenario
works in a schema of its own, dropped at the end.

Scenarios
  W1  ``--events`` events appended to one session one call at a time, each awaited;
  W4  ``--sessions`` concurrent sessions x ``--per-session`` events, every append awaited
      (asyncio.gather, one task per session, the store's pool of 10 connections);
  W4p ``--procs`` processes x 10 sessions x ``--per-session`` / 2 events, all at once: the store as
      it is (notifications announced after each commit) beside the rejected design that sends
      NOTIFY inside every unit (PostgreSQL then serializes those commits, WAL flush included,
      on a database-wide lock);
  R   the W1 session read in full, and its last 50 events (50 times);
  E   end-to-end runs through the kernel with a 20 ms simulated provider (echo with a delay):
      ``--runs`` runs over 20 sessions in this process, memory store beside it; and - only when
      the kernel has its shared-queue worker - 1, 2 and 4 ``asm worker`` processes.

Rows
  asm safe      PostgresStore(durability="safe"): one transaction per append, commit flushed
  asm fast      durability="fast": stream deltas commit with synchronous_commit = off
  raw 1/commit  one INSERT per transaction through psycopg (autocommit), seq computed by the
                client: the floor of a durable commit per event, with no locking or checks
  raw +NOTIFY   the same with a NOTIFY in each transaction: what notifying inside the unit costs
                when commits are concurrent (they stop sharing WAL flushes)
  raw COPY      every row in one COPY (one transaction): the floor for bulk
  raw read      the same SELECTs as the store, rows left as tuples

The events are ``message_streamed`` deltas, the type "fast" commits without waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from asm_postgres import PostgresSettings, build
from asm_postgres.store import PostgresStore

from asm_kernel.model import Event, Session
from asm_kernel.testing.backends import postgres_dsn
from asm_kernel.writes import WriteUnit

DSN = postgres_dsn()
RAW_DDL = """CREATE TABLE {s}.events (session_id text COLLATE "C" NOT NULL, seq bigint NOT NULL,
    ts timestamptz NOT NULL, schema_version integer NOT NULL, id text COLLATE "C" NOT NULL,
    run_id text COLLATE "C", type text COLLATE "C" NOT NULL, payload json NOT NULL,
    PRIMARY KEY (session_id, seq));
CREATE UNIQUE INDEX ON {s}.events (id);"""
COLS = "session_id, seq, ts, schema_version, id, run_id, type, payload"

rows_out: list[dict[str, Any]] = []
schemas: list[str] = []


class _Context:
    name = "store"
    path = "store"
    home = Path("/tmp")
    config_dir = Path("/tmp")


def record(scenario: str, what: str, ops: int, events: int, wall: float, lat: list[float] | None = None) -> None:
    mean = (statistics.fmean(lat) if lat else wall / max(ops, 1)) * 1000
    p99 = statistics.quantiles(lat, n=100)[98] * 1000 if lat and len(lat) >= 100 else None
    rows_out.append(
        {
            "scenario": scenario,
            "what": what,
            "ops": ops,
            "events": events,
            "wall_s": wall,
            "events_s": events / wall if wall else float("inf"),
            "ms_op": mean,
            "p99": p99,
        }
    )
    print(f"  .. {scenario:<22} {what:<17} {wall:7.2f} s", file=sys.stderr, flush=True)


def new_schema(tag: str) -> str:
    name = f"asm_bench_{tag}_{uuid.uuid4().hex[:8]}"
    schemas.append(name)
    return name


def delta(session_id: str, i: int) -> Event:
    return Event(session_id=session_id, type="message_streamed", payload={"text": f"tok{i} ", "index": 0})


async def opened(schema: str, durability: str = "safe") -> PostgresStore:
    store = build(PostgresSettings(dsn=DSN, schema=schema, durability=durability), _Context())  # type: ignore[arg-type]
    await store.open()
    return store


async def new_session(store: PostgresStore) -> str:
    s = Session(agent_id="bench")
    await store.commit(WriteUnit(s.id, new_session=s))
    return s.id


# -- asm ------------------------------------------------------------------------------------


async def asm_w1(durability: str, n: int) -> tuple[str, str]:
    schema = new_schema("w1")
    store = await opened(schema, durability)
    sid = await new_session(store)
    lat: list[float] = []
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        await store.append(sid, [delta(sid, i)])
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    await store.close()
    record("W1 1 session, serial", f"asm {durability}", n, n, wall, lat)
    return schema, sid


async def asm_w4(durability: str, sessions: int, per: int) -> None:
    store = await opened(new_schema("w4"), durability)
    sids = [await new_session(store) for _ in range(sessions)]
    lat: list[float] = []

    async def writer(sid: str) -> None:
        for i in range(per):
            t = time.perf_counter()
            await store.append(sid, [delta(sid, i)])
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(writer(s) for s in sids))
    wall = time.perf_counter() - t0
    await store.close()
    record(f"W4 {sessions} sessions x {per}", f"asm {durability}", sessions * per, sessions * per, wall, lat)


async def asm_reads(schema: str, sid: str, n: int) -> None:
    store = await opened(schema)
    t0 = time.perf_counter()
    events = await store.read(sid)
    wall = time.perf_counter() - t0
    assert len(events) == n
    record("R reads", f"asm read {n}", 1, n, wall)
    lat = []
    for _ in range(50):
        t = time.perf_counter()
        last = await store.last(sid, 50)
        lat.append(time.perf_counter() - t)
    assert [e.seq for e in last] == list(range(n - 49, n + 1))
    record("R reads", "asm last 50", len(lat), 50 * len(lat), sum(lat), lat)
    await store.close()


def notify_inside_units(store: PostgresStore) -> None:
    """The rejected design, for comparison: NOTIFY in the unit's transaction, no announcer."""
    notify = f"SELECT pg_notify('{store.sql.channel}', 'x'), set_config("
    store.sql.append_and_bump = store.sql.append_and_bump.replace("SELECT set_config(", notify)
    store._announcer.announce = lambda *args: None  # type: ignore[method-assign]


async def child(spec: dict[str, Any]) -> None:
    """One W4p process: its sessions, then (on a stdin line) every append, then its wall time."""
    store = build(PostgresSettings(dsn=DSN, schema=spec["schema"], pool_max_size=4), _Context())
    if spec["variant"] == "notify in tx":
        notify_inside_units(store)
    await store.open()
    sids = [await new_session(store) for _ in range(spec["sessions"])]
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    async def writer(sid: str) -> None:
        for i in range(spec["per"]):
            await store.append(sid, [delta(sid, i)])

    await asyncio.gather(*(writer(s) for s in sids))
    print("done", flush=True)
    await store.close()


def asm_w4_processes(variant: str, procs: int, per: int) -> None:
    schema = new_schema("w4p")
    asyncio.run(build(PostgresSettings(dsn=DSN, schema=schema), _Context()).upgrade())
    spec = json.dumps({"schema": schema, "variant": variant, "sessions": 10, "per": per})
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", spec], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(procs)
    ]
    for c in children:
        assert c.stdout is not None and c.stdout.readline().strip() == "ready"
    t0 = time.perf_counter()
    for c in children:
        assert c.stdin is not None
        c.stdin.write("go\n")
        c.stdin.flush()
    for c in children:
        assert c.stdout is not None and c.stdout.readline().strip() == "done"
    wall = time.perf_counter() - t0
    for c in children:
        c.wait()
    total = procs * 10 * per
    record(f"W4p {procs} procs x 10 x {per}", f"asm {variant}", total, total, wall)


# -- raw psycopg floors -----------------------------------------------------------------------


def raw_rows(sid: str, n: int) -> list[tuple[Any, ...]]:
    now = datetime.now(UTC)
    return [
        (sid, i + 1, now, 1, uuid.uuid4().hex, None, "message_streamed", json.dumps({"text": f"tok{i} ", "index": 0}))
        for i in range(n)
    ]


async def raw_table(tag: str) -> str:
    schema = new_schema(tag)
    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(RAW_DDL.replace("{s}", f'"{schema}"'))
    return schema


async def raw_per_commit(scenario: str, sessions: int, per: int, *, notify: bool = False) -> None:
    """One INSERT per commit; with ``notify``, a NOTIFY in the same transaction (one statement)."""
    schema = await raw_table("raw1")
    insert = f'INSERT INTO "{schema}".events ({COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::json)'
    if notify:
        insert = f"WITH i AS ({insert}) SELECT pg_notify('asm_bench', 'x')"
    data = [raw_rows(uuid.uuid4().hex, per) for _ in range(sessions)]
    lat: list[float] = []
    conns = [await psycopg.AsyncConnection.connect(DSN, autocommit=True) for _ in range(min(sessions, 10))]
    free: asyncio.Queue[Any] = asyncio.Queue()
    for c in conns:
        free.put_nowait(c)

    async def writer(rows: list[tuple[Any, ...]]) -> None:
        for row in rows:
            t = time.perf_counter()
            conn = await free.get()
            try:
                await conn.execute(insert, row)
            finally:
                free.put_nowait(conn)
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(writer(rows) for rows in data))
    wall = time.perf_counter() - t0
    for c in conns:
        await c.close()
    record(scenario, "raw +NOTIFY" if notify else "raw 1/commit", sessions * per, sessions * per, wall, lat)


async def raw_copy(scenario: str, sessions: int, per: int) -> tuple[str, str]:
    schema = await raw_table("copy")
    rows = [r for _ in range(sessions) for r in raw_rows(uuid.uuid4().hex, per)]
    async with await psycopg.AsyncConnection.connect(DSN) as conn:
        t0 = time.perf_counter()
        async with conn.cursor() as cur, cur.copy(f'COPY "{schema}".events ({COLS}) FROM STDIN') as copy:
            for row in rows:
                await copy.write_row(row)
        await conn.commit()
        wall = time.perf_counter() - t0
    record(scenario, "raw COPY", 1, len(rows), wall)
    return schema, rows[0][0]


async def raw_reads(schema: str, sid: str, n: int) -> None:
    cols = "id, session_id, seq, run_id, type, payload, ts, schema_version"
    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
        t0 = time.perf_counter()
        cur = await conn.execute(f'SELECT {cols} FROM "{schema}".events WHERE session_id = %s ORDER BY seq', [sid])
        got = await cur.fetchall()
        record("R reads", f"raw read {n}", 1, n, time.perf_counter() - t0)
        assert len(got) == n
        lat = []
        for _ in range(50):
            t = time.perf_counter()
            cur = await conn.execute(
                f'SELECT * FROM (SELECT {cols} FROM "{schema}".events WHERE session_id = %s ORDER BY seq DESC '
                "LIMIT 50) AS t ORDER BY seq",
                [sid],
            )
            await cur.fetchall()
            lat.append(time.perf_counter() - t)
        record("R reads", "raw last 50", len(lat), 50 * len(lat), sum(lat), lat)


# -- end to end --------------------------------------------------------------------------------


async def e2e_in_process(store_cfg: dict[str, Any], label: str, runs: int) -> None:
    from asm_kernel import Kernel

    config = {
        "plugins": {"autoload": store_cfg["use"] == "postgres"},
        "store": store_cfg,
        "providers": [{"name": "sim", "use": "echo", "delay": 0.02, "chunk_size": 1000}],
    }
    async with Kernel.open(config) as kernel:
        sids = [(await kernel.sessions.create()).id for _ in range(20)]
        lat: list[float] = []

        async def one(i: int) -> None:
            t = time.perf_counter()
            result = await kernel.runtime.execute_run(sids[i % len(sids)], f"question {i}")
            assert result.status.value == "completed", result
            lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(runs)))
        wall = time.perf_counter() - t0
    record("E runs, 20 ms model", label, runs, 0, wall, lat)


def worker_scaling(runs: int, counts: tuple[int, ...] = (1, 2, 4)) -> str:
    """Runs/s with 1, 2 and 4 ``asm worker`` processes sharing one queue (20 ms simulated model).

    The runs are queued first (``start_run``, as ``asm submit`` does) over as many sessions as
    runs, so per-session FIFO never serializes them; then the workers start and the clock runs
    until every run has ended.
    """
    import tempfile

    from asm_kernel import Kernel

    lines = [f"{'workers':>7} {'runs':>6} {'wall s':>7} {'runs/s':>8} {'vs 1 worker':>12}"]
    first: float | None = None
    for count in counts:
        schema = new_schema("workers")
        with tempfile.TemporaryDirectory() as home:
            config = Path(home) / "asm.toml"
            config.write_text(
                f'[store]\nuse = "postgres"\ndsn = "{DSN}"\nschema = "{schema}"\n\n'
                '[[providers]]\nname = "sim"\nuse = "scripted"\n'
                'turns = [[{text = "ok"}, {delay = 0.02}]]\n\n[runtime]\nlease_ttl = 10.0\n'
            )

            async def queue(config: Path = config) -> list[str]:
                async with Kernel.open(config) as k:
                    ids = []
                    for i in range(runs):
                        session = await k.sessions.create()
                        ids.append((await k.sessions.start_run(session.id, f"job {i}")).id)
                    return ids

            async def ended(ids: list[str], config: Path = config) -> int:
                async with Kernel.open(config) as k:
                    done = 0
                    for rid in ids:
                        done += (await k.sessions.get_run(rid)).status.terminal
                    return done

            ids = asyncio.run(queue())
            env = {**os.environ, "ASM_HOME": home}
            workers = [
                subprocess.Popen(
                    [sys.executable, "-m", "asm_kernel.cli", "worker", "--concurrency", "16", "--poll", "0.05"],
                    cwd=home,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(count)
            ]
            for w in workers:  # Python's start-up is not the queue's throughput: wait until each claims
                assert w.stderr is not None
                w.stderr.readline()
            began = time.perf_counter()
            try:
                while asyncio.run(ended(ids)) < len(ids):
                    time.sleep(0.1)
                wall = time.perf_counter() - began
            finally:
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.communicate(timeout=60)
        rate = len(ids) / wall
        first = first or rate
        lines.append(f"{count:>7} {len(ids):>6} {wall:>7.2f} {rate:>8.1f} {rate / first:>11.2f}x")
    return "\n".join(lines)


async def drop_schemas() -> None:
    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--per-session", type=int, default=200)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(json.loads(args.child)))
        return
    n, sessions, per = args.events, args.sessions, args.per_session
    t_start = time.perf_counter()
    try:
        w1 = "W1 1 session, serial"
        schema, sid = asyncio.run(asm_w1("safe", n))
        asyncio.run(asm_w1("fast", n))
        asyncio.run(raw_per_commit(w1, 1, n))
        asyncio.run(raw_per_commit(w1, 1, n, notify=True))
        raw_schema, raw_sid = asyncio.run(raw_copy(w1, 1, n))
        w4 = f"W4 {sessions} sessions x {per}"
        asyncio.run(asm_w4("safe", sessions, per))
        asyncio.run(asm_w4("fast", sessions, per))
        asyncio.run(raw_per_commit(w4, sessions, per))
        asyncio.run(raw_per_commit(w4, sessions, per, notify=True))
        asyncio.run(raw_copy(w4, sessions, per))
        for variant in ("announced", "notify in tx", "announced", "notify in tx"):
            asm_w4_processes(variant, args.procs, max(per // 2, 1))
        asyncio.run(asm_reads(schema, sid, n))
        asyncio.run(raw_reads(raw_schema, raw_sid, n))
        asyncio.run(e2e_in_process({"use": "memory"}, "asm memory", args.runs))
        asyncio.run(
            e2e_in_process({"use": "postgres", "dsn": DSN, "schema": new_schema("e2e")}, "asm postgres", args.runs)
        )
        scaling = worker_scaling(args.runs)
    finally:
        asyncio.run(drop_schemas())
    total = time.perf_counter() - t_start
    with psycopg.connect(DSN) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        sync = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[index]
    print(
        f"asm Postgres store vs raw psycopg - PostgreSQL {server} (synchronous_commit={sync}), psycopg "
        f"{psycopg.__version__}, python {sys.version.split()[0]}, {os.cpu_count()} cpus, local TCP"
    )
    header = (
        f"{'scenario':<22} {'what':<17} {'ops':>6} {'events':>6} {'wall s':>7} {'events/s':>9} "
        f"{'ms/op':>7} {'p99 ms':>7}"
    )
    print(header)
    print("-" * len(header))
    last = None
    for r in rows_out:
        if last is not None and r["scenario"] != last:
            print("-" * len(header))
        last = r["scenario"]
        p99 = f"{r['p99']:.2f}" if r["p99"] is not None else "-"
        rate = f"{r['events_s']:.0f}" if r["events"] else f"{r['ops'] / r['wall_s']:.0f}/s"
        print(
            f"{r['scenario']:<22} {r['what']:<17} {r['ops']:>6} {r['events']:>6} {r['wall_s']:>7.3f} "
            f"{rate:>9} {r['ms_op']:>7.3f} {p99:>7}"
        )
    print("-" * len(header))
    print("ms/op: mean latency of one awaited append (asm), one INSERT+commit (raw), the whole COPY, one read,")
    print(f"one run (E: runs/s in the events/s column). Total {total:.0f} s")
    print("\nasm worker processes sharing one queue on Postgres (20 ms simulated model, one run per session):")
    print(scaling)


if __name__ == "__main__":
    main()
