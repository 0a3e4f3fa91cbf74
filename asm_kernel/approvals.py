"""Approvals: a run that needs a person leaves execution, survives any restart, and continues.

When a policy answers ``approve`` (a tool call matching the approval policy, a budget whose
action is ``approve``), the stage raises :class:`ApprovalRequired`. The run's driver then writes
one unit instead of a terminal one: the run record moves ``running -> awaiting_approval`` with
its open requests (``metadata["asm.approvals"]``) and its lease released, together with one
``approval_requested`` event per request. Nothing about the run is left in the process: recovery
never touches it (it holds no lease and is not running), and it waits as long as it must.

A decision (:class:`Approvals`, reached as ``kernel.approvals``; ``asm approve`` from the shell)
is one unit too, conditional on the run still waiting with the token it was read with: it
stores ``approval_granted`` or ``approval_denied`` with who decided, and when no request is left
open it queues the run again (``awaiting_approval -> pending``): whoever executes runs — this
process's runtime, any ``asm worker`` — continues it from its log (:mod:`asm_kernel.resume`):
granted tool calls run, denied ones give the model an error result. A denied budget or cost
approval ends the run ``failed`` (:class:`~asm_kernel.errors.ApprovalDeniedError`) in the same
unit. A request not decided before its ``expires_at`` is denied by ``asm.timeout``
(:meth:`Approvals.expire`, which the runtime calls when it starts and every
``runtime.lease_ttl`` seconds).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from attrs import evolve

from .errors import ApprovalDeniedError, NotFoundError, StateError, ValidationError, WriteConflictError
from .events import EventType
from .model import ApprovalRequest, Run, RunStatus, ToolUseBlock, new_id, utcnow
from .writes import RunWrite, WriteUnit

if TYPE_CHECKING:
    from .kernel import Kernel
    from .pipeline.state import RunState
    from .policy import Decision

__all__ = [
    "ApprovalRequired",
    "Approvals",
    "approvals_of",
    "pause_unit",
    "tool_request",
    "APPROVALS_KEY",
    "RESUME_KEY",
    "REQUESTED_KEY",
    "TIMEOUT_DECIDER",
]

log = logging.getLogger("asm.approvals")

#: Run metadata: every approval request of the run, with its decision once there is one.
APPROVALS_KEY = "asm.approvals"
#: Run metadata: how many times the run was queued again after a decision.
RESUME_KEY = "asm.resumes"
#: Run metadata: the provider and model the caller asked for (the record shows who answered).
REQUESTED_KEY = "asm.requested"
#: Who denies a request nobody decided in time.
TIMEOUT_DECIDER = "asm.timeout"
_PAGE = 500


class ApprovalRequired(Exception):
    """Raised by a stage when the run must wait for a person; the driver stores the requests."""

    def __init__(self, requests: Sequence[ApprovalRequest]) -> None:
        super().__init__(f"{len(requests)} approval(s) required")
        self.requests = list(requests)

    @classmethod
    def of(cls, state: RunState, decisions: Sequence[Decision]) -> ApprovalRequired:
        """Requests for budget/cost decisions of a step (tool calls use :func:`tool_request`)."""
        return cls([_request(state, d, d.approval or f"{d.kind}:{d.policy}:{d.limit}") for d in decisions])


def _request(state: RunState, decision: Decision, key: str, call: ToolUseBlock | None = None) -> ApprovalRequest:
    now = utcnow()
    return ApprovalRequest(
        id=new_id("apr_"),
        run_id=state.run.id,
        session_id=state.session.id,
        kind="tool" if call is not None else decision.kind,
        key=key,
        policy=decision.policy,
        reason=decision.reason,
        tool_use_id=call.id if call is not None else None,
        name=call.name if call is not None else None,
        input=dict(call.input) if call is not None else None,
        requested_at=now,
        expires_at=now + timedelta(seconds=decision.timeout) if decision.timeout else None,
    )


def tool_request(state: RunState, call: ToolUseBlock, decision: Decision) -> ApprovalRequest:
    return _request(state, decision, decision.approval or f"tool:{call.id}", call)


def approvals_of(run: Run) -> list[ApprovalRequest]:
    """Every approval request of ``run`` (from its record), oldest first."""
    from .serialization import from_dict

    return [from_dict(item, ApprovalRequest) for item in run.metadata.get(APPROVALS_KEY, ())]


def _stored(requests: Sequence[ApprovalRequest]) -> list[dict[str, Any]]:
    from .serialization import to_dict

    return [to_dict(r) for r in requests]


def _requested_payload(request: ApprovalRequest) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "approval_id": request.id,
        "kind": request.kind,
        "key": request.key,
        "policy": request.policy,
        "reason": request.reason,
        "expires_at": request.expires_at.isoformat() if request.expires_at else None,
    }
    if request.tool_use_id is not None:
        payload.update(tool_use_id=request.tool_use_id, name=request.name, input=request.input or {})
    return payload


def pause_unit(state: RunState, requests: Sequence[ApprovalRequest]) -> tuple[Run, WriteUnit]:
    """The unit that moves the run to ``awaiting_approval`` with its requests, its lease released."""
    run = state.run
    metadata = {
        **run.metadata,
        APPROVALS_KEY: [*run.metadata.get(APPROVALS_KEY, ()), *_stored(requests)],
        REQUESTED_KEY: state.data.get(REQUESTED_KEY) or {"provider": state.requested_provider, "model": None},
    }
    final = run.transition(
        RunStatus.AWAITING_APPROVAL,
        output=state.last_message,
        usage=state.usage,
        cost=state.run_cost,
        model=state.model or run.model,
        provider=state.provider_name or run.provider,
        stop_reason="approval_required",
        lease_expires_at=None,
        metadata=metadata,
    )
    events = [state.event(EventType.APPROVAL_REQUESTED, _requested_payload(r)) for r in requests]
    write = RunWrite(final, expect_status=run.status, expect_token=run.lease_token)
    return final, WriteUnit(run.session_id, events, runs=[write])


class Approvals:
    """Deciding what runs wait for. Reached as ``kernel.approvals``."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel

    def __repr__(self) -> str:
        return "Approvals()"

    async def _waiting(self, session_id: str | None = None) -> list[Run]:
        found: list[Run] = []
        while True:
            page = await self._kernel.store.list_runs(
                session_id=session_id, status=RunStatus.AWAITING_APPROVAL, limit=_PAGE, offset=len(found)
            )
            found.extend(page)
            if len(page) < _PAGE:
                return found

    async def pending(self, *, session_id: str | None = None) -> list[ApprovalRequest]:
        """Every open request of every waiting run (of one session, if given), oldest first."""
        out = [r for run in await self._waiting(session_id) for r in approvals_of(run) if r.status == "requested"]
        return sorted(out, key=lambda r: (r.requested_at, r.id))

    async def approve(
        self, run_id: str, tool_use_id: str | None = None, *, by: str, reason: str | None = None
    ) -> Run:
        """Grant the run's open request for ``tool_use_id`` (or every open one); returns the run."""
        return await self.decide(run_id, tool_use_id, approve=True, by=by, reason=reason)

    async def deny(self, run_id: str, tool_use_id: str | None = None, *, by: str, reason: str | None = None) -> Run:
        """Deny the run's open request for ``tool_use_id`` (or every open one); returns the run."""
        return await self.decide(run_id, tool_use_id, approve=False, by=by, reason=reason)

    async def decide(
        self,
        run_id: str,
        tool_use_id: str | None = None,
        *,
        approve: bool,
        by: str,
        reason: str | None = None,
        now: datetime | None = None,
    ) -> Run:
        """Record a decision (see the module docstring); ``tool_use_id`` may also be an approval id.

        A request whose time ran out is denied by ``asm.timeout`` instead, and a
        :class:`~asm_kernel.errors.StateError` says so after that is stored.
        """
        if not isinstance(by, str) or not by.strip():
            raise ValidationError("say who decides: a non-empty `by`", path="by", hint="a user name or service id")
        if reason is not None and not isinstance(reason, str):
            raise ValidationError("reason must be a string", path="reason")
        for _attempt in range(8):
            run = await self._kernel.store.get_run(run_id)
            if run.status is not RunStatus.AWAITING_APPROVAL:
                raise StateError(
                    f"run {run_id} is {run.status.value}, not awaiting approval",
                    hint="`asm approvals` lists the runs that wait for a decision",
                    run_id=run_id,
                )
            requests = approvals_of(run)
            open_ = [r for r in requests if r.status == "requested"]
            targets = [r for r in open_ if tool_use_id is None or tool_use_id in (r.tool_use_id, r.id)]
            if not targets:
                known = ", ".join(r.tool_use_id or r.id for r in open_) or "none"
                raise NotFoundError(
                    f"run {run_id} has no open approval request for {tool_use_id!r}",
                    hint=f"open requests: {known}",
                    run_id=run_id,
                )
            moment = now or utcnow()
            decided: dict[str, tuple[bool, str, str | None]] = {}
            for r in targets:
                if r.expires_at is not None and r.expires_at <= moment:
                    decided[r.id] = (False, TIMEOUT_DECIDER, f"no decision before {r.expires_at.isoformat()}")
                else:
                    decided[r.id] = (approve, by.strip(), reason)
            expired = all(d[1] == TIMEOUT_DECIDER for d in decided.values())
            try:
                stored = await self._commit(run, requests, decided, moment)
            except WriteConflictError:
                continue  # another decision got there first: read the run again
            if expired and approve:
                raise StateError(
                    f"run {run_id}'s approval expired before it was decided; it was denied (by {TIMEOUT_DECIDER})",
                    hint="the run continues without what it asked for",
                    run_id=run_id,
                )
            return stored
        raise StateError(f"run {run_id} kept changing while a decision was recorded", hint="try again")

    async def _commit(
        self,
        run: Run,
        requests: list[ApprovalRequest],
        decided: dict[str, tuple[bool, str, str | None]],
        moment: datetime,
    ) -> Run:
        sessions = self._kernel.sessions
        events = []
        updated: list[ApprovalRequest] = []
        fatal: ApprovalRequest | None = None
        for r in requests:
            if r.id in decided:
                granted, who, why = decided[r.id]
                r = evolve(r, status="granted" if granted else "denied", decided_by=who, decided_at=moment,
                           decision_reason=why)
                kind = EventType.APPROVAL_GRANTED if granted else EventType.APPROVAL_DENIED
                payload = {"approval_id": r.id, "key": r.key, "decided_by": who, "reason": why}
                if r.tool_use_id is not None:
                    payload["tool_use_id"] = r.tool_use_id
                events.append(sessions.make_event(run.session_id, kind, payload, run.id))
                if not granted and r.kind != "tool" and fatal is None:
                    fatal = r
            updated.append(r)
        metadata = {**run.metadata, APPROVALS_KEY: _stored(updated)}
        # A decision takes the run's token (compare and set): two decisions made at once cannot
        # both believe the other's request is still open.
        token = run.lease_token + 1
        if fatal is not None:
            error = ApprovalDeniedError(
                f"{fatal.decided_by} denied run {run.id}'s request ({fatal.key}): "
                f"{fatal.decision_reason or fatal.reason}",
                hint="the run needed that approval to go on",
                approval_id=fatal.id,
                decided_by=fatal.decided_by,
            ).to_dict()
            final = run.transition(RunStatus.FAILED, metadata=metadata, lease_token=token, error=error)
            events.append(sessions.make_event(run.session_id, EventType.ERROR_OCCURRED, {"error": error,
                                                                                          "during": "run"}, run.id))
            events.append(sessions.make_event(run.session_id, EventType.RUN_FAILED, {"error": error}, run.id))
        elif any(r.status == "requested" for r in updated):
            final = evolve(run, metadata=metadata, lease_token=token)
        else:
            metadata[RESUME_KEY] = int(run.metadata.get(RESUME_KEY, 0)) + 1
            final = run.transition(RunStatus.PENDING, metadata=metadata, lease_token=token, owner=None,
                                   lease_expires_at=None)
        unit = WriteUnit(
            run.session_id, events, runs=[RunWrite(final, expect_status=run.status, expect_token=run.lease_token)]
        )
        committed = await sessions.commit(unit)
        stored = committed.run(run.id)
        if stored.status is RunStatus.PENDING:
            await self._kernel.runtime.resume(stored)
        elif stored.status is RunStatus.FAILED:
            from .pipeline.driver import result_of

            session = await sessions.get(run.session_id)
            sessions.notify("asm_run_finished", session, stored, session=session, run=stored, result=result_of(stored))
        return stored

    async def expire(self, *, now: datetime | None = None) -> list[str]:
        """Deny (by ``asm.timeout``) every open request whose time ran out; returns their ids."""
        moment = now or utcnow()
        denied: list[str] = []
        for run in await self._waiting():
            due = [r for r in approvals_of(run) if r.status == "requested" and r.expires_at and r.expires_at <= moment]
            for r in due:
                try:
                    await self.decide(run.id, r.id, approve=False, by=TIMEOUT_DECIDER, now=moment)
                except (StateError, NotFoundError):
                    continue  # decided meanwhile
                denied.append(r.id)
        if denied:
            log.info("denied %d approval request(s) nobody decided in time", len(denied))
        return denied
