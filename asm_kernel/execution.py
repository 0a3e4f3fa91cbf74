"""Executing one run: routing, the resilient provider call, tools, and the terminal record.

:class:`RunExecution` holds the mutable state of one executing run. The session manager builds it
(``SessionManager.stream_execute``) and drives :meth:`RunExecution.body`; every event it stores
goes through the manager, so hooks, telemetry and the caller's stream see it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from attrs import evolve

from .errors import (
    AsmError,
    CapabilityError,
    ProviderError,
    ProviderResponseError,
    ToolExecutionError,
    ValidationError,
)
from .events import EventType
from .model import (
    Event,
    Message,
    MessageDone,
    ProviderRequest,
    Run,
    RunResult,
    RunStatus,
    Session,
    TextDelta,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
    UsageUpdate,
)
from .resilience import RetryPolicy
from .routing import (
    Negotiation,
    RouteContext,
    RoutePlan,
    check_capability_names,
    downgrade_history,
    history_needs,
    negotiate,
    no_candidate_error,
)
from .serialization import to_dict

if TYPE_CHECKING:
    from .interfaces import Provider
    from .sessions import SessionManager

__all__ = ["RunExecution", "TERMINAL_EVENT"]

TERMINAL_EVENT = {
    RunStatus.COMPLETED: EventType.RUN_COMPLETED,
    RunStatus.FAILED: EventType.RUN_FAILED,
    RunStatus.CANCELLED: EventType.RUN_CANCELLED,
    RunStatus.TIMED_OUT: EventType.RUN_TIMED_OUT,
}

Emit = Callable[[Sequence[Event]], Awaitable[None]]


class RunExecution:
    def __init__(
        self,
        manager: SessionManager,
        session: Session,
        run: Run,
        options: dict[str, Any],
        emit: Emit,
    ) -> None:
        self.manager = manager
        self.kernel = manager.kernel
        self.session = session
        self.run = run
        self.options = options
        self._emit = emit
        self.usage = Usage()
        self.cost: float | None = None
        self.output_started = False  # any output of this run reached the caller
        self.last_message: Message | None = None
        self.stop_reason: str | None = None
        self.pending: tuple[ToolUseBlock, ...] = ()
        self.provider_name: str | None = run.provider
        self.model: str | None = run.model
        self.plan: RoutePlan | None = None
        self._degraded_reported: set[str] = set()
        self._retry: RetryPolicy | None = None  # made on the first retry: most runs never need one

    # -- events -----------------------------------------------------------------------------

    async def emit(self, type_: str, payload: dict[str, Any]) -> None:
        await self._emit([self.manager.make_event(self.session.id, type_, payload, self.run.id)])

    def notify(self, hook: str, **kwargs: Any) -> None:
        self.manager.notify(hook, self.session, self.run, **kwargs)

    # -- the run ----------------------------------------------------------------------------

    async def body(self, max_turns: int) -> None:
        """Everything between ``run_started`` and the terminal event."""
        run = self.run.transition(RunStatus.RUNNING)
        self.run = await self.manager.store.update_run(run)
        assert run.input is not None
        await self.manager.transcript(self.session.id)
        self.plan = await self._plan(self.manager.transcript_needs(self.session.id) | history_needs([run.input]))
        await self._emit(
            [
                self.manager.make_event(
                    self.session.id,
                    EventType.RUN_STARTED,
                    {
                        "provider": self.plan.candidates[0],
                        "model": self._model_for(self.plan.candidates[0]),
                        "input": to_dict(run.input),
                        "requested_provider": run.provider,
                    },
                    run.id,
                ),
                self.manager.make_event(
                    self.session.id, EventType.MESSAGE_SENT, {"message": to_dict(run.input)}, run.id
                ),
                self.manager.make_event(self.session.id, EventType.ROUTING_DECIDED, self.plan.to_dict(), run.id),
            ]
        )
        self.notify("asm_run_started", session=self.session, run=self.run)
        for policy in self.kernel.policies:
            await policy.check_run(session=self.session, run=self.run, history=())
        kernel_tools = self.kernel.tools
        specs = tuple(t.spec for t in kernel_tools.values()) + self.options["tools"]
        for turn in range(max_turns):
            messages = await self.manager.transcript(self.session.id)
            done = await self._call(messages, specs)
            calls = done.message.tool_uses
            if not calls:
                return
            await self._emit(
                [
                    self.manager.make_event(
                        self.session.id,
                        EventType.TOOL_CALL_STARTED,
                        {"tool_use_id": c.id, "name": c.name, "input": c.input},
                        self.run.id,
                    )
                    for c in calls
                ]
            )
            if any(c.name not in kernel_tools for c in calls):
                self.pending = calls
                return
            for call in calls:
                await self._run_tool(call)
            if turn == max_turns - 1:
                self.stop_reason = "max_turns"

    # -- routing ----------------------------------------------------------------------------

    def _model_for(self, name: str) -> str:
        """The run's model applies to the provider that lists it (or was asked for by name)."""
        provider = self.kernel.providers[name]
        wanted = self.run.model or self.kernel.config.run.model
        if wanted and (name == self.run.provider or any(m.name == wanted for m in provider.models)):
            return wanted
        return provider.default_model

    async def _plan(self, needs: frozenset[str]) -> RoutePlan:
        providers = self.kernel.providers
        defaults = self.kernel.config.run
        requires = check_capability_names(self.options.get("requires") or defaults.requires, providers, "requires")
        prefers = check_capability_names(self.options.get("prefers") or defaults.prefers, providers, "prefers")
        exclude = tuple(self.options.get("exclude") or ())
        for i, name in enumerate(exclude):
            if name not in providers:
                raise ValidationError(f"exclude names provider {name!r}, which is not configured", path=f"exclude[{i}]")
        if self.run.provider is not None and self.run.provider in exclude:
            raise ValidationError(
                f"provider {self.run.provider!r} is both requested and excluded",
                path="exclude",
                hint="drop it from exclude or ask for another provider",
            )
        names = [self.run.provider] if self.run.provider is not None else [n for n in providers if n not in exclude]
        negotiations = {n: negotiate(n, providers[n], requires, prefers, needs) for n in names}
        viable = [neg for neg in negotiations.values() if neg.outcome != "rejected"]
        if not viable:
            raise no_candidate_error(list(negotiations.values()), providers, requires)
        context = RouteContext(
            self.session, self.run, requires, prefers, await self.manager.last_provider(self.session.id)
        )
        router = self.kernel.router
        ordered = list(router.select(viable, context)) if router is not None else [n.provider for n in viable]
        ordered = self.kernel.plugins.chain(
            "asm_route_candidates", "candidates", candidates=ordered, session=self.session, run=self.run
        )
        if not isinstance(ordered, list) or any(
            n not in negotiations or negotiations[n].outcome == "rejected" for n in ordered
        ):
            raise ValidationError(
                f"the router or an asm_route_candidates hook returned {ordered!r}, which names a provider that "
                "cannot serve this run",
                hint=f"return a list drawn from {[n.provider for n in viable]}",
            )
        if not ordered:
            raise no_candidate_error(
                list(negotiations.values()),
                providers,
                requires,
                why="every candidate provider was vetoed by the router or a hook",
            )
        return RoutePlan(tuple(ordered), negotiations)

    # -- the resilient provider call --------------------------------------------------------

    async def _call(self, messages: list[Message], specs: tuple[Any, ...]) -> MessageDone:
        assert self.plan is not None
        config = self.kernel.config.resilience
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.deadline
        order = list(self.plan.candidates)
        if self.provider_name in order:  # stay with the provider that answered earlier turns
            order.remove(self.provider_name)
            order.insert(0, self.provider_name)
        last_error: ProviderError | None = None
        for index, name in enumerate(order):
            provider = self.kernel.providers[name]
            model = self._model_for(name)
            breaker = self.kernel.breakers.get(name, model)
            attempt = 0
            while True:
                before = breaker.current()
                if not breaker.allow():
                    await self.emit(
                        EventType.PROVIDER_SKIPPED,
                        {
                            "provider": name,
                            "model": model,
                            "reason": "circuit breaker open",
                            "retry_in": round(breaker.remaining_cooldown(), 3),
                        },
                    )
                    break
                attempt += 1
                try:
                    done = await self._attempt(name, provider, model, messages, specs)
                except ProviderError as exc:
                    if exc.retryable:
                        breaker.failure()
                    else:
                        breaker.probing = False  # a bad request says nothing about the target's health
                    await self._breaker_changed(name, model, before, breaker.current())
                    await self.emit(
                        EventType.PROVIDER_ATTEMPT_FAILED,
                        {
                            "provider": name,
                            "model": model,
                            "attempt": attempt,
                            "error": exc.to_dict(),
                        },
                    )
                    last_error = exc
                    if not exc.retryable or exc.output_started:
                        raise
                    remaining = deadline - loop.time()
                    if attempt < config.max_attempts and breaker.current() == "closed":
                        if self._retry is None:
                            # Seeded by the run id, so a run's jitter is reproducible in tests.
                            self._retry = RetryPolicy(config, random.Random(self.run.id))
                        delay = self._retry.delay(attempt, exc.retry_after)
                        if delay < remaining:
                            await self.emit(
                                EventType.RETRY_SCHEDULED,
                                {
                                    "provider": name,
                                    "model": model,
                                    "attempt": attempt + 1,
                                    "delay": round(delay, 3),
                                    "error_code": exc.code,
                                },
                            )
                            await asyncio.sleep(delay)
                            continue
                    break
                else:
                    breaker.success()
                    await self._breaker_changed(name, model, before, breaker.current())
                    self.provider_name = name
                    self.manager.remember_provider(self.session.id, name)
                    return done
            if not config.failover or loop.time() >= deadline or index == len(order) - 1:
                break
            await self.emit(
                EventType.PROVIDER_FAILOVER,
                {
                    "from": name,
                    "to": order[index + 1],
                    "error_code": last_error.code if last_error else "provider.circuit_open",
                },
            )
        if last_error is not None:
            raise last_error
        raise CapabilityError(
            "every candidate provider is unavailable: their circuit breakers are open",
            hint="wait for the breakers' cooldown (resilience.breaker_cooldown) or configure another provider",
        )

    async def _breaker_changed(self, name: str, model: str, before: str, after: str) -> None:
        if before != after:
            await self.emit(
                EventType.BREAKER_STATE_CHANGED, {"provider": name, "model": model, "from": before, "to": after}
            )

    async def _attempt(
        self, name: str, provider: Provider, model: str, messages: list[Message], specs: tuple[Any, ...]
    ) -> MessageDone:
        assert self.plan is not None
        negotiation: Negotiation = self.plan.negotiations[name]
        if negotiation.outcome == "degraded" and name not in self._degraded_reported:
            self._degraded_reported.add(name)
            await self.emit(EventType.CAPABILITY_DEGRADED, {"provider": name, **negotiation.to_dict()})
        missing = self.manager.transcript_needs(self.session.id) - frozenset(provider.capabilities)
        if missing:
            messages, changed = downgrade_history(messages, missing)
            if changed:
                await self.emit(EventType.HISTORY_DOWNGRADED, {"provider": name, "missing": sorted(missing), **changed})
        tools = specs if "tools" in provider.capabilities else ()
        request = ProviderRequest(
            model=model,
            messages=messages,
            system=self.options["system"],
            tools=tools,
            max_tokens=self.options["max_tokens"],
            temperature=self.options["temperature"],
            response_schema=self.options["response_schema"],
            metadata={"session_id": self.session.id, "run_id": self.run.id},
        )
        request = self.kernel.plugins.chain(
            "asm_before_provider_request",
            "request",
            request=request,
            session=self.session,
            run=self.run,
            provider=name,
        )
        if not isinstance(request, ProviderRequest):
            raise ValidationError(
                "an asm_before_provider_request hook returned something that is not a ProviderRequest",
                hint="return attrs.evolve(request, ...) or None",
            )
        return await self._stream(name, provider, request)

    async def _stream(self, name: str, provider: Provider, request: ProviderRequest) -> MessageDone:
        usage: Usage | None = None
        done: MessageDone | None = None
        attempt_output = False
        stream = provider.stream(request)
        try:
            try:
                async for item in stream:
                    if isinstance(item, TextDelta):
                        if item.text:
                            attempt_output = self.output_started = True
                            await self.emit(EventType.MESSAGE_STREAMED, {"text": item.text, "index": item.index})
                    elif isinstance(item, ThinkingDelta):
                        attempt_output = self.output_started = True
                        await self.emit(EventType.THINKING_STREAMED, {"text": item.text, "index": item.index})
                    elif isinstance(item, UsageUpdate):
                        usage = item.usage
                    elif isinstance(item, MessageDone):
                        done = item
                    else:
                        raise ProviderResponseError(
                            f"provider {name!r} yielded {type(item).__name__}, which is not a stream event",
                            provider=name,
                            output_started=attempt_output,
                        )
            except ProviderError as exc:
                # Failover is only safe if this attempt showed the caller nothing.
                exc.output_started = exc.output_started or attempt_output
                exc.details["output_started"] = exc.output_started
                exc.provider = exc.provider or name
                raise
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        if done is None:
            raise ProviderResponseError(
                f"provider {name!r} ended its stream without a final message",
                provider=name,
                output_started=attempt_output,
                hint="the response was truncated; nothing partial is kept as an answer",
            )
        return await self._received(name, provider, done, usage)

    async def _received(self, name: str, provider: Provider, done: MessageDone, usage: Usage | None) -> MessageDone:
        reported = done.usage or usage
        usage = reported or Usage()
        requested = self._model_for(name)
        model = done.model or requested
        self.usage = self.usage + usage
        self.model = model
        self.last_message = done.message
        self.stop_reason = done.stop_reason
        # APIs answer with dated snapshot ids ("...-20260101"); price by what was asked for then.
        # Usage the provider never reported has an unknown cost, not a zero one.
        cost = price_of(provider, model, usage) if reported is not None else None
        if cost is None and reported is not None and model != requested:
            cost = price_of(provider, requested, usage)
        if cost is not None:
            self.cost = (self.cost or 0.0) + cost
        await self._emit(
            [
                self.manager.make_event(
                    self.session.id,
                    EventType.MESSAGE_RECEIVED,
                    {
                        "message": to_dict(done.message),
                        "stop_reason": done.stop_reason,
                        "model": model,
                        "provider": name,
                    },
                    self.run.id,
                ),
                self.manager.make_event(
                    self.session.id,
                    EventType.TOKEN_USAGE_UPDATED,
                    {
                        "usage": to_dict(usage),
                        "total": to_dict(self.usage),
                        "cost": cost,
                    },
                    self.run.id,
                ),
            ]
        )
        self.run = evolve(self.run, usage=self.usage, cost=self.cost, model=model, provider=name)
        self.notify(
            "asm_after_provider_response",
            session=self.session,
            run=self.run,
            provider=name,
            message=done.message,
            usage=usage,
        )
        for policy in self.kernel.policies:
            await policy.check_usage(session=self.session, run=self.run)
        return done

    # -- tools ------------------------------------------------------------------------------

    async def _run_tool(self, call: ToolUseBlock) -> None:
        tool = self.kernel.tools[call.name]
        is_error = False
        try:
            for policy in self.kernel.policies:
                await policy.check_tool(session=self.session, run=self.run, name=call.name, input=call.input)
            output = await tool(call.input)
        except AsmError as exc:
            output, is_error = f"error: {exc}", True
        except Exception as exc:  # a tool's failure is the model's to handle, not the run's
            error = ToolExecutionError(f"tool {call.name!r} raised {type(exc).__name__}: {exc}", tool=call.name)
            self.notify("asm_on_error", error=error, session=self.session, run=self.run, during="tool")
            output, is_error = f"error: {type(exc).__name__}: {exc}", True
        if not isinstance(output, str | list):
            output = str(output)
        await self.emit(
            EventType.TOOL_CALL_COMPLETED,
            {
                "tool_use_id": call.id,
                "name": call.name,
                "output": output,
                "is_error": is_error,
            },
        )

    # -- the end ----------------------------------------------------------------------------

    async def finish_shielded(self, status: RunStatus, **kwargs: Any) -> RunResult:
        task = asyncio.ensure_future(self.finish(status, **kwargs))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # A second cancel during clean-up: let the terminal write finish anyway.
            await asyncio.wait({task})
            raise

    async def finish(
        self, status: RunStatus, *, error: AsmError | None = None, extra: dict[str, Any] | None = None
    ) -> RunResult:
        run = self.run
        if run.status is RunStatus.PENDING and status is not RunStatus.CANCELLED:
            run = run.transition(RunStatus.RUNNING)  # failed before it properly started
        run = run.transition(
            status,
            output=self.last_message,
            usage=self.usage,
            cost=self.cost,
            model=self.model,
            provider=self.provider_name,
            stop_reason=self.stop_reason,
            error=error.to_dict() if error else None,
        )
        self.run = await self.manager.store.update_run(run)
        payload: dict[str, Any] = dict(extra or {})
        if status is RunStatus.COMPLETED:
            payload.update(
                {
                    "output": self.last_message.text if self.last_message else "",
                    "stop_reason": self.stop_reason,
                    "usage": to_dict(self.usage),
                    "cost": self.cost,
                    "provider": self.provider_name,
                    "pending_tool_calls": [c.id for c in self.pending],
                }
            )
        elif error is not None:
            payload["error"] = error.to_dict()
        await self.emit(TERMINAL_EVENT[status], payload)
        result = result_of(self.run, self.pending)
        self.notify("asm_run_finished", session=self.session, run=self.run, result=result)
        return result


def price_of(provider: Provider, model: str | None, usage: Usage) -> float | None:
    for info in provider.models:
        if info.name == model and info.price is not None:
            return info.price.cost(usage)
    return None


def result_of(run: Run, pending: tuple[ToolUseBlock, ...] = ()) -> RunResult:
    if not pending and run.output is not None and run.stop_reason == "tool_use":
        pending = run.output.tool_uses
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
