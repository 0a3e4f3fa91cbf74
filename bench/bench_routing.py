"""Routing overhead: what negotiation, the router and the resilience layer add to a run.

All in one process and one run, against an instant in-process provider (so only asm's own work
is measured):

* ``provider.stream() direct`` — the floor: iterate the provider's stream, nothing else;
* ``negotiate + route``        — capability negotiation for N providers and the router's order;
* ``asm run, 1 provider``      — a whole run on the memory store (events, transcript, usage);
* ``asm run, 3 providers``     — the same with three candidates, weights and breakers;
* ``asm run, failover``        — the first candidate fails (retryable) once, the second answers.

Usage: ``python bench/bench_routing.py [--runs 2000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asm_kernel import Kernel, Message, MessageDone, ProviderRequest, Run, Session, TextBlock, TextDelta, Usage
from asm_kernel.builtin.routers import CapabilityRouter, CapabilitySettings
from asm_kernel.builtin.scripted import ScriptedProvider, ScriptedSettings
from asm_kernel.routing import RouteContext, negotiate


class Instant:
    capabilities = frozenset({"streaming", "tools"})
    models = ()
    default_model = "instant-1"

    def __init__(self, name: str) -> None:
        self.name = name

    async def stream(self, request: ProviderRequest) -> Any:
        yield TextDelta("ok")
        yield MessageDone(Message("assistant", (TextBlock("ok"),)), usage=Usage(5, 1))

    async def aclose(self) -> None:
        return None


async def timed(n: int, body: Callable[[int], Awaitable[Any]]) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await body(i)
        out.append((time.perf_counter() - t0) * 1e6)
    return out


async def main(runs: int) -> None:
    provider = Instant("a")
    request = ProviderRequest(model="instant-1", messages=(Message.user("hi"),))

    async def direct(_: int) -> None:
        async for _item in provider.stream(request):
            pass

    router = CapabilityRouter(CapabilitySettings(weights={"a": 2, "b": 1, "c": 1}))
    providers = {n: Instant(n) for n in "abc"}
    session = Session()

    async def plan(i: int) -> None:
        negs = [negotiate(n, p, frozenset({"tools"}), frozenset(), frozenset()) for n, p in providers.items()]
        router.select(negs, RouteContext(session, Run(session_id=session.id, id=f"r{i}"), frozenset({"tools"}),
                                         frozenset(), None))

    rows: list[tuple[str, list[float]]] = [("provider.stream() direct", await timed(runs, direct)),
                                           ("negotiate + route (3)", await timed(runs, plan))]

    async with Kernel({"store": {"use": "memory"}}, providers={"a": Instant("a")}) as k:
        s = await k.sessions.create()
        # A fresh session per run would add session creation; one session per 50 runs keeps
        # the transcript short and realistic.
        sids = [(await k.sessions.create()).id for _ in range(runs // 50 + 1)]
        rows.append(("asm run, 1 provider", await timed(runs, lambda i: k.run(sids[i // 50], "hi"))))
        del s
    config = {"store": {"use": "memory"}, "router": {"use": "capability", "weights": {"a": 2, "b": 1, "c": 1}}}
    async with Kernel(config, providers=dict(providers)) as k:
        sids = [(await k.sessions.create()).id for _ in range(runs // 50 + 1)]
        rows.append(("asm run, 3 providers", await timed(runs, lambda i: k.run(sids[i // 50], "hi",
                                                                                  requires=["tools"]))))
    flaky = ScriptedProvider(settings=ScriptedSettings(turns=[[{"error": "provider.overloaded"}]],
                                                       capabilities=["streaming"]), name="flaky")
    config = {"store": {"use": "memory"}, "resilience": {"max_attempts": 1},
              "router": {"use": "capability", "prefer": ["flaky", "b"], "sticky": False}}
    async with Kernel(config, providers={"flaky": flaky, "b": Instant("b")}) as k:
        sids = [(await k.sessions.create()).id for _ in range(runs // 50 + 1)]
        n = min(runs, 4)  # the breaker opens after 5 failures; measure failover while it is closed
        rows.append(("asm run, failover", await timed(n, lambda i: k.run(sids[i // 50], "hi"))))

    floor = statistics.median(rows[0][1])
    print(f"{runs} runs each (failover: 4, before its breaker opens); times in microseconds")
    header = f"{'what':<28}{'p50 us':>10}{'p99 us':>10}{'x direct':>10}"
    print(header)
    print("-" * len(header))
    for name, values in rows:
        values.sort()
        p50 = statistics.median(values)
        p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
        print(f"{name:<28}{p50:>10.1f}{p99:>10.1f}{p50 / floor:>10.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000)
    asyncio.run(main(parser.parse_args().runs))
