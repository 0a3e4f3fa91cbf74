"""pytest fixtures for testing code that talks to Anthropic through asm (opt-in).

Enable in a ``conftest.py``::

    pytest_plugins = ["asm_anthropic.testing.pytest_plugin"]

then take ``fake_anthropic`` (a started :class:`~asm_anthropic.testing.FakeAnthropic`) in a test,
or ``anthropic_kernel_config`` for a kernel config dict pointing a provider named ``claude`` at it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from . import FakeAnthropic

__all__ = ["fake_anthropic", "anthropic_kernel_config"]


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A fake Anthropic server on 127.0.0.1 (random port), stopped after the test."""
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def anthropic_kernel_config(fake_anthropic: FakeAnthropic) -> dict[str, Any]:
    """``asm_kernel.Kernel(config)`` data: a memory store and provider ``claude`` on the fake."""
    return {
        "store": {"use": "memory"},
        "providers": [
            {"name": "claude", "use": "anthropic", "base_url": fake_anthropic.url, "api_key": "test-key"}
        ],
    }
