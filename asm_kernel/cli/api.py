"""What plugins add commands with (:class:`CommandRegistry`) and what handlers get (:class:`CliContext`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from attrs import evolve

from ..secrets import redact_text

if TYPE_CHECKING:
    from ..config import Config
    from ..kernel import Kernel
    from .remote import Remote

__all__ = ["Handler", "CommandRegistry", "CliContext", "add_common", "add_json", "printable"]

Handler = Callable[[argparse.Namespace, "CliContext"], int | None]


def printable(text: str, stream: TextIO) -> str:
    """``text`` as ``stream`` can encode it: lone surrogates and the like become escapes."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:
        return text.encode("ascii", "backslashreplace").decode("ascii")


def add_common(parser: argparse.ArgumentParser) -> None:
    """The options every command accepts, before or after its name."""
    parser.add_argument(
        "--config", "-c", default=argparse.SUPPRESS, help="config file (default: ./asm.toml or ASM_CONFIG)"
    )
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    parser.add_argument(
        "--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help="also log asm's debug messages"
    )
    parser.add_argument(
        "--quiet", "-q", action="store_true", default=argparse.SUPPRESS, help="log only warnings and errors"
    )


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


class CommandRegistry:
    """Handed to ``asm_register_commands``: plugins add subcommands through it.

    ``cli.add("name", handler, help="...", configure=lambda parser: parser.add_argument(...))``;
    ``handler(args, ctx)`` returns an exit code (None means 0). ``ctx`` is a
    :class:`CliContext` with ``config()``, ``kernel()``, ``line()`` and ``json_out()``.
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
        """Add the command ``name``; a name another plugin already added is refused."""
        if name in self.names:
            from ..errors import DuplicateComponentError

            raise DuplicateComponentError(
                f"command {name!r} is added by both {self.names[name]!r} and {self.plugin!r}",
                hint="disable one of the plugins",
            )
        self.names[name] = self.plugin
        parser = self._subparsers.add_parser(name, help=help, description=help)
        add_common(parser)
        if configure is not None:
            configure(parser)
        parser.set_defaults(_handler=handler)
        return parser


class CliContext:
    """What a command handler gets: config access, a kernel factory and output helpers.

    Everything written through :meth:`line`, :meth:`json_out` and :meth:`error` has every
    registered secret redacted and is made encodable for the stream.
    """

    def __init__(self, args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.args = args
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._config: Config | None = None
        self._remote: Remote | bool | None = False  # False: not looked for yet

    def config(self) -> Config:
        """The validated config (``--config``, else discovered), loaded once per command."""
        if self._config is None:
            from ..config import load_config

            self._config = load_config(getattr(self.args, "config", None))
        return self._config

    def kernel(self, config: Config | None = None, *, store_only: bool = False) -> Kernel:
        """An unstarted Kernel for a short-lived command (factories are told so).

        ``store_only`` leaves out every configured provider, router, policy, telemetry sink and
        tool, for commands that only read the store: a provider whose ``${KEY}`` is not exported
        does not stop ``asm sessions list``.
        """
        from ..kernel import Kernel

        cfg = config if config is not None else self.config()
        if store_only:
            cfg = evolve(
                cfg,
                providers=(),
                router=None,
                policies=(),
                telemetry=(),
                tools=(),
                run=evolve(cfg.run, provider=None, requires=(), prefers=()),
            )
        return Kernel(cfg, short_lived=True)

    def remote(self) -> Remote | None:
        """The ``asm serve`` that owns the store (``ASM_URL``, or the server file next to the
        store file), or None: then open the store directly. Looked up once per command.

        Commands that read or run sessions use it to talk HTTP instead of opening a store file
        another process holds (see :mod:`asm_kernel.cli.remote`).
        """
        if self._remote is False:
            from .remote import find_server

            self._remote = find_server(self)
        return self._remote  # type: ignore[return-value]

    def _write(self, stream: TextIO, text: str) -> None:
        stream.write(printable(redact_text(text), stream))
        stream.flush()

    def json_out(self, data: Any) -> None:
        """One JSON document on one line of stdout."""
        from ..serialization import dumps

        self._write(self.out, dumps(data) + "\n")

    def line(self, text: str = "") -> None:
        """One line of stdout."""
        self._write(self.out, text + "\n")

    def error(self, text: str) -> None:
        """One line of stderr."""
        self._write(self.err, text + "\n")
