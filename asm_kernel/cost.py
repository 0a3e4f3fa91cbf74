"""Cost reports from the log: tokens and dollars by session, agent, provider, model or day.

``kernel.cost(by="model", since=...)`` (and ``asm cost``) add up the ``token_usage_updated``
events of every session — one per model call, and one per failed attempt that reported usage —
with the cost each was stored with (computed from the provider's price table when the call was
made). A call whose price or usage was unknown is counted as **unknown**, never as zero: a row
then has ``cost_usd`` None and says how many such calls it holds (``unknown_cost_calls``) beside
the cost that is known. The report names the date of every price table configured now.

A store that answers SQL (``capabilities.sql``) may implement ``cost_rows`` (see
:class:`~asm_kernel.interfaces.Store`) and is asked first; every other store is read session by
session, a page of events at a time, keeping only the totals: a large log is streamed, never
loaded whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from attrs import evolve, field, frozen

from .errors import ValidationError
from .events import EventType

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["CostRow", "CostReport", "GROUPS", "cost_report", "parse_since"]

Group = Literal["session", "agent", "provider", "model", "day"]
GROUPS: tuple[str, ...] = ("session", "agent", "provider", "model", "day")
_PAGE = 500
_TYPES = (EventType.TOKEN_USAGE_UPDATED, EventType.MESSAGE_RECEIVED, EventType.PROVIDER_ATTEMPT_FAILED)


@frozen
class CostRow:
    """Totals of one group (``key``: a session id, agent, provider, model or ``YYYY-MM-DD``)."""

    key: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    #: US dollars of the calls whose cost is known.
    known_cost_usd: float = 0.0
    #: Calls whose price or usage was unknown: their cost is not in ``known_cost_usd``.
    unknown_cost_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return (self.input_tokens + self.output_tokens + self.cache_creation_input_tokens
                + self.cache_read_input_tokens)

    @property
    def cost_usd(self) -> float | None:
        """The whole cost, or None when part of it is unknown."""
        return None if self.unknown_cost_calls else self.known_cost_usd

    def add(self, usage: Mapping[str, Any] | None, cost: float | None) -> CostRow:
        usage = usage or {}
        return evolve(
            self,
            calls=self.calls + 1,
            input_tokens=self.input_tokens + int(usage.get("input_tokens", 0)),
            output_tokens=self.output_tokens + int(usage.get("output_tokens", 0)),
            cache_creation_input_tokens=self.cache_creation_input_tokens
            + int(usage.get("cache_creation_input_tokens", 0)),
            cache_read_input_tokens=self.cache_read_input_tokens + int(usage.get("cache_read_input_tokens", 0)),
            known_cost_usd=self.known_cost_usd + (cost or 0.0),
            unknown_cost_calls=self.unknown_cost_calls + (1 if cost is None or not usage else 0),
        )

    def merge(self, other: CostRow) -> CostRow:
        return evolve(
            self,
            calls=self.calls + other.calls,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_creation_input_tokens=self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
            known_cost_usd=self.known_cost_usd + other.known_cost_usd,
            unknown_cost_calls=self.unknown_cost_calls + other.unknown_cost_calls,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": self.cost_usd,
            "known_cost_usd": round(self.known_cost_usd, 9),
            "unknown_cost_calls": self.unknown_cost_calls,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CostRow:
        return cls(
            key=str(data["key"]),
            calls=int(data.get("calls", 0)),
            input_tokens=int(data.get("input_tokens", 0)),
            output_tokens=int(data.get("output_tokens", 0)),
            cache_creation_input_tokens=int(data.get("cache_creation_input_tokens", 0)),
            cache_read_input_tokens=int(data.get("cache_read_input_tokens", 0)),
            known_cost_usd=float(data.get("known_cost_usd", 0.0)),
            unknown_cost_calls=int(data.get("unknown_cost_calls", 0)),
        )


@frozen
class CostReport:
    """Rows (most expensive first), their total, and the date of each configured price table."""

    by: str
    rows: tuple[CostRow, ...]
    total: CostRow
    since: datetime | None = None
    until: datetime | None = None
    #: ``{"provider/model": "YYYY-MM-DD"}`` of every configured model with a price.
    price_tables: Mapping[str, str] = field(factory=dict)
    #: ``"sql"`` when the store computed it, ``"log"`` when the log was streamed.
    computed_by: str = "log"

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "rows": [r.to_dict() for r in self.rows],
            "total": self.total.to_dict(),
            "price_tables": dict(self.price_tables),
            "computed_by": self.computed_by,
        }


def parse_since(text: str | datetime | None, *, now: datetime | None = None) -> datetime | None:
    """``2026-07-01``, an ISO time, or a span back from now (``90m``, ``24h``, ``7d``)."""
    if text is None or isinstance(text, datetime):
        return None if text is None else (text if text.tzinfo else text.replace(tzinfo=UTC))
    from datetime import timedelta

    value = text.strip()
    units = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
    if value[-1:] in units and value[:-1].isdigit():
        return (now or datetime.now(UTC)) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            f"cannot read {text!r} as a time",
            path="since",
            hint="give a date (2026-07-01), an ISO time, or a span back from now (90m, 24h, 7d, 2w)",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _price_tables(kernel: Kernel) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, provider in kernel.providers.items():
        for info in getattr(provider, "models", ()):
            if info.price is not None:
                out[f"{name}/{info.name}"] = info.price.as_of or "undated"
    return dict(sorted(out.items()))


async def cost_report(
    kernel: Kernel,
    *,
    by: str = "model",
    since: datetime | str | None = None,
    until: datetime | str | None = None,
) -> CostReport:
    """The report (see the module docstring)."""
    if by not in GROUPS:
        raise ValidationError(f"cannot group cost by {by!r}", path="by", hint=f"choose one of {', '.join(GROUPS)}")
    start, end = parse_since(since), parse_since(until)
    store = kernel.store
    rows: dict[str, CostRow] | None = None
    computed = "log"
    if store.capabilities.sql and callable(getattr(store, "cost_rows", None)):
        found = await store.cost_rows(by=by, since=start, until=end)  # type: ignore[attr-defined]
        rows = {str(r["key"]): CostRow.from_dict(r) for r in found}
        computed = "sql"
    if rows is None:
        rows = await _from_log(kernel, by, start, end)
    ordered = tuple(sorted(rows.values(), key=lambda r: (-(r.known_cost_usd), -r.total_tokens, r.key)))
    total = CostRow("total")
    for row in ordered:
        total = total.merge(row)
    return CostReport(by, ordered, total, start, end, _price_tables(kernel), computed)


async def _from_log(kernel: Kernel, by: str, since: datetime | None, until: datetime | None) -> dict[str, CostRow]:
    rows: dict[str, CostRow] = {}
    store = kernel.store
    offset = 0
    while True:
        sessions = await store.list_sessions(limit=_PAGE, offset=offset)
        offset += len(sessions)
        for session in sessions:
            await _session_rows(kernel, session, by, since, until, rows)
        if len(sessions) < _PAGE:
            return rows


async def _session_rows(
    kernel: Kernel, session: Any, by: str, since: datetime | None, until: datetime | None, rows: dict[str, CostRow]
) -> None:
    after = 0
    # Who served each run's latest call: its message_received or provider_attempt_failed comes
    # right before the token_usage_updated it reports.
    served: dict[str | None, tuple[str, str]] = {}
    while True:
        page = await kernel.store.read(session.id, after=after, limit=_PAGE, types=list(_TYPES))
        for event in page:
            after = event.seq
            payload = event.payload
            if event.type != EventType.TOKEN_USAGE_UPDATED:
                served[event.run_id] = (str(payload.get("provider") or "?"), str(payload.get("model") or "?"))
                continue
            if (since is not None and event.timestamp < since) or (until is not None and event.timestamp >= until):
                continue
            provider, model = served.get(event.run_id, ("?", "?"))
            key = {
                "session": session.id,
                "agent": session.agent_id,
                "provider": provider,
                "model": f"{provider}/{model}",
                "day": event.timestamp.astimezone(UTC).strftime("%Y-%m-%d"),
            }[by]
            rows[key] = rows.get(key, CostRow(key)).add(payload.get("usage"), payload.get("cost"))
        if len(page) < _PAGE:
            return


def rows_table(rows: Sequence[CostRow]) -> list[list[str]]:
    """The rows as the CLI prints them: unknown cost shown as such, never as 0."""
    out = []
    for row in rows:
        if row.unknown_cost_calls and row.calls == row.unknown_cost_calls:
            cost = "unknown"
        elif row.unknown_cost_calls:
            cost = f"${row.known_cost_usd:.4f} + unknown ({row.unknown_cost_calls} calls)"
        else:
            cost = f"${row.known_cost_usd:.4f}"
        counts = (row.calls, row.input_tokens, row.output_tokens, row.total_tokens)
        out.append([row.key, *(str(n) for n in counts), cost])
    return out
