"""Known OpenAI models: context window, output limit and standard-tier prices.

Prices are US dollars per million tokens (input, output, cached input) for the Standard
processing tier, taken on :data:`PRICES_AS_OF` from OpenAI's pricing page
(:data:`PRICES_SOURCE`), cross-checked against a published mirror of it. Batch, Flex and
Priority tiers are not modelled. Check the page before relying on a number for billing.
"""

from __future__ import annotations

from asm_kernel.model import Capability, ModelInfo, Price
from attrs import frozen

from .settings import ModelSettings, OpenAISettings

__all__ = [
    "KNOWN_MODELS",
    "PRICES_AS_OF",
    "PRICES_SOURCE",
    "OPENAI_CAPABILITIES",
    "CHAT_CAPABILITIES",
    "COMPATIBLE_CAPABILITIES",
    "capabilities_for",
    "models_for",
]

PRICES_AS_OF = "2026-11-27"
PRICES_SOURCE = (
    "https://developers.openai.com/api/docs/pricing (Standard tier), "
    "cross-checked with https://www.morphllm.com/openai-api-pricing"
)

C = Capability

#: Responses API against OpenAI: everything asm knows how to use.
OPENAI_CAPABILITIES = frozenset(
    {
        C.STREAMING,
        C.TOOLS,
        C.VISION,
        C.JSON_SCHEMA,
        C.REASONING,
        C.PROMPT_CACHE,
        C.CANCEL,
        C.SYSTEM_PROMPT,
        C.USAGE,
    }
)
#: Chat Completions against OpenAI: reasoning happens but is never returned, so no REASONING.
CHAT_CAPABILITIES = OPENAI_CAPABILITIES - {C.REASONING}
#: A compatible server (``base_url`` set): what vLLM, Ollama and LM Studio all offer.
#: Declare more (or less) with ``capabilities = [...]`` in the provider's config.
COMPATIBLE_CAPABILITIES = frozenset({C.STREAMING, C.TOOLS, C.CANCEL, C.SYSTEM_PROMPT, C.USAGE})


@frozen
class _Known:
    context_window: int
    max_output_tokens: int
    input: float
    output: float
    cached_input: float
    reasoning: bool = True


#: name -> limits and prices. Reasoning models (GPT-5 family) are marked; GPT-4.x are not.
KNOWN_MODELS: dict[str, _Known] = {
    "gpt-5.5": _Known(1_050_000, 128_000, 5.00, 30.00, 0.50),
    "gpt-5.4": _Known(1_050_000, 128_000, 2.50, 15.00, 0.25),
    "gpt-5.4-mini": _Known(400_000, 128_000, 0.75, 4.50, 0.075),
    "gpt-5.4-nano": _Known(400_000, 128_000, 0.20, 1.25, 0.02),
    "gpt-5.2": _Known(400_000, 128_000, 1.75, 14.00, 0.175),
    "gpt-5.1": _Known(400_000, 128_000, 1.25, 10.00, 0.125),
    "gpt-5": _Known(400_000, 128_000, 1.25, 10.00, 0.125),
    "gpt-5-mini": _Known(400_000, 128_000, 0.25, 2.00, 0.025),
    "gpt-5-nano": _Known(400_000, 128_000, 0.05, 0.40, 0.005),
    "gpt-4.1": _Known(1_047_576, 32_768, 2.00, 8.00, 0.50, reasoning=False),
    "gpt-4.1-mini": _Known(1_047_576, 32_768, 0.40, 1.60, 0.10, reasoning=False),
    "gpt-4.1-nano": _Known(1_047_576, 32_768, 0.10, 0.40, 0.025, reasoning=False),
    "gpt-4o": _Known(128_000, 16_384, 2.50, 10.00, 1.25, reasoning=False),
    "gpt-4o-mini": _Known(128_000, 16_384, 0.15, 0.60, 0.075, reasoning=False),
}


def _price(input: float, output: float, cached: float, source: str, as_of: str) -> Price:
    # OpenAI bills no separate cache *write*: uncached input is simply input.
    return Price(input=input, output=output, cache_write=0.0, cache_read=cached, source=source, as_of=as_of)


def capabilities_for(settings: OpenAISettings) -> frozenset[str]:
    """What this configured provider can do: the config's list wins, else a default per API."""
    if settings.capabilities is not None:
        return frozenset(settings.capabilities)
    if settings.base_url is not None and not _is_openai(settings.base_url):
        return COMPATIBLE_CAPABILITIES
    return OPENAI_CAPABILITIES if settings.api == "responses" else CHAT_CAPABILITIES


def _is_openai(base_url: str) -> bool:
    return base_url.rstrip("/").startswith("https://api.openai.com")


def is_openai(settings: OpenAISettings) -> bool:
    return settings.base_url is None or _is_openai(settings.base_url)


def _from_override(name: str, override: ModelSettings, provider_caps: frozenset[str]) -> ModelInfo:
    price = None
    if override.input_price is not None and override.output_price is not None:
        price = _price(
            override.input_price,
            override.output_price,
            override.cached_input_price if override.cached_input_price is not None else override.input_price,
            "config",
            "",
        )
    caps = frozenset(override.capabilities) if override.capabilities is not None else provider_caps
    return ModelInfo(name, override.context_window, override.max_output_tokens, price, caps)


def models_for(settings: OpenAISettings) -> tuple[ModelInfo, ...]:
    """The models this provider declares: the built-in table (OpenAI only) plus config overrides.

    The configured ``model`` is always declared; an unknown one gets conservative limits and no
    price (so cost is reported as unknown, never as zero).
    """
    caps = capabilities_for(settings)
    infos: dict[str, ModelInfo] = {}
    if is_openai(settings):
        for name, known in KNOWN_MODELS.items():
            model_caps = caps if known.reasoning else caps - {Capability.REASONING}
            infos[name] = ModelInfo(
                name,
                known.context_window,
                known.max_output_tokens,
                _price(known.input, known.output, known.cached_input, PRICES_SOURCE, PRICES_AS_OF),
                model_caps,
            )
    for name, override in settings.models.items():
        infos[name] = _from_override(name, override, caps)
    if settings.model not in infos:
        infos[settings.model] = _from_override(settings.model, ModelSettings(), caps)
    # The configured model first: it is the default.
    ordered = [infos.pop(settings.model)]
    ordered.extend(infos.values())
    return tuple(ordered)
