"""``GET /metrics``: Prometheus text exposition of what this server process did and holds.

Counters come from the kernel's lifecycle hooks (a plugin object registered on the kernel):
runs finished by status, tokens and cost by provider and model, provider latency (from the
request hook to the response hook of each model call) as a histogram. Gauges are read from the
runtime when scraped: running runs, queued runs, active session servers, open event streams.
Label values are redacted like everything else (a provider's configured name may be a secret).
No per-session or per-agent label: their number is unbounded.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from asm_kernel import hookimpl
from asm_kernel.secrets import redact_text

if TYPE_CHECKING:
    from .state import ServeState

__all__ = ["Metrics", "render", "LATENCY_BUCKETS"]

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def _label(value: Any) -> str:
    text = redact_text(str(value if value is not None else ""))
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: Any) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


class Metrics:
    """Counters fed by the kernel's hooks; registered on the kernel as ``asm_serve.metrics``."""

    def __init__(self) -> None:
        self.runs_started = 0
        self.runs_finished: dict[str, int] = defaultdict(int)
        self.tokens: dict[tuple[str, str, str], int] = defaultdict(int)
        self.cost: dict[tuple[str, str], float] = defaultdict(float)
        self.latency_counts: dict[tuple[str, str], list[int]] = {}
        self.latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self.http: dict[tuple[str, str, str], int] = defaultdict(int)
        self._calls: dict[str, tuple[float, str, str]] = {}

    # -- kernel hooks -----------------------------------------------------------------------

    @hookimpl
    def asm_run_started(self, run: Any) -> None:
        self.runs_started += 1

    @hookimpl
    def asm_run_finished(self, run: Any, result: Any) -> None:
        self._calls.pop(run.id, None)
        self.runs_finished[str(result.status)] += 1
        provider, model = result.provider or "", result.model or ""
        usage = result.usage
        for kind, count in (("input", usage.input_tokens), ("output", usage.output_tokens)):
            if count:
                self.tokens[(provider, model, kind)] += count
        if result.cost:
            self.cost[(provider, model)] += result.cost

    @hookimpl
    def asm_before_provider_request(self, request: Any, run: Any, provider: str) -> None:
        self._calls[run.id] = (time.monotonic(), provider, request.model)

    @hookimpl
    def asm_after_provider_response(self, run: Any, provider: str) -> None:
        started = self._calls.pop(run.id, None)
        if started is None:
            return
        elapsed = time.monotonic() - started[0]
        key = (provider, started[2])
        counts = self.latency_counts.setdefault(key, [0] * (len(LATENCY_BUCKETS) + 1))
        for i, bound in enumerate(LATENCY_BUCKETS):
            if elapsed <= bound:
                counts[i] += 1
        counts[-1] += 1
        self.latency_sum[key] += elapsed

    # -- HTTP -------------------------------------------------------------------------------

    def request(self, method: str, route: str, status: int) -> None:
        self.http[(method, route, str(status))] += 1


def render(state: ServeState) -> str:
    """The exposition text (format 0.0.4)."""
    m = state.metrics
    runtime = state.kernel.runtime
    servers = runtime.servers()
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    family("asm_runs_started_total", "counter", "Runs this process started.")
    lines.append(f"asm_runs_started_total {m.runs_started}")
    family("asm_runs_finished_total", "counter", "Runs this process finished, by terminal status.")
    for status in ("completed", "failed", "cancelled", "timed_out"):
        lines.append(f"asm_runs_finished_total{_labels(status=status)} {m.runs_finished.get(status, 0)}")
    family("asm_runs_running", "gauge", "Runs executing in this process now.")
    lines.append(f"asm_runs_running {runtime.limiter.running}")
    family("asm_runs_queued", "gauge", "Runs waiting in this process's session queues.")
    lines.append(f"asm_runs_queued {sum(len(s.queued) for s in servers)}")
    family("asm_sessions_active", "gauge", "Sessions with a run queue in this process.")
    lines.append(f"asm_sessions_active {len(servers)}")
    family("asm_tokens_total", "counter", "Tokens of finished runs, by provider, model and kind.")
    for (provider, model, kind), count in sorted(m.tokens.items()):
        lines.append(f"asm_tokens_total{_labels(provider=provider, model=model, kind=kind)} {count}")
    family("asm_cost_usd_total", "counter", "US dollars of finished runs whose price is known.")
    for (provider, model), cost in sorted(m.cost.items()):
        lines.append(f"asm_cost_usd_total{_labels(provider=provider, model=model)} {cost:.10g}")
    family("asm_provider_latency_seconds", "histogram", "Seconds from a model request to its complete response.")
    for (provider, model), counts in sorted(m.latency_counts.items()):
        for bound, count in zip((*LATENCY_BUCKETS, "+Inf"), counts, strict=True):
            le = bound if isinstance(bound, str) else f"{bound:g}"
            lines.append(f"asm_provider_latency_seconds_bucket{_labels(provider=provider, model=model, le=le)} {count}")
        lines.append(f"asm_provider_latency_seconds_sum{_labels(provider=provider, model=model)} "
                     f"{m.latency_sum[(provider, model)]:.6f}")
        lines.append(f"asm_provider_latency_seconds_count{_labels(provider=provider, model=model)} {counts[-1]}")
    hubs = state.hubs
    family("asm_sse_streams", "gauge", "Open event streams.")
    lines.append(f"asm_sse_streams {hubs.streams}")
    family("asm_sse_buffered_events", "gauge", "Events buffered for event streams now (serve.sse_buffer each at most).")
    lines.append(f"asm_sse_buffered_events {hubs.buffered()}")
    family("asm_sse_events_sent_total", "counter", "Events written to event streams.")
    lines.append(f"asm_sse_events_sent_total {hubs.events_sent}")
    family("asm_sse_slow_consumers_total", "counter", "Event streams cut off for reading too slowly.")
    lines.append(f"asm_sse_slow_consumers_total {hubs.slow_consumers}")
    family("asm_http_requests_total", "counter", "HTTP requests answered, by method, route and status.")
    for (method, route, status), count in sorted(m.http.items()):
        lines.append(f"asm_http_requests_total{_labels(method=method, route=route, status=status)} {count}")
    family("asm_serve_uptime_seconds", "gauge", "Seconds since the server started.")
    lines.append(f"asm_serve_uptime_seconds {time.monotonic() - state.started:.3f}")
    return "\n".join(lines) + "\n"
