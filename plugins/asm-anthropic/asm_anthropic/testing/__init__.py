"""A fake Anthropic Messages API for tests: a real HTTP server on 127.0.0.1.

It speaks the wire format the official SDK expects — ``POST /v1/messages``, server-sent events
(``event: <type>`` / ``data: <json>``) from ``message_start`` to ``message_stop`` with ``ping``,
JSON error bodies ``{"type": "error", "error": {"type": ..., "message": ...}}`` and headers such
as ``request-id`` and ``retry-after`` — so tests drive the real SDK over real HTTP. Tests script
what it answers and read back what it received::

    from asm_anthropic.testing import FakeAnthropic

    with FakeAnthropic() as fake:
        fake.reply_text("Hello!", usage={"input_tokens": 12, "output_tokens": 3})
        fake.reply_error(429, "rate_limit_error", "slow down", headers={"retry-after": "7"})
        ...  # point the provider at fake.url
        assert fake.requests[0].body["messages"][0]["role"] == "user"

Replies are consumed in order, one per request; with the queue empty the server answers with
``default`` if set, else a 500 ``api_error`` naming the problem. With pytest, use the
``fake_anthropic`` fixture from :mod:`asm_anthropic.testing.pytest_plugin`
(``pytest_plugins = ["asm_anthropic.testing.pytest_plugin"]``).

The server is built on :class:`asm_kernel.testing.fake_http.FakeHTTPServer`: transport-level
responses (``JsonResponse``, ``SSEResponse``, ``RawResponse``, ``Stall``) and callables that compute
the answer from the request (to reflect what it received) can be queued too. pytest is needed
only for the fixture module.
"""

from __future__ import annotations

from typing import Any

from asm_kernel.testing.fake_http import RecordedRequest

from ._replies import (
    ErrorReply,
    Reply,
    redacted_thinking_block,
    sse,
    text_block,
    thinking_block,
    tool_use_block,
)
from ._server import FakeAnthropic

__all__ = [
    "FakeAnthropic",
    "Reply",
    "ErrorReply",
    "RecordedRequest",
    "text_block",
    "tool_use_block",
    "thinking_block",
    "redacted_thinking_block",
    "sse",
    "fake_anthropic",
]


def __getattr__(name: str) -> Any:
    # ``from asm_anthropic.testing import fake_anthropic`` (the pytest fixture) without making
    # pytest a requirement of the server itself.
    if name == "fake_anthropic":
        from .pytest_plugin import fake_anthropic

        return fake_anthropic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
