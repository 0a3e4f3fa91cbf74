"""Secrets: values asm must never show, and the one place that hides them.

Every secret asm learns of — a config value interpolated from ``${VAR}``, a setting whose key
looks secret (``api_key``, ``token``, ``password``...), a :class:`~asm_kernel.config.Secret`, the
password of a URL's userinfo — is registered here. Everything asm stores or prints passes
through :func:`redact`: event payloads before they are stored, error messages and their
details, CLI output, log records (through :class:`RedactingFilter`) and component reprs. A
provider that reflects a key in an error body, or a model that echoes one, therefore cannot
leak it into the log, a store file or a terminal.

The registry is per process, like :mod:`logging`: a secret registered by one kernel is hidden
by every other, which is what a process printing to one terminal needs.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any

__all__ = [
    "REDACTED",
    "MIN_SECRET_LENGTH",
    "Redactor",
    "register_secret",
    "register_secrets",
    "looks_secret",
    "redact",
    "redact_text",
    "is_registered",
    "mask_url",
    "RedactingFilter",
    "install_log_filter",
    "default_redactor",
    "Secret",
]

#: What a secret is replaced by.
REDACTED = "[redacted]"
#: Shorter values are not registered: hiding every "abc" in every text would destroy output and
#: such a value is no secret anyway.
MIN_SECRET_LENGTH = 6


class Redactor:
    """A set of secret strings and a fast way to remove them from text and data."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:  # never the values
        return f"Redactor({len(self._values)} secrets)"

    def add(self, value: str) -> None:
        """Register ``value`` (and its URL-encoded form) as a secret."""
        if not isinstance(value, str):
            return
        forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
        forms = {f for f in forms if len(f) >= MIN_SECRET_LENGTH}
        if not forms or forms <= self._values:
            return
        with self._lock:
            values = self._values | forms
            # Longest first, so a secret containing another is replaced whole.
            alternatives = sorted(values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in alternatives))
            self._values = frozenset(values)

    def __contains__(self, value: object) -> bool:
        return value in self._values

    def text(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(REDACTED, text)

    def data(self, value: Any) -> Any:
        """``value`` with every secret removed from every string in it (dict keys included).

        Containers are copied only where something changed, so the common case (no secret in
        the data) allocates nothing.
        """
        if self._pattern is None:
            return value
        return self._walk(value, 0)

    def _walk(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if depth > 200:  # deeper data is refused by the stores; do not recurse without bound
            return value
        if isinstance(value, dict):
            changed = False
            out: dict[Any, Any] = {}
            for key, item in value.items():
                new_key = self.text(key) if isinstance(key, str) else key
                new_item = self._walk(item, depth + 1)
                changed = changed or new_key is not key or new_item is not item
                out[new_key] = new_item
            return out if changed else value
        if isinstance(value, list | tuple):
            items = [self._walk(item, depth + 1) for item in value]
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return type(value)(items) if isinstance(value, tuple) else items
        return value


_default = Redactor()


class Secret:
    """A string that never shows itself in ``repr``/``str``; call :meth:`reveal` to use it.

    Making one registers the value (see :func:`register_secret`), so it is also hidden wherever
    it is echoed back: an error body, a log line, a model's answer.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def default_redactor() -> Redactor:
    """The process's registry of secrets."""
    return _default


def register_secret(value: str | None, *, probable: bool = False) -> None:
    """Hide ``value`` from everything asm stores or prints from now on.

    ``probable=True`` is for a value that *may* be a secret (a config value read from the
    environment, whatever its key): it is registered only if it looks like one — long enough,
    and holding a digit or a symbol, or very long — so an interpolated model or store name
    (``memory``, ``claude-haiku``...) is not blanked out of every line asm prints. Values that
    are known secrets (an API key, a password, a :class:`Secret`) are always registered.
    """
    if value and (not probable or looks_secret(value)):
        _default.add(value)


def looks_secret(value: str) -> bool:
    """A guess that ``value`` is a credential rather than a name (see :func:`register_secret`)."""
    if len(value) < 8 or any(c.isspace() for c in value):
        return False
    if len(value) >= 20:
        return True
    has_digit = any(c.isdigit() for c in value)
    has_symbol = any(not c.isalnum() and c not in "-_./:" for c in value)
    mixed = any(c.isupper() for c in value) and any(c.islower() for c in value)
    return has_digit or has_symbol or mixed


def register_secrets(values: Iterable[str | None]) -> None:
    for value in values:
        register_secret(value)


def is_registered(value: str) -> bool:
    return value in _default


def redact_text(text: str) -> str:
    """``text`` with every registered secret replaced by :data:`REDACTED`."""
    return _default.text(text)


def redact(value: Any) -> Any:
    """Strings, lists and dicts with every registered secret replaced by :data:`REDACTED`."""
    return _default.data(value)


def mask_url(url: str) -> str:
    """``url`` with the password of its userinfo masked (``https://user:****@host/``).

    The password is also registered as a secret, so it is hidden wherever else it turns up.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.password is None:
        return redact_text(url)
    register_secret(urllib.parse.unquote(parts.password))
    register_secret(parts.password)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:****@{host}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class RedactingFilter(logging.Filter):
    """A logging filter that renders each record's message and removes every secret from it.

    Attach it to a handler (the CLI does, for stderr) so libraries' log lines — an HTTP client
    logging a URL with a password, say — cannot print a secret.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if len(_default):
            try:
                message = record.getMessage()
            except Exception:  # a broken format string: leave the record to the handler
                return True
            record.msg = redact_text(message)
            record.args = None
            if record.exc_info and not record.exc_text:
                # Handlers render exc_info after filters have run: render it now, redacted.
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact_text(record.exc_text)
        return True


def install_log_filter(handler: logging.Handler | None = None) -> RedactingFilter:
    """Attach a :class:`RedactingFilter` to ``handler`` (default: every handler of the root logger)."""
    flt = RedactingFilter()
    handlers = [handler] if handler is not None else logging.getLogger().handlers
    for h in handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(flt)
    return flt
