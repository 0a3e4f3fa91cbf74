"""``[[tools]] use = "mcp"`` against a real MCP server process, over stdio and streamable HTTP."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from asm_kernel import Kernel, RunStatus
from asm_kernel.builtin.scripted import ScriptedProvider
from asm_kernel.errors import ConfigError, ToolSourceError
from mcp_helpers import free_port, stdio_tool


def scripted(*calls: tuple[str, dict[str, Any]]) -> ScriptedProvider:
    turn = [{"tool_use": {"id": f"t{i}", "name": n, "input": a}} for i, (n, a) in enumerate(calls)]
    return ScriptedProvider([turn, [{"text": "done"}]])


def kernel(tools: list[dict[str, Any]], provider: ScriptedProvider | None = None) -> Kernel:
    return Kernel({"store": {"use": "memory"}, "tools": tools}, providers={"s": provider or scripted()})


@pytest.fixture(params=["stdio", "http"])
def server(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "stdio":
        return stdio_tool(prefix="calc_", env={"MCP_TEST_NAME": "stdio-server"})
    return {"use": "mcp", "name": "calc", "url": request.getfixturevalue("http_server"), "prefix": "calc_"}


async def test_the_servers_tools_are_listed_and_called(server: dict[str, Any]) -> None:
    provider = scripted(("calc_add", {"a": 2, "b": 3}), ("calc_whoami", {}))
    async with kernel([server], provider) as k:
        assert sorted(k.tools) == ["calc_add", "calc_fail", "calc_slow", "calc_whoami"]
        spec = k.tools["calc_add"].spec
        assert spec.description == "Add two integers."
        assert spec.input_schema["properties"]["a"]["type"] == "integer" and spec.input_schema["required"] == ["a", "b"]
        result = await k.run_once("add and tell me who you are")
        events = await k.sessions.events(result.session_id, types=["tool_call_started", "tool_call_completed"])
    assert result.status is RunStatus.COMPLETED
    done = [e.payload for e in events if e.type == "tool_call_completed"]
    assert done[0]["output"] == "5" and not done[0]["is_error"]
    assert done[1]["output"] == ("stdio-server" if "command" in server else "nobody")
    assert {e.payload["source"] for e in events} == {"mcp:calc"}
    assert provider.requests[0].tools[0].name.startswith("calc_")
    assert not k.tools  # the kernel closed the source


async def test_a_failing_tool_and_a_slow_one_are_error_results(server: dict[str, Any]) -> None:
    provider = scripted(("calc_fail", {"message": "the disk is full"}), ("calc_slow", {"seconds": 30}),
                        ("calc_add", {"a": 1, "b": 1}))
    async with kernel([{**server, "timeout": 0.5}], provider) as k:
        result = await k.run_once("go")
        events = await k.sessions.events(result.session_id, types=["error_occurred", "tool_call_completed"])
    done = [e.payload for e in events if e.type == "tool_call_completed"]
    assert [d["is_error"] for d in done] == [True, True, False] and done[2]["output"] == "2"
    assert "the disk is full" in done[0]["output"] and "did not finish within 0.5 s" in done[1]["output"]
    codes = [e.payload["error"]["code"] for e in events if e.type == "error_occurred"]
    assert codes == ["tool.execution_failed", "tool.timeout"]


async def test_include_exclude_and_two_servers_with_prefixes() -> None:
    tools = [stdio_tool("one", prefix="a_", include=["add", "slow"], exclude=["slow"]), stdio_tool("two", prefix="b_")]
    async with kernel(tools) as k:
        assert sorted(k.tools) == ["a_add", "b_add", "b_fail", "b_slow", "b_whoami"]
    with pytest.raises(ConfigError, match="two tools are named 'add'"):
        async with kernel([stdio_tool("one"), stdio_tool("two")]):
            pass


async def test_a_server_that_cannot_be_reached_is_a_typed_error_naming_it() -> None:
    with pytest.raises(ToolSourceError) as info:
        async with kernel([{"use": "mcp", "name": "ghost", "command": "/no/such/mcp-server"}]):
            pass
    assert info.value.details["source"] == "ghost" and "'ghost' (command '/no/such/mcp-server')" in str(info.value)
    assert info.value.path == "tools[0]"
    port = free_port()  # nothing listens there
    with pytest.raises(ToolSourceError, match=rf"'down' \(url http://127.0.0.1:{port}/mcp\) could not be reached"):
        async with kernel([{"use": "mcp", "name": "down", "url": f"http://127.0.0.1:{port}/mcp",
                            "connect_timeout": 10}]):
            pass
    # A program that is not an MCP server at all.
    with pytest.raises(ToolSourceError, match="'notmcp'"):
        async with kernel([{"use": "mcp", "name": "notmcp", "command": sys.executable, "args": ["-c", "print(1)"],
                            "connect_timeout": 10}]):
            pass


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "exactly one of command"),
        ({"command": "x", "url": "http://h/mcp"}, "exactly one of command"),
        ({"url": "ftp://h"}, "must start with http"),
        ({"command": "x", "headers": {"a": "b"}}, "headers apply to url"),
        ({"command": "x", "timeout": 0}, "positive number"),
    ],
)
def test_bad_settings_are_config_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Kernel({"store": {"use": "memory"}, "tools": [{"use": "mcp", **settings}]})._build_all()
    assert str(info.value).startswith("tools[0]")


def test_the_entry_point_imports_no_sdk() -> None:
    import subprocess

    code = "import sys, asm_mcp.plugin; print(any(m == 'mcp' or m.startswith('mcp.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_config_check_reaches_the_server(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from asm_kernel.cli import main

    good = stdio_tool()
    lines = ['[store]\nuse = "memory"', "[[tools]]"] + [f"{k} = {json.dumps(v)}" for k, v in good.items()]
    (tmp_path / "good.toml").write_text("\n".join(lines) + "\n")
    assert main(["--config", str(tmp_path / "good.toml"), "config", "check"]) == 0
    (tmp_path / "bad.toml").write_text('[store]\nuse = "memory"\n[[tools]]\nuse = "mcp"\nname = "ghost"\n'
                                      'command = "/no/such/server"\n')
    capsys.readouterr()
    assert main(["--config", str(tmp_path / "bad.toml"), "config", "check"]) == 1
    assert "error[tool.source_unavailable]" in capsys.readouterr().err
