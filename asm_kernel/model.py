"""asm's data model: immutable attrs records.

Sessions, runs and events live here; the provider-facing vocabulary (messages, blocks, usage,
requests, stream events) in :mod:`asm_kernel.content`, re-exported from this module.

Records are ``@frozen``; change one with :func:`attrs.evolve`. Lifecycle changes go through
:meth:`Session.transition` / :meth:`Run.transition`, which refuse illegal moves with
:class:`~asm_kernel.errors.IllegalTransitionError`.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from attrs import Factory, evolve, field, frozen

from .content import (
    Capability,
    ContentBlock,
    ImageBlock,
    Message,
    MessageDone,
    ModelInfo,
    Price,
    ProviderRequest,
    RedactedThinkingBlock,
    StreamEvent,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    Usage,
    UsageUpdate,
)
from .errors import IllegalTransitionError, ValidationError

__all__ = [
    "SessionStatus",
    "RunStatus",
    "Session",
    "Run",
    "Event",
    "Fence",
    "TextBlock",
    "ImageBlock",
    "ToolUseBlock",
    "ToolResultBlock",
    "ThinkingBlock",
    "RedactedThinkingBlock",
    "ContentBlock",
    "Message",
    "Usage",
    "Price",
    "ModelInfo",
    "Capability",
    "ToolSpec",
    "ProviderRequest",
    "TextDelta",
    "ThinkingDelta",
    "UsageUpdate",
    "MessageDone",
    "StreamEvent",
    "RunResult",
    "ApprovalRequest",
    "new_id",
    "utcnow",
]


def new_id(prefix: str = "") -> str:
    """A sortable-enough unique id; the prefix tells what it names in logs."""
    return f"{prefix}{uuid.uuid4().hex}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    """Times are aware and in UTC everywhere; a naive time is taken to be UTC already."""
    if not isinstance(value, datetime):
        raise ValidationError(f"expected a datetime, got {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _freeze_mapping(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value or {})


# Typed converters: attrs' mypy plugin cannot infer element types through a bare `tuple`.
def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


# -- lifecycles -------------------------------------------------------------------------------


class SessionStatus(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _SESSION_TERMINAL


_SESSION_TERMINAL = frozenset({SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED})
SESSION_TRANSITIONS: Mapping[SessionStatus, frozenset[SessionStatus]] = {
    SessionStatus.PENDING: frozenset({SessionStatus.ACTIVE, SessionStatus.FAILED, SessionStatus.CANCELLED}),
    SessionStatus.ACTIVE: frozenset(
        {
            SessionStatus.PAUSED,
            SessionStatus.COMPLETED,
            SessionStatus.FAILED,
            SessionStatus.CANCELLED,
        }
    ),
    SessionStatus.PAUSED: frozenset(
        {SessionStatus.ACTIVE, SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED}
    ),
    SessionStatus.COMPLETED: frozenset(),
    SessionStatus.FAILED: frozenset(),
    SessionStatus.CANCELLED: frozenset(),
}


class RunStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    #: The run needs a person's decision (a tool call, a budget): it left execution, holds no
    #: lease, and is queued again (``pending``) once every request is decided.
    AWAITING_APPROVAL = "awaiting_approval"

    @property
    def terminal(self) -> bool:
        return self not in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL)


RUN_TRANSITIONS: Mapping[RunStatus, frozenset[RunStatus]] = {
    # A run can end before it starts: cancelled in its queue, failed (its route could not be
    # planned) or timed out (its deadline passed while it was being prepared).
    RunStatus.PENDING: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.TIMED_OUT}),
    RunStatus.RUNNING: frozenset(
        {
            RunStatus.COMPLETED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
            RunStatus.TIMED_OUT,
            RunStatus.AWAITING_APPROVAL,
        }
    ),
    # Decided: queued again, to continue from its log. Cancelled (or failed) while it waits.
    RunStatus.AWAITING_APPROVAL: frozenset({RunStatus.PENDING, RunStatus.CANCELLED, RunStatus.FAILED}),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
    RunStatus.TIMED_OUT: frozenset(),
}


def _check_transition(kind: str, ident: str, table: Mapping[Any, frozenset[Any]], old: Any, new: Any) -> None:
    if new not in table[old]:
        allowed = ", ".join(sorted(s.value for s in table[old])) or "none (it is final)"
        raise IllegalTransitionError(
            f"{kind} {ident} cannot go from {old.value!r} to {new.value!r}",
            hint=f"allowed from {old.value!r}: {allowed}",
            kind=kind,
            id=ident,
            from_status=old.value,
            to_status=new.value,
        )


# -- sessions, runs, events -------------------------------------------------------------------


@frozen
class Session:
    id: str = field(factory=lambda: new_id("ses_"))
    agent_id: str = "default"
    status: SessionStatus = field(default=SessionStatus.PENDING, converter=SessionStatus)
    metadata: dict[str, Any] = field(factory=dict, converter=_freeze_mapping)
    tags: tuple[str, ...] = field(default=(), converter=_strings)
    created_at: datetime = field(factory=utcnow, converter=_utc)
    #: Defaults to ``created_at``: a new session was last changed when it was made.
    updated_at: datetime = field(default=Factory(lambda self: self.created_at, takes_self=True), converter=_utc)

    def transition(self, to: SessionStatus) -> Session:
        """The same session in status ``to``; raises if the lifecycle forbids the move."""
        to = SessionStatus(to)
        _check_transition("session", self.id, SESSION_TRANSITIONS, self.status, to)
        return evolve(self, status=to, updated_at=utcnow())


@frozen
class Run:
    session_id: str
    id: str = field(factory=lambda: new_id("run_"))
    status: RunStatus = field(default=RunStatus.PENDING, converter=RunStatus)
    input: Message | None = None
    output: Message | None = None
    usage: Usage = field(factory=Usage)
    cost: float | None = None
    provider: str | None = None
    model: str | None = None
    stop_reason: str | None = None
    error: dict[str, Any] | None = None
    idempotency_key: str | None = None
    metadata: dict[str, Any] = field(factory=dict, converter=_freeze_mapping)
    created_at: datetime = field(factory=utcnow, converter=_utc)
    started_at: datetime | None = field(default=None, converter=_utc_or_none)
    finished_at: datetime | None = field(default=None, converter=_utc_or_none)
    #: The worker (a kernel process, ``runtime.worker_id``) that executes or executed the run.
    owner: str | None = None
    #: Fencing token of the run's lease: incremented by every grant, so a write carrying an
    #: older token comes from a worker whose lease was taken over, and is refused.
    lease_token: int = 0
    #: When the lease ends unless renewed (the store's clock); None when no lease is held.
    lease_expires_at: datetime | None = field(default=None, converter=_utc_or_none)

    @property
    def lease(self) -> Fence | None:
        """The fence a writer holding this run's lease presents, if a lease was ever granted."""
        return Fence(self.id, self.lease_token) if self.lease_token else None

    def transition(self, to: RunStatus, **changes: Any) -> Run:
        to = RunStatus(to)
        _check_transition("run", self.id, RUN_TRANSITIONS, self.status, to)
        now = utcnow()
        if to is RunStatus.RUNNING:
            changes.setdefault("started_at", now)
        elif to.terminal:
            changes.setdefault("finished_at", now)
        return evolve(self, status=to, **changes)


@frozen
class Fence:
    """Proof that a writer holds a run's lease: the run and the token it was granted.

    A store that enforces leases refuses a write carrying a token that is no longer the run's
    current one (:class:`~asm_kernel.errors.LeaseLostError`).
    """

    run_id: str
    token: int


@frozen
class Event:
    """One entry of a session's append-only log.

    ``id`` is chosen by the writer so a retried append is recognised; ``seq`` is assigned by the
    store (gapless per session, from 1) and is 0 until the event is stored.
    """

    session_id: str
    type: str
    payload: dict[str, Any] = field(factory=dict)
    run_id: str | None = None
    id: str = field(factory=lambda: new_id("evt_"))
    seq: int = 0
    timestamp: datetime = field(factory=utcnow, converter=_utc)
    schema_version: int = 1

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.payload, dict):
            raise ValidationError(
                f"event payload must be a JSON object, got {type(self.payload).__name__}",
                path="payload",
                hint="wrap the value in a dict",
            )


@frozen
class ApprovalRequest:
    """A decision a run waits for: a tool call, or a budget limit it reached.

    Stored with the run (its record's ``metadata["asm.approvals"]``) and in its log
    (``approval_requested``, then ``approval_granted`` or ``approval_denied``).
    """

    id: str
    run_id: str
    session_id: str
    #: ``tool``, ``budget``, ``cost`` or a plugin's own kind.
    kind: str
    #: What a grant covers: ``tool:<tool_use_id>``, ``budget:<policy>:<limit>``, ...
    key: str
    policy: str = ""
    reason: str = ""
    tool_use_id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    requested_at: datetime = field(factory=utcnow, converter=_utc)
    expires_at: datetime | None = field(default=None, converter=_utc_or_none)
    #: ``requested``, ``granted`` or ``denied``.
    status: str = "requested"
    decided_by: str | None = None
    decided_at: datetime | None = field(default=None, converter=_utc_or_none)
    decision_reason: str | None = None


@frozen
class RunResult:
    """What a finished run produced; ``output`` is the answer text.

    A run that waits for a person ends its execution with status ``awaiting_approval`` and its
    open requests in ``approvals``; it is not finished: once decided it is queued again.
    """

    session_id: str
    run_id: str
    status: RunStatus
    output: str
    message: Message | None = None
    usage: Usage = field(factory=Usage)
    cost: float | None = None
    provider: str | None = None
    model: str | None = None
    stop_reason: str | None = None
    error: dict[str, Any] | None = None
    pending_tool_calls: tuple[ToolUseBlock, ...] = ()
    approvals: tuple[ApprovalRequest, ...] = ()
