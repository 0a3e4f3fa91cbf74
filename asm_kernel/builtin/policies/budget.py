"""``use = "budget"``: limits that are enforced before the spend, not noticed after it.

Before each provider call the kernel computes the call's **worst case** — an upper bound of its
input tokens, ``max_tokens`` of output (the request is clamped to it), at the highest price of
the providers it may go to — and the policy **reserves** it: if what the scope has committed
(spent plus reserved) and the worst case together pass a limit, the call is refused (or warned
about, or sent to a person). After the call the reservation is **settled** to the usage the
provider reported (to the reservation when it reported nothing). For ``scope = "run"`` the run's
own log is the ledger; for ``session``, ``agent`` and ``global`` (optionally per ``period``) it is
a ledger session (:mod:`.ledger`) every process shares through the store.

The only way spend can pass a limit: a provider that bills more than the request allowed — it
ignored ``max_tokens``, or counted more input tokens than the bound (UTF-8 bytes of everything
sent, plus framing and a fixed amount per image; no byte-level tokenizer exceeds it).
"""

from __future__ import annotations

import fnmatch
import math
from datetime import UTC, datetime
from typing import Any, Literal

from attrs import field, frozen

from ...model import Run, Session, utcnow
from ...policy import Decision, Spend, SpendRequest
from .ledger import Ledger

__all__ = ["BudgetSettings", "BudgetPolicy", "LIMITS"]

#: Limit key -> the Spend measure it bounds.
LIMITS: dict[str, str] = {
    "max_input_tokens": "input_tokens",
    "max_output_tokens": "output_tokens",
    "max_total_tokens": "total_tokens",
    "max_cost_usd": "cost_usd",
    "max_model_calls": "model_calls",
    "max_tool_calls": "tool_calls",
    "max_turns": "turns",
}


def _optional_positive(instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name} must be a number >= 0, got {value}")


@frozen
class BudgetSettings:
    """``[[policies]] use = "budget"``: see docs/guides/tools-and-policies.md."""

    scope: Literal["run", "session", "agent", "global"] = "run"
    #: A new budget each UTC day or month (session, agent and global scopes).
    period: Literal["day", "month"] | None = None
    #: What happens when a limit would be passed: refuse the step (BudgetExceededError), warn
    #: (a policy_decided event, the step goes on), or ask a person (the run awaits approval).
    action: Literal["refuse", "warn", "approve"] = "refuse"
    max_input_tokens: int | None = field(default=None, validator=_optional_positive)
    max_output_tokens: int | None = field(default=None, validator=_optional_positive)
    max_total_tokens: int | None = field(default=None, validator=_optional_positive)
    max_cost_usd: float | None = field(default=None, validator=_optional_positive)
    #: Seconds of one execution of a run (scope "run"), checked before each model call and tool round.
    max_duration: float | None = field(default=None, validator=_optional_positive)
    max_model_calls: int | None = field(default=None, validator=_optional_positive)
    max_tool_calls: int | None = field(default=None, validator=_optional_positive)
    #: Runs (conversation turns) in the scope; not for scope "run" (use max_model_calls).
    max_turns: int | None = field(default=None, validator=_optional_positive)
    #: A call whose price is unknown cannot be proven to fit max_cost_usd: refuse it, or let it
    #: through uncounted.
    unknown_price: Literal["refuse", "allow"] = "refuse"
    #: Only sessions of these agents (globs; empty: every agent).
    agents: list[str] = field(factory=list)
    #: Seconds a person has to decide, with action "approve" (None: no limit).
    approval_timeout: float | None = field(default=None, validator=_optional_positive)

    def __attrs_post_init__(self) -> None:
        limits = [k for k in (*LIMITS, "max_duration") if getattr(self, k) is not None]
        if not limits:
            raise ValueError("a budget needs at least one limit: " + ", ".join((*LIMITS, "max_duration")))
        if self.scope == "run":
            if self.max_turns is not None:
                raise ValueError("max_turns counts runs, so it needs scope session, agent or global; "
                                 "bound one run's model calls with max_model_calls")
            if self.period is not None:
                raise ValueError("period applies to scopes session, agent and global, not run")
        elif self.max_duration is not None:
            raise ValueError("max_duration bounds one run's execution: it needs scope = \"run\"")


def _measure(spend: Spend, name: str) -> float | None:
    if name == "total_tokens":
        return float(spend.total_tokens)
    value = getattr(spend, name)
    return None if value is None else float(value)


def _spends(spend: Spend, name: str) -> bool:
    """Whether a step spends what ``name`` measures (an unknown cost may be anything)."""
    value = _measure(spend, name)
    return value is None or value > 0


def matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


class BudgetPolicy:
    """See the module docstring."""

    def __init__(self, name: str, settings: BudgetSettings, kernel: Any) -> None:
        self.name = name
        self.settings = settings
        self._kernel = kernel
        self._ledgers: dict[str, Ledger] = {}
        #: Reservations this process made and has not settled: id -> (ledger id or None, run id).
        self._open: dict[str, tuple[str | None, str]] = {}

    def __repr__(self) -> str:
        return f"BudgetPolicy({self.name!r}, scope={self.settings.scope!r})"

    # -- the original protocol: budgets act through reserve/settle ------------------------------

    async def check_run(self, *, session: Session, run: Run, history: Any) -> None:
        pass

    async def check_usage(self, *, session: Session, run: Run) -> None:
        pass

    async def check_tool(self, *, session: Session, run: Run, name: str, input: dict[str, Any]) -> None:
        pass

    # -- scope ------------------------------------------------------------------------------

    def scope_key(self, session: Session, run: Run, now: datetime | None = None) -> str:
        """``session:ses_1:2026-07`` — what the budget counts against."""
        scope = self.settings.scope
        key = {"run": run.id, "session": session.id, "agent": session.agent_id, "global": "all"}[scope]
        period = self.settings.period
        when = (now or utcnow()).astimezone(UTC)
        stamp = when.strftime("%Y-%m-%d") if period == "day" else when.strftime("%Y-%m") if period == "month" else "all"
        return f"{scope}:{key}:{stamp}" if scope != "run" else f"run:{key}"

    def _ledger(self, scope: str) -> Ledger:
        ledger_id = f"asm.budget:{self.name}:{scope}"
        ledger = self._ledgers.get(ledger_id)
        if ledger is None:
            about = {"policy": self.name, "scope": scope, "limits": self._limits()}
            ledger = self._ledgers[ledger_id] = Ledger(self._kernel, ledger_id, about)
        return ledger

    def _limits(self) -> dict[str, float]:
        return {k: float(v) for k in (*LIMITS, "max_duration") if (v := getattr(self.settings, k)) is not None}

    # -- deciding ---------------------------------------------------------------------------

    def _over(self, committed: Spend, spend: Spend, scope: str, request: SpendRequest) -> Decision | None:
        """The decision for a step that would pass a limit, or None when it fits."""
        for limit, measure in LIMITS.items():
            bound = getattr(self.settings, limit)
            if bound is None:
                continue
            if not _spends(spend, measure):
                continue  # this step does not spend what the limit counts
            want, have = _measure(spend, measure), _measure(committed, measure)
            if want is None or have is None:  # an unknown price
                if self.settings.unknown_price == "allow":
                    continue
                return self._decide(limit, bound, have, want, scope, request,
                                    f"{limit} = {bound:g} cannot be enforced: a price is unknown "
                                    "(give the model a price, or set unknown_price = \"allow\")")
            if have + want > bound + 1e-12:
                return self._decide(limit, bound, have, want, scope, request,
                                    f"{limit} = {bound:g} would be passed: {have:g} spent or reserved, "
                                    f"this {request.step.replace('_', ' ')} may add {want:g}")
        return None

    def _decide(
        self, limit: str, bound: float, have: float | None, want: float | None, scope: str,
        request: SpendRequest, reason: str,
    ) -> Decision:
        action = self.settings.action
        key = f"budget:{self.name}:{limit}"
        if action == "approve" and key in request.approved:
            action = "warn"  # a person let the run go past this limit
            reason = f"approved to go past it: {reason}"
        return Decision(
            action, self.name, reason, limit=limit, scope=scope, limit_value=bound, spend=have, requested=want,
            approval=key if action == "approve" else None, timeout=self.settings.approval_timeout,
        )

    def _duration(self, request: SpendRequest) -> Decision | None:
        limit = self.settings.max_duration
        started = request.run.started_at
        if limit is None or started is None or request.step == "run":
            return None
        elapsed = (utcnow() - started).total_seconds()
        if elapsed < limit:
            return None
        return self._decide("max_duration", limit, elapsed, 0.0, self.scope_key(request.session, request.run),
                            request, f"max_duration = {limit:g} s is spent: the run has run {elapsed:.3g} s")

    def _allowed(self, committed: Spend, spend: Spend, scope: str) -> Decision:
        """An allow that says how close the nearest limit is."""
        nearest: tuple[float, str, float, float] | None = None
        for limit, measure in LIMITS.items():
            bound = getattr(self.settings, limit)
            have, want = _measure(committed, measure), _measure(spend, measure)
            if bound is None or not want or have is None or want is None:
                continue
            share = (have + want) / bound if bound else 1.0
            if nearest is None or share > nearest[0]:
                nearest = (share, limit, have, want)
        if nearest is None:
            return Decision("allow", self.name, "within budget", scope=scope)
        share, limit, have, want = nearest
        return Decision("allow", self.name, f"within budget: {share:.0%} of {limit} after this step",
                        limit=limit, scope=scope, limit_value=float(getattr(self.settings, limit)),
                        spend=have, requested=want)

    async def reserve(self, request: SpendRequest) -> Decision | None:
        agents = self.settings.agents
        if agents and not matches(request.session.agent_id, agents):
            return None
        late = self._duration(request)
        if late is not None and late.action != "warn":
            return late
        spend = request.spend
        if not any(_spends(spend, LIMITS[k]) for k in LIMITS if getattr(self.settings, k) is not None):
            return late  # the step spends nothing this budget counts
        scope = self.scope_key(request.session, request.run)
        if self.settings.scope == "run":
            over = self._over(request.spent, spend, scope, request)
            if over is not None and over.action not in ("allow", "warn"):
                return over
            self._open[request.id] = (None, request.run.id)
            return over or late or self._allowed(request.spent, spend, scope)
        ledger = self._ledger(scope)
        seen: list[Decision] = []

        def check(committed: Spend) -> Decision | None:
            seen.clear()
            over = self._over(committed, spend, scope, request)
            if over is not None and over.action != "warn":
                return over
            seen.append(over or late or self._allowed(committed, spend, scope))
            return None

        payload = {"run_id": request.run.id, "session_id": request.session.id, "step": request.step}
        refused = await ledger.reserve(request.id, payload, spend, check)
        if refused is not None:
            return refused
        self._open[request.id] = (ledger.session_id, request.run.id)
        return seen[0] if seen else self._allowed(ledger.committed, spend, scope)

    async def settle(self, request: SpendRequest, actual: Spend) -> None:
        held = self._open.pop(request.id, None)
        if held is None or held[0] is None:
            return  # nothing reserved here, or a run-scope budget: the run's log is its ledger
        ledger = self._ledgers.get(held[0])
        if ledger is not None:
            await ledger.settle(request.id, held[1], actual)


def build(settings: BudgetSettings, context: Any) -> BudgetPolicy:
    return BudgetPolicy(context.name, settings, context.kernel)

