"""Commands that show what is stored or installed: sessions, events, providers, plugins.

The store-reading commands build only the store (``CliContext.kernel(store_only=True)``), so a
provider that cannot be built (a key not exported) does not stop them.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from .api import CliContext
from .output import event_dict, events_table, table
from .running import run_async

__all__ = ["cmd_sessions_list", "cmd_sessions_show", "cmd_events", "cmd_providers", "cmd_plugins"]


def cmd_sessions_list(args: argparse.Namespace, ctx: CliContext) -> int:
    from ..model import SessionStatus

    if args.status and args.status not in SessionStatus._value2member_map_:
        from ..errors import ValidationError

        raise ValidationError(
            f"unknown session status {args.status!r}",
            path="--status",
            hint=f"use one of {', '.join(s.value for s in SessionStatus)}",
        )

    async def go() -> Any:
        async with ctx.kernel(store_only=True) as kernel:
            return await kernel.sessions.list(
                status=SessionStatus(args.status) if args.status else None,
                agent_id=args.agent,
                tag=args.tag,
                limit=args.limit,
                offset=args.offset,
            )

    remote = ctx.remote()
    if remote is not None:
        sessions = remote.list_sessions(
            status=args.status, agent_id=args.agent, tag=args.tag, limit=args.limit, offset=args.offset
        )
    else:
        sessions = run_async(go())
    if args.json:
        from ..serialization import to_dict

        for s in sessions:
            ctx.json_out(to_dict(s))
        return 0
    table(
        [
            (s.id, s.status.value, s.agent_id, s.created_at.strftime("%Y-%m-%d %H:%M:%S"), ",".join(s.tags))
            for s in sessions
        ],
        ["id", "status", "agent", "created", "tags"],
        ctx.out,
    )
    return 0


def cmd_sessions_show(args: argparse.Namespace, ctx: CliContext) -> int:
    async def go() -> Any:
        async with ctx.kernel(store_only=True) as kernel:
            session = await kernel.sessions.get(args.id)
            runs = await kernel.sessions.runs(args.id, limit=1000)
            last = await kernel.store.last_seq(args.id)
            return session, runs, last, await kernel.sessions.context_report(args.id)

    remote = ctx.remote()
    if remote is not None:
        session, summary = remote.session(args.id)
        from ..context.ops import REPORT_WINDOW, latest_context

        runs, last = remote.runs(args.id, limit=1000), summary["last_seq"]
        context = latest_context(remote.events(args.id, after=max(0, last - REPORT_WINDOW),
                                               types=["context_prepared"]))
    else:
        session, runs, last, context = run_async(go())
    from ..model import Usage
    from ..serialization import to_dict

    total = sum((r.usage for r in runs), Usage())
    cost = sum(r.cost or 0.0 for r in runs)
    if args.json:
        runs_data = [to_dict(r) for r in runs]
        ctx.json_out({**to_dict(session), "events": last, "runs": runs_data, "usage": to_dict(total), "cost": cost,
                      "context": context})
        return 0
    ctx.line(f"session  {session.id}\nstatus   {session.status.value}\nagent    {session.agent_id}")
    ctx.line(
        f"created  {session.created_at.isoformat()}\nevents   {last}\nusage    in={total.input_tokens} "
        f"out={total.output_tokens} cost=${cost:.6f}"
    )
    if session.metadata:
        ctx.line(f"metadata {json.dumps(session.metadata, ensure_ascii=False)}")
    ctx.line()
    table(
        [
            (
                r.id,
                r.status.value,
                r.provider,
                r.model,
                r.usage.total_tokens,
                (r.output.text if r.output else (r.error or {}).get("message", ""))[:60],
            )
            for r in runs
        ],
        ["run", "status", "provider", "model", "tokens", "output"],
        ctx.out,
    )
    if context:  # what the latest run's model calls saw, and why the rest was not seen
        from .context import explain_window

        ctx.line("\ncontext of the latest run")
        for text in explain_window(context):
            ctx.line(text)
    return 0


def cmd_events(args: argparse.Namespace, ctx: CliContext) -> int:
    types = args.type or None

    async def read(after: int) -> list[Any]:
        async with ctx.kernel(store_only=True) as kernel:
            return await kernel.sessions.events(args.id, after=after, limit=args.limit, types=types)

    def show(events: list[Any]) -> None:
        if args.json:
            for e in events:
                ctx.json_out(event_dict(e))
        elif events:
            events_table(events, ctx.out)

    remote = ctx.remote()
    cursor = args.after
    if remote is not None:
        events = remote.events(args.id, after=cursor, limit=args.limit, types=types)
    else:
        events = run_async(read(cursor))
    show(events)
    if not args.follow:
        return 0
    if events:
        cursor = events[-1].seq
    if remote is not None:
        from .remote import ServerGone

        # Over SSE; JSON Lines are printed as they come, tables in batches like the polls below.
        try:
            for batch in remote.follow_batches(
                args.id, after=cursor, types=types, window=0.0 if args.json else args.interval
            ):
                show(batch)
                cursor = batch[-1].seq
        except ServerGone as gone:  # the server stopped: go on from the store it released
            cursor = gone.cursor
    # Follow with short opens: the process running the session keeps the store file.
    while True:
        time.sleep(args.interval)
        events = run_async(read(cursor))
        if events:
            show(events)
            cursor = events[-1].seq


def cmd_plugins(args: argparse.Namespace, ctx: CliContext) -> int:
    from .._plugins import PluginManager
    from ..config import read_plugin_switches
    from ..registry import plural

    # Read leniently, so `asm plugins` helps even when the config does not validate.
    switches = read_plugin_switches(getattr(args, "config", None))
    if switches.problem is not None:
        ctx.error(f"asm: warning: the config is invalid ({switches.problem}); listing plugins from its [plugins] table")
    manager = PluginManager()
    manager.load(disabled=switches.disabled, modules=switches.modules, autoload=switches.autoload)
    registries = manager.collect_components()
    infos = manager.info()
    if args.json:
        for info in infos:
            ctx.json_out(info.to_dict())
        return 0
    table(
        [
            (
                i.name,
                i.version or ("builtin" if i.source == "builtin" else ""),
                i.status,
                ", ".join(i.components),
                i.error or ", ".join(h for h in i.hooks if not h.startswith("asm_register")),
            )
            for i in infos
        ],
        ["plugin", "version", "status", "components", "hooks / reason"],
        ctx.out,
    )
    ctx.line()
    for kind, registry in registries.items():
        label = plural(kind) + ":"
        ctx.line(f"{label:17} {', '.join(registry.names()) or '-'}")
    return 0


def cmd_providers(args: argparse.Namespace, ctx: CliContext) -> int:
    from ..config import mask
    from ..serialization import to_dict

    kernel = ctx.kernel()
    kernel._build_all()  # builds providers without opening the store
    rows: list[dict[str, Any]] = []
    for name, provider in kernel.providers.items():
        models = []
        for info in provider.models:
            model = to_dict(info)
            model["breaker"] = kernel.breakers.get(name, info.name).current()
            models.append(model)
        rows.append(
            {
                "name": mask(name),  # an interpolated name is a secret
                "type": type(provider).__name__,
                "capabilities": sorted(provider.capabilities),
                "default_model": provider.default_model,
                "models": models,
                # Breakers live in the process that routes; a fresh CLI process starts them closed.
                "health": "closed" if all(m["breaker"] == "closed" for m in models) else "degraded",
            }
        )
    if args.json:
        for row in rows:
            ctx.json_out(row)
        return 0
    table(
        [(r["name"], r["default_model"], ", ".join(r["capabilities"]), len(r["models"]), r["health"]) for r in rows],
        ["provider", "default model", "capabilities", "models", "health"],
        ctx.out,
    )
    if not args.models:
        return 0
    ctx.line()
    model_rows = []
    for r in rows:
        for m in r["models"]:
            price = m.get("price") or {}
            model_rows.append(
                (
                    r["name"],
                    m["name"],
                    m["context_window"],
                    m["max_output_tokens"],
                    price.get("input", "-"),
                    price.get("output", "-"),
                    price.get("as_of", ""),
                )
            )
    table(model_rows, ["provider", "model", "context", "max out", "$/M in", "$/M out", "price as of"], ctx.out)
    return 0
