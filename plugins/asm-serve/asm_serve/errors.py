"""HTTP errors: the server's own error classes and the one table from error code to status.

Every error response is the asm error as JSON (``AsmError.to_dict()``: ``code``, ``type``,
``message``, ``retryable``, ``path``, ``hint`` and scalar details), scrubbed of every registered
secret. The status comes from :data:`STATUS_BY_CODE`, else :data:`STATUS_BY_CATEGORY`, else 500,
so a new kernel error code gets a sensible status through its category.
"""

from __future__ import annotations

from typing import Any

from asm_kernel.errors import AsmError

__all__ = [
    "HttpError",
    "RouteNotFoundError",
    "MethodNotAllowedError",
    "UnsupportedMediaTypeError",
    "NotImplementedYetError",
    "ShuttingDownError",
    "AuthError",
    "UnauthorizedError",
    "ForbiddenError",
    "SlowConsumerError",
    "STATUS_BY_CODE",
    "STATUS_BY_CATEGORY",
    "status_of",
    "error_body",
    "as_asm_error",
]


class HttpError(AsmError):
    """Something about the HTTP request itself (its route, method or media type)."""

    code = "http.error"
    category = "http"


class RouteNotFoundError(HttpError):
    code = "http.not_found"


class MethodNotAllowedError(HttpError):
    code = "http.method_not_allowed"


class UnsupportedMediaTypeError(HttpError):
    code = "http.unsupported_media_type"


class NotImplementedYetError(HttpError):
    """A route whose feature no installed component provides yet (approvals, before they exist)."""

    code = "http.not_implemented"


class ShuttingDownError(HttpError):
    """The server is shutting down and takes no new requests; retry against its successor."""

    code = "http.shutting_down"
    retryable = True


class AuthError(AsmError):
    code = "auth.error"
    category = "auth"


class UnauthorizedError(AuthError):
    """No API key, or one the server does not know."""

    code = "auth.unauthorized"


class ForbiddenError(AuthError):
    """A valid key that may not do this (a tenant key on an operator-only route)."""

    code = "auth.forbidden"


class SlowConsumerError(AsmError):
    """An event stream fell too far behind and was cut off; reconnect with ``Last-Event-ID``."""

    code = "serve.slow_consumer"
    category = "serve"
    retryable = True


#: Exact codes first. Why these: a store or queue that is busy is a retryable 503/429, a run or
#: session in the wrong state is a 409 conflict, a failure of the model provider behind a request
#: is a 502 (or 504 for its timeout), and what a caller named that is not configured is the
#: caller's mistake (400), not the server's.
STATUS_BY_CODE: dict[str, int] = {
    "validation.payload_too_large": 413,
    "config.unknown_component": 400,
    "storage.not_found": 404,
    "storage.session_not_found": 404,
    "storage.run_not_found": 404,
    "storage.already_exists": 409,
    "storage.seq_conflict": 409,
    "storage.write_conflict": 409,
    "storage.lease_lost": 409,
    "storage.read_only": 409,
    "storage.locked": 503,
    "storage.closed": 503,
    "storage.corrupt": 500,
    "provider.capability_missing": 400,
    "provider.timeout": 504,
    "runtime.queue_full": 429,
    "runtime.limit_exceeded": 503,
    "runtime.timeout": 504,
    "runtime.cancelled": 409,
    "http.not_found": 404,
    "http.method_not_allowed": 405,
    "http.unsupported_media_type": 415,
    "http.not_implemented": 501,
    "http.shutting_down": 503,
    "auth.unauthorized": 401,
    "auth.forbidden": 403,
    "serve.slow_consumer": 503,
}

STATUS_BY_CATEGORY: dict[str, int] = {
    "validation": 400,
    "config": 400,
    "state": 409,
    "storage": 503,
    "provider": 502,
    "policy": 403,
    "runtime": 500,
    "tool": 500,
    "plugin": 500,
    "http": 400,
    "auth": 401,
}


def status_of(error: AsmError) -> int:
    """The HTTP status of ``error``: by its code, else its category, else 500."""
    return STATUS_BY_CODE.get(error.code) or STATUS_BY_CATEGORY.get(error.category, 500)


def error_body(error: AsmError) -> dict[str, Any]:
    """The JSON body of an error response: the scrubbed ``to_dict()``, ``path`` always present."""
    data = error.scrub().to_dict()
    data.setdefault("path", None)
    return data


def as_asm_error(exc: BaseException) -> AsmError:
    """``exc`` as an AsmError: itself, or an internal error that says nothing of its text.

    An unexpected exception's text may hold anything (a query, a value), so the client gets its
    type only; the server logs the rest.
    """
    if isinstance(exc, AsmError):
        return exc
    return AsmError(f"internal error ({type(exc).__name__}); the server log has the details")
