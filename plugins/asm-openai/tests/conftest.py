from __future__ import annotations

import pytest

from asm_openai.testing import fake_openai  # noqa: F401  (the fixture users import, too)


@pytest.fixture(params=["chat", "responses"])
def api(request: pytest.FixtureRequest) -> str:
    return request.param
