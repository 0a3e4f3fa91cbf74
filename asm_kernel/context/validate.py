"""The last check of an outgoing request: the rules every provider enforces, before it is sent.

:func:`validate_request` runs on the final request — after the ``context`` stage, any plugin
stage and every ``asm_before_provider_request`` hook — and raises
:class:`~asm_kernel.errors.InvalidContextError` (with the path into the request) instead of
letting the provider answer with a 400:

* there is at least one message, and the first is a user turn that answers no tool call;
* every ``tool_use`` (assistant) is answered by a ``tool_result`` in the very next message
  (user), and every ``tool_result`` answers a ``tool_use`` of the message just before it;
* tool calls and reasoning blocks are in assistant messages, tool results in user messages;
* tool call ids are unique.

The token budget is checked by the caller (:func:`asm_kernel.context.stage.check_request`),
which knows the target's window and the count the window was judged by.
"""

from __future__ import annotations

from ..errors import InvalidContextError
from ..model import ProviderRequest, RedactedThinkingBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock

__all__ = ["validate_request"]

_HINT = (
    "the context stage never builds such a request: a plugin stage or an asm_before_provider_request "
    "hook changed the messages; keep tool calls with their results"
)


def _bad(message: str, path: str, provider: str | None) -> InvalidContextError:
    return InvalidContextError(message, path=path, hint=_HINT, provider=provider)


def validate_request(request: ProviderRequest, provider: str | None = None) -> None:
    """Raise :class:`InvalidContextError` if ``request`` breaks a rule listed in the module docstring."""
    messages = request.messages
    if not messages:
        raise _bad("the request has no messages", "messages", provider)
    if messages[0].role != "user":
        raise _bad(f"the first message is a {messages[0].role} turn; providers want a user turn first",
                   "messages[0].role", provider)
    seen: set[str] = set()
    expected: set[str] = set()  # calls of the previous message, awaiting their results
    for i, message in enumerate(messages):
        calls: set[str] = set()
        answered: set[str] = set()
        for j, block in enumerate(message.content):
            where = f"messages[{i}].content[{j}]"
            if isinstance(block, ToolUseBlock):
                if message.role != "assistant":
                    raise _bad("a tool call in a user message", where, provider)
                if block.id in seen:
                    raise _bad(f"tool call id {block.id!r} is used twice", where, provider)
                seen.add(block.id)
                calls.add(block.id)
            elif isinstance(block, ToolResultBlock):
                if message.role != "user":
                    raise _bad("a tool result in an assistant message", where, provider)
                if block.tool_use_id not in expected:
                    raise _bad(f"tool result {block.tool_use_id!r} answers no tool call of the message before it",
                               where, provider)
                answered.add(block.tool_use_id)
            elif isinstance(block, ThinkingBlock | RedactedThinkingBlock) and message.role != "assistant":
                raise _bad("a reasoning block in a user message", where, provider)
        missing = expected - answered
        if missing:
            raise _bad(f"tool call(s) {', '.join(sorted(missing))} of messages[{i - 1}] get no result in this message",
                       f"messages[{i}]", provider)
        expected = calls
    if expected:
        raise _bad(f"the last message makes tool call(s) {', '.join(sorted(expected))} with no result",
                   f"messages[{len(messages) - 1}]", provider)
