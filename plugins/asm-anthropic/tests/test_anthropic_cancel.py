"""Closing or cancelling a stream closes the HTTP response promptly (the server sees it)."""

from __future__ import annotations

import asyncio

import pytest
from anthropic_helpers import make_request
from asm_anthropic.testing import FakeAnthropic

from asm_kernel import Kernel, RunStatus
from asm_kernel.model import TextDelta

SLOW = "word " * 200


async def _first_delta(stream) -> TextDelta:
    async for item in stream:
        if isinstance(item, TextDelta):
            return item
    raise AssertionError("no text")


async def test_aclose_closes_the_http_stream(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_text(SLOW, chunk=5, delay=0.2)
    stream = make_provider().stream(make_request())
    await _first_delta(stream)
    await stream.aclose()
    # Read to the end the stream would take ~40 s; the server sees the client leave instead.
    assert await asyncio.to_thread(fake_anthropic.last.finished.wait, 10.0)
    assert fake_anthropic.last.outcome == "client_closed"


async def test_cancelling_the_consumer_task_closes_the_stream(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_text(SLOW, chunk=5, delay=0.2)
    provider = make_provider()
    got_text = asyncio.Event()

    async def consume() -> None:
        async for item in provider.stream(make_request()):
            if isinstance(item, TextDelta):
                got_text.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_text.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(fake_anthropic.last.finished.wait, 3.0)
    assert fake_anthropic.last.outcome == "client_closed"


async def test_cancelled_run_ends_cancelled_and_closes_the_stream(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.reply_text(SLOW, chunk=5, delay=0.2)
    config = {"store": {"use": "memory"},
              "providers": [{"name": "claude", "use": "anthropic", "base_url": fake_anthropic.url, "api_key": "k"}]}
    async with Kernel(config) as kernel:
        session = await kernel.sessions.create()
        task = asyncio.create_task(kernel.run(session.id, "talk slowly"))
        while not [e for e in await kernel.sessions.events(session.id) if e.type == "message_streamed"]:
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        events = await kernel.sessions.events(session.id)
        runs = await kernel.sessions.runs(session.id)
    assert events[-1].type == "run_cancelled"
    assert runs[0].status is RunStatus.CANCELLED
    assert "message_received" not in [e.type for e in events]
    assert await asyncio.to_thread(fake_anthropic.last.finished.wait, 3.0)
    assert fake_anthropic.last.outcome == "client_closed"
