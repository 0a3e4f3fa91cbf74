"""Plain typed Python functions become tools: schema from the signature, arguments validated."""

from __future__ import annotations

import asyncio
import enum
import threading
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import attrs
import pytest

from asm_kernel import Kernel, RunStatus, ToolResultBlock, tool
from asm_kernel.builtin.scripted import ScriptedProvider
from asm_kernel.errors import ConfigError, ToolArgumentsError, ToolDefinitionError
from asm_kernel.tools import FunctionTool, register_tool, schema_for


class Unit(enum.Enum):
    C = "celsius"
    F = "fahrenheit"


@attrs.frozen
class Line:
    """One line of an order."""

    sku: str
    qty: int = 1


def place_order(
    lines: list[Line],
    unit: Unit,
    speed: Literal["fast", "slow"] = "fast",
    note: str | None = None,
    weights: dict[str, float] | None = None,
    gift: bool = False,
) -> dict[str, Any]:
    """Place an order.

    Args:
        lines: what to buy, one line per product
        unit: the temperature unit the labels use
    """
    return {"lines": [attrs.asdict(line) for line in lines], "unit": unit.value, "speed": speed, "gift": gift}


def test_the_schema_is_derived_from_the_signature_docstring_and_defaults() -> None:
    made = FunctionTool(place_order)
    assert made.name == "place_order" and made.spec.description == "Place an order."
    assert made.source == "function:test_function_tools.place_order"
    schema = made.spec.input_schema
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["lines", "unit"]
    props = schema["properties"]
    assert props["lines"] == {
        "type": "array",
        "description": "what to buy, one line per product",
        "items": {
            "type": "object",
            "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "default": 1}},
            "required": ["sku"],
            "additionalProperties": False,
            "description": "One line of an order.",
        },
    }
    assert props["unit"] == {"type": "string", "enum": ["celsius", "fahrenheit"],
                             "description": "the temperature unit the labels use"}
    assert props["speed"] == {"type": "string", "enum": ["fast", "slow"], "default": "fast"}
    assert props["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert props["weights"]["anyOf"][0] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["gift"] == {"type": "boolean", "default": False}


def test_annotated_descriptions_sets_tuples_and_any() -> None:
    def f(
        city: Annotated[str, "the city, e.g. Oslo"],
        point: tuple[float, float],
        tags: frozenset[str] = frozenset(),
        extra: Any = None,
        *,
        limit: int = 10,
    ) -> str:
        return ""

    props = FunctionTool(f).spec.input_schema["properties"]
    assert props["city"] == {"type": "string", "description": "the city, e.g. Oslo"}
    assert props["point"] == {"type": "array", "prefixItems": [{"type": "number"}] * 2, "minItems": 2, "maxItems": 2}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    assert props["extra"] == {"default": None} and props["limit"] == {"type": "integer", "default": 10}


async def test_arguments_are_structured_into_the_annotated_types() -> None:
    made = FunctionTool(place_order)
    out = await made({"lines": [{"sku": "a"}, {"sku": "b", "qty": 3}], "unit": "celsius", "gift": True})
    assert out == (
        '{"lines":[{"sku":"a","qty":1},{"sku":"b","qty":3}],"unit":"celsius","speed":"fast","gift":true}'
    )


async def test_every_violation_is_reported_with_its_path_and_the_function_is_not_called() -> None:
    called = []

    def f(lines: list[Line], unit: Unit, count: int, ratio: float = 1.0) -> str:
        called.append(1)
        return "ok"

    with pytest.raises(ToolArgumentsError) as info:
        await FunctionTool(f)(
            {"lines": [{"sku": 5}, {"sku": "x", "colour": "red"}, "nope"], "unit": "kelvin", "ratio": "2", "zz": 1}
        )
    problems = info.value.details["problems"].split("; ")
    assert problems == [
        "zz: unknown argument (this tool takes: lines, unit, count, ratio)",
        "lines[0].sku: expected a string, got the number 5",
        "lines[1].colour: unknown field (known: qty, sku)",
        'lines[2]: expected an object, got the string "nope"',
        'unit: expected one of "celsius", "fahrenheit", got the string "kelvin"',
        "count: missing required argument",
        'ratio: expected a number, got the string "2"',
    ]
    assert not called
    # No coercion: JSON true is not 1, 1 is not "1", an integer is a fine number.
    def g(n: int, s: str, x: float) -> str:
        return f"{n}{s}{x}"

    with pytest.raises(ToolArgumentsError, match="n: expected an integer, got true"):
        await FunctionTool(g)({"n": True, "s": "a", "x": 1})
    assert await FunctionTool(g)({"n": 1, "s": "a", "x": 2}) == "1a2.0"


def test_definitions_json_cannot_express_are_refused_when_the_tool_is_made() -> None:
    import datetime

    def when(at: datetime.datetime) -> str:
        return ""

    with pytest.raises(ToolDefinitionError, match=r"when.*at.*datetime"):
        FunctionTool(when)

    def star(*names: str) -> str:
        return ""

    with pytest.raises(ToolDefinitionError, match=r"\*names"):
        tool(star)

    def keys(table: dict[int, str]) -> str:
        return ""

    with pytest.raises(ToolDefinitionError, match="keys must be str"):
        FunctionTool(keys)
    def slow() -> str:
        return ""

    with pytest.raises(ToolDefinitionError, match="timeout"):
        tool(timeout=-1)(slow)


async def test_the_decorator_keeps_the_function_and_sync_functions_run_in_a_thread() -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    @tool(name="lookup", timeout=5)
    def look_up(order: int) -> str:
        """Find an order."""
        seen.append(threading.get_ident())
        return f"order {order}"

    assert look_up(7) == "order 7"  # still a plain function
    made = FunctionTool(look_up)
    assert (made.name, made.timeout, made.spec.description) == ("lookup", 5, "Find an order.")
    assert await made({"order": 7}) == "order 7"
    assert seen[-1] != loop_thread

    class Async:
        async def __call__(self, x: int) -> list[int]:
            await asyncio.sleep(0)
            return [x, x]

    assert await FunctionTool(Async(), name="twice")({"x": 2}) == "[2,2]"


async def test_a_kernel_offers_plain_functions_and_feeds_violations_back_to_the_model() -> None:
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    provider = ScriptedProvider(
        [
            [{"tool_use": {"id": "t1", "name": "add", "input": {"a": "2", "b": 3}}}],
            [{"tool_use": {"id": "t2", "name": "add", "input": {"a": 2, "b": 3}}}],
            [{"text": "5"}],
        ]
    )
    async with Kernel({"store": {"use": "memory"}}, providers={"s": provider}, tools=[add]) as kernel:
        result = await kernel.run_once("add them")
        events = await kernel.sessions.events(result.session_id, types=["tool_call_completed", "error_occurred"])
    assert result.status is RunStatus.COMPLETED and result.output == "5"
    assert provider.requests[0].tools[0].input_schema["required"] == ["a", "b"]
    first, second = (e.payload for e in events)  # invalid arguments are no failure: no error_occurred
    assert first["is_error"] and 'a: expected an integer, got the string "2"' in first["output"]
    assert first["source"].startswith("function:test_function_tools.") and first["source"].endswith(".add")
    assert second == {**second, "output": "5", "is_error": False}
    assert provider.requests[1].messages[-1].content[0] == ToolResultBlock("t1", first["output"], True)


async def test_plugins_register_function_tools_for_the_config_to_enable() -> None:
    from asm_kernel import hookimpl

    def weather(city: str) -> str:
        """Weather for a city."""
        return f"sunny in {city}"

    class Plugin:
        @hookimpl
        def asm_register_tools(self, register: Any) -> None:
            register_tool(register, weather, timeout=3)

    config = {"store": {"use": "memory"}, "tools": [{"use": "weather", "timeout": 7}]}
    async with Kernel(config, plugins=[Plugin()]) as kernel:
        made = kernel.tools["weather"]
        assert made.timeout == 7 and await made({"city": "Oslo"}) == "sunny in Oslo"
    with pytest.raises(ConfigError, match=r"tools\[0\]\.tmeout"):
        async with Kernel({"store": {"use": "memory"}, "tools": [{"use": "weather", "tmeout": 1}]}, plugins=[Plugin()]):
            pass


async def test_two_tools_with_one_name_are_refused_naming_both() -> None:
    def a() -> str:
        return ""

    with pytest.raises(ConfigError, match=r"two tools are named 'a' \(the other is at tools\[0\]\)"):
        async with Kernel({"store": {"use": "memory"}}, tools=[a, FunctionTool(a)]):
            pass


@attrs.frozen
class Node:
    children: Sequence[Node] = ()


def test_schema_for_recursive_attrs_is_refused() -> None:
    with pytest.raises(ToolDefinitionError, match="refers to itself"):
        schema_for(Node)
