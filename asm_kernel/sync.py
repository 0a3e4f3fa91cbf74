"""Blocking wrappers for scripts, notebooks and the CLI.

``SyncKernel`` runs a private event loop; do not use it from inside a running event loop
(use :class:`asm_kernel.Kernel` there).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from .config import Config
from .errors import StateError
from .kernel import Kernel
from .model import Event, Message, Run, RunResult, Session

__all__ = ["SyncKernel"]


class SyncKernel:
    """The kernel's main operations as plain blocking calls.

    >>> with SyncKernel() as asm:                              # doctest: +SKIP
    ...     print(asm.run_once("hello").output)
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | Config | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise StateError(
                "SyncKernel cannot be used inside a running event loop",
                hint="use `async with asm_kernel.Kernel.open()` in async code",
            )
        self._runner = asyncio.Runner()
        self.kernel = Kernel.open(config, **kwargs)
        try:
            self._runner.run(self.kernel.start())
        except BaseException:
            self._runner.close()
            raise

    def _call(self, coro: Any) -> Any:
        return self._runner.run(coro)

    def close(self) -> None:
        try:
            self._call(self.kernel.close())
        finally:
            self._runner.close()

    def __enter__(self) -> SyncKernel:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- operations -------------------------------------------------------------------------

    def create_session(self, **kwargs: Any) -> Session:
        return self._call(self.kernel.sessions.create(**kwargs))

    def get_session(self, session_id: str) -> Session:
        return self._call(self.kernel.sessions.get(session_id))

    def list_sessions(self, **filters: Any) -> list[Session]:
        return self._call(self.kernel.sessions.list(**filters))

    def pause(self, session_id: str, reason: str | None = None) -> Session:
        return self._call(self.kernel.sessions.pause(session_id, reason))

    def resume(self, session_id: str) -> Session:
        return self._call(self.kernel.sessions.resume(session_id))

    def complete(self, session_id: str) -> Session:
        return self._call(self.kernel.sessions.complete(session_id))

    def run(self, session_id: str, input: Any, **options: Any) -> RunResult:
        return self._call(self.kernel.sessions.run(session_id, input, **options))

    def run_once(self, input: Any, **options: Any) -> RunResult:
        return self._call(self.kernel.sessions.run_once(input, **options))

    def get_run(self, run_id: str) -> Run:
        return self._call(self.kernel.sessions.get_run(run_id))

    def events(self, session_id: str, **filters: Any) -> list[Event]:
        return self._call(self.kernel.sessions.events(session_id, **filters))

    def transcript(self, session_id: str) -> list[Message]:
        return self._call(self.kernel.sessions.transcript(session_id))

    def compact(self, session_id: str, **options: Any) -> Event | None:
        """Summarize the session's oldest turns now (see ``kernel.sessions.compact``)."""
        return self._call(self.kernel.sessions.compact(session_id, **options))

    def fork(self, session_id: str, **options: Any) -> Session:
        """A new session with this one's transcript up to ``at`` (see ``kernel.sessions.fork``)."""
        return self._call(self.kernel.sessions.fork(session_id, **options))

    def pin(self, session_id: str, seq: int, *, pinned: bool = True) -> Event:
        return self._call(self.kernel.sessions.pin(session_id, seq, pinned=pinned))

    def runs(self, session_id: str, **filters: Any) -> Sequence[Run]:
        return self._call(self.kernel.sessions.runs(session_id, **filters))

    def execute_run(self, session_id: str, input: Any, **options: Any) -> RunResult:
        """Queue a run through the runtime (FIFO with the session's other runs) and wait for it."""
        return self._call(self.kernel.runtime.execute_run(session_id, input, **options))

    def recover(self) -> Any:
        """Start the runtime: close crashed runs and resume pending ones (a RecoveryReport)."""
        return self._call(self.kernel.runtime.start())

    def pending_approvals(self, session_id: str | None = None) -> list[Any]:
        """The open approval requests (see ``kernel.approvals.pending``)."""
        return self._call(self.kernel.approvals.pending(session_id=session_id))

    def approve(self, run_id: str, tool_use_id: str | None = None, *, by: str, reason: str | None = None) -> Run:
        return self._call(self.kernel.approvals.approve(run_id, tool_use_id, by=by, reason=reason))

    def deny(self, run_id: str, tool_use_id: str | None = None, *, by: str, reason: str | None = None) -> Run:
        return self._call(self.kernel.approvals.deny(run_id, tool_use_id, by=by, reason=reason))

    def execute(self, run_id: str, **options: Any) -> RunResult:
        """Execute a pending run (a queued one, or one decided after waiting for approval)."""
        return self._call(self.kernel.sessions.execute(run_id, **options))

    def cost(self, **kwargs: Any) -> Any:
        """A cost report (see ``kernel.cost``)."""
        return self._call(self.kernel.cost(**kwargs))

