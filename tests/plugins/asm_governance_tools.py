"""Tools for the governance CLI tests: each call is appended to ``$ASM_TEST_TOOL_LOG``."""

from __future__ import annotations

import os
from typing import Any

from asm_kernel import hookimpl, register_tool


def _log(name: str) -> None:
    path = os.environ.get("ASM_TEST_TOOL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(name + "\n")


def lookup(q: str) -> str:
    """Look files up."""
    _log("lookup")
    return f"3 files match {q}"


def delete_file(path: str) -> str:
    """Delete a file."""
    _log("delete_file")
    return f"deleted {path}"


@hookimpl
def asm_register_tools(register: Any) -> None:
    register_tool(register, lookup)
    register_tool(register, delete_file)
