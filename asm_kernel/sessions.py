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

from attrs import evolve

from .context.transcript import TranscriptBuilder
from .errors import (
    AsmError,
    AsmRuntimeError,
    ProviderError,
    ProviderResponseError,
    RunTimeoutError,
    StateError,
    ToolExecutionError,
    UnknownComponentError,
    ValidationError,
)
from .events import SCHEMA_VERSION, EventType
from .model import (
    ContentBlock,
    Event,
    ImageBlock,
    Message,
    MessageDone,
    ProviderRequest,
    Run,
    RunResult,
    RunStatus,
    Session,
    SessionStatus,
    TextBlock,
    TextDelta,
    ThinkingDelta,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    Usage,
    UsageUpdate,
)
from .serialization import to_dict

if TYPE_CHECKING:
    from .interfaces import Provider
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

_TERMINAL_EVENT = {
    RunStatus.COMPLETED: EventType.RUN_COMPLETED,
    RunStatus.FAILED: EventType.RUN_FAILED,
    RunStatus.CANCELLED: EventType.RUN_CANCELLED,
    RunStatus.TIMED_OUT: EventType.RUN_TIMED_OUT,
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
_OPTION_NAMES = ("system", "tools", "max_tokens", "temperature", "max_turns", "timeout", "response_schema")


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
    return out


def decode_options(data: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(data)
    if "tools" in out:
        out["tools"] = [ToolSpec(**t) for t in out["tools"]]
    return out


class _RunState:
    """Mutable bookkeeping of one executing run."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.usage = Usage()
        self.cost: float | None = None
        self.output_started = False
        self.last_message: Message | None = None
        self.stop_reason: str | None = None
        self.pending: tuple[ToolUseBlock, ...] = ()
        self.model: str | None = run.model


class SessionManager:
    """Session/run lifecycle operations over the kernel's store. Reached as ``kernel.sessions``."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel
        # Tail cache: the transcript of recently active sessions, extended by seq (LRU-bounded).
        self._transcripts: OrderedDict[str, TranscriptBuilder] = OrderedDict()

    @property
    def store(self) -> Any:
        return self._kernel.store

    # -- event writing ----------------------------------------------------------------------

    async def _append(self, session_id: str, events: Sequence[Event]) -> builtins.list[Event]:
        stored = await self.store.append(session_id, events)
        self._kernel.published(stored)
        return stored

    def _event(self, session_id: str, type_: str, payload: dict[str, Any], run_id: str | None = None) -> Event:
        return Event(session_id=session_id, type=type_, payload=payload, run_id=run_id, schema_version=SCHEMA_VERSION)

    def _notify(self, hook: str, session: Session | None, run: Run | None, /, **kwargs: Any) -> None:
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
                self._event(
                    session.id,
                    EventType.SESSION_CREATED,
                    {"agent_id": session.agent_id, "metadata": session.metadata, "tags": list(session.tags)},
                )
            ],
        )
        self._notify(
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
        await self._append(session_id, [self._event(session_id, event_type, payload)])
        self._notify("asm_session_transition", new, None, session=new, old_status=session.status, new_status=to)
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

    async def runs(self, session_id: str, **filters: Any) -> builtins.list[Run]:
        return await self.store.list_runs(session_id=session_id, **filters)

    async def get_run(self, run_id: str) -> Run:
        return await self.store.get_run(run_id)

    # -- runs -------------------------------------------------------------------------------

    def _provider(self, name: str | None) -> tuple[str, Provider]:
        """The configured provider ``name`` (default: ``run.provider``, else the first one)."""
        providers = self._kernel.providers
        chosen = name or self._kernel.config.run.provider or next(iter(providers), None)
        if chosen is None or chosen not in providers:
            raise UnknownComponentError(
                f"no provider named {chosen!r} is configured",
                path="provider",
                hint=f"configured providers: {', '.join(sorted(providers)) or 'none'}",
            )
        return chosen, providers[chosen]

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
        provider_name, _ = self._provider(provider)
        run = Run(
            session_id=session_id,
            input=message,
            provider=provider_name,
            model=model,
            idempotency_key=idempotency_key,
            metadata={**dict(metadata or {}), **({OPTIONS_KEY: stored_options} if stored_options else {})},
        )
        return await self.store.create_run(run)

    async def cancel_pending(self, run_id: str, reason: str = "cancelled") -> RunResult:
        """Cancel a run that has not started: ``run_cancelled`` is stored, the run never executes."""
        run = await self.store.get_run(run_id)
        if run.status is not RunStatus.PENDING:
            raise StateError(f"run {run_id} is {run.status.value}, not pending", hint="cancel the task running it")
        session = await self.store.get_session(run.session_id)
        run = await self.store.update_run(run.transition(RunStatus.CANCELLED))
        await self._append(session.id, [self._event(session.id, EventType.RUN_CANCELLED, {"reason": reason}, run.id)])
        result = self._result(run)
        self._notify("asm_run_finished", session, run, session=session, run=run, result=result)
        return result

    async def fail_crashed(self, run_id: str, error: AsmError) -> RunResult:
        """Close a run that a dead process left ``running``: ``run_failed`` with reason crashed."""
        run = await self.store.get_run(run_id)
        if run.status is not RunStatus.RUNNING:
            raise StateError(f"run {run_id} is {run.status.value}, not running")
        session = await self.store.get_session(run.session_id)
        run = await self.store.update_run(run.transition(RunStatus.FAILED, error=error.to_dict()))
        await self._append(
            session.id,
            [self._event(session.id, EventType.RUN_FAILED, {"error": error.to_dict(), "reason": "crashed"}, run.id)],
        )
        result = self._result(run)
        self._notify("asm_run_finished", session, run, session=session, run=run, result=result)
        return result

    async def execute(self, run_id: str, **options: Any) -> RunResult:
        """Execute a pending run to the end; see :meth:`stream_execute` for the options."""
        result: RunResult | None = None
        async for item in self.stream_execute(run_id, **options):
            if isinstance(item, RunResult):
                result = item
        assert result is not None
        return result

    async def run(self, session_id: str, input: Any, **options: Any) -> RunResult:
        """Start a run in the session and execute it; returns the :class:`RunResult`.

        Raises the run's :class:`AsmError` if it failed (the failure is stored first).
        """
        result: RunResult | None = None
        async for item in self.stream_run(session_id, input, **options):
            if isinstance(item, RunResult):
                result = item
        assert result is not None
        return result

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
            yield self._result(run)
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
        raise_on_error: bool = True,
    ) -> AsyncIterator[Event | RunResult]:
        """Execute a pending run, yielding every stored event and finally the RunResult.

        ``system``, ``max_tokens``, ``temperature`` and ``max_turns`` default to ``[run]`` in the
        config. ``timeout`` (seconds) bounds the whole run; on expiry it ends ``timed_out``.
        ``tools`` adds tool specs the caller will answer itself (beside the kernel's tools).
        """
        defaults = self._kernel.config.run
        run = await self.store.get_run(run_id)
        stored = decode_options(run.metadata.get(OPTIONS_KEY, {}))
        system = system if system is not None else stored.get("system")
        tools = tools if tools is not None else stored.get("tools")
        max_tokens = max_tokens if max_tokens is not None else stored.get("max_tokens")
        temperature = temperature if temperature is not None else stored.get("temperature")
        max_turns = max_turns if max_turns is not None else stored.get("max_turns")
        timeout = timeout if timeout is not None else stored.get("timeout")
        response_schema = response_schema if response_schema is not None else stored.get("response_schema")
        turns = max_turns if max_turns is not None else defaults.max_turns
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
        provider_name, provider = self._provider(run.provider)
        model = (
            run.model
            or (defaults.model if run.provider in (None, defaults.provider) else None)
            or provider.default_model
        )
        state = _RunState(evolve(run, model=model))
        queue: asyncio.Queue[Event | RunResult | BaseException | None] = asyncio.Queue()
        options = {
            "system": system if system is not None else defaults.system,
            "tools": tuple(tools or ()),
            "max_tokens": max_tokens if max_tokens is not None else defaults.max_tokens,
            "temperature": temperature if temperature is not None else defaults.temperature,
            "response_schema": dict(response_schema) if response_schema is not None else None,
        }

        async def emit(events: Sequence[Event]) -> None:
            for event in await self._append(session.id, events):
                queue.put_nowait(event)

        async def body() -> None:
            await self._execute(session, provider_name, provider, state, turns, options, emit)

        async def driver() -> None:
            try:
                if timeout is not None:
                    async with asyncio.timeout(timeout):
                        await body()
                else:
                    await body()
                result = await self._finish(session, state, RunStatus.COMPLETED, emit)
                queue.put_nowait(result)
            except TimeoutError:
                err = RunTimeoutError(f"run {state.run.id} exceeded its timeout of {timeout} s", timeout=timeout)
                result = await self._finish(
                    session, state, RunStatus.TIMED_OUT, emit, error=err, extra={"timeout": timeout}
                )
                queue.put_nowait(result)
                queue.put_nowait(err)
            except asyncio.CancelledError as exc:
                # Task.cancel(msg) carries why (e.g. "interrupted" from the runtime).
                reason = exc.args[0] if exc.args and isinstance(exc.args[0], str) else "cancelled"
                await self._finish_shielded(session, state, RunStatus.CANCELLED, emit, extra={"reason": reason})
                raise
            except BaseException as exc:  # record every failure, then let it surface
                error = (
                    exc
                    if isinstance(exc, AsmError)
                    else AsmRuntimeError(f"run failed with an unexpected {type(exc).__name__}: {exc}")
                )
                if isinstance(error, ProviderError):
                    error.output_started = error.output_started or state.output_started
                    error.details["output_started"] = error.output_started
                await emit(
                    [
                        self._event(
                            session.id,
                            EventType.ERROR_OCCURRED,
                            {"error": error.to_dict(), "during": "run"},
                            state.run.id,
                        )
                    ]
                )
                self._notify(
                    "asm_on_error", session, state.run, error=error, session=session, run=state.run, during="run"
                )
                result = await self._finish(session, state, RunStatus.FAILED, emit, error=error)
                queue.put_nowait(result)
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
                            item.details.setdefault("run_id", state.run.id)
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

    async def _execute(
        self,
        session: Session,
        provider_name: str,
        provider: Provider,
        state: _RunState,
        max_turns: int,
        options: dict[str, Any],
        emit: Any,
    ) -> None:
        run = state.run.transition(RunStatus.RUNNING)
        state.run = await self.store.update_run(run)
        assert run.input is not None
        await emit(
            [
                self._event(
                    session.id,
                    EventType.RUN_STARTED,
                    {"provider": provider_name, "model": state.model, "input": to_dict(run.input)},
                    run.id,
                ),
                self._event(session.id, EventType.MESSAGE_SENT, {"message": to_dict(run.input)}, run.id),
            ]
        )
        self._notify("asm_run_started", session, state.run, session=session, run=state.run)
        for policy in self._kernel.policies:
            await policy.check_run(session=session, run=state.run, history=())
        kernel_tools = self._kernel.tools
        specs = tuple(t.spec for t in kernel_tools.values()) + options["tools"]
        for turn in range(max_turns):
            messages = await self.transcript(session.id)
            request = ProviderRequest(
                model=state.model or provider.default_model,
                messages=messages,
                system=options["system"],
                tools=specs,
                max_tokens=options["max_tokens"],
                temperature=options["temperature"],
                response_schema=options["response_schema"],
                metadata={"session_id": session.id, "run_id": run.id},
            )
            request = self._kernel.plugins.chain(
                "asm_before_provider_request",
                "request",
                request=request,
                session=session,
                run=state.run,
                provider=provider_name,
            )
            if not isinstance(request, ProviderRequest):
                raise ValidationError(
                    "an asm_before_provider_request hook returned something that is not a ProviderRequest",
                    hint="return attrs.evolve(request, ...) or None",
                )
            done = await self._call_provider(session, provider_name, provider, request, state, emit)
            calls = done.message.tool_uses
            if not calls:
                return
            await emit(
                [
                    self._event(
                        session.id,
                        EventType.TOOL_CALL_STARTED,
                        {"tool_use_id": c.id, "name": c.name, "input": c.input},
                        run.id,
                    )
                    for c in calls
                ]
            )
            if any(c.name not in kernel_tools for c in calls):
                state.pending = calls
                return
            for call in calls:
                await self._run_tool(session, state, call, emit)
            if turn == max_turns - 1:
                state.stop_reason = "max_turns"

    async def _call_provider(
        self,
        session: Session,
        provider_name: str,
        provider: Provider,
        request: ProviderRequest,
        state: _RunState,
        emit: Any,
    ) -> MessageDone:
        run_id = state.run.id
        usage: Usage | None = None
        done: MessageDone | None = None
        stream = provider.stream(request)
        try:
            async for item in stream:
                if isinstance(item, TextDelta):
                    if item.text:
                        state.output_started = True
                        await emit(
                            [
                                self._event(
                                    session.id,
                                    EventType.MESSAGE_STREAMED,
                                    {"text": item.text, "index": item.index},
                                    run_id,
                                )
                            ]
                        )
                elif isinstance(item, ThinkingDelta):
                    state.output_started = True
                    await emit(
                        [
                            self._event(
                                session.id,
                                EventType.THINKING_STREAMED,
                                {"text": item.text, "index": item.index},
                                run_id,
                            )
                        ]
                    )
                elif isinstance(item, UsageUpdate):
                    usage = item.usage
                elif isinstance(item, MessageDone):
                    done = item
                else:
                    raise ProviderResponseError(
                        f"provider {provider_name!r} yielded {type(item).__name__}, which is not a stream event",
                        provider=provider_name,
                        output_started=state.output_started,
                    )
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        if done is None:
            raise ProviderResponseError(
                f"provider {provider_name!r} ended its stream without a final message",
                provider=provider_name,
                output_started=state.output_started,
                hint="the response was truncated; nothing partial is kept as an answer",
            )
        usage = done.usage or usage or Usage()
        state.usage = state.usage + usage
        state.model = done.model or state.model
        state.last_message = done.message
        state.stop_reason = done.stop_reason
        cost = self._cost(provider, state.model, usage)
        if cost is not None:
            state.cost = (state.cost or 0.0) + cost
        await emit(
            [
                self._event(
                    session.id,
                    EventType.MESSAGE_RECEIVED,
                    {
                        "message": to_dict(done.message),
                        "stop_reason": done.stop_reason,
                        "model": state.model,
                        "provider": provider_name,
                    },
                    run_id,
                ),
                self._event(
                    session.id,
                    EventType.TOKEN_USAGE_UPDATED,
                    {
                        "usage": to_dict(usage),
                        "total": to_dict(state.usage),
                        "cost": cost,
                    },
                    run_id,
                ),
            ]
        )
        self._notify(
            "asm_after_provider_response",
            session,
            state.run,
            session=session,
            run=state.run,
            provider=provider_name,
            message=done.message,
            usage=usage,
        )
        state.run = evolve(state.run, usage=state.usage, cost=state.cost, model=state.model)
        for policy in self._kernel.policies:
            await policy.check_usage(session=session, run=state.run)
        return done

    @staticmethod
    def _cost(provider: Provider, model: str | None, usage: Usage) -> float | None:
        for info in provider.models:
            if info.name == model and info.price is not None:
                return info.price.cost(usage)
        return None

    async def _run_tool(self, session: Session, state: _RunState, call: ToolUseBlock, emit: Any) -> None:
        tool = self._kernel.tools[call.name]
        is_error = False
        try:
            for policy in self._kernel.policies:
                await policy.check_tool(session=session, run=state.run, name=call.name, input=call.input)
            output = await tool(call.input)
        except AsmError as exc:
            output, is_error = f"error: {exc}", True
        except Exception as exc:  # a tool's failure is the model's to handle, not the run's
            error = ToolExecutionError(f"tool {call.name!r} raised {type(exc).__name__}: {exc}", tool=call.name)
            self._notify("asm_on_error", session, state.run, error=error, session=session, run=state.run, during="tool")
            output, is_error = f"error: {type(exc).__name__}: {exc}", True
        if not isinstance(output, str | list):
            output = str(output)
        await emit(
            [
                self._event(
                    session.id,
                    EventType.TOOL_CALL_COMPLETED,
                    {
                        "tool_use_id": call.id,
                        "name": call.name,
                        "output": output,
                        "is_error": is_error,
                    },
                    state.run.id,
                )
            ]
        )

    async def _finish_shielded(self, *args: Any, **kwargs: Any) -> RunResult:
        task = asyncio.ensure_future(self._finish(*args, **kwargs))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # A second cancel during clean-up: let the terminal write finish anyway.
            await asyncio.wait({task})
            raise

    async def _finish(
        self,
        session: Session,
        state: _RunState,
        status: RunStatus,
        emit: Any,
        *,
        error: AsmError | None = None,
        extra: dict[str, Any] | None = None,
    ) -> RunResult:
        run = state.run
        if run.status is RunStatus.PENDING and status is not RunStatus.CANCELLED:
            run = run.transition(RunStatus.RUNNING)  # failed before it properly started
        run = run.transition(
            status,
            output=state.last_message,
            usage=state.usage,
            cost=state.cost,
            model=state.model,
            stop_reason=state.stop_reason,
            error=error.to_dict() if error else None,
        )
        state.run = await self.store.update_run(run)
        payload: dict[str, Any] = dict(extra or {})
        if status is RunStatus.COMPLETED:
            payload.update(
                {
                    "output": state.last_message.text if state.last_message else "",
                    "stop_reason": state.stop_reason,
                    "usage": to_dict(state.usage),
                    "cost": state.cost,
                    "pending_tool_calls": [c.id for c in state.pending],
                }
            )
        elif error is not None:
            payload["error"] = error.to_dict()
        await emit([self._event(session.id, _TERMINAL_EVENT[status], payload, run.id)])
        result = self._result(state.run, state.pending)
        self._notify("asm_run_finished", session, state.run, session=session, run=state.run, result=result)
        return result

    @staticmethod
    def _result(run: Run, pending: tuple[ToolUseBlock, ...] = ()) -> RunResult:
        blocks: tuple[ContentBlock, ...] = run.output.content if run.output else ()
        if not pending and run.output is not None and run.stop_reason == "tool_use":
            pending = tuple(b for b in blocks if isinstance(b, ToolUseBlock))
        return RunResult(
            session_id=run.session_id,
            run_id=run.id,
            status=run.status,
            output=run.output.text if run.output else "",
            message=run.output,
            usage=run.usage,
            cost=run.cost,
            provider=run.provider,
            model=run.model,
            stop_reason=run.stop_reason,
            error=run.error,
            pending_tool_calls=pending,
        )
