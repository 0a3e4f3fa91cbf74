"""Deciding what runs wait for from the shell: ``asm approvals``, ``asm approve``.

``asm approve RUN_ID [TOOL_USE_ID] [--deny] [--reason TEXT] [--by NAME]`` records the decision
in the store (the run's ``approval_granted``/``approval_denied``, who decided) and, when nothing
of the run is left open, queues it again: the process that serves runs (its runtime, or an
``asm worker``) continues it. It opens the store only for the moment it needs it.
"""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from .api import CliContext
from .output import table
from .running import run_async

__all__ = ["cmd_approvals", "cmd_approve"]


def _who(given: str | None) -> str:
    if given:
        return given
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (a container)
        return "cli"


def cmd_approvals(args: argparse.Namespace, ctx: CliContext) -> int:
    async def go() -> Any:
        async with ctx.kernel(store_only=True) as kernel:
            return await kernel.approvals.pending(session_id=args.session)

    pending = run_async(go())
    if args.json:
        from ..serialization import to_dict

        for request in pending:
            ctx.json_out(to_dict(request))
        return 0
    table(
        [
            (r.run_id, r.tool_use_id or "-", r.name or r.kind, r.requested_at.strftime("%Y-%m-%d %H:%M:%S"),
             r.expires_at.strftime("%Y-%m-%d %H:%M:%S") if r.expires_at else "-", r.reason)
            for r in pending
        ],
        ["run", "tool_use_id", "what", "requested", "expires", "reason"],
        ctx.out,
    )
    return 0


def cmd_approve(args: argparse.Namespace, ctx: CliContext) -> int:
    who = _who(args.by)

    async def go() -> Any:
        async with ctx.kernel(store_only=True) as kernel:
            return await kernel.approvals.decide(
                args.run_id, args.tool_use_id, approve=not args.deny, by=who, reason=args.reason
            )

    run = run_async(go())
    decided = "denied" if args.deny else "approved"
    if args.json:
        ctx.json_out({"run_id": run.id, "session_id": run.session_id, "status": run.status.value,
                      "decision": decided, "decided_by": who})
        return 0
    what = f"{args.tool_use_id} of run {run.id}" if args.tool_use_id else f"run {run.id}"
    follow = {
        "pending": "queued again: the runtime or a worker continues it (asm wait " + run.id + ")",
        "awaiting_approval": "it still waits for other decisions (asm approvals)",
        "failed": "the run failed: it needed that approval",
    }.get(run.status.value, run.status.value)
    ctx.error(f"asm: {who} {decided} {what}; {follow}")
    ctx.line(run.status.value)
    return 0
