"""asm: an agent session manager. A minimal kernel with plugins.

The public API is re-exported here; everything else is internal unless documented.
"""

from __future__ import annotations

import pluggy

hookimpl = pluggy.HookimplMarker("asm")
"""Marker for hook implementations: ``@asm_kernel.hookimpl def asm_run_started(run): ...``"""

from . import errors  # noqa: E402
from .config import Config, Secret, load_config  # noqa: E402
from .errors import AsmError  # noqa: E402
from .events import EventType  # noqa: E402
from .interfaces import ComponentContext, Policy, Provider, Router, Store, TelemetrySink, Tool, ToolSource  # noqa: E402
from .kernel import Kernel  # noqa: E402
from .model import (  # noqa: E402
    Capability,
    Event,
    Fence,
    ImageBlock,
    Message,
    MessageDone,
    ModelInfo,
    Price,
    ProviderRequest,
    RedactedThinkingBlock,
    Run,
    RunResult,
    RunStatus,
    Session,
    SessionStatus,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    Usage,
    UsageUpdate,
)
from .options import RunOptions  # noqa: E402
from .pipeline import Pipeline, RunState  # noqa: E402
from .registry import Register  # noqa: E402
from .sync import SyncKernel  # noqa: E402
from .tools import FunctionTool, register_tool, tool  # noqa: E402
from .writes import Committed, RunWrite, StoreCapabilities, WriteUnit  # noqa: E402

__all__ = [
    "hookimpl",
    "errors",
    "AsmError",
    "Config",
    "Secret",
    "load_config",
    "EventType",
    "Kernel",
    "SyncKernel",
    "Store",
    "Provider",
    "Router",
    "Policy",
    "TelemetrySink",
    "Tool",
    "ToolSource",
    "tool",
    "register_tool",
    "FunctionTool",
    "ComponentContext",
    "Register",
    "WriteUnit",
    "RunWrite",
    "Committed",
    "StoreCapabilities",
    "Fence",
    "RunOptions",
    "Pipeline",
    "RunState",
    "Capability",
    "Event",
    "ImageBlock",
    "Message",
    "MessageDone",
    "ModelInfo",
    "Price",
    "ProviderRequest",
    "RedactedThinkingBlock",
    "Run",
    "RunResult",
    "RunStatus",
    "Session",
    "SessionStatus",
    "TextBlock",
    "TextDelta",
    "ThinkingBlock",
    "ThinkingDelta",
    "ToolResultBlock",
    "ToolSpec",
    "ToolUseBlock",
    "Usage",
    "UsageUpdate",
    "__version__",
]

__version__ = "0.1.0"
