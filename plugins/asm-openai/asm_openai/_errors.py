"""OpenAI's error vocabulary on top of :mod:`asm_kernel.provider_kit`.

The kit maps HTTP statuses and scrubs secrets; this module reads OpenAI's error bodies
(``{"error": {"message", "type", "param", "code"}}``), its in-stream error objects, and the
``openai`` SDK's exception classes (imported lazily, inside :func:`translate`).
"""

from __future__ import annotations

from typing import Any

from asm_kernel.errors import (
    ContextLengthError,
    InvalidRequestError,
    ModelNotFoundError,
    ProviderAuthError,
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
from asm_kernel.provider_kit import ProviderCall, context_length, transport_error_class

__all__ = ["kind_of", "payload_error", "translate"]

_SERVER = {"server_error", "internal_error", "internal_server_error", "api_error"}
_RATE = {"rate_limit_exceeded", "rate_limit_error", "requests", "tokens"}
_OVERLOADED = {"overloaded", "overloaded_error", "server_overloaded", "service_unavailable", "slow_down"}
_TOO_LARGE = {"string_above_max_length", "request_too_large"}
_AUTH = {"invalid_api_key", "authentication_error", "permission_error", "unauthorized"}


def kind_of(code: str | None, type_: str | None) -> type[ProviderError] | None:
    """The asm error class an OpenAI error ``code`` or ``type`` names, if any."""
    for value in (code, type_):
        if not value:
            continue
        if value == "insufficient_quota":
            return QuotaExceededError
        if value in _RATE:
            return RateLimitError
        if value in _OVERLOADED:
            return ProviderOverloadedError
        if value in _SERVER:
            return ProviderServerError
        if value == "context_length_exceeded":
            return ContextLengthError
        if value in _TOO_LARGE:
            return RequestTooLargeError
        if value == "model_not_found":
            return ModelNotFoundError
        if value in _AUTH:
            return ProviderAuthError
        if value.startswith("invalid_") or value == "bad_request":
            return InvalidRequestError
    return None


def _field(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) else None


def payload_error(call: ProviderCall, payload: Any, *, during: str) -> ProviderError:
    """An error object that arrived inside a 200 stream (``error`` event, ``response.failed``)."""
    if not isinstance(payload, dict):
        return call.error(ProviderResponseError, f"{during}: the server reported an error without details")
    code, type_, param = _field(payload, "code"), _field(payload, "type"), _field(payload, "param")
    message = _field(payload, "message") or "no message"
    kind = kind_of(code, type_)
    numbers = context_length(message) if kind in (ContextLengthError, InvalidRequestError, None) else None
    if numbers is not None:
        kind = ContextLengthError
    details: dict[str, Any] = dict(numbers or {})
    return call.status_error(
        None,
        f"{during}: {code or type_ or 'error'}: {message}",
        kind=kind,
        error_code=code,
        error_type=type_,
        error_param=param,
        **details,
    )


def _status_error(call: ProviderCall, exc: Any, who: str) -> ProviderError:
    status: int = exc.status_code
    # The SDK hands over the body's "error" object (or the raw body when it is not JSON).
    body = exc.body if isinstance(exc.body, dict) else {}
    code, type_, param = _field(body, "code"), _field(body, "type"), _field(body, "param")
    message = _field(body, "message") or f"HTTP {status}"
    details: dict[str, Any] = {}
    if status == 422:
        details["reason"] = "unprocessable_entity"
    kind = kind_of(code, type_)
    numbers = context_length(message) if kind in (ContextLengthError, InvalidRequestError, None) else None
    if numbers is not None:
        kind = ContextLengthError
        details.update(numbers)
    elif kind is ContextLengthError:
        details.update(context_length(message) or {})
    return call.status_error(
        status,
        f"HTTP {status} from {who}: {message}",
        kind=kind,
        headers=exc.response.headers,
        request_id=getattr(exc, "request_id", None) or call.request_id,
        error_code=code,
        error_type=type_,
        error_param=param,
        **details,
    )


def translate(call: ProviderCall, exc: BaseException, *, endpoint: str) -> ProviderError:
    """The asm error for an exception of the SDK, of its HTTP library, or of decoding the stream.

    ``endpoint`` names the server in messages (without credentials).
    """
    import openai

    who = call.vendor
    transport = transport_error_class(exc)
    if isinstance(exc, openai.APITimeoutError) or transport is ProviderTimeoutError:
        return call.error(
            ProviderTimeoutError, f"the request to {who} at {endpoint} timed out (connect or read timeout)"
        )
    if isinstance(exc, openai.APIConnectionError) or transport is ProviderConnectionError:
        cause = exc.__cause__ if isinstance(exc, openai.APIConnectionError) and exc.__cause__ else exc
        return call.error(ProviderConnectionError, f"connection to {endpoint} failed: {type(cause).__name__}: {cause}")
    if isinstance(exc, openai.APIStatusError):
        return _status_error(call, exc, who)
    if isinstance(exc, openai.APIResponseValidationError):
        return call.error(ProviderResponseError, f"the server's response did not match the API: {exc.message}")
    if isinstance(exc, openai.APIError):
        body = exc.body if isinstance(exc.body, dict) else {"message": exc.message}
        return payload_error(call, body, during="error inside the stream")
    if isinstance(exc, ValueError | UnicodeDecodeError):  # JSONDecodeError is a ValueError
        return call.error(ProviderResponseError, f"malformed data in the response stream: {type(exc).__name__}: {exc}")
    if isinstance(exc, openai.OpenAIError):
        return call.error(ProviderError, f"OpenAI SDK error: {exc}")
    return call.error(ProviderResponseError, f"unexpected {type(exc).__name__} while reading the response: {exc}")
