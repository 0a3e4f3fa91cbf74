"""The ``asm`` argument parser: the core commands, plus those plugins add."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import cache

from .api import CliContext, CommandRegistry, Handler, add_common, add_json
from .approve import cmd_approvals, cmd_approve
from .configure import cmd_config_check, cmd_config_show, cmd_init
from .context import cmd_compact, cmd_fork, cmd_pin
from .cost import cmd_cost
from .inspect import cmd_events, cmd_plugins, cmd_providers, cmd_sessions_list, cmd_sessions_show
from .queue import cmd_submit, cmd_wait, cmd_worker
from .running import cmd_demo, cmd_run
from .transfer import cmd_export, cmd_import, cmd_repair

__all__ = ["build_parser", "core_parser", "CORE_COMMANDS", "command_of", "config_arg"]

#: The commands the kernel itself provides; running one of them loads no plugin's commands.
CORE_COMMANDS = frozenset(
    {
        "demo",
        "init",
        "run",
        "sessions",
        "events",
        "providers",
        "plugins",
        "config",
        "submit",
        "wait",
        "worker",
        "export",
        "import",
        "repair",
        "compact",
        "fork",
        "pin",
        "approvals",
        "approve",
        "cost",
    }
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer of at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _help_of(command: str) -> Handler:
    """Handler for a command group called without its action: show the group's help."""

    def show(args: argparse.Namespace, ctx: CliContext) -> int:
        try:
            core_parser().parse_args([command, "--help"])
        except SystemExit:
            pass
        return 2

    return show


def _core(sub: argparse._SubParsersAction) -> CommandRegistry:  # type: ignore[type-arg]
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
    p.add_argument("--max-tokens", type=_positive_int, dest="max_tokens")
    p.add_argument("--timeout", type=_positive_float, help="seconds for the whole run")
    add_json(p)

    p = core.add("sessions", _help_of("sessions"), help="list or show sessions")
    sreg = CommandRegistry(p.add_subparsers(dest="sessions_command", metavar="ACTION"))
    q = sreg.add("list", cmd_sessions_list, help="list sessions, newest first")
    q.add_argument("--status")
    q.add_argument("--agent")
    q.add_argument("--tag")
    q.add_argument("--limit", type=_positive_int, default=50)
    q.add_argument("--offset", type=_non_negative_int, default=0)
    add_json(q)
    q = sreg.add("show", cmd_sessions_show, help="one session with its runs, usage and cost")
    q.add_argument("id")
    add_json(q)

    p = core.add("events", cmd_events, help="a session's event log (JSON Lines with --json)")
    p.add_argument("id", help="session id")
    p.add_argument("--after", type=_non_negative_int, default=0, help="only events with seq > N")
    p.add_argument("--type", action="append", help="only this event type (repeatable)")
    p.add_argument("--limit", type=_positive_int)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--interval", type=_positive_float, default=0.5, help="seconds between polls with --follow")
    add_json(p)

    p = core.add("providers", cmd_providers, help="configured providers: capabilities, models, prices, health")
    p.add_argument("--models", action="store_true", help="also list every model with its limits and price")
    add_json(p)

    p = core.add("plugins", cmd_plugins, help="installed plugins, their hooks and components")
    add_json(p)

    p = core.add("config", _help_of("config"), help="show or check the configuration")
    creg = CommandRegistry(p.add_subparsers(dest="config_command", metavar="ACTION"))
    q = creg.add("show", cmd_config_show, help="the effective config: defaults, paths, plugins; secrets masked")
    add_json(q)
    creg.add("check", cmd_config_check, help="validate everything `asm run` needs, building every component")

    p = core.add("submit", cmd_submit, help="queue a run for a worker (asm worker) and print its id")
    p.add_argument("prompt", help="the prompt; - reads it from stdin")
    p.add_argument("--session", "-s", help="queue it in this session (default: a new one)")
    p.add_argument("--agent", default=None, help="agent id for a new session")
    p.add_argument("--provider", "-p", help="configured provider name")
    p.add_argument("--model", "-m")
    p.add_argument("--system")
    p.add_argument("--max-tokens", type=_positive_int, dest="max_tokens")
    p.add_argument("--timeout", type=_positive_float, help="seconds for the whole run")
    p.add_argument("--idempotency-key", dest="idempotency_key", help="a key already used returns that run")
    add_json(p)

    p = core.add("wait", cmd_wait, help="wait for a run to end and print its result (as asm run does)")
    p.add_argument("run_id")
    p.add_argument("--timeout", type=_positive_float, help="give up after this many seconds (exit 1)")
    p.add_argument("--interval", type=_positive_float, default=0.5, help="seconds between looks")
    add_json(p)

    p = core.add("worker", cmd_worker, help="claim and execute queued runs until SIGTERM or Ctrl-C")
    p.add_argument("--concurrency", type=_positive_int, help="runs at once (default runtime.max_running_runs)")
    p.add_argument("--poll", type=_positive_float, default=0.5, help="seconds between claims when idle")
    p.add_argument("--grace", type=_non_negative_float, help="seconds runs get when stopping (runtime.shutdown_grace)")
    p.add_argument(
        "--on-stop",
        dest="on_stop",
        choices=["requeue", "cancel"],
        default="requeue",
        help="what happens to runs still going after the grace: handed back, or cancelled",
    )
    add_json(p)

    p = core.add("export", cmd_export, help="sessions, their logs and runs as JSON Lines on stdout")
    p.add_argument("ids", nargs="*", metavar="SESSION_ID")
    p.add_argument("--all", action="store_true", help="every session in the store")

    p = core.add("import", cmd_import, help="import an export into this store (idempotent)")
    p.add_argument("file", metavar="FILE", help="an export file, or - for stdin")
    add_json(p)

    p = core.add("repair", cmd_repair, help="check every run's record against its log and mend what disagrees")
    add_json(p)

    p = core.add("compact", cmd_compact, help="summarize a session's oldest turns now (a context_compacted event)")
    p.add_argument("id", metavar="SESSION_ID")
    p.add_argument("--keep", type=_positive_int, help="newest turns left unsummarized (default [context] keep_recent)")
    p.add_argument("--provider", "-p", help="the summarizer (default [context] summarizer, else the last provider)")
    p.add_argument("--model", "-m", help="its model (default [context] summary_model, else its default)")
    add_json(p)

    p = core.add("fork", cmd_fork, help="a new session with a session's transcript up to a seq; prints its id")
    p.add_argument("id", metavar="SESSION_ID")
    p.add_argument("--at", type=_positive_int, help="the last seq the fork contains (default: the whole log)")
    p.add_argument("--session-id", dest="session_id", help="the new session's id (default: a new one)")
    add_json(p)

    p = core.add("pin", cmd_pin, help="keep the turn holding a seq in every window (--unpin to undo)")
    p.add_argument("id", metavar="SESSION_ID")
    p.add_argument("seq", type=_positive_int, metavar="SEQ")
    p.add_argument("--unpin", action="store_true", help="unpin it")
    add_json(p)

    p = core.add("approvals", cmd_approvals, help="requests runs wait for a person to decide")
    p.add_argument("--session", "-s", help="only this session's")
    add_json(p)

    p = core.add("approve", cmd_approve, help="approve (or --deny) what a run waits for; it is then queued again")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("tool_use_id", nargs="?", metavar="TOOL_USE_ID", help="one request (default: all of the run's)")
    p.add_argument("--deny", action="store_true", help="deny instead of approving")
    p.add_argument("--reason", help="why, stored with the decision")
    p.add_argument("--by", help="who decides (default: your user name)")
    add_json(p)

    p = core.add("cost", cmd_cost, help="tokens and cost from the log, grouped; unknown prices shown as unknown")
    p.add_argument("--by", choices=["session", "agent", "provider", "model", "day"], default="model")
    p.add_argument("--since", help="a date, an ISO time, or a span back from now (24h, 7d)")
    p.add_argument("--until", help="the end (exclusive), in the same forms")
    add_json(p)
    return core


def build_parser(
    with_plugins: bool = True, config_path: str | None = None
) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser, and the problems of plugins whose commands could not be added.

    With ``with_plugins``, plugin commands come from the plugins the config (``config_path``,
    else discovered) allows; a config that does not validate is read leniently for that, and
    one whose ``[plugins]`` cannot be read at all loads no entry point.
    """
    from .. import __version__

    parser = argparse.ArgumentParser(prog="asm", description="asm: an agent session manager.")
    parser.add_argument("--version", action="version", version=f"asm {__version__}")
    add_common(parser)
    core = _core(parser.add_subparsers(dest="command", metavar="COMMAND"))
    problems: list[str] = []
    if with_plugins:
        problems = _plugin_commands(core, config_path)
    return parser, problems


@cache
def core_parser() -> argparse.ArgumentParser:
    """The parser of the core commands alone, built once per process (parsing never changes it)."""
    return build_parser(with_plugins=False)[0]


def _plugin_commands(core: CommandRegistry, config_path: str | None = None) -> list[str]:
    from .._plugins import PluginManager
    from ..config import read_plugin_switches

    switches = read_plugin_switches(config_path)
    manager = PluginManager()
    manager.load(disabled=switches.disabled, modules=switches.modules, autoload=switches.autoload)
    problems = []
    for impl in manager.impls("asm_register_commands"):
        core.plugin = impl.plugin_name
        try:
            impl.function(cli=core)
        except Exception as exc:
            problems.append(f"plugin {impl.plugin_name!r} failed to add its commands: {exc}")
    core.plugin = "asm"
    return problems


def config_arg(argv: Sequence[str]) -> str | None:
    """``--config``/``-c`` from the command line, before the parser (which needs the plugins) exists."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg in ("--config", "-c") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def command_of(argv: Sequence[str]) -> str | None:
    """The command named on the command line (its first positional), or None for help/none."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-h", "--help", "--version"):
            return None
        elif arg in ("--config", "-c"):
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None
