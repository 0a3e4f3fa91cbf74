"""Claude models: context window, max output and prices (US dollars per million tokens).

Prices are Anthropic's list prices for the Claude API (base input, output, 5-minute cache write,
cache hit), as published on Anthropic's pricing page and per-model overview pages, read on
:data:`AS_OF`. Retired models are left out; a model that is not listed still works and gets a
conservative :class:`~asm_kernel.model.ModelInfo` (see :func:`model_info`), and the provider's
``models`` setting can add or correct entries without waiting for a release.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import frozen

from asm_kernel.model import Capability, ModelInfo, Price, Usage

from .settings import ModelOverride

__all__ = [
    "AS_OF",
    "SOURCE",
    "CAPABILITIES",
    "TieredPrice",
    "MODELS",
    "model_info",
    "conservative_info",
    "UNKNOWN_CONTEXT",
]

AS_OF = "2026-11-27"
SOURCE = "Anthropic Claude API list prices (pricing page and model overview pages)"

#: Limits assumed for a model this plugin does not know.
UNKNOWN_CONTEXT = 200_000
UNKNOWN_MAX_OUTPUT = 8_192

_CAPS = frozenset(
    {
        Capability.STREAMING,
        Capability.TOOLS,
        Capability.VISION,
        Capability.REASONING,
        Capability.PROMPT_CACHE,
        Capability.CANCEL,
        Capability.SYSTEM_PROMPT,
        Capability.USAGE,
    }
)
#: What the provider declares: what every current model can do.
CAPABILITIES = _CAPS | {Capability.JSON_SCHEMA}
_CAPS_JSON = CAPABILITIES


@frozen
class TieredPrice(Price):
    """A price that changes with the prompt's length (input + cache writes + cache reads).

    Requests whose prompt is over ``threshold`` tokens pay ``long`` on every token, output
    included. :meth:`cost` prices one response; sums over many responses are approximations.
    """

    threshold: int = 0
    long: Price | None = None

    def cost(self, usage: Usage) -> float:
        prompt = usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens
        if self.long is not None and prompt > self.threshold:
            return self.long.cost(usage)
        return super().cost(usage)


def _price(inp: float, out: float, write: float, read: float, note: str = "") -> Price:
    return Price(inp, out, write, read, source=SOURCE + (f"; {note}" if note else ""), as_of=AS_OF)


def _m(name: str, ctx: int, out: int, price: Price, caps: frozenset[str] = _CAPS_JSON) -> ModelInfo:
    return ModelInfo(name, context_window=ctx, max_output_tokens=out, price=price, capabilities=caps)


_M = 1_000_000
_K = 1_000
_OPUS_4_5 = "deprecated, retires 2027-01-22"
_SONNET_4_5 = "deprecated, retires 2026-11-30"

_haiku_5_5 = TieredPrice(
    0.10, 0.50, 0.125, 0.01,
    source=SOURCE + "; prompts up to 100,000 tokens, longer prompts priced at the higher tier",
    as_of=AS_OF,
    threshold=100_000,
    long=_price(0.50, 2.50, 0.625, 0.05, "prompts over 100,000 tokens"),
)

_TABLE: tuple[ModelInfo, ...] = (
    # current generation
    _m("claude-fable-5-2", _M, 128 * _K, _price(8.00, 40.00, 10.00, 0.20)),
    _m("claude-fable-5-1", _M, 128 * _K, _price(10.00, 50.00, 12.50, 0.25)),
    _m("claude-mythos-5-1", _M, 128 * _K, _price(10.00, 50.00, 12.50, 0.25, "limited availability")),
    _m("claude-opus-5-5", _M, 128 * _K, _price(4.00, 20.00, 5.00, 0.20)),
    _m("claude-sonnet-5-5", _M, 128 * _K, _price(2.00, 10.00, 2.50, 0.10, "cache read cut on 2026-10-07")),
    _m("claude-haiku-5-5", _M, 128 * _K, _haiku_5_5),
    # legacy, still served
    _m("claude-fable-5", _M, 128 * _K, _price(10.00, 50.00, 12.50, 1.00)),
    _m("claude-mythos-5", _M, 128 * _K, _price(10.00, 50.00, 12.50, 1.00, "limited availability")),
    _m("claude-opus-5", _M, 128 * _K, _price(5.00, 25.00, 6.25, 0.50)),
    _m("claude-sonnet-5", _M, 128 * _K, _price(2.00, 10.00, 2.50, 0.20)),
    _m("claude-opus-4-8", _M, 128 * _K, _price(5.00, 25.00, 6.25, 0.50)),
    _m("claude-opus-4-7", _M, 128 * _K, _price(5.00, 25.00, 6.25, 0.50)),
    _m("claude-opus-4-6", _M, 128 * _K, _price(5.00, 25.00, 6.25, 0.50)),
    _m("claude-sonnet-4-6", _M, 64 * _K, _price(3.00, 15.00, 3.75, 0.30)),
    _m("claude-opus-4-5", 200 * _K, 64 * _K, _price(5.00, 25.00, 6.25, 0.50, _OPUS_4_5)),
    _m("claude-opus-4-5-20251101", 200 * _K, 64 * _K, _price(5.00, 25.00, 6.25, 0.50, _OPUS_4_5)),
    _m("claude-sonnet-4-5", 200 * _K, 64 * _K, _price(3.00, 15.00, 3.75, 0.30, _SONNET_4_5)),
    _m("claude-sonnet-4-5-20250929", 200 * _K, 64 * _K, _price(3.00, 15.00, 3.75, 0.30, _SONNET_4_5)),
    _m("claude-haiku-4-5", 200 * _K, 64 * _K, _price(1.00, 5.00, 1.25, 0.10)),
    _m("claude-haiku-4-5-20251001", 200 * _K, 64 * _K, _price(1.00, 5.00, 1.25, 0.10)),
)

#: Every model this plugin knows, by API id.
MODELS: Mapping[str, ModelInfo] = {info.name: info for info in _TABLE}


def conservative_info(name: str) -> ModelInfo:
    """What is assumed of a model nobody described: modest limits, no price (cost not computed)."""
    return ModelInfo(name, context_window=UNKNOWN_CONTEXT, max_output_tokens=UNKNOWN_MAX_OUTPUT, price=None,
                     capabilities=_CAPS)


def _from_override(name: str, override: ModelOverride, base: ModelInfo | None) -> ModelInfo:
    price = base.price if base is not None else None
    if override.input_price is not None or override.output_price is not None:
        inp = override.input_price or 0.0
        price = Price(
            inp,
            override.output_price or 0.0,
            override.cache_write_price if override.cache_write_price is not None else inp * 1.25,
            override.cache_read_price if override.cache_read_price is not None else inp * 0.1,
            source="configured in asm (providers[].models)",
            as_of="",
        )
    return ModelInfo(
        name,
        context_window=override.context_window,
        max_output_tokens=override.max_output_tokens,
        price=price,
        capabilities=base.capabilities if base is not None else _CAPS,
    )


def model_info(name: str, overrides: Mapping[str, ModelOverride] | None = None) -> ModelInfo:
    """The description of ``name``: configured override, else the table, else conservative."""
    base = MODELS.get(name)
    if overrides and name in overrides:
        return _from_override(name, overrides[name], base)
    return base if base is not None else conservative_info(name)


def catalog(default_model: str, overrides: Mapping[str, ModelOverride] | None = None) -> tuple[ModelInfo, ...]:
    """Every model to declare: the table, the overrides and the configured default model."""
    names = list(MODELS)
    for extra in (*(overrides or {}), default_model):
        if extra not in names:
            names.append(extra)
    return tuple(model_info(n, overrides) for n in names)
