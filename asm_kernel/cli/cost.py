"""``asm cost``: tokens and dollars from the log, by session, agent, provider, model or day."""

from __future__ import annotations

import argparse
from typing import Any

from .api import CliContext
from .output import table
from .running import run_async

__all__ = ["cmd_cost"]


def cmd_cost(args: argparse.Namespace, ctx: CliContext) -> int:
    from ..cost import rows_table

    async def go() -> Any:
        # The providers are built (not store-only): the report names their price tables' dates.
        async with ctx.kernel() as kernel:
            return await kernel.cost(by=args.by, since=args.since, until=args.until)

    report = run_async(go())
    if args.json:
        ctx.json_out(report.to_dict())
        return 0
    table(rows_table([*report.rows, report.total]),
          [args.by, "calls", "input", "output", "total tokens", "cost (USD)"], ctx.out)
    if report.total.unknown_cost_calls:
        ctx.error(f"asm: {report.total.unknown_cost_calls} call(s) have no known price or usage: "
                  "their cost is unknown, not zero")
    if report.price_tables:
        dates = sorted(set(report.price_tables.values()))
        ctx.error(f"asm: costs were computed with each call's price when it was made; "
                  f"configured price tables are as of {', '.join(dates)}")
    return 0
