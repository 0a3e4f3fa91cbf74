"""The kernel side of policies: what a decision is, and how every policy is asked.

A policy (:class:`~asm_kernel.interfaces.Policy`) always has ``check_run``, ``check_usage`` and
``check_tool``; it may also implement the governance methods the kernel calls when present:

* ``async reserve(request: SpendRequest) -> Decision | None`` — before each step that spends
  (``run``: a run starts; ``model_call``: a provider call, with its worst case; ``tool_round``: the
  tool calls of one model turn). A policy that answers ``allow``/``warn`` holds a reservation
  for the step, which the kernel settles exactly once; None means no opinion and nothing held;
* ``async settle(request: SpendRequest, actual: Spend) -> None`` — the step is over: the
  reservation becomes what was really spent (zero when another policy stopped the step);
* ``async review_tool(request: ToolRequest) -> Decision | None`` — before each kernel tool call.

The **strictest decision wins**: ``refuse`` over ``approve`` (a person must decide) over ``warn``
over ``allow``. Every decision is recorded as a ``policy_decided`` event with the step's other
events (no extra write). A refused model call or run raises
:class:`~asm_kernel.errors.BudgetExceededError` when a limit decided it (else
:class:`~asm_kernel.errors.PolicyError`) and fails the run; a refused tool call is given to the
model as an error result; ``approve`` moves the run to ``awaiting_approval``
(:mod:`asm_kernel.approvals`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from attrs import evolve, field, frozen

from .errors import AsmError, BudgetExceededError, PolicyError
from .events import EventType
from .model import Run, Session, ToolUseBlock, new_id

if TYPE_CHECKING:
    from .pipeline.state import RunState

__all__ = [
    "Action",
    "ACTIONS",
    "Step",
    "Spend",
    "Decision",
    "SpendRequest",
    "ToolRequest",
    "Verdict",
    "Held",
    "policy_name",
    "strictest",
    "run_spent",
    "count",
    "approved_keys",
    "reserve",
    "settle",
    "review_tools",
    "SPENT_KEY",
    "APPROVED_KEY",
]

log = logging.getLogger("asm.policy")

Action = Literal["allow", "warn", "approve", "refuse"]
#: From the least strict to the strictest.
ACTIONS: tuple[Action, ...] = ("allow", "warn", "approve", "refuse")
Step = Literal["run", "model_call", "tool_round"]

#: ``state.data`` key of the run's counters (model calls, tool calls) kept for the policies.
SPENT_KEY = "asm.spent"
#: ``state.data`` key of the approval keys a person granted the run.
APPROVED_KEY = "asm.approved"


def _cost(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


@frozen
class Spend:
    """What a step spends (or may spend at worst). ``cost_usd`` None: a price is unknown.

    ``input_tokens`` counts every input token (cache writes and reads included).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    model_calls: int = 0
    tool_calls: int = 0
    turns: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Spend) -> Spend:
        if not isinstance(other, Spend):
            return NotImplemented
        return Spend(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            _cost(self.cost_usd, other.cost_usd),
            self.model_calls + other.model_calls,
            self.tool_calls + other.tool_calls,
            self.turns + other.turns,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "model_calls": self.model_calls,
            "tool_calls": self.tool_calls,
            "turns": self.turns,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Spend:
        cost = data.get("cost_usd", 0.0)
        return cls(
            int(data.get("input_tokens", 0)),
            int(data.get("output_tokens", 0)),
            None if cost is None else float(cost),
            int(data.get("model_calls", 0)),
            int(data.get("tool_calls", 0)),
            int(data.get("turns", 0)),
        )


@frozen
class Decision:
    """What one policy decided about one step (recorded as ``policy_decided``).

    For a budget: ``limit`` names the limit that decided (``max_cost_usd``), ``scope`` the
    ledger (``session:ses_1:2026-07``), ``limit_value`` its value, ``spend`` what was spent in the
    scope before the step and ``requested`` what the step may add. ``approval`` is the key a
    person's grant covers when the action is ``approve`` (a grant is remembered for the rest of
    the run), ``timeout`` the seconds the person has before the request is denied.
    """

    action: Action
    policy: str = ""
    reason: str = ""
    limit: str | None = None
    scope: str | None = None
    limit_value: float | None = None
    spend: float | None = None
    requested: float | None = None
    approval: str | None = None
    timeout: float | None = None
    kind: str = "budget"

    def __attrs_post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"a decision's action must be one of {', '.join(ACTIONS)}, got {self.action!r}")

    def payload(self, step: str, **extra: Any) -> dict[str, Any]:
        data: dict[str, Any] = {"policy": self.policy, "step": step, "action": self.action, "reason": self.reason}
        for key in ("limit", "scope", "limit_value", "spend", "requested"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        data.update(extra)
        return data


@frozen
class SpendRequest:
    """A step a policy is asked to reserve for: its worst case, and what the run spent so far."""

    step: Step
    #: The step's worst case (what it may add to the scope).
    spend: Spend
    #: This run's spend before the step (usage and cost from its log, model and tool calls).
    spent: Spend
    state: RunState = field(repr=False, eq=False)
    #: Unique per reservation: ledgers key their records by it (a retried write is recognised).
    id: str = field(factory=lambda: new_id("rsv_"))
    #: Approval keys a person granted this run.
    approved: frozenset[str] = frozenset()

    @property
    def session(self) -> Session:
        return self.state.session

    @property
    def run(self) -> Run:
        return self.state.run


@frozen
class ToolRequest:
    """A kernel tool call a policy is asked about."""

    call: ToolUseBlock
    source: str
    state: RunState = field(repr=False, eq=False)
    approved: frozenset[str] = frozenset()

    @property
    def session(self) -> Session:
        return self.state.session

    @property
    def run(self) -> Run:
        return self.state.run


@frozen
class Verdict:
    """The strictest decision about one tool call (None: nobody objected)."""

    call: ToolUseBlock
    decision: Decision | None = None

    @property
    def action(self) -> Action:
        return self.decision.action if self.decision is not None else "allow"


Held = list[tuple[Any, SpendRequest]]


def policy_name(policy: Any) -> str:
    """A policy's configured name (its ``name``), else its class name."""
    return str(getattr(policy, "name", None) or type(policy).__name__)


def strictest(decisions: Iterable[Decision | None]) -> Decision | None:
    """The strictest decision (the first of equals), or None when there is none."""
    best: Decision | None = None
    for decision in decisions:
        if decision is not None and (best is None or ACTIONS.index(decision.action) > ACTIONS.index(best.action)):
            best = decision
    return best


def count(state: RunState, **counters: int) -> None:
    """Add to the run's counters (``model_calls=1``, ``tool_calls=3``)."""
    spent: dict[str, int] = state.data.setdefault(SPENT_KEY, {})
    for key, value in counters.items():
        spent[key] = spent.get(key, 0) + value


def run_spent(state: RunState) -> Spend:
    """What the run has spent so far: its usage and cost, model calls and tool calls made."""
    usage = state.usage
    counters: dict[str, int] = state.data.get(SPENT_KEY, {})
    return Spend(
        usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens,
        usage.output_tokens,
        state.run_cost,
        counters.get("model_calls", 0),
        counters.get("tool_calls", 0),
        1,
    )


def approved_keys(state: RunState) -> frozenset[str]:
    return frozenset(state.data.get(APPROVED_KEY, ()))


def _named(decision: Any, policy: Any) -> Decision | None:
    if decision is None:
        return None
    if not isinstance(decision, Decision):
        raise PolicyError(
            f"policy {policy_name(policy)!r} returned {type(decision).__name__}, not a Decision or None",
            hint="return asm_kernel.policy.Decision(action=...) from reserve/review_tool",
        )
    return decision if decision.policy else evolve(decision, policy=policy_name(policy))


def _record(state: RunState, step: str, decision: Decision, **extra: Any) -> None:
    state.defer(EventType.POLICY_DECIDED, decision.payload(step, **extra))
    if decision.action == "warn":
        log.warning("run %s: policy %s warns: %s", state.run.id, decision.policy, decision.reason)


def refusal(decision: Decision, step: str) -> AsmError:
    """The error a refused step fails the run with."""
    where = f" ({decision.scope})" if decision.scope else ""
    message = f"policy {decision.policy!r} refused the {step.replace('_', ' ')}{where}: {decision.reason}"
    if decision.limit is None:
        return PolicyError(message, hint="see the run's policy_decided events", policy=decision.policy, step=step)
    return BudgetExceededError(
        message,
        hint="raise the limit, wait for the next period, or start a run that needs less",
        policy=decision.policy,
        step=step,
        what=decision.limit,
        scope=decision.scope,
        limit=decision.limit_value,
        spend=decision.spend,
        requested=decision.requested,
    )


async def reserve(state: RunState, step: Step, spend: Spend) -> Held:
    """Ask every policy with ``reserve``; returns what they hold, to :func:`settle` after the step.

    Raises the refusal (a budget's ``BudgetExceededError``) or
    :class:`~asm_kernel.approvals.ApprovalRequired`, after releasing every reservation made.
    """
    asked = [(p, m) for p in state.kernel.policies if callable(m := getattr(p, "reserve", None))]
    if not asked:
        return []
    held: Held = []
    decisions: list[Decision] = []
    try:
        for policy, method in asked:
            request = SpendRequest(step, spend, run_spent(state), state, approved=approved_keys(state))
            decision = _named(await method(request), policy)
            if decision is not None and decision.action in ("allow", "warn"):
                held.append((policy, request))
            if decision is not None:
                decisions.append(decision)
                _record(state, step, decision)
                if decision.action == "refuse":
                    break  # nothing the others say can let it through
    except BaseException:
        await settle(held, Spend())
        raise
    worst = strictest(decisions)
    if worst is not None and worst.action in ("approve", "refuse"):
        await settle(held, Spend())
        if worst.action == "refuse":
            raise refusal(worst, step)
        from .approvals import ApprovalRequired

        raise ApprovalRequired.of(state, [worst])
    return held


async def settle(held: Held, actual: Spend) -> None:
    """Settle every reservation in ``held`` at ``actual``, to the end even if cancelled meanwhile.

    A policy that fails to settle is logged, not raised: its reservation then stays counted at
    the worst case, which can only make a budget stricter, never let it be exceeded.
    """
    if not held:
        return

    async def each() -> None:
        for policy, request in held:
            try:
                await policy.settle(request, actual)
            except Exception:
                log.exception("policy %s could not settle reservation %s", policy_name(policy), request.id)

    task = asyncio.ensure_future(each())
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            cancelled = exc  # settling finishes first; then the cancel goes on
    held.clear()
    if cancelled is not None:
        raise cancelled


async def review_tools(state: RunState, calls: Sequence[ToolUseBlock]) -> list[Verdict]:
    """Every policy's opinion of each call, the strictest per call (each recorded)."""
    from .tools.sources import source_of

    policies = state.kernel.policies
    approved = approved_keys(state)
    verdicts: list[Verdict] = []
    for call in calls:
        tool = state.kernel.tools.get(call.name)
        source = source_of(tool)
        decisions: list[Decision] = []
        for policy in policies:
            try:
                await policy.check_tool(session=state.session, run=state.run, name=call.name, input=call.input)
            except AsmError as exc:  # the original protocol: raising refuses the call
                decisions.append(Decision("refuse", policy_name(policy), exc.message, kind="tool"))
            except Exception as exc:  # a policy that breaks refuses (closed, as it always did)
                log.exception("policy %s failed checking tool %s", policy_name(policy), call.name)
                reason = f"the policy failed: {type(exc).__name__}: {exc}"
                decisions.append(Decision("refuse", policy_name(policy), reason, kind="tool"))
            review = getattr(policy, "review_tool", None)
            if callable(review):
                decision = _named(await review(ToolRequest(call, source, state, approved)), policy)
                if decision is not None:
                    decisions.append(decision)
        for decision in decisions:
            _record(state, "tool", decision, tool_use_id=call.id, name=call.name)
        verdicts.append(Verdict(call, strictest(decisions)))
    return verdicts
