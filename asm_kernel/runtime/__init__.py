"""The runtime: per-session run queues, global limits, cancellation, subscriptions, recovery.

Use it through ``kernel.runtime`` (a :class:`Supervisor`); see docs/guides/serving.md.
"""

from __future__ import annotations

from ..recovery import RecoveryReport, RepairReport
from .limiter import ConcurrencyLimiter
from .server import RunHandle, ServerStatus, SessionServer
from .supervisor import Supervisor

__all__ = [
    "ConcurrencyLimiter",
    "RunHandle",
    "ServerStatus",
    "SessionServer",
    "Supervisor",
    "RecoveryReport",
    "RepairReport",
]
