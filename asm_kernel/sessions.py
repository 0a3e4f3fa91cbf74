"""Session and run lifecycles, and the execute-run flow.

A run goes ``pending → running → completed | failed | cancelled | timed_out``. Executing it:

1. ``run_started`` and ``message_sent`` (the input) are stored;
2. the transcript is rebuilt from the log (incrementally, from a per-session cache) and sent
   to the provider, after ``asm_before_provider_request`` hooks had their say;
3. every streamed delta is stored as ``message_streamed``; the complete answer as
   ``message_received``; usage as ``token_usage_updated``;
4. tool calls the kernel can serve are executed (``tool_call_started``/``_completed``) and the
   model is called again, up to ``max_turns``; calls it cannot serve are returned to the caller
   as ``pending_tool_calls`` (answer them by passing ``ToolResultBlock`` s as the next input);
5. the run ends with ``run_completed``, ``run_failed`` (after ``error_occurred``),
   ``run_cancelled`` or ``run_timed_out``. The terminal event is written even if the task is
   cancelled again during clean-up.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .context.transcript import TranscriptBuilder
from .errors import (
    AsmError,
    AsmRuntimeError,
    RunTimeoutError,
    StateError,
    UnknownComponentError,
    ValidationError,
)
from .events import SCHEMA_VERSION, EventType
from .execution import TERMINAL_EVENT, RunExecution, result_of
from .model import (
    Event,
    ImageBlock,
    Message,
    Run,
    RunResult,
    RunStatus,
    Session,
    SessionStatus,
    TextBlock,
    ToolResultBlock,
    ToolSpec,
)
from .serialization import to_dict
from .storage import RecordCache

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["SessionManager", "coerce_input", "encode_options", "decode_options", "OPTIONS_KEY"]

log = logging.getLogger("asm.sessions")

#: Sessions whose transcript stays cached in memory between runs.
TRANSCRIPT_CACHE_SIZE = 1024

_TRANSITION_EVENTS = {
    SessionStatus.ACTIVE: EventType.SESSION_ACTIVATED,
    SessionStatus.PAUSED: EventType.SESSION_PAUSED,
    SessionStatus.COMPLETED: EventType.SESSION_COMPLETED,
    SessionStatus.FAILED: EventType.SESSION_FAILED,
    SessionStatus.CANCELLED: EventType.SESSION_CANCELLED,
}


def coerce_input(value: Any, path: str = "input") -> Message:
    """Accept a string, a user :class:`Message`, a content block or a list of blocks."""
    if isinstance(value, Message):
        if value.role != "user":
            raise ValidationError(f"run input must be a user message, got role {value.role!r}", path=path)
        message = value
    elif isinstance(value, str):
        if not value.strip():
            raise ValidationError("run input is empty", path=path, hint="send some text or blocks")
        message = Message.user(value)
    elif isinstance(value, TextBlock | ImageBlock | ToolResultBlock):
        message = Message("user", (value,))
    elif isinstance(value, list | tuple):
        for i, block in enumerate(value):
            if not isinstance(block, TextBlock | ImageBlock | ToolResultBlock):
                raise ValidationError(
                    f"unsupported input block {type(block).__name__}",
                    path=f"{path}[{i}]",
                    hint="use TextBlock, ImageBlock or ToolResultBlock",
                )
        message = Message("user", tuple(value))
    else:
        raise ValidationError(
            f"run input must be a string, a Message or content blocks, got {type(value).__name__}",
            path=path,
        )
    if not message.content:
        raise ValidationError("run input is empty", path=path, hint="send some text or blocks")
    return message


#: Run metadata key under which execution options of a queued run are kept.
OPTIONS_KEY = "asm.options"
_OPTION_NAMES = (
    "system",
    "tools",
    "max_tokens",
    "temperature",
    "max_turns",
    "timeout",
    "response_schema",
    "requires",
    "prefers",
    "exclude",
)


def encode_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Execution options as JSON-safe data (tool specs as dicts); unknown names are refused."""
    unknown = sorted(set(options) - set(_OPTION_NAMES))
    if unknown:
        raise ValidationError(
            f"unknown run option {unknown[0]!r}",
            path=unknown[0],
            hint=f"run options are: {', '.join(_OPTION_NAMES)}",
        )
    out = {k: v for k, v in options.items() if v is not None}
    if "tools" in out:
        specs = out["tools"]
        if not all(isinstance(t, ToolSpec) for t in specs):
            raise ValidationError("tools must be a list of ToolSpec", path="tools")
        out["tools"] = [to_dict(t) for t in specs]
    if "response_schema" in out:
        out["response_schema"] = dict(out["response_schema"])
    for key in ("requires", "prefers", "exclude"):
        if key in out:
            if isinstance(out[key], str) or not all(isinstance(v, str) for v in out[key]):
                raise ValidationError(f"{key} must be a list of names, got {out[key]!r}", path=key)
            out[key] = list(out[key])
    return out


def decode_options(data: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(data)
    if "tools" in out:
        out["tools"] = [ToolSpec(**t) for t in out["tools"]]
    return out


class SessionManager:
    """Session/run lifecycle operations over the kernel's store. Reached as ``kernel.sessions``."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel
        # Tail cache: the transcript of recently active sessions, extended by seq (LRU-bounded).
        self._transcripts: OrderedDict[str, TranscriptBuilder] = OrderedDict()
        self._last_provider: dict[str, str] = {}
        self._cached_for: Any = None
        self._cached: Any = None

    @property
    def store(self) -> Any:
        """The kernel's store, behind a record cache when only this process writes it."""
        store = self._kernel.store
        if self._cached_for is not store:
            self._cached_for = store
            self._cached = RecordCache(store) if getattr(store, "exclusive", False) else store
        return self._cached

    @property
    def kernel(self) -> Kernel:
        return self._kernel

    # -- event writing ----------------------------------------------------------------------

    async def _append(self, session_id: str, events: Sequence[Event]) -> builtins.list[Event]:
        stored = await self.store.append(session_id, events)
        self._kernel.published(stored)
        return stored

    def make_event(self, session_id: str, type_: str, payload: dict[str, Any], run_id: str | None = None) -> Event:
        return Event(session_id=session_id, type=type_, payload=payload, run_id=run_id, schema_version=SCHEMA_VERSION)

    def notify(self, hook: str, session: Session | None, run: Run | None, /, **kwargs: Any) -> None:
        self._kernel.plugins.notify(hook, self._kernel.hook_error_reporter(hook, session, run), **kwargs)

    # -- sessions ---------------------------------------------------------------------------

    async def create(
        self,
        *,
        agent_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
        session_id: str | None = None,
    ) -> Session:
        """A new ``pending`` session, with a ``session_created`` event."""
        if isinstance(tags, str):
            raise ValidationError("tags must be a list of strings, not one string", path="tags")
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
        await self.store.create_session(session)
        await self._append(
            session.id,
            [
                self.make_event(
                    session.id,
                    EventType.SESSION_CREATED,
                    {"agent_id": session.agent_id, "metadata": session.metadata, "tags": list(session.tags)},
                )
            ],
        )
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
        await self.store.update_session(new)
        event_type = _TRANSITION_EVENTS[to]
        if to is SessionStatus.ACTIVE and session.status is SessionStatus.PAUSED:
            event_type = EventType.SESSION_RESUMED
        payload: dict[str, Any] = {"from": session.status.value}
        if reason is not None:
            payload["reason"] = reason
        await self._append(session_id, [self.make_event(session_id, event_type, payload)])
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
    ) -> builtins.list[Event]:
        """The session's log, filtered; ``after``/``before`` are exclusive seq bounds."""
        return await self.store.read(session_id, after=after, before=before, limit=limit, types=types)

    async def transcript(self, session_id: str) -> builtins.list[Message]:
        """The conversation as the model will see it next, rebuilt from the log."""
        builder = self._transcripts.get(session_id)
        if builder is None:
            await self.store.get_session(session_id)
            builder = self._transcripts[session_id] = TranscriptBuilder()
            if len(self._transcripts) > TRANSCRIPT_CACHE_SIZE:
                self._transcripts.popitem(last=False)
        else:
            self._transcripts.move_to_end(session_id)
        # Only events after the cached seq are read: the log is never re-read in full.
        builder.feed(await self.store.read(session_id, after=builder.last_seq))
        return builder.messages()

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

    # -- runs -------------------------------------------------------------------------------

    def _check_provider(self, name: str | None) -> None:
        providers = self._kernel.providers
        if name is not None and name not in providers:
            raise UnknownComponentError(
                f"no provider named {name!r} is configured",
                path="provider",
                hint=f"configured providers: {', '.join(sorted(providers)) or 'none'}",
            )

    def remember_provider(self, session_id: str, name: str) -> None:
        self._last_provider[session_id] = name
        if len(self._last_provider) > TRANSCRIPT_CACHE_SIZE:
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

    async def start_run(
        self,
        session_id: str,
        input: Any,
        *,
        provider: str | None = None,
        model: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Run:
        """Record a ``pending`` run; with an idempotency key already used, return that run.

        ``options`` (the keyword arguments of :meth:`stream_execute`) are stored with the run, so
        a queued run executes the same way after a restart.
        """
        message = coerce_input(input)
        stored_options = encode_options(options or {})
        session = await self.store.get_session(session_id)
        if session.status.terminal:
            raise StateError(
                f"session {session_id} is {session.status.value}; it takes no new runs",
                hint="start a new session",
            )
        if idempotency_key is not None:
            existing = await self.store.find_run_by_idempotency_key(session_id, idempotency_key)
            if existing is not None:
                return existing
        self._check_provider(provider)
        run = Run(
            session_id=session_id,
            input=message,
            provider=provider,
            model=model,
            idempotency_key=idempotency_key,
            metadata={**dict(metadata or {}), **({OPTIONS_KEY: stored_options} if stored_options else {})},
        )
        return await self.store.create_run(run)

    async def _close_unexecuted(
        self,
        run_id: str,
        expect: RunStatus,
        to: RunStatus,
        payload: dict[str, Any],
        hint: str | None = None,
        **changes: Any,
    ) -> RunResult:
        """End a run this process is not executing: store it, its terminal event, tell the hooks."""
        run = await self.store.get_run(run_id)
        if run.status is not expect:
            raise StateError(f"run {run_id} is {run.status.value}, not {expect.value}", hint=hint)
        session = await self.store.get_session(run.session_id)
        run = await self.store.update_run(run.transition(to, **changes))
        await self._append(session.id, [self.make_event(session.id, TERMINAL_EVENT[to], payload, run.id)])
        result = result_of(run)
        self.notify("asm_run_finished", session, run, session=session, run=run, result=result)
        return result

    async def cancel_pending(self, run_id: str, reason: str = "cancelled") -> RunResult:
        """Cancel a run that has not started: ``run_cancelled`` is stored, the run never executes."""
        return await self._close_unexecuted(
            run_id, RunStatus.PENDING, RunStatus.CANCELLED, {"reason": reason}, hint="cancel the task running it"
        )

    async def fail_crashed(self, run_id: str, error: AsmError) -> RunResult:
        """Close a run that a dead process left ``running``: ``run_failed`` with reason crashed."""
        return await self._close_unexecuted(
            run_id,
            RunStatus.RUNNING,
            RunStatus.FAILED,
            {"error": error.to_dict(), "reason": "crashed"},
            error=error.to_dict(),
        )

    @staticmethod
    async def _result_of_stream(stream: AsyncIterator[Event | RunResult]) -> RunResult:
        """Drain a run's event stream; its last item is the RunResult."""
        result: RunResult | None = None
        async for item in stream:
            if isinstance(item, RunResult):
                result = item
        assert result is not None
        return result

    async def execute(self, run_id: str, **options: Any) -> RunResult:
        """Execute a pending run to the end; see :meth:`stream_execute` for the options."""
        return await self._result_of_stream(self.stream_execute(run_id, **options))

    async def run(self, session_id: str, input: Any, **options: Any) -> RunResult:
        """Start a run in the session and execute it; returns the :class:`RunResult`.

        Raises the run's :class:`AsmError` if it failed (the failure is stored first).
        """
        return await self._result_of_stream(self.stream_run(session_id, input, **options))

    async def run_once(
        self,
        input: Any,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        **options: Any,
    ) -> RunResult:
        """Run ``input`` in ``session_id``, creating that session (or a new one) if needed."""
        if session_id is None:
            session_id = (await self.create(agent_id=agent_id)).id
        else:
            try:
                await self.store.get_session(session_id)
            except LookupError:
                await self.create(agent_id=agent_id, session_id=session_id)
        return await self.run(session_id, input, **options)

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
        """Start and execute a run, yielding each stored :class:`Event`, then the RunResult."""
        run = await self.start_run(
            session_id,
            input,
            provider=provider,
            model=model,
            idempotency_key=idempotency_key,
            metadata=metadata,
            options=options,
        )
        if run.status is not RunStatus.PENDING:  # idempotent replay of a finished/ongoing run
            yield result_of(run)
            return
        async for item in self.stream_execute(run.id, raise_on_error=raise_on_error):
            yield item

    async def stream_execute(
        self,
        run_id: str,
        *,
        system: str | None = None,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        max_turns: int | None = None,
        timeout: float | None = None,
        response_schema: Mapping[str, Any] | None = None,
        requires: Sequence[str] | None = None,
        prefers: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        raise_on_error: bool = True,
    ) -> AsyncIterator[Event | RunResult]:
        """Execute a pending run, yielding every stored event and finally the RunResult.

        ``system``, ``max_tokens``, ``temperature`` and ``max_turns`` default to ``[run]`` in the
        config. ``timeout`` (seconds) bounds the whole run; on expiry it ends ``timed_out``.
        ``tools`` adds tool specs the caller will answer itself (beside the kernel's tools).
        ``requires``/``prefers`` name capabilities for negotiation (default ``[run]``);
        ``exclude`` names providers this run must not use.
        """
        defaults = self._kernel.config.run
        run = await self.store.get_run(run_id)
        # Precedence: this call's arguments, then the options stored with the run, then [run].
        given = {
            "system": system,
            "tools": tools,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "max_turns": max_turns,
            "timeout": timeout,
            "response_schema": response_schema,
            "requires": requires,
            "prefers": prefers,
            "exclude": exclude,
        }
        opts = {
            **decode_options(run.metadata.get(OPTIONS_KEY, {})),
            **{k: v for k, v in given.items() if v is not None},
        }
        timeout = opts.get("timeout")
        turns = opts.get("max_turns", defaults.max_turns)
        if not isinstance(turns, int) or turns < 1:
            raise ValidationError(f"max_turns must be an integer >= 1, got {turns!r}", path="max_turns")
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise ValidationError(f"timeout must be a positive number of seconds, got {timeout!r}", path="timeout")
        if run.status is not RunStatus.PENDING:
            raise StateError(f"run {run_id} is {run.status.value}; only a pending run can be executed")
        session = await self.store.get_session(run.session_id)
        if session.status is SessionStatus.PENDING:
            session = await self.activate(session.id)
        elif session.status is not SessionStatus.ACTIVE:
            raise StateError(
                f"session {session.id} is {session.status.value}; runs need an active session",
                hint="resume the session first" if session.status is SessionStatus.PAUSED else "start a new session",
            )
        queue: asyncio.Queue[Event | RunResult | BaseException | None] = asyncio.Queue()
        response_schema = opts.get("response_schema")
        options = {
            "system": opts.get("system", defaults.system),
            "tools": tuple(opts.get("tools", ())),
            "max_tokens": opts.get("max_tokens", defaults.max_tokens),
            "temperature": opts.get("temperature", defaults.temperature),
            "response_schema": dict(response_schema) if response_schema is not None else None,
            "requires": tuple(opts.get("requires", ())),
            "prefers": tuple(opts.get("prefers", ())),
            "exclude": tuple(opts.get("exclude", ())),
        }

        async def emit(events: Sequence[Event]) -> None:
            for event in await self._append(session.id, events):
                queue.put_nowait(event)

        execution = RunExecution(self, session, run, options, emit)

        async def driver() -> None:
            try:
                if timeout is not None:
                    async with asyncio.timeout(timeout):
                        await execution.body(turns)
                else:
                    await execution.body(turns)
                queue.put_nowait(await execution.finish(RunStatus.COMPLETED))
            except TimeoutError:
                err = RunTimeoutError(f"run {run.id} exceeded its timeout of {timeout} s", timeout=timeout)
                result = await execution.finish(RunStatus.TIMED_OUT, error=err, extra={"timeout": timeout})
                queue.put_nowait(result)
                queue.put_nowait(err)
            except asyncio.CancelledError as exc:
                # Task.cancel(msg) carries why (e.g. "interrupted" from the runtime).
                reason = exc.args[0] if exc.args and isinstance(exc.args[0], str) else "cancelled"
                await execution.finish_shielded(RunStatus.CANCELLED, extra={"reason": reason})
                raise
            except BaseException as exc:  # record every failure, then let it surface
                error = (
                    exc
                    if isinstance(exc, AsmError)
                    else AsmRuntimeError(f"run failed with an unexpected {type(exc).__name__}: {exc}")
                )
                await execution.emit(EventType.ERROR_OCCURRED, {"error": error.to_dict(), "during": "run"})
                execution.notify("asm_on_error", error=error, session=session, run=execution.run, during="run")
                queue.put_nowait(await execution.finish(RunStatus.FAILED, error=error))
                queue.put_nowait(exc)
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(driver(), name=f"asm-run-{run.id}")
        cancel_reason: tuple[Any, ...] = ()
        try:
            while True:
                try:
                    item = await queue.get()
                except asyncio.CancelledError as exc:
                    cancel_reason = exc.args  # hand the reason on to the run's own task
                    raise
                if item is None:
                    break
                if isinstance(item, BaseException):
                    if raise_on_error:
                        if isinstance(item, AsmError):
                            item.details.setdefault("run_id", run.id)
                            item.details.setdefault("session_id", session.id)
                        raise item
                    continue
                yield item
        finally:
            if not task.done():
                task.cancel(*cancel_reason[:1])
            # Wait for the terminal event even if our consumer went away or was cancelled, and
            # keep waiting through further cancels: the result must reflect the stored outcome.
            while not task.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(task)
            if not task.cancelled():
                task.exception()  # retrieved here; the failure itself was already queued
