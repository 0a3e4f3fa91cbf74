"""The builtin memory store passes the store conformance suite."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.testing import StoreConformance


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def make_store(self) -> Callable[[], MemoryStore]:
        return MemoryStore
