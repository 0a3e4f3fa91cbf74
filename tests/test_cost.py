"""Cost reports from the log: grouped, filtered by time, unknown prices shown as unknown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from asm_kernel import Kernel, ModelInfo, Price
from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.builtin.scripted import ScriptedProvider
from asm_kernel.cost import CostRow, parse_since
from asm_kernel.errors import ValidationError


class Priced(ScriptedProvider):
    @property
    def models(self) -> Any:
        return (ModelInfo("scripted-1", 100_000, 1_000, Price(2.0, 8.0, as_of="2026-06-30")),)


def turn(i: int, o: int) -> list[list[dict[str, Any]]]:
    return [[{"text": "ok"}, {"usage": {"input_tokens": i, "output_tokens": o}}]]


async def test_cost_by_every_grouping_with_unknown_prices_kept_unknown() -> None:
    store = MemoryStore()
    providers = {"paid": Priced(turn(1_000, 500)), "free-ish": ScriptedProvider(turn(10, 5))}
    async with Kernel({"plugins": {"autoload": False}}, store=store, providers=providers) as k:
        a = await k.sessions.create(agent_id="support")
        b = await k.sessions.create(agent_id="sales")
        await k.run(a.id, "1", provider="paid")
        await k.run(a.id, "2", provider="paid")
        await k.run(b.id, "3", provider="free-ish")
        by_model = await k.cost(by="model")
        by_agent = await k.cost(by="agent")
        by_session = await k.cost(by="session")
        by_day = await k.cost(by="day")
        by_provider = await k.cost(by="provider")
    paid, unknown = by_model.rows
    assert paid.key == "paid/scripted-1" and paid.calls == 2 and paid.total_tokens == 3_000
    assert paid.cost_usd == pytest.approx(2 * (1_000 * 2.0 + 500 * 8.0) / 1e6)
    assert unknown.key == "free-ish/scripted-1" and unknown.cost_usd is None and unknown.unknown_cost_calls == 1
    assert by_model.total.cost_usd is None and by_model.total.known_cost_usd == pytest.approx(paid.known_cost_usd)
    assert {r.key: r.calls for r in by_agent.rows} == {"support": 2, "sales": 1}
    assert {r.key for r in by_session.rows} == {a.id, b.id}
    assert [r.key for r in by_day.rows] == [datetime.now(UTC).strftime("%Y-%m-%d")]
    assert {r.key for r in by_provider.rows} == {"paid", "free-ish"}
    assert by_model.price_tables == {"paid/scripted-1": "2026-06-30"} and by_model.computed_by == "log"
    data = by_model.to_dict()
    assert data["rows"][1]["cost_usd"] is None and data["rows"][1]["unknown_cost_calls"] == 1


async def test_since_and_until_bound_the_report() -> None:
    providers = {"p": Priced(turn(10, 10))}
    async with Kernel({"plugins": {"autoload": False}}, store=MemoryStore(), providers=providers) as k:
        await k.run_once("x")
        now = datetime.now(UTC)
        assert (await k.cost(since=now + timedelta(seconds=1))).rows == ()
        assert (await k.cost(until=now - timedelta(days=1))).rows == ()
        assert (await k.cost(since="1d")).total.calls == 1
    assert parse_since("2026-07-01") == datetime(2026, 7, 1, tzinfo=UTC)
    assert parse_since("24h", now=datetime(2026, 7, 2, tzinfo=UTC)) == datetime(2026, 7, 1, tzinfo=UTC)
    with pytest.raises(ValidationError, match="span back from now"):
        parse_since("yesterday")


async def test_a_store_that_answers_sql_is_asked_first() -> None:
    from asm_kernel.writes import StoreCapabilities

    class SqlStore(MemoryStore):
        capabilities = StoreCapabilities(sql=True)
        asked: list[Any] = []

        async def cost_rows(self, *, by: str, since: Any, until: Any) -> list[dict[str, Any]]:
            self.asked.append((by, since, until))
            return [CostRow("m", calls=3, input_tokens=5, known_cost_usd=0.5, unknown_cost_calls=1).to_dict()]

    async with Kernel({"plugins": {"autoload": False}}, store=SqlStore()) as k:
        report = await k.cost(by="model", since="2026-01-01")
    assert report.computed_by == "sql" and report.rows[0].calls == 3 and report.rows[0].cost_usd is None
    assert SqlStore.asked == [("model", datetime(2026, 1, 1, tzinfo=UTC), None)]


async def test_a_bad_grouping_is_refused() -> None:
    async with Kernel({"plugins": {"autoload": False}}, store=MemoryStore()) as k:
        with pytest.raises(ValidationError, match="choose one of session, agent"):
            await k.cost(by="colour")


async def test_a_large_log_is_read_a_page_at_a_time() -> None:
    class Counting(MemoryStore):
        biggest = 0

        async def read(self, session_id: str, **kwargs: Any) -> Any:
            events = await super().read(session_id, **kwargs)
            Counting.biggest = max(Counting.biggest, len(events))
            assert kwargs.get("limit") is not None or not kwargs.get("types")
            return events

    store = Counting()
    many = [[{"text": "ok"}, {"usage": {"input_tokens": 1, "output_tokens": 1}}]] * 1
    async with Kernel({"plugins": {"autoload": False}}, store=store, providers={"p": Priced(many)}) as k:
        session = await k.sessions.create()
        for i in range(30):
            await k.run(session.id, str(i))
        Counting.biggest = 0
        report = await k.cost(by="session")
    assert report.total.calls == 30 and Counting.biggest <= 500
