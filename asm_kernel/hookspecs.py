"""Every ``asm_*`` hook, grouped by family.

Implement a hook with the :data:`asm_kernel.hookimpl` marker in a module you list in the config
(``plugins.modules = ["my_hooks"]``) or ship under the ``asm`` entry-point group. Arguments are
passed by name; an implementation may accept any subset of them (pluggy semantics).

Hooks are dispatched by pluggy (``pm.hook.<name>``); ``ASM_TRACE_HOOKS=1`` logs every call.
Three kinds:

* **register** hooks run once per kernel, each plugin with its own ``register``;
* **lifecycle** hooks (:data:`NOTIFY_HOOKS`) are called *after* the fact they report has been
  persisted; an exception raised by one implementation is reported through ``asm_on_error`` and
  logged, never lost, does not undo what was stored, and does not stop the other plugins'
  implementations;
* **decision** hooks (:data:`ASYNC_HOOKS`) may be ``async def``; they are chained (each sees what
  the previous returned) and what they raise stops the run — that is what they are for.

An ``async def`` implementation of any other hook is refused when the plugin registers (it would
never run). Hook wrappers are refused too: wrap a run stage through ``asm_configure_pipeline``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .cli import CommandRegistry
    from .errors import AsmError
    from .kernel import Kernel
    from .model import (
        ApprovalRequest,
        Event,
        Message,
        ProviderRequest,
        Run,
        RunResult,
        Session,
        SessionStatus,
        Usage,
    )
    from .pipeline import Pipeline
    from .registry import Register

hookspec = pluggy.HookspecMarker("asm")


# -- register family --------------------------------------------------------------------------


@hookspec
def asm_register_stores(register: Register) -> None:
    """Contribute stores: ``register("name", factory, settings=SettingsClass)``.

    ``factory(settings, context)`` returns an object implementing
    :class:`asm_kernel.interfaces.Store`.
    """


@hookspec
def asm_register_providers(register: Register) -> None:
    """Contribute provider adapters (:class:`asm_kernel.interfaces.Provider`)."""


@hookspec
def asm_register_routers(register: Register) -> None:
    """Contribute routers (:class:`asm_kernel.interfaces.Router`)."""


@hookspec
def asm_register_policies(register: Register) -> None:
    """Contribute policies (:class:`asm_kernel.interfaces.Policy`)."""


@hookspec
def asm_register_telemetry(register: Register) -> None:
    """Contribute telemetry sinks (:class:`asm_kernel.interfaces.TelemetrySink`)."""


@hookspec
def asm_register_tools(register: Register) -> None:
    """Contribute tools the model may call (:class:`asm_kernel.interfaces.Tool`)."""


@hookspec
def asm_register_commands(cli: CommandRegistry) -> None:
    """Add subcommands to the ``asm`` CLI: ``cli.add("name", handler, help=..., configure=...)``.

    ``configure(parser)`` adds the command's arguments to its argparse parser; ``handler(args,
    ctx)`` runs it and returns the exit code. See :class:`asm_kernel.cli.CommandRegistry`.
    """


@hookspec(firstresult=True)
def asm_default_store(kernel: Kernel) -> str | None:
    """Name the store a kernel uses when the config has no ``[store]`` table.

    Return the registered name of a store (``"duckdb"``), or None to let another plugin answer.
    The first answer wins (``firstresult``); the kernel's builtin answer, tried last, is
    ``"memory"`` — and the kernel then warns that sessions are kept in memory only.
    """


@hookspec
def asm_configure_pipeline(pipeline: Pipeline, kernel: Kernel) -> None:
    """Add stages to the run pipeline or wrap its stages, once, when the kernel starts.

    ``pipeline.add("name", stage, after="call")`` inserts ``async def stage(state)``;
    ``pipeline.wrap("call", wrapper)`` runs ``async def wrapper(state, proceed)`` around a stage
    (it calls ``await proceed()`` to run the stage, or does not, to skip it). ``state`` is the
    run's :class:`~asm_kernel.pipeline.RunState`: stages record what they do with
    ``await state.emit(type, payload)`` or ``state.defer(type, payload)``. A stage that raises
    fails the run (its terminal unit is still written). Stages: ``prepare``, ``start``,
    ``preflight``, ``turns`` (per turn: ``context``, ``call``, ``tools``), ``settle``; see
    docs/concepts.md. An exception raised here stops the kernel from starting.
    """


# -- lifecycle family -------------------------------------------------------------------------


@hookspec
def asm_kernel_started(kernel: Kernel) -> None:
    """The kernel has built its components and opened the store."""


@hookspec
def asm_kernel_stopping(kernel: Kernel) -> None:
    """The kernel is about to close its components."""


@hookspec
def asm_session_transition(session: Session, old_status: SessionStatus | None, new_status: SessionStatus) -> None:
    """A session was created (``old_status`` is None) or changed status."""


@hookspec
def asm_run_started(session: Session, run: Run) -> None:
    """A run moved to ``running``; its ``run_started`` event is stored."""


@hookspec
def asm_run_finished(session: Session, run: Run, result: RunResult) -> None:
    """A run reached a terminal status (completed, failed, cancelled, timed_out)."""


@hookspec
def asm_run_awaiting_approval(session: Session, run: Run, approvals: tuple[ApprovalRequest, ...]) -> None:
    """A run stopped to wait for a person: ``approvals`` are its open requests (already stored,
    with the run ``awaiting_approval``). Tell someone; decide with ``kernel.approvals``."""


@hookspec
def asm_event_appended(event: Event) -> None:
    """An event was stored and has its ``seq``. Keep it fast: it runs on the run's path."""


@hookspec
def asm_before_provider_request(
    request: ProviderRequest, session: Session, run: Run | None, provider: str
) -> ProviderRequest | None:
    """Inspect or rewrite the request about to be sent (a decision hook: may be ``async def``).

    Return a new :class:`ProviderRequest` (``attrs.evolve(request, ...)``) to replace it, or None
    to leave it. Implementations are chained: each sees the request the previous one returned.
    Raising an :class:`~asm_kernel.errors.AsmError` (a ``PolicyError``, say) fails the attempt.
    The summarizing request of a compaction passes here too (``request.metadata["purpose"]`` is
    ``"compaction"``); ``run`` is None for one made outside a run (``asm compact``). The request
    that comes out is checked (:mod:`asm_kernel.context.validate`) before it is sent.
    """


@hookspec
def asm_route_candidates(candidates: list[str], session: Session, run: Run) -> list[str] | None:
    """Veto or reorder the providers a run will try, after the router ordered them (may be async).

    Return a new list (a subset of ``candidates``, in the order to try) or None to leave it.
    Implementations are chained. Returning an empty list fails the run with a CapabilityError.
    """


@hookspec
def asm_after_provider_response(session: Session, run: Run, provider: str, message: Message, usage: Usage) -> None:
    """A provider returned a complete message (already stored as ``message_received``)."""


@hookspec
def asm_on_error(error: AsmError, session: Session | None, run: Run | None, during: str) -> None:
    """An error happened while ``during``: ``"run"`` (the run failed), ``"tool"`` (a tool raised or
    timed out; the model gets an error result) or ``"hook:<hook name>"`` (another plugin's hook
    raised)."""


#: Hooks whose implementations may be ``async def`` (the kernel awaits them).
ASYNC_HOOKS: frozenset[str] = frozenset({"asm_before_provider_request", "asm_route_candidates"})
#: Lifecycle hooks: every implementation runs, one that raises is reported, not raised.
NOTIFY_HOOKS: frozenset[str] = frozenset(
    {
        "asm_kernel_started",
        "asm_kernel_stopping",
        "asm_session_transition",
        "asm_run_started",
        "asm_run_finished",
        "asm_run_awaiting_approval",
        "asm_event_appended",
        "asm_after_provider_response",
        "asm_on_error",
    }
)


def hook_names() -> list[str]:
    """Names of every hook specification, in definition order."""
    return [name for name, value in globals().items() if name.startswith("asm_") and callable(value)]
