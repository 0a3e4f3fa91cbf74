"""The hooks asm calls: the entry point of the plugin (``[project.entry-points.asm]``).

Keep this module cheap to import. asm imports every installed plugin's entry point whenever it
starts, even for ``asm --help``; so it holds only hook implementations and the settings class,
and the provider (with whatever SDK a real one needs) is imported inside the factory.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import attrs

import asm_kernel

if TYPE_CHECKING:
    from asm_kernel import Run, RunResult

    from .shout import ShoutProvider


@attrs.frozen
class ShoutSettings:
    """The keys of a ``[[providers]]`` table with ``use = "shout"``.

    The kernel validates the table against this class before calling the factory: an unknown
    key, a wrong type or a failing validator is a ``ConfigError`` naming the key's path
    (``providers[0].exclamations``).
    """

    model: str = "shout-1"
    exclamations: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    chunk_size: int = attrs.field(default=4, validator=attrs.validators.ge(1))


def build_shout(settings: ShoutSettings, context: Any) -> ShoutProvider:
    """The factory: asm calls it with the validated settings and a build context."""
    from .shout import ShoutProvider  # imported only when a config uses the provider

    return ShoutProvider(settings, name=context.name)


@asm_kernel.hookimpl
def asm_register_providers(register: Any) -> None:
    register("shout", build_shout, settings=ShoutSettings, description="answers your last message, upper-cased")


#: Finished runs by status, counted by the lifecycle hook below.
RUNS: Counter[str] = Counter()


@asm_kernel.hookimpl
def asm_run_finished(run: Run, result: RunResult) -> None:
    """Called after every run reached its final status (its terminal event is already stored)."""
    RUNS[result.status.value] += 1
