"""``[serve]``: the settings of ``asm serve``, validated by the kernel's strict config converter.

The kernel keeps the ``[serve]`` table as data (``Config.serve``); this module gives it its shape,
so a mistake is reported with its path (``serve.keys[0].agent_ids``) like every other config
error. API keys are given as a ``token`` (usually ``"${ASM_TENANT_KEY}"``: interpolated values and
values under a key named ``token`` are registered as secrets by the config loader) or as the
``sha256`` of the token, so the config file need not hold the token at all.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from asm_kernel.config import validate_settings
from asm_kernel.errors import ConfigError
from asm_kernel.secrets import register_secret
from attrs import field, frozen

__all__ = ["KeySettings", "ServeSettings", "load_settings", "is_loopback", "MIN_TOKEN_LENGTH"]

#: Shorter bearer tokens are refused: a guessable key is no protection.
MIN_TOKEN_LENGTH = 16
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _positive(instance: Any, attribute: Any, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be a finite number > 0, got {value}")


def _optional_positive(instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None:
        _positive(instance, attribute, value)


def _at_least_one(instance: Any, attribute: Any, value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be an integer of at least 1, got {value}")


def _port(instance: Any, attribute: Any, value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"port must be from 0 to 65535, got {value}")


def _non_empty(instance: Any, attribute: Any, value: str) -> None:
    if not value.strip():
        raise ValueError(f"{attribute.name} must not be empty")


@frozen(repr=False)
class KeySettings:
    """One ``[[serve.keys]]`` entry: a bearer API key and what it may see.

    ``agent_ids`` empty means every session (an operator key); otherwise the key's holder sees
    only sessions of those agents, and every other session is answered as not found.
    """

    name: str = field(validator=_non_empty)
    token: str | None = None
    sha256: str | None = None
    agent_ids: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never the token, nor its hash
        return f"KeySettings(name={self.name!r}, agent_ids={self.agent_ids!r})"


@frozen
class ServeSettings:
    """``[serve]``; every key is optional. See docs/guides/serve.md for what each one does."""

    host: str = "127.0.0.1"
    port: int = field(default=8765, validator=_port)
    keys: tuple[KeySettings, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = field(default=1_048_576, validator=_at_least_one)
    on_shutdown: Literal["drain", "cancel"] = "drain"
    #: Seconds runs get to finish on shutdown with ``on_shutdown = "drain"`` (default: runtime.shutdown_grace).
    shutdown_grace: float | None = field(default=None, validator=_optional_positive)
    sse_ping: float = field(default=15.0, validator=_positive)
    sse_buffer: int = field(default=1000, validator=_at_least_one)
    sse_send_timeout: float = field(default=30.0, validator=_positive)
    max_streams: int = field(default=10_000, validator=_at_least_one)
    max_await: float = field(default=300.0, validator=_positive)
    access_log: bool = True


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check(settings: ServeSettings) -> None:
    seen: dict[str, int] = {}
    for i, key in enumerate(settings.keys):
        path = f"serve.keys[{i}]"
        if key.name in seen:
            raise ConfigError(
                f"key name {key.name!r} is used twice (also at serve.keys[{seen[key.name]}])",
                path=f"{path}.name",
                hint="give each key a distinct name: it is what logs and metrics show instead of the key",
            )
        seen[key.name] = i
        if (key.token is None) == (key.sha256 is None):
            raise ConfigError(
                "give exactly one of `token` and `sha256`",
                path=path,
                hint='token = "${ASM_KEY}" reads it from the environment; sha256 = "<hex>" keeps it out of the config',
            )
        if key.token is not None:
            register_secret(key.token)
            if len(key.token) < MIN_TOKEN_LENGTH:
                raise ConfigError(
                    f"the token is shorter than {MIN_TOKEN_LENGTH} characters",
                    path=f"{path}.token",
                    hint='make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"',
                )
        if key.sha256 is not None and not _HEX64.match(key.sha256):
            raise ConfigError(
                "sha256 must be 64 lowercase hexadecimal digits",
                path=f"{path}.sha256",
                hint="python -c \"import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())\" TOKEN",
            )
        for j, agent in enumerate(key.agent_ids):
            if not agent.strip():
                raise ConfigError("agent ids must not be empty", path=f"{path}.agent_ids[{j}]")
    for i, origin in enumerate(settings.cors_origins):
        if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
            raise ConfigError(
                f"{origin!r} is not an origin",
                path=f"serve.cors_origins[{i}]",
                hint='an origin is scheme://host[:port] with no path, e.g. "https://app.example.com"',
            )
    if not settings.host.strip():
        raise ConfigError("host must not be empty", path="serve.host")


def load_settings(data: Mapping[str, Any], **overrides: Any) -> ServeSettings:
    """``[serve]`` data (``Config.serve``) validated, with command-line ``overrides`` (None: unset)."""
    merged = {**dict(data), **{k: v for k, v in overrides.items() if v is not None}}
    settings = validate_settings(ServeSettings, merged, "serve")
    _check(settings)
    return settings
