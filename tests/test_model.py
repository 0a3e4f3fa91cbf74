from __future__ import annotations

import pytest

from asm_kernel import Message, Price, Run, RunStatus, Session, SessionStatus, TextBlock, ToolUseBlock, Usage
from asm_kernel.errors import IllegalTransitionError, ValidationError
from asm_kernel.model import Event


def test_session_lifecycle_allows_the_documented_moves() -> None:
    s = Session()
    assert s.status is SessionStatus.PENDING
    s = s.transition(SessionStatus.ACTIVE).transition(SessionStatus.PAUSED).transition(SessionStatus.ACTIVE)
    done = s.transition(SessionStatus.COMPLETED)
    assert done.status.terminal and done.updated_at >= s.created_at


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([], SessionStatus.PAUSED),
        ([SessionStatus.ACTIVE, SessionStatus.COMPLETED], SessionStatus.ACTIVE),
        ([SessionStatus.CANCELLED], SessionStatus.ACTIVE),
    ],
)
def test_illegal_session_transitions_raise(path: list[SessionStatus], bad: SessionStatus) -> None:
    s = Session()
    for step in path:
        s = s.transition(step)
    with pytest.raises(IllegalTransitionError) as info:
        s.transition(bad)
    assert info.value.code == "state.illegal_transition"
    assert s.id in str(info.value) and "allowed from" in str(info.value)


def test_run_lifecycle_sets_times_and_refuses_going_back() -> None:
    run = Run(session_id="s")
    running = run.transition(RunStatus.RUNNING)
    assert running.started_at is not None and running.finished_at is None
    done = running.transition(RunStatus.TIMED_OUT)
    assert done.finished_at is not None
    with pytest.raises(IllegalTransitionError):
        done.transition(RunStatus.RUNNING)
    with pytest.raises(IllegalTransitionError):
        Run(session_id="s").transition(RunStatus.COMPLETED)


def test_usage_adds_and_price_costs() -> None:
    total = Usage(10, 5, 2, 3, 1) + Usage(1, 1, 0, 0, 0)
    assert total == Usage(11, 6, 2, 3, 1)
    assert total.total_tokens == 22
    price = Price(input=3.0, output=15.0, cache_write=3.75, cache_read=0.3)
    assert price.cost(Usage(1_000_000, 1_000_000, 1_000_000, 1_000_000)) == pytest.approx(22.05)


def test_message_helpers() -> None:
    m = Message("assistant", [TextBlock("a"), ToolUseBlock("t1", "calc", {"x": 1}), TextBlock("b")])
    assert m.text == "ab"
    assert [t.id for t in m.tool_uses] == ["t1"]
    assert isinstance(m.content, tuple)


def test_event_payload_must_be_an_object() -> None:
    with pytest.raises(ValidationError):
        Event(session_id="s", type="x", payload=[1, 2])  # type: ignore[arg-type]
