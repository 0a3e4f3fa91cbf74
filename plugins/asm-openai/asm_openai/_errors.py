"""Map ``openai`` SDK exceptions and in-stream error payloads onto asm's error taxonomy.

Only server-side error text reaches a message, and any occurrence of the configured API key in
it is masked. The SDK is imported lazily (inside :func:`map_sdk_error`).
"""

from __future__ import annotations

from typing import Any

from asm_kernel.errors import (
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
from asm_kernel.resilience import parse_retry_after

__all__ = ["ErrorContext", "map_sdk_error", "error_from_payload"]


class ErrorContext:
    """What every error of one call carries: which provider, model, key hint and secret to mask."""

    def __init__(
        self, *, provider: str, model: str, key_path: str, secret: str | None, compatible: bool = False
    ) -> None:
        self.compatible = compatible
        self.provider = provider
        self.model = model
        self.key_path = key_path
        self._secret = secret
        self.output_started = False
        self.request_id: str | None = None

    def clean(self, text: str) -> str:
        if self._secret and len(self._secret) >= 4 and self._secret in text:
            text = text.replace(self._secret, "********")
        return text

    def make(self, cls: type[ProviderError], message: str, **kwargs: Any) -> ProviderError:
        kwargs.setdefault("request_id", self.request_id)
        return cls(
            self.clean(message),
            provider=self.provider,
            model=self.model,
            output_started=self.output_started,
            **kwargs,
        )


_SERVER = {"server_error", "internal_error", "internal_server_error", "api_error"}
_RATE = {"rate_limit_exceeded", "rate_limit_error", "requests", "tokens"}
_OVERLOADED = {"overloaded", "overloaded_error", "server_overloaded", "service_unavailable", "slow_down"}
_TOO_LARGE = {"context_length_exceeded", "string_above_max_length", "request_too_large"}
_AUTH = {"invalid_api_key", "authentication_error", "permission_error", "unauthorized"}


def _classify(code: str | None, type_: str | None) -> type[ProviderError] | None:
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
        if value in _TOO_LARGE:
            return RequestTooLargeError
        if value == "model_not_found":
            return ModelNotFoundError
        if value in _AUTH:
            return ProviderAuthError
        if value.startswith("invalid_") or value in ("invalid_request_error", "bad_request"):
            return InvalidRequestError
    return None


def error_from_payload(ctx: ErrorContext, payload: Any, *, during: str) -> ProviderError:
    """An error object that arrived inside a 200 stream (``error`` event, ``response.failed``)."""
    if not isinstance(payload, dict):
        return ctx.make(ProviderResponseError, f"{during}: the server reported an error without details")
    code = payload.get("code") if isinstance(payload.get("code"), str) else None
    type_ = payload.get("type") if isinstance(payload.get("type"), str) else None
    message = payload.get("message") if isinstance(payload.get("message"), str) else "no message"
    cls = _classify(code, type_) or ProviderError
    label = code or type_ or "error"
    return ctx.make(cls, f"{during}: {label}: {message}", error_code=code, error_type=type_)


def _status_error(ctx: ErrorContext, exc: Any) -> ProviderError:
    status: int = exc.status_code
    code = exc.code if isinstance(exc.code, str) else None
    type_ = exc.type if isinstance(getattr(exc, "type", None), str) else None
    message = exc.message if isinstance(exc.message, str) else f"HTTP {status}"
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        message = body["message"]
    request_id = getattr(exc, "request_id", None) or ctx.request_id
    retry_after = parse_retry_after(exc.response.headers)
    common: dict[str, Any] = {
        "status": status,
        "request_id": request_id,
        "error_code": code,
        "error_type": type_,
    }
    text = f"HTTP {status} from {'the OpenAI-compatible server' if ctx.compatible else 'OpenAI'}: {message}"
    if status == 400:
        cls = _classify(code, type_)
        if cls not in (RequestTooLargeError, ModelNotFoundError):
            cls = InvalidRequestError
        return ctx.make(cls, text, **common)
    if status in (401, 403):
        key_path = ctx.key_path
        hint = (
            f"check the API key: set OPENAI_API_KEY or {key_path}"
            if status == 401
            else f"the key in OPENAI_API_KEY / {key_path} lacks access to this model or project; "
            "check organization/project settings"
        )
        return ctx.make(ProviderAuthError, text, hint=hint, **common)
    if status == 404:
        return ctx.make(
            ModelNotFoundError, text, hint=f"check providers[].model ({ctx.model!r}) and base_url", **common
        )
    if status == 409:
        # A conflicting concurrent operation on the same object: the same request usually
        # succeeds a moment later, so ProviderConflictError is retryable.
        return ctx.make(ProviderConflictError, text, retry_after=retry_after, **common)
    if status == 413:
        return ctx.make(RequestTooLargeError, text, **common)
    if status == 422:
        return ctx.make(InvalidRequestError, text, reason="unprocessable_entity", **common)
    if status == 429:
        if code == "insufficient_quota" or type_ == "insufficient_quota":
            return ctx.make(
                QuotaExceededError,
                text,
                hint="add credits or raise the project's budget; waiting will not help",
                **common,
            )
        return ctx.make(RateLimitError, text, retry_after=retry_after, **common)
    if status in (503, 529):
        return ctx.make(ProviderOverloadedError, text, retry_after=retry_after, **common)
    if status >= 500:
        return ctx.make(ProviderServerError, text, retry_after=retry_after, **common)
    return ctx.make(ProviderError, text, **common)


def map_sdk_error(ctx: ErrorContext, exc: BaseException) -> ProviderError:
    """The asm error for an exception raised by the SDK (or while decoding its stream)."""
    import openai

    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return ctx.make(ProviderTimeoutError, "the request to OpenAI timed out (connect or read timeout)")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        detail = f" ({type(cause).__name__})" if cause is not None else ""
        return ctx.make(ProviderConnectionError, f"connection to the OpenAI endpoint failed{detail}: {exc.message}")
    if isinstance(exc, openai.APIStatusError):
        return _status_error(ctx, exc)
    if isinstance(exc, openai.APIResponseValidationError):
        return ctx.make(ProviderResponseError, f"the server's response did not match the API: {exc.message}")
    if isinstance(exc, openai.APIError):
        # An {"error": {...}} object inside a 200 stream: the SDK raises it without a status.
        return error_from_payload(
            ctx, exc.body if isinstance(exc.body, dict) else {"message": exc.message}, during="error inside the stream"
        )
    if isinstance(exc, ValueError | UnicodeDecodeError):  # JSONDecodeError is a ValueError
        return ctx.make(ProviderResponseError, f"malformed data in the response stream: {type(exc).__name__}: {exc}")
    if isinstance(exc, openai.OpenAIError):
        return ctx.make(ProviderError, f"OpenAI SDK error: {exc}")
    return ctx.make(ProviderResponseError, f"unexpected {type(exc).__name__} while reading the response: {exc}")
