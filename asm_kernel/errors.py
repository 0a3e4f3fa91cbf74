"""The asm error tree.

Every error asm raises on purpose is an :class:`AsmError`. Each class carries a stable string
``code`` (``"<category>.<name>"``) that callers, logs and the CLI can rely on across releases,
a ``retryable`` flag the kernel's retry layer reads, and structured fields (``path`` into the
config or payload, ``hint`` on how to fix it, free-form ``details``).

Messages never contain secrets: provider adapters pass only server-side error text, and config
errors name the *key* that is wrong, never its value when that key holds a secret.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import Usage

__all__ = [
    "AsmError",
    "ValidationError",
    "PayloadTooLargeError",
    "ConfigError",
    "UnknownComponentError",
    "StateError",
    "IllegalTransitionError",
    "PluginError",
    "DuplicateComponentError",
    "PluginLoadError",
    "StorageError",
    "NotFoundError",
    "SessionNotFoundError",
    "RunNotFoundError",
    "AlreadyExistsError",
    "SeqConflictError",
    "StoreLockedError",
    "StoreCorruptError",
    "StoreClosedError",
    "StoreReadOnlyError",
    "WriteConflictError",
    "LeaseLostError",
    "ProviderError",
    "ProviderAuthError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "RequestTooLargeError",
    "ProviderConflictError",
    "RateLimitError",
    "QuotaExceededError",
    "ProviderOverloadedError",
    "ProviderServerError",
    "ProviderConnectionError",
    "ProviderTimeoutError",
    "ProviderResponseError",
    "CapabilityError",
    "PolicyError",
    "BudgetExceededError",
    "ToolDeniedError",
    "AsmRuntimeError",
    "QueueFullError",
    "RunCancelledError",
    "RunTimeoutError",
    "RunCrashedError",
    "LimitExceededError",
    "ToolError",
    "ToolNotFoundError",
    "ToolExecutionError",
    "ContextLengthError",
    "ContextError",
    "ContextWindowExceededError",
    "InvalidContextError",
    "ToolDefinitionError",
    "ToolArgumentsError",
    "ToolTimeoutError",
    "ToolSourceError",
    "ApprovalDeniedError",
    "error_codes",
]


class AsmError(Exception):
    """Root of every error asm raises deliberately.

    ``message`` says what went wrong, ``path`` where (``providers[1].model``), ``hint`` how to
    fix it. ``code`` is stable; match on it (or on the class), never on the message text.
    """

    code: str = "asm.error"
    category: str = "asm"
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        hint: str | None = None,
        retryable: bool | None = None,
        **details: Any,
    ) -> None:
        self.message = message
        self.path = path
        self.hint = hint
        if retryable is not None:
            self.retryable = retryable
        self.details: dict[str, Any] = details
        super().__init__(self._render())

    def _render(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.hint:
            text = f"{text} ({self.hint})"
        return text

    def __str__(self) -> str:
        return self._render()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self._render()!r})"

    def scrub(self) -> AsmError:
        """Remove every registered secret from this error's text and details, in place.

        The kernel scrubs an error before storing or re-raising it, so a secret a provider
        echoed (in a message, a ``param``, a header) cannot reach a log, a file or a terminal.
        The exception it was raised from is dropped for the same reason.
        """
        from .secrets import redact, redact_text

        self.message = redact_text(self.message)
        if self.hint:
            self.hint = redact_text(self.hint)
        self.details = redact(self.details)
        self.args = (self._render(),)
        self.__cause__ = None
        self.__suppress_context__ = True
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description used in events and ``--json`` output."""
        data: dict[str, Any] = {
            "code": self.code,
            "type": type(self).__name__,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.path:
            data["path"] = self.path
        if self.hint:
            data["hint"] = self.hint
        for key, value in self.details.items():
            if isinstance(value, str | int | float | bool) or value is None:
                data[key] = value
        return data


# -- validation -------------------------------------------------------------------------------


class ValidationError(AsmError, ValueError):
    """An API argument or payload is malformed."""

    code = "validation.invalid"
    category = "validation"


class PayloadTooLargeError(ValidationError):
    code = "validation.payload_too_large"


# -- config -----------------------------------------------------------------------------------


class ConfigError(AsmError):
    """The configuration (file, environment or arguments) is invalid."""

    code = "config.invalid"
    category = "config"


class UnknownComponentError(ConfigError):
    """``use = "x"`` names nothing that any installed plugin registered."""

    code = "config.unknown_component"


# -- state ------------------------------------------------------------------------------------


class StateError(AsmError):
    """An operation is not allowed in the object's current state."""

    code = "state.invalid"
    category = "state"


class IllegalTransitionError(StateError):
    code = "state.illegal_transition"


# -- plugins ----------------------------------------------------------------------------------


class PluginError(AsmError):
    code = "plugin.error"
    category = "plugin"


class DuplicateComponentError(PluginError):
    code = "plugin.duplicate_component"


class PluginLoadError(PluginError):
    code = "plugin.load_failed"


# -- storage ----------------------------------------------------------------------------------


class StorageError(AsmError):
    code = "storage.error"
    category = "storage"


class NotFoundError(StorageError, LookupError):
    code = "storage.not_found"


class SessionNotFoundError(NotFoundError):
    code = "storage.session_not_found"


class RunNotFoundError(NotFoundError):
    code = "storage.run_not_found"


class AlreadyExistsError(StorageError):
    code = "storage.already_exists"


class SeqConflictError(StorageError):
    """Optimistic concurrency: the log's last seq is not what the caller expected."""

    code = "storage.seq_conflict"
    retryable = True


class StoreLockedError(StorageError):
    """Another process holds the store file."""

    code = "storage.locked"
    retryable = True


class StoreCorruptError(StorageError):
    code = "storage.corrupt"


class StoreClosedError(StorageError):
    code = "storage.closed"


class StoreReadOnlyError(StorageError):
    """The store was opened read-only and a write was attempted."""

    code = "storage.read_only"


class WriteConflictError(StorageError):
    """A write unit's condition did not hold: the record changed since the writer read it.

    For example two cancels of one queued run: the first moves it ``pending -> cancelled``, the
    second expected ``pending`` and stores nothing. ``details`` name the record, what was
    expected and what was found.
    """

    code = "storage.write_conflict"


class LeaseLostError(StorageError):
    """A write carried a run lease token that is no longer current: another worker took the run over.

    The writer must stop working on that run; whatever it tried to write was not stored.
    """

    code = "storage.lease_lost"


# -- providers --------------------------------------------------------------------------------


class ProviderError(AsmError):
    """A provider call failed.

    ``provider`` and ``model`` name the target; ``status`` is the HTTP status when there was one;
    ``retry_after`` (seconds) is the server's hint; ``output_started`` records whether any output
    had already reached the caller, which forbids failover; ``usage`` is what the provider
    reported before the attempt failed (those tokens were billed, so the kernel records them).
    """

    code = "provider.error"
    category = "provider"

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        output_started: bool = False,
        request_id: str | None = None,
        usage: Usage | None = None,
        **kwargs: Any,
    ) -> None:
        self.usage = usage
        self.provider = provider
        self.model = model
        self.status = status
        self.retry_after = retry_after
        self.output_started = output_started
        self.request_id = request_id
        super().__init__(
            message,
            provider=provider,
            model=model,
            status=status,
            retry_after=retry_after,
            output_started=output_started,
            request_id=request_id,
            **kwargs,
        )


class ProviderAuthError(ProviderError):
    code = "provider.auth"


class InvalidRequestError(ProviderError):
    code = "provider.invalid_request"


class ModelNotFoundError(ProviderError):
    code = "provider.model_not_found"


class RequestTooLargeError(ProviderError):
    code = "provider.request_too_large"


class ProviderConflictError(ProviderError):
    """The provider refused the request as conflicting with a concurrent change (HTTP 409)."""

    code = "provider.conflict"
    retryable = True


class RateLimitError(ProviderError):
    code = "provider.rate_limited"
    retryable = True


class QuotaExceededError(ProviderError):
    """Billing quota exhausted: waiting does not help, so not retryable."""

    code = "provider.quota_exceeded"


class ProviderOverloadedError(ProviderError):
    code = "provider.overloaded"
    retryable = True


class ProviderServerError(ProviderError):
    code = "provider.server_error"
    retryable = True


class ProviderConnectionError(ProviderError):
    code = "provider.connection"
    retryable = True


class ProviderTimeoutError(ProviderError):
    code = "provider.timeout"
    retryable = True


class ProviderResponseError(ProviderError):
    """The provider answered with something malformed (bad SSE, bad JSON, truncated stream)."""

    code = "provider.bad_response"


class CapabilityError(ProviderError):
    """No configured provider offers what the run requires."""

    code = "provider.capability_missing"


# -- policy -----------------------------------------------------------------------------------


class PolicyError(AsmError):
    code = "policy.denied"
    category = "policy"


class BudgetExceededError(PolicyError):
    """A budget refused a step: ``details`` say ``what`` limit (``max_cost_usd``), its ``scope``
    (``session:ses_1:2026-07``), the ``limit``, the ``spend`` so far and what the step ``requested``."""

    code = "policy.budget_exceeded"


class ToolDeniedError(PolicyError):
    code = "policy.tool_denied"


# -- runtime ----------------------------------------------------------------------------------


class AsmRuntimeError(AsmError):
    code = "runtime.error"
    category = "runtime"


class QueueFullError(AsmRuntimeError):
    code = "runtime.queue_full"
    retryable = True


class RunCancelledError(AsmRuntimeError):
    code = "runtime.cancelled"


class RunTimeoutError(AsmRuntimeError):
    code = "runtime.timeout"


class RunCrashedError(AsmRuntimeError):
    """A run was left ``running`` by a process that stopped without finishing it."""

    code = "runtime.crashed"


class LimitExceededError(AsmRuntimeError):
    """A process-wide limit (active sessions) is reached."""

    code = "runtime.limit_exceeded"
    retryable = True


# -- tools ------------------------------------------------------------------------------------


class ToolError(AsmError):
    code = "tool.error"
    category = "tool"


class ToolNotFoundError(ToolError):
    code = "tool.not_found"


class ToolExecutionError(ToolError):
    code = "tool.execution_failed"


# -- context ----------------------------------------------------------------------------------


class ContextLengthError(RequestTooLargeError):
    """The provider refused the request because the prompt exceeds the model's context window.

    ``prompt_tokens`` and ``limit_tokens`` (in ``details``) hold the provider's own numbers when
    its message gives them. The kernel answers it once per model call: it compacts the session
    (or, without a summarizer, truncates with the provider's count) and retries the call.
    """

    code = "provider.context_length_exceeded"


class ContextError(AsmError):
    """The context window of a model call could not be prepared or is malformed."""

    code = "context.error"
    category = "context"


class ContextWindowExceededError(ContextError):
    """What must be sent (system prompt, tools, pinned messages, the newest turn) does not fit.

    Raised before anything is sent: the window's token budget (``[context] max_tokens`` or the
    model's context window minus the output reserve) is smaller than the part of the request
    that is never dropped. ``details`` hold ``budget`` and ``required`` (tokens).
    """

    code = "context.window_exceeded"


class InvalidContextError(ContextError):
    """An outgoing request breaks the rules of a conversation (checked before it is sent).

    A tool call without its result or a result without its call, a first message that is not a
    user turn, a block in the wrong role: a stage or an ``asm_before_provider_request`` hook
    made a request the provider would refuse with a 400. ``path`` points into the request.
    """

    code = "context.invalid_request"
class ToolDefinitionError(ToolError):
    """A function cannot be offered as a tool (an annotation JSON cannot express, ``*args``...)."""

    code = "tool.invalid_definition"


class ToolArgumentsError(ToolError):
    """The arguments a model sent do not fit the tool's schema; ``details["problems"]`` lists each,
    with its path. The model gets this as an error result, never the run."""

    code = "tool.invalid_arguments"


class ToolTimeoutError(ToolError):
    """A tool call did not finish within its timeout (the tool's own, else ``tool_calls.timeout``)."""

    code = "tool.timeout"


class ToolSourceError(ToolError):
    """A tool source (an MCP server) could not be reached, listed or called; ``source`` names it."""

    code = "tool.source_unavailable"
    retryable = True


class ApprovalDeniedError(PolicyError):
    """A person (or the approval's timeout) denied what a run needed approval for."""

    code = "policy.approval_denied"


def error_codes() -> dict[str, type[AsmError]]:
    """Every stable code of the kernel mapped to its class (plugins' own subclasses excluded).

    The docs' error table is generated from this.
    """
    found: dict[str, type[AsmError]] = {}
    stack: list[type[AsmError]] = [AsmError]
    while stack:
        cls = stack.pop()
        if cls.__module__ == __name__:
            found.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return dict(sorted(found.items()))
