"""sentinel's own pydantic-ai agents: the narrative (summary, likely cause, what to check
next) and the investigator (a re-ranking of the engine's hypotheses, citing evidence it
read with its tools). Both return validated structured output; a failed check is sent
back to the model as a ``ModelRetry`` until ``llm.retries`` is spent.

What is checked beyond the shape:
- a component named as a cause must be one of the engine's hypotheses (the LLM re-ranks,
  it does not invent causes);
- every piece of evidence the investigator cites must be in the store: the span by its
  trace and span id, the change among the incident's changes, the anomaly among the
  incident's anomalies. Anything else is hallucinated, and the output is refused.

The tools read an ``Evidence`` bundle the caller loaded from the store before the run
(the incident's spans, changes and graph), so a slow model never holds a database
connection, and the validators check citations against the store itself.

What must not live here: when to run, budgets, timeouts and recording
(``agents.explainer``); what the re-ranking may change (``llm.bounds``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

import networkx as nx
from pydantic_ai import Agent, ModelRetry, RunContext
from pydantic_ai.capabilities import Instrumentation
from pydantic_ai.models import Model
from pydantic_ai.models.instrumented import InstrumentationSettings

from sentinel.detection import Anomaly
from sentinel.errors import ConfigError
from sentinel.incidents import Incident
from sentinel.llm.outputs import EvidenceKind, EvidenceRef, Investigation, Narrative
from sentinel.llm.prompts import Prompt
from sentinel.llm.records import basis_of
from sentinel.rca import Hypothesis
from sentinel.rca.graph import build_graph
from sentinel.settings import LlmSettings, PricingSettings, Secrets
from sentinel.sli import SliKey, SliKind, SliSeries
from sentinel.sli.spans import span_slis
from sentinel.telemetry import ChangeEvent, Span, TopologyEdge

__all__ = [
    "Evidence",
    "SpanLookup",
    "anomaly_id",
    "basis_of",
    "build_model",
    "investigator_agent",
    "narrative_agent",
    "render_incident",
]

_Out = TypeVar("_Out", Narrative, Investigation)

# What one tool call returns at most: the model's context is the budget.
MAX_TOOL_LINES = 40
SLI_STEP = timedelta(seconds=60)


class SpanLookup(Protocol):
    """Where a cited span is looked up (``ports.TelemetryStore.span``). Blocking."""

    def span(self, trace_id: str, span_id: str) -> Span | None: ...


@dataclass
class Evidence:
    """One incident's evidence, read from the store before an agent runs."""

    incident: Incident
    anomalies: tuple[Anomaly, ...]
    hypotheses: tuple[Hypothesis, ...]
    spans: tuple[Span, ...]
    changes: tuple[ChangeEvent, ...]
    now: datetime
    store: SpanLookup
    topology: tuple[TopologyEdge, ...] = ()
    pricing: PricingSettings = field(default_factory=PricingSettings)
    # Why outputs were sent back (ModelRetry), newest last: the note of a refused run.
    rejections: list[str] = field(default_factory=list)
    _graph: nx.DiGraph | None = None
    _slis: dict[SliKey, SliSeries] | None = None

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(h.component for h in self.hypotheses))

    def graph(self) -> nx.DiGraph:
        if self._graph is None:
            self._graph = build_graph(self.spans, self.changes, self.anomalies, self.topology)
        return self._graph

    def slis(self) -> dict[SliKey, SliSeries]:
        if self._slis is None:
            start = min((s.start for s in self.spans), default=self.now)
            self._slis = span_slis(self.spans, start, self.now, SLI_STEP, self.pricing)
        return self._slis


def anomaly_id(a: Anomaly) -> str:
    """How an anomaly is cited: "<component>/<sli>" or "<component>/<sli>/<qualifier>"."""
    base = f"{a.component}/{a.sli.value}"
    return f"{base}/{a.qualifier}" if a.qualifier else base


def render_incident(ev: Evidence) -> str:
    """The incident as the agents are told it: anomalies, hypotheses with evidence, and
    the recent changes (plain text; ids as the tools and citations spell them)."""
    i = ev.incident
    lines = [
        f"Incident {i.id}: {i.title}",
        f"Status {i.status.value}, opened {i.opened_at.isoformat()}.",
        "",
        "Anomalies (component/sli: baseline -> observed, onset):",
    ]
    for a in sorted(ev.anomalies, key=lambda a: (a.onset, a.component, a.sli)):
        lines.append(
            f"- anomaly {anomaly_id(a)}: {a.baseline:.4g} -> {a.observed:.4g}, "
            f"onset {a.onset.isoformat()}"
        )
    lines += ["", "Hypotheses of the deterministic engine, best first:"]
    for n, h in enumerate(ev.hypotheses, start=1):
        change = f", change {h.change}" if h.change else ""
        lines.append(f"{n}. {h.component} ({h.fault}{change}), confidence {h.confidence:.2f}")
        lines.extend(f"   - {e}" for e in h.evidence[:6])
    if ev.changes:
        lines += ["", "Changes in the hour before the incident:"]
        for c in ev.changes[-10:]:
            lines.append(f"- change {c.id} at {c.time.isoformat()} to {c.component}: {c.summary}")
    return "\n".join(lines)


def build_model(settings: LlmSettings, secrets: Secrets) -> Model | None:
    """The model config asks for; None when the LLM is off. Nothing is contacted here."""
    if not settings.enabled:
        return None
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    name = settings.model.removeprefix("openai:")
    key = secrets.llm_api_key.get_secret_value() if secrets.llm_api_key else None
    if key is None and not settings.base_url:
        raise ConfigError(
            f"llm.model = {settings.model!r} needs an API key in SENTINEL_LLM_API_KEY "
            "(or set llm.base_url to a server that needs none, such as a local Ollama)"
        )
    # A local server (Ollama, vLLM) takes any key; the client insists on one.
    provider = OpenAIProvider(base_url=settings.base_url or None, api_key=key or "none")
    return OpenAIChatModel(name, provider=provider)


def _agent(
    model: Model,
    prompt: Prompt,
    output_type: type[_Out],
    name: str,
    retries: int,
    instrument: InstrumentationSettings | None,
) -> Agent[Evidence, _Out]:
    return Agent(
        model,
        output_type=output_type,
        instructions=prompt.text,
        deps_type=Evidence,
        name=name,
        retries=retries,
        capabilities=[] if instrument is None else [Instrumentation(settings=instrument)],
    )


# --- the narrative -----------------------------------------------------------------------


def narrative_agent(
    model: Model,
    prompt: Prompt,
    *,
    retries: int,
    instrument: InstrumentationSettings | None = None,
) -> Agent[Evidence, Narrative]:
    agent = _agent(model, prompt, Narrative, "sentinel-narrative", retries, instrument)

    @agent.output_validator
    def _check(ctx: RunContext[Evidence], out: Narrative) -> Narrative:
        known = ctx.deps.components
        if out.cause_component not in known:
            why = f"cause_component {out.cause_component!r} is not a hypothesis"
            ctx.deps.rejections.append(why)
            raise ModelRetry(f"{why}; use one of: {', '.join(known)}")
        return out

    return agent


# --- the investigator --------------------------------------------------------------------


def investigator_agent(
    model: Model,
    prompt: Prompt,
    *,
    retries: int,
    instrument: InstrumentationSettings | None = None,
) -> Agent[Evidence, Investigation]:
    agent = _agent(model, prompt, Investigation, "sentinel-investigator", retries, instrument)

    @agent.tool
    def sli_series(ctx: RunContext[Evidence], component: str, sli: str) -> str:
        """One SLI of one component, per minute over the incident's window, from its
        spans. ``sli``: request_rate, error_rate, latency_p50, latency_p95,
        input_tokens_per_request, output_tokens_per_request, cost_per_request,
        tool_failure_rate, steps_per_run, eval_score."""
        return _sli_lines(ctx.deps, component, sli)

    @agent.tool
    def exemplar_traces(
        ctx: RunContext[Evidence], component: str, errors_only: bool = False
    ) -> str:
        """The component's slowest (or failed) spans since shortly before the onset, each
        with the id to cite as span evidence ("<trace_id>:<span_id>")."""
        return _exemplar_lines(ctx.deps, component, errors_only)

    @agent.tool
    def changes(ctx: RunContext[Evidence]) -> str:
        """Deploys, prompt and config commits in the hour before the incident, each with
        the id to cite as change evidence."""
        found = ctx.deps.changes
        if not found:
            return "no change in the hour before the incident"
        return "\n".join(
            f"change {c.id} at {c.time.isoformat()} to {c.component} ({c.kind.value}"
            f"{', affects ' + ', '.join(c.affects) if c.affects else ''}): {c.summary}"
            for c in found[-MAX_TOOL_LINES:]
        )

    @agent.tool
    def neighbours(ctx: RunContext[Evidence], node: str) -> str:
        """A node's callers and callees in the incident's causal graph, with calls and
        errors per edge, and the changes that touched it."""
        return _neighbour_lines(ctx.deps.graph(), node)

    @agent.output_validator
    async def _check(ctx: RunContext[Evidence], out: Investigation) -> Investigation:
        ev = ctx.deps
        known = ev.components
        problems: list[str] = []
        named = [c.component for c in out.ranking]
        if len(set(named)) < len(named):
            problems.append("each component may be ranked once")
        for cause in out.ranking:
            if cause.component not in known:
                problems.append(f"{cause.component!r} is not a hypothesis")
        missing = [
            f"{r.kind.value} {r.id}"
            for c in out.ranking
            for r in c.evidence
            if not await _exists(ev, r)
        ]
        if missing:
            problems.append(
                "cited evidence is not in the store: "
                + "; ".join(missing)
                + ". Cite only ids the tools returned"
            )
        if problems:
            ev.rejections.append("; ".join(problems))
            raise ModelRetry(
                "; ".join(problems) + f". Re-rank only these hypotheses: {', '.join(known)}"
            )
        return out

    return agent


async def _exists(ev: Evidence, ref: EvidenceRef) -> bool:
    """Whether cited evidence is real: a stored span, an incident change, an anomaly."""
    import asyncio

    if ref.kind is EvidenceKind.SPAN:
        trace, _, span = ref.id.partition(":")
        if not trace or not span:
            return False
        return await asyncio.to_thread(ev.store.span, trace.strip(), span.strip()) is not None
    if ref.kind is EvidenceKind.CHANGE:
        return any(c.id == ref.id for c in ev.changes)
    return any(anomaly_id(a) == ref.id for a in ev.anomalies)


def _sli_lines(ev: Evidence, component: str, sli: str) -> str:
    try:
        kind = SliKind(sli)
    except ValueError:
        return f"unknown sli {sli!r}; one of: {', '.join(k.value for k in SliKind)}"
    series = [s for k, s in ev.slis().items() if k.component == component and k.kind is kind]
    if not series:
        have = sorted({k.kind.value for k in ev.slis() if k.component == component})
        if not have:
            return f"no spans of {component!r} in the incident's window"
        return f"{component} has no {sli} in the window; it has: {', '.join(have)}"
    out: list[str] = []
    for s in series:
        label = f"{component} {sli}" + (f" ({s.key.qualifier})" if s.key.qualifier else "")
        rows = s.rows[-MAX_TOOL_LINES:]
        out.append(f"{label}, per minute (time value observations):")
        out.extend(f"  {t:%H:%M} {v:.4g} {c}" for t, v, c in rows)
    return "\n".join(out)


def _exemplar_lines(ev: Evidence, component: str, errors_only: bool) -> str:
    spans = [s for s in ev.spans if s.component == component and (s.is_error or not errors_only)]
    if not spans:
        return f"no {'failed ' if errors_only else ''}spans of {component!r} in the window"
    spans.sort(key=lambda s: (not s.is_error, -(s.end_ns - s.start_ns)))
    return "\n".join(
        f"span {s.trace_id}:{s.span_id} {s.name} {(s.end_ns - s.start_ns) / 1e6:.0f} ms "
        f"at {s.start:%H:%M:%S}"
        + (f" FAILED {s.error_type}: {s.status_message}"[:200] if s.is_error else "")
        for s in spans[:5]
    )


def _neighbour_lines(graph: nx.DiGraph, node: str) -> str:
    if node not in graph:
        return f"{node!r} is not in the incident's graph"
    lines: list[str] = []
    for caller in sorted(graph.predecessors(node)):
        e: Mapping[str, object] = graph.edges[caller, node]
        if str(caller).startswith("change:"):
            lines.append(f"changed by {caller}")
        else:
            lines.append(
                f"called by {caller} ({e.get('calls', 0)} calls, {e.get('errors', 0)} errors)"
            )
    for callee in sorted(graph.successors(node)):
        e = graph.edges[node, callee]
        lines.append(f"calls {callee} ({e.get('calls', 0)} calls, {e.get('errors', 0)} errors)")
    return "\n".join(lines) or f"{node} has no neighbours in the graph"
