"""The ``context`` turn stage and the context checks of the request path.

* :func:`context_stage` cuts the window of the next model call for the first candidate (after an
  automatic compaction when the ``summarize`` strategy's threshold is reached) and sets
  ``state.messages``;
* :func:`for_attempt` cuts it again when a failover moves the call to another target;
* :func:`check_request` validates the final request (after every hook) and its size against the
  target's window, and records what is sent as ``context_prepared`` (deferred: no extra write);
* :func:`recover` answers a provider's context-length error: one compaction (or a tighter cut
  with the provider's own count) before the one retry.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

from attrs import define, evolve

from ..errors import AsmError, ContextLengthError, ContextWindowExceededError
from ..events import EventType
from ..model import Message, ModelInfo, ProviderRequest, utcnow
from ..serialization import dumps, to_dict
from .compaction import payload as compaction_payload
from .compaction import plan, render_for_summary, summarize
from .settings import ContextSettings, resolve
from .tokens import DEFAULT_ESTIMATOR, TokenEstimator
from .validate import validate_request
from .window import Limits, Window, cut_window

if TYPE_CHECKING:
    from ..interfaces import Provider
    from ..pipeline.state import RunState
    from .transcript import TranscriptBuilder

__all__ = ["context_stage", "for_attempt", "check_request", "recover", "Prepared", "model_info", "estimator_of",
           "limits_for", "KEY"]

log = logging.getLogger("asm.context")

#: ``state.data`` key of the window the context stage prepared.
KEY = "asm.context"
#: Default output reserve (tokens) when neither the run nor ``[context]`` sets one.
DEFAULT_RESERVE = 8_192


@define
class Prepared:
    """The window of this turn for one target, and what judging it needed."""

    window: Window
    provider: str
    model: str
    digest: str
    settings: ContextSettings
    hard: int | None
    estimator: TokenEstimator
    messages: list[Message]
    scale: float = 1.0
    retry: str | None = None
    compaction_error: dict[str, Any] | None = None
    exact: int | None = None
    recorded: bool = False


def model_info(provider: Provider, model: str) -> ModelInfo | None:
    """The model's limits as the provider declares them (None when it does not know the model)."""
    for info in provider.models:
        if info.name == model:
            return info
    lookup = getattr(provider, "model_info", None)
    if callable(lookup):
        try:
            found = lookup(model)
        except Exception:  # a provider's lookup is a convenience, never a reason to fail a run
            return None
        return found if isinstance(found, ModelInfo) else None
    return None


def estimator_of(provider: Provider, model: str) -> TokenEstimator:
    """The provider's estimator for ``model`` (``Provider.token_estimator``), else the default."""
    declared = getattr(provider, "token_estimator", None)
    if callable(declared):
        found = declared(model)
        if isinstance(found, TokenEstimator):
            return found
    return DEFAULT_ESTIMATOR


def limits_for(settings: ContextSettings, info: ModelInfo | None, output: int | None) -> tuple[Limits, int | None]:
    """The window's limits and the model's hard limit (its window minus the output reserve)."""
    hard = None
    if info is not None:
        reserve = output or settings.reserve_output or min(
            DEFAULT_RESERVE, info.max_output_tokens, max(1, info.context_window // 4)
        )
        hard = max(1, info.context_window - reserve)
    wanted = settings.max_tokens
    if isinstance(wanted, float):
        budget = int(hard * wanted) if hard is not None else None
    elif isinstance(wanted, int):
        budget = min(wanted, hard) if hard is not None else wanted
    else:
        budget = hard
    return Limits(budget, settings.max_messages, settings.age_seconds, settings.strategy != "full"), hard


def _digest(request_system: str | None, tools: Any) -> str:
    text = dumps({"system": request_system, "tools": [to_dict(t) for t in tools]})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


async def prepare(
    state: RunState,
    name: str,
    *,
    scale: float = 1.0,
    retry: str | None = None,
    force_compact: bool = False,
    cap: int | None = None,
) -> Prepared:
    """Cut the window for provider ``name`` (compacting first when the strategy says so)."""
    from ..pipeline.call import model_for

    kernel = state.kernel
    provider = kernel.providers[name]
    model = model_for(state, name)
    settings = resolve(kernel.config.context, state.options.context)
    estimator = estimator_of(provider, model)
    tools = state.tool_specs if "tools" in provider.capabilities else ()
    fixed = estimator.fixed(state.options.system, tools)
    digest = _digest(state.options.system, tools)
    limits, hard = limits_for(settings, model_info(provider, model), state.options.max_tokens)
    if cap is not None:  # the retry after a context-length error: smaller than what was refused
        limits = evolve(limits, budget=min(cap, limits.budget) if limits.budget is not None else cap, truncate=True)
    builder = await state.transcript_builder()
    error = None
    if force_compact or settings.strategy == "summarize":
        error = await _maybe_compact(state, builder, settings, estimator, fixed, limits, name, model, force_compact)
    now = utcnow()
    target = (name, model, digest)
    window = cut_window(builder, limits, estimator, fixed=fixed, now=now, target=target, scale=scale)
    exact = None
    count_tokens = getattr(provider, "count_tokens", None)
    if (
        settings.exact_count and callable(count_tokens) and window.dropped and window.count != "anchored"
        and limits.budget is not None and scale == 1.0 and window.dropped[0].get("reason") == "max_tokens"
    ):
        # The estimate says the transcript does not fit; an exact count may say it does.
        first = builder.summary.through if builder.summary is not None else 0
        whole = cut_window(builder, limits, estimator, fixed=fixed, now=now, target=target, start=first)
        try:
            exact = int(await count_tokens(_request(state, model, tools, whole.messages)))
        except Exception as exc:  # an optimisation only: the estimate stands
            log.info("provider %s could not count tokens (%s); the estimate is used", name, exc)
        else:
            if exact <= limits.budget:
                window = evolve(whole, counted=exact, count="exact")
    prepared = Prepared(window, name, model, digest, settings, hard, estimator, list(window.messages), scale, retry,
                        error, exact)
    state.data[KEY] = prepared
    return prepared


def _request(state: RunState, model: str, tools: Any, messages: Any) -> ProviderRequest:
    options = state.options
    return ProviderRequest(model=model, messages=messages, system=options.system, tools=tools,
                           max_tokens=options.max_tokens, metadata={"session_id": state.session.id})


async def _maybe_compact(
    state: RunState,
    builder: TranscriptBuilder,
    settings: ContextSettings,
    estimator: TokenEstimator,
    fixed: int,
    limits: Limits,
    name: str,
    model: str,
    force: bool,
) -> dict[str, Any] | None:
    """Compact when the whole transcript passes ``compact_at`` of the budget (or when forced)."""
    if not builder.groups or (limits.budget is None and not force):
        return None
    if not force:
        everything = cut_window(builder, Limits(truncate=False), estimator, fixed=fixed, now=utcnow())
        if limits.budget is None or everything.estimated <= settings.compact_at * limits.budget:
            return None
    first = builder.summary.through if builder.summary is not None else 0
    summary_tokens = settings.summary_max_tokens + 32
    through = plan(builder, estimator, fixed=fixed, budget=limits.budget, target=settings.compact_to,
                   keep_recent=settings.keep_recent, summary_tokens=summary_tokens,
                   input_limit=limits.budget)
    if through <= first:
        return None
    summarizer = settings.summarizer or name
    summary_model = settings.summary_model or (model if summarizer == name else None)
    try:
        result = await summarize(state.kernel, summarizer, summary_model, render_for_summary(builder, through),
                                 prompt=settings.summary_prompt, max_tokens=settings.summary_max_tokens,
                                 session=state.session, run=state.run)
    except AsmError as exc:
        exc.scrub()
        log.warning("run %s: compaction by %s failed (%s); the window is truncated instead", state.run.id,
                    summarizer, exc.code)
        return exc.to_dict()
    trigger = "context_length" if force else "auto"
    await state.emit(EventType.CONTEXT_COMPACTED, compaction_payload(builder, through, result, trigger))
    state.add_usage(result.usage, result.cost)
    state.defer(
        EventType.TOKEN_USAGE_UPDATED,
        {"usage": to_dict(result.usage) if result.usage else None, "total": to_dict(state.usage),
         "cost": result.cost, "compaction": True},
    )
    await state.manager.transcript_builder(state.session.id)  # the builder reads the new summary
    return None


async def context_stage(state: RunState) -> None:
    """The messages the next call sends: the window of the transcript for the first candidate."""
    await state.writer.flush()  # this turn's context includes everything recorded so far
    assert state.plan is not None
    candidates = state.plan.candidates
    name = state.provider_name if state.provider_name in candidates else candidates[0]
    prepared = await prepare(state, name)
    state.messages = prepared.messages


async def for_attempt(state: RunState, name: str, model: str) -> None:
    """Cut the window again for a failover target, unless a plugin has replaced it."""
    prepared: Prepared | None = state.data.get(KEY)
    if prepared is None or state.messages is not prepared.messages:
        return
    if (prepared.provider, prepared.model) == (name, model):
        return
    new = await prepare(state, name, scale=prepared.scale, retry=prepared.retry)
    state.messages = new.messages


async def check_request(state: RunState, name: str, provider: Provider, request: ProviderRequest) -> None:
    """Validate the final request and its size; record the window it carries (once)."""
    validate_request(request, name)
    prepared: Prepared | None = state.data.get(KEY)
    ours = prepared is not None and (prepared.provider, prepared.model) == (name, request.model)
    estimator = prepared.estimator if ours and prepared else estimator_of(provider, request.model)
    estimated = estimator.request(request.system, request.tools, request.messages)
    if ours and prepared is not None:
        # What hooks added on top of the window is estimated; the window's own count stands.
        counted = prepared.window.counted + max(0, estimated - prepared.window.estimated)
        hard = prepared.hard
    else:
        settings = resolve(state.kernel.config.context, state.options.context)
        hard = limits_for(settings, model_info(provider, request.model), request.max_tokens)[1]
        counted = estimated
    if hard is not None and counted > hard:
        count_tokens = getattr(provider, "count_tokens", None)
        exact = None
        if callable(count_tokens):
            try:
                exact = int(await count_tokens(request))
            except Exception as exc:
                log.info("provider %s could not count tokens (%s)", name, exc)
        if exact is None or exact > hard:
            raise ContextWindowExceededError(
                f"the request to {name} ({request.model}) holds about {exact or counted} tokens, over the "
                f"{hard} its context window leaves after the output reserve",
                hint="a stage or asm_before_provider_request hook added to the window; or raise the model's "
                "window / lower the output reserve ([context] reserve_output, the run's max_tokens)",
                provider=name, budget=hard, required=exact or counted,
            )
    if ours and prepared is not None and not prepared.recorded:
        prepared.recorded = True
        state.defer(EventType.CONTEXT_PREPARED, _record(state, prepared))


def _record(state: RunState, prepared: Prepared) -> dict[str, Any]:
    settings = prepared.settings
    data: dict[str, Any] = {
        "turn": state.turn,
        "provider": prepared.provider,
        "model": prepared.model,
        "strategy": settings.strategy,
        "budget": prepared.window.budget,
        "limits": {"max_tokens": settings.max_tokens, "max_messages": settings.max_messages,
                   "max_age": settings.age_seconds},
        **prepared.window.record(),
        "prompt_digest": prepared.digest,
        "estimator": prepared.estimator.name,
    }
    if prepared.exact is not None:
        data["exact_tokens"] = prepared.exact
    if prepared.retry:
        data["retry"] = prepared.retry
    if prepared.compaction_error:
        data["compaction_error"] = prepared.compaction_error
    return data


async def recover(state: RunState, error: ContextLengthError) -> None:
    """Before the one retry after ``error``: compact (summarize strategy) and cut tighter.

    The refused request held ``counted`` tokens by asm's count. When the provider's message gives
    its own numbers (``prompt_tokens`` over ``limit_tokens``), the retry's window is cut to
    ``counted`` times their ratio, less 5%; otherwise to half of ``counted``. Whole turns
    are dropped as ever; the newest always stays.
    """
    prepared: Prepared | None = state.data.get(KEY)
    assert state.plan is not None
    name = prepared.provider if prepared else (state.provider_name or state.plan.candidates[0])
    sent = prepared.window.counted if prepared is not None else None
    prompt, limit = error.details.get("prompt_tokens"), error.details.get("limit_tokens")
    cap = None
    if sent:
        ratio = limit / prompt * 0.95 if isinstance(prompt, int) and isinstance(limit, int) and prompt > 0 else 0.5
        cap = max(1, int(sent * min(ratio, 0.95)))
    settings = resolve(state.kernel.config.context, state.options.context)
    try:
        new = await prepare(state, name, retry="context_length", force_compact=settings.strategy == "summarize",
                            cap=cap)
    except ContextWindowExceededError:
        raise error from None  # nothing is left to drop: the provider's refusal is the answer
    if prepared is not None and (new.window.included, new.window.summary_seq) == (
        prepared.window.included, prepared.window.summary_seq
    ):
        raise error  # the same request again would be refused again
    state.messages = new.messages
