"""The fake server speaks the wire format: the SDK's own parsers accept what it sends."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import anthropic
import pytest
from asm_anthropic.testing import FakeAnthropic, thinking_block, tool_use_block


def _post(fake: FakeAnthropic, body: bytes, headers: dict[str, str], path: str = "/v1/messages"):
    req = urllib.request.Request(fake.url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


GOOD = {"x-api-key": "k", "anthropic-version": "2023-06-01", "content-type": "application/json"}


def test_sdk_stream_helper_accumulates_the_fake_stream(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.reply([thinking_block("hmm", "sig"), tool_use_block("f", {"a": [1, {"b": None}]}, id="toolu_x")],
                         stop_reason="tool_use", usage={"input_tokens": 3, "output_tokens": 9,
                                                        "cache_read_input_tokens": 2})
    client = anthropic.Anthropic(base_url=fake_anthropic.url, api_key="k", max_retries=0)
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=10,
                                messages=[{"role": "user", "content": "x"}]) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "tool_use"
    assert message.content[0].type == "thinking" and message.content[0].signature == "sig"
    assert message.content[1].input == {"a": [1, {"b": None}]}
    assert message.usage.output_tokens == 9 and message.usage.cache_read_input_tokens == 2


def test_non_streaming_json_message(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.reply_text("plain", usage={"input_tokens": 4, "output_tokens": 1})
    client = anthropic.Anthropic(base_url=fake_anthropic.url, api_key="k", max_retries=0)
    message = client.messages.create(model="claude-haiku-4-5", max_tokens=10,
                                     messages=[{"role": "user", "content": "x"}])
    assert message.content[0].text == "plain" and message.usage.input_tokens == 4
    assert message.model == "claude-haiku-4-5"


def test_error_body_headers_and_sdk_error(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.reply_error(429, "rate_limit_error", "slow down", headers={"retry-after": "3"})
    status, headers, body = _post(fake_anthropic, json.dumps(
        {"model": "m", "max_tokens": 1, "messages": []}).encode(), GOOD)
    assert status == 429 and headers["retry-after"] == "3"
    assert headers["request-id"].startswith("req_") and headers["content-type"] == "application/json"
    data = json.loads(body)
    assert data["type"] == "error" and data["error"] == {"type": "rate_limit_error", "message": "slow down"}
    fake_anthropic.reply_error(529, "overloaded_error", "Overloaded")
    client = anthropic.Anthropic(base_url=fake_anthropic.url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 529 and info.value.type == "overloaded_error"


def test_validation_like_the_api(fake_anthropic: FakeAnthropic) -> None:
    body = json.dumps({"model": "m", "max_tokens": 1, "messages": []}).encode()
    assert _post(fake_anthropic, body, {**GOOD, "x-api-key": ""})[0] == 401
    assert _post(fake_anthropic, body, {k: v for k, v in GOOD.items() if k != "anthropic-version"})[0] == 400
    assert _post(fake_anthropic, b"{nope", GOOD)[0] == 400
    missing = _post(fake_anthropic, json.dumps({"model": "m", "messages": []}).encode(), GOOD)
    assert missing[0] == 400 and b"max_tokens" in missing[2]
    assert _post(fake_anthropic, body, GOOD, path="/v1/complete")[0] == 404
    unscripted = _post(fake_anthropic, body, GOOD)
    assert unscripted[0] == 500 and b"no reply scripted" in unscripted[2]
    fake_anthropic.api_key = "right"
    assert _post(fake_anthropic, body, {**GOOD, "x-api-key": "wrong"})[0] == 401
    settled = fake_anthropic.settled()
    assert len(settled) == 7 and all(r.outcome == "error" for r in settled)


def test_sse_wire_format(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.reply_text("hi", chunk=1)
    body = json.dumps({"model": "m", "max_tokens": 5, "stream": True,
                       "messages": [{"role": "user", "content": "x"}]}).encode()
    status, headers, raw = _post(fake_anthropic, body, GOOD)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [block.split("\n") for block in raw.decode().strip().split("\n\n")]
    names = [lines[0].removeprefix("event: ") for lines in events]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]
    for lines in events:
        assert lines[1].startswith("data: ")
        data = json.loads(lines[1].removeprefix("data: "))
        assert data["type"] == lines[0].removeprefix("event: ")
    start = json.loads(events[0][1][6:])["message"]
    assert start["usage"]["input_tokens"] == 10 and start["content"] == [] and start["stop_reason"] is None


def test_requests_are_recorded_and_awaitable(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.default = fake_anthropic.reply_text("again")
    fake_anthropic.reset()
    client = anthropic.Anthropic(base_url=fake_anthropic.url, api_key="k", max_retries=0)
    for i in range(3):
        client.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": f"n{i}"}])
    got = fake_anthropic.wait_for_requests(3, timeout=2)
    assert [r.body["messages"][0]["content"] for r in got] == ["n0", "n1", "n2"]
    assert fake_anthropic.bodies()[0]["max_tokens"] == 1
