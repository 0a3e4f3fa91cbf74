"""The run pipeline: ordered async stages a run goes through, which plugins add to and wrap.

See :mod:`asm_kernel.pipeline.stages` for the stages and docs/concepts.md for the picture.
"""

from __future__ import annotations

from .driver import TERMINAL_EVENT, result_of
from .stages import RUN_STAGES, TURN_STAGES, Pipeline, Stage, Wrapper
from .state import RunState

__all__ = ["Pipeline", "RunState", "Stage", "Wrapper", "RUN_STAGES", "TURN_STAGES", "TERMINAL_EVENT", "result_of"]
