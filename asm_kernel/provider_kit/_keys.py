"""API keys: the setting, else the environment variable, else a typed error naming both."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from attrs import field, frozen

from ..errors import ConfigError, ProviderAuthError
from ..secrets import Secret, register_secret

__all__ = ["ApiKey", "find_api_key", "require_api_key", "register_header_secrets"]


@frozen
class ApiKey:
    """A key to send and where it came from (``source``: the env var or the config path)."""

    value: str = field(repr=False)
    source: str
    env_var: str
    path: str


def find_api_key(
    setting: Secret | str | None, *, env_var: str, path: str, environ: Mapping[str, str] | None = None
) -> ApiKey | None:
    """The configured key, else the one in ``env_var``, else None. A key found is registered as
    a secret, so it is hidden wherever it is echoed back (keys from the environment are not
    otherwise known to the kernel)."""
    value = setting.reveal() if isinstance(setting, Secret) else setting
    if value:
        source = path
    else:
        value = (os.environ if environ is None else environ).get(env_var) or ""
        source = env_var
    if not value:
        return None
    register_secret(value)
    return ApiKey(value, source, env_var, path)


def require_api_key(
    setting: Secret | str | None,
    *,
    env_var: str,
    path: str,
    vendor: str,
    environ: Mapping[str, str] | None = None,
    error: type[ConfigError] | type[ProviderAuthError] = ConfigError,
    provider: str | None = None,
    model: str | None = None,
) -> ApiKey:
    """Like :func:`find_api_key`, but a missing key raises ``error`` naming the variable and
    the config key: a :class:`ConfigError` fails the kernel at start, a
    :class:`ProviderAuthError` fails only the runs that use the provider."""
    key = find_api_key(setting, env_var=env_var, path=path, environ=environ)
    if key is not None:
        return key
    message = f"no {vendor} API key: {env_var} is not set and the provider has no api_key"
    hint = f'export {env_var}=... or set api_key = "${{{env_var}}}" in the config ({path})'
    if issubclass(error, ConfigError):
        raise error(message, path=path, hint=hint)
    raise error(f"{message} ({path})", provider=provider, model=model, hint=hint)


_SECRET_HEADER = re.compile(r"auth|key|token|secret|password|cookie|signature", re.I)


def register_header_secrets(headers: Mapping[str, str]) -> None:
    """Register the values of configured headers whose names look secret (``api-key``,
    ``x-gateway-token``, ``authorization``...), so a server echoing them cannot leak them."""
    for name, value in headers.items():
        if _SECRET_HEADER.search(name):
            register_secret(value)
