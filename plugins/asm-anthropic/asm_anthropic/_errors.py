"""Anthropic's error vocabulary on top of :mod:`asm_kernel.provider_kit`.

The kit maps HTTP statuses and scrubs secrets; this module reads Anthropic's error bodies
(``{"type": "error", "error": {"type", "message"}, "request_id"}``), ``event: error`` inside a
stream, and the ``anthropic`` SDK's exception classes (the module is passed in by the provider,
which imported it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asm_kernel.errors import (
    ContextLengthError,
    InvalidRequestError,
    ModelNotFoundError,
    ProviderAuthError,
    ProviderConflictError,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloadedError,
    ProviderResponseError,
    ProviderServerError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
)
from asm_kernel.provider_kit import ProviderCall, context_length, error_class, transport_error_class

__all__ = ["KINDS", "QUOTA_CODES", "status_error", "translate"]

#: ``error.type`` in Anthropic's error bodies → asm error class
KINDS: Mapping[str, type[ProviderError]] = {
    "invalid_request_error": InvalidRequestError,
    "authentication_error": ProviderAuthError,
    "permission_error": ProviderAuthError,
    "not_found_error": ModelNotFoundError,
    "request_too_large": RequestTooLargeError,
    "conflict_error": ProviderConflictError,
    "rate_limit_error": RateLimitError,
    "billing_error": QuotaExceededError,
    "api_error": ProviderServerError,
    "overloaded_error": ProviderOverloadedError,
    "timeout_error": ProviderTimeoutError,
}

#: ``error.details.error_code`` of 429s that waiting does not cure: spending limits
QUOTA_CODES = frozenset({"contract_spend_limit_reached", "enforced_spend_limit_reached"})


def _body_field(body: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(body, Mapping):
            return None
        body = body.get(key)
    return body


def status_error(call: ProviderCall, exc: Any, *, in_stream: bool) -> ProviderError:
    """An ``APIStatusError`` (an HTTP error, or ``event: error`` inside a 200 stream)."""
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    etype = getattr(exc, "type", None) or _body_field(body, "error", "type")
    text = getattr(exc, "api_message", None) or _body_field(body, "error", "message") or "no message"
    code = getattr(exc, "error_code", None) or _body_field(body, "error", "details", "error_code")
    kind = QuotaExceededError if code in QUOTA_CODES else KINDS.get(str(etype))
    # "prompt is too long: N tokens > M maximum" is an invalid_request_error (or request_too_large):
    # the one 400 the kernel can cure, by compacting and retrying.
    numbers = context_length(str(text)) if kind in (InvalidRequestError, RequestTooLargeError, None) else None
    if numbers is not None:
        kind = ContextLengthError
    if in_stream or status == 200:
        status, where = None, "in the response stream"
    else:
        where = f"HTTP {status}"
    label = etype or "error"
    message = f"Anthropic API error {where} ({label}): {text}"
    if error_class(status, kind=kind) is ProviderAuthError and call.key is not None:
        message = f"Anthropic rejected the API key from {call.key.source} ({where}, {label}): {text}"
    return call.status_error(
        status,
        message,
        kind=kind,
        headers=getattr(getattr(exc, "response", None), "headers", None),
        request_id=getattr(exc, "request_id", None) or _body_field(body, "request_id"),
        error_type=str(etype) if etype else None,
        error_code=code if isinstance(code, str) else None,
        **(numbers or {}),
    )


def translate(
    call: ProviderCall,
    exc: BaseException,
    *,
    sdk: Any,
    in_stream: bool,
    endpoint: str,
    timeouts: tuple[float, float, float | None],
) -> ProviderError:
    """The asm error for an exception of the SDK (``sdk`` is the ``anthropic`` module), of its
    HTTP library, of the total deadline, or of decoding the stream.

    ``timeouts`` is (connect, read, total) in seconds, for the messages.
    """
    connect, read, total = timeouts
    transport = transport_error_class(exc)
    if isinstance(exc, sdk.APIStatusError):
        return status_error(call, exc, in_stream=in_stream)
    if isinstance(exc, sdk.APITimeoutError) or transport is ProviderTimeoutError:
        waiting = "waiting for the next stream event" if in_stream else "before responding"
        return call.error(
            ProviderTimeoutError,
            f"Anthropic API timed out {waiting} (connect_timeout {connect} s, read_timeout {read} s)",
            hint="raise read_timeout/connect_timeout in the provider's config if the network is slow",
            timeout=read if in_stream else connect,
        )
    if type(exc) is TimeoutError:  # the Deadline's, not the HTTP library's
        return call.error(
            ProviderTimeoutError,
            f"Anthropic API response exceeded total_timeout ({total} s)",
            hint="raise total_timeout in the provider's config for long answers",
            timeout=total,
        )
    if isinstance(exc, sdk.APIConnectionError) or transport is ProviderConnectionError:
        cause = exc.__cause__ if isinstance(exc, sdk.APIConnectionError) and exc.__cause__ else exc
        where = "mid-stream" if in_stream else "before a response"
        return call.error(
            ProviderConnectionError,
            f"connection to the Anthropic API at {endpoint} failed {where}: {type(cause).__name__}: {cause}",
            hint=None if in_stream else "check base_url and the network",
        )
    if isinstance(exc, sdk.APIResponseValidationError | ValueError):
        return call.error(
            ProviderResponseError,
            f"the Anthropic API sent a malformed stream: {type(exc).__name__}: {exc}",
            hint="nothing partial is kept as an answer",
        )
    if in_stream and isinstance(exc, AttributeError | KeyError | TypeError | IndexError):
        return call.error(
            ProviderResponseError,
            f"the Anthropic API sent a stream event of an unexpected shape: {type(exc).__name__}: {exc}",
        )
    return call.error(ProviderError, f"Anthropic request failed: {type(exc).__name__}: {exc}")
