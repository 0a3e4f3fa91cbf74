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
    Fence,
    Message,
    ModelInfo,
    ProviderRequest,
    Run,
    RunStatus,
    Session,
    SessionStatus,
    StreamEvent,
    ToolSpec,
)
from .writes import Committed, StoreCapabilities, WriteUnit

if TYPE_CHECKING:
    from pathlib import Path

    from .context.tokens import TokenEstimator
    from .routing import Negotiation, RouteContext

__all__ = [
    "Store",
    "Provider",
    "TokenCounting",
    "TokenEstimating",
    "Router",
    "Policy",
    "TelemetrySink",
    "Tool",
    "ToolSource",
    "ComponentContext",
]


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
    """Sessions, runs and the per-session event log (store contract v2).

    Contract (checked by ``asm_kernel.testing.StoreConformance``, fault injection included):

    * **one atomic write unit**: :meth:`commit` writes a :class:`~asm_kernel.writes.WriteUnit` —
      events plus the session and run records they imply — in one transaction, after checking
      its conditions; a unit whose condition fails stores nothing and raises a typed error;
    * ``seq`` is assigned gapless per session from 1, in the transaction of the insert, and is
      never reused once acknowledged;
    * a unit (or an ``append``) whose every event id is already stored returns the stored events
      (their original seqs) and writes nothing; a malformed event or record fails its own call
      with a :class:`~asm_kernel.errors.ValidationError` and never anyone else's;
    * ``expected_seq`` not equal to the session's last seq raises
      :class:`~asm_kernel.errors.SeqConflictError`;
    * **run leases**: a :class:`~asm_kernel.writes.RunWrite` with ``lease_ttl`` grants or renews a
      lease judged by the store's clock; a write carrying a :class:`~asm_kernel.model.Fence` whose
      token is not the run's current one raises :class:`~asm_kernel.errors.LeaseLostError`;
      ``list_runs(lease_expired=True)`` finds running runs whose owner stopped renewing;
    * an acknowledged write survives a crash of the process, unless the store's documented
      durability mode says otherwise for stream deltas;
    * the store declares what it is in :attr:`capabilities`;
    * a unit's ``no_live_runs`` counts ``pending``, ``running`` and ``awaiting_approval`` runs.

    Optional: a store whose ``capabilities.sql`` is true may implement
    ``async cost_rows(*, since, until, by) -> list[dict]`` (see :mod:`asm_kernel.cost`); every
    other store is answered by the kernel's streamed fallback over ``token_usage_updated``.
    """

    @property
    def capabilities(self) -> StoreCapabilities: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def commit(self, unit: WriteUnit) -> Committed:
        """Write ``unit`` atomically (see :mod:`asm_kernel.writes`)."""

    async def append(
        self,
        session_id: str,
        events: Sequence[Event],
        *,
        expected_seq: int | None = None,
        fence: Fence | None = None,
        durable: bool = True,
    ) -> list[Event]:
        """Events only: ``commit(WriteUnit(session_id, events, expected_seq=..., fence=..., durable=...))``."""

    async def get_session(self, session_id: str) -> Session: ...

    async def list_sessions(
        self,
        *,
        status: SessionStatus | None = None,
        agent_id: str | None = None,
        tag: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Session]:
        """Newest first (``created_at`` then id, descending)."""

    async def get_run(self, run_id: str) -> Run: ...

    async def list_runs(
        self,
        *,
        session_id: str | None = None,
        status: RunStatus | None = None,
        lease_expired: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Run]:
        """Oldest first (``created_at`` then id). ``lease_expired=True`` keeps runs whose lease
        has expired by the store's clock or was never granted; False those holding a live one."""

    async def find_run_by_idempotency_key(self, session_id: str, key: str) -> Run | None: ...

    async def claim_runs(
        self, owner: str, *, limit: int, lease_ttl: float, max_running_per_session: int = 1
    ) -> list[Run]:
        """Take up to ``limit`` queued runs for worker ``owner`` to execute (the shared run queue).

        A run is claimable when it is ``pending``, its session is ``pending`` or ``active``, it is
        among the oldest pending runs of its session (per-session FIFO) and the session has fewer
        than ``max_running_per_session`` running, claimed or ``awaiting_approval`` runs (a run
        waiting for a person holds its session's place), and no live claim holds it.
        Each claimed run gets ``owner`` and a new lease (token + 1, expiry = store clock +
        ``lease_ttl``) while still ``pending``; the worker then starts it with a unit conditional
        on that token. Two concurrent claims never return the same run. Oldest first.
        """

    async def renew_leases(self, fences: Sequence[Fence], ttl: float) -> list[str]:
        """Extend each lease whose token is current and whose run is running to now + ``ttl``
        (store clock); returns the ids of the runs whose lease was lost (all others renewed)."""

    async def read(
        self,
        session_id: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        types: Sequence[str] | None = None,
        run_id: str | None = None,
    ) -> list[Event]:
        """Events with ``after < seq < before`` in seq order, optionally of ``types`` / ``run_id``."""

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

    Optional, for context windows (see docs/guides/context.md): ``count_tokens`` (the
    :class:`TokenCounting` protocol), asked when the estimate says a window does not fit, and
    ``token_estimator`` (:class:`TokenEstimating`), the estimator for the provider's models.
    A provider that reports a prompt over the model's window raises
    :class:`~asm_kernel.errors.ContextLengthError` (``provider_kit.context_length`` reads the
    usual wordings), which the kernel answers with one compaction and one retry.
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


@runtime_checkable
class TokenCounting(Protocol):
    """An optional provider capability: the exact input tokens of a request, without running it.

    The kernel asks it (with ``[context] exact_count``, the default) only when its estimate says
    the transcript does not fit the window, so a call costs nothing in the common case. It must
    count the request exactly as :meth:`Provider.stream` would send it; errors are the provider's
    usual typed errors, and the kernel falls back to its estimate on any of them. ``asm-anthropic``
    implements it with ``POST /v1/messages/count_tokens``.
    """

    async def count_tokens(self, request: ProviderRequest) -> int: ...


@runtime_checkable
class TokenEstimating(Protocol):
    """An optional provider capability: the estimator the kernel uses for ``model`` before a
    request's size is known (a :class:`~asm_kernel.context.tokens.TokenEstimator` that errs high
    for the provider's tokenizer). Without it the kernel's default estimator applies."""

    def token_estimator(self, model: str) -> TokenEstimator: ...


class Router(Protocol):
    """Orders the candidate providers for a run (first is tried first).

    ``candidates`` are the :class:`~asm_kernel.routing.Negotiation` records of the providers that
    can serve the run (outcome ``full`` or ``degraded``); ``context`` is a
    :class:`~asm_kernel.routing.RouteContext` (session, run, requires, prefers, last_provider).
    Return provider names, a subset of the candidates, in the order to try them.
    """

    def select(self, candidates: Sequence[Negotiation], context: RouteContext) -> list[str]: ...


class Policy(Protocol):
    """Checks a run before it starts and the usage as it accrues; raises PolicyError to stop.

    ``check_run`` gets the transcript the run starts from (``history``, the messages as the
    model will see them), after the run's start is stored.

    A policy may also implement the governance methods, which the kernel calls when present
    (see :mod:`asm_kernel.policy`): ``async reserve(request: SpendRequest) -> Decision | None``
    before each step that spends, ``async settle(request, actual: Spend)`` once for every
    reservation it answered ``allow``/``warn``, and ``async review_tool(request: ToolRequest) ->
    Decision | None`` before each kernel tool call. ``name`` (optional) labels its decisions.
    ``asm_kernel.testing.PolicyConformance`` checks the contract.
    """

    async def check_run(self, *, session: Session, run: Run, history: Sequence[Message]) -> None: ...

    async def check_usage(self, *, session: Session, run: Run) -> None: ...

    async def check_tool(self, *, session: Session, run: Run, name: str, input: dict[str, Any]) -> None: ...


class TelemetrySink(Protocol):
    """Receives every persisted event (after it is stored)."""

    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...


class Tool(Protocol):
    """A function the model may call.

    Optional attributes the kernel reads: ``source`` (str: who serves the tool, recorded on its
    events: ``function:module.name``, ``mcp:server``, a plugin) and ``timeout`` (seconds one call
    may take; default ``tool_calls.timeout``). ``__call__`` returns a string (or content blocks);
    anything else is turned into text. An :class:`~asm_kernel.errors.AsmError` it raises is given
    to the model as an error result with its message, any other exception as well, and recorded
    as ``error_occurred``.
    """

    @property
    def spec(self) -> ToolSpec: ...

    async def __call__(self, input: dict[str, Any]) -> Any: ...


@runtime_checkable
class ToolSource(Protocol):
    """A component that provides several tools (an MCP server), listed when the kernel starts.

    The kernel calls :meth:`open` when it starts, offers every tool :meth:`list_tools` returns
    (each a :class:`Tool`), and calls :meth:`aclose` when it stops. A failure to open or list
    should raise :class:`~asm_kernel.errors.ToolSourceError` naming the source; any other
    exception is wrapped in one. ``name`` labels the source in errors and events.
    """

    name: str

    async def open(self) -> None: ...

    async def list_tools(self) -> Sequence[Tool]: ...

    async def aclose(self) -> None: ...
