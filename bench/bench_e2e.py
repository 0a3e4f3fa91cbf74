"""A whole run end to end: the raw openai SDK beside asm on the memory and DuckDB stores.

    python bench/bench_e2e.py [--runs 200] [--deltas 20] [--ttft 0.05]

Every variant streams the same answer (``--deltas`` text deltas) from the same local fake
OpenAI server (``asm_openai.testing.FakeOpenAI``, real HTTP, the official SDK), one run at a
time. The server runs in a process of its own, as a provider does: in this process its thread
would take the interpreter from the client it serves.

* ``raw SDK``        ``AsyncOpenAI.chat.completions.create(stream=True)``, chunks consumed;
* ``asm memory``     ``kernel.run_once(...)`` on the memory store: a new session per run, so
  each request carries one message, like the raw SDK's;
* ``asm duckdb X``   the same on a DuckDB file in durability mode X (``fast`` is the default);
* ``..., serial start`` the same with ``[runtime] overlap_start = false``: the run waits for its
  start's transaction before the request goes out (the default stores it meanwhile);
* ``..., 1 session`` every run in one session (``kernel.run(session_id, ...)``): request ``i``
  carries the whole conversation so far (2i + 1 messages), so these rows grow with ``--runs``
  and are not comparable with the raw SDK's.

Printed: p50 / p90 ms per run, the difference to the raw SDK, the ratio to the memory store,
and DuckDB transactions per run (commits counted by the store). A second table repeats the
first rows with a server that takes ``--ttft`` seconds to answer (a real model's time to first
token, during which an overlapped start is stored). A last table is the DuckDB floor: no model
call, only the statements of a run's two transactions written directly on asm's tables - what
DuckDB itself charges for the two durability points - back to back, and with ``--ttft`` of idle
between them as a model's answer leaves the writer (the outcome's statements then run on caches
other work has cooled). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = "gpt-5.4-mini"


def _answer(deltas: int) -> str:
    return "".join(f"w{i:02d} " for i in range(deltas))  # 4 characters per delta


async def raw_sdk(base_url: str, runs: int) -> list[float]:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
    out: list[float] = []
    for i in range(runs + 5):
        t0 = time.perf_counter()
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"q{i}"}], stream=True
        )
        async for _chunk in stream:
            pass
        if i >= 5:  # warm-up
            out.append(time.perf_counter() - t0)
    await client.close()
    return out


async def with_asm(
    base_url: str, runs: int, store: dict[str, Any], *, shared: bool = False, overlap: bool = True
) -> tuple[list[float], float | None]:
    from asm_kernel import Kernel

    config = {
        "store": store,
        "runtime": {"overlap_start": overlap},
        "providers": [{"name": "gpt", "use": "openai", "api": "chat", "base_url": base_url, "api_key": "sk-bench",
                       "model": MODEL}],
    }  # fmt: skip
    async with Kernel(config) as kernel:
        session = await kernel.sessions.create()
        stats = getattr(kernel.store, "stats", None)
        out: list[float] = []
        commits0 = 0
        for i in range(runs + 5):
            if i == 5 and stats is not None:
                commits0 = stats.commits
            t0 = time.perf_counter()
            if shared:  # one conversation: every request carries the whole transcript so far
                result = await kernel.run(session.id, f"q{i}")
            else:  # a new session per run, created in the run's start (the raw SDK's request)
                result = await kernel.run_once(f"q{i}")
            if i >= 5:
                out.append(time.perf_counter() - t0)
            assert result.status.value == "completed", result
        per_run = (stats.commits - commits0) / runs if stats is not None else None
    return out, per_run


def duckdb_floor(path: Path, runs: int, deltas: int, idle: float = 0.0) -> tuple[list[float], list[float]]:
    """What a run's two durability points cost in DuckDB itself: the statements asm's start and
    outcome transactions run (session + run + 5 event rows; the run's update of the columns that
    change + one insert of the deltas and 3 event rows), written with plain ``execute`` on
    asm's own tables, one transaction each. ``idle``: seconds between the two, as a model's
    answer takes (the outcome then runs on cold caches). Returns the start's and the outcome's
    times."""
    import json
    import uuid
    from datetime import UTC, datetime

    import duckdb
    from asm_duckdb.store import DuckDBStore

    async def create() -> None:
        store = DuckDBStore(path)
        await store.open()
        await store.close()

    asyncio.run(create())
    con = duckdb.connect(str(path))
    now = datetime.now(UTC)
    usage = json.dumps({"input_tokens": 5, "output_tokens": 20})
    msg = json.dumps({"role": "user", "content": [{"type": "text", "text": "q"}]})
    n = 0
    starts: list[float] = []
    outcomes: list[float] = []

    def events(sid: str, rid: str, k: int, kind: str, start: int) -> None:
        nonlocal n
        con.execute(
            "INSERT INTO events_log SELECT unnest($1::VARCHAR[]), $2, unnest($3::BIGINT[]), $4, $5, $6, $7, 1, 0, "
            "unnest($8::BIGINT[])",
            [[uuid.uuid4().hex for _ in range(k)], sid, list(range(start, start + k)), rid, kind, msg, now,
             list(range(n + 1, n + k + 1))],
        )  # fmt: skip
        n += k

    for i in range(runs + 5):
        sid, rid = f"ses_{uuid.uuid4().hex}", f"run_{uuid.uuid4().hex}"
        t0 = time.perf_counter()
        con.execute("BEGIN")
        con.execute("INSERT INTO sessions VALUES (?, 'default', 'active', '{}', [], ?, ?)", [sid, now, now])
        con.execute(
            "INSERT INTO runs VALUES (?, ?, 'running', ?, NULL, ?, NULL, 'gpt', 'm', NULL, NULL, NULL, '{}', ?, ?, "
            "NULL, 'w', 1, ?)",
            [rid, sid, msg, usage, now, now, now],
        )  # fmt: skip
        events(sid, rid, 5, "run_started", 1)
        con.execute("COMMIT")
        t1 = time.perf_counter()
        if idle:
            time.sleep(idle)
        t2 = time.perf_counter()
        con.execute("BEGIN")
        con.execute(
            "UPDATE runs SET status = 'completed', output = ?, usage = ?, stop_reason = ?, finished_at = ? "
            "WHERE id = ?",
            [msg, usage, "end_turn", now, rid],
        )
        events(sid, rid, deltas + 4, "message_streamed", 6)  # the deltas ride in the outcome's insert
        con.execute("COMMIT")
        if i >= 5:
            starts.append(t1 - t0)
            outcomes.append(time.perf_counter() - t2)
    con.close()
    return starts, outcomes


def _floor_table(tmp: Path, runs: int, deltas: int, ttft: float) -> None:
    """The floor's two transactions, back to back and with the model's time between them."""
    print("DuckDB floor: the statements of a run's two transactions, no model call (ms)")
    header = f"{'variant':<36}{'start p50':>11}{'outcome p50':>13}{'outcome p90':>13}"
    print(header)
    print("-" * len(header))
    variants = [("back to back", 0.0)] + ([(f"{ttft * 1000:g} ms idle between", ttft)] if ttft > 0 else [])
    for k, (label, idle) in enumerate(variants):
        starts, outcomes = duckdb_floor(tmp / f"floor{k}.duckdb", runs, deltas, idle)
        p90 = statistics.quantiles(outcomes, n=10)[8] * 1000
        print(f"{label:<36}{statistics.median(starts) * 1000:>11.2f}{statistics.median(outcomes) * 1000:>13.2f}"
              f"{p90:>13.2f}")  # fmt: skip
    print()


def _serve(conn: Any, deltas: int, ttft: float) -> None:
    """The fake OpenAI server, in a process of its own, until the parent says stop."""
    from asm_openai.testing import FakeOpenAI, Reply, Text

    reply = Reply(output=[Text(_answer(deltas), chunk_size=4)], first_byte_delay=ttft)
    with FakeOpenAI(default=reply) as fake:
        conn.send(fake.base_url)
        conn.recv()


class _Server:
    def __init__(self, deltas: int, ttft: float) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, deltas, ttft), daemon=True)

    def __enter__(self) -> str:
        self._proc.start()
        return str(self._conn.recv())

    def __exit__(self, *_: object) -> None:
        self._conn.send("stop")
        self._proc.join(10)


Row = tuple[str, list[float], float | None]


def _print(title: str, rows: list[Row]) -> None:
    raw = statistics.median(rows[0][1]) * 1000
    memory = statistics.median(rows[1][1]) * 1000
    print(title)
    header = f"{'variant':<28}{'p50 ms':>9}{'p90 ms':>9}{'vs raw ms':>11}{'x memory':>10}{'txn/run':>9}"
    print(header)
    print("-" * len(header))
    for label, lat, per_run in rows:
        p50 = statistics.median(lat) * 1000
        p90 = statistics.quantiles(lat, n=10)[8] * 1000
        txn = f"{per_run:.1f}" if per_run is not None else "-"
        print(f"{label:<28}{p50:>9.2f}{p90:>9.2f}{p50 - raw:>+11.2f}{p50 / memory:>10.2f}{txn:>9}")
    print()


def _first_rows(base_url: str, runs: int, tmp: Path, tag: str) -> list[Row]:
    rows: list[Row] = [("raw SDK", asyncio.run(raw_sdk(base_url, runs)), None)]
    lat, _ = asyncio.run(with_asm(base_url, runs, {"use": "memory"}))
    rows.append(("asm memory", lat, None))
    store = {"use": "duckdb", "path": str(tmp / f"fast{tag}.duckdb")}
    lat, per_run = asyncio.run(with_asm(base_url, runs, store))
    rows.append(("asm duckdb fast", lat, per_run))
    store = {"use": "duckdb", "path": str(tmp / f"serial{tag}.duckdb")}
    lat, per_run = asyncio.run(with_asm(base_url, runs, store, overlap=False))
    rows.append(("asm duckdb fast, serial start", lat, per_run))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--deltas", type=int, default=20)
    parser.add_argument("--ttft", type=float, default=0.05, help="the second table's time to first token (s)")
    args = parser.parse_args()
    runs, deltas = args.runs, args.deltas
    with tempfile.TemporaryDirectory(prefix="asm-e2e-") as name:
        tmp = Path(name)
        with _Server(deltas, 0.0) as base_url:
            rows = _first_rows(base_url, runs, tmp, "")
            store = {"use": "duckdb", "path": str(tmp / "safe.duckdb"), "durability": "safe"}
            lat, per_run = asyncio.run(with_asm(base_url, runs, store))
            rows.append(("asm duckdb safe", lat, per_run))
            lat, _ = asyncio.run(with_asm(base_url, runs, {"use": "memory"}, shared=True))
            rows.append(("memory, 1 session", lat, None))
            store = {"use": "duckdb", "path": str(tmp / "shared.duckdb")}
            lat, per_run = asyncio.run(with_asm(base_url, runs, store, shared=True))
            rows.append(("duckdb, 1 session", lat, per_run))
        _print(f"{runs} runs, {deltas} streamed deltas each, one at a time - python {sys.version.split()[0]}", rows)
        if args.ttft > 0:
            with _Server(deltas, args.ttft) as base_url:
                rows = _first_rows(base_url, runs, tmp, "-ttft")
            _print(f"the same, {args.ttft * 1000:g} ms to the first token", rows)
        _floor_table(tmp, runs, deltas, args.ttft)


if __name__ == "__main__":
    main()
