"""Tools from plain typed Python functions.

::

    @asm_kernel.tool
    def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
        '''Current weather for a city.'''
        ...

    Kernel(tools=[get_weather])          # or any plain function, decorated or not

The tool's name is the function's name, its description the docstring's first part, its input
schema derived from the signature (:mod:`asm_kernel.tools.schema`). The arguments the model
sends are structured into the annotated types before the call (:mod:`.arguments`); a mismatch
is the model's error result, and the function is not called. Synchronous functions run in a
worker thread so they never block the event loop. What the function returns is given to the
model as text: a string as it is, ``None`` as an empty string, anything else as JSON.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, TypeVar, overload

from attrs import frozen

from ..errors import ToolDefinitionError
from ..model import ToolSpec
from .arguments import structure_arguments
from .schema import _summary, function_schema, parameters_of

__all__ = [
    "FunctionTool",
    "FunctionToolSettings",
    "tool",
    "register_tool",
    "function_tool",
    "render",
    "ToolOptions",
    "TOOL_ATTRIBUTE",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The attribute ``@tool`` sets on a function: its :class:`ToolOptions`.
TOOL_ATTRIBUTE = "__asm_tool__"


@frozen
class ToolOptions:
    """What ``@tool(...)`` says about a function: overrides of what is derived from it."""

    name: str | None = None
    description: str | None = None
    #: Seconds one call may take (None: ``tool_calls.timeout``).
    timeout: float | None = None


def _check_timeout(timeout: float | None, where: str) -> None:
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0
    ):
        raise ToolDefinitionError(f"{where}: timeout must be a positive number of seconds, got {timeout!r}")


@overload
def tool(func: F, /) -> F: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None, timeout: float | None = None
) -> Callable[[F], F]: ...


def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
) -> Any:
    """Mark a function as a tool, optionally naming it or giving it a timeout; returns it unchanged.

    ``@tool`` and ``@tool(name="weather", timeout=10)`` both work. The function keeps working as
    a function; ``Kernel(tools=[func])`` offers it to the model. Its definition is checked here,
    so a parameter JSON cannot express fails at import, not at the first call.
    """
    options = ToolOptions(name=name, description=description, timeout=timeout)

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        setattr(f, TOOL_ATTRIBUTE, options)
        FunctionTool(f)  # checks the definition now
        return f

    return mark(func) if func is not None else mark


class FunctionTool:
    """A :class:`~asm_kernel.interfaces.Tool` calling a typed Python function (see the module docstring)."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
    ) -> None:
        if not callable(func):
            raise ToolDefinitionError(f"a function tool needs a callable, got {type(func).__name__}")
        marked: ToolOptions = getattr(func, TOOL_ATTRIBUTE, None) or ToolOptions()
        self.func = func
        self.name: str = str(name or marked.name or getattr(func, "__name__", ""))
        where = f"tool {self.name!r}"
        if not self.name or not self.name.replace("-", "_").isidentifier():
            raise ToolDefinitionError(
                f"{where}: a tool name must be letters, digits, '_' or '-'",
                hint="pass name= to @tool or FunctionTool",
            )
        self.timeout = timeout if timeout is not None else marked.timeout
        _check_timeout(self.timeout, where)
        self.params = parameters_of(func, where)
        # An object whose __call__ is ``async def`` is awaited like a coroutine function.
        self._async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
            type(func).__call__  # type: ignore[operator]
        )
        text = description if description is not None else marked.description
        self.spec = ToolSpec(
            self.name,
            text if text is not None else _summary(getattr(func, "__doc__", None)),
            function_schema(self.params, where),
        )
        module = getattr(func, "__module__", None) or "?"
        qualname = getattr(func, "__qualname__", None) or type(func).__name__
        #: Who serves the tool, as events record it.
        self.source = f"function:{module}.{qualname}"

    def __repr__(self) -> str:
        return f"FunctionTool({self.name!r}, source={self.source!r})"

    def arguments(self, input: Any) -> tuple[list[Any], dict[str, Any]]:
        """The call's arguments structured into the annotated types (raises ToolArgumentsError)."""
        return structure_arguments(self.name, self.params, input)

    async def __call__(self, input: dict[str, Any]) -> str:
        args, kwargs = self.arguments(input)
        if self._async:
            result = await self.func(*args, **kwargs)
        else:
            # The thread sees the caller's context variables; a timeout cannot stop it, only
            # stop waiting for it (its result is then dropped).
            call = functools.partial(contextvars.copy_context().run, self.func, *args, **kwargs)
            result = await asyncio.get_running_loop().run_in_executor(None, call)
        return render(result)


def render(result: Any) -> str:
    """What a function returned, as the text the model gets."""
    if result is None:
        return ""
    if isinstance(result, str):
        return result
    from ..serialization import dumps, to_dict

    try:
        return dumps(to_dict(result))
    except Exception:  # not JSON: its text is the best the model can get
        return str(result)


def function_tool(value: Any, where: str = "tools") -> Any:
    """``value`` as a Tool: a tool or tool source as it is, a plain function as a FunctionTool."""
    if hasattr(value, "spec") or hasattr(value, "list_tools"):
        return value
    if callable(value):
        return FunctionTool(value)
    raise ToolDefinitionError(
        f"{where}: {type(value).__name__} is not a tool, a tool source or a function",
        path=where,
        hint="pass a function, an object with `spec` and `async __call__(input)`, or one with `async list_tools()`",
    )


@frozen
class FunctionToolSettings:
    """``[[tools]] use = "<a registered function tool>"``: its one setting."""

    #: Seconds one call may take (overrides the function's own; None: ``tool_calls.timeout``).
    timeout: float | None = None


def register_tool(register: Any, func: Callable[..., Any], **options: Any) -> None:
    """Register ``func`` as a tool component from a plugin's ``asm_register_tools(register)``.

    A config then enables it with ``[[tools]] use = "<tool name>"`` (and may set ``timeout``).
    ``options`` are those of :func:`tool` (``name``, ``description``, ``timeout``). There is no
    process-wide registry on purpose: two kernels in one process only share the tools their
    configs ask for.
    """
    made = FunctionTool(func, **options)

    def build(settings: FunctionToolSettings, context: Any) -> FunctionTool:
        timeout = settings.timeout if settings.timeout is not None else options.get("timeout")
        _check_timeout(timeout, getattr(context, "path", "tools"))
        return FunctionTool(func, **{**options, "timeout": timeout})

    register(made.name, build, settings=FunctionToolSettings, description=made.spec.description)
