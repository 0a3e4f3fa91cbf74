"""Fixtures: kernels on each store this environment can offer (``asm_kernel.testing.store_fixtures``).

``fresh_store`` makes a new, empty ``[store]`` table each time it is called (a new DuckDB file, a
new Postgres schema), since the conformance suite wants a fresh checkpointer per capability.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The store fixtures, imported (not loaded with pytest_plugins, which only a rootdir conftest may use).
from asm_kernel.testing.store_fixtures import (  # noqa: F401
    asm_isolated_env,
    fresh_store,
    kernel,
    make_kernel,
    store_config,
)

# test_kill.py imports the counting graph from its child script, kill_child.py, beside it.
sys.path.insert(0, str(Path(__file__).parent))
