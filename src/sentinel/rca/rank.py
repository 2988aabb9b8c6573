"""Ranking root-cause hypotheses on the causal graph (``sentinel.rca.graph``), with a
confidence meant to be a calibrated probability.

Every component with anomalies is a candidate; so is the changed component of a change
event near the onset (a prompt or config that no span names, or a model whose new version
shows no symptom of its own stands for what the change affects, and the affected
component keeps no credit for the change, so the change ranks above it; a change to an
agent also reaches the usage it asks of its callees); and so are the indexes and models
under an agent whose answers got worse, and the agents above a component whose usage per
request moved ("silent" suspects: fewer documents retrieved shows in no latency or error,
and longer answers may be asked for by a prompt whose agent shows nothing yet).
Anomalies travel along call edges by their flow: supply (latency, errors) up to callers,
demand (tokens, steps, cost) down to callees, quality (evaluator scores) up, and drops
of traffic down. Saturation (CPU, memory) is a cause like supply, but only more demand
from a caller explains it, never a neighbour's latency or errors. Each candidate is
scored from five signals read off the graph:

- **strength**: its strongest anomaly (``anomaly_weight``);
- **coverage**: the weighted share of all anomalies a fault at it could have produced,
  along those flows (a slow service explains a slow tool and a slow agent);
- **symptom**: the weighted share of its own anomalies that another anomalous component,
  no later, explains (then it is more likely a victim than a cause);
- **precedence**: how long after the incident's first onset its own anomalies began;
- **change**: a change linked to it shortly before its onset, fading with age.

Priors (log-odds per component, from the Learning Agent) are added to the score. The
confidences are a softmax of the scores at a fitted temperature, next to a fitted
"none of these" logit, so they sum to less than one when the evidence is thin.

What must not live here: detection, I/O, the clock, or the LLM (which may explain a
ranking but never changes it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

import networkx as nx
from pydantic import BaseModel, ConfigDict

from sentinel.cases import FaultKind
from sentinel.detection import Anomaly, Detector
from sentinel.rca.graph import EdgeKind, NodeKind
from sentinel.sli import SliKind
from sentinel.telemetry import ChangeEvent

__all__ = [
    "DEFAULT_CALIBRATION",
    "DEFAULT_WEIGHTS",
    "Calibration",
    "Hypothesis",
    "Weights",
    "anomaly_weight",
    "rank",
]

# A change this long before a component's onset still counts, fading with its age.
CHANGE_WINDOW = timedelta(minutes=60)
CHANGE_HALF_LIFE = timedelta(minutes=10)
# A change may be logged a little after the symptoms' first step began.
CHANGE_LATE = timedelta(minutes=2)
# A callee's anomaly this much after the caller's still makes the caller a symptom: onsets
# are estimates, within a step or two of each other.
SYMPTOM_SLACK = timedelta(seconds=60)
# Components kinds that no span names: a change to one stands for what it affects.
_OUTSIDE_CALL_GRAPH = ("prompt:", "config:")


class Hypothesis(BaseModel):
    """One candidate root cause: a component, the fault it suggests, the change it links
    (if any), the evidence a person can check, its score and its confidence."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    component: str
    fault: str
    confidence: float
    change: str | None = None
    evidence: tuple[str, ...] = ()
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class Weights:
    strength: float = 1.0
    coverage: float = 2.0
    symptom: float = 2.5
    precedence_per_minute: float = 0.3
    change: float = 1.5
    silent: float = 0.6  # strength of a suspect without anomalies, from what it explains


@dataclass(frozen=True, slots=True)
class Calibration:
    """Softmax temperature of the scores and the logit of "the cause is none of these"."""

    temperature: float = 1.0
    other: float = 0.0


DEFAULT_WEIGHTS = Weights()
# Fitted by `bench/rca.py --fit-seed 7` (60 simulated cases the scored suite does not hold).
DEFAULT_CALIBRATION = Calibration(temperature=0.4, other=-3.0)


class _Flow(StrEnum):
    """Which way an anomaly travels along a call edge."""

    SUPPLY = "supply"  # latency, errors: from a callee to its callers
    # CPU, memory: a component's own saturation. It slows its callers (a cause, like
    # SUPPLY), but nothing a callee does raises it: a caller waiting on a slow callee
    # does not compute more. Only more demand from its callers does.
    SATURATION = "saturation"
    DEMAND = "demand"  # tokens, cost, steps: asked for by a caller, seen at its callees
    QUALITY = "quality"  # evaluator scores, guardrails: a callee's output spoils the caller's
    TRAFFIC = "traffic"  # a drop of requests: a failing caller calls its callees less


_SATURATION = frozenset({SliKind.CPU_USAGE, SliKind.MEMORY_UTILISATION, SliKind.MEMORY_WORKING_SET})


def _flow(a: Anomaly) -> _Flow:
    if a.sli is SliKind.REQUEST_RATE:
        return _Flow.TRAFFIC
    if a.sli in (
        SliKind.INPUT_TOKENS_PER_REQUEST,
        SliKind.OUTPUT_TOKENS_PER_REQUEST,
        SliKind.COST_PER_REQUEST,
        SliKind.STEPS_PER_RUN,
    ):
        return _Flow.DEMAND
    if a.sli in (SliKind.EVAL_SCORE, SliKind.GUARDRAIL_TRIGGERS):
        return _Flow.QUALITY
    if a.sli in _SATURATION:
        return _Flow.SATURATION
    return _Flow.SUPPLY


@dataclass(frozen=True, slots=True)
class _Candidate:
    component: str
    anomalies: tuple[Anomaly, ...]  # its own, or (a changed component) what it affects
    nodes: tuple[str, ...]  # the call-graph nodes whose behaviour it stands for
    change: ChangeEvent | None
    # No anomaly of its own: suspected only for the anomalies of this flow it can explain.
    silent: _Flow | None = None


@dataclass(frozen=True, slots=True)
class _Calls:
    callers: Mapping[str, set[str]]  # transitively
    callees: Mapping[str, set[str]]
    direct_callers: Mapping[str, set[str]]


def rank(
    graph: nx.DiGraph,
    *,
    priors: Mapping[str, float] | None = None,
    weights: Weights = DEFAULT_WEIGHTS,
    calibration: Calibration = DEFAULT_CALIBRATION,
) -> tuple[Hypothesis, ...]:
    """The hypotheses of ``graph``'s anomalies, best first, components unique."""
    anomalous = {
        n: tuple(d["anomalies"])
        for n, d in graph.nodes(data=True)
        if d.get("kind") is NodeKind.COMPONENT and d["anomalies"]
    }
    if not anomalous:
        return ()
    first = min(a.onset for found in anomalous.values() for a in found)
    changes = [d["change"] for _, d in graph.nodes(data=True) if d.get("kind") is NodeKind.CHANGE]
    calls = _call_reach(graph)
    everything = [a for found in anomalous.values() for a in found]
    total = math.fsum(anomaly_weight(a) for a in everything)
    scored: list[tuple[float, _Candidate, list[str]]] = []
    for cand in _candidates(anomalous, changes, calls):
        score, evidence = _score(cand, anomalous, everything, total, calls, first, weights, graph)
        score += (priors or {}).get(cand.component, 0.0)
        scored.append((score, cand, evidence))
    scored.sort(key=lambda t: (-t[0], t[1].component))
    confidences = softmax_confidences([s for s, _, _ in scored], calibration)
    return tuple(
        Hypothesis(
            component=cand.component,
            fault=_fault(cand),
            confidence=round(conf, 4),
            change=cand.change.id if cand.change else None,
            evidence=tuple(evidence),
            score=round(score, 4),
        )
        for (score, cand, evidence), conf in zip(scored, confidences, strict=True)
    )


def _candidates(
    anomalous: Mapping[str, tuple[Anomaly, ...]], changes: Sequence[ChangeEvent], calls: _Calls
) -> list[_Candidate]:
    onset = {c: min(a.onset for a in found) for c, found in anomalous.items()}
    out: dict[str, _Candidate] = {
        c: _Candidate(c, found, (c,), None) for c, found in anomalous.items()
    }
    # Indexes and models under an agent whose answers got worse can be the cause without
    # an anomaly of their own (fewer documents retrieved shows in no latency or error).
    for c, found in anomalous.items():
        if not any(_flow(a) is _Flow.QUALITY for a in found):
            continue
        for d in sorted(calls.callees.get(c, set())):
            if d not in out and d.startswith(("index:", "model:")):
                out[d] = _Candidate(d, (), (d,), None, silent=_Flow.QUALITY)
    # Usage per request is asked for by the agents above: an agent that shows nothing
    # (yet) may still be why its model's answers got longer. Without it, a lone usage
    # shift would be the only candidate, and one candidate is certain in a softmax.
    for c, found in anomalous.items():
        if not any(_flow(a) is _Flow.DEMAND for a in found):
            continue
        for u in sorted(calls.direct_callers.get(c, set())):
            if u not in out and u.startswith("agent:"):
                out[u] = _Candidate(u, (), (u,), None, silent=_Flow.DEMAND)
    # The latest change before its components' onset wins when several touch one.
    for ch in sorted(changes, key=lambda ch: (ch.time, ch.id)):
        hit = tuple(c for c in dict.fromkeys((ch.component, *ch.affects)) if c in anomalous)
        # A changed agent asks more (or less) of what it calls: demand flows down.
        asked = tuple(
            d
            for c in dict.fromkeys((ch.component, *ch.affects))
            if c.startswith("agent:")
            for d in sorted(calls.callees.get(c, set()))
            if d not in hit and any(_flow(a) is _Flow.DEMAND for a in anomalous.get(d, ()))
        )
        hit = (*hit, *dict.fromkeys(asked))
        if not hit or not any(_recent(ch, onset[c]) for c in hit):
            continue
        if ch.component in anomalous and not ch.component.startswith(_OUTSIDE_CALL_GRAPH):
            if _recent(ch, onset[ch.component]):
                out[ch.component] = replace(out[ch.component], change=ch)
            continue
        # A changed component without symptoms of its own (a prompt, a config, a model
        # whose new version answers worse) stands for what the change affects.
        found = tuple(
            a for c in hit for a in anomalous[c] if c not in asked or _flow(a) is _Flow.DEMAND
        )
        nodes = tuple(
            dict.fromkeys((*((ch.component,) if ch.component in calls.callers else ()), *hit))
        )
        out[ch.component] = _Candidate(ch.component, found, nodes, ch)
    return list(out.values())


def _recent(change: ChangeEvent, onset: datetime) -> bool:
    return onset - CHANGE_WINDOW <= change.time <= onset + CHANGE_LATE


def _call_reach(graph: nx.DiGraph) -> _Calls:
    """Per component, every component that calls it and every one it calls, along call
    edges, transitively."""
    calls = nx.DiGraph()
    calls.add_nodes_from(n for n, k in graph.nodes(data="kind") if k is NodeKind.COMPONENT)
    calls.add_edges_from((a, b) for a, b, k in graph.edges(data="kind") if k is EdgeKind.CALL)
    return _Calls(
        callers={n: nx.ancestors(calls, n) for n in calls.nodes},
        callees={n: nx.descendants(calls, n) for n in calls.nodes},
        direct_callers={n: set(calls.predecessors(n)) for n in calls.nodes},
    )


def anomaly_weight(a: Anomaly) -> float:
    """How much evidence an anomaly is: its score (robust z, or -log10 p) on a log scale,
    so that a p of 1e-300 does not drown everything else."""
    return math.log10(1.0 + min(a.score, 1e6))


def _explains(
    nodes: Sequence[str], a: Anomaly, calls: _Calls, anomalous: Mapping[str, tuple[Anomaly, ...]]
) -> bool:
    """Whether a fault at ``nodes`` could have produced anomaly ``a``."""
    x = a.component
    if x in nodes:
        return True
    above = any(x in calls.callers.get(n, set()) for n in nodes)
    below = any(x in calls.callees.get(n, set()) for n in nodes)
    match _flow(a):
        case _Flow.SUPPLY:
            if above and below:
                return _moved_as_far(nodes, a, anomalous)
            # Below: a callee slowed by the longer requests its caller now sends.
            return above or (below and any(_flow(b) is _Flow.DEMAND for b in anomalous.get(x, ())))
        case _Flow.DEMAND | _Flow.SATURATION:
            return below
        case _Flow.QUALITY:
            return above
        case _Flow.TRAFFIC:
            return below


def _moved_as_far(
    nodes: Sequence[str], a: Anomaly, anomalous: Mapping[str, tuple[Anomaly, ...]]
) -> bool:
    """For components linked both ways (a call cycle, or an inferred topology, whose
    direction is unknown): whether a fault at ``nodes`` explains ``a`` by its effects. A
    source saturates, or moves the same SLI at least as far: a caller's error share is
    its callee's diluted by the requests that never reach it, and a caller's latency
    adds its own work to its callee's, so its ratio is smaller. Nothing to compare with:
    either end may be the source."""
    own = [b for n in nodes for b in anomalous.get(n, ())]
    if any(_flow(b) is _Flow.SATURATION for b in own):
        return True
    same = [b for b in own if b.sli is a.sli]
    return not same or max(_relative_effect(b) for b in same) >= _relative_effect(a)


def _relative_effect(a: Anomaly) -> float:
    """How far an anomaly moved, comparably across components: a share's rise in
    percentage points, a ratio (either way) otherwise."""
    if a.sli.share:
        return a.observed - a.baseline
    lo, hi = sorted((abs(a.baseline), abs(a.observed)))
    return hi / lo if lo > 0 else math.inf


def _score(
    cand: _Candidate,
    anomalous: Mapping[str, tuple[Anomaly, ...]],
    everything: Sequence[Anomaly],
    total: float,
    calls: _Calls,
    first: datetime,
    w: Weights,
    graph: nx.DiGraph,
) -> tuple[float, list[str]]:
    evidence: list[str] = []
    explained = [
        a
        for a in everything
        if _explains(cand.nodes, a, calls, anomalous)
        # A suspect without anomalies of its own is suspected for the flow it was named
        # for only (worse answers, more usage): had it failed or slowed, its own spans
        # would say so.
        and (cand.silent is None or _flow(a) is cand.silent)
    ]
    coverage = math.fsum(anomaly_weight(a) for a in explained) / total if total else 0.0
    own = cand.anomalies if cand.anomalies else tuple(explained)
    onset = min((a.onset for a in own), default=first)
    strength = max((anomaly_weight(a) for a in own), default=0.0)
    if cand.silent is not None:
        strength *= w.silent
    # Its own anomalies another anomalous component explains better: a victim's symptoms.
    others = [c for c in anomalous if c not in cand.nodes]
    explainers = [
        (
            a,
            [
                d
                for d in others
                if _explains((d,), a, calls, anomalous)
                and min(b.onset for b in anomalous[d]) <= a.onset + SYMPTOM_SLACK
                and _can_cause(anomalous[d], a)
            ],
        )
        for a in cand.anomalies
    ]
    covered = [a for a, by in explainers if by]
    own_weight = math.fsum(anomaly_weight(a) for a in cand.anomalies)
    symptom = math.fsum(anomaly_weight(a) for a in covered) / own_weight if own_weight else 0.0
    late = max(0.0, (onset - first).total_seconds() / 60.0)
    change = 0.0
    if cand.change is not None:
        age = max(timedelta(0), onset - cand.change.time)
        change = 0.5 ** (age / CHANGE_HALF_LIFE)
    score = (
        w.strength * strength
        + w.coverage * coverage
        - w.symptom * symptom
        - w.precedence_per_minute * late
        + w.change * change
    )
    for a in sorted(own, key=lambda a: -a.score)[:4]:
        evidence.append(_describe(a))
    if cand.change is not None:
        ch = cand.change
        before = (onset - ch.time).total_seconds()
        when = f"{before:.0f} s before" if before >= 0 else f"{-before:.0f} s after"
        evidence.append(
            f"change {ch.id} to {ch.component} by {ch.author or 'unknown'} at "
            f"{ch.time:%Y-%m-%dT%H:%M:%SZ}, {when} the onset"
            + (f": {ch.summary}" if ch.summary else "")
        )
    others_explained = sorted({a.component for a in explained} - set(cand.nodes))
    if others_explained:
        evidence.append(
            f"explains the anomalies of {len(others_explained)} other component(s): "
            + ", ".join(others_explained[:6])
        )
    if covered:
        sources = sorted({d for _, by in explainers for d in by})
        evidence.append("its symptoms may come from: " + ", ".join(sources[:6]))
    for n in cand.nodes:
        traces = graph.nodes[n].get("exemplars", ()) if n in graph else ()
        if traces:
            evidence.append(f"failing traces of {n}: " + ", ".join(traces))
    return score, evidence


def _can_cause(cause: Sequence[Anomaly], a: Anomaly) -> bool:
    """Whether anomalies ``cause`` of another component are of a kind that produces ``a``
    (a component doing more work per request, or failing, slows its callers)."""
    flows = {_flow(b) for b in cause}
    match _flow(a):
        case _Flow.SUPPLY:
            return bool(flows & {_Flow.SUPPLY, _Flow.DEMAND, _Flow.SATURATION})
        case _Flow.DEMAND | _Flow.SATURATION:
            return _Flow.DEMAND in flows
        case _Flow.QUALITY:
            return bool(flows - {_Flow.TRAFFIC})
        case _Flow.TRAFFIC:
            return True


def _describe(a: Anomaly) -> str:
    what = a.sli.value + (f"[{a.qualifier}]" if a.qualifier else "")
    if a.detector is Detector.EMERGENCE:
        of = (
            "of its calls, refused before reaching the callee"
            if a.sli is SliKind.REFUSED_CALL_RATE
            else "of requests"
        )
        return (
            f"{a.component}: new error type {a.qualifier!r} at {a.observed:.1%} {of} "
            f"from {a.onset:%H:%M:%S}"
        )
    if a.sli.share:
        change = f"{a.baseline:.2%} -> {a.observed:.2%}"
    else:
        change = f"{a.baseline:.4g} -> {a.observed:.4g}"
    return f"{a.component}: {what} {change} from {a.onset:%H:%M:%S} (score {a.score:.1f})"


def _rate_limited(error_type: str) -> bool:
    """An error type that says "rate limited": a RateLimitError, rate_limited, HTTP 429."""
    t = error_type.lower()
    return ("rate" in t and "limit" in t) or t == "429" or "toomanyrequests" in t.replace("_", "")


def _fault(cand: _Candidate) -> str:
    """The fault kind the candidate's component, change and symptoms suggest."""
    c = cand.component
    slis = {a.sli for a in cand.anomalies}
    types = {
        a.qualifier
        for a in cand.anomalies
        if a.sli in (SliKind.ERROR_RATE_BY_TYPE, SliKind.REFUSED_CALL_RATE) and a.qualifier
    }
    errors = bool(
        slis
        & {
            SliKind.ERROR_RATE,
            SliKind.ERROR_RATE_BY_TYPE,
            SliKind.TOOL_FAILURE_RATE,
            SliKind.REFUSED_CALL_RATE,
        }
    )
    latency = bool(slis & {SliKind.LATENCY_P50, SliKind.LATENCY_P95, SliKind.LATENCY_P99})
    kind = c.split(":", 1)[0]
    match kind:
        case "prompt":
            return FaultKind.PROMPT_REGRESSION.value
        case "config":
            return FaultKind.CONFIG_CHANGE.value
        case "index":
            return FaultKind.RETRIEVAL_DEGRADATION.value
        case "model":
            # A model that answers differently (worse, longer, costlier) without failing
            # or slowing was changed, not degraded by its provider.
            if cand.change is not None or (
                not errors and (SliKind.EVAL_SCORE in slis or (slis and not latency))
            ):
                return FaultKind.MODEL_VERSION_CHANGE.value
            return (
                FaultKind.MODEL_PROVIDER_ERRORS
                if errors and not latency
                else FaultKind.MODEL_PROVIDER_LATENCY
            ).value
        case "tool":
            if any(_rate_limited(t) for t in types):
                return FaultKind.TOOL_RATE_LIMIT.value
            if cand.change is not None or any(
                "invalid" in t.lower() or "schema" in t.lower() for t in types
            ):
                return FaultKind.TOOL_SCHEMA_CHANGE.value
            return (FaultKind.TOOL_ERRORS if errors else FaultKind.TOOL_LATENCY).value
        case "agent":
            if slis & {
                SliKind.STEPS_PER_RUN,
                SliKind.COST_PER_REQUEST,
                SliKind.INPUT_TOKENS_PER_REQUEST,
            }:
                return FaultKind.AGENT_LOOP.value
            return FaultKind.PROMPT_REGRESSION.value
        case _:
            if slis & _SATURATION:
                return FaultKind.RESOURCE_EXHAUSTION.value
            if cand.change is not None:
                return FaultKind.CONFIG_CHANGE.value
            return (
                FaultKind.SERVICE_ERRORS if errors and not latency else FaultKind.SERVICE_LATENCY
            ).value


def softmax_confidences(scores: Sequence[float], cal: Calibration) -> list[float]:
    t = max(cal.temperature, 1e-6)
    logits = [s / t for s in scores]
    top = max([*logits, cal.other])
    exps = [math.exp(x - top) for x in logits]
    total = math.fsum(exps) + math.exp(cal.other - top)
    return [e / total for e in exps]


def percent(p: float) -> str:
    """A probability as a whole percentage, never rounding to a false 0 % or 100 %."""
    pct = p * 100
    if 0 < pct < 1:
        return "<1%"
    if 99 < pct < 100:
        return ">99%"
    return f"{pct:.0f}%"
