"""Context commands: ``asm compact``, ``asm fork``, ``asm pin``.

Each appends events and prints what it stored; none rewrites the log. ``asm compact`` makes a
real provider call (the summarizer's usage and cost are in the ``context_compacted`` it prints),
so it builds the configured providers; ``asm fork`` and ``asm pin`` only need the store.
"""

from __future__ import annotations

import argparse
from typing import Any

from .api import CliContext
from .running import run_async

__all__ = ["cmd_compact", "cmd_fork", "cmd_pin", "explain_window"]


def cmd_compact(args: argparse.Namespace, ctx: CliContext) -> int:
    async def go() -> Any:
        async with ctx.kernel() as kernel:
            return await kernel.sessions.compact(
                args.id, provider=args.provider, model=args.model, keep_recent=args.keep
            )

    event = run_async(go())
    if args.json:
        from .output import event_dict

        ctx.json_out(event_dict(event) if event is not None else None)
    elif event is None:
        ctx.error(f"asm: nothing to compact in {args.id}: every turn but the newest kept ones is summarized already")
    else:
        p = event.payload
        replaced = p["replaced"]
        cost = f" cost=${p['cost']:.6f}" if p.get("cost") is not None else ""
        usage = p.get("usage") or {}
        ctx.line(
            f"compacted seq {replaced['from']}-{replaced['to']} ({p['groups']} turns) into a summary of "
            f"{len(p['summary'])} characters by {p['provider']} ({p['model']}); in={usage.get('input_tokens')} "
            f"out={usage.get('output_tokens')}{cost}; stored as seq {event.seq}"
        )
    return 0


def cmd_fork(args: argparse.Namespace, ctx: CliContext) -> int:
    async def go() -> Any:
        async with ctx.kernel(store_only=True) as kernel:
            session = await kernel.sessions.fork(args.id, at=args.at, new_session_id=args.session_id)
            forked = await kernel.sessions.events(session.id, types=["session_forked"], limit=1)
            return session, forked[0]

    session, forked = run_async(go())
    if args.json:
        from ..serialization import to_dict

        ctx.json_out({**to_dict(session), "parent_session_id": args.id, "at_seq": forked.payload["at_seq"],
                      "copied": forked.payload["copied"]})
    else:
        ctx.line(session.id)
        ctx.error(
            f"forked {args.id} at seq {forked.payload['at_seq']} ({forked.payload['copied']} transcript events "
            f"copied); continue it: asm run --session {session.id} ..."
        )
    return 0


def cmd_pin(args: argparse.Namespace, ctx: CliContext) -> int:
    async def go() -> Any:
        async with ctx.kernel(store_only=True) as kernel:
            return await kernel.sessions.pin(args.id, args.seq, pinned=not args.unpin)

    event = run_async(go())
    if args.json:
        from .output import event_dict

        ctx.json_out(event_dict(event))
    else:
        what = "unpinned" if args.unpin else "pinned"
        ctx.line(f"{what} the turn holding seq {args.seq} of {args.id} (seq {event.seq})")
    return 0


def _spans(spans: list[dict[str, Any]]) -> str:
    return ", ".join(f"{s['from']}-{s['to']}" for s in spans) or "-"


def explain_window(records: list[dict[str, Any]]) -> list[str]:
    """Lines saying what the latest run's model calls sent and why the rest was not seen."""
    lines = []
    for r in records:
        head = (f"call {r.get('turn', 0) + 1} to {r.get('provider')} ({r.get('model')}), {r.get('strategy')}, "
                f"budget {r.get('budget') or 'none'}: {r.get('messages')} messages, ~{r.get('counted_tokens')} "
                f"tokens ({r.get('count')})")
        lines.append(head)
        lines.append(f"  sent      seq {_spans(r.get('included') or [])}")
        for span in r.get("dropped") or []:
            lines.append(f"  not seen  seq {span['from']}-{span['to']}: dropped ({span.get('reason')})")
        for span in r.get("summarized") or []:
            how = ("summary dropped too (max_tokens)" if span.get("dropped")
                   else f"replaced by the summary at seq {span['by']}")
            lines.append(f"  not seen  seq {span['from']}-{span['to']}: {how}")
        if r.get("pinned"):
            lines.append(f"  pinned    seq {', '.join(str(s) for s in r['pinned'])}")
    return lines
