"""Google ADK session services: SqliteSessionService (ADK's own persistent service, a file)
beside asm_adk.AsmSessionService on each available asm store, same workloads, one run.

    pip install -e . -e plugins/asm-adk
    python bench/bench_adk.py [--turns 300 --sessions 50 ...]

A turn is one ``append_event`` of an ADK event with text content and a state delta touching the
session and user scopes (what an agent's answer with ``output_key`` writes). load-all is
``get_session`` with every event; last-N ``get_session(config=GetSessionConfig(num_recent_events=N))``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _adapters import Table, arguments, asm_store, run, store_problem, workdir


def event(i: int) -> Any:
    from google.adk.events.event import Event
    from google.adk.events.event_actions import EventActions
    from google.genai import types

    return Event(
        author="agent",
        invocation_id=f"inv{i}",
        content=types.Content(role="model", parts=[types.Part(text=f"answer {i}: order {1000 + i} ships tomorrow")]),
        actions=EventActions(state_delta={"last_answer": i, "user:answers": i}),
    )


async def workloads(table: Table, variant: str, service: Any, args: Any) -> None:
    from google.adk.sessions.base_session_service import GetSessionConfig

    session = await service.create_session(app_name="bench", user_id="u", session_id="append")

    async def append() -> None:
        for i in range(args.turns):
            await service.append_event(session, event(i))

    async def load_all() -> None:
        for _ in range(args.reads):
            got = await service.get_session(app_name="bench", user_id="u", session_id="append")
            assert len(got.events) == args.turns

    async def last_n() -> None:
        config = GetSessionConfig(num_recent_events=args.last)
        for _ in range(args.reads):
            got = await service.get_session(app_name="bench", user_id="u", session_id="append", config=config)
            assert len(got.events) == min(args.last, args.turns)

    acked: dict[int, int] = {}

    async def concurrent() -> int:
        async def one(k: int) -> int:  # how many of this session's turns failed
            try:
                mine = await service.create_session(app_name="bench", user_id=f"u{k % 10}", session_id=f"c{k}")
            except Exception:
                return args.per_session
            failed = 0
            for i in range(args.per_session):
                try:
                    await service.append_event(mine, event(i))
                    acked[k] = acked.get(k, 0) + 1
                except Exception:
                    failed += 1
            return failed

        return sum(await asyncio.gather(*(one(k) for k in range(args.sessions))))

    await table.time("append", variant, args.turns, append)
    await table.time("load-all", variant, args.reads, load_all, repeat=3)
    await table.time(f"last-{args.last}", variant, args.reads, last_n, repeat=3)
    async def lost() -> int:
        missing = 0
        for k, count in acked.items():
            got = await service.get_session(app_name="bench", user_id=f"u{k % 10}", session_id=f"c{k}")
            missing += max(0, count - (len(got.events) if got else 0))
        return missing

    await table.time("concurrent", variant, args.sessions * args.per_session, concurrent, lost)


async def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    from asm_adk import AsmSessionService
    from asm_adk._view import forget
    from google.adk.sessions.sqlite_session_service import SqliteSessionService

    from asm_kernel import Kernel

    table = Table(
        f"ADK session services: {args.turns} events in one session, {args.reads} reads, "
        f"{args.sessions} sessions x {args.per_session} events concurrently"
    )
    base = workdir()
    path = str(base / "adk-sessions.db")
    await workloads(table, "SqliteSessionService (file)", SqliteSessionService(path), args)

    async def sqlite_cold() -> None:
        got = await SqliteSessionService(path).get_session(app_name="bench", user_id="u", session_id="append")
        assert len(got.events) == args.turns

    await table.time("cold load-all", "SqliteSessionService (file)", 1, sqlite_cold)
    for name in args.stores.split(","):
        reason = store_problem(name)
        if reason is not None:
            table.skip(f"asm {name}", reason)
            continue
        async with asm_store(name, base) as store:
            kernel = await Kernel({"store": store}).start()
            try:
                service = AsmSessionService(kernel)
                await workloads(table, f"AsmSessionService ({name})", service, args)
                forget(kernel)

                async def cold(service: Any = service) -> None:
                    got = await service.get_session(app_name="bench", user_id="u", session_id="append")
                    assert len(got.events) == args.turns

                await table.time("cold load-all", f"AsmSessionService ({name})", 1, cold)
            finally:
                await kernel.close()
    table.print()


if __name__ == "__main__":
    run(main)
