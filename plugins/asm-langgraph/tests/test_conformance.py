"""The official langgraph-checkpoint-conformance suite, unchanged, on every available store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from asm_kernel import Kernel
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import ProgressCallbacks

from asm_langgraph import AsmCheckpointSaver


async def test_conformance(fresh_store: Callable[[], dict[str, Any]]) -> None:
    @checkpointer_test(name="AsmCheckpointSaver")
    async def asm_checkpointer() -> AsyncIterator[AsmCheckpointSaver]:
        async with Kernel({"store": fresh_store()}) as kernel:  # a fresh store per capability suite
            yield AsmCheckpointSaver(kernel)

    report = await validate(asm_checkpointer, progress=ProgressCallbacks.verbose())
    report.print_report()
    assert report.passed_all_base(), report.to_dict()
    assert report.passed_all(), report.to_dict()  # the extended capabilities it implements, too
