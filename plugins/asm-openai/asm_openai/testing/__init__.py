"""Test helpers for code that uses the ``openai`` provider: a wire-faithful fake OpenAI server.

>>> from asm_openai.testing import FakeOpenAI, Reply, Text, ToolCall   # doctest: +SKIP
>>> with FakeOpenAI() as fake:                                       # doctest: +SKIP
...     fake.reply_text("Hi!")
...     # point asm at fake.base_url with api = "chat" or "responses"

With pytest, import the fixture into your ``conftest.py``::

    from asm_openai.testing import fake_openai  # noqa: F401

``fake_openai`` yields a started :class:`FakeOpenAI` and stops it after the test. The server
is built on :class:`asm_kernel.testing.fake_http.FakeHTTPServer`: its transport-level responses
(``JsonResponse``, ``SSEResponse``, ``RawResponse``, ``Stall``) and callables that compute the
answer from the request can be enqueued too.
"""

from __future__ import annotations

from collections.abc import Iterator

from asm_kernel.testing.fake_http import RecordedRequest

from ._replies import HttpError, Reasoning, Refusal, Reply, Text, ToolCall
from ._server import FakeOpenAI

__all__ = [
    "FakeOpenAI",
    "Reply",
    "HttpError",
    "Text",
    "ToolCall",
    "Reasoning",
    "Refusal",
    "RecordedRequest",
    "fake_openai",
]

try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional for users of FakeOpenAI alone
    pass
else:

    @pytest.fixture
    def fake_openai() -> Iterator[FakeOpenAI]:
        """A started fake OpenAI server on 127.0.0.1 (random port), stopped after the test."""
        with FakeOpenAI() as server:
            yield server
