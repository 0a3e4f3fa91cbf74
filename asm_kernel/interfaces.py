"""The protocols components implement. Plugins need not inherit from them; duck typing is enough.

Each component is built by a *factory* registered through an ``asm_register_*`` hook. The kernel
calls ``factory(settings, context)`` where ``settings`` is the component's validated config and
``context`` a :class:`ComponentContext`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .model import (
    Event,
    ModelInfo,
    ProviderRequest,
    Run,
    RunStatus,
    Session,
    SessionStatus,
    StreamEvent,
    ToolSpec,
)

if TYPE_CHECKING:
    from pathlib import Path

    from .routing import Negotiation, RouteContext

__all__ = ["Store", "Provider", "Router", "Policy", "TelemetrySink", "Tool", "ComponentContext"]


class ComponentContext(Protocol):
    """What a factory may know about the system it is built into."""

    @property
    def name(self) -> str:
        """The component's configured name (``providers[].name``)."""

    @property
    def path(self) -> str:
        """Where the component's table is in the config (``providers[1]``), for error paths."""

    @property
    def home(self) -> Path:
        """The asm home directory (``ASM_HOME``) for files a component owns."""

    @property
    def config_dir(self) -> Path:
        """Directory of the config file; relative paths in settings resolve against it."""


@runtime_checkable
class Store(Protocol):
    """Sessions, runs and the per-session event log.

    Contract (checked by ``asm_kernel.testing.StoreConformance``):

    * ``append`` assigns ``seq`` gapless per session from 1, atomically with the insert;
      a batch is all-or-nothing.
    * appending an event whose ``id`` is already stored returns the stored event (its original
      seq) instead of storing it again.
    * ``expected_seq`` given and not equal to the session's last seq raises
      :class:`~asm_kernel.errors.SeqConflictError` and stores nothing.
    * an acknowledged append (the awaitable returned) survives a crash of the process, unless
      the store's documented durability mode says otherwise for stream deltas.
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create_session(self, session: Session) -> Session: ...

    async def get_session(self, session_id: str) -> Session: ...

    async def update_session(self, session: Session) -> Session: ...

    async def list_sessions(
        self,
        *,
        status: SessionStatus | None = None,
        agent_id: str | None = None,
        tag: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Session]: ...

    async def create_run(self, run: Run) -> Run: ...

    async def get_run(self, run_id: str) -> Run: ...

    async def update_run(self, run: Run) -> Run: ...

    async def list_runs(
        self,
        *,
        session_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Run]: ...

    async def find_run_by_idempotency_key(self, session_id: str, key: str) -> Run | None: ...

    async def append(
        self, session_id: str, events: Sequence[Event], *, expected_seq: int | None = None
    ) -> list[Event]: ...

    async def read(
        self,
        session_id: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        types: Sequence[str] | None = None,
    ) -> list[Event]: ...

    async def last(self, session_id: str, n: int) -> list[Event]: ...

    async def last_seq(self, session_id: str) -> int: ...

    async def wait(self, session_id: str, *, after: int, timeout: float) -> list[Event]:
        """Events after ``after``; if none yet, wait up to ``timeout`` seconds for some."""


@runtime_checkable
class Provider(Protocol):
    """A model provider behind asm's normalized stream.

    ``stream`` yields :class:`TextDelta`, :class:`ThinkingDelta`, :class:`UsageUpdate` and ends
    with exactly one :class:`MessageDone`, or raises a
    :class:`~asm_kernel.errors.ProviderError`. It must not retry: the kernel owns retries.
    """

    name: str

    @property
    def capabilities(self) -> frozenset[str]: ...

    @property
    def models(self) -> Sequence[ModelInfo]: ...

    @property
    def default_model(self) -> str: ...

    def stream(self, request: ProviderRequest) -> AsyncIterator[StreamEvent]: ...

    async def aclose(self) -> None: ...


class Router(Protocol):
    """Orders the candidate providers for a run (first is tried first).

    ``candidates`` are the :class:`~asm_kernel.routing.Negotiation` records of the providers that
    can serve the run (outcome ``full`` or ``degraded``); ``context`` is a
    :class:`~asm_kernel.routing.RouteContext` (session, run, requires, prefers, last_provider).
    Return provider names, a subset of the candidates, in the order to try them.
    """

    def select(self, candidates: Sequence[Negotiation], context: RouteContext) -> list[str]: ...


class Policy(Protocol):
    """Checks a run before it starts and the usage as it accrues; raises PolicyError to stop."""

    async def check_run(self, *, session: Session, run: Run, history: Sequence[Event]) -> None: ...

    async def check_usage(self, *, session: Session, run: Run) -> None: ...

    async def check_tool(self, *, session: Session, run: Run, name: str, input: dict[str, Any]) -> None: ...


class TelemetrySink(Protocol):
    """Receives every persisted event (after it is stored)."""

    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...


class Tool(Protocol):
    """A function the model may call."""

    @property
    def spec(self) -> ToolSpec: ...

    async def __call__(self, input: dict[str, Any]) -> Any: ...
