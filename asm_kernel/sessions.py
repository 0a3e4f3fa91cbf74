"""Sessions and runs: their lifecycles, reading the log, and starting runs. ``kernel.sessions``.

Every change of state is one atomic unit (:mod:`asm_kernel.writes`) with the events that record
it: ``session_created`` with the session, each transition with the session's new status (on
the condition that it had the old one), a queued run's cancel with its ``run_cancelled``. A run
executes through the pipeline (:mod:`asm_kernel.pipeline`): ``kernel.sessions.run(...)`` creates
the run in the same unit that starts it, so a run costs two durable writes (start and outcome)
plus its streamed deltas.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .context.ops import ContextOps
from .context.transcript import TranscriptBuilder
from .errors import (
    AlreadyExistsError,
    LeaseLostError,
    NotFoundError,
    SeqConflictError,
    StateError,
    StorageError,
    StoreClosedError,
    StoreCorruptError,
    StoreReadOnlyError,
    ValidationError,
    WriteConflictError,
)
from .events import SCHEMA_VERSION, EventType
from .inputs import coerce_input
from .model import Event, Message, Run, Session, SessionStatus
from .pipeline.driver import Closer
from .runs import RunOps
from .secrets import redact
from .writes import Committed, WriteUnit

if TYPE_CHECKING:
    from .interfaces import Store
    from .kernel import Kernel

__all__ = ["SessionManager", "coerce_input"]

log = logging.getLogger("asm.sessions")

#: Memory (bytes, roughly) the transcripts of recently active sessions may hold between runs, so
#: a busy session's next run reads only its new events. Least recently used are dropped first.
TRANSCRIPT_CACHE_BYTES = 64 * 2**20
#: Sessions whose last answering provider is remembered (for stickiness) without a read.
PROVIDER_MEMORY = 100_000
#: Attempts (and first backoff, doubled each time) of a unit the store failed transiently.
COMMIT_ATTEMPTS = 4
COMMIT_BACKOFF = 0.02

_OPEN_STATUSES = (SessionStatus.PENDING, SessionStatus.ACTIVE, SessionStatus.PAUSED)
_TRANSITION_EVENTS = {
    SessionStatus.ACTIVE: EventType.SESSION_ACTIVATED,
    SessionStatus.PAUSED: EventType.SESSION_PAUSED,
    SessionStatus.COMPLETED: EventType.SESSION_COMPLETED,
    SessionStatus.FAILED: EventType.SESSION_FAILED,
    SessionStatus.CANCELLED: EventType.SESSION_CANCELLED,
}
#: Errors that say the store answered: retrying the same unit cannot help.
_DEFINITE = (
    NotFoundError,
    AlreadyExistsError,
    SeqConflictError,
    WriteConflictError,
    LeaseLostError,
    StoreClosedError,
    StoreReadOnlyError,
    StoreCorruptError,
)


class SessionManager(RunOps, ContextOps):
    """Session/run lifecycle operations over the kernel's store. Reached as ``kernel.sessions``."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel
        # Tail cache: the transcript of recently active sessions, extended by seq (LRU-bounded).
        self._transcripts: OrderedDict[str, TranscriptBuilder] = OrderedDict()
        #: Runs of each session executing in this process now (see ``runtime.overlap_start``).
        self.executing: Counter[str] = Counter()
        self._transcript_bytes = 0
        #: See :data:`TRANSCRIPT_CACHE_BYTES`.
        self.transcript_cache_bytes = TRANSCRIPT_CACHE_BYTES
        self._last_provider: dict[str, str] = {}
        self.closer = Closer(self)
        #: Runs a stopping worker hands back: cancelling one queues the same input again.
        self.hand_back: set[str] = set()
        #: Attempts at a unit the store failed transiently, and the first wait between them.
        self.commit_attempts = COMMIT_ATTEMPTS
        self.commit_backoff = COMMIT_BACKOFF

    @property
    def store(self) -> Store:
        return self._kernel.store

    @property
    def kernel(self) -> Kernel:
        return self._kernel

    # -- writing ----------------------------------------------------------------------------

    async def commit(self, unit: WriteUnit) -> Committed:
        """Commit a unit, retrying transient store failures; publish what it stored.

        A retry is safe: a unit whose events are already stored is replayed, not applied again.
        So a commit whose answer was lost (the store wrote it, the caller saw an error) is
        recognised on the retry, and its events are published then.
        """
        delay = self.commit_backoff
        attempts = self.commit_attempts
        for attempt in range(1, attempts + 1):
            try:
                committed = await self.store.commit(unit)
            except StorageError as exc:
                if isinstance(exc, _DEFINITE) or attempt == attempts:
                    raise
                log.warning("store refused a write (%s); retry %d of %d", exc, attempt, attempts - 1)
                await asyncio.sleep(delay)
                delay *= 2
                continue
            if not committed.replayed or attempt > 1:
                self._kernel.published(committed.events)
            return committed
        raise AssertionError("unreachable")  # pragma: no cover

    async def append(
        self,
        session_id: str,
        events: Sequence[Event | tuple[str, Mapping[str, Any]]],
        *,
        run_id: str | None = None,
        expected_seq: int | None = None,
    ) -> builtins.list[Event]:
        """Append events to a session's log in one atomic unit; returns them with their seqs.

        For integrations that record their own facts (framework adapters, importers): give
        ``Event`` objects (their ids make a retried append idempotent) or ``(type, payload)``
        pairs. Name your own event types with a dotted prefix (``"myapp.thing_happened"``).
        ``expected_seq`` makes the append conditional on the log's last seq
        (:class:`~asm_kernel.errors.SeqConflictError` otherwise). Secrets are removed from
        payloads; the session must not be final.
        """
        if isinstance(events, str | bytes) or not isinstance(events, Sequence):
            raise ValidationError("events must be a list of Event or (type, payload) pairs", path="events")
        made: builtins.list[Event] = []
        for i, item in enumerate(events):
            if isinstance(item, Event):
                made.append(item)  # the store refuses one of another session, naming it
            elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Mapping):
                made.append(self.make_event(session_id, item[0], dict(item[1]), run_id))
            else:
                raise ValidationError("expected an Event or a (type, payload) pair", path=f"events[{i}]")
        unit = WriteUnit(session_id, made, session_status=_OPEN_STATUSES, expected_seq=expected_seq)
        try:
            committed = await self.commit(unit)
        except WriteConflictError:
            session = await self.store.get_session(session_id)
            raise StateError(
                f"session {session_id} is {session.status.value}; its log takes no more events",
                hint="start a new session",
            ) from None
        return builtins.list(committed.events)

    def make_event(self, session_id: str, type_: str, payload: dict[str, Any], run_id: str | None = None) -> Event:
        """A new event; every registered secret is removed from its payload."""
        return Event(
            session_id=session_id, type=type_, payload=redact(payload), run_id=run_id, schema_version=SCHEMA_VERSION
        )

    def notify(self, hook: str, session: Session | None, run: Run | None, /, **kwargs: Any) -> None:
        self._kernel.plugins.notify(hook, context=(session, run), **kwargs)

    # -- sessions ---------------------------------------------------------------------------

    def _new_session(
        self, agent_id: str | None, metadata: Mapping[str, Any] | None, tags: Sequence[str], session_id: str | None
    ) -> tuple[Session, Event]:
        if isinstance(tags, str) or not isinstance(tags, Sequence):
            raise ValidationError("tags must be a list of strings", path="tags")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ValidationError("metadata must be a mapping", path="metadata")
        if agent_id is not None and (not isinstance(agent_id, str) or not agent_id):
            raise ValidationError("agent_id must be a non-empty string", path="agent_id")
        fields: dict[str, Any] = {
            "agent_id": agent_id or self._kernel.config.run.agent_id,
            "metadata": dict(metadata or {}),
            "tags": tuple(tags),
        }
        if session_id is not None:
            if not isinstance(session_id, str) or not session_id.strip():
                raise ValidationError("session_id must be a non-empty string", path="session_id")
            fields["id"] = session_id
        session = Session(**fields)
        created = self.make_event(
            session.id,
            EventType.SESSION_CREATED,
            {"agent_id": session.agent_id, "metadata": session.metadata, "tags": list(session.tags)},
        )
        return session, created

    async def create(
        self,
        *,
        agent_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
        session_id: str | None = None,
    ) -> Session:
        """A new ``pending`` session, stored with its ``session_created`` event."""
        session, created = self._new_session(agent_id, metadata, tags, session_id)
        committed = await self.commit(WriteUnit(session.id, [created], new_session=session))
        session = committed.session or session
        self.notify(
            "asm_session_transition", session, None, session=session, old_status=None, new_status=session.status
        )
        return session

    async def get(self, session_id: str) -> Session:
        return await self.store.get_session(session_id)

    async def list(self, **filters: Any) -> builtins.list[Session]:
        return await self.store.list_sessions(**filters)

    async def _transition(self, session_id: str, to: SessionStatus, reason: str | None = None) -> Session:
        session = await self.store.get_session(session_id)
        new = session.transition(to)
        event_type = _TRANSITION_EVENTS[to]
        if to is SessionStatus.ACTIVE and session.status is SessionStatus.PAUSED:
            event_type = EventType.SESSION_RESUMED
        payload: dict[str, Any] = {"from": session.status.value}
        if reason is not None:
            payload["reason"] = reason
        unit = WriteUnit(
            session_id,
            [self.make_event(session_id, event_type, payload)],
            session=new,
            session_status=[session.status],
            no_live_runs=to.terminal,
        )
        try:
            committed = await self.commit(unit)
        except WriteConflictError as exc:
            if exc.details.get("live_runs"):
                raise StateError(
                    f"session {session_id} cannot be {to.value} while it has pending or running runs "
                    f"({exc.details['live_runs']})",
                    hint="cancel them first (kernel.runtime.cancel_run) or wait for them to finish",
                    session_id=session_id,
                ) from None
            raise StateError(
                f"session {session_id} changed meanwhile: {exc.message}", hint="read it again and retry"
            ) from None
        new = committed.session or new
        self.notify("asm_session_transition", new, None, session=new, old_status=session.status, new_status=to)
        return new

    async def activate(self, session_id: str) -> Session:
        return await self._transition(session_id, SessionStatus.ACTIVE)

    async def pause(self, session_id: str, reason: str | None = None) -> Session:
        return await self._transition(session_id, SessionStatus.PAUSED, reason)

    async def resume(self, session_id: str) -> Session:
        session = await self.store.get_session(session_id)
        if session.status is not SessionStatus.PAUSED:
            raise StateError(
                f"session {session_id} is {session.status.value}, not paused",
                hint="only a paused session can be resumed",
            )
        return await self._transition(session_id, SessionStatus.ACTIVE)

    async def complete(self, session_id: str) -> Session:
        """End the session; refused while it has pending or running runs."""
        return await self._transition(session_id, SessionStatus.COMPLETED)

    async def fail(self, session_id: str, reason: str | None = None) -> Session:
        return await self._transition(session_id, SessionStatus.FAILED, reason)

    async def cancel(self, session_id: str, reason: str | None = None) -> Session:
        return await self._transition(session_id, SessionStatus.CANCELLED, reason)

    # -- reading ----------------------------------------------------------------------------

    async def events(
        self,
        session_id: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        types: Sequence[str] | None = None,
        run_id: str | None = None,
    ) -> builtins.list[Event]:
        """The session's log, filtered; ``after``/``before`` are exclusive seq bounds."""
        return await self.store.read(session_id, after=after, before=before, limit=limit, types=types, run_id=run_id)

    async def transcript(self, session_id: str) -> builtins.list[Message]:
        """The whole conversation rebuilt from the log (a compaction's summary in place of the
        range it replaces); each model call sends a window of it (see :meth:`window`)."""
        return (await self.transcript_builder(session_id)).messages()

    async def transcript_builder(self, session_id: str) -> TranscriptBuilder:
        """The session's incremental transcript, brought up to date (read only what is new)."""
        builder = self._transcripts.get(session_id)
        if builder is None:
            await self.store.get_session(session_id)
            builder = self.seed_transcript(session_id)
        else:
            self._transcripts.move_to_end(session_id)
        # Only events after the cached seq are read: the log is never re-read in full.
        self.feed_transcript(session_id, builder, await self.store.read(session_id, after=builder.last_seq))
        while self._transcript_bytes > self.transcript_cache_bytes and len(self._transcripts) > 1:
            _, dropped = self._transcripts.popitem(last=False)
            self._transcript_bytes -= dropped.size
        return builder

    def seed_transcript(self, session_id: str) -> TranscriptBuilder:
        """The session's cached transcript, empty if there was none (no store read: a session
        this process is creating, or one :meth:`transcript_builder` just found)."""
        builder = self._transcripts.get(session_id)
        if builder is None:
            builder = self._transcripts[session_id] = TranscriptBuilder()
            self._transcript_bytes += builder.size
        return builder

    def feed_transcript(self, session_id: str, builder: TranscriptBuilder, events: Sequence[Event]) -> None:
        """Feed ``events`` to a transcript builder, keeping the cache's byte count right."""
        before = builder.size
        builder.feed(events)
        if self._transcripts.get(session_id) is builder:
            self._transcript_bytes += builder.size - before

    def forget_transcript(self, session_id: str) -> None:
        """Drop the session's cached transcript: the next read rebuilds it from the log."""
        builder = self._transcripts.pop(session_id, None)
        if builder is not None:
            self._transcript_bytes -= builder.size

    @property
    def transcript_cache(self) -> tuple[int, int]:
        """(sessions, bytes) the transcript cache holds now."""
        return len(self._transcripts), self._transcript_bytes

    def transcript_needs(self, session_id: str) -> frozenset[str]:
        """What the cached transcript of the session needs (see :func:`routing.history_needs`).

        Call after :meth:`transcript`; it answers from the incremental cache, without a scan.
        """
        builder = self._transcripts.get(session_id)
        return builder.needs if builder is not None else frozenset()

    async def runs(self, session_id: str, **filters: Any) -> builtins.list[Run]:
        return await self.store.list_runs(session_id=session_id, **filters)

    async def get_run(self, run_id: str) -> Run:
        return await self.store.get_run(run_id)

    def remember_provider(self, session_id: str, name: str) -> None:
        self._last_provider.pop(session_id, None)
        self._last_provider[session_id] = name
        if len(self._last_provider) > PROVIDER_MEMORY:
            self._last_provider.pop(next(iter(self._last_provider)))

    async def last_provider(self, session_id: str) -> str | None:
        """The provider that answered the session's latest run (for stickiness)."""
        cached = self._last_provider.get(session_id)
        if cached is not None:
            return cached
        for event in reversed(await self.store.last(session_id, 200)):
            if event.type == EventType.MESSAGE_RECEIVED:
                return event.payload.get("provider")
        return None
