"""The resilient provider call: routing order, retries with backoff, failover, circuit breakers.

One call of the ``call`` stage tries the run's candidate providers in order. A retryable error is
retried on the same target (backoff with jitter, at least the server's ``retry-after``) up to
``resilience.max_attempts``, then the next candidate is tried — but only while nothing of the
attempt reached the caller. ``resilience.deadline`` bounds the whole call (every attempt, wait
and failover) in wall-clock time: when it passes the call fails with ``provider.timeout``.
Every step is an event. Usage a failed attempt reported is recorded (it was billed).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from attrs import evolve

from ..errors import (
    CapabilityError,
    ContextLengthError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeoutError,
    ValidationError,
)
from ..events import EventType
from ..model import MessageDone, ProviderRequest, StreamEvent, TextDelta, ThinkingDelta, Usage, UsageUpdate
from ..resilience import RetryPolicy
from ..routing import Negotiation, downgrade_history
from ..serialization import to_dict

if TYPE_CHECKING:
    from ..interfaces import Provider
    from .state import RunState

__all__ = ["call_provider", "price_of", "model_for"]

log = logging.getLogger("asm.pipeline")

#: How long a provider's stream may take to close after its final message before it is left to
#: close in the background (its answer is already taken).
CLOSE_GRACE = 1.0


def model_for(state: RunState, name: str) -> str:
    """The run's model applies to the provider that lists it (or was asked for by name)."""
    provider = state.kernel.providers[name]
    wanted = state.run.model or state.kernel.config.run.model
    if wanted and (name == state.run.provider or any(m.name == wanted for m in provider.models)):
        return wanted
    return provider.default_model


def price_of(provider: Provider, model: str | None, usage: Usage | None) -> float | None:
    if usage is None:
        return None
    for info in provider.models:
        if info.name == model and info.price is not None:
            return info.price.cost(usage)
    return None


async def call_provider(state: RunState) -> MessageDone:
    """One model call with the run's resilience policy; returns the complete response."""
    config = state.kernel.config.resilience
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.deadline
    try:
        async with asyncio.timeout_at(deadline) as scope:
            try:
                return await _try_candidates(state, deadline)
            except ContextLengthError as exc:
                # One compaction (or a tighter cut, by the provider's own count), one retry.
                from ..context.stage import recover

                await recover(state, exc)
                return await _try_candidates(state, deadline)
    except TimeoutError:
        if not scope.expired():
            raise
        raise ProviderTimeoutError(
            f"the provider call did not finish within resilience.deadline = {config.deadline:g} s "
            "(every attempt, wait and failover included)",
            provider=state.provider_name,
            output_started=state.output_started,
            hint="raise resilience.deadline, or check the provider",
        ) from None


async def _try_candidates(state: RunState, deadline: float) -> MessageDone:
    assert state.plan is not None
    config = state.kernel.config.resilience
    loop = asyncio.get_running_loop()
    order = list(state.plan.candidates)
    if state.provider_name in order:  # stay with the provider that answered earlier turns
        order.remove(state.provider_name)
        order.insert(0, state.provider_name)
    last_error: ProviderError | None = None
    retry: RetryPolicy | None = None
    for index, name in enumerate(order):
        provider = state.kernel.providers[name]
        model = model_for(state, name)
        breaker = state.kernel.breakers.get(name, model)
        attempt = 0
        while True:
            before = breaker.current()
            if not breaker.allow():
                state.defer(
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
                done = await _attempt(state, name, provider, model)
            except ProviderError as exc:
                if exc.retryable:
                    breaker.failure()
                else:
                    breaker.probing = False  # a bad request says nothing about the target's health
                _breaker_changed(state, name, model, before, breaker.current())
                _record_failed_attempt(state, name, provider, model, attempt, exc)
                last_error = exc
                if not exc.retryable or exc.output_started:
                    await state.writer.flush()
                    raise
                remaining = deadline - loop.time()
                if attempt < config.max_attempts and breaker.current() == "closed":
                    if retry is None:
                        # Seeded by the run id, so a run's jitter is reproducible in tests.
                        retry = RetryPolicy(config, random.Random(state.run.id))
                    delay = retry.delay(attempt, exc.retry_after)
                    if delay < remaining:
                        await state.emit(
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
                _breaker_changed(state, name, model, before, breaker.current())
                state.provider_name = name
                state.manager.remember_provider(state.session.id, name)
                return done
        if not config.failover or loop.time() >= deadline or index == len(order) - 1:
            break
        state.defer(
            EventType.PROVIDER_FAILOVER,
            {
                "from": name,
                "to": order[index + 1],
                "error_code": last_error.code if last_error else "provider.circuit_open",
            },
        )
    await state.writer.flush()  # what the attempts recorded is stored before the error surfaces
    if last_error is not None:
        raise last_error
    raise CapabilityError(
        "every candidate provider is unavailable: their circuit breakers are open",
        hint="wait for the breakers' cooldown (resilience.breaker_cooldown) or configure another provider",
    )


def _record_failed_attempt(
    state: RunState, name: str, provider: Provider, model: str, attempt: int, exc: ProviderError
) -> None:
    state.defer(
        EventType.PROVIDER_ATTEMPT_FAILED,
        {"provider": name, "model": model, "attempt": attempt, "error": exc.to_dict()},
    )
    if exc.usage is not None:
        cost = price_of(provider, model, exc.usage)
        state.add_usage(exc.usage, cost)
        state.defer(
            EventType.TOKEN_USAGE_UPDATED,
            {"usage": to_dict(exc.usage), "total": to_dict(state.usage), "cost": cost, "failed_attempt": attempt},
        )
    elif exc.output_started or isinstance(exc, ProviderResponseError | ProviderTimeoutError):
        # The provider accepted the request and began answering (or may have): those tokens were
        # probably billed, and nobody said how many. The run's cost is unknown, never zero.
        state.add_usage(None, None)


def _breaker_changed(state: RunState, name: str, model: str, before: str, after: str) -> None:
    if before != after:
        state.defer(EventType.BREAKER_STATE_CHANGED, {"provider": name, "model": model, "from": before, "to": after})


async def _attempt(state: RunState, name: str, provider: Provider, model: str) -> MessageDone:
    assert state.plan is not None
    negotiation: Negotiation = state.plan.negotiations[name]
    reported: set[str] = state.data.setdefault("asm.degraded_reported", set())
    if negotiation.outcome == "degraded" and name not in reported:
        reported.add(name)
        state.defer(EventType.CAPABILITY_DEGRADED, {"provider": name, **negotiation.to_dict()})
    from ..context.stage import check_request, for_attempt

    await for_attempt(state, name, model)
    messages = state.messages
    missing = state.manager.transcript_needs(state.session.id) - frozenset(provider.capabilities)
    if missing:
        messages, changed = downgrade_history(messages, missing)
        if changed:
            state.defer(EventType.HISTORY_DOWNGRADED, {"provider": name, "missing": sorted(missing), **changed})
    options = state.options
    request = ProviderRequest(
        model=model,
        messages=messages,
        system=options.system,
        tools=state.tool_specs if "tools" in provider.capabilities else (),
        max_tokens=options.max_tokens,
        temperature=options.temperature,
        response_schema=options.response_schema,
        metadata={"session_id": state.session.id, "run_id": state.run.id},
    )
    request = await state.kernel.plugins.chain(
        "asm_before_provider_request", "request", request=request, session=state.session, run=state.run, provider=name
    )
    if not isinstance(request, ProviderRequest):
        raise ValidationError(
            "an asm_before_provider_request hook returned something that is not a ProviderRequest",
            hint="return attrs.evolve(request, ...) or None",
        )
    # The final request, after every hook: a broken one fails typed here, not as a provider 400.
    await check_request(state, name, provider, request)
    return await _stream(state, name, provider, request)


async def _stream(state: RunState, name: str, provider: Provider, request: ProviderRequest) -> MessageDone:
    usage: Usage | None = None
    done: MessageDone | None = None
    attempt_output = False
    stream = provider.stream(request)
    try:
        try:
            async for item in stream:
                if isinstance(item, TextDelta):
                    if item.text:
                        attempt_output = state.output_started = True
                        await state.emit(
                            EventType.MESSAGE_STREAMED, {"text": item.text, "index": item.index}, durable=False
                        )
                elif isinstance(item, ThinkingDelta):
                    attempt_output = state.output_started = True
                    await state.emit(
                        EventType.THINKING_STREAMED, {"text": item.text, "index": item.index}, durable=False
                    )
                elif isinstance(item, UsageUpdate):
                    usage = item.usage
                elif isinstance(item, MessageDone):
                    done = item
                    break  # the answer is complete: never wait on what the provider does after it
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
            if exc.usage is None and usage is not None:
                exc.usage = usage
            raise
    finally:
        await _close(stream, name, done is not None)
    if done is None:
        raise ProviderResponseError(
            f"provider {name!r} ended its stream without a final message",
            provider=name,
            output_started=attempt_output,
            usage=usage,
            hint="the response was truncated; nothing partial is kept as an answer",
        )
    return _received(state, name, provider, done, usage)


async def _close(stream: AsyncIterator[StreamEvent], name: str, answered: bool) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return
    if not answered:
        await aclose()
        return
    # The answer is in hand: give the provider a moment to clean up, then let it finish alone.
    task = asyncio.ensure_future(aclose())
    done, _ = await asyncio.wait({task}, timeout=CLOSE_GRACE)
    if not done:
        log.warning("provider %s did not close its stream within %.1f s after answering", name, CLOSE_GRACE)
        task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _received(state: RunState, name: str, provider: Provider, done: MessageDone, usage: Usage | None) -> MessageDone:
    usage = done.usage or usage
    requested = model_for(state, name)
    model = done.model or requested
    state.model = model
    state.last_message = done.message
    state.stop_reason = done.stop_reason
    # APIs answer with dated snapshot ids ("...-20260101"); price by what was asked for then.
    cost = price_of(provider, model, usage)
    if cost is None and model != requested:
        cost = price_of(provider, requested, usage)
    state.add_usage(usage, cost)
    state.defer(
        EventType.MESSAGE_RECEIVED,
        {"message": to_dict(done.message), "stop_reason": done.stop_reason, "model": model, "provider": name},
    )
    state.defer(
        EventType.TOKEN_USAGE_UPDATED,
        {"usage": to_dict(usage) if usage is not None else None, "total": to_dict(state.usage), "cost": cost},
    )
    state.run = evolve(state.run, model=model, provider=name)
    state.notify(
        "asm_after_provider_response",
        session=state.session,
        run=state.run,
        provider=name,
        message=done.message,
        usage=usage or Usage(),
    )
    return done
