"""Secrets and credentials out of text: messages, error fields, reprs."""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from ..errors import AsmError
from ..secrets import mask_url, redact_text

__all__ = ["scrub_text", "scrub_error", "public_url", "safe_repr", "url_repr"]

_USERINFO = re.compile(r"(?<=://)[^/\s@'\"]+@")


def scrub_text(text: str) -> str:
    """``text`` without any registered secret and without the userinfo of any URL in it."""
    return redact_text(_USERINFO.sub("", text))


def _scrub_data(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {scrub_text(k) if isinstance(k, str) else k: _scrub_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub_data(v) for v in value)
    return value


def public_url(url: str) -> str:
    """``url`` without its userinfo (for messages: name the host, never the credentials)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return scrub_text(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return redact_text(urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, "")))


def safe_repr(type_name: str, /, **fields: object) -> str:
    """``Type(a=..., b=...)`` with URL passwords masked and every registered secret removed."""
    shown: list[str] = []
    for name, value in fields.items():
        if isinstance(value, str):
            value = mask_url(value) if "://" in value else redact_text(value)
        shown.append(f"{name}={value!r}")
    return f"{type_name}({', '.join(shown)})"


def url_repr(value: str | None) -> str:
    """``repr`` of a URL setting with its password masked: ``field(repr=url_repr)`` in attrs."""
    return repr(mask_url(value) if isinstance(value, str) else value)


def scrub_error(error: AsmError) -> AsmError:
    """Remove every registered secret and URL userinfo from every field of ``error``, in place."""
    error.message = scrub_text(error.message)
    if error.hint:
        error.hint = scrub_text(error.hint)
    error.details = _scrub_data(error.details)
    for attr in ("provider", "model", "request_id"):
        value = getattr(error, attr, None)
        if isinstance(value, str):
            setattr(error, attr, scrub_text(value))
    error.args = (error._render(),)
    return error
