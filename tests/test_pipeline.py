"""The run pipeline is open: stages are named, ordered, and a plugin adds or wraps them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asm_kernel import Kernel, RunStatus, hookimpl
from asm_kernel.builtin.scripted import ScriptedProvider
from asm_kernel.errors import PluginError, ValidationError
from asm_kernel.pipeline import RUN_STAGES, TURN_STAGES, Pipeline

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def audit_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGINS))


def kernel(provider: Any, **config: Any) -> Kernel:
    return Kernel({"store": {"use": "memory"}, **config}, providers={"s": provider})


async def test_a_plugin_outside_the_kernel_adds_and_wraps_stages(audit_plugin: None) -> None:
    provider = ScriptedProvider(
        [
            [
                {"tool_use": {"name": "lookup", "input": {}, "id": "t1"}},
                {"usage": {"input_tokens": 5, "output_tokens": 2}},
            ],
            [{"text": "done"}, {"usage": {"input_tokens": 9, "output_tokens": 1}}],
        ]
    )

    class Lookup:
        from asm_kernel import ToolSpec

        spec = ToolSpec("lookup")

        async def __call__(self, input: dict[str, Any]) -> str:
            return "found"

    k = Kernel(
        {"store": {"use": "memory"}, "plugins": {"modules": ["asm_stage_audit"]}},
        providers={"s": provider},
        tools=[Lookup()],
    )
    async with k:
        assert k.pipeline.names("run") == ["prepare", "quota", "start", "preflight", "turns", "settle"]
        assert k.pipeline.names("turn") == ["context", "call", "audit", "tools"]
        result = await k.run_once("mail me at jane.doe@example.com please")
        events = await k.sessions.events(result.session_id)
    assert result.status is RunStatus.COMPLETED and result.output == "done"
    # The provider saw the masked text; the log keeps what the user wrote.
    sent = provider.requests[0].messages[0].text
    assert "jane.doe@example.com" not in sent and "[email]" in sent
    (message_sent,) = [e for e in events if e.type == "message_sent"]
    assert "jane.doe@example.com" in message_sent.payload["message"]["content"][0]["text"]
    types = [e.type for e in events]
    audits = [e for e in events if e.type == "audit.model_call"]
    assert [a.payload["turn"] for a in audits] == [0, 1]
    assert [a.payload["total_tokens"] for a in audits] == [7, 17]
    # Each audit record sits right after the model call it describes, in seq order.
    for audit in audits:
        assert types[audit.seq - 2] == "token_usage_updated"


async def test_a_stage_that_raises_fails_the_run_with_its_terminal_unit(audit_plugin: None) -> None:
    k = Kernel(
        {"store": {"use": "memory"}, "plugins": {"modules": ["asm_stage_audit"]}},
        providers={"s": ScriptedProvider([[{"text": "hi"}]])},
    )
    async with k:
        session = await k.sessions.create(agent_id="blocked")
        result = await k.sessions.run(session.id, "hello", raise_on_error=False)
        events = [e.type for e in await k.sessions.events(session.id)]
    assert result.status is RunStatus.FAILED and result.error["code"] == "policy.denied"
    assert events == ["session_created", "error_occurred", "run_failed"]


def test_pipeline_placement_is_checked() -> None:
    pipeline = Pipeline()
    assert pipeline.names("run") == list(RUN_STAGES) and pipeline.names("turn") == list(TURN_STAGES)

    async def stage(state: Any) -> None:
        pass

    with pytest.raises(ValidationError, match="no stage named 'nope'"):
        pipeline.add("x", stage, after="nope")
    with pytest.raises(ValidationError, match="exactly one"):
        pipeline.add("x", stage)
    with pytest.raises(ValidationError, match="exactly one"):
        pipeline.add("x", stage, before="call", after="call")
    with pytest.raises(PluginError, match="already exists"):
        pipeline.add("call", stage, after="tools")
    with pytest.raises(ValidationError, match="no stage named"):
        pipeline.wrap("nope", stage)  # type: ignore[arg-type]
    pipeline.add("x", stage, before="call")
    assert pipeline.names("turn") == ["context", "x", "call", "tools"]


async def test_wrappers_nest_in_the_order_they_were_added_and_may_skip_a_stage() -> None:
    order: list[str] = []

    class Plugin:
        @hookimpl
        def asm_configure_pipeline(self, pipeline: Any) -> None:
            async def outer(state: Any, proceed: Any) -> None:
                order.append("outer in")
                await proceed()
                order.append("outer out")

            async def inner(state: Any, proceed: Any) -> None:
                order.append("inner in")
                await proceed()
                order.append("inner out")

            async def skip_preflight(state: Any, proceed: Any) -> None:
                order.append("preflight skipped")

            pipeline.wrap("settle", outer)
            pipeline.wrap("settle", inner)
            pipeline.wrap("preflight", skip_preflight)

    class Refuses:
        async def check_run(self, **kwargs: Any) -> None:
            raise AssertionError("preflight must have been skipped")

        async def check_usage(self, **kwargs: Any) -> None:
            pass

        async def check_tool(self, **kwargs: Any) -> None:
            pass

    k = Kernel({"store": {"use": "memory"}}, providers={"s": ScriptedProvider([[{"text": "ok"}]])}, plugins=[Plugin()])
    async with k:
        k.policies.append(Refuses())
        result = await k.run_once("hi")
    assert result.status is RunStatus.COMPLETED
    assert order == ["preflight skipped", "outer in", "inner in", "inner out", "outer out"]


async def test_a_plugin_that_breaks_the_pipeline_stops_the_kernel_from_starting() -> None:
    class Broken:
        @hookimpl
        def asm_configure_pipeline(self, pipeline: Any) -> None:
            pipeline.add("oops", lambda state: None, after="does-not-exist")

    k = Kernel({"store": {"use": "memory"}}, plugins=[Broken()])
    with pytest.raises(ValidationError) as info:
        await k.start()
    assert info.value.details["plugin"] == "direct-0"  # the plugin object's registered name
