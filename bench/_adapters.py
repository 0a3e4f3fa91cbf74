"""Shared pieces of the adapter benchmarks (bench_openai_agents.py, bench_langgraph.py, bench_adk.py).

Every adapter benchmark runs the same four workloads on the framework's own persistent store and
on asm, in one run, and prints one table:

* **append** — one conversation written turn after turn (each write awaited);
* **load-all** — the whole history of that conversation read back, again and again;
* **last-N** — only the newest items (what a next turn needs), again and again;
* **concurrent** — many conversations written at once from one event loop (a busy server);
* **cold load-all** — the history read by a fresh process (no cache: only the store).

Reads are timed three times and the fastest round is printed; writes once (they change what
the next round would read).

asm runs on the stores this environment offers (``asm_kernel.testing.backends``): ``memory``
always; ``duckdb`` when asm-duckdb is installed; ``postgres`` when asm-postgres is installed and
``ASM_PG_DSN`` answers (a fresh schema per run, dropped after).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

# store_problem is re-exported: the adapter benchmarks skip a store with its reason.
from asm_kernel.testing.backends import FreshStores, store_problem

__all__ = ["Table", "arguments", "asm_store", "run", "store_problem", "workdir"]


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--turns", type=int, default=300, help="turns appended to one conversation")
    parser.add_argument("--reads", type=int, default=50, help="reads of the history (load-all, last-N)")
    parser.add_argument("--last", type=int, default=10, help="N of last-N")
    parser.add_argument("--sessions", type=int, default=50, help="concurrent conversations")
    parser.add_argument("--per-session", type=int, default=20, help="turns per concurrent conversation")
    parser.add_argument("--stores", default="memory,duckdb,postgres", help="asm stores to try, comma-separated")
    return parser.parse_args()


@asynccontextmanager
async def asm_store(name: str, workdir: Path) -> AsyncIterator[dict[str, Any]]:
    """A fresh ``[store]`` table; reopening it opens the same data."""
    stores = FreshStores(name, workdir, prefix="bench")
    try:
        yield stores()
    finally:
        stores.drop()


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="asm-bench-"))


class Table:
    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[tuple[str, str, int, float, int, int | None]] = []

    async def time(
        self,
        workload: str,
        variant: str,
        ops: int,
        run: Callable[[], Awaitable[Any]],
        check: Callable[[], Awaitable[int]] | None = None,
        repeat: int = 1,
    ) -> None:
        """Time ``run``; it may return how many of its operations failed. ``check`` (not timed)
        counts acknowledged writes the store no longer has: lost data is a result too. Reads are
        run ``repeat`` times and the fastest round is kept (the machines are shared and noisy)."""
        wall = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            failed = await run()
            wall = min(wall, time.perf_counter() - started)
        lost = await check() if check is not None else None
        self.rows.append((workload, variant, ops, wall, int(failed or 0), lost))

    def skip(self, variant: str, reason: str) -> None:
        self.rows.append(("(skipped)", f"{variant}: {reason}", 0, 0.0, 0, None))

    def print(self) -> None:
        print(f"\n{self.title}")
        head = f"{'workload':<16} {'variant':<28} {'ops':>6} {'wall s':>8} {'ops/s':>9} {'ms/op':>8}"
        print(f"{head} {'failed':>6} {'lost':>5}")
        for workload, variant, ops, wall, failed, lost in self.rows:
            if not ops:
                print(f"{workload:<16} {variant}")
                continue
            print(
                f"{workload:<16} {variant:<28} {ops:>6} {wall:>8.3f} {ops / wall:>9.0f} {1000 * wall / ops:>8.3f}"
                f" {failed:>6} {'-' if lost is None else lost:>5}"
            )


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())
