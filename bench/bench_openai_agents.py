"""OpenAI Agents SDK sessions: SQLiteSession (the SDK's persistent session, a file) beside
asm_openai_agents.AsmSession on each available asm store, same workloads, one run.

    pip install -e . -e plugins/asm-openai-agents  (and asm-duckdb / asm-postgres for those stores)
    python bench/bench_openai_agents.py [--turns 300 --sessions 50 ...]

A turn is two items (the user's message and the answer) stored by one add_items call.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _adapters import Table, arguments, asm_store, run, store_problem, workdir


def turn(i: int) -> list[Any]:
    return [
        {"role": "user", "content": f"question {i}: what is the status of order {1000 + i}?"},
        {"role": "assistant", "content": f"answer {i}: order {1000 + i} ships tomorrow, tracking ABC{i:06d}."},
    ]


async def workloads(table: Table, variant: str, make: Any, cold: Any, args: Any) -> None:
    session = make("bench-append")

    async def append() -> None:
        for i in range(args.turns):
            await session.add_items(turn(i))

    async def load_all() -> None:
        for _ in range(args.reads):
            items = await session.get_items()
            assert len(items) == 2 * args.turns

    async def last_n() -> None:
        for _ in range(args.reads):
            assert len(await session.get_items(limit=args.last)) == min(args.last, 2 * args.turns)

    acked: dict[int, int] = {}

    async def concurrent() -> int:
        async def one(k: int) -> int:  # how many of this session's turns failed
            mine, failed = make(f"bench-c{k}"), 0
            for i in range(args.per_session):
                try:
                    await mine.add_items(turn(i))
                    acked[k] = acked.get(k, 0) + 2
                except Exception:
                    failed += 1
            return failed

        return sum(await asyncio.gather(*(one(k) for k in range(args.sessions))))

    await table.time("append", variant, args.turns, append)
    await table.time("load-all", variant, args.reads, load_all, repeat=3)
    await table.time(f"last-{args.last}", variant, args.reads, last_n, repeat=3)
    async def lost() -> int:
        missing = 0
        for k, n in acked.items():
            missing += max(0, n - len(await make(f"bench-c{k}").get_items()))
        return missing

    await table.time("concurrent", variant, args.sessions * args.per_session, concurrent, lost)
    if cold is not None:
        fresh = await cold("bench-append")

        async def cold_load() -> None:
            assert len(await fresh.get_items()) == 2 * args.turns

        await table.time("cold load-all", variant, 1, cold_load)


async def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    from agents import SQLiteSession
    from asm_openai_agents import AsmSession
    from asm_openai_agents._view import forget

    from asm_kernel import Kernel

    table = Table(
        f"OpenAI Agents sessions: {args.turns} turns (2 items each), {args.reads} reads, "
        f"{args.sessions} sessions x {args.per_session} turns concurrently"
    )
    base = workdir()
    path = base / "sqlite-session.db"

    async def sqlite_cold(sid: str) -> Any:
        return SQLiteSession(sid, path)

    await workloads(table, "SQLiteSession (file)", lambda sid: SQLiteSession(sid, path), sqlite_cold, args)
    for name in args.stores.split(","):
        reason = store_problem(name)
        if reason is not None:
            table.skip(f"asm {name}", reason)
            continue
        async with asm_store(name, base) as store:
            kernel = await Kernel({"store": store}).start()
            try:

                async def asm_cold(sid: str, kernel: Any = kernel) -> Any:
                    forget(kernel)  # no cached view: the history comes from the store
                    return AsmSession(sid, kernel)

                await workloads(table, f"AsmSession ({name})", lambda sid, k=kernel: AsmSession(sid, k), asm_cold, args)
            finally:
                await kernel.close()
    table.print()


if __name__ == "__main__":
    run(main)
