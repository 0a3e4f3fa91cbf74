"""Random session logs for the context tests: the events a real session writes, built directly.

A session is a list of runs; each run has an input (text, sometimes an image, sometimes tool
results answering the previous run's pending calls), model calls with reasoning and parallel
tool calls, tool results (some missing: a failed run), and an answer or a failure. Compactions
and pins are sprinkled between runs. The log always ends with a run's input, as it does when a
window is cut.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from asm_kernel.events import EventType
from asm_kernel.model import Event

SESSION = "ses_prop"
START = datetime(2026, 1, 1, tzinfo=UTC)

words = st.text(alphabet="abcdefghij klmnop\n{}\"", min_size=0, max_size=60)
sizes = st.integers(min_value=0, max_value=400)


def _text(seed: str, size: int) -> str:
    return (seed + " ") * (size // (len(seed) + 1) + 1) if seed else "x" * size


@st.composite
def call_specs(draw: Any) -> dict[str, Any]:
    return {
        "thinking": draw(st.booleans()),
        "text": draw(st.booleans()),
        "calls": draw(st.integers(min_value=0, max_value=3)),
        "size": draw(sizes),
        "result_size": draw(sizes),
        "missing": draw(st.integers(min_value=0, max_value=6)) == 0,
    }


@st.composite
def run_specs(draw: Any) -> dict[str, Any]:
    return {
        "input": draw(words),
        "size": draw(sizes),
        "image": draw(st.integers(min_value=0, max_value=8)) == 0,
        "calls": draw(st.lists(call_specs(), min_size=1, max_size=3)),
        "fails": draw(st.integers(min_value=0, max_value=8)) == 0,
        "pending": draw(st.integers(min_value=0, max_value=8)) == 0,
        "compact": draw(st.integers(min_value=0, max_value=10)) == 0,
        "pin": draw(st.integers(min_value=0, max_value=10)) == 0,
        "gap": draw(st.integers(min_value=0, max_value=3600)),
    }


sessions = st.lists(run_specs(), min_size=1, max_size=25)


class LogMaker:
    """Turns run specs into stored-looking events (seqs from 1, increasing times)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.now = START
        self.ids = 0
        self.pending: list[str] = []
        self.message_seqs: list[int] = []
        self.group_ends: list[int] = []

    def add(self, type_: str, payload: dict[str, Any], run_id: str | None = "run_x", seconds: int = 1) -> Event:
        self.now += timedelta(seconds=seconds)
        event = Event(session_id=SESSION, type=type_, payload=payload, run_id=run_id, seq=len(self.events) + 1,
                      timestamp=self.now)
        self.events.append(event)
        if type_ in (EventType.MESSAGE_SENT, EventType.MESSAGE_RECEIVED, EventType.TOOL_CALL_COMPLETED):
            self.message_seqs.append(event.seq)
        return event

    def user_input(self, spec: dict[str, Any]) -> None:
        content: list[dict[str, Any]] = []
        if self.pending and not spec["pending"]:
            content += [{"type": "tool_result", "tool_use_id": i, "content": "answered", "is_error": False}
                        for i in self.pending]
            self.pending = []
        content.append({"type": "text", "text": _text(spec["input"], spec["size"])})
        if spec["image"]:
            content.append({"type": "image", "media_type": "image/png", "data": "iVBORw0KGgo=", "url": None})
        self.add(EventType.RUN_STARTED, {"provider": "p"}, seconds=spec["gap"])
        self.add(EventType.MESSAGE_SENT, {"message": {"role": "user", "content": content}})

    def run(self, spec: dict[str, Any], last: bool) -> None:
        self.user_input(spec)
        if last:
            return
        for call in spec["calls"]:
            blocks: list[dict[str, Any]] = []
            if call["thinking"]:
                blocks.append({"type": "thinking", "thinking": "hmm " * 5, "signature": "sig"})
            if call["text"] or not call["calls"]:
                blocks.append({"type": "text", "text": _text("answer", call["size"])})
            ids = []
            for _ in range(call["calls"]):
                self.ids += 1
                ident = f"toolu_{self.ids}"
                ids.append(ident)
                blocks.append({"type": "tool_use", "id": ident, "name": "lookup", "input": {"q": "x" * 10}})
            if not blocks:
                blocks.append({"type": "text", "text": "ok"})
            self.add(EventType.CONTEXT_PREPARED, {"provider": "p", "model": "m", "included": [], "last_seq": 0,
                                                  "estimated_tokens": 1, "prompt_digest": "d"})
            self.add(EventType.MESSAGE_RECEIVED, {"message": {"role": "assistant", "content": blocks},
                                                  "provider": "p", "model": "m", "stop_reason": "end_turn"})
            self.add(EventType.TOKEN_USAGE_UPDATED, {"usage": {"input_tokens": 50 + len(self.events),
                                                               "output_tokens": 5}})
            if not ids:
                break
            if spec["fails"] or call["missing"]:
                self.add(EventType.RUN_FAILED, {"error": {"code": "x"}})
                return
            if spec["pending"]:
                self.pending = ids  # the caller answers them with the next input (or never)
                self.add(EventType.RUN_COMPLETED, {"stop_reason": "tool_use"})
                return
            for ident in ids:
                self.add(EventType.TOOL_CALL_COMPLETED, {"tool_use_id": ident, "name": "lookup",
                                                         "output": _text("result", call["result_size"]),
                                                         "is_error": False})
        self.add(EventType.RUN_COMPLETED, {"stop_reason": "end_turn"})

    def compact(self, through_seq: int) -> None:
        self.add(EventType.CONTEXT_COMPACTED, {"summary": "summary " * 10, "replaced": {"from": 2, "to": through_seq},
                                               "groups": 0}, run_id=None)

    def pin(self, seq: int) -> None:
        self.add(EventType.MESSAGE_PINNED, {"seq": seq, "pinned": True}, run_id=None)


def make_log(specs: list[dict[str, Any]]) -> LogMaker:
    log = LogMaker()
    log.add(EventType.SESSION_CREATED, {}, run_id=None)
    for i, spec in enumerate(specs):
        last = i == len(specs) - 1
        if i and spec["compact"] and log.message_seqs:
            log.compact(log.message_seqs[len(log.message_seqs) // 2])
        if i and spec["pin"] and log.message_seqs:
            log.pin(log.message_seqs[(spec["size"] * 7) % len(log.message_seqs)])
        log.run(spec, last)
    return log
