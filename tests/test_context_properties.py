"""Properties of every window, over random sessions (Hypothesis).

Sessions mix text, images, reasoning, parallel tool calls with their results, results that never
came (failed runs), calls the caller answered or abandoned, compactions and pins. For every
window cut from them, under random limits:

* no tool call without its result, no result without its call, a user turn first (the request
  validator passes);
* it fits its token budget by the estimator, or the newest turn alone does not fit and
  :class:`ContextWindowExceededError` says so;
* the newest turn and every pinned turn are in it;
* the same log fed in random pieces (an incremental cache) and at once (a rebuild after a
  restart) gives the same window.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")

from context_sessions import make_log, sessions  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from asm_kernel.context.tokens import TokenEstimator  # noqa: E402
from asm_kernel.context.transcript import TranscriptBuilder  # noqa: E402
from asm_kernel.context.validate import validate_request  # noqa: E402
from asm_kernel.context.window import Limits, cut_window  # noqa: E402
from asm_kernel.errors import ContextWindowExceededError  # noqa: E402
from asm_kernel.model import ProviderRequest  # noqa: E402

ESTIMATORS = [
    TokenEstimator(),
    TokenEstimator("tight", chars_per_token=2.5, message_overhead=7, image_tokens=300, request_overhead=10),
]

limits = st.builds(
    Limits,
    budget=st.one_of(st.none(), st.integers(min_value=20, max_value=3000)),
    max_messages=st.one_of(st.none(), st.integers(min_value=1, max_value=30)),
    max_age=st.one_of(st.none(), st.floats(min_value=1, max_value=20000)),
    truncate=st.booleans(),
)


def _build(events: list[Any], cuts: list[int]) -> TranscriptBuilder:
    builder = TranscriptBuilder()
    start = 0
    for cut in sorted(set(cuts)):
        builder.feed(events[start:cut])
        start = cut
    builder.feed(events[start:])
    return builder


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=sessions,
    limit=limits,
    estimator=st.sampled_from(ESTIMATORS),
    fixed=st.integers(min_value=0, max_value=200),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_every_window_is_valid_fits_keeps_what_it_must_and_rebuilds_the_same(
    specs: list[Any], limit: Limits, estimator: TokenEstimator, fixed: int, cuts: list[int]
) -> None:
    log = make_log(specs)
    events = log.events
    incremental = _build(events, cuts)
    rebuilt = _build(events, [])
    now = log.now + timedelta(seconds=5)
    try:
        window = cut_window(incremental, limit, estimator, fixed=fixed, now=now, target=("p", "m", "d"))
    except ContextWindowExceededError as exc:
        assert limit.truncate and limit.budget is not None
        assert exc.details["required"] > limit.budget
        with pytest.raises(ContextWindowExceededError):
            cut_window(rebuilt, limit, estimator, fixed=fixed, now=now, target=("p", "m", "d"))
        return
    again = cut_window(rebuilt, limit, estimator, fixed=fixed, now=now, target=("p", "m", "d"))
    assert window == again, "a rebuild from the log must give the same window as the incremental cache"

    request = ProviderRequest(model="m", messages=window.messages, system="be brief")
    validate_request(request)  # no orphaned call or result, user first, blocks in their roles
    if limit.truncate and limit.budget is not None:
        assert window.estimated <= limit.budget
        # The estimate of the request as sent is never above the window's own (merging only saves).
        assert fixed + estimator.messages(window.messages) <= window.estimated
    # The newest turn (the run's input) is always there, whole.
    newest = incremental.groups[-1]
    assert window.included[-1]["to"] == newest.last_seq
    assert window.included[-1]["from"] <= newest.first_seq
    sent_blocks = [b for m in window.messages for b in m.content]
    for entry in incremental.entries[newest.start:newest.end]:
        for block in entry.message.content:
            assert block in sent_blocks
    # Pinned turns are always there.
    for seq in incremental.pinned:
        group = incremental.group_of_seq(seq)
        if group is None:
            continue
        for entry in incremental.group_entries(group):
            for block in entry.message.content:
                assert block in sent_blocks, f"pinned seq {seq} is missing"
    # What was left out is accounted for: every group is included, dropped or summarized.
    spans = [*window.included, *window.dropped]
    for g in incremental.groups[(incremental.summary.through if incremental.summary else 0):]:
        assert any(s["from"] <= g.first_seq and g.last_seq <= s["to"] for s in spans)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=sessions)
def test_the_whole_transcript_pairs_every_call_and_starts_with_the_user(specs: list[Any]) -> None:
    log = make_log(specs)
    builder = _build(log.events, [])
    messages = builder.messages()
    if builder.groups and builder.groups[0].starts_user:
        validate_request(ProviderRequest(model="m", messages=messages))
    # The merged transcript equals the entries merged in order (with the summary in front); pinned
    # turns inside a summarized range are the window's addition, so they are left out here.
    builder.pinned.clear()
    window = cut_window(builder, Limits(truncate=False), TokenEstimator(), fixed=0, now=log.now)
    assert list(window.messages) == messages


@st.composite
def kernel_runs(draw: Any) -> list[dict[str, Any]]:
    return draw(st.lists(st.fixed_dictionaries({
        "size": st.integers(min_value=0, max_value=600),
        "tools": st.integers(min_value=0, max_value=2),
        "thinking": st.booleans(),
        "reported": st.sampled_from([None, 0.5, 1.0, 1.5]),
    }), min_size=1, max_size=14))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    runs=kernel_runs(),
    strategy=st.sampled_from(["window", "summarize"]),
    max_messages=st.one_of(st.none(), st.integers(min_value=2, max_value=12)),
    window=st.integers(min_value=1_500, max_value=6_000),
)
def test_every_request_the_pipeline_sends_is_valid_fits_and_keeps_the_system_prompt(
    runs: list[dict[str, Any]], strategy: str, max_messages: int | None, window: int
) -> None:
    import asyncio

    from asm_kernel import Kernel, ToolSpec
    from asm_kernel.builtin.echo import EchoProvider, EchoSettings
    from asm_kernel.builtin.scripted import ScriptedProvider, ScriptedSettings
    from asm_kernel.context.tokens import estimate_messages

    turns: list[list[dict[str, Any]]] = []
    for i, run in enumerate(runs):
        for t in range(run["tools"]):
            step: list[dict[str, Any]] = [{"tool_use": {"name": "lookup", "input": {"i": i}, "id": f"c{i}_{t}"}}]
            if run["thinking"]:
                step.insert(0, {"thinking": "considering", "signature": "sig"})
            turns.append(step)
        turns.append([{"text": "done " * (run["size"] // 50)}])
    provider = ScriptedProvider(settings=ScriptedSettings(turns=turns, context_window=window))

    class Lookup:
        spec = ToolSpec("lookup")

        async def __call__(self, input: dict[str, Any]) -> str:
            return "found " * 40

    async def go() -> list[Any]:
        config = {"store": {"use": "memory"}, "run": {"system": "SYSTEM PROMPT"},
                  "context": {"strategy": strategy, "max_messages": max_messages, "summarizer": "sum",
                              "summary_max_tokens": 30}}
        summarizer = EchoProvider(EchoSettings(model="sum-1"), name="sum")
        async with Kernel(config, providers={"main": provider, "sum": summarizer}, tools=[Lookup()]) as k:
            session = await k.sessions.create()
            for i, run in enumerate(runs):
                result = await k.sessions.run(session.id, f"input {i} " + "x" * run["size"], max_turns=4)
                assert result.status.value == "completed", result.error
            return await k.sessions.events(session.id, types=["context_prepared"])

    prepared = asyncio.run(go())
    hard = window - min(8192, window, window // 4)
    for request in provider.requests:
        validate_request(request)
        assert request.system == "SYSTEM PROMPT"
        assert estimate_messages(request.messages, request.system) <= hard  # what the provider counts
    for event in prepared:
        assert event.payload["counted_tokens"] <= event.payload["budget"]
        if max_messages is not None and event.payload["messages"] > max_messages:
            # Only the newest turn is sent: it is always kept, however many messages it holds.
            assert len(event.payload["included"]) == 1 and not event.payload["pinned"]
