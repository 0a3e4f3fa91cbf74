"""Entry point of the ``asm-serve`` plugin: adds the ``asm serve`` command.

Thin on purpose: starlette and uvicorn are imported when the command runs, so ``asm --help``
stays fast.
"""

from __future__ import annotations

import argparse
from typing import Any

import asm_kernel


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, got {value}")
    return value


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default serve.host, 127.0.0.1)")
    parser.add_argument("--port", type=_port, help="port to listen on (default serve.port, 8765; 0 picks one)")


@asm_kernel.hookimpl
def asm_register_commands(cli: Any) -> None:
    from .command import cmd_serve

    cli.add(
        "serve",
        cmd_serve,
        help="run the kernel behind an HTTP API with live event streams and a session inspector",
        configure=_configure,
    )
