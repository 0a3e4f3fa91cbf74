"""Closing or cancelling a stream closes the HTTP connection promptly."""

from __future__ import annotations

import asyncio

from asm_kernel.model import TextDelta
from openai_helpers import make_provider, request

from asm_openai.testing import FakeOpenAI, Reply, Text

SLOW = Reply([Text("x" * 400, chunk_size=1)], delay=0.02)  # ~8 s if read to the end


async def test_aclose_after_the_first_delta_closes_the_connection(fake_openai: FakeOpenAI, api: str) -> None:
    fake_openai.enqueue(SLOW)
    provider = make_provider(fake_openai, api)
    stream = provider.stream(request())
    async for item in stream:
        if isinstance(item, TextDelta):
            break
    await stream.aclose()
    await provider.aclose()
    # Read to the end the stream would take ~8 s; the server sees the client leave instead.
    assert await asyncio.to_thread(fake_openai.wait_for, lambda f: f.disconnects >= 1, 10.0)
    assert fake_openai.completed_streams == 0


async def test_cancelling_the_consuming_task_closes_the_connection(fake_openai: FakeOpenAI, api: str) -> None:
    fake_openai.enqueue(SLOW)
    provider = make_provider(fake_openai, api)
    got_first = asyncio.Event()

    async def consume() -> None:
        async for item in provider.stream(request()):
            if isinstance(item, TextDelta):
                got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), 5)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert task.cancelled()
    assert await asyncio.to_thread(fake_openai.wait_for, lambda f: f.disconnects >= 1, 3.0)
    await provider.aclose()


async def test_provider_is_reusable_after_a_cancelled_stream(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(SLOW, Reply([Text("second")]))
    provider = make_provider(fake_openai, "chat")
    stream = provider.stream(request())
    await stream.__anext__()
    await stream.aclose()
    items = [i async for i in provider.stream(request())]
    assert items[-1].message.text == "second"
    await provider.aclose()
