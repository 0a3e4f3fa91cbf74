"""The event-type vocabulary of the session log and the shape of each payload.

Payloads are JSON objects. Their fields are listed in :data:`PAYLOAD_FIELDS`, which also feeds
``docs/reference/events.md``. Plugins may append their own event types; the convention is a
dotted prefix (``"myplugin.thing_happened"``) so they never collide with kernel types.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

__all__ = ["EventType", "PAYLOAD_FIELDS", "SCHEMA_VERSION", "STREAM_TYPES", "is_known"]

#: Version of the payload shapes below; stored with every event.
SCHEMA_VERSION = 1


class EventType(enum.StrEnum):
    SESSION_CREATED = "session_created"
    SESSION_ACTIVATED = "session_activated"
    SESSION_PAUSED = "session_paused"
    SESSION_RESUMED = "session_resumed"
    SESSION_COMPLETED = "session_completed"
    SESSION_FAILED = "session_failed"
    SESSION_CANCELLED = "session_cancelled"

    RUN_STARTED = "run_started"
    MESSAGE_SENT = "message_sent"
    MESSAGE_STREAMED = "message_streamed"
    THINKING_STREAMED = "thinking_streamed"
    MESSAGE_RECEIVED = "message_received"
    TOOL_CALL_STARTED = "tool_call_started"
    TOOL_CALL_COMPLETED = "tool_call_completed"
    TOKEN_USAGE_UPDATED = "token_usage_updated"
    RUN_COMPLETED = "run_completed"
    RUN_FAILED = "run_failed"
    RUN_CANCELLED = "run_cancelled"
    RUN_TIMED_OUT = "run_timed_out"
    ERROR_OCCURRED = "error_occurred"

    ROUTING_DECIDED = "routing_decided"
    CAPABILITY_DEGRADED = "capability_degraded"
    HISTORY_DOWNGRADED = "history_downgraded"
    PROVIDER_ATTEMPT_FAILED = "provider_attempt_failed"
    RETRY_SCHEDULED = "retry_scheduled"
    PROVIDER_FAILOVER = "provider_failover"
    PROVIDER_SKIPPED = "provider_skipped"
    BREAKER_STATE_CHANGED = "breaker_state_changed"

    CONTEXT_PREPARED = "context_prepared"
    CONTEXT_COMPACTED = "context_compacted"
    MESSAGE_PINNED = "message_pinned"
    SESSION_FORKED = "session_forked"
    POLICY_DECIDED = "policy_decided"
    BUDGET_RESERVED = "budget_reserved"
    BUDGET_SETTLED = "budget_settled"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_GRANTED = "approval_granted"
    APPROVAL_DENIED = "approval_denied"


#: Types whose loss on a crash costs nothing durable (the final message repeats them), so the
#: store may write them behind instead of making the caller wait for the commit.
STREAM_TYPES: frozenset[str] = frozenset({EventType.MESSAGE_STREAMED, EventType.THINKING_STREAMED})

PAYLOAD_FIELDS: Mapping[str, Mapping[str, str]] = {
    EventType.SESSION_CREATED: {"agent_id": "str", "metadata": "object", "tags": "list[str]"},
    EventType.SESSION_ACTIVATED: {"from": "session status"},
    EventType.SESSION_PAUSED: {"from": "session status", "reason": "str, when one was given"},
    EventType.SESSION_RESUMED: {"from": "session status"},
    EventType.SESSION_COMPLETED: {"from": "session status"},
    EventType.SESSION_FAILED: {"from": "session status", "reason": "str, when one was given"},
    EventType.SESSION_CANCELLED: {"from": "session status", "reason": "str, when one was given"},
    EventType.RUN_STARTED: {
        "provider": "str: the first candidate (the one that answered is on message_received)",
        "model": "str",
        "input": "message",
        "requested_provider": "str | null: the provider the caller asked for by name",
        "owner": "str: the worker (runtime.worker_id) executing the run under its lease",
        "resumed": "true, only when the run continues after waiting for approval (no message_sent follows)",
    },
    EventType.MESSAGE_SENT: {"message": "message (role user): the input of the run"},
    EventType.MESSAGE_STREAMED: {"text": "str: one text delta", "index": "int: content block"},
    EventType.THINKING_STREAMED: {"text": "str: one reasoning delta", "index": "int"},
    EventType.MESSAGE_RECEIVED: {
        "message": "message (role assistant) with every content block",
        "stop_reason": "end_turn | max_tokens | tool_use | stop_sequence | refusal | ...",
        "model": "str: the model that answered",
        "provider": "str",
    },
    EventType.TOOL_CALL_STARTED: {
        "tool_use_id": "str",
        "name": "str",
        "input": "object",
        "source": "str: who serves it (the tool's module or plugin; caller when the caller must answer)",
    },
    EventType.TOOL_CALL_COMPLETED: {
        "tool_use_id": "str",
        "name": "str",
        "output": "str | list: what the tool returned",
        "is_error": "bool",
        "source": "str: who served it",
        "duration": "float: seconds the tool took",
        "truncated": "int, only when the output was cut to tool_calls.max_output_chars: its full length",
        "denied": "str, only for a call a policy or a person refused: who",
    },
    EventType.TOKEN_USAGE_UPDATED: {
        "usage": "usage | null: of this response (null: the provider reported none)",
        "total": "usage of the run so far",
        "cost": "float | null: US dollars for this response; null when the price or usage is unknown",
        "failed_attempt": "int, only for a failed attempt that reported usage: its attempt number",
    },
    EventType.RUN_COMPLETED: {
        "output": "str: the answer text",
        "stop_reason": "str",
        "usage": "usage of the whole run",
        "cost": "float | null",
        "provider": "str: the provider that answered",
        "pending_tool_calls": "list[str]: ids of tool calls the caller must answer",
    },
    EventType.RUN_FAILED: {
        "error": "error object: code, type, message, retryable, ...",
        "reason": "str, only for recovery: crashed",
    },
    EventType.RUN_CANCELLED: {"reason": "str | null"},
    EventType.RUN_TIMED_OUT: {"timeout": "float: seconds", "error": "error object (runtime.timeout)"},
    EventType.ERROR_OCCURRED: {
        "error": "error object",
        "during": "run | recovery | tool",
        "tool_use_id": "str, only during tool: the call that failed",
        "name": "str, only during tool: the tool",
    },
    EventType.ROUTING_DECIDED: {
        "candidates": "list[str]: providers in the order they will be tried",
        "negotiation": "object: per provider, outcome (full|degraded|rejected) and what is missing",
    },
    EventType.CAPABILITY_DEGRADED: {
        "provider": "str",
        "outcome": "degraded",
        "missing_preferred": "list[str]",
        "history_downgrades": "list[str]: capabilities the history needs that this provider lacks",
    },
    EventType.HISTORY_DOWNGRADED: {
        "provider": "str",
        "missing": "list[str]",
        "images": "int: images replaced by text",
        "tool_blocks": "int: tool calls/results rendered as text",
        "reasoning_blocks": "int: reasoning blocks left out",
    },
    EventType.PROVIDER_ATTEMPT_FAILED: {"provider": "str", "model": "str", "attempt": "int", "error": "error object"},
    EventType.RETRY_SCHEDULED: {
        "provider": "str",
        "model": "str",
        "attempt": "int: the attempt about to be made",
        "delay": "float: seconds (backoff with jitter, at least the server's retry-after)",
        "error_code": "str",
    },
    EventType.PROVIDER_FAILOVER: {"from": "str", "to": "str", "error_code": "str"},
    EventType.PROVIDER_SKIPPED: {
        "provider": "str",
        "model": "str",
        "reason": "str",
        "retry_in": "float: seconds until a probe is allowed",
    },
    EventType.BREAKER_STATE_CHANGED: {
        "provider": "str",
        "model": "str",
        "from": "closed | open | half_open",
        "to": "closed | open | half_open",
    },
    EventType.CONTEXT_PREPARED: {
        "turn": "int: the model call of the run (0 first)",
        "provider": "str: the target the window was prepared for",
        "model": "str",
        "strategy": "full | window | summarize",
        "budget": "int | null: tokens the request may hold (null: the model's window is unknown and no max_tokens)",
        "limits": "object: max_tokens, max_messages, max_age as applied (null when unset)",
        "included": "list of spans {from, to}: seq ranges whose messages were sent",
        "dropped": "list of spans {from, to, reason}: seq ranges left out (reason max_tokens | max_messages | max_age)",
        "summarized": "list of spans {from, to, by}: seq ranges replaced by the summary of compaction `by` (its seq)",
        "pinned": "list[int]: pinned seqs whose turns were kept",
        "messages": "int: messages sent",
        "last_seq": "int: the last seq the window saw",
        "estimated_tokens": "int: the estimator's count of the whole request (system, tools, messages)",
        "counted_tokens": "int: the count the window was judged by",
        "count": "estimated | anchored | exact: how counted_tokens was obtained",
        "anchor": "object | null: reported_tokens and seq of the earlier request whose usage anchored the count",
        "exact_tokens": "int, when the provider counted the request exactly",
        "prompt_digest": "str: digest of the system prompt and tool specs (an anchor holds only while it is unchanged)",
        "retry": "str, only on the retry after a context-length error: context_length",
        "compaction_error": "error object, when an automatic compaction failed (the window was truncated instead)",
    },
    EventType.CONTEXT_COMPACTED: {
        "summary": "str: the summary that later windows send in place of the replaced range",
        "replaced": "span {from, to}: the seq range the summary replaces (whole turns, from the start)",
        "groups": "int: turns summarized",
        "provider": "str: the provider that wrote the summary",
        "model": "str",
        "usage": "usage | null: of the summarizing call",
        "cost": "float | null: US dollars",
        "trigger": "auto | manual | context_length",
    },
    EventType.MESSAGE_PINNED: {
        "seq": "int: a seq of the message (its whole turn is kept in every window)",
        "pinned": "bool: false unpins it",
    },
    EventType.SESSION_FORKED: {
        "parent_session_id": "str: the session this one was forked from",
        "at_seq": "int: the parent's last seq the fork contains",
        "copied": "int: transcript events copied from the parent (their seqs follow this event)",
    },
    EventType.POLICY_DECIDED: {
        "policy": "str: the policy's configured name",
        "step": "run | model_call | tool_round | tool: what was decided about",
        "action": "allow | warn | approve | refuse (the strictest of all policies wins)",
        "reason": "str",
        "limit": "str | null: the limit that decided (max_cost_usd, ...)",
        "scope": "str | null: the budget's scope key (session:ses_1:2026-07, ...)",
        "limit_value": "float | null",
        "spend": "float | null: spent in the scope before this step",
        "requested": "float | null: what the step may add at worst",
        "tool_use_id": "str, only for a tool call",
        "name": "str, only for a tool call: the tool",
    },
    EventType.BUDGET_RESERVED: {
        "reservation_id": "str",
        "run_id": "str: the run the reservation is for (the event itself is in the ledger session)",
        "session_id": "str: that run's session",
        "step": "run | model_call | tool_round",
        "spend": "spend: input_tokens, output_tokens, cost_usd, model_calls, tool_calls, turns (worst case)",
    },
    EventType.BUDGET_SETTLED: {
        "reservation_id": "str",
        "run_id": "str",
        "spend": "spend: what the step really used (the reservation when the provider reported nothing)",
    },
    EventType.APPROVAL_REQUESTED: {
        "approval_id": "str",
        "kind": "tool | budget | cost",
        "key": "str: what a grant covers (tool:<tool_use_id>, budget:<policy>:<limit>, ...)",
        "policy": "str: the policy that asked",
        "reason": "str",
        "tool_use_id": "str, for a tool call",
        "name": "str, for a tool call: the tool",
        "input": "object, for a tool call: its arguments",
        "expires_at": "str | null: ISO time after which the request is denied",
    },
    EventType.APPROVAL_GRANTED: {
        "approval_id": "str",
        "key": "str",
        "decided_by": "str: who approved",
        "reason": "str | null",
    },
    EventType.APPROVAL_DENIED: {
        "approval_id": "str",
        "key": "str",
        "decided_by": "str: who denied (asm.timeout when the request expired)",
        "reason": "str | null",
    },
}


def is_known(event_type: str) -> bool:
    return event_type in EventType._value2member_map_
