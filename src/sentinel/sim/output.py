"""Turning one simulation into a ``sentinel.cases.Case``: the metric families of the
example cases (component RED metrics, GenAI histograms and counters, evaluator and cost
gauges, container cpu/memory/restarts) at a 15 s step, the decoded spans, the changes,
the topology edges and the truth.

What lives here: ``simulate_case``, the one entry point from a ``FaultSpec`` to a case.

What must not live here: the request walk (``sim/engine.py``) or fault choice.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sentinel.adapters.otlp import decode_json_object
from sentinel.cases import Case, CaseMeta, CaseTruth
from sentinel.sim.engine import STEP, Leak, Recorder, Simulator, plan_leak
from sentinel.sim.faults import FaultPlan, FaultSpec, ToolStatus, plan_fault
from sentinel.sim.topology import AgentNode, ModelNode, ServiceNode, name_of
from sentinel.telemetry import Sample, Span, series_component

HISTOGRAM_BOUNDS = tuple(round(0.01 * 2**k, 2) for k in range(14))
METRIC_TYPES = {
    "agent_cost_usd_per_hour": "gauge",
    "component_errors": "counter",
    "component_request_duration_seconds": "summary",
    "component_requests": "counter",
    "container_cpu_usage_seconds": "counter",
    "container_memory_working_set_bytes": "gauge",
    "container_spec_memory_limit_bytes": "gauge",
    "gen_ai_client_operation_duration_seconds": "histogram",
    "gen_ai_client_token_usage": "counter",
    "gen_ai_evaluation_score": "gauge",
    "gen_ai_tool_calls": "counter",
    "kube_pod_container_status_restarts": "counter",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def simulate_case(spec: FaultSpec) -> Case:
    """The case ``spec`` describes: a pure function of it (same spec, same case)."""
    rng = random.Random(spec.seed)  # noqa: S311  (simulation, not cryptography)
    plan = plan_fault(spec, rng)
    start_ns = (spec.start - _EPOCH) // timedelta(microseconds=1) * 1000
    sim = Simulator(plan, rng, start_ns)
    sim.run()
    spans = _spans(sim)
    samples = _Metrics(plan, sim.rec, sim.leak, rng).samples()
    families = {s.metric for s in samples}
    types = tuple(
        sorted(
            (f, t)
            for f, t in METRIC_TYPES.items()
            if any(m == f or m.startswith(f + "_") for m in families)
        )
    )
    sys_ = plan.system
    sampled = (
        f"Traces are head-sampled at {sys_.sample_ratio:.0%} (trace-id ratio); metrics (15 s) "
        "are computed from all requests."
        if sys_.sample_ratio
        else "No traces."
    )
    end = spec.start + timedelta(minutes=spec.minutes)
    meta = CaseMeta(
        id=f"sim-{spec.topology.value}-{spec.fault.value}-{spec.seed}",
        description=f"{sys_.title}. {sampled} Window {spec.minutes} min. Simulated.",
        start=spec.start,
        end=end,
    )
    truth = CaseTruth(
        root_cause=plan.root,
        fault=spec.fault.value,
        fault_start=spec.start + timedelta(seconds=plan.fault_start),
        change=plan.change.id if plan.change else None,
        remediation=plan.remediation.value,
    )
    return Case(
        meta=meta,
        truth=truth,
        spans=spans,
        samples=samples,
        changes=plan.changes,
        topology=sys_.edges(),
        metric_types=types,
    )


def _spans(sim: Simulator) -> tuple[Span, ...]:
    """The sampled traces as OTLP/JSON, decoded by the real decoder (so spans carry the
    same normalisation as ingested ones), grouped by resource and scope."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for trace in sim.traces:
        for host, scope, span in trace.spans:
            groups.setdefault((host, scope), []).append(span)
    if not groups:
        return ()
    resource_spans: list[dict[str, Any]] = []
    for host in sorted({h for h, _ in groups}):
        scopes: list[dict[str, Any]] = [
            {"scope": {"name": scope}, "spans": sorted(groups[(h, scope)], key=_start_key)}
            for h, scope in sorted(groups)
            if h == host
        ]
        resource_spans.append(
            {"resource": {"attributes": _resource(sim, host)}, "scopeSpans": scopes}
        )
    batch = decode_json_object({"resourceSpans": resource_spans})
    return tuple(batch.spans)


def _start_key(span: dict[str, Any]) -> tuple[int, str]:
    return int(span["startTimeUnixNano"]), span["spanId"]


def _resource(sim: Simulator, host: str) -> list[dict[str, Any]]:
    node = sim.sys.nodes.get(f"service:{host}")
    language = node.language.value if isinstance(node, ServiceNode) else "python"
    version = node.version if isinstance(node, ServiceNode) else "1.0.0"
    attrs = {
        "service.name": host,
        "service.version": version,
        "service.namespace": sim.sys.namespace,
        "deployment.environment.name": "production",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.language": language,
    }
    return [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]


class _Metrics:
    """The metric families, from the recorder's per-bucket tallies."""

    def __init__(
        self, plan: FaultPlan, rec: Recorder, leak: Leak | None, rng: random.Random
    ) -> None:
        self.plan = plan
        self.rec = rec
        self.leak = leak
        self.rng = rng
        self.buckets = rec.buckets
        start = plan.spec.start
        # Sample k is at the end of bucket k-1; sample 0 is the window's first instant.
        self.times = [start + timedelta(seconds=STEP * k) for k in range(self.buckets + 1)]
        self.out: list[Sample] = []
        # Counters of a process that has been up a while do not start at zero.
        self.uptime = rng.randint(2_000, 20_000)

    def samples(self) -> tuple[Sample, ...]:
        self._components()
        self._models()
        self._agents()
        self._tools()
        self._containers()
        # The order write_openmetrics writes them in, so a written case reads back equal.
        return tuple(sorted(self.out, key=_write_order))

    def _series(self, metric: str, labels: dict[str, str], values: list[float]) -> None:
        key = tuple(sorted(labels.items()))
        component = series_component(labels)
        self.out.extend(
            Sample(metric, key, component, t, float(v))
            for t, v in zip(self.times, values, strict=True)
        )

    def _counter(
        self, metric: str, labels: dict[str, str], incs: list[float], digits: int = 0
    ) -> None:
        mean = sum(incs) / len(incs) if incs else 0.0
        total = mean * self.uptime
        values = [round(total, digits)]
        for x in incs:
            total += x
            values.append(round(total, digits))
        self._series(metric, labels, values)

    def _gauge(self, metric: str, labels: dict[str, str], per_bucket: list[float | None]) -> None:
        first = next((v for v in per_bucket if v is not None), 0.0)
        values = [first]
        last = first
        for v in per_bucket:
            last = v if v is not None else last
            values.append(last)
        self._series(metric, labels, values)

    def _components(self) -> None:
        sys_ = self.plan.system
        for comp, tally in sorted(self.rec.calls.items()):
            node = sys_.nodes.get(comp)
            if isinstance(node, ServiceNode) and node.external:
                continue
            labels = {"component": comp}
            self._counter("component_requests_total", labels, [float(n) for n in tally.n])
            self._counter("component_errors_total", labels, [float(e) for e in tally.errors])
            self._counter(
                "component_request_duration_seconds_count", labels, [float(n) for n in tally.n]
            )
            self._counter(
                "component_request_duration_seconds_sum",
                labels,
                [sum(d) for d in tally.durations],
                digits=3,
            )
            for q in (0.5, 0.95):
                per: list[float | None] = []
                for d in tally.durations:
                    if not d:
                        per.append(None)
                        continue
                    ordered = sorted(d)
                    per.append(round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4))
                self._gauge(
                    "component_request_duration_seconds", {**labels, "quantile": str(q)}, per
                )

    def _models(self) -> None:
        for comp, node in self.plan.system.nodes.items():
            if not isinstance(node, ModelNode) or comp not in self.rec.calls:
                continue
            tally = self.rec.calls[comp]
            labels = {
                "component": comp,
                "gen_ai_operation_name": node.operation.value,
                "gen_ai_provider_name": node.provider,
                "gen_ai_request_model": name_of(comp),
            }
            name = "gen_ai_client_operation_duration_seconds"
            for bound in (*HISTOGRAM_BOUNDS, None):
                le = "+Inf" if bound is None else repr(bound)
                incs = [
                    float(sum(1 for x in d if bound is None or x <= bound)) for d in tally.durations
                ]
                self._counter(f"{name}_bucket", {**labels, "le": le}, incs)
            self._counter(f"{name}_count", labels, [float(n) for n in tally.n])
            self._counter(f"{name}_sum", labels, [sum(d) for d in tally.durations], digits=3)

    def _agents(self) -> None:
        sys_ = self.plan.system
        for (agent, model, kind), row in sorted(self.rec.tokens.items()):
            node = sys_.node(f"model:{model}")
            assert isinstance(node, ModelNode)
            labels = {
                "component": agent,
                "gen_ai_request_model": model,
                "gen_ai_provider_name": node.provider,
                "gen_ai_token_type": kind,
            }
            self._counter("gen_ai_client_token_usage_total", labels, [float(x) for x in row])
        for (agent, name), rows in sorted(self.rec.scores.items()):
            per: list[float | None] = [round(sum(r) / len(r), 4) if r else None for r in rows]
            self._gauge(
                "gen_ai_evaluation_score",
                {"component": agent, "gen_ai_evaluation_name": name},
                per,
            )
        for agent, cost in sorted(self.rec.cost.items()):
            hourly: list[float | None] = [round(c * 3600 / STEP, 4) for c in cost]
            self._gauge("agent_cost_usd_per_hour", {"component": agent}, hourly)

    def _tools(self) -> None:
        tools = sorted({t for t, _ in self.rec.tool_calls})
        for tool in tools:
            for status in ToolStatus:
                row = self.rec.tool_calls.get((tool, status.value), [0] * self.buckets)
                self._counter(
                    "gen_ai_tool_calls_total",
                    {"component": tool, "status": status.value},
                    [float(x) for x in row],
                )

    def _containers(self) -> None:
        rng = self.rng
        sys_ = self.plan.system
        target = name_of(self.plan.target) if self.plan.target.startswith("service:") else ""
        for host in sorted(sys_.hosts()):
            node = sys_.nodes.get(f"service:{host}")
            memory_mb = node.memory_mb if isinstance(node, ServiceNode) else 900
            if any(isinstance(n, AgentNode) and n.host == host for n in sys_.nodes.values()):
                memory_mb = max(memory_mb, 900)
            limit = float(int(memory_mb * 2**20 * rng.uniform(1.8, 2.6)))
            base_fraction = memory_mb * 2**20 / limit
            leak = self.leak if host == target and self.leak is not None else None
            if leak is None:
                leak = plan_leak(self.plan, self.buckets, base_fraction, rng)
                leak.fraction[:] = [
                    base_fraction * rng.uniform(0.98, 1.02) for _ in range(self.buckets)
                ]
            load = self.rec.host_load.get(host, [0] * self.buckets)
            base_cores = rng.uniform(0.05, 0.3)
            per_request = rng.uniform(0.002, 0.02)
            cpu: list[float] = []
            memory: list[float | None] = []
            for b in range(self.buckets):
                pressure = leak.pressure(b)
                grow = max(0.0, leak.fraction[b] - base_fraction) if leak is self.leak else 0.0
                cores = (base_cores + per_request * load[b] / STEP) * (1 + 2 * pressure + grow)
                cpu.append(cores * STEP * rng.uniform(0.95, 1.05))
                memory.append(float(int(leak.fraction[b] * limit)))
            labels = {"namespace": sys_.namespace, "service_name": host}
            self._counter("container_cpu_usage_seconds_total", labels, cpu, digits=3)
            self._gauge("container_memory_working_set_bytes", labels, memory)
            self._gauge("container_spec_memory_limit_bytes", labels, [limit] * self.buckets)
            restarts = (
                [float(r) for r in leak.restarts] if leak is self.leak else [0.0] * self.buckets
            )
            labels_r = dict(labels)
            self._series(
                "kube_pod_container_status_restarts_total",
                labels_r,
                _cumulative(float(rng.randint(0, 2)), restarts),
            )


def _family(metric: str) -> str:
    for suffix in ("_total", "_bucket", "_count", "_sum"):
        base = metric.removesuffix(suffix)
        if base != metric and base in METRIC_TYPES:
            return base
    return metric


def _write_order(s: Sample) -> tuple[str, str, tuple[tuple[str, str], ...], datetime]:
    return (_family(s.metric), s.metric, s.labels, s.time)


def _cumulative(first: float, incs: list[float]) -> list[float]:
    out = [first]
    for x in incs:
        out.append(out[-1] + x)
    return out
