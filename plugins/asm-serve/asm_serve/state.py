"""What every request handler shares: the kernel, the settings, auth, event hubs, metrics."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .auth import Authenticator
from .hub import Hubs
from .metrics import Metrics
from .seams import approvals_of

if TYPE_CHECKING:
    from asm_kernel.kernel import Kernel

    from .settings import ServeSettings

__all__ = ["ServeState"]


class ServeState:
    """One server's shared state. ``accepting`` goes False when shutdown begins."""

    def __init__(self, kernel: Kernel, settings: ServeSettings, *, poll: float = 1.0) -> None:
        self.kernel = kernel
        self.settings = settings
        self.auth = Authenticator(settings.keys)
        self.hubs = Hubs(kernel, capacity=settings.sse_buffer, max_streams=settings.max_streams, poll=poll)
        self.metrics = Metrics()
        self.accepting = True
        self.started = time.monotonic()
        #: A random id of this server run, in its discovery file and /v1/health: a client can tell
        #: the server that wrote the file from another that took the port later.
        self.instance = ""

    @property
    def features(self) -> dict[str, bool]:
        return {"approvals": approvals_of(self.kernel) is not None, "auth": self.auth.required}

    def __repr__(self) -> str:
        return f"ServeState(kernel={self.kernel!r}, accepting={self.accepting})"
