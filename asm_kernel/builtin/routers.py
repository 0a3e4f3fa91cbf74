"""``use = "capability"``: the default router.

It orders the providers that passed negotiation:

1. **stickiness** — the provider that answered the session's last run stays first, unless it can
   no longer serve the run (``sticky = false`` turns this off);
2. providers that fit **fully** before **degraded** ones;
3. the **prefer** list, in its order (default: ``[run] provider``, then the config order);
4. **weights** — among the rest, a weighted random order (seeded by the run id, so a run's order
   is reproducible); a provider's weight is its relative chance of coming first.

``exclude`` names providers this router never picks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from attrs import field, frozen

from .. import hookimpl
from ..errors import ConfigError
from ..routing import Negotiation, RouteContext


@frozen
class CapabilitySettings:
    prefer: list[str] = field(factory=list)
    weights: dict[str, float] = field(factory=dict)
    sticky: bool = True
    exclude: list[str] = field(factory=list)


class CapabilityRouter:
    def __init__(self, settings: CapabilitySettings | None = None) -> None:
        self.settings = settings or CapabilitySettings()

    def __repr__(self) -> str:
        return f"CapabilityRouter(prefer={self.settings.prefer!r}, sticky={self.settings.sticky})"

    def select(self, candidates: Sequence[Negotiation], context: RouteContext) -> list[str]:
        s = self.settings
        rng = random.Random(context.run.id)
        prefer = {name: i for i, name in enumerate(s.prefer)}

        def key(neg: Negotiation) -> tuple[int, int, int, float]:
            sticky = 0 if s.sticky and neg.provider == context.last_provider else 1
            fit = 0 if neg.outcome == "full" else 1
            rank = prefer.get(neg.provider, len(prefer))
            # Exponential race: lower -log(u)/w comes first with probability proportional to w.
            weight = s.weights.get(neg.provider, 1.0)
            draw = -math.log(1.0 - rng.random()) / weight
            return (sticky, fit, rank, draw)

        return [n.provider for n in sorted((c for c in candidates if c.provider not in s.exclude), key=key)]


def build(settings: CapabilitySettings, context: Any) -> CapabilityRouter:
    kernel = context.kernel
    known = set(kernel.providers) if kernel is not None else set()
    for key in ("prefer", "exclude"):
        for i, name in enumerate(getattr(settings, key)):
            if known and name not in known:
                raise ConfigError(
                    f"names provider {name!r}, which is not configured",
                    path=f"{context.path}.{key}[{i}]",
                    hint=f"configured providers: {', '.join(sorted(known))}",
                )
    for name, weight in settings.weights.items():
        if known and name not in known:
            raise ConfigError(
                f"names provider {name!r}, which is not configured",
                path=f"{context.path}.weights.{name}",
                hint=f"configured providers: {', '.join(sorted(known))}",
            )
        if not weight > 0 or math.isinf(weight):
            raise ConfigError(
                f"weight must be a positive number, got {weight!r}",
                path=f"{context.path}.weights.{name}",
                hint="weights are relative: 3 and 1 send about 75% of first attempts to the first",
            )
    return CapabilityRouter(settings)


@hookimpl
def asm_register_routers(register: Any) -> None:
    register(
        "capability",
        build,
        settings=CapabilitySettings,
        description="negotiated providers by stickiness, fit, preference and weights",
    )
