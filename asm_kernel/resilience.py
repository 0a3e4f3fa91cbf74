"""Retry policy and circuit breakers: the kernel's one retry layer.

Provider adapters never retry (SDK retries are off); the kernel retries retryable errors with
exponential backoff and full jitter, honouring the server's ``retry-after``, within a bounded
number of attempts per provider and a total deadline per run. A circuit breaker per
``(provider, model)`` stops sending traffic to a target that keeps failing:

``closed`` --(``failure_threshold`` consecutive retryable failures)--> ``open``
``open`` --(``cooldown`` seconds)--> ``half_open`` (one probe request allowed)
``half_open`` --probe succeeds--> ``closed`` | --probe fails--> ``open``
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from typing import Literal

from attrs import define

from .config import ResilienceConfig

__all__ = [
    "ResilienceConfig",
    "RetryPolicy",
    "CircuitBreaker",
    "BreakerBoard",
    "BreakerState",
    "parse_retry_after",
]

BreakerState = Literal["closed", "open", "half_open"]


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date).

    For provider adapters: put the result on the error's ``retry_after``; the kernel's retry
    policy treats it as the least it waits.
    """
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


class RetryPolicy:
    """Backoff delays: ``initial * multiplier**(attempt-1)`` capped at ``max_backoff``.

    With jitter the delay is drawn uniformly from ``[0, delay]`` (full jitter), so a fleet of
    clients does not retry in lockstep. A server's ``retry_after`` is a floor.
    """

    def __init__(self, config: ResilienceConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self._rng = rng or random.Random()

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        c = self.config
        base = min(c.max_backoff, c.initial_backoff * c.multiplier ** max(0, attempt - 1))
        delay = self._rng.uniform(0, base) if c.jitter else base
        if retry_after is not None and retry_after > delay:
            delay = retry_after
        return delay


@define
class CircuitBreaker:
    threshold: int
    cooldown: float
    clock: Callable[[], float] = time.monotonic
    state: BreakerState = "closed"
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False

    def current(self) -> BreakerState:
        """The state now (an open breaker turns half-open once its cooldown passed)."""
        if self.state == "open" and self.clock() - self.opened_at >= self.cooldown:
            self.state = "half_open"
            self.probing = False
        return self.state

    def allow(self) -> bool:
        """May a request go now? In half-open, only one probe at a time."""
        state = self.current()
        if state == "closed":
            return True
        if state == "half_open" and not self.probing:
            self.probing = True
            return True
        return False

    def success(self) -> BreakerState:
        self.failures = 0
        self.probing = False
        self.state = "closed"
        return self.state

    def failure(self) -> BreakerState:
        self.failures += 1
        self.probing = False
        if self.state == "half_open" or self.failures >= self.threshold:
            self.state = "open"
            self.opened_at = self.clock()
        return self.state

    def remaining_cooldown(self) -> float:
        if self.state != "open":
            return 0.0
        return max(0.0, self.cooldown - (self.clock() - self.opened_at))


class BreakerBoard:
    """One breaker per ``(provider, model)`` in this process."""

    def __init__(self, config: ResilienceConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}

    def get(self, provider: str, model: str) -> CircuitBreaker:
        key = (provider, model)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(
                self.config.breaker_threshold, self.config.breaker_cooldown, self.clock
            )
        return breaker

    def snapshot(self) -> dict[tuple[str, str], BreakerState]:
        return {key: b.current() for key, b in self._breakers.items()}
