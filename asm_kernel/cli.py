"""The ``asm`` command.

Every command that shows data takes ``--json``. Errors go to stderr as one line
(``asm: error[code]: message``), with a traceback only under ``--debug``; the exit code is 1
for an asm error, 2 for a usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from attrs import evolve

__all__ = ["main", "CommandRegistry", "CliContext"]

Handler = Callable[[argparse.Namespace, "CliContext"], int | None]


class CommandRegistry:
    """Handed to ``asm_register_commands``: plugins add subcommands through it.

    ``cli.add("name", handler, help="...", configure=lambda parser: parser.add_argument(...))``;
    ``handler(args, ctx)`` returns an exit code (None means 0). ``ctx`` is a
    :class:`CliContext` with ``open_kernel()``, ``out`` and ``json_out``.
    """

    def __init__(self, subparsers: Any, plugin: str = "asm") -> None:
        self._subparsers = subparsers
        self.plugin = plugin
        self.names: dict[str, str] = {}

    def add(
        self,
        name: str,
        handler: Handler,
        *,
        help: str = "",
        configure: Callable[[argparse.ArgumentParser], None] | None = None,
    ) -> argparse.ArgumentParser:
        if name in self.names:
            from .errors import DuplicateComponentError

            raise DuplicateComponentError(
                f"command {name!r} is added by both {self.names[name]!r} and {self.plugin!r}",
                hint="disable one of the plugins",
            )
        self.names[name] = self.plugin
        parser = self._subparsers.add_parser(name, help=help, description=help)
        _add_common(parser)
        if configure is not None:
            configure(parser)
        parser.set_defaults(_handler=handler)
        return parser


class CliContext:
    """What a command handler gets: config access, a kernel factory and output helpers."""

    def __init__(self, args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.args = args
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def config(self) -> Any:
        from .config import load_config

        return load_config(getattr(self.args, "config", None))

    def kernel(self, config: Any | None = None) -> Any:
        """An unstarted Kernel for the CLI (short store opens wait for a busy file)."""
        from .config import ComponentConfig
        from .kernel import Kernel

        cfg = config if config is not None else self.config()
        kernel = Kernel(cfg)
        store = cfg.store or kernel.default_store_config()
        if store.use == "duckdb" and "lock_timeout" not in store.settings:
            # A CLI command briefly opens the file another process may hold: wait, visibly.
            store = ComponentConfig(store.use, store.name, {**store.settings, "lock_timeout": 10.0}, store.path)
        kernel.config = evolve(cfg, store=store)
        return kernel

    def json_out(self, data: Any) -> None:
        from .serialization import dumps

        self.out.write(dumps(data) + "\n")
        self.out.flush()

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", default=argparse.SUPPRESS, help="config file (default: ./asm.toml or ASM_CONFIG)"
    )
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


# -- formatting -------------------------------------------------------------------------------


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str], out: TextIO) -> None:
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    width = shutil.get_terminal_size((120, 20)).columns
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    # Squeeze the last column so rows fit the terminal.
    fixed = sum(widths[:-1]) + 2 * (len(widths) - 1)
    widths[-1] = max(10, min(widths[-1], width - fixed))
    for n, row in enumerate(cells):
        parts = [c if len(c) <= w else c[: w - 1] + "…" for c, w in zip(row, widths, strict=True)]
        out.write("  ".join(p.ljust(w) for p, w in zip(parts, widths, strict=True)).rstrip() + "\n")
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


def _event_dict(event: Any) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "type": event.type,
        "run_id": event.run_id,
        "timestamp": event.timestamp.isoformat(),
        "payload": event.payload,
        "id": event.id,
        "session_id": event.session_id,
        "schema_version": event.schema_version,
    }


def _summary(event: Any) -> str:
    p = event.payload
    if event.type == "routing_decided":
        return "candidates: " + ", ".join(p.get("candidates", []))
    if event.type == "run_completed":
        return f"{p.get('stop_reason')}: " + json.dumps(p.get("output", "")[:60], ensure_ascii=False)
    if "text" in p:
        return json.dumps(p["text"], ensure_ascii=False)
    if "message" in p:
        blocks = p["message"].get("content", [])
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        kinds = [b.get("type") for b in blocks if b.get("type") != "text"]
        return json.dumps(text, ensure_ascii=False) + (f" +{','.join(kinds)}" if kinds else "")
    if "error" in p:
        return f"{p['error'].get('code')}: {p['error'].get('message')}"
    if "usage" in p:
        u = p["usage"]
        return f"in={u.get('input_tokens')} out={u.get('output_tokens')}" + (
            f" cost=${p['cost']:.6f}" if p.get("cost") is not None else ""
        )
    return ", ".join(f"{k}={v}" for k, v in p.items() if v is not None and not isinstance(v, dict | list))


def _events_table(events: Iterable[Any], out: TextIO) -> None:
    rows = [
        (e.seq, e.timestamp.strftime("%H:%M:%S.%f")[:-3], e.type, (e.run_id or "")[-8:], _summary(e)) for e in events
    ]
    _table(rows, ["seq", "time", "type", "run", "details"], out)


# -- commands ---------------------------------------------------------------------------------


class Terminated(Exception):
    """SIGTERM arrived: the running command was cancelled (and recorded its runs as cancelled)."""


def _run_async(coro: Any) -> Any:
    """Run a command's coroutine; SIGINT and SIGTERM cancel it cleanly.

    Cancellation unwinds through the kernel, so a run in progress is stored as ``run_cancelled``
    and the store is closed before the process exits.
    """

    async def main() -> Any:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
                loop.add_signal_handler(signal.SIGTERM, task.cancel, "SIGTERM")
        return await coro

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        raise Terminated() from None


def cmd_init(args: argparse.Namespace, ctx: CliContext) -> int:
    from .config import STARTER_CONFIG

    path = Path(args.path)
    if path.exists() and not args.force:
        from .errors import ConfigError

        raise ConfigError(f"{path} already exists", hint="pass --force to overwrite it")
    try:
        path.write_text(STARTER_CONFIG, encoding="utf-8")
    except OSError as exc:
        from .errors import ConfigError

        raise ConfigError(
            f"cannot write {path}: {exc.strerror}", hint="choose a path in an existing, writable directory"
        ) from None
    ctx.line(f'wrote {path}; edit it, then try: asm run "hello"')
    return 0


async def _stream_answer(
    kernel: Any, session_id: str, prompt: str, ctx: CliContext, options: dict[str, Any], echo: bool
) -> Any:
    from .model import RunResult

    result = None
    async for item in kernel.sessions.stream_run(session_id, prompt, **options):
        if isinstance(item, RunResult):
            result = item
        elif echo and item.type == "message_streamed":
            ctx.out.write(item.payload["text"])
            ctx.out.flush()
    if echo:
        ctx.out.write("\n")
    return result


def cmd_run(args: argparse.Namespace, ctx: CliContext) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    options: dict[str, Any] = {}
    for key in ("provider", "model", "system", "max_tokens", "timeout"):
        value = getattr(args, key)
        if value is not None:
            options[key] = value

    async def go() -> Any:
        async with ctx.kernel() as kernel:
            session_id = args.session
            if session_id is None:
                session_id = (await kernel.sessions.create(agent_id=args.agent)).id
            else:
                await kernel.sessions.get(session_id)
            options["raise_on_error"] = False  # a failed run is reported below, with its ids
            return await _stream_answer(kernel, session_id, prompt, ctx, options, echo=not args.json)

    result = _run_async(go())
    failed = result.status.value != "completed"
    if args.json:
        from .serialization import to_dict

        ctx.json_out(
            {
                "session_id": result.session_id,
                "run_id": result.run_id,
                "status": result.status.value,
                "output": result.output,
                "usage": to_dict(result.usage),
                "cost": result.cost,
                "provider": result.provider,
                "model": result.model,
                "stop_reason": result.stop_reason,
                "pending_tool_calls": [to_dict(c) for c in result.pending_tool_calls],
                "error": result.error,
            }
        )
    elif failed:
        error = result.error or {}
        ctx.err.write(
            f"asm: error[{error.get('code', 'runtime.error')}]: run {result.run_id} {result.status.value}: "
            f"{error.get('message', '')} (session {result.session_id})\n"
        )
    else:
        ctx.err.write(f'session {result.session_id}  (continue with: asm run --session {result.session_id} "...")\n')
    return 1 if failed else 0


def cmd_sessions_list(args: argparse.Namespace, ctx: CliContext) -> int:
    from .model import SessionStatus

    if args.status and args.status not in SessionStatus._value2member_map_:
        from .errors import ValidationError

        raise ValidationError(
            f"unknown session status {args.status!r}",
            path="--status",
            hint=f"use one of {', '.join(s.value for s in SessionStatus)}",
        )

    async def go() -> Any:
        async with ctx.kernel() as kernel:
            return await kernel.sessions.list(
                status=SessionStatus(args.status) if args.status else None,
                agent_id=args.agent,
                tag=args.tag,
                limit=args.limit,
                offset=args.offset,
            )

    sessions = _run_async(go())
    if args.json:
        from .serialization import to_dict

        for s in sessions:
            ctx.json_out(to_dict(s))
        return 0
    _table(
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
        async with ctx.kernel() as kernel:
            session = await kernel.sessions.get(args.id)
            runs = await kernel.sessions.runs(args.id, limit=1000)
            last = await kernel.store.last_seq(args.id)
            return session, runs, last

    session, runs, last = _run_async(go())
    from .model import Usage
    from .serialization import to_dict

    total = sum((r.usage for r in runs), Usage())
    cost = sum(r.cost or 0.0 for r in runs)
    if args.json:
        ctx.json_out(
            {
                **to_dict(session),
                "events": last,
                "runs": [to_dict(r) for r in runs],
                "usage": to_dict(total),
                "cost": cost,
            }
        )
        return 0
    ctx.line(f"session  {session.id}\nstatus   {session.status.value}\nagent    {session.agent_id}")
    ctx.line(
        f"created  {session.created_at.isoformat()}\nevents   {last}\nusage    in={total.input_tokens} "
        f"out={total.output_tokens} cost=${cost:.6f}"
    )
    if session.metadata:
        ctx.line(f"metadata {json.dumps(session.metadata, ensure_ascii=False)}")
    ctx.line()
    _table(
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
    return 0


def cmd_events(args: argparse.Namespace, ctx: CliContext) -> int:
    types = args.type or None

    async def read(after: int) -> list[Any]:
        async with ctx.kernel() as kernel:
            return await kernel.sessions.events(args.id, after=after, limit=args.limit, types=types)

    def show(events: list[Any]) -> None:
        if args.json:
            for e in events:
                ctx.json_out(_event_dict(e))
        elif events:
            _events_table(events, ctx.out)

    cursor = args.after
    events = _run_async(read(cursor))
    show(events)
    if not args.follow:
        return 0
    if events:
        cursor = events[-1].seq
    # Follow with short opens: the process running the session keeps the store file.
    while True:
        time.sleep(args.interval)
        events = _run_async(read(cursor))
        if events:
            show(events)
            cursor = events[-1].seq


def cmd_plugins(args: argparse.Namespace, ctx: CliContext) -> int:
    from .kernel import Kernel

    kernel = Kernel(ctx.config())
    registries = kernel.registries
    infos = kernel.plugins.info()
    if args.json:
        for info in infos:
            ctx.json_out(info.to_dict())
        return 0
    _table(
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
    plural = {"policy": "policies", "telemetry": "telemetry sinks"}
    for kind, registry in registries.items():
        label = plural.get(kind, kind + "s") + ":"
        ctx.line(f"{label:17} {', '.join(registry.names()) or '-'}")
    return 0


def cmd_providers(args: argparse.Namespace, ctx: CliContext) -> int:
    from .serialization import to_dict

    kernel = ctx.kernel()
    kernel._build_all()  # builds providers without opening the store
    rows = []
    for name, provider in kernel.providers.items():
        models = []
        for info in provider.models:
            model = to_dict(info)
            model["breaker"] = kernel.breakers.get(name, info.name).current()
            models.append(model)
        rows.append(
            {
                "name": name,
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
    _table(
        [(r["name"], r["default_model"], ", ".join(r["capabilities"]), len(r["models"]), r["health"]) for r in rows],
        ["provider", "default model", "capabilities", "models", "health"],
        ctx.out,
    )
    if args.models:
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
        _table(model_rows, ["provider", "model", "context", "max out", "$/M in", "$/M out", "price as of"], ctx.out)
    return 0


def cmd_config_show(args: argparse.Namespace, ctx: CliContext) -> int:
    cfg = ctx.config()
    data = cfg.masked()
    info = {"source": str(cfg.source) if cfg.source else None, "home": str(cfg.home), "config": data}
    if args.json:
        ctx.json_out(info)
    else:
        ctx.line(f"# source: {info['source'] or '(none: defaults)'}\n# home:   {info['home']}")
        ctx.line(json.dumps(data, indent=2, ensure_ascii=False))
    return 0


def cmd_config_check(args: argparse.Namespace, ctx: CliContext) -> int:
    cfg = ctx.config()
    from .kernel import Kernel

    kernel = Kernel(cfg)
    kernel._build_all()  # builds every component: validates every setting without opening the store
    ctx.line(
        f"config OK ({cfg.source or 'defaults'}): store={type(kernel.store).__name__}, "
        f"providers={', '.join(kernel.providers)}"
    )
    return 0


DEMO_PROMPTS = [
    ("support", ["Hi! My order #1234 has not arrived yet.", "Can you check the shipping status?"]),
    ("research", ["Summarize the plot of Hamlet in one sentence."]),
    ("coding", ["Write a haiku about event sourcing."]),
]


def cmd_demo(args: argparse.Namespace, ctx: CliContext) -> int:
    from .config import ComponentConfig, RunDefaults

    cfg = ctx.config()
    echo = ComponentConfig(
        "echo", "echo", {"prefix": "(echo) ", "chunk_size": 6, "delay": 0.0 if args.fast else 0.02}, "providers[0]"
    )
    # The demo always answers with the offline echo provider, whatever the config names.
    kernel = ctx.kernel(evolve(cfg, providers=(echo,), run=RunDefaults(), tools=()))

    async def go() -> tuple[list[Any], Any]:
        shown = []
        async with kernel:
            for agent, prompts in DEMO_PROMPTS:
                session = await kernel.sessions.create(agent_id=agent, tags=["demo"])
                ctx.line(f"\n== session {session.id} (agent {agent})")
                for prompt in prompts:
                    ctx.line(f"you> {prompt}")
                    ctx.out.write("asm> ")
                    await _stream_answer(kernel, session.id, prompt, ctx, {}, echo=True)
                shown.append((session.id, await kernel.sessions.events(session.id)))
        return shown, kernel.store

    shown, store = _run_async(go())
    session_id, events = shown[0]
    ctx.line(f"\n== the stored event log of session {session_id}")
    _events_table(events, ctx.out)
    ctx.line(f"\n{len(shown)} sessions stored by {store!r}.")
    if type(store).__name__ != "MemoryStore":
        ctx.line(f"Look again: asm sessions list --tag demo; asm events {session_id}; asm sessions show {session_id}")
    return 0


# -- parser -----------------------------------------------------------------------------------


def _help_of(command: str) -> Handler:
    """Handler for a command group called without its action: show the group's help."""

    def show(args: argparse.Namespace, ctx: CliContext) -> int:
        try:
            build_parser(with_plugins=False)[0].parse_args([command, "--help"])
        except SystemExit:
            pass
        return 2

    return show


def build_parser(
    with_plugins: bool = True, config_path: str | None = None
) -> tuple[argparse.ArgumentParser, list[str]]:
    from . import __version__

    parser = argparse.ArgumentParser(prog="asm", description="asm: an agent session manager.")
    parser.add_argument("--version", action="version", version=f"asm {__version__}")
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    core = CommandRegistry(sub)

    p = core.add("demo", cmd_demo, help="offline demo: a few sessions with the echo provider, then the event log")
    p.add_argument("--fast", action="store_true", help="no streaming delay")

    p = core.add("init", cmd_init, help="write a commented starter asm.toml")
    p.add_argument("path", nargs="?", default="asm.toml")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")

    p = core.add("run", cmd_run, help="run a prompt in a session (new unless --session), streaming the answer")
    p.add_argument("prompt", help="the prompt; - reads it from stdin")
    p.add_argument("--session", "-s", help="continue this session")
    p.add_argument("--provider", "-p", help="configured provider name")
    p.add_argument("--model", "-m")
    p.add_argument("--system")
    p.add_argument("--agent", default=None, help="agent id for a new session")
    p.add_argument("--max-tokens", type=int, dest="max_tokens")
    p.add_argument("--timeout", type=float, help="seconds for the whole run")
    _add_json(p)

    p = core.add("sessions", _help_of("sessions"), help="list or show sessions")
    ss = p.add_subparsers(dest="sessions_command", metavar="ACTION")
    sreg = CommandRegistry(ss)
    q = sreg.add("list", cmd_sessions_list, help="list sessions, newest first")
    q.add_argument("--status")
    q.add_argument("--agent")
    q.add_argument("--tag")
    q.add_argument("--limit", type=int, default=50)
    q.add_argument("--offset", type=int, default=0)
    _add_json(q)
    q = sreg.add("show", cmd_sessions_show, help="one session with its runs, usage and cost")
    q.add_argument("id")
    _add_json(q)

    p = core.add("events", cmd_events, help="a session's event log (JSON Lines with --json)")
    p.add_argument("id", help="session id")
    p.add_argument("--after", type=int, default=0, help="only events with seq > N")
    p.add_argument("--type", action="append", help="only this event type (repeatable)")
    p.add_argument("--limit", type=int)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between polls with --follow")
    _add_json(p)

    p = core.add("providers", cmd_providers, help="configured providers: capabilities, models, prices, health")
    p.add_argument("--models", action="store_true", help="also list every model with its limits and price")
    _add_json(p)

    p = core.add("plugins", cmd_plugins, help="installed plugins, their hooks and components")
    _add_json(p)

    p = core.add("config", _help_of("config"), help="show or check the configuration")
    cs = p.add_subparsers(dest="config_command", metavar="ACTION")
    creg = CommandRegistry(cs)
    q = creg.add("show", cmd_config_show, help="the effective config, secrets masked")
    _add_json(q)
    creg.add("check", cmd_config_check, help="validate the config and build every component")

    problems: list[str] = []
    if with_plugins:
        problems = _plugin_commands(core, config_path)
    return parser, problems


def _config_arg(argv: Sequence[str]) -> str | None:
    """``--config``/``-c`` from the command line, before the parser (which needs the plugins) exists."""
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def _plugin_commands(core: CommandRegistry, config_path: str | None = None) -> list[str]:
    from ._plugins import PluginManager
    from .config import load_config

    try:
        cfg_plugins = load_config(config_path).plugins
        disabled, modules, autoload = cfg_plugins.disabled, cfg_plugins.modules, cfg_plugins.autoload
    except Exception:  # a broken config is reported by the command that needs it
        disabled, modules, autoload = (), (), True
    manager = PluginManager()
    manager.load(disabled=disabled, modules=modules, autoload=autoload)
    problems = []
    for impl in manager.impls("asm_register_commands"):
        core.plugin = impl.plugin_name
        try:
            impl.function(cli=core)
        except Exception as exc:
            problems.append(f"plugin {impl.plugin_name!r} failed to add its commands: {exc}")
    core.plugin = "asm"
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("ASM_DEBUG") == "1"
    parser, problems = build_parser(config_path=_config_arg(argv))
    args = parser.parse_args(argv)
    for problem in problems:
        sys.stderr.write(f"asm: warning: {problem}\n")
    if getattr(args, "config", None):
        os.environ["ASM_CONFIG"] = args.config
    handler = getattr(args, "_handler", None)
    if handler is None:
        parser.print_help()
        return 2
    ctx = CliContext(args)
    from .errors import AsmError

    try:
        code = handler(args, ctx)
        return 0 if code is None else int(code)
    except AsmError as exc:
        if debug:
            raise
        sys.stderr.write(f"asm: error[{exc.code}]: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("asm: interrupted\n")
        return 130
    except Terminated:
        sys.stderr.write("asm: terminated\n")
        return 143
    except BrokenPipeError:
        return 0
    except OSError as exc:  # e.g. a directory that cannot be created: no traceback for that
        if debug:
            raise
        sys.stderr.write(f"asm: error[os]: {exc}\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
