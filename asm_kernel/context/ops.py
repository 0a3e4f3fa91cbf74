"""Context operations of ``kernel.sessions``: compact, fork, pin, and the window on demand.

:class:`ContextOps` is mixed into :class:`~asm_kernel.sessions.SessionManager`. Everything here
appends events (a ``context_compacted``, a ``message_pinned``, a new session's
``session_forked``); nothing rewrites or removes one.

**Forks copy.** ``fork(session_id, at=seq)`` creates a session whose log starts with
``session_created`` and ``session_forked`` (naming the parent and the seq), followed by copies of
the parent's transcript events up to ``seq`` (``message_sent``, ``message_received``,
``tool_call_completed``, ``context_compacted``, ``message_pinned``, with their original times;
the seqs a compaction or pin names are mapped to the fork's). The fork is then an ordinary
session on every store: its seqs are its own, its transcript cache is built like any other, a
fork of a fork needs nothing more, and the parent is never read again nor changed.
"""

from __future__ import annotations

import bisect
import builtins
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import StateError, ValidationError
from ..events import EventType
from ..model import Event, Session, SessionStatus, utcnow
from ..storage import MAX_BATCH
from ..writes import WriteUnit
from .compaction import payload as compaction_payload
from .compaction import plan, render_for_summary, summarize
from .settings import ContextOptions, resolve
from .stage import estimator_of, limits_for, model_info
from .window import Window, cut_window

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..writes import Committed
    from .transcript import TranscriptBuilder

__all__ = ["ContextOps", "FORK_COPIED_TYPES"]

#: The parent's event types a fork copies: everything its transcript is made of.
FORK_COPIED_TYPES = (
    EventType.MESSAGE_SENT,
    EventType.MESSAGE_RECEIVED,
    EventType.TOOL_CALL_COMPLETED,
    EventType.CONTEXT_COMPACTED,
    EventType.MESSAGE_PINNED,
)
_OPEN = (SessionStatus.PENDING, SessionStatus.ACTIVE, SessionStatus.PAUSED)


class ContextOps:
    """Compaction, forks and pins (a mixin: it uses the manager's store, commit and cache)."""

    if TYPE_CHECKING:
        _kernel: Kernel

        async def commit(self, unit: WriteUnit) -> Committed: ...

        def make_event(
            self, session_id: str, type_: str, payload: dict[str, Any], run_id: str | None = None
        ) -> Event: ...

        async def transcript_builder(self, session_id: str) -> TranscriptBuilder: ...

        async def last_provider(self, session_id: str) -> str | None: ...

        def _new_session(
            self,
            agent_id: str | None,
            metadata: Mapping[str, Any] | None,
            tags: Sequence[str],
            session_id: str | None,
        ) -> tuple[Session, Event]: ...

        def notify(self, hook: str, session: Session | None, run: Any, /, **kwargs: Any) -> None: ...

    async def _append_open(self, session_id: str, event: Event) -> Event:
        from ..errors import WriteConflictError

        try:
            committed = await self.commit(WriteUnit(session_id, [event], session_status=_OPEN))
        except WriteConflictError:
            session = await self._kernel.store.get_session(session_id)
            raise StateError(f"session {session_id} is {session.status.value}; its log takes no more events",
                             hint="fork it to continue (kernel.sessions.fork)") from None
        return committed.events[0]

    # -- pins -----------------------------------------------------------------------------------

    async def pin(self, session_id: str, seq: int, *, pinned: bool = True) -> Event:
        """Pin the turn holding the message at ``seq``: every window keeps it (``pinned=False`` unpins).

        Returns the stored ``message_pinned`` event. Raises ValidationError if ``seq`` holds no
        message of the transcript.
        """
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise ValidationError(f"seq must be a positive integer, got {seq!r}", path="seq")
        builder = await self.transcript_builder(session_id)
        if builder.group_of_seq(seq) is None:
            raise ValidationError(
                f"seq {seq} of session {session_id} holds no message of the transcript",
                path="seq",
                hint="pin the seq of a message_sent, message_received or tool_call_completed event (asm events ID)",
            )
        event = self.make_event(session_id, EventType.MESSAGE_PINNED, {"seq": seq, "pinned": bool(pinned)})
        return await self._append_open(session_id, event)

    # -- the window on demand -------------------------------------------------------------------

    def _target(self, provider: str | None) -> str:
        providers = self._kernel.providers
        if provider is not None:
            if provider not in providers:
                raise ValidationError(f"no provider named {provider!r} is configured", path="provider",
                                      hint=f"configured providers: {', '.join(sorted(providers)) or 'none'}")
            return provider
        if self._kernel.config.run.provider:
            return self._kernel.config.run.provider
        if not providers:
            raise ValidationError("no provider is configured", hint="configure [[providers]]")
        return next(iter(providers))

    async def window(
        self,
        session_id: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Window:
        """The window a model call to ``provider``/``model`` would send now (nothing is written)."""
        name = self._target(provider or await self.last_provider(session_id))
        target = self._kernel.providers[name]
        model = model or target.default_model
        settings = resolve(self._kernel.config.context, ContextOptions(context or {}))
        estimator = estimator_of(target, model)
        limits, _ = limits_for(settings, model_info(target, model), max_tokens or self._kernel.config.run.max_tokens)
        builder = await self.transcript_builder(session_id)
        fixed = estimator.fixed(system or self._kernel.config.run.system, ())
        return cut_window(builder, limits, estimator, fixed=fixed, now=utcnow())

    # -- compaction -----------------------------------------------------------------------------

    async def compact(
        self,
        session_id: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        keep_recent: int | None = None,
    ) -> Event | None:
        """Summarize the session's oldest turns now; returns the ``context_compacted`` event.

        Everything but the newest ``keep_recent`` turns (default ``[context] keep_recent``) that
        is not summarized yet is summarized, with the summary in force, by ``provider``/``model``
        (default ``[context] summarizer``/``summary_model``, else the session's last provider).
        Returns None when there is nothing to compact.
        """
        if keep_recent is not None and (isinstance(keep_recent, bool) or not isinstance(keep_recent, int)
                                        or keep_recent < 1):
            raise ValidationError(f"keep_recent must be an integer of at least 1, got {keep_recent!r}",
                                  path="keep_recent")
        store = self._kernel.store
        session = await store.get_session(session_id)
        if session.status.terminal:
            raise StateError(f"session {session_id} is {session.status.value}; it cannot be compacted",
                             hint="fork it, then compact the fork")
        settings = self._kernel.config.context
        name = self._target(provider or settings.summarizer or await self.last_provider(session_id))
        target = self._kernel.providers[name]
        model = model or settings.summary_model or target.default_model
        estimator = estimator_of(target, model)
        builder = await self.transcript_builder(session_id)
        first = builder.summary.through if builder.summary is not None else 0
        _, hard = limits_for(settings, model_info(target, model), settings.summary_max_tokens)
        through = plan(builder, estimator, fixed=0, budget=None, target=settings.compact_to,
                       keep_recent=keep_recent or settings.keep_recent,
                       summary_tokens=settings.summary_max_tokens, input_limit=hard)
        if through <= first:
            return None
        result = await summarize(self._kernel, name, model, render_for_summary(builder, through),
                                 prompt=settings.summary_prompt, max_tokens=settings.summary_max_tokens,
                                 session=session, run=None)
        event = self.make_event(session_id, EventType.CONTEXT_COMPACTED,
                                compaction_payload(builder, through, result, "manual"))
        return await self._append_open(session_id, event)

    # -- forks ----------------------------------------------------------------------------------

    async def fork(
        self,
        session_id: str,
        *,
        at: int | None = None,
        new_session_id: str | None = None,
        agent_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
    ) -> Session:
        """A new session whose transcript is this one's up to seq ``at`` (default: all of it).

        The new session (``pending``, same agent, metadata and tags unless given) starts with
        ``session_created`` and ``session_forked``; see the module docstring. The parent is
        untouched.
        """
        store = self._kernel.store
        parent = await store.get_session(session_id)
        last = await store.last_seq(session_id)
        if at is None:
            at = last
        if isinstance(at, bool) or not isinstance(at, int) or not 1 <= at <= last:
            raise ValidationError(f"at must be a seq of session {session_id}, from 1 to {last}; got {at!r}",
                                  path="at", hint=f"asm events {session_id} lists the seqs")
        originals = await store.read(session_id, before=at + 1, types=list(FORK_COPIED_TYPES))
        session, created = self._new_session(
            agent_id or parent.agent_id,
            {**parent.metadata, **dict(metadata or {})},
            tuple(parent.tags) if tags is None else tags,
            new_session_id,
        )
        forked = self.make_event(session.id, EventType.SESSION_FORKED,
                                 {"parent_session_id": session_id, "at_seq": at, "copied": len(originals)})
        parent_seqs = [e.seq for e in originals]
        first_copy = 3  # after session_created and session_forked

        def mapped(seq: Any) -> Any:
            if not isinstance(seq, int):
                return seq
            i = bisect.bisect_right(parent_seqs, seq) - 1
            return first_copy + max(i, 0)

        copies = [
            Event(session_id=session.id, type=e.type, payload=_remap(e, mapped), run_id=None,
                  timestamp=e.timestamp, schema_version=e.schema_version)
            for e in originals
        ]
        head = MAX_BATCH - 2
        committed = await self.commit(WriteUnit(session.id, [created, forked, *copies[:head]], new_session=session))
        for start in range(head, len(copies), MAX_BATCH):
            await self.commit(WriteUnit(session.id, copies[start : start + MAX_BATCH], session_status=_OPEN))
        stored = committed.session or session
        self.notify("asm_session_transition", stored, None, session=stored, old_status=None, new_status=stored.status)
        return stored

    async def context_report(self, session_id: str) -> builtins.list[dict[str, Any]]:
        """The ``context_prepared`` records of the session's latest run (what each call left out)."""
        return latest_context(await self._kernel.store.last(session_id, REPORT_WINDOW))


#: How many of a session's last events :func:`latest_context` looks through.
REPORT_WINDOW = 400


def latest_context(recent: Sequence[Event]) -> builtins.list[dict[str, Any]]:
    """The ``context_prepared`` records of the latest run among ``recent`` events, oldest first.

    Pure, so the CLI computes the same report from a server's events as from a store's.
    """
    prepared = [e for e in recent if e.type == EventType.CONTEXT_PREPARED]
    if not prepared:
        return []
    run_id = prepared[-1].run_id
    return [{"seq": e.seq, **e.payload} for e in prepared if e.run_id == run_id]


def _remap(event: Event, mapped: Any) -> dict[str, Any]:
    payload = dict(event.payload)
    if event.type == EventType.CONTEXT_COMPACTED and isinstance(payload.get("replaced"), dict):
        replaced = payload["replaced"]
        payload["replaced"] = {"from": mapped(replaced.get("from")), "to": mapped(replaced.get("to"))}
    elif event.type == EventType.MESSAGE_PINNED:
        payload["seq"] = mapped(payload.get("seq"))
    return payload

