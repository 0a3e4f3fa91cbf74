"""Starting and ending runs: the run half of ``kernel.sessions`` (see :mod:`asm_kernel.sessions`).

:class:`RunOps` is mixed into :class:`~asm_kernel.sessions.SessionManager`. Every entry point
validates the run's input and options (:class:`~asm_kernel.options.RunOptions`) before anything
is stored; ``run``/``stream_run`` create the run in the unit that starts it, ``start_run`` stores
a queued (``pending``) run, ``execute``/``stream_execute`` run a queued one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from .errors import (
    AlreadyExistsError,
    NotFoundError,
    StateError,
    StorageError,
    UnknownComponentError,
    ValidationError,
    WriteConflictError,
)
from .inputs import coerce_input
from .model import Event, Run, RunResult, RunStatus, Session, SessionStatus
from .options import OPTIONS_KEY, RunOptions
from .pipeline.bridge import stream_run_task
from .pipeline.driver import TERMINAL_EVENT, drive, result_of
from .routing import check_capability_names
from .writes import RunWrite, WriteUnit

if TYPE_CHECKING:
    from .interfaces import Store
    from .kernel import Kernel
    from .sessions import SessionManager
    from .writes import Committed

__all__ = ["RunOps"]


class RunOps:
    """Run operations of the session manager (a mixin: it uses the manager's store and commit)."""

    @property
    def _manager(self) -> SessionManager:
        return cast("SessionManager", self)

    if TYPE_CHECKING:
        _kernel: Kernel

        @property
        def store(self) -> Store: ...

        async def commit(self, unit: WriteUnit) -> Committed: ...

        async def create(
            self,
            *,
            agent_id: str | None = None,
            metadata: Mapping[str, Any] | None = None,
            tags: Sequence[str] = (),
            session_id: str | None = None,
        ) -> Session: ...

        def make_event(
            self, session_id: str, type_: str, payload: dict[str, Any], run_id: str | None = None
        ) -> Event: ...

        def notify(self, hook: str, session: Session | None, run: Run | None, /, **kwargs: Any) -> None: ...

        def _new_session(
            self,
            agent_id: str | None,
            metadata: Mapping[str, Any] | None,
            tags: Sequence[str],
            session_id: str | None,
        ) -> tuple[Session, Event]: ...

    # -- runs -------------------------------------------------------------------------------

    def new_run(
        self,
        session_id: str,
        input: Any,
        *,
        provider: str | None = None,
        model: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        options: RunOptions | Mapping[str, Any] | None = None,
    ) -> tuple[Run, RunOptions]:
        """A validated, not yet stored run: bad input or options raise before anything is stored."""
        message = coerce_input(input)
        opts = options if isinstance(options, RunOptions) else RunOptions.build(options or {})
        providers = self._kernel.providers
        if provider is not None and provider not in providers:
            raise UnknownComponentError(
                f"no provider named {provider!r} is configured",
                path="provider",
                hint=f"configured providers: {', '.join(sorted(providers)) or 'none'}",
            )
        if model is not None and (not isinstance(model, str) or not model):
            raise ValidationError("model must be a non-empty string", path="model")
        if idempotency_key is not None and (not isinstance(idempotency_key, str) or not idempotency_key):
            raise ValidationError("idempotency_key must be a non-empty string", path="idempotency_key")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ValidationError("metadata must be a mapping", path="metadata")
        check_capability_names(opts.requires, providers, "requires")
        check_capability_names(opts.prefers, providers, "prefers")
        for i, name in enumerate(opts.exclude):
            if name not in providers:
                raise ValidationError(f"exclude names provider {name!r}, which is not configured", path=f"exclude[{i}]")
        stored = opts.to_json()
        run = Run(
            session_id=session_id,
            input=message,
            provider=provider,
            model=model,
            idempotency_key=idempotency_key,
            metadata={**dict(metadata or {}), **({OPTIONS_KEY: stored} if stored else {})},
        )
        return run, opts

    async def _live_session(self, session_id: str) -> Session:
        session = await self.store.get_session(session_id)
        if session.status.terminal:
            raise StateError(
                f"session {session_id} is {session.status.value}; it takes no new runs",
                hint="start a new session",
            )
        return session

    async def start_run(self, session_id: str, input: Any, **kwargs: Any) -> Run:
        """Store a ``pending`` run (a queued run); with an idempotency key already used, that run.

        Its options are stored with it, so it executes the same way after a restart.
        """
        run, _ = self.new_run(session_id, input, **kwargs)
        await self._live_session(session_id)
        if run.idempotency_key is not None:
            existing = await self.store.find_run_by_idempotency_key(session_id, run.idempotency_key)
            if existing is not None:
                return existing
        try:
            committed = await self.commit(WriteUnit(session_id, new_runs=[run], session_status=_OPEN))
        except AlreadyExistsError as exc:
            if exc.details.get("run_id"):
                return await self.store.get_run(exc.details["run_id"])
            raise
        except WriteConflictError:
            await self._live_session(session_id)  # raises the StateError that says why
            raise
        return committed.run(run.id)

    async def _close_unexecuted(
        self, run_id: str, expect: RunStatus, to: RunStatus, payload: dict[str, Any], hint: str | None = None
    ) -> RunResult:
        """End a run this process is not executing: its record and terminal event in one unit."""
        run = await self.store.get_run(run_id)
        if run.status is not expect:
            raise StateError(f"run {run_id} is {run.status.value}, not {expect.value}", hint=hint)
        session = await self.store.get_session(run.session_id)
        final = run.transition(to, lease_expires_at=None)
        event = self.make_event(session.id, TERMINAL_EVENT[to], payload, run.id)
        write = RunWrite(final, expect_status=expect, expect_token=run.lease_token)
        try:
            committed = await self.commit(WriteUnit(session.id, [event], runs=[write]))
        except WriteConflictError:
            now = await self.store.get_run(run_id)
            raise StateError(
                f"run {run_id} is {now.status.value}, not {expect.value} any more", hint=hint, run_id=run_id
            ) from None
        stored = committed.run(run.id)
        result = result_of(stored)
        self.notify("asm_run_finished", session, stored, session=session, run=stored, result=result)
        return result

    async def cancel_pending(self, run_id: str, reason: str = "cancelled") -> RunResult:
        """Cancel a run that has not started: ``run_cancelled`` is stored, the run never executes.

        Two cancels racing each other store one ``run_cancelled``; the second is refused.
        """
        return await self._close_unexecuted(
            run_id, RunStatus.PENDING, RunStatus.CANCELLED, {"reason": reason}, hint="cancel the task running it"
        )

    async def cancel_waiting(self, run_id: str, reason: str = "cancelled") -> RunResult:
        """Cancel a run that waits for approval: ``run_cancelled`` is stored, it never continues."""
        return await self._close_unexecuted(
            run_id,
            RunStatus.AWAITING_APPROVAL,
            RunStatus.CANCELLED,
            {"reason": reason},
            hint="decide it with kernel.approvals, or cancel it while it waits",
        )

    async def execute(self, run_id: str, **options: Any) -> RunResult:
        """Execute a pending run to the end; see :meth:`stream_execute` for the options."""
        return await _result_of(self.stream_execute(run_id, **options))

    async def run(self, session_id: str, input: Any, **options: Any) -> RunResult:
        """Start a run in the session and execute it; returns the :class:`RunResult`.

        Raises the run's :class:`AsmError` if it failed (the failure is stored first).
        """
        return await _result_of(self.stream_run(session_id, input, **options))

    async def run_once(
        self, input: Any, *, session_id: str | None = None, agent_id: str | None = None, **options: Any
    ) -> RunResult:
        """Run ``input`` in ``session_id``, creating that session (or a new one) if needed.

        A session made here is created in the run's start unit: the whole start is one transaction.
        """
        if session_id is not None:
            try:
                await self.store.get_session(session_id)
            except NotFoundError:
                pass
            else:
                return await self.run(session_id, input, **options)
        session, created = self._new_session(agent_id, None, (), session_id)
        return await _result_of(self._stream(session, created, input, **options))

    async def stream_run(
        self,
        session_id: str,
        input: Any,
        *,
        provider: str | None = None,
        model: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        raise_on_error: bool = True,
        **options: Any,
    ) -> AsyncIterator[Event | RunResult]:
        """Start and execute a run, yielding each stored :class:`Event`, then the RunResult.

        Options (``system``, ``tools``, ``max_tokens``, ``temperature``, ``max_turns``,
        ``timeout``, ``response_schema``, ``requires``, ``prefers``, ``exclude``) are validated
        before anything is stored; see :class:`~asm_kernel.options.RunOptions`.
        """
        session = await self._live_session(session_id)
        stream = self._stream(
            session,
            None,
            input,
            provider=provider,
            model=model,
            idempotency_key=idempotency_key,
            metadata=metadata,
            raise_on_error=raise_on_error,
            **options,
        )
        async for item in stream:
            yield item

    async def _stream(
        self,
        session: Session,
        created: Event | None,
        input: Any,
        *,
        provider: str | None = None,
        model: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        raise_on_error: bool = True,
        **options: Any,
    ) -> AsyncIterator[Event | RunResult]:
        """Run ``input`` in ``session``; ``created`` is its ``session_created`` when it is not stored yet."""
        run, opts = self.new_run(
            session.id,
            input,
            provider=provider,
            model=model,
            idempotency_key=idempotency_key,
            metadata=metadata,
            options=options,
        )
        if idempotency_key is not None and created is None:
            existing = await self.store.find_run_by_idempotency_key(session.id, idempotency_key)
            if existing is not None:  # idempotent replay of a finished or ongoing run
                yield result_of(existing)
                return
        resolved = opts.over(self._defaults())
        stream = stream_run_task(
            lambda listener: drive(
                self._manager, session, run, resolved, stored=False, listener=listener, creates_session=created
            ),
            raise_on_error=raise_on_error,
            name=f"asm-run-{run.id}",
        )
        async for item in stream:
            yield item

    async def stream_execute(
        self, run_id: str, *, raise_on_error: bool = True, **overrides: Any
    ) -> AsyncIterator[Event | RunResult]:
        """Execute a stored pending run, yielding every stored event and finally the RunResult.

        The run's stored options apply, then ``overrides`` (same names as :meth:`stream_run`),
        then ``[run]`` in the config.
        """
        given = RunOptions.build(overrides)
        run = await self.store.get_run(run_id)
        if run.status is not RunStatus.PENDING:
            raise StateError(f"run {run_id} is {run.status.value}; only a pending run can be executed")
        session = await self.store.get_session(run.session_id)
        stored_options = RunOptions.from_json(run.metadata.get(OPTIONS_KEY))
        resolved = given.over(stored_options).over(self._defaults())
        stream = stream_run_task(
            lambda listener: drive(self._manager, session, run, resolved, stored=True, listener=listener),
            raise_on_error=raise_on_error,
            name=f"asm-run-{run.id}",
        )
        async for item in stream:
            yield item

    def _defaults(self) -> RunOptions:
        d = self._kernel.config.run
        return RunOptions(
            system=d.system,
            max_tokens=d.max_tokens,
            temperature=d.temperature,
            max_turns=d.max_turns,
            requires=d.requires,
            prefers=d.prefers,
        )


_OPEN = (SessionStatus.PENDING, SessionStatus.ACTIVE, SessionStatus.PAUSED)


async def _result_of(stream: AsyncIterator[Event | RunResult]) -> RunResult:
    """Drain a run's stream; its last item is the RunResult (a failure was raised instead)."""
    result: RunResult | None = None
    async for item in stream:
        if isinstance(item, RunResult):
            result = item
    if result is None:  # the stream contract was broken: say so, typed, even under python -O
        raise StorageError("the run ended without a result", hint="this is a bug in asm; please report it")
    return result
