"""Every ``asm_*`` hook, grouped by family.

Implement a hook with the :data:`asm_kernel.hookimpl` marker in a module you list in the config
(``plugins.modules = ["my_hooks"]``) or ship under the ``asm`` entry-point group. Arguments are
passed by name; an implementation may accept any subset of them (pluggy semantics).

Lifecycle hooks are called *after* the fact they report has been persisted; an exception raised
by a lifecycle hook is reported through ``asm_on_error`` and logged, never lost, and does not
undo what was stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .cli import CommandRegistry
    from .errors import AsmError
    from .kernel import Kernel
    from .model import Event, Message, ProviderRequest, Run, RunResult, Session, SessionStatus, Usage
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
def asm_event_appended(event: Event) -> None:
    """An event was stored and has its ``seq``. Keep it fast: it runs on the run's path."""


@hookspec
def asm_before_provider_request(
    request: ProviderRequest, session: Session, run: Run, provider: str
) -> ProviderRequest | None:
    """Inspect or rewrite the request about to be sent.

    Return a new :class:`ProviderRequest` (``attrs.evolve(request, ...)``) to replace it, or None
    to leave it. Implementations are chained: each sees the request the previous one returned.
    """


@hookspec
def asm_route_candidates(candidates: list[str], session: Session, run: Run) -> list[str] | None:
    """Veto or reorder the providers a run will try, after the router ordered them.

    Return a new list (a subset of ``candidates``, in the order to try) or None to leave it.
    Implementations are chained. Returning an empty list fails the run with a CapabilityError.
    """


@hookspec
def asm_after_provider_response(session: Session, run: Run, provider: str, message: Message, usage: Usage) -> None:
    """A provider returned a complete message (already stored as ``message_received``)."""


@hookspec
def asm_on_error(error: AsmError, session: Session | None, run: Run | None, during: str) -> None:
    """An error happened while ``during``: ``"run"`` (the run failed), ``"tool"`` (a tool raised;
    the model gets an error result) or ``"hook:<hook name>"`` (another plugin's hook raised)."""


def hook_names() -> list[str]:
    """Names of every hook specification, in definition order."""
    return [name for name, value in globals().items() if name.startswith("asm_") and callable(value)]
