"""Moving and mending stored sessions: ``asm export``, ``asm import``, ``asm repair``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .api import CliContext
from .running import run_async

__all__ = ["cmd_export", "cmd_import", "cmd_repair"]


def cmd_export(args: argparse.Namespace, ctx: CliContext) -> int:
    from ..errors import ValidationError
    from ..transfer import export_lines

    if not args.all and not args.ids:
        raise ValidationError("name the sessions to export, or pass --all", path="SESSION_ID")
    if args.all and args.ids:
        raise ValidationError("give session ids or --all, not both", path="--all")

    async def go() -> int:
        count = 0
        async with ctx.kernel(store_only=True) as kernel:
            async for line in export_lines(kernel, None if args.all else args.ids):
                ctx.line(line)
                count += 1
        return count

    lines = run_async(go())
    ctx.error(f"asm: exported {lines - 1} record(s)")
    return 0


def _lines(source: str) -> Iterator[str]:
    from ..errors import ValidationError

    if source == "-":
        yield from sys.stdin
        return
    path = Path(source)
    try:
        with path.open(encoding="utf-8") as handle:
            yield from handle
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(
            f"cannot read {source}: {exc}", path="FILE", hint="pass an export file, or - for stdin"
        ) from None


def cmd_import(args: argparse.Namespace, ctx: CliContext) -> int:
    from ..transfer import import_lines

    async def go() -> Any:
        async with ctx.kernel(store_only=True) as kernel:
            return await import_lines(kernel, _lines(args.file))

    report = run_async(go())
    data = {
        "sessions": report.sessions,
        "sessions_created": report.sessions_created,
        "events": report.events,
        "events_stored": report.events_stored,
        "runs": report.runs,
        "runs_stored": report.runs_stored,
        "conflicts": report.conflicts,
    }
    if args.json:
        ctx.json_out(data)
    else:
        ctx.line(
            f"imported {report.sessions} session(s): {report.sessions_created} new, "
            f"{report.events_stored} of {report.events} events and {report.runs_stored} of {report.runs} runs stored "
            "(the rest were there already)"
        )
        for conflict in report.conflicts:
            ctx.error(f"asm: conflict: {conflict}")
    return 1 if report.conflicts else 0


def cmd_repair(args: argparse.Namespace, ctx: CliContext) -> int:
    async def go() -> Any:
        async with ctx.kernel(store_only=True) as kernel:
            return await kernel.runtime.repair()

    report = run_async(go())
    if args.json:
        ctx.json_out(
            {"checked": report.checked, "repaired": list(report.repaired), "irreparable": list(report.irreparable)}
        )
    else:
        ctx.line(f"checked {report.checked} run(s): {len(report.repaired)} repaired")
        for run_id in report.repaired:
            ctx.line(f"  repaired {run_id}")
        for run_id in report.irreparable:
            ctx.error(f"asm: run {run_id} has more than one terminal event; an append-only log cannot be mended")
    return 1 if report.irreparable else 0
