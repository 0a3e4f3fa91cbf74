"""Request parsing and JSON responses: strict, size-capped, never a 500 for bad input.

Bodies are read through :func:`read_json`, which refuses more than ``serve.max_body_bytes``
(by ``Content-Length`` first, then by counting what arrives, so a chunked body cannot slip past),
refuses a media type other than JSON, ``NaN``/``Infinity``, lone surrogates and nesting deeper
than the stores accept. Query values are parsed by :class:`Query`, whose errors name the
parameter. Every JSON response passes :func:`asm_kernel.secrets.redact` on its way out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from asm_kernel.errors import PayloadTooLargeError, ValidationError
from asm_kernel.secrets import redact
from starlette.requests import Request
from starlette.responses import Response

from .errors import UnsupportedMediaTypeError

__all__ = ["read_json", "json_response", "Query", "MAX_INT", "MAX_DEPTH", "check_text"]

#: Larger integers are refused: the SQL stores keep BIGINTs.
MAX_INT = 2**63 - 1
#: JSON nested deeper than this is refused before it reaches a store.
MAX_DEPTH = 64


def _reject_constant(name: str) -> Any:
    raise ValidationError(f"{name} is not JSON", hint="send finite numbers only")


def check_text(value: Any, path: str = "body", depth: int = 0) -> None:
    """Refuse data no JSON encoder can send back: lone surrogates, huge ints, deep nesting."""
    if depth > MAX_DEPTH:
        raise ValidationError(f"nested deeper than {MAX_DEPTH} levels", path=path, hint="flatten the data")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("text is not valid Unicode (a lone surrogate)", path=path) from None
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if abs(value) > MAX_INT:
            raise ValidationError("integer out of range", path=path, hint=f"use at most {MAX_INT}")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError("numbers must be finite", path=path)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, path, depth + 1)
            check_text(item, f"{path}.{key}" if len(path) < 200 else path, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_text(item, f"{path}[{i}]" if len(path) < 200 else path, depth + 1)


async def read_json(request: Request, limit: int, *, required: bool = True) -> Any:
    """The request body as JSON (an empty body is ``{}`` when not ``required``)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(
            f"the request body is {declared} bytes; this server takes at most {limit}",
            hint="send less, or raise serve.max_body_bytes",
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(
                f"the request body is more than {limit} bytes", hint="send less, or raise serve.max_body_bytes"
            )
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        if required:
            raise ValidationError("the request needs a JSON body", path="body")
        return {}
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"the body is {media or 'untyped'}; this API takes application/json",
            hint="send Content-Type: application/json",
        )
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except ValidationError:
        raise
    except RecursionError:
        raise ValidationError("the JSON body is nested too deeply", path="body") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"the body is not valid JSON: {exc}"[:300], path="body") from None
    check_text(data)
    return data


def body_object(data: Any, allowed: frozenset[str]) -> dict[str, Any]:
    """``data`` as a JSON object with only ``allowed`` keys (a typo is an error, not ignored)."""
    if not isinstance(data, dict):
        raise ValidationError(f"the body must be a JSON object, got {type(data).__name__}", path="body")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValidationError(
            f"unknown field {unknown[0]!r}"[:200], path=unknown[0][:100], hint=f"fields: {', '.join(sorted(allowed))}"
        )
    return data


def _dumps(data: Any) -> bytes:
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a path or header: escape it instead
        return json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=str).encode()


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response with every registered secret removed."""
    return Response(_dumps(redact(data)), status_code=status, headers=headers, media_type="application/json")


class Query:
    """Typed access to query parameters; every error names the parameter."""

    def __init__(self, request: Request) -> None:
        self._params = request.query_params

    def text(self, name: str, *, max_length: int = 500) -> str | None:
        value = self._params.get(name)
        if value is None or value == "":
            return None
        if len(value) > max_length:
            raise ValidationError(f"{name} is longer than {max_length} characters", path=name)
        check_text(value, name)
        return value

    def integer(self, name: str, default: int | None, *, minimum: int = 0, maximum: int = MAX_INT) -> int | None:
        raw = self._params.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise ValidationError(f"{name} must be an integer, got {raw[:40]!r}", path=name) from None
        if not minimum <= value <= maximum:
            raise ValidationError(f"{name} must be from {minimum} to {maximum}, got {value}"[:200], path=name)
        return value

    def number(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        raw = self._params.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValidationError(f"{name} must be a number, got {raw[:40]!r}", path=name) from None
        if not (math.isfinite(value) and minimum <= value <= maximum):
            raise ValidationError(f"{name} must be from {minimum:g} to {maximum:g}, got {raw[:40]}", path=name)
        return value

    def boolean(self, name: str, default: bool = False) -> bool:
        raw = self._params.get(name)
        if raw is None or raw == "":
            return default
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValidationError(f"{name} must be true or false, got {raw[:40]!r}", path=name)

    def names(self, name: str) -> list[str] | None:
        """A list given as repeated parameters and/or comma-separated (``types=a,b&types=c``)."""
        found: list[str] = []
        for raw in self._params.getlist(name):
            found.extend(part.strip() for part in raw.split(",") if part.strip())
        for i, value in enumerate(found):
            if len(value) > 200:
                raise ValidationError(f"{name} values must be at most 200 characters", path=f"{name}[{i}]")
            check_text(value, name)
        if len(found) > 100:
            raise ValidationError(f"{name} takes at most 100 values", path=name)
        return found or None
