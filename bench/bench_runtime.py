"""Runtime benchmark: many concurrent sessions, each with a queue of runs.

Every session gets ``--runs`` runs queued at once against a provider that simulates ``--latency``
seconds of model time. The same schedule is run three ways, each in its own process so peak
memory (max RSS) is not shared:

* ``bare asyncio`` — the floor: one task per session awaiting the simulated calls in order,
  with a semaphore for the global cap; nothing is stored;
* ``asm memory``  — ``kernel.runtime.submit_run`` on the memory store;
* ``asm duckdb``  — the same on a DuckDB file (when asm-duckdb is installed).

Reported: runs/s, kernel overhead per run (wall time of a run minus the simulated latency,
p50/p99) and peak RSS; for the DuckDB store also what it holds at the end
(``DuckDBStore.memory()``): DuckDB's own buffers (``duckdb MB``, bounded by ``memory_limit``)
and the store's record cache and event tail (``caches MB``, bounded by ``cache_bytes`` and
``tail_bytes``); the rest of the RSS is the kernel's sessions, runs and transcripts and the
Python heap. Usage: ``python bench/bench_runtime.py [--sessions 1000,10000] [--runs 3]``.

``--sessions`` takes a comma-separated list: the sessions table prints every variant at each
count, and each variant's throughput as a share of its figure at the first count (the issue's
target: asm duckdb at 10,000 sessions >= 70% of its 1,000-session runs/s).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


class LatencyProvider:
    capabilities = frozenset({"streaming"})
    models = ()
    default_model = "latency-1"

    def __init__(self, latency: float) -> None:
        self.name = "latency"
        self.latency = latency

    async def stream(self, request: Any) -> Any:
        from asm_kernel import Message, MessageDone, TextBlock, TextDelta, Usage, UsageUpdate

        await asyncio.sleep(self.latency)
        yield TextDelta("ok")
        yield UsageUpdate(Usage(10, 1))
        yield MessageDone(Message("assistant", (TextBlock("ok"),)), usage=Usage(10, 1))

    async def aclose(self) -> None:
        return None


def _mb(data: dict[str, Any], key: str) -> str:
    held = data.get("held")
    return "-" if not held else f"{held[key] / 2**20:.0f}"


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def bare(sessions: int, runs: int, latency: float, cap: int) -> dict[str, Any]:
    sem = asyncio.Semaphore(cap)
    overheads: list[float] = []

    async def session() -> None:
        for _ in range(runs):
            t0 = time.perf_counter()
            async with sem:
                await asyncio.sleep(latency)
            overheads.append(time.perf_counter() - t0 - latency)

    t0 = time.perf_counter()
    await asyncio.gather(*(session() for _ in range(sessions)))
    return {"wall": time.perf_counter() - t0, "overheads": overheads}


async def with_asm(sessions: int, runs: int, latency: float, cap: int, store: dict[str, Any]) -> dict[str, Any]:
    from asm_kernel import Kernel

    config = {"store": store, "runtime": {"max_running_runs": cap, "max_active_sessions": sessions + 1}}
    async with Kernel(config, providers={"latency": LatencyProvider(latency)}) as kernel:
        ids = [(await kernel.sessions.create()).id for _ in range(sessions)]
        await kernel.runtime.start()
        t0 = time.perf_counter()

        async def user(sid: str) -> list[Any]:
            # Each session's runs are queued at once, as a user typing ahead would.
            handles = [await kernel.runtime.submit_run(sid, f"run {i}") for i in range(runs)]
            return [await h for h in handles]

        results = [r for rs in await asyncio.gather(*(user(sid) for sid in ids)) for r in rs]
        wall = time.perf_counter() - t0
        overheads = []
        for result in results:
            run = await kernel.sessions.get_run(result.run_id)
            assert run.started_at is not None and run.finished_at is not None
            overheads.append((run.finished_at - run.started_at).total_seconds() - latency)
        assert all(r.status.value == "completed" for r in results)
        memory = getattr(kernel.store, "memory", None)
        held = None
        if memory is not None:  # what the DuckDB store holds at the end: DuckDB's buffers, its caches
            use = await memory()
            held = {"duckdb": sum(use.duckdb.values()), "caches": use.records + use.tail}
    return {"wall": wall, "overheads": overheads, "held": held}


def child(args: argparse.Namespace) -> None:
    if args.variant == "bare":
        out = asyncio.run(bare(args.sessions, args.runs, args.latency, args.cap))
    elif args.variant == "memory":
        out = asyncio.run(with_asm(args.sessions, args.runs, args.latency, args.cap, {"use": "memory"}))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            store = {"use": "duckdb", "path": str(Path(tmp) / "bench.duckdb")}
            out = asyncio.run(with_asm(args.sessions, args.runs, args.latency, args.cap, store))
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", default="1000,10000", help="comma-separated session counts")
    parser.add_argument("--runs", type=int, default=3, help="runs queued per session")
    parser.add_argument("--latency", type=float, default=0.02, help="simulated model seconds per run")
    parser.add_argument("--cap", type=int, default=1000, help="runtime.max_running_runs")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        args.sessions = int(args.sessions)
        child(args)
        return
    variants = ["bare", "memory"] + (["duckdb"] if importlib.util.find_spec("asm_duckdb") else [])
    counts = [int(x) for x in str(args.sessions).split(",") if x.strip()]
    print(f"sessions x {args.runs} queued runs each, {args.latency * 1000:.0f} ms simulated latency, "
          f"global cap {args.cap}; each variant in its own process")
    header = (f"{'sessions':>8} {'variant':<14}{'runs':>7}{'wall s':>9}{'runs/s':>10}{'vs first':>9}"
              f"{'overhead p50 ms':>17}{'p99 ms':>9}{'peak RSS MB':>13}{'duckdb MB':>11}{'caches MB':>11}")
    print(header)
    print("-" * len(header))
    first: dict[str, float] = {}
    for count in counts:
        total = count * args.runs
        for variant in variants:
            proc = subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--sessions", str(count), "--runs",
                 str(args.runs), "--latency", str(args.latency), "--cap", str(args.cap)],
                capture_output=True, text=True, check=True,
            )
            data = json.loads(proc.stdout.strip().splitlines()[-1])
            over = [max(0.0, o) * 1000 for o in data["overheads"]]
            label = {"bare": "bare asyncio", "memory": "asm memory", "duckdb": "asm duckdb"}[variant]
            rate = total / data["wall"]
            share = f"{rate / first.setdefault(variant, rate):>8.0%}"
            print(f"{count:>8} {label:<14}{total:>7}{data['wall']:>9.2f}{rate:>10.0f}{share:>9}"
                  f"{statistics.median(over):>17.2f}{_pct(over, 99):>9.2f}{data['rss_mb']:>13.0f}"
                  f"{_mb(data, 'duckdb'):>11}{_mb(data, 'caches'):>11}", flush=True)
        print("-" * len(header))
    print("vs first: runs/s as a share of the same variant's at the first session count")

if __name__ == "__main__":
    main()
