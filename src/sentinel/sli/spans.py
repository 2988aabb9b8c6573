"""SLIs from traces: ``span_slis`` and what only it needs (which spans are requests of
their component, agent runs summed over their subtree, model-call cost, guardrail trips,
exact latency quantiles from durations).

What must not live here: metric samples (``metrics``), the records and the grid
(``records``), and anything that fetches spans or reads the configuration (spans, time
and prices come in as arguments).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter
from typing import NamedTuple

from sentinel.settings import ModelPrice, PricingSettings
from sentinel.sli.records import (
    _AGENT_PREFIX,
    _LATENCY_QUANTILES,
    _MODEL_PREFIX,
    _NS_PER_S,
    _SERVICE_PREFIX,
    _TOOL_PREFIX,
    SliKey,
    SliKind,
    SliSeries,
    _build,
    _Grid,
    _mean,
)
from sentinel.telemetry import (
    MODEL_OPERATIONS,
    GenAIOperation,
    Span,
    SpanKind,
)


def _quantile(xs: Sequence[float], q: float) -> float:
    """The q-quantile by linear interpolation between order statistics (numpy's and R's
    default, "type 7")."""
    s = sorted(xs)
    h = (len(s) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


_GUARDRAIL_EVENTS = frozenset({"gen_ai.guardrail", "guardrail.triggered"})


class _Request(NamedTuple):
    """What the request SLIs need of one span (a tuple: one is made per span)."""

    seconds: float
    error_type: str | None
    guardrail: bool


def _is_request(s: Span) -> bool:
    """Whether a span is a request *of its component*. Agents, models, tools and indexes
    are measured by each of their spans; a service by the requests it serves (SERVER,
    CONSUMER, or root spans), not by its internal steps or outgoing calls, which is what
    its metrics count too."""
    if s.operation is GenAIOperation.CREATE_AGENT:
        return False
    if not s.component.startswith(_SERVICE_PREFIX):
        return True
    return s.kind in (SpanKind.SERVER, SpanKind.CONSUMER) or s.parent_span_id is None


def _tripped_guardrail(s: Span) -> bool:
    if s.error_type is not None and "guardrail" in s.error_type.lower():
        return True
    return bool(s.events) and any(e.name.lower() in _GUARDRAIL_EVENTS for e in s.events)


def _tokens(n: int | None) -> int | None:
    return n if n is not None and n >= 0 else None


def _model_call_cost(s: Span, prices: Mapping[str, ModelPrice]) -> float | None:
    """USD of one model call, or None when its tokens or its model's price are unknown."""
    inp, out = _tokens(s.input_tokens), _tokens(s.output_tokens)
    if (inp is None and out is None) or not s.component.startswith(_MODEL_PREFIX):
        return None
    price = prices.get(s.component[len(_MODEL_PREFIX) :])
    if price is None:
        return None
    return price.cost(inp or 0, out or 0)


class _Trees:
    """Parent/child links of the spans, within each trace."""

    def __init__(self, spans: Sequence[Span]) -> None:
        self.by_id = {(s.trace_id, s.span_id): s for s in spans}
        self.children: dict[tuple[str, str], list[Span]] = defaultdict(list)
        for s in spans:
            if s.parent_span_id is not None:
                self.children[(s.trace_id, s.parent_span_id)].append(s)

    def subtree(self, root: Span) -> list[Span]:
        """The root and all its descendants (cycles in bad data are cut)."""
        seen = {root.span_id}
        stack = [root]
        out: list[Span] = []
        while stack:
            s = stack.pop()
            out.append(s)
            for c in self.children.get((s.trace_id, s.span_id), ()):
                if c.span_id not in seen:
                    seen.add(c.span_id)
                    stack.append(c)
        return out

    def caller(self, s: Span) -> str | None:
        """Whose call a span is: its parent's component (the tool or agent that made it,
        or the service whose request it serves); a root span's own; None when its parent
        is not among the spans (never stored, or not read), rather than a guess that
        would split the caller's series in two. The Metric Agent, re-reading its last
        minutes, adds the stored parents from before its read."""
        if s.parent_span_id is None:
            return s.component
        p = self.by_id.get((s.trace_id, s.parent_span_id))
        return None if p is None else p.component

    def enclosing_agents(self, s: Span) -> set[str]:
        """Components of the agent runs (invoke_agent spans) the span is inside."""
        out: set[str] = set()
        seen = {s.span_id}
        parent = s.parent_span_id
        while parent is not None and parent not in seen:
            seen.add(parent)
            p = self.by_id.get((s.trace_id, parent))
            if p is None:
                break
            if p.operation is GenAIOperation.INVOKE_AGENT and p.component.startswith(_AGENT_PREFIX):
                out.add(p.component)
            parent = p.parent_span_id
        out.discard(s.component)
        return out


@dataclass(frozen=True, slots=True)
class _Run:
    """One agent run, summed over the model and tool calls of its subtree."""

    steps: int
    input_tokens: float | None
    output_tokens: float | None
    cost: float | None
    guardrail: bool


def _run(tree: _Trees, root: Span, prices: Mapping[str, ModelPrice]) -> _Run:
    spans = tree.subtree(root)
    models = [s for s in spans if s.operation in MODEL_OPERATIONS]
    tools = [s for s in spans if s.operation is GenAIOperation.EXECUTE_TOOL]
    inputs = [_tokens(s.input_tokens) for s in models]
    outputs = [_tokens(s.output_tokens) for s in models]

    def total(tokens: list[int | None]) -> float | None:
        # A run without model calls used no tokens; one whose calls report none: unknown.
        known = [n for n in tokens if n is not None]
        return float(sum(known)) if known or not models else None

    priced = [
        s
        for s, inp, out in zip(models, inputs, outputs, strict=True)
        if inp is not None or out is not None
    ]
    costs = [_model_call_cost(s, prices) for s in priced]
    cost: float | None
    if (models and not priced) or any(c is None for c in costs):
        cost = None  # one unpriced call makes the run's cost unknown, not smaller
    else:
        cost = math.fsum(c for c in costs if c is not None)
    return _Run(
        steps=len(models) + len(tools),
        input_tokens=total(inputs),
        output_tokens=total(outputs),
        cost=cost,
        guardrail=any(_tripped_guardrail(s) for s in spans),
    )


def _refusal(tree: _Trees, s: Span) -> str | None:
    """The error type of a failed call that no span of its callee answered (refused by a
    gateway, a rate limiter or the network before it got there), else None. A failure
    the callee answered is the callee's own, counted in its error rate."""
    if s.error_type is None or tree.children.get((s.trace_id, s.span_id)):
        return None
    return s.error_type


def _refused_slis(
    component: str, by_step: Mapping[int, Sequence[str | None]], grid: _Grid
) -> dict[SliKey, SliSeries]:
    """``refused_call_rate`` of a caller: of all its refused calls (qualifier "") and of
    each error type, the share of its calls to instrumented services, at each step it
    made any."""
    out: dict[SliKey, SliSeries] = {}
    busy = {i: calls for i, calls in by_step.items() if calls}
    types = sorted({t for calls in busy.values() for t in calls if t})
    for qualifier in ("", *types):
        values = {
            i: (_mean([t == qualifier if qualifier else t is not None for t in calls]), len(calls))
            for i, calls in busy.items()
        }
        key = SliKey(component, SliKind.REFUSED_CALL_RATE, qualifier)
        series = _build(key, grid, values)
        if series is not None:
            out[key] = series
    return out


def _unique(spans: Iterable[Span]) -> list[Span]:
    """Spans in a canonical order, one per (trace, span id): the result must not depend on
    the order the spans arrived in."""
    # attrgetter: the same key tuples as a lambda's, built in C (one per span).
    ordered = sorted(
        spans, key=attrgetter("trace_id", "span_id", "start_ns", "end_ns", "component", "name")
    )
    out: list[Span] = []
    for s in ordered:
        if not out or (out[-1].trace_id, out[-1].span_id) != (s.trace_id, s.span_id):
            out.append(s)
    return out


_MeanKey = tuple[str, SliKind, str]  # an SliKey's fields, while span_slis accumulates


def span_slis(
    spans: Iterable[Span],
    start: datetime,
    end: datetime,
    step: timedelta,
    pricing: PricingSettings,
) -> dict[SliKey, SliSeries]:
    """The SLIs that traces show, for spans starting in ``[start, end)``.

    Per component: request rate, error rate (and by error type), latency quantiles
    (exact, from durations), guardrail triggers; for model calls, input/output tokens and
    cost per call; for tools, the failure rate; for agents, per run: steps (model + tool
    calls of its subtree), tokens, cost, guardrail triggers; evaluator scores, for the
    span's component and for the agents whose run the span is in. A CLIENT span's peer
    with no spans of its own (an uninstrumented callee) gets request rate, error rates and
    latency as its callers saw them; a caller of instrumented services, the share of its
    calls that failed before reaching them (``refused_call_rate``: no span of the callee
    answered, as with a gateway's 429s in front of it).
    """
    return span_slis_by_step(spans, start, end, (step,), pricing)[0]


class _Buckets:
    """What one grid's SLIs are computed from, while ``span_slis_by_step`` reads spans."""

    def __init__(self, grid: _Grid) -> None:
        self.grid = grid
        self.requests: dict[str, dict[int, list[_Request]]] = defaultdict(lambda: defaultdict(list))
        self.seen_by_callers: dict[str, dict[int, list[_Request]]] = defaultdict(
            lambda: defaultdict(list)
        )
        # A component's calls to instrumented services: None, or the error type of a
        # call refused before it reached the callee.
        self.calls: dict[str, dict[int, list[str | None]]] = defaultdict(lambda: defaultdict(list))
        # Keyed by plain (component, kind, qualifier) tuples, SliKeys only at the end: a
        # dataclass key hashes and compares in Python, for each of a span's values.
        self.means: dict[_MeanKey, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))

    def slis(self) -> dict[SliKey, SliSeries]:
        grid = self.grid
        out: dict[SliKey, SliSeries] = {}
        for component, by_step in self.requests.items():
            out.update(_request_slis(component, by_step, grid, with_guardrails=True))
        for component, by_step in self.seen_by_callers.items():
            out.update(_request_slis(component, by_step, grid, with_guardrails=False))
        for component, calls in self.calls.items():
            out.update(_refused_slis(component, calls, grid))
        for (component, kind, qualifier), values in self.means.items():
            key = SliKey(component, kind, qualifier)
            series = _build(key, grid, {i: (_mean(xs), len(xs)) for i, xs in values.items()})
            if series is not None:
                out[key] = series
        return dict(sorted(out.items()))


def span_slis_by_step(
    spans: Iterable[Span],
    start: datetime,
    end: datetime,
    steps: Sequence[timedelta],
    pricing: PricingSettings,
) -> list[dict[SliKey, SliSeries]]:
    """``span_slis`` on each of ``steps``' grids (all from ``start``), in that order. A
    span's run, cost and scores are worked out once for every grid (the Metric Agent
    reads its spans on three grids each run)."""
    grids = [_Buckets(_Grid.of(start, end, step)) for step in steps]
    if not grids:
        return []
    first = grids[0].grid
    prices = pricing.models
    ordered = _unique(spans)
    tree = _Trees(ordered)
    instrumented = {s.component for s in ordered}

    for s in ordered:
        # The grids share their start and end: a span is on all of them or on none.
        if first.index(s.start_ns) is None:
            continue
        seconds = (s.end_ns - s.start_ns) / _NS_PER_S
        agent_run = s.operation is GenAIOperation.INVOKE_AGENT and s.component.startswith(
            _AGENT_PREFIX
        )
        run = _run(tree, s, prices) if agent_run else None
        request = None
        if _is_request(s):
            guardrail = run.guardrail if run is not None else _tripped_guardrail(s)
            request = _Request(seconds, s.error_type, guardrail)
        # Seen by its caller: an uninstrumented peer's request, as (peer, request); or a
        # call to an instrumented one, as (caller, error type if it never reached it).
        seen = call = None
        if s.kind == SpanKind.CLIENT and s.peer is not None and s.operation is None:
            if s.peer not in instrumented:
                seen = (s.peer, _Request(seconds, s.error_type, guardrail=False))
            elif s.peer != s.component and (caller := tree.caller(s)) is not None:
                call = (caller, _refusal(tree, s))

        values: list[tuple[_MeanKey, float]] = []
        if run is not None:
            values.append(((s.component, SliKind.STEPS_PER_RUN, ""), float(run.steps)))
            _add(values, s.component, SliKind.INPUT_TOKENS_PER_REQUEST, run.input_tokens)
            _add(values, s.component, SliKind.OUTPUT_TOKENS_PER_REQUEST, run.output_tokens)
            _add(values, s.component, SliKind.COST_PER_REQUEST, run.cost)
        elif s.operation in MODEL_OPERATIONS:
            inp, outp = _tokens(s.input_tokens), _tokens(s.output_tokens)
            _add(values, s.component, SliKind.INPUT_TOKENS_PER_REQUEST, inp)
            _add(values, s.component, SliKind.OUTPUT_TOKENS_PER_REQUEST, outp)
            _add(values, s.component, SliKind.COST_PER_REQUEST, _model_call_cost(s, prices))

        if s.evaluations:  # most spans have none: no list built for nothing
            scores = [
                (e.name, e.score)
                for e in s.evaluations
                if e.score is not None and math.isfinite(e.score)
            ]
            if scores:
                targets = [s.component, *sorted(tree.enclosing_agents(s))]
                for name, score in scores:
                    for c in targets:
                        values.append(((c, SliKind.EVAL_SCORE, name), score))

        for b in grids:
            i = (s.start_ns - b.grid.start_ns) // b.grid.step_ns
            if request is not None:
                b.requests[s.component][i].append(request)
            if seen is not None:
                b.seen_by_callers[seen[0]][i].append(seen[1])
            if call is not None:
                b.calls[call[0]][i].append(call[1])
            for k, v in values:
                b.means[k][i].append(v)

    return [b.slis() for b in grids]


def _add(
    values: list[tuple[_MeanKey, float]], component: str, kind: SliKind, value: float | None
) -> None:
    if value is not None:
        values.append(((component, kind, ""), float(value)))


def _request_slis(
    component: str,
    by_step: Mapping[int, Sequence[_Request]],
    grid: _Grid,
    *,
    with_guardrails: bool,
) -> dict[SliKey, SliSeries]:
    out: dict[SliKey, SliSeries] = {}

    def put(kind: SliKind, values: Mapping[int, tuple[float, int]], qualifier: str = "") -> None:
        key = SliKey(component, kind, qualifier)
        series = _build(key, grid, values)
        if series is not None:
            out[key] = series

    # Zero requests in a step is an observation of the rate, so every step has a point.
    put(
        SliKind.REQUEST_RATE,
        {
            i: (len(by_step.get(i, ())) / grid.seconds(i), len(by_step.get(i, ())))
            for i in range(grid.size)
        },
    )
    busy = {i: rs for i, rs in by_step.items() if rs}
    errors = {i: (_mean([r.error_type is not None for r in rs]), len(rs)) for i, rs in busy.items()}
    put(SliKind.ERROR_RATE, errors)
    if component.startswith(_TOOL_PREFIX):
        put(SliKind.TOOL_FAILURE_RATE, errors)
    types = sorted({r.error_type for rs in busy.values() for r in rs if r.error_type is not None})
    for t in types:
        put(
            SliKind.ERROR_RATE_BY_TYPE,
            {i: (_mean([r.error_type == t for r in rs]), len(rs)) for i, rs in busy.items()},
            t,
        )
    for kind, q in _LATENCY_QUANTILES:
        put(kind, {i: (_quantile([r.seconds for r in rs], q), len(rs)) for i, rs in busy.items()})
    if with_guardrails:
        put(
            SliKind.GUARDRAIL_TRIGGERS,
            {i: (_mean([r.guardrail for r in rs]), len(rs)) for i, rs in busy.items()},
        )
    return out
