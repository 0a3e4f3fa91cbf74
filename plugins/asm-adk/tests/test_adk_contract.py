"""ADK's session-service contract tests, ported from google/adk-python
``tests/unittests/sessions/test_session_service.py`` (the cases that take its ``session_service``
fixture, plus its stale-session cases written for the database service).

ADK's source distribution does not ship its tests, so they cannot be run from it; the cases
below keep ADK's names, steps and assertions, and only the fixture differs: it runs each case on
ADK's own ``InMemorySessionService`` (so a port that drifted from ADK would fail there too) and
on ``AsmSessionService`` over every available asm store. Cases marked ``asm_only`` are the
database service's stale-writer contract, which the in-memory reference does not keep.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.base_session_service import GetSessionConfig
from google.genai import types


async def test_get_empty_session(session_service: Any) -> None:
    assert not await session_service.get_session(app_name="my_app", user_id="test_user", session_id="123")


async def test_create_get_session(session_service: Any) -> None:
    app_name, user_id, state = "my_app", "test_user", {"key": "value"}
    session = await session_service.create_session(app_name=app_name, user_id=user_id, state=state)
    assert session.app_name == app_name
    assert session.user_id == user_id
    assert session.id
    assert session.state == state
    assert session.last_update_time <= datetime.now().astimezone(UTC).timestamp()
    got_session = await session_service.get_session(app_name=app_name, user_id=user_id, session_id=session.id)
    assert got_session == session
    assert got_session.last_update_time <= datetime.now().astimezone(UTC).timestamp()
    await session_service.delete_session(app_name=app_name, user_id=user_id, session_id=session.id)
    assert await session_service.get_session(app_name=app_name, user_id=user_id, session_id=session.id) is None


async def test_create_and_list_sessions(session_service: Any) -> None:
    app_name, user_id = "my_app", "test_user"
    session_ids = ["session" + str(i) for i in range(5)]
    for session_id in session_ids:
        await session_service.create_session(
            app_name=app_name, user_id=user_id, session_id=session_id, state={"key": "value" + session_id}
        )
    sessions = (await session_service.list_sessions(app_name=app_name, user_id=user_id)).sessions
    assert len(sessions) == len(session_ids)
    assert {s.id for s in sessions} == set(session_ids)
    for session in sessions:
        assert session.state == {"key": "value" + session.id}


async def test_list_sessions_all_users(session_service: Any) -> None:
    app_name = "my_app"
    await session_service.create_session(
        app_name=app_name, user_id="user1", session_id="session1a", state={"key": "value1a"}
    )
    await session_service.create_session(
        app_name=app_name, user_id="user1", session_id="session1b", state={"key": "value1b"}
    )
    await session_service.create_session(
        app_name=app_name, user_id="user2", session_id="session2a", state={"key": "value2a"}
    )
    sessions_1 = (await session_service.list_sessions(app_name=app_name, user_id="user1")).sessions
    assert len(sessions_1) == 2
    sessions_1_map = {s.id: s for s in sessions_1}
    assert sessions_1_map["session1a"].state == {"key": "value1a"}
    assert sessions_1_map["session1b"].state == {"key": "value1b"}
    sessions_2 = (await session_service.list_sessions(app_name=app_name, user_id="user2")).sessions
    assert len(sessions_2) == 1
    assert sessions_2[0].id == "session2a"
    assert sessions_2[0].state == {"key": "value2a"}
    sessions_all = (await session_service.list_sessions(app_name=app_name, user_id=None)).sessions
    assert len(sessions_all) == 3
    sessions_all_map = {s.id: s for s in sessions_all}
    assert sessions_all_map["session1a"].state == {"key": "value1a"}
    assert sessions_all_map["session1b"].state == {"key": "value1b"}
    assert sessions_all_map["session2a"].state == {"key": "value2a"}


async def test_app_state_is_shared_by_all_users_of_app(session_service: Any) -> None:
    app_name = "my_app"
    session1 = await session_service.create_session(
        app_name=app_name, user_id="u1", session_id="s1", state={"app:k1": "v1"}
    )
    event = Event(invocation_id="inv1", author="user", actions=EventActions(state_delta={"app:k2": "v2"}))
    await session_service.append_event(session=session1, event=event)
    session2 = await session_service.create_session(app_name=app_name, user_id="u2", session_id="s2")
    assert session2.state == {"app:k1": "v1", "app:k2": "v2"}
    session1_got = await session_service.get_session(app_name=app_name, user_id="u1", session_id="s1")
    assert session1_got.state.get("app:k1") == "v1"
    assert session1_got.state.get("app:k2") == "v2"


async def test_user_state_is_shared_only_by_user_sessions(session_service: Any) -> None:
    app_name = "my_app"
    session1 = await session_service.create_session(
        app_name=app_name, user_id="u1", session_id="s1", state={"user:k1": "v1"}
    )
    event = Event(invocation_id="inv1", author="user", actions=EventActions(state_delta={"user:k2": "v2"}))
    await session_service.append_event(session=session1, event=event)
    session1b = await session_service.create_session(app_name=app_name, user_id="u1", session_id="s1b")
    assert session1b.state == {"user:k1": "v1", "user:k2": "v2"}
    session2 = await session_service.create_session(app_name=app_name, user_id="u2", session_id="s2")
    assert session2.state == {}


async def test_session_state_is_not_shared(session_service: Any) -> None:
    app_name = "my_app"
    session1 = await session_service.create_session(
        app_name=app_name, user_id="u1", session_id="s1", state={"sk1": "v1"}
    )
    event = Event(invocation_id="inv1", author="user", actions=EventActions(state_delta={"sk2": "v2"}))
    await session_service.append_event(session=session1, event=event)
    session1_got = await session_service.get_session(app_name=app_name, user_id="u1", session_id="s1")
    assert session1_got.state.get("sk1") == "v1"
    assert session1_got.state.get("sk2") == "v2"
    session1b = await session_service.create_session(app_name=app_name, user_id="u1", session_id="s1b")
    assert session1b.state == {}


async def test_temp_state_is_not_persisted_in_state_or_events(session_service: Any) -> None:
    session = await session_service.create_session(app_name="my_app", user_id="u1", session_id="s1")
    event = Event(invocation_id="inv1", author="user", actions=EventActions(state_delta={"temp:k1": "v1", "sk": "v2"}))
    await session_service.append_event(session=session, event=event)
    assert session.state.get("temp:k1") == "v1"
    assert session.state.get("sk") == "v2"
    assert "temp:k1" not in event.actions.state_delta
    assert event.actions.state_delta.get("sk") == "v2"


async def test_temp_state_visible_across_sequential_events(session_service: Any) -> None:
    session = await session_service.create_session(app_name="my_app", user_id="u1", session_id="s_seq")
    event1 = Event(
        invocation_id="inv1", author="agent1", actions=EventActions(state_delta={"temp:output": "result_from_a1"})
    )
    await session_service.append_event(session=session, event=event1)
    assert session.state.get("temp:output") == "result_from_a1"
    assert "temp:output" not in event1.actions.state_delta


async def test_get_session_respects_user_id(session_service: Any) -> None:
    app_name = "my_app"
    session1 = await session_service.create_session(app_name=app_name, user_id="u1", session_id="s1")
    await session_service.append_event(session1, Event(invocation_id="inv1", author="user"))
    await session_service.create_session(app_name=app_name, user_id="u2", session_id="s1")
    session2_got = await session_service.get_session(app_name=app_name, user_id="u2", session_id="s1")
    assert session2_got.user_id == "u2"
    assert len(session2_got.events) == 0


async def test_create_session_with_existing_id_raises_error(session_service: Any) -> None:
    await session_service.create_session(app_name="my_app", user_id="test_user", session_id="existing_session")
    with pytest.raises(AlreadyExistsError):
        await session_service.create_session(app_name="my_app", user_id="test_user", session_id="existing_session")


async def test_append_event_bytes(session_service: Any) -> None:
    session = await session_service.create_session(app_name="my_app", user_id="user")
    test_content = types.Content(
        role="user", parts=[types.Part.from_bytes(data=b"test_image_data", mime_type="image/png")]
    )
    test_grounding_metadata = types.GroundingMetadata(
        search_entry_point=types.SearchEntryPoint(sdk_blob=b"test_sdk_blob")
    )
    event = Event(
        invocation_id="invocation", author="user", content=test_content, grounding_metadata=test_grounding_metadata
    )
    await session_service.append_event(session=session, event=event)
    assert session.events[0].content == test_content
    session = await session_service.get_session(app_name="my_app", user_id="user", session_id=session.id)
    events = session.events
    assert len(events) == 1
    assert events[0].content == test_content
    assert events[0].grounding_metadata == test_grounding_metadata


async def test_append_event_complete(session_service: Any) -> None:
    session = await session_service.create_session(app_name="my_app", user_id="user")
    event = Event(
        invocation_id="invocation",
        author="user",
        content=types.Content(role="user", parts=[types.Part(text="test_text")]),
        turn_complete=True,
        partial=False,
        actions=EventActions(artifact_delta={"file": 0}, transfer_to_agent="agent", escalate=True),
        long_running_tool_ids={"tool1"},
        error_code="error_code",
        error_message="error_message",
        interrupted=True,
        grounding_metadata=types.GroundingMetadata(web_search_queries=["query1"]),
        usage_metadata=types.GenerateContentResponseUsageMetadata(
            prompt_token_count=1, candidates_token_count=1, total_token_count=2
        ),
        citation_metadata=types.CitationMetadata(),
        custom_metadata={"custom_key": "custom_value"},
        timestamp=1700000000.123,
        input_transcription=types.Transcription(text="input transcription", finished=True),
        output_transcription=types.Transcription(text="output transcription", finished=True),
    )
    await session_service.append_event(session=session, event=event)
    assert await session_service.get_session(app_name="my_app", user_id="user", session_id=session.id) == session


async def test_session_last_update_time_updates_on_event(session_service: Any) -> None:
    session = await session_service.create_session(app_name="my_app", user_id="user")
    original_update_time = session.last_update_time
    event_timestamp = original_update_time + 10
    await session_service.append_event(
        session=session, event=Event(invocation_id="invocation", author="user", timestamp=event_timestamp)
    )
    assert session.last_update_time == pytest.approx(event_timestamp, abs=1e-6)
    refreshed_session = await session_service.get_session(app_name="my_app", user_id="user", session_id=session.id)
    assert refreshed_session is not None
    assert refreshed_session.last_update_time == pytest.approx(event_timestamp, abs=1e-6)
    assert refreshed_session.last_update_time > original_update_time


@pytest.mark.asm_only
async def test_append_event_to_stale_session(session_service: Any) -> None:
    app_name, user_id = "my_app", "user"
    current_time = datetime.now().astimezone(UTC).timestamp()
    original_session = await session_service.create_session(app_name=app_name, user_id=user_id)
    event1 = Event(
        invocation_id="inv1", author="user", timestamp=current_time + 1, actions=EventActions(state_delta={"sk1": "v1"})
    )
    await session_service.append_event(original_session, event1)
    updated_session = await session_service.get_session(
        app_name=app_name, user_id=user_id, session_id=original_session.id
    )
    event2 = Event(
        invocation_id="inv2", author="user", timestamp=current_time + 2, actions=EventActions(state_delta={"sk2": "v2"})
    )
    await session_service.append_event(updated_session, event2)
    assert original_session.last_update_time < updated_session.last_update_time
    assert len(original_session.events) == 1
    assert "sk2" not in original_session.state
    event3 = Event(
        invocation_id="inv3", author="user", timestamp=current_time + 3, actions=EventActions(state_delta={"sk3": "v3"})
    )
    with pytest.raises(ValueError, match="modified in storage"):
        await session_service.append_event(original_session, event3)
    session_final = await session_service.get_session(
        app_name=app_name, user_id=user_id, session_id=original_session.id
    )
    assert len(session_final.events) == 2
    assert session_final.state.get("sk1") == "v1"
    assert session_final.state.get("sk2") == "v2"
    assert session_final.state.get("sk3") is None
    assert [e.invocation_id for e in session_final.events] == ["inv1", "inv2"]


@pytest.mark.asm_only
async def test_append_event_concurrent_stale_sessions_reject_stale_writer(session_service: Any) -> None:
    app_name, user_id = "my_app", "user"
    session = await session_service.create_session(app_name=app_name, user_id=user_id)
    iteration_count = 8
    for i in range(iteration_count):
        latest_session = await session_service.get_session(app_name=app_name, user_id=user_id, session_id=session.id)
        stale_session_1 = latest_session.model_copy(deep=True)
        stale_session_2 = latest_session.model_copy(deep=True)
        base_timestamp = latest_session.last_update_time + 10.0
        event_1 = Event(
            invocation_id=f"inv{i}-1",
            author="user",
            timestamp=base_timestamp + 1.0,
            actions=EventActions(state_delta={f"sk{i}-1": f"v{i}-1"}),
        )
        event_2 = Event(
            invocation_id=f"inv{i}-2",
            author="user",
            timestamp=base_timestamp + 2.0,
            actions=EventActions(state_delta={f"sk{i}-2": f"v{i}-2"}),
        )
        results = await asyncio.gather(
            session_service.append_event(stale_session_1, event_1),
            session_service.append_event(stale_session_2, event_2),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, Exception)]
        successes = [r for r in results if not isinstance(r, Exception)]
        assert len(successes) == 1
        assert len(errors) == 1
        assert isinstance(errors[0], ValueError)
        assert "modified in storage" in str(errors[0])
    session_final = await session_service.get_session(app_name=app_name, user_id=user_id, session_id=session.id)
    for i in range(iteration_count):
        event_values = {session_final.state.get(f"sk{i}-1"), session_final.state.get(f"sk{i}-2")}
        assert event_values & {f"v{i}-1", f"v{i}-2"}
        assert None in event_values
    assert len(session_final.events) == iteration_count


async def test_get_session_with_config(session_service: Any) -> None:
    app_name, user_id = "my_app", "user"
    num_test_events = 5
    session = await session_service.create_session(app_name=app_name, user_id=user_id)
    for i in range(1, num_test_events + 1):
        await session_service.append_event(session, Event(author="user", timestamp=i))
    session = await session_service.get_session(app_name=app_name, user_id=user_id, session_id=session.id)
    assert len(session.events) == num_test_events
    config = GetSessionConfig(num_recent_events=0)
    session = await session_service.get_session(
        app_name=app_name, user_id=user_id, session_id=session.id, config=config
    )
    assert not session.events
    num_recent_events = 3
    config = GetSessionConfig(num_recent_events=num_recent_events)
    session = await session_service.get_session(
        app_name=app_name, user_id=user_id, session_id=session.id, config=config
    )
    events = session.events
    assert len(events) == num_recent_events
    assert events[0].timestamp == num_test_events - num_recent_events + 1
    after_timestamp = 4.0
    config = GetSessionConfig(after_timestamp=after_timestamp)
    session = await session_service.get_session(
        app_name=app_name, user_id=user_id, session_id=session.id, config=config
    )
    events = session.events
    assert len(events) == num_test_events - after_timestamp + 1
    assert events[0].timestamp == after_timestamp
    config = GetSessionConfig(after_timestamp=num_test_events * 10)
    session = await session_service.get_session(
        app_name=app_name, user_id=user_id, session_id=session.id, config=config
    )
    assert not session.events
    config = GetSessionConfig(after_timestamp=after_timestamp, num_recent_events=num_recent_events)
    session = await session_service.get_session(
        app_name=app_name, user_id=user_id, session_id=session.id, config=config
    )
    assert len(session.events) == num_test_events - after_timestamp + 1


async def test_partial_events_are_not_persisted(session_service: Any) -> None:
    session = await session_service.create_session(app_name="my_app", user_id="user")
    await session_service.append_event(session, Event(author="user", partial=True))
    assert len(session.events) == 0
    session_got = await session_service.get_session(app_name="my_app", user_id="user", session_id=session.id)
    assert len(session_got.events) == 0


async def test_get_user_state_returns_empty_dict_when_no_state_exists(session_service: Any) -> None:
    assert not await session_service.get_user_state(app_name="my_app", user_id="u1")


async def test_get_user_state_returns_state_written_via_append_event(session_service: Any) -> None:
    session = await session_service.create_session(app_name="my_app", user_id="u1")
    await session_service.append_event(
        session,
        Event(author="system", actions=EventActions(state_delta={"user:profile": {"name": "Alice"}, "session_key": 1})),
    )
    state = await session_service.get_user_state(app_name="my_app", user_id="u1")
    assert state == {"profile": {"name": "Alice"}}
    assert "session_key" not in state


async def test_get_user_state_is_not_visible_across_users(session_service: Any) -> None:
    session = await session_service.create_session(app_name="my_app", user_id="u1")
    await session_service.append_event(
        session, Event(author="system", actions=EventActions(state_delta={"user:secret": "only-for-u1"}))
    )
    assert not await session_service.get_user_state(app_name="my_app", user_id="u2")


async def test_get_user_state_is_not_visible_across_apps(session_service: Any) -> None:
    session = await session_service.create_session(app_name="my_app", user_id="u1")
    await session_service.append_event(
        session, Event(author="system", actions=EventActions(state_delta={"user:data": "only-app-a"}))
    )
    assert not await session_service.get_user_state(app_name="other_app", user_id="u1")


async def test_get_user_state_available_before_session_is_created(session_service: Any) -> None:
    first_session = await session_service.create_session(app_name="my_app", user_id="u1")
    await session_service.append_event(
        first_session, Event(author="system", actions=EventActions(state_delta={"user:ctx": {"v": 1}}))
    )
    assert await session_service.get_user_state(app_name="my_app", user_id="u1") == {"ctx": {"v": 1}}


async def test_get_user_state_reflects_latest_write(session_service: Any) -> None:
    session = await session_service.create_session(app_name="my_app", user_id="u1")
    for counter in (1, 2):
        await session_service.append_event(
            session, Event(author="system", actions=EventActions(state_delta={"user:counter": counter}))
        )
    state = await session_service.get_user_state(app_name="my_app", user_id="u1")
    assert state["counter"] == 2
