"""The governance stages: every policy's ``reserve``/``settle`` around the steps that spend.

Installed by the builtin plugin ``builtin.policies`` (``asm_configure_pipeline``) when a kernel
has a policy with ``reserve``; a kernel without one runs exactly as before.

* ``preflight`` — after the policies' ``check_run``, a ``run`` step (one turn) is reserved;
* ``call`` — before the provider call its worst case is reserved (:func:`worst_case`); the
  request is clamped to the reserved output (``max_tokens``) by a last ``asm_before_provider_request``
  hook, which also reserves what other hooks added to the input; after the call the
  reservations are settled to the usage the provider reported (all of the reservation when it
  reported none, or when an answer was cut off after output began).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from attrs import Factory, define, evolve

from ...model import (
    ImageBlock,
    Message,
    ProviderRequest,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    Usage,
)
from ...pipeline.call import model_for
from ...policy import Held, Spend, count, reserve, settle
from ...serialization import dumps, to_dict

if TYPE_CHECKING:
    from ...pipeline import Pipeline
    from ...pipeline.state import RunState

__all__ = ["install", "worst_case", "input_bound", "clamp", "IMAGE_TOKENS", "MESSAGE_TOKENS", "DEFAULT_OUTPUT"]

Proceed = Callable[[], Awaitable[None]]

#: Upper bound of one image's input tokens (providers resize larger images below it).
IMAGE_TOKENS = 6_000
#: Framing tokens per message (role markers, separators), and for the system prompt.
MESSAGE_TOKENS = 16
#: Output reserved when neither the run nor the model's info says how much it may write
#: (the request is then sent with this max_tokens).
DEFAULT_OUTPUT = 4_096



@define
class _InFlight:
    """What was reserved for a run's provider call in flight (for the request hook)."""

    state: RunState
    input_tokens: int
    output: int
    extra: Held = Factory(list)


#: ``state.data`` key of the run's cache of message bounds.
_BOUNDS = "asm.budget.bounds"
#: Run id -> its provider call in flight, while one is.
_IN_FLIGHT: dict[str, _InFlight] = {}


def install(pipeline: Pipeline, kernel: Any) -> None:
    if not any(callable(getattr(p, "reserve", None)) for p in kernel.policies):
        return
    pipeline.wrap("preflight", _preflight)
    pipeline.wrap("call", _call)


def _text_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def input_bound(
    messages: Sequence[Message],
    system: str | None,
    tools: Sequence[ToolSpec],
    schema: Any = None,
    cache: dict[int, tuple[Message, int]] | None = None,
) -> int:
    """An upper bound of the input tokens of a request: UTF-8 bytes of everything sent (a
    byte-level BPE token covers at least one byte), framing per message, a fixed bound per image.

    ``cache`` (message id -> (message, bound)) spares a run re-measuring the messages its earlier
    calls sent: the transcript only grows.
    """
    total = MESSAGE_TOKENS + (_text_bytes(system) if system else 0)
    for tool in tools:
        total += _text_bytes(dumps(to_dict(tool)))
    if schema is not None:
        total += _text_bytes(dumps(schema))
    for message in messages:
        known = cache.get(id(message)) if cache is not None else None
        if known is not None and known[0] is message:
            total += known[1]
            continue
        bound = MESSAGE_TOKENS + sum(_block_bound(block) for block in message.content)
        if cache is not None:
            cache[id(message)] = (message, bound)  # the message is kept, so its id stays its own
        total += bound
    return total


def _block_bound(block: Any) -> int:
    if isinstance(block, TextBlock):
        return _text_bytes(block.text)
    if isinstance(block, ThinkingBlock):
        return _text_bytes(block.thinking) + _text_bytes(block.signature or "")
    if isinstance(block, RedactedThinkingBlock):
        return _text_bytes(block.data)
    if isinstance(block, ImageBlock):
        return IMAGE_TOKENS
    if isinstance(block, ToolUseBlock):
        return _text_bytes(block.id) + _text_bytes(block.name) + _text_bytes(dumps(block.input))
    if isinstance(block, ToolResultBlock):
        content = block.content
        if isinstance(content, str):
            return _text_bytes(block.tool_use_id) + _text_bytes(content)
        return _text_bytes(block.tool_use_id) + sum(_block_bound(b) for b in content)
    if isinstance(block, dict):
        return IMAGE_TOKENS if block.get("type") == "image" else _text_bytes(dumps(block))
    return _text_bytes(dumps(to_dict(block)))


def _output_of(state: RunState, provider: Any, model: str) -> int:
    asked = state.options.max_tokens
    info = next((m for m in provider.models if m.name == model), None)
    ceiling = info.max_output_tokens if info is not None else None
    if asked is not None:
        return min(asked, ceiling) if ceiling else asked
    return ceiling or DEFAULT_OUTPUT


def _input_price(state: RunState) -> float | None:
    """The highest price of one input token among the run's candidates (None: one is unknown)."""
    assert state.plan is not None
    worst = 0.0
    for name in state.plan.candidates:
        provider = state.kernel.providers[name]
        model = model_for(state, name)
        info = next((m for m in provider.models if m.name == model), None)
        if info is None or info.price is None:
            return None
        worst = max(worst, info.price.input, info.price.cache_write, info.price.cache_read)
    return worst / 1_000_000


def _price_bound(provider: Any, model: str, input_tokens: int, output_tokens: int) -> float | None:
    info = next((m for m in provider.models if m.name == model), None)
    price = info.price if info is not None else None
    if price is None:
        return None
    per_input = max(price.input, price.cache_write, price.cache_read)
    return (input_tokens * per_input + output_tokens * price.output) / 1_000_000


def worst_case(state: RunState) -> tuple[Spend, int]:
    """The most the next provider call may spend, over every provider it may go to, and the
    output tokens reserved for it (the request's max_tokens is clamped to them)."""
    assert state.plan is not None
    cache: dict[int, tuple[Message, int]] = state.data.setdefault(_BOUNDS, {})
    bound = input_bound(state.messages, state.options.system, state.tool_specs, state.options.response_schema, cache)
    output = 0
    cost: float | None = 0.0
    for name in state.plan.candidates:
        provider = state.kernel.providers[name]
        model = model_for(state, name)
        out = _output_of(state, provider, model)
        output = max(output, out)
        price = _price_bound(provider, model, bound, out)
        cost = None if cost is None or price is None else max(cost, price)
    return Spend(bound, output, cost, model_calls=1), output


async def _preflight(state: RunState, proceed: Proceed) -> None:
    await proceed()
    turn = Spend(turns=1)
    held = await reserve(state, "run", turn)
    await settle(held, turn)  # a run that started is a turn spent


def _delta(after: Usage, before: Usage) -> Spend:
    return Spend(
        (after.input_tokens - before.input_tokens)
        + (after.cache_creation_input_tokens - before.cache_creation_input_tokens)
        + (after.cache_read_input_tokens - before.cache_read_input_tokens),
        after.output_tokens - before.output_tokens,
        0.0,
    )


async def _call(state: RunState, proceed: Proceed) -> None:
    spend, output = worst_case(state)
    held = await reserve(state, "model_call", spend)
    usage, cost, started = state.usage, state.run_cost, state.output_started
    answered = False
    flight = _InFlight(state, spend.input_tokens, output)
    if held:
        _IN_FLIGHT[state.run.id] = flight
    try:
        await proceed()
        answered = True
    finally:
        _IN_FLIGHT.pop(state.run.id, None)
        await settle(flight.extra, Spend())  # what hooks added is in the actual spend below
        delta = _delta(state.usage, usage)
        billed = answered or (state.output_started and not started)
        if billed and delta.total_tokens == 0:
            actual = spend  # the provider reported nothing: it may have billed the worst case
        else:
            after = state.run_cost
            spent = after - cost if after is not None and cost is not None else spend.cost_usd
            actual = Spend(delta.input_tokens, delta.output_tokens, spent, model_calls=1 if billed else 0)
        count(state, model_calls=actual.model_calls)
        await settle(held, actual)


async def clamp(request: ProviderRequest, run_id: str) -> ProviderRequest | None:
    """The request as its reservation allows: max_tokens at most the reserved output.

    A request that hooks grew past the input reserved for it reserves the difference first (and
    is refused, like any step, when that does not fit).
    """
    flight = _IN_FLIGHT.get(run_id)
    if flight is None:
        return None
    cache = flight.state.data.get(_BOUNDS)
    bound = input_bound(request.messages, request.system, request.tools, request.response_schema, cache)
    if bound > flight.input_tokens:
        grown = bound - flight.input_tokens
        price = _input_price(flight.state)
        extra = Spend(grown, 0, None if price is None else grown * price)
        flight.extra.extend(await reserve(flight.state, "model_call", extra))
        flight.input_tokens = bound
    if request.max_tokens is not None and request.max_tokens <= flight.output:
        return None
    return evolve(request, max_tokens=flight.output)
