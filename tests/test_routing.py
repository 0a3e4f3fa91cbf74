"""Capability negotiation, routing, retries, failover and circuit breakers."""

from __future__ import annotations

import time
from typing import Any

import pytest

from asm_kernel import ImageBlock, Kernel, RunStatus, TextBlock, hookimpl
from asm_kernel.builtin.routers import CapabilityRouter, CapabilitySettings
from asm_kernel.builtin.scripted import ScriptedProvider
from asm_kernel.errors import (
    CapabilityError,
    ConfigError,
    InvalidRequestError,
    ProviderOverloadedError,
    RateLimitError,
    ValidationError,
)
from asm_kernel.model import Run, Session
from asm_kernel.resilience import BreakerBoard, CircuitBreaker
from asm_kernel.routing import Negotiation, RouteContext

FAST = {"initial_backoff": 0.001, "max_backoff": 0.01, "jitter": False}


def sp(*turns: list[dict[str, Any]], caps: tuple[str, ...] = ("streaming",), name: str = "p") -> ScriptedProvider:
    from asm_kernel.builtin.scripted import ScriptedSettings

    return ScriptedProvider(
        settings=ScriptedSettings(turns=[list(t) for t in turns], capabilities=list(caps)), name=name
    )


def kernel(providers: dict[str, ScriptedProvider], **config: Any) -> Kernel:
    config.setdefault("resilience", FAST)
    return Kernel({"store": {"use": "memory"}, **config}, providers=providers)


async def types_of(k: Kernel, session_id: str) -> list[str]:
    return [e.type for e in await k.sessions.events(session_id)]


# -- negotiation ------------------------------------------------------------------------------


async def test_required_capability_picks_the_provider_that_has_it() -> None:
    plain = sp([{"text": "plain"}], caps=("streaming",))
    seeing = sp([{"text": "I can see"}], caps=("streaming", "vision"))
    async with kernel({"plain": plain, "seeing": seeing}) as k:
        r = await k.run_once("look", requires=["vision"])
        decided = (await k.sessions.events(r.session_id, types=["routing_decided"]))[0].payload
    assert r.output == "I can see" and r.provider == "seeing" and not plain.requests
    assert decided["candidates"] == ["seeing"]
    assert decided["negotiation"]["plain"] == {
        "outcome": "rejected",
        "missing_required": ["vision"],
        "missing_preferred": [],
        "history_downgrades": [],
    }


async def test_missing_requirement_names_what_is_missing_and_who_has_it() -> None:
    async with kernel({"a": sp(caps=("streaming",)), "b": sp(caps=("streaming", "tools"))}) as k:
        with pytest.raises(CapabilityError) as info:
            await k.run_once("x", requires=["tools", "vision"])
    message = str(info.value)
    assert "a lacks tools, vision; b lacks vision" in message and "vision: no configured provider" in message


async def test_explicit_provider_without_the_capability_is_an_error() -> None:
    async with kernel({"a": sp(caps=("streaming",)), "b": sp(caps=("streaming", "vision"))}) as k:
        with pytest.raises(CapabilityError, match="vision: b"):
            await k.run_once("x", provider="a", requires=["vision"])


async def test_unknown_capability_names_are_refused_with_a_suggestion() -> None:
    async with kernel({"a": sp()}) as k:
        with pytest.raises(ValidationError) as info:
            await k.run_once("x", requires=["visoin"])
    assert info.value.path == "requires[0]" and 'did you mean "vision"' in str(info.value)


async def test_missing_preference_degrades_and_is_recorded() -> None:
    async with kernel({"a": sp([{"text": "ok"}], caps=("streaming",))}) as k:
        r = await k.run_once("x", prefers=["json_schema"])
        degraded = await k.sessions.events(r.session_id, types=["capability_degraded"])
    assert r.status is RunStatus.COMPLETED
    assert degraded[0].payload["provider"] == "a" and degraded[0].payload["missing_preferred"] == ["json_schema"]


async def test_full_fit_is_preferred_over_degraded() -> None:
    a = sp([{"text": "a"}], caps=("streaming",))
    b = sp([{"text": "b"}], caps=("streaming", "json_schema"))
    async with kernel({"a": a, "b": b}) as k:
        r = await k.run_once("x", prefers=["json_schema"])
    assert r.provider == "b"


async def test_history_with_reasoning_and_images_is_downgraded_for_a_target_without_them() -> None:
    thinker = sp(
        [{"thinking": "hmm", "signature": "sig"}, {"text": "first"}], caps=("streaming", "reasoning", "vision")
    )
    plain = sp([{"text": "second"}], caps=("streaming",))
    async with kernel({"thinker": thinker, "plain": plain}) as k:
        first = await k.run_once([TextBlock("what is this?"), ImageBlock("image/png", data="aGk=")], provider="thinker")
        second = await k.run(first.session_id, "and now?", provider="plain")
        downgraded = await k.sessions.events(first.session_id, types=["history_downgraded"])
        kept = await k.sessions.transcript(first.session_id)
    assert second.output == "second"
    sent = plain.requests[0].messages
    assert TextBlock("[image omitted]") in sent[0].content
    assert all(b.type != "thinking" for m in sent for b in m.content)
    assert downgraded[0].payload == {
        "provider": "plain",
        "missing": ["reasoning", "vision"],
        "images": 1,
        "reasoning_blocks": 1,
    }
    # The stored log keeps the original blocks; only the request to `plain` was rewritten.
    assert kept[0].content[1] == ImageBlock("image/png", data="aGk=") and kept[1].content[0].type == "thinking"


# -- router -----------------------------------------------------------------------------------


def ctx(last: str | None = None, run_id: str = "run_x") -> RouteContext:
    return RouteContext(Session(), Run(session_id="s", id=run_id), frozenset(), frozenset(), last)


def neg(name: str, outcome: str = "full") -> Negotiation:
    return Negotiation(name, outcome)  # type: ignore[arg-type]


def test_router_orders_by_stickiness_fit_preference() -> None:
    router = CapabilityRouter(CapabilitySettings(prefer=["c", "a"]))
    cands = [neg("a"), neg("b", "degraded"), neg("c")]
    assert router.select(cands, ctx())[:2] == ["c", "a"]
    assert router.select(cands, ctx(last="b"))[0] == "b"  # sticky even when degraded
    assert CapabilityRouter(CapabilitySettings(prefer=["c"], sticky=False)).select(cands, ctx(last="b"))[0] == "c"
    assert router.select([neg("a", "degraded"), neg("c")], ctx())[0] == "c"
    assert CapabilityRouter(CapabilitySettings(exclude=["a"])).select(cands, ctx()) == ["c", "b"]


def test_weights_share_first_attempts() -> None:
    router = CapabilityRouter(CapabilitySettings(weights={"a": 3.0, "b": 1.0}))
    firsts = [router.select([neg("a"), neg("b")], ctx(run_id=f"run_{i}"))[0] for i in range(2000)]
    share = firsts.count("a") / len(firsts)
    assert 0.68 < share < 0.82  # expected 0.75
    assert router.select([neg("a"), neg("b")], ctx(run_id="run_7")) == router.select(
        [neg("a"), neg("b")], ctx(run_id="run_7")
    )  # reproducible per run


async def test_sessions_stick_to_the_provider_that_answered() -> None:
    a = sp([{"text": "a"}])
    b = sp([{"text": "b"}])
    async with kernel({"a": a, "b": b}) as k:
        first = await k.run_once("x", provider="b")
        second = await k.run(first.session_id, "y")
    assert second.provider == "b"


async def test_exclusions_per_run() -> None:
    async with kernel({"a": sp([{"text": "a"}]), "b": sp([{"text": "b"}])}) as k:
        assert (await k.run_once("x", exclude=["a"])).provider == "b"
        with pytest.raises(ValidationError, match="both requested and excluded"):
            await k.run_once("x", provider="a", exclude=["a"])
        with pytest.raises(ValidationError, match="not configured"):
            await k.run_once("x", exclude=["ghost"])


async def test_a_hook_can_veto_or_reorder_candidates() -> None:
    class OnlyB:
        @hookimpl
        def asm_route_candidates(self, candidates):
            return [c for c in candidates if c == "b"]

    class Nobody:
        @hookimpl
        def asm_route_candidates(self, candidates):
            return []

    providers = {"a": sp([{"text": "a"}]), "b": sp([{"text": "b"}])}
    async with Kernel({"store": {"use": "memory"}}, providers=providers, plugins=[OnlyB()]) as k:
        assert (await k.run_once("x")).provider == "b"
    async with Kernel({"store": {"use": "memory"}}, providers=providers, plugins=[Nobody()]) as k:
        with pytest.raises(CapabilityError, match="vetoed"):
            await k.run_once("x")


def test_router_config_errors_have_paths() -> None:
    cases = [
        ({"router": {"use": "capability", "prefer": ["echo", "ghost"]}}, "router.prefer[1]"),
        ({"router": {"use": "capability", "weights": {"echo": 0}}}, "router.weights.echo"),
        ({"router": {"use": "capability", "weights": {"echo": "heavy"}}}, "router.weights.echo"),
        ({"router": {"use": "nope"}}, "router.use"),
        ({"resilience": {"max_attempts": 0}}, "resilience.max_attempts"),
        ({"run": {"requires": "tools"}}, "run.requires"),
    ]
    for config, path in cases:
        with pytest.raises(ConfigError) as info:
            Kernel({"store": {"use": "memory"}, **config})._build_all()
        assert info.value.path == path, (config, str(info.value))


# -- retries and failover ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "code", ["provider.rate_limited", "provider.overloaded", "provider.server_error", "provider.connection"]
)
async def test_failover_before_output_on_retryable_errors(code: str) -> None:
    a = sp([{"error": code}], name="a")
    b = sp([{"text": "from b"}], name="b")
    async with kernel({"a": a, "b": b}, resilience={**FAST, "max_attempts": 2}) as k:
        r = await k.run_once("x")
        kinds = await types_of(k, r.session_id)
    assert r.output == "from b" and r.provider == "b"
    assert len(a.requests) == 2 and len(b.requests) == 1  # one retry layer: exactly max_attempts
    assert kinds.count("provider_attempt_failed") == 2
    assert "retry_scheduled" in kinds and "provider_failover" in kinds
    assert kinds[-1] == "run_completed"


async def test_no_failover_after_output_reached_the_caller() -> None:
    a = sp([{"text": "half an answer"}, {"error": "provider.overloaded"}], name="a")
    b = sp([{"text": "from b"}], name="b")
    async with kernel({"a": a, "b": b}) as k:
        with pytest.raises(ProviderOverloadedError) as info:
            await k.run_once("x")
    assert info.value.output_started and len(a.requests) == 1 and not b.requests


async def test_non_retryable_errors_neither_retry_nor_fail_over() -> None:
    a = sp([{"error": "provider.invalid_request"}], name="a")
    b = sp([{"text": "b"}], name="b")
    async with kernel({"a": a, "b": b}) as k:
        with pytest.raises(InvalidRequestError):
            await k.run_once("x")
    assert len(a.requests) == 1 and not b.requests


async def test_retry_honours_retry_after() -> None:
    a = sp([{"error": "provider.rate_limited", "retry_after": 0.2}], [{"text": "ok"}], name="a")
    async with kernel({"a": a}) as k:
        t0 = time.monotonic()
        r = await k.run_once("x")
        elapsed = time.monotonic() - t0
        scheduled = await k.sessions.events(r.session_id, types=["retry_scheduled"])
    assert r.output == "ok" and scheduled[0].payload["delay"] >= 0.2 and elapsed >= 0.2


async def test_the_deadline_bounds_all_attempts() -> None:
    a = sp([{"error": "provider.rate_limited", "retry_after": 5}], name="a")
    async with kernel({"a": a}, resilience={**FAST, "max_attempts": 5, "deadline": 1.0}) as k:
        s = await k.sessions.create()
        with pytest.raises(RateLimitError):
            await k.run(s.id, "x")
        kinds = await types_of(k, s.id)
    # A 5 s retry-after does not fit the 1 s deadline: no retry is scheduled, nothing waits.
    assert len(a.requests) == 1 and "retry_scheduled" not in kinds and kinds[-1] == "run_failed"


async def test_failover_disabled_stays_on_one_provider() -> None:
    a = sp([{"error": "provider.overloaded"}], name="a")
    b = sp([{"text": "b"}], name="b")
    async with kernel({"a": a, "b": b}, resilience={**FAST, "failover": False}) as k:
        with pytest.raises(ProviderOverloadedError):
            await k.run_once("x")
    assert not b.requests


# -- circuit breaker --------------------------------------------------------------------------


def test_breaker_state_machine() -> None:
    now = [0.0]
    b = CircuitBreaker(threshold=2, cooldown=10, clock=lambda: now[0])
    assert b.allow() and b.failure() == "closed" and b.failure() == "open"
    assert not b.allow()
    now[0] = 10.0
    assert b.current() == "half_open" and b.allow() and not b.allow()  # a single probe
    assert b.failure() == "open"
    now[0] = 20.0
    assert b.allow() and b.success() == "closed" and b.allow()


async def test_breaker_opens_skips_probes_and_closes() -> None:
    a = sp(
        [{"error": "provider.server_error"}], [{"error": "provider.server_error"}], [{"text": "a is back"}], name="a"
    )
    b = sp([{"text": "b"}], name="b")
    cfg = {**FAST, "max_attempts": 1, "breaker_threshold": 2, "breaker_cooldown": 30}
    now = [0.0]
    async with kernel(
        {"a": a, "b": b}, resilience=cfg, router={"use": "capability", "prefer": ["a", "b"], "sticky": False}
    ) as k:
        k.breakers = BreakerBoard(k.config.resilience, clock=lambda: now[0])  # time moves only when told
        s = await k.sessions.create()
        await k.run(s.id, "1")  # a fails (1), b answers
        await k.run(s.id, "2")  # a fails (2): breaker opens; b answers
        r3 = await k.run(s.id, "3")  # a skipped fast: open
        assert r3.provider == "b" and len(a.requests) == 2
        now[0] += 30  # the cooldown passes
        r4 = await k.run(s.id, "4")  # half-open probe succeeds: closed
        events = await k.sessions.events(s.id)
    assert r4.provider == "a" and r4.output == "a is back"
    changes = [(e.payload["from"], e.payload["to"]) for e in events if e.type == "breaker_state_changed"]
    assert changes == [("closed", "open"), ("half_open", "closed")]
    assert [e.payload["provider"] for e in events if e.type == "provider_skipped"] == ["a"]
    assert k.breakers.get("a", a.default_model).current() == "closed"


async def test_all_breakers_open_fails_fast_with_a_clear_error() -> None:
    a = sp([{"error": "provider.overloaded"}], name="a")
    async with kernel(
        {"a": a}, resilience={**FAST, "max_attempts": 1, "breaker_threshold": 1, "breaker_cooldown": 60}
    ) as k:
        with pytest.raises(ProviderOverloadedError):
            await k.run_once("x")
        with pytest.raises(CapabilityError, match="circuit breakers are open"):
            await k.run_once("y")
    assert len(a.requests) == 1


def test_parse_retry_after_reads_every_form() -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    from asm_kernel.resilience import parse_retry_after

    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= parse_retry_after({"retry-after": later}) <= 30  # type: ignore[operator]
    assert parse_retry_after({"retry-after": "soon"}) is None and parse_retry_after(None) is None
