"""The ``asm`` command.

Every command that shows data takes ``--json``. Errors go to stderr as one line
(``asm: error[code]: message``), with a traceback only under ``--debug``; the exit code is 1
for an asm error, 2 for a usage error, 130 when interrupted (SIGINT), 143 when terminated.
Log records go to stderr as one ``asm: ...`` line each (``--quiet``/``--verbose``).

The package: :mod:`.api` (what plugins add commands with), :mod:`.parser`, :mod:`.output`,
:mod:`.logs`, and the commands in :mod:`.running`, :mod:`.inspect` and :mod:`.configure`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .api import CliContext, CommandRegistry, Handler
from .logs import stderr_logging, verbosity_of
from .parser import CORE_COMMANDS, build_parser, command_of, config_arg, core_parser
from .running import Stopped

__all__ = ["main", "CommandRegistry", "CliContext", "Handler", "build_parser"]


def _error_line(code: str, text: str) -> str:
    from ..secrets import redact_text
    from .api import printable

    # One line, whatever the message holds; nothing registered as a secret.
    flat = " ".join(redact_text(text).splitlines())
    return printable(f"asm: error[{code}]: {flat}\n", sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``asm`` command line ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("ASM_DEBUG") == "1"
    with stderr_logging(verbosity_of(argv)):
        return _main(argv, debug)


def _main(argv: list[str], debug: bool) -> int:
    from ..errors import AsmError

    command = command_of(argv)
    problems: list[str] = []
    try:
        # A core command needs no plugin's commands: they are only loaded for help and others.
        if command in CORE_COMMANDS:
            parser = core_parser()
        else:
            parser, problems = build_parser(config_path=config_arg(argv))
        args = parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code == 2 and command not in CORE_COMMANDS:
            _explain_unknown_command(argv)
        raise
    except AsmError as exc:  # e.g. two plugins adding the same command
        if debug:
            raise
        sys.stderr.write(_error_line(exc.code, str(exc)))
        return 1
    for problem in problems:
        sys.stderr.write(f"asm: warning: {problem}\n")
    if getattr(args, "config", None):
        os.environ["ASM_CONFIG"] = args.config
    handler = getattr(args, "_handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        code = handler(args, CliContext(args))
        return 0 if code is None else int(code)
    except AsmError as exc:
        if debug:
            raise
        sys.stderr.write(_error_line(exc.code, str(exc)))
        return 1
    except Stopped as stop:
        sys.stderr.write(stop.line() + "\n")
        return stop.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("asm: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # e.g. a directory that cannot be created: no traceback for that
        if debug:
            raise
        sys.stderr.write(_error_line("os", str(exc)))
        return 1
    except Exception as exc:  # a bug in asm or a plugin: still one line, the traceback on request
        if debug:
            raise
        sys.stderr.write(
            _error_line("asm.error", f"internal error: {type(exc).__name__}: {exc} (a bug; --debug shows where)")
        )
        return 1


def _explain_unknown_command(argv: Sequence[str]) -> None:
    """After argparse refused a command: say when a config error kept plugin commands away."""
    from ..config import read_plugin_switches

    try:
        problem = read_plugin_switches(config_arg(argv)).problem
    except Exception:
        return
    if problem is not None:
        sys.stderr.write(_error_line(problem.code, f"plugin commands may be missing: {problem}"))
