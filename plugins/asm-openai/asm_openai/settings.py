"""Settings of ``use = "openai"`` components, validated by the kernel with path-precise errors.

This module imports nothing heavy: the plugin's entry point loads it at discovery time.
"""

from __future__ import annotations

from typing import Any, Literal

from asm_kernel.config import Secret
from asm_kernel.provider_kit import url_repr
from attrs import field, frozen

__all__ = ["OpenAISettings", "ModelSettings", "DEFAULT_MODEL"]

#: The model used when ``model`` is not set: the current small GPT-5.4 model (cheap, 400k window).
DEFAULT_MODEL = "gpt-5.4-mini"


def _positive(instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be greater than 0, got {value}")


def _non_negative(instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def _not_empty(instance: Any, attribute: Any, value: str) -> None:
    if not value.strip():
        raise ValueError(f"{attribute.name} must not be empty")


def _base_url(instance: Any, attribute: Any, value: str | None) -> None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError(f"{attribute.name} must start with http:// or https://, got {value[:60]!r}")


def _mask_headers(headers: dict[str, str]) -> str:
    return repr({k: "********" for k in headers})


@frozen
class ModelSettings:
    """``[providers.models."<name>"]``: what asm should believe about one model.

    Needed for local models (their context window is not in the built-in table) and to price a
    model the table does not know. Prices are US dollars per million tokens.
    """

    context_window: int = field(default=128_000, validator=_positive)
    max_output_tokens: int = field(default=16_384, validator=_positive)
    input_price: float | None = field(default=None, validator=_non_negative)
    output_price: float | None = field(default=None, validator=_non_negative)
    cached_input_price: float | None = field(default=None, validator=_non_negative)
    capabilities: list[str] | None = None


@frozen
class OpenAISettings:
    """Every key of a ``[[providers]]`` table with ``use = "openai"``.

    ``api_key`` left unset reads ``OPENAI_API_KEY``; with ``base_url`` set (a compatible server)
    a missing key is allowed and a placeholder is sent.
    """

    api: Literal["responses", "chat"] = "responses"
    model: str = field(default=DEFAULT_MODEL, validator=_not_empty)
    api_key: Secret | None = None
    base_url: str | None = field(default=None, validator=_base_url, repr=url_repr)
    organization: str | None = None
    project: str | None = None
    connect_timeout: float = field(default=10.0, validator=_positive)
    read_timeout: float = field(default=120.0, validator=_positive)
    total_timeout: float | None = field(default=600.0, validator=_positive)
    headers: dict[str, str] = field(factory=dict, repr=_mask_headers)
    max_tokens: int | None = field(default=None, validator=_positive)
    max_tokens_field: Literal["max_completion_tokens", "max_tokens"] | None = None
    capabilities: list[str] | None = None
    models: dict[str, ModelSettings] = field(factory=dict)
    reasoning_effort: str | None = None
    reasoning_summary: Literal["auto", "concise", "detailed"] | None = None
    include_encrypted_reasoning: bool = False
    store: bool | None = None
