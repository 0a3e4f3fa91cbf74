"""Tools, budgets, approvals and MCP end to end: both SDK plugins over HTTP against their fake servers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asm_kernel import Kernel, RunStatus, ToolSpec
from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.errors import BudgetExceededError

PLUGINS = Path(__file__).parent.parent / "plugins"
MCP_SERVER = Path(__file__).parent.parent.parent / "plugins" / "asm-mcp" / "tests" / "mcp_server.py"


@pytest.fixture
def claude() -> Iterator[Any]:
    from asm_anthropic.testing import FakeAnthropic

    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def gpt() -> Iterator[Any]:
    from asm_openai.testing import FakeOpenAI

    with FakeOpenAI() as fake:
        yield fake


class Vendor:
    """One SDK plugin and its fake server, scripted the same way for both."""

    def __init__(self, name: str, fake: Any) -> None:
        self.name = name
        self.fake = fake

    def provider(self) -> dict[str, Any]:
        if self.name == "anthropic":
            return {"name": "llm", "use": "anthropic", "base_url": self.fake.url, "api_key": "sk-ant-test",
                    "model": "claude-sonnet-5-5"}
        # A compatible server (not api.openai.com) has no built-in price table: give the model one.
        price = {"input_price": 0.75, "output_price": 4.5, "context_window": 400_000, "max_output_tokens": 128_000}
        return {"name": "llm", "use": "openai", "api": "chat", "base_url": self.fake.base_url, "api_key": "sk-test",
                "model": "gpt-5.4-mini", "models": {"gpt-5.4-mini": price}}

    def tool_calls(self, calls: list[tuple[str, str, dict[str, Any]]], usage: tuple[int, int] = (40, 20)) -> None:
        if self.name == "anthropic":
            from asm_anthropic.testing import tool_use_block

            self.fake.reply([tool_use_block(n, a, id=i) for i, n, a in calls], stop_reason="tool_use",
                            usage={"input_tokens": usage[0], "output_tokens": usage[1]})
        else:
            from asm_openai.testing import Reply, ToolCall

            self.fake.enqueue(Reply([ToolCall(n, a, call_id=i) for i, n, a in calls], input_tokens=usage[0],
                                    output_tokens=usage[1]))

    def text(self, text: str, usage: tuple[int, int] = (60, 10)) -> None:
        if self.name == "anthropic":
            self.fake.reply_text(text, usage={"input_tokens": usage[0], "output_tokens": usage[1]})
        else:
            from asm_openai.testing import Reply, Text

            self.fake.enqueue(Reply([Text(text)], input_tokens=usage[0], output_tokens=usage[1]))

    @property
    def bodies(self) -> list[Any]:
        return [r.body for r in self.fake.requests]

    def tool_results(self, body: Any) -> list[tuple[str, str, bool]]:
        """(call id, content, is_error) of the tool results a request sent, in order."""
        if self.name == "anthropic":
            last = body["messages"][-1]["content"]
            return [(b["tool_use_id"], str(b["content"]), bool(b.get("is_error"))) for b in last
                    if b.get("type") == "tool_result"]
        return [(m["tool_call_id"], str(m["content"]), str(m["content"]).startswith("error:"))
                for m in body["messages"] if m.get("role") == "tool"]

    def max_tokens(self, body: Any) -> int:
        return int(body.get("max_tokens") or body.get("max_completion_tokens"))


@pytest.fixture(params=["anthropic", "openai"])
def vendor(request: pytest.FixtureRequest) -> Vendor:
    fake = request.getfixturevalue("claude" if request.param == "anthropic" else "gpt")
    return Vendor(request.param, fake)


def kernel(vendor: Vendor, *, tools: list[Any] = (), store: Any = None, **config: Any) -> Kernel:  # type: ignore[assignment]
    cfg = {"providers": [vendor.provider()], "plugins": {"autoload": True}, **config}
    return Kernel(cfg, store=store or MemoryStore(), tools=list(tools))


class Tool:
    def __init__(self, name: str, *, hang: bool = False, timeout: float | None = None) -> None:
        self.spec = ToolSpec(name, f"the {name} tool", {"type": "object", "properties": {"n": {"type": "integer"}}})
        self.hang = hang
        self.timeout = timeout
        self.calls = 0

    async def __call__(self, input: dict[str, Any]) -> str:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        return f"{self.spec.name}: {input.get('n')}"


async def test_parallel_tools_with_one_timing_out(vendor: Vendor) -> None:
    quick, stuck = Tool("quick"), Tool("stuck", hang=True, timeout=0.2)
    vendor.tool_calls([("c1", "quick", {"n": 1}), ("c2", "stuck", {"n": 2}), ("c3", "quick", {"n": 3})])
    vendor.text("two of three worked")
    async with kernel(vendor, tools=[quick, stuck]) as k:
        result = await k.run_once("use all three tools")
        events = await k.sessions.events(result.session_id)
    assert result.status is RunStatus.COMPLETED and result.output == "two of three worked"
    assert quick.calls == 2 and stuck.calls == 1
    sent = vendor.tool_results(vendor.bodies[1])
    assert [(i, e) for i, _, e in sent] == [("c1", False), ("c2", True), ("c3", False)]  # call order
    assert sent[0][1] == "quick: 1" and "did not finish within 0.2 s" in sent[1][1]
    errors = [e for e in events if e.type == "error_occurred"]
    assert len(errors) == 1 and errors[0].payload["error"]["code"] == "tool.timeout"


async def test_a_budget_stops_the_tool_loop_exactly_before_the_call_that_would_pass_it(vendor: Vendor) -> None:
    for i in range(10):
        vendor.tool_calls([(f"c{i}", "quick", {"n": i})], usage=(60, 150))
    vendor.text("never reached")
    limit = 0.01 if vendor.name == "anthropic" else 0.004  # a few calls' worth at each model's price
    policy = {"use": "budget", "max_cost_usd": limit}
    async with kernel(vendor, tools=[Tool("quick")], policies=[policy], run={"max_tokens": 200, "max_turns": 20}) as k:
        session = await k.sessions.create()
        with pytest.raises(BudgetExceededError) as info:
            await k.run(session.id, "loop until stopped")
        (run,) = await k.sessions.runs(session.id)
        decided = [e.payload for e in await k.sessions.events(session.id, types=["policy_decided"])
                   if e.payload["step"] == "model_call"]
    allowed = [d for d in decided if d["action"] == "allow"]
    # Every call the budget allowed reached the server, and no other: the refused one was never sent.
    assert len(vendor.fake.requests) == len(allowed) >= 2 and decided[-1]["action"] == "refuse"
    # It was refused because its worst case did not fit; every call made had fitted at its worst case.
    refused = info.value.details
    assert refused["spend"] + refused["requested"] > limit and refused["spend"] <= limit
    assert all(a["spend"] + a["requested"] <= limit for a in allowed)
    assert run.cost is not None and run.cost <= limit
    # The output reserved is what each request asked the provider for.
    assert {vendor.max_tokens(b) for b in vendor.bodies} == {200}


async def test_concurrent_runs_of_one_session_sharing_a_budget_never_overshoot(vendor: Vendor) -> None:
    for _ in range(20):
        vendor.text("an answer", usage=(100, 50))
    policy = {"use": "budget", "scope": "session", "max_model_calls": 5, "max_total_tokens": 100_000}
    async with kernel(vendor, policies=[policy], run={"max_tokens": 50}) as k:
        session = await k.sessions.create()
        results = await asyncio.gather(*(k.sessions.run(session.id, f"q{i}", raise_on_error=False)
                                         for i in range(8)))
        ledger = await k.sessions.events(f"asm.budget:budget:session:{session.id}:all")
    done = [r for r in results if r.status is RunStatus.COMPLETED]
    refused = [r for r in results if r.status is RunStatus.FAILED]
    assert len(done) == 5 and len(refused) == 3 and len(vendor.fake.requests) == 5
    assert all(r.error["code"] == "policy.budget_exceeded" for r in refused)
    settled = [e.payload["spend"] for e in ledger if e.type == "budget_settled"]
    assert sum(s["model_calls"] for s in settled) == 5
    assert sum(s["input_tokens"] + s["output_tokens"] for s in settled) == 5 * 150  # what the server reported


def test_an_approval_across_a_process_restart(vendor: Vendor, tmp_path: Path) -> None:
    vendor.tool_calls([("c1", "lookup", {"q": "old"}), ("c2", "delete_file", {"path": "/tmp/x"})])
    vendor.text("Cleaned up.")
    provider = json.dumps(vendor.provider())
    config = tmp_path / "asm.toml"
    from asm_kernel.cli.output import toml_value

    config.write_text("\n".join([
        '[store]\nuse = "saved"\npath = "store.pickle"',
        '[plugins]\nmodules = ["asm_savedstore", "asm_governance_tools"]',
        "[[providers]]\n" + "\n".join(f"{k} = {toml_value(v)}" for k, v in json.loads(provider).items()),
        '[[tools]]\nuse = "lookup"\n[[tools]]\nuse = "delete_file"',
        '[[policies]]\nuse = "approval"\ntools = ["delete_*"]',
    ]) + "\n")
    log = tmp_path / "tools.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]),
           "ASM_TEST_TOOL_LOG": str(log)}

    def asm(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "asm_kernel.cli", "--config", str(config), *argv],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)

    first = asm("run", "clean up old files", "--json")
    assert first.returncode == 1, first.stderr
    run_id = json.loads(first.stdout)["run_id"]
    assert json.loads(first.stdout)["status"] == "awaiting_approval" and not log.exists()
    assert asm("approve", run_id, "c2", "--by", "alice").stdout.strip() == "pending"
    script = (
        "import asyncio, json\nfrom asm_kernel import Kernel\n"
        "async def main():\n"
        f"    async with Kernel.open({str(config)!r}) as k:\n"
        "        await k.runtime.start()\n"
        f"        r = await k.runtime.await_run({run_id!r})\n"
        "        print(json.dumps({'status': r.status.value, 'output': r.output}))\n"
        "asyncio.run(main())\n"
    )
    restarted = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                               cwd=tmp_path, timeout=120)
    assert restarted.returncode == 0, restarted.stderr
    assert json.loads(restarted.stdout) == {"status": "completed", "output": "Cleaned up."}
    assert sorted(log.read_text().split()) == ["delete_file", "lookup"]  # they ran at once
    assert len(vendor.fake.requests) == 2  # one model call before the wait, one after: none repeated
    assert [i for i, _, _ in vendor.tool_results(vendor.bodies[1])] == ["c1", "c2"]


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_mcp_tools_over_stdio_and_http(vendor: Vendor, transport: str, request: pytest.FixtureRequest) -> None:
    if transport == "stdio":
        table = {"use": "mcp", "name": "calc", "command": sys.executable, "args": [str(MCP_SERVER), "stdio"]}
    else:
        table = {"use": "mcp", "name": "calc", "url": _mcp_http(request)}
    vendor.tool_calls([("c1", "add", {"a": 20, "b": 22})])
    vendor.text("42")
    async with Kernel({"providers": [vendor.provider()], "tools": [table]}, store=MemoryStore()) as k:
        result = await k.run_once("add 20 and 22")
        events = await k.sessions.events(result.session_id, types=["tool_call_completed"])
    assert result.output == "42" and events[0].payload["source"] == "mcp:calc"
    assert vendor.tool_results(vendor.bodies[1]) == [("c1", "42", False)]
    offered = json.dumps(vendor.bodies[0]["tools"])
    assert "add" in offered and "Add two integers." in offered


def _mcp_http(request: pytest.FixtureRequest) -> str:
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(MCP_SERVER), "http", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def stop() -> None:
        proc.kill()
        proc.wait(timeout=10)

    request.addfinalizer(stop)
    deadline = time.monotonic() + 30
    while True:  # a readiness wait, not a timing assertion
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return f"http://127.0.0.1:{port}/mcp"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the MCP test server did not start") from None
            time.sleep(0.05)
