"""The records a config is validated into, and how they show themselves (secrets masked)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
from attrs import field, frozen

from ..context.settings import ContextSettings
from ..secrets import Secret, mask_url
from .sources import MASK, MaskedStr, Unset, default_home, is_secret_key, join_key

__all__ = [
    "ComponentConfig",
    "PluginsConfig",
    "RunDefaults",
    "RuntimeConfig",
    "ResilienceConfig",
    "ContextSettings",
    "ToolCallsConfig",
    "Config",
    "mask",
]


def mask(value: Any, path: str = "", secret_paths: frozenset[str] = frozenset()) -> Any:
    """``value`` as plain data with every secret replaced by ``********``.

    Secrets are: interpolated values, strings under a secret-looking key, :class:`Secret`
    objects and the paths in ``secret_paths``. An unset ``${VAR}`` shows as ``${VAR}``.
    """
    if isinstance(value, MaskedStr | Secret):
        return MASK
    if isinstance(value, Unset):
        return repr(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            sub = join_key(path, key)
            # An unset ${VAR} shows as such even under a secret key: it holds no value to hide.
            secret = not isinstance(item, Unset) and (
                sub in secret_paths or (is_secret_key(key) and isinstance(item, str | Secret))
            )
            out[key] = MASK if secret else mask(item, sub, secret_paths)
        return out
    if isinstance(value, list | tuple):
        return [mask(item, f"{path}[{i}]", secret_paths) for i, item in enumerate(value)]
    if isinstance(value, str):
        return _mask_credentials(value)
    return value


_PASSWORD_PARAM = re.compile(r"(?i)\b(password|passwd|pwd)\s*=\s*('[^']*'|\S+)")


def _mask_credentials(text: str) -> str:
    """A literal URL password (``postgresql://u:pw@h``) or ``password=...`` parameter, masked."""
    if "://" in text and "@" in text:
        text = mask_url(text)
    if "=" in text:
        text = _PASSWORD_PARAM.sub(lambda m: f"{m.group(1)}={MASK}", text)
    return text


@frozen(repr=False)
class ComponentConfig:
    """One ``[store]``/``[[providers]]``/... table: ``use`` plus the component's own settings."""

    use: str
    name: str
    settings: Mapping[str, Any]
    path: str

    def __repr__(self) -> str:
        return (
            f"ComponentConfig(use={self.use!r}, name={self.name!r}, "
            f"settings={mask(self.settings)!r}, path={self.path!r})"
        )


def _at_least_one(instance: Any, attribute: Any, value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be an integer of at least 1, got {value}")


def _optional_at_least_one(instance: Any, attribute: Any, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{attribute.name} must be an integer of at least 1, got {value}")


def _non_negative_int(instance: Any, attribute: Any, value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be an integer >= 0, got {value}")


def _positive_number(instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be a finite number of seconds > 0, got {value}")


def _non_negative_number(instance: Any, attribute: Any, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value}")


def _temperature(instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and 0 <= value <= 2):
        raise ValueError(f"{attribute.name} must be a number from 0 to 2, got {value}")


def _not_empty(instance: Any, attribute: Any, value: str | None) -> None:
    if value is not None and not value.strip():
        raise ValueError(f"{attribute.name} must not be empty")


@frozen
class PluginsConfig:
    """``[plugins]``: which plugins load."""

    disabled: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    autoload: bool = True


@frozen
class RunDefaults:
    """``[run]``: defaults for every run unless the call overrides them."""

    provider: str | None = field(default=None, validator=_not_empty)
    model: str | None = field(default=None, validator=_not_empty)
    system: str | None = None
    max_tokens: int | None = field(default=None, validator=_optional_at_least_one)
    temperature: float | None = field(default=None, validator=_temperature)
    max_turns: int = field(default=8, validator=_at_least_one)
    agent_id: str = field(default="default", validator=_not_empty)
    requires: tuple[str, ...] = ()
    prefers: tuple[str, ...] = ()


@frozen
class ResilienceConfig:
    """``[resilience]``: retries, failover and circuit breakers."""

    max_attempts: int = field(default=2, validator=_at_least_one)
    initial_backoff: float = field(default=0.5, validator=_non_negative_number)
    max_backoff: float = field(default=8.0, validator=_non_negative_number)
    multiplier: float = field(default=2.0, validator=_positive_number)
    jitter: bool = True
    deadline: float = field(default=120.0, validator=_positive_number)
    failover: bool = True
    breaker_threshold: int = field(default=5, validator=_at_least_one)
    breaker_cooldown: float = field(default=30.0, validator=_positive_number)


@frozen
class RuntimeConfig:
    """``[runtime]``: run queues, concurrency limits and crash recovery (see the serving guide)."""

    max_concurrent_runs: int = field(default=1, validator=_at_least_one)
    max_queued_runs: int = field(default=100, validator=_at_least_one)
    max_active_sessions: int = field(default=10_000, validator=_at_least_one)
    max_running_runs: int = field(default=1_000, validator=_at_least_one)
    idle_timeout: float = field(default=300.0, validator=_positive_number)
    shutdown_grace: float = field(default=10.0, validator=_positive_number)
    on_paused: Literal["wait", "reject"] = "wait"
    recovery: Literal["fail", "requeue"] = "fail"
    max_recovery_attempts: int = field(default=3, validator=_non_negative_int)
    #: Seconds a run's lease lasts without a heartbeat; a run whose lease expired is taken to
    #: belong to a dead process and may be recovered by another.
    lease_ttl: float = field(default=30.0, validator=_positive_number)
    #: Seconds between heartbeats that renew the lease of a running run (default lease_ttl / 3).
    heartbeat_interval: float | None = field(default=None, validator=_positive_number)
    #: This process's worker id (owner of its runs' leases); default ``host:pid:random``.
    worker_id: str | None = field(default=None, validator=_not_empty)
    #: Store a run's start behind its provider call instead of before it (see
    #: :mod:`asm_kernel.pipeline.overlap`: nothing is stored or shown before the start is durable).
    overlap_start: bool = True


@frozen
class ToolCallsConfig:
    """``[tool_calls]``: how the kernel runs the tools a model calls in one turn."""

    #: Calls of one model turn that run at the same time (the rest wait for a slot).
    max_parallel: int = field(default=8, validator=_at_least_one)
    #: Seconds one call may take unless its tool sets its own ``timeout``.
    timeout: float = field(default=60.0, validator=_positive_number)
    #: Characters of a tool's output kept in ``tool_call_completed`` (and so shown to the model,
    #: whose transcript is rebuilt from the log); longer output is cut, with a note saying so.
    max_output_chars: int = field(default=32_768, validator=_at_least_one)
    #: Keep every tool's whole output in its event instead (max_output_chars is then ignored).
    keep_full_output: bool = False


@frozen(repr=False)
class Config:
    """A validated configuration: component tables, the kernel's sections, where it came from.

    ``raw`` is the layered, interpolated data; :meth:`masked` shows it with secrets hidden, and
    so does ``repr``.
    """

    store: ComponentConfig | None = None
    providers: tuple[ComponentConfig, ...] = ()
    router: ComponentConfig | None = None
    policies: tuple[ComponentConfig, ...] = ()
    telemetry: tuple[ComponentConfig, ...] = ()
    tools: tuple[ComponentConfig, ...] = ()
    plugins: PluginsConfig = field(factory=PluginsConfig)
    run: RunDefaults = field(factory=RunDefaults)
    runtime: RuntimeConfig = field(factory=RuntimeConfig)
    resilience: ResilienceConfig = field(factory=ResilienceConfig)
    #: ``[serve]`` as data: the HTTP server plugin (asm-serve) owns and validates it, so the
    #: kernel keeps no web settings of its own and a config that has them still loads here.
    serve: Mapping[str, Any] = field(factory=dict)
    tool_calls: ToolCallsConfig = field(factory=ToolCallsConfig)
    home: Path = field(factory=lambda: default_home())
    #: ``[context]``: how the window of each model call is cut (see docs/guides/context.md).
    context: ContextSettings = field(factory=ContextSettings)
    source: Path | None = None
    secret_paths: frozenset[str] = frozenset()
    raw: Mapping[str, Any] = field(factory=dict)

    @property
    def config_dir(self) -> Path:
        """The directory relative paths in the config resolve against."""
        return self.source.parent if self.source else Path.cwd()

    def masked(self) -> dict[str, Any]:
        """The layered config as data, with every secret replaced by ``********``."""
        return mask(self.raw, "", self.secret_paths)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        # Not `raw`: its secrets are masked in the records, and it repeats them.
        shown = (f"{f.name}={getattr(self, f.name)!r}" for f in attrs.fields(Config) if f.name not in _NOT_SHOWN)
        return f"Config({', '.join(shown)})"


_NOT_SHOWN = {"raw", "secret_paths"}
