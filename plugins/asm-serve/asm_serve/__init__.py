"""asm-serve: ``asm serve``, an HTTP API over an asm kernel, resumable SSE event streams and a
live session inspector in the browser.

Use it from the shell (``asm serve``), or embed it::

    from asm_kernel import Kernel
    from asm_serve import AsmServer, load_settings

    kernel = Kernel.open()
    await AsmServer(kernel, load_settings(kernel.config.serve)).serve()

``create_app(ServeState(kernel, settings))`` gives the bare ASGI app to mount elsewhere (the
caller then starts and closes the kernel). See docs/guides/serve.md.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "AsmServer", "ServeSettings", "ServeState", "create_app", "load_settings"]


def __getattr__(name: str) -> object:
    # The web stack is imported on first use, not by the plugin's entry point (asm --help).
    if name == "AsmServer":
        from .server import AsmServer

        return AsmServer
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ServeState":
        from .state import ServeState

        return ServeState
    if name in ("ServeSettings", "load_settings"):
        from . import settings

        return getattr(settings, name)
    raise AttributeError(name)
