"""Policy overhead: what governance adds to each provider call, beside a run without policies.

All in one process, against an instant in-process provider with a price (so only asm's own work
is measured), on the memory store, each variant running the same tool loop (``--calls`` model
calls per run, one tool call between them):

* ``no policies``            — the baseline: the pipeline with no governance stage installed;
* ``run budget``             — a ``scope = "run"`` budget on tokens, cost and calls: a worst
  case and a decision per call, no ledger writes;
* ``session budget``         — ``scope = "session"``: a reservation and a settlement appended to
  the ledger session per call (2 extra writes), conditional on its last seq;
* ``budget + tools + approval`` — the three builtin policies at once (the approval policy
  reviewing tool calls that it lets through).

The per-call overhead is ``(run time - baseline run time) / calls``.

Usage: ``python bench/bench_policies.py [--runs 300] [--calls 4]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from asm_kernel import (
    Kernel,
    Message,
    MessageDone,
    ModelInfo,
    Price,
    ProviderRequest,
    TextBlock,
    ToolSpec,
    ToolUseBlock,
    Usage,
)
from asm_kernel.builtin.memory import MemoryStore


class Instant:
    """Answers at once: a tool call while the conversation is short, then text."""

    capabilities = frozenset({"streaming", "tools"})
    models = (ModelInfo("instant-1", 200_000, 4_096, Price(1.0, 4.0, as_of="bench")),)
    default_model = "instant-1"

    def __init__(self, calls: int) -> None:
        self.name = "instant"
        self.calls = calls

    async def stream(self, request: ProviderRequest) -> Any:
        turns = sum(1 for m in request.messages if m.role == "assistant")
        if turns + 1 < self.calls:
            block: Any = ToolUseBlock(f"t{turns}", "lookup", {"q": "x"})
            yield MessageDone(Message("assistant", (block,)), stop_reason="tool_use", usage=Usage(50, 10))
        else:
            yield MessageDone(Message("assistant", (TextBlock("done"),)), usage=Usage(60, 5))

    async def aclose(self) -> None:
        return None


class Lookup:
    spec = ToolSpec("lookup", "look something up", {"type": "object"})

    async def __call__(self, input: dict[str, Any]) -> str:
        return "found"


BUDGET = {"use": "budget", "max_total_tokens": 10**9, "max_cost_usd": 10**6, "max_model_calls": 10**6}
VARIANTS: list[tuple[str, list[dict[str, Any]]]] = [
    ("no policies", []),
    ("run budget", [BUDGET]),
    ("session budget", [{**BUDGET, "scope": "session"}]),
    ("budget + tools + approval", [BUDGET, {"use": "tools", "deny": ["delete_*"]},
                                   {"use": "approval", "tools": ["delete_*"]}]),
]


async def main(runs: int, calls: int) -> None:
    kernels = []
    for _name, policies in VARIANTS:
        config = {"plugins": {"autoload": False}, "policies": policies, "run": {"max_turns": calls + 1}}
        kernels.append(Kernel(config, store=MemoryStore(), providers={"instant": Instant(calls)}, tools=[Lookup()]))
    times: list[list[float]] = [[] for _ in VARIANTS]
    for kernel in kernels:
        await kernel.start()
    try:
        # Interleaved, one run of each variant per round, so the machine's noise hits all alike.
        for _ in range(runs):
            for kernel, out in zip(kernels, times, strict=True):
                session = await kernel.sessions.create()  # a fresh session: the same transcript each run
                t0 = time.perf_counter()
                result = await kernel.run(session.id, "go")
                out.append((time.perf_counter() - t0) * 1e6)
                assert result.status.value == "completed", result
    finally:
        for kernel in kernels:
            await kernel.close()
    base = statistics.median(times[0])
    print(f"{runs} runs each, {calls} model calls and {calls - 1} tool calls per run; times in microseconds")
    header = f"{'what':<28}{'run p50':>10}{'run p99':>10}{'per call':>10}{'x base':>8}"
    print(header)
    print("-" * len(header))
    for (name, _), values in zip(VARIANTS, times, strict=True):
        values.sort()
        p50 = statistics.median(values)
        p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
        print(f"{name:<28}{p50:>10.0f}{p99:>10.0f}{(p50 - base) / calls:>+10.0f}{p50 / base:>8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--calls", type=int, default=4, help="model calls per run (>= 1)")
    args = parser.parse_args()
    asyncio.run(main(args.runs, max(1, args.calls)))
