"""``asm serve``: the long-running process that owns the store and serves it over HTTP."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

__all__ = ["cmd_serve"]


def cmd_serve(args: argparse.Namespace, ctx: Any) -> int:
    from asm_kernel import Kernel

    from .server import AsmServer
    from .settings import load_settings

    config = ctx.config()
    settings = load_settings(config.serve, host=args.host, port=args.port)
    # Not a short-lived kernel: this process holds the store (a DuckDB file) for as long as it runs.
    server = AsmServer(Kernel(config), settings, install_signals=True)
    try:
        asyncio.run(server.serve())
    except KeyboardInterrupt:  # a Ctrl-C before the signal handlers were installed
        return 130
    ctx.error("asm: serve stopped")
    return 0
