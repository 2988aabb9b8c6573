"""Service level indicators: defined once, here, for detection, root-cause analysis and
verification alike.

An SLI is a time series of one measured quantity of one component (``SliKey``), on a
fixed grid of steps ``[start + i*step, start + (i+1)*step)`` clipped to ``end``. Every
point carries how many observations it rests on (``SliSeries.counts``), so that a
consumer can tell a confident value from a guess.

Two sources, one vocabulary:

- ``span_slis``: from traces. Exact per-request values (durations, tokens, evaluator
  scores, agent steps), but traces are usually sampled, so everything except
  ``request_rate`` is a ratio or a mean, which sampling does not bias.
- ``metric_slis``: from metric samples (the families the simulator and common exporters
  write; see the ``_FAMILY`` constants). Counters become per-second rates with reset and
  gap handling.
- ``merge``: one view, metric series winning where both exist (metrics see every request).

Conventions: latencies in seconds; rates per second; costs in USD per request; an empty
bucket is a gap (no point), never a made-up zero, except that a component with no request
in a step really had a request rate of 0.

What must not live here: baselines, anomaly detection, I/O of any kind (callers pass the
spans, samples and time in), and reading the configuration (prices come in as
``PricingSettings``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import pairwise

from sentinel.settings import ModelPrice, PricingSettings
from sentinel.telemetry import (
    MODEL_OPERATIONS,
    GenAIOperation,
    Sample,
    Span,
    SpanKind,
)

__all__ = [
    "DEFAULT_MAX_GAP",
    "SliKey",
    "SliKind",
    "SliSeries",
    "merge",
    "metric_slis",
    "span_slis",
]


class SliKind(StrEnum):
    REQUEST_RATE = "request_rate"  # requests per second
    ERROR_RATE = "error_rate"  # share of requests that failed, [0, 1]
    ERROR_RATE_BY_TYPE = "error_rate_by_type"  # share failing with one error type
    LATENCY_P50 = "latency_p50"  # seconds
    LATENCY_P95 = "latency_p95"
    LATENCY_P99 = "latency_p99"
    INPUT_TOKENS_PER_REQUEST = "input_tokens_per_request"
    OUTPUT_TOKENS_PER_REQUEST = "output_tokens_per_request"
    COST_PER_REQUEST = "cost_per_request"  # USD
    TOOL_FAILURE_RATE = "tool_failure_rate"  # [0, 1], tool components only
    STEPS_PER_RUN = "steps_per_run"  # model + tool calls per agent run
    EVAL_SCORE = "eval_score"  # mean evaluator score; qualifier = evaluator
    GUARDRAIL_TRIGGERS = "guardrail_triggers"  # share of requests that tripped a guardrail


@dataclass(frozen=True, slots=True, order=True)
class SliKey:
    """One SLI of one component. ``qualifier``: the error type for ``error_rate_by_type``,
    the evaluator's name for ``eval_score``, else empty."""

    component: str
    kind: SliKind
    qualifier: str = ""


@dataclass(frozen=True, slots=True)
class SliSeries:
    """The points of one SLI in time order, each stamped with the start of its step, and
    how many observations (requests, runs, scores, samples) each point rests on."""

    key: SliKey
    points: tuple[tuple[datetime, float], ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.points) != len(self.counts):
            raise ValueError(f"{self.key}: {len(self.points)} points but {len(self.counts)} counts")
        for (t0, _), (t1, _) in pairwise(self.points):
            if t1 <= t0:
                raise ValueError(f"{self.key}: points not in time order at {t1.isoformat()!r}")
        for t, v in self.points:
            if not math.isfinite(v):
                raise ValueError(f"{self.key}: value {v!r} at {t.isoformat()!r} is not finite")
        if any(c < 0 for c in self.counts):
            raise ValueError(f"{self.key}: negative count in {self.counts!r}")


# Beyond this, two samples of a counter are too far apart to say when the increase
# between them happened: the stretch is a gap, not a spread-out rate (Prometheus's
# default lookback delta, for the same reason).
DEFAULT_MAX_GAP = timedelta(minutes=5)

# --- the time grid -------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_S = 1_000_000_000


def _td_ns(d: timedelta) -> int:
    return (d.days * 86_400 + d.seconds) * _NS_PER_S + d.microseconds * 1_000


def _ns(t: datetime) -> int:
    if t.tzinfo is None:
        raise ValueError(f"time {t.isoformat()!r} has no timezone")
    return _td_ns(t - _EPOCH)


@dataclass(frozen=True, slots=True)
class _Grid:
    start: datetime
    step: timedelta
    start_ns: int
    end_ns: int
    step_ns: int
    size: int

    @classmethod
    def of(cls, start: datetime, end: datetime, step: timedelta) -> _Grid:
        start_ns, end_ns, step_ns = _ns(start), _ns(end), _td_ns(step)
        if step_ns <= 0:
            raise ValueError(f"step must be positive, got {step!r}")
        if end_ns <= start_ns:
            raise ValueError(f"end {end.isoformat()!r} is not after start {start.isoformat()!r}")
        size = -(-(end_ns - start_ns) // step_ns)
        return cls(start, step, start_ns, end_ns, step_ns, size)

    def index(self, t_ns: int) -> int | None:
        """The step holding instant ``t_ns`` (steps are closed at their start)."""
        if self.start_ns <= t_ns < self.end_ns:
            return (t_ns - self.start_ns) // self.step_ns
        return None

    def index_closing(self, t_ns: int) -> int | None:
        """The step whose end is at or after ``t_ns`` (steps closed at their end): a
        gauge sample describes the moments just before it."""
        if self.start_ns < t_ns <= self.end_ns:
            return (t_ns - self.start_ns - 1) // self.step_ns
        return None

    def bounds(self, i: int) -> tuple[int, int]:
        lo = self.start_ns + i * self.step_ns
        return lo, min(lo + self.step_ns, self.end_ns)

    def seconds(self, i: int) -> float:
        lo, hi = self.bounds(i)
        return (hi - lo) / _NS_PER_S

    def time(self, i: int) -> datetime:
        return self.start + i * self.step


def _build(key: SliKey, grid: _Grid, values: Mapping[int, tuple[float, int]]) -> SliSeries | None:
    """A series from per-step (value, count), dropping non-finite values; None if empty."""
    steps = sorted(i for i, (v, _) in values.items() if math.isfinite(v))
    if not steps:
        return None
    return SliSeries(
        key=key,
        points=tuple((grid.time(i), values[i][0]) for i in steps),
        counts=tuple(values[i][1] for i in steps),
    )


def _mean(xs: Sequence[float]) -> float:
    # fsum: exactly rounded, so the result does not depend on the order of the input.
    return math.fsum(xs) / len(xs)


def _quantile(xs: Sequence[float], q: float) -> float:
    """The q-quantile by linear interpolation between order statistics (numpy's and R's
    default, "type 7")."""
    s = sorted(xs)
    h = (len(s) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


_LATENCY_QUANTILES = (
    (SliKind.LATENCY_P50, 0.5),
    (SliKind.LATENCY_P95, 0.95),
    (SliKind.LATENCY_P99, 0.99),
)

# --- from spans ------------------------------------------------------------------------

_GUARDRAIL_EVENTS = frozenset({"gen_ai.guardrail", "guardrail.triggered"})
_SERVICE_PREFIX = "service:"
_MODEL_PREFIX = "model:"
_TOOL_PREFIX = "tool:"
_AGENT_PREFIX = "agent:"


@dataclass(frozen=True, slots=True)
class _Request:
    """What the request SLIs need of one span."""

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
    return any(e.name.lower() in _GUARDRAIL_EVENTS for e in s.events)


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
    return ((inp or 0) * price.input_per_million + (out or 0) * price.output_per_million) / 1e6


class _Trees:
    """Parent/child links of the spans, within each trace."""

    def __init__(self, spans: Sequence[Span]) -> None:
        self.by_id = {(s.trace_id, s.span_id): s for s in spans}
        self.children: dict[tuple[str, str], list[Span]] = defaultdict(list)
        for s in spans:
            if s.parent_span_id is not None:
                self.children[(s.trace_id, s.parent_span_id)].append(s)

    def subtree(self, root: Span) -> Iterator[Span]:
        """The root and all its descendants (cycles in bad data are cut)."""
        seen = {root.span_id}
        stack = [root]
        while stack:
            s = stack.pop()
            yield s
            for c in self.children.get((s.trace_id, s.span_id), ()):
                if c.span_id not in seen:
                    seen.add(c.span_id)
                    stack.append(c)

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
    spans = list(tree.subtree(root))
    models = [s for s in spans if s.operation in MODEL_OPERATIONS]
    tools = [s for s in spans if s.operation is GenAIOperation.EXECUTE_TOOL]

    def total(get: Callable[[Span], int | None]) -> float | None:
        # A run without model calls used no tokens; one whose calls report none: unknown.
        known = [n for n in (get(s) for s in models) if n is not None]
        return float(sum(known)) if known or not models else None

    priced = [
        s
        for s in models
        if _tokens(s.input_tokens) is not None or _tokens(s.output_tokens) is not None
    ]
    costs = [_model_call_cost(s, prices) for s in priced]
    cost: float | None
    if (models and not priced) or any(c is None for c in costs):
        cost = None  # one unpriced call makes the run's cost unknown, not smaller
    else:
        cost = math.fsum(c for c in costs if c is not None)
    return _Run(
        steps=len(models) + len(tools),
        input_tokens=total(lambda s: _tokens(s.input_tokens)),
        output_tokens=total(lambda s: _tokens(s.output_tokens)),
        cost=cost,
        guardrail=any(_tripped_guardrail(s) for s in spans),
    )


def _unique(spans: Iterable[Span]) -> list[Span]:
    """Spans in a canonical order, one per (trace, span id): the result must not depend on
    the order the spans arrived in."""
    ordered = sorted(
        spans,
        key=lambda s: (s.trace_id, s.span_id, s.start_ns, s.end_ns, s.component, s.name),
    )
    out: list[Span] = []
    for s in ordered:
        if not out or (out[-1].trace_id, out[-1].span_id) != (s.trace_id, s.span_id):
            out.append(s)
    return out


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
    latency as its callers saw them.
    """
    grid = _Grid.of(start, end, step)
    prices = pricing.models
    ordered = _unique(spans)
    tree = _Trees(ordered)
    instrumented = {s.component for s in ordered}

    requests: dict[str, dict[int, list[_Request]]] = defaultdict(lambda: defaultdict(list))
    seen_by_callers: dict[str, dict[int, list[_Request]]] = defaultdict(lambda: defaultdict(list))
    means: dict[SliKey, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))

    for s in ordered:
        i = grid.index(s.start_ns)
        if i is None:
            continue
        seconds = (s.end_ns - s.start_ns) / _NS_PER_S
        agent_run = s.operation is GenAIOperation.INVOKE_AGENT and s.component.startswith(
            _AGENT_PREFIX
        )
        run = _run(tree, s, prices) if agent_run else None
        if _is_request(s):
            guardrail = run.guardrail if run is not None else _tripped_guardrail(s)
            requests[s.component][i].append(_Request(seconds, s.error_type, guardrail))
        if s.kind == SpanKind.CLIENT and s.peer is not None and s.peer not in instrumented:
            seen_by_callers[s.peer][i].append(_Request(seconds, s.error_type, guardrail=False))

        if run is not None:
            means[SliKey(s.component, SliKind.STEPS_PER_RUN)][i].append(float(run.steps))
            _add(means, s.component, SliKind.INPUT_TOKENS_PER_REQUEST, i, run.input_tokens)
            _add(means, s.component, SliKind.OUTPUT_TOKENS_PER_REQUEST, i, run.output_tokens)
            _add(means, s.component, SliKind.COST_PER_REQUEST, i, run.cost)
        elif s.operation in MODEL_OPERATIONS:
            inp, outp = _tokens(s.input_tokens), _tokens(s.output_tokens)
            _add(means, s.component, SliKind.INPUT_TOKENS_PER_REQUEST, i, inp)
            _add(means, s.component, SliKind.OUTPUT_TOKENS_PER_REQUEST, i, outp)
            _add(means, s.component, SliKind.COST_PER_REQUEST, i, _model_call_cost(s, prices))

        scores = [
            (e.name, e.score)
            for e in s.evaluations
            if e.score is not None and math.isfinite(e.score)
        ]
        if scores:
            targets = [s.component, *sorted(tree.enclosing_agents(s))]
            for name, score in scores:
                for c in targets:
                    means[SliKey(c, SliKind.EVAL_SCORE, name)][i].append(score)

    out: dict[SliKey, SliSeries] = {}
    for component, by_step in requests.items():
        out.update(_request_slis(component, by_step, grid, with_guardrails=True))
    for component, by_step in seen_by_callers.items():
        out.update(_request_slis(component, by_step, grid, with_guardrails=False))
    for key, values in means.items():
        series = _build(key, grid, {i: (_mean(xs), len(xs)) for i, xs in values.items()})
        if series is not None:
            out[key] = series
    return dict(sorted(out.items()))


def _add(
    means: dict[SliKey, dict[int, list[float]]],
    component: str,
    kind: SliKind,
    i: int,
    value: float | None,
) -> None:
    if value is not None:
        means[SliKey(component, kind)][i].append(float(value))


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


# --- from metrics ----------------------------------------------------------------------

REQUESTS_FAMILY = "component_requests_total"
ERRORS_FAMILY = "component_errors_total"
SUMMARY_FAMILY = "component_request_duration_seconds"
SUMMARY_COUNT_FAMILY = "component_request_duration_seconds_count"
HISTOGRAM_BUCKET_FAMILY = "gen_ai_client_operation_duration_seconds_bucket"
TOKENS_FAMILY = "gen_ai_client_token_usage_total"
TOOL_CALLS_FAMILY = "gen_ai_tool_calls_total"
EVAL_FAMILY = "gen_ai_evaluation_score"
COST_FAMILY = "agent_cost_usd_per_hour"

_FAMILIES = frozenset(
    {
        REQUESTS_FAMILY,
        ERRORS_FAMILY,
        SUMMARY_FAMILY,
        SUMMARY_COUNT_FAMILY,
        HISTOGRAM_BUCKET_FAMILY,
        TOKENS_FAMILY,
        TOOL_CALLS_FAMILY,
        EVAL_FAMILY,
        COST_FAMILY,
    }
)

# Label names (Prometheus spellings of the OpenTelemetry attributes).
_QUANTILE_LABEL = "quantile"
_LE_LABEL = "le"
_ERROR_TYPE_LABEL = "error_type"
_TOKEN_TYPE_LABELS = ("gen_ai_token_type", "token_type")
_MODEL_LABELS = ("gen_ai_request_model", "gen_ai_response_model")
_EVALUATOR_LABELS = ("gen_ai_evaluation_name", "evaluator")
_TOOL_STATUS_LABEL = "status"
_TOOL_OK = frozenset({"ok", "success"})
_TOKEN_KINDS = {
    "input": SliKind.INPUT_TOKENS_PER_REQUEST,
    "prompt": SliKind.INPUT_TOKENS_PER_REQUEST,
    "output": SliKind.OUTPUT_TOKENS_PER_REQUEST,
    "completion": SliKind.OUTPUT_TOKENS_PER_REQUEST,
}

_Labels = tuple[tuple[str, str], ...]
_Target = tuple[str, str]  # (component, qualifier)
_Points = list[tuple[int, float]]


@dataclass(frozen=True, slots=True)
class _MetricSeries:
    metric: str
    labels: Mapping[str, str]
    component: str
    points: _Points  # (ns, value), time order, one per instant

    def label(self, *names: str) -> str | None:
        for n in names:
            v = self.labels.get(n)
            if v:
                return v
        return None


def _group_samples(samples: Iterable[Sample]) -> list[_MetricSeries]:
    raw: dict[tuple[str, _Labels, str], list[tuple[int, float]]] = defaultdict(list)
    for s in samples:
        if s.metric in _FAMILIES and s.component is not None and not math.isnan(s.value):
            raw[(s.metric, s.labels, s.component)].append((_ns(s.time), s.value))
    out = []
    for (metric, labels, component), points in sorted(raw.items()):
        points.sort()
        # Two samples at one instant: keep the larger (deterministic whatever the order).
        unique = [
            p for j, p in enumerate(points) if j + 1 == len(points) or points[j + 1][0] != p[0]
        ]
        out.append(_MetricSeries(metric, dict(labels), component, unique))
    return out


@dataclass(slots=True)
class _Rate:
    """A counter's increase in one step and how much of the step the samples cover."""

    increase: float = 0.0
    covered_ns: int = 0


def _counter_steps(points: _Points, grid: _Grid, max_gap_ns: int) -> list[_Rate]:
    """Per step, the increase of a counter and the time its samples cover.

    The increase between two consecutive samples is spread evenly over the time between
    them, so a missing sample gives no spike; a drop is a reset (the counter restarted
    from 0, so its new value is the increase); samples further apart than ``max_gap_ns``
    leave the time between them uncovered (a gap).
    """
    steps = [_Rate() for _ in range(grid.size)]
    for (t0, v0), (t1, v1) in pairwise(points):
        dt = t1 - t0
        if dt <= 0 or dt > max_gap_ns:
            continue
        increase = max(v1 - v0 if v1 >= v0 else v1, 0.0)
        lo, hi = max(t0, grid.start_ns), min(t1, grid.end_ns)
        if hi <= lo:
            continue
        first = (lo - grid.start_ns) // grid.step_ns
        last = (hi - 1 - grid.start_ns) // grid.step_ns
        for i in range(first, last + 1):
            b_lo, b_hi = grid.bounds(i)
            overlap = min(hi, b_hi) - max(lo, b_lo)
            if overlap > 0:
                steps[i].increase += increase * overlap / dt
                steps[i].covered_ns += overlap
    return steps


@dataclass(slots=True)
class _Sum:
    """Per-second rates of several counter series added up, step by step."""

    rate: list[float | None]
    increase: list[float]

    @classmethod
    def empty(cls, size: int) -> _Sum:
        return cls([None] * size, [0.0] * size)

    def add(self, steps: Sequence[_Rate]) -> None:
        for i, r in enumerate(steps):
            if r.covered_ns > 0:
                self.rate[i] = (self.rate[i] or 0.0) + r.increase * _NS_PER_S / r.covered_ns
                self.increase[i] += r.increase

    def merge(self, other: _Sum) -> None:
        for i, r in enumerate(other.rate):
            if r is not None:
                self.rate[i] = (self.rate[i] or 0.0) + r
                self.increase[i] += other.increase[i]

    def count(self, i: int) -> int:
        return round(self.increase[i])


def _histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus's histogram_quantile over (upper bound, cumulative count) pairs: linear
    interpolation inside the bucket holding the rank, the lower bound of the first bucket
    taken as 0, and the highest finite bound when the rank falls in the +Inf bucket."""
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return None
    cumulative: list[tuple[float, float]] = []
    running = 0.0
    for le, c in ordered:
        running = max(running, c)  # Prometheus mends non-monotonic buckets the same way
        cumulative.append((le, running))
    total = cumulative[-1][1]
    if total <= 0:
        return None
    rank = q * total
    for j, (le, c) in enumerate(cumulative):
        if c >= rank:
            if math.isinf(le):
                return cumulative[j - 1][0]
            lower, below = (0.0, 0.0) if j == 0 else cumulative[j - 1]
            if j == 0 and le <= 0:
                return le
            inside = c - below
            return le if inside <= 0 else lower + (le - lower) * (rank - below) / inside
    return None  # unreachable: the +Inf bucket holds the total


def metric_slis(
    samples: Iterable[Sample],
    start: datetime,
    end: datetime,
    step: timedelta,
    *,
    max_gap: timedelta = DEFAULT_MAX_GAP,
) -> dict[SliKey, SliSeries]:
    """The SLIs that metric samples show, per component (``Sample.component``).

    Counters (requests, errors, tokens, tool calls, histogram buckets) become per-second
    rates per step (see ``_counter_steps``); ratios divide rates of the same step and have
    no point where the denominator is 0. Gauges (summary quantiles, evaluator scores, cost
    per hour) are averaged over the samples of a step, a sample counting for the step
    that ends at or after it. Latency p50/p95 come from the summary's quantiles, p99 from
    the histogram's buckets unless the summary has it; tokens per request of an agent from
    its token counter, and of a model from the token counters naming it; cost per request
    from the agent's spend per hour. Counts are requests per step, or for gauges without
    a request counter the number of samples.
    """
    grid = _Grid.of(start, end, step)
    max_gap_ns = _td_ns(max_gap)
    series = _group_samples(samples)

    def counters(select: Callable[[_MetricSeries], _Target | None]) -> dict[_Target, _Sum]:
        """Counter series added up by the (component, qualifier) ``select`` gives them."""
        sums: dict[_Target, _Sum] = {}
        for ms in series:
            target = select(ms)
            if target is not None:
                steps = _counter_steps(ms.points, grid, max_gap_ns)
                sums.setdefault(target, _Sum.empty(grid.size)).add(steps)
        return sums

    def family(metric: str) -> dict[str, _Sum]:
        sums = counters(lambda ms: (ms.component, "") if ms.metric == metric else None)
        return {c: s for (c, _), s in sums.items()}

    out: dict[SliKey, SliSeries] = {}

    def put(key: SliKey, values: Mapping[int, tuple[float, int]]) -> None:
        s = _build(key, grid, values)
        if s is not None:
            out[key] = s

    def ratio(num: _Sum, den: _Sum, *, share: bool = False) -> dict[int, tuple[float, int]]:
        """num / den per step where den > 0; a share is capped at 1 (two counters scraped
        a moment apart can disagree by a request). Counts: den's increase."""
        values: dict[int, tuple[float, int]] = {}
        for i in range(grid.size):
            n, d = num.rate[i], den.rate[i]
            if n is not None and d is not None and d > 0:
                values[i] = (min(n / d, 1.0) if share else n / d, den.count(i))
        return values

    # Request and error rates, errors by type when the counter has the label.
    requests = family(REQUESTS_FAMILY)
    errors = family(ERRORS_FAMILY)
    for c, req in requests.items():
        put(
            SliKey(c, SliKind.REQUEST_RATE),
            {i: (r, req.count(i)) for i, r in enumerate(req.rate) if r is not None},
        )
        if c in errors:
            put(SliKey(c, SliKind.ERROR_RATE), ratio(errors[c], req, share=True))
            if c.startswith(_TOOL_PREFIX):
                put(SliKey(c, SliKind.TOOL_FAILURE_RATE), ratio(errors[c], req, share=True))
    errors_by_type = counters(
        lambda ms: (
            (ms.component, t)
            if ms.metric == ERRORS_FAMILY and (t := ms.label(_ERROR_TYPE_LABEL))
            else None
        )
    )
    for (c, t), err in errors_by_type.items():
        if c in requests:
            put(SliKey(c, SliKind.ERROR_RATE_BY_TYPE, t), ratio(err, requests[c], share=True))

    # Tool calls by outcome: the share of each failure status, and the failure rate when
    # the component counters do not give it.
    def failed_call(ms: _MetricSeries) -> str | None:
        status = ms.label(_TOOL_STATUS_LABEL)
        if ms.metric != TOOL_CALLS_FAMILY or status is None or status.lower() in _TOOL_OK:
            return None
        return status

    calls = family(TOOL_CALLS_FAMILY)
    by_status = counters(lambda ms: (ms.component, st) if (st := failed_call(ms)) else None)
    for (c, status), failed in by_status.items():
        put(SliKey(c, SliKind.ERROR_RATE_BY_TYPE, status), ratio(failed, calls[c], share=True))
    failures = counters(lambda ms: (ms.component, "") if failed_call(ms) else None)
    for c, all_calls in calls.items():
        key = SliKey(c, SliKind.TOOL_FAILURE_RATE)
        if key not in out:
            # No failure status at all: every call succeeded, a real 0.
            failed = failures.get((c, ""), _zero_like(all_calls))
            put(key, ratio(failed, all_calls, share=True))

    # Latency: summary quantiles, then histogram quantiles where the summary has none.
    summary_counts = family(SUMMARY_COUNT_FAMILY)
    quantiles = _gauge_steps(series, grid, SUMMARY_FAMILY, lambda ms: ms.label(_QUANTILE_LABEL))
    for (c, q_label), by_step in quantiles.items():
        kind = _summary_kind(q_label)
        if kind is None:
            continue
        cnt = summary_counts.get(c)
        put(
            SliKey(c, kind),
            {
                i: (_mean(xs), cnt.count(i) if cnt and cnt.rate[i] is not None else len(xs))
                for i, xs in by_step.items()
            },
        )
    for c, by_kind in _histogram_latency(series, grid, max_gap_ns).items():
        for kind, per_step in by_kind.items():
            if SliKey(c, kind) not in out:
                put(SliKey(c, kind), per_step)

    # Tokens per request: an agent's (its component label) and a model's (the model label;
    # a model's requests are its calls, whichever agent made them).
    def token_kind(ms: _MetricSeries) -> SliKind | None:
        if ms.metric != TOKENS_FAMILY:
            return None
        return _TOKEN_KINDS.get((ms.label(*_TOKEN_TYPE_LABELS) or "").lower())

    def by_component(ms: _MetricSeries) -> _Target | None:
        kind = token_kind(ms)
        return None if kind is None else (ms.component, kind.value)

    def by_model(ms: _MetricSeries) -> _Target | None:
        kind, model = token_kind(ms), ms.label(*_MODEL_LABELS)
        if kind is None or model is None or ms.component == _MODEL_PREFIX + model:
            return None  # a series of the model itself is counted by_component already
        return (_MODEL_PREFIX + model, kind.value)

    tokens = counters(by_component)
    for target, s in counters(by_model).items():
        tokens.setdefault(target, _Sum.empty(grid.size)).merge(s)
    for (c, kind_value), s in tokens.items():
        if c in requests:
            put(SliKey(c, SliKind(kind_value)), ratio(s, requests[c]))

    # Evaluator scores (a gauge per evaluator) and cost per request (spend per hour).
    evaluator = _gauge_steps(
        series, grid, EVAL_FAMILY, lambda ms: ms.label(*_EVALUATOR_LABELS) or ""
    )
    for (c, name), by_step in evaluator.items():
        put(
            SliKey(c, SliKind.EVAL_SCORE, name),
            {i: (_mean(xs), len(xs)) for i, xs in by_step.items()},
        )
    for (c, _), by_step in _gauge_steps(series, grid, COST_FAMILY, lambda ms: "").items():
        den = requests.get(c)
        if den is None:
            continue
        values: dict[int, tuple[float, int]] = {}
        for i, xs in by_step.items():
            r = den.rate[i]
            if r is not None and r > 0:
                values[i] = (_mean(xs) / 3600.0 / r, den.count(i))
        put(SliKey(c, SliKind.COST_PER_REQUEST), values)
    return dict(sorted(out.items()))


def _zero_like(s: _Sum) -> _Sum:
    return _Sum([0.0 if r is not None else None for r in s.rate], [0.0] * len(s.rate))


def _summary_kind(q_label: str | None) -> SliKind | None:
    try:
        q = float(q_label) if q_label is not None else math.nan
    except ValueError:
        return None
    return next((kind for kind, want in _LATENCY_QUANTILES if q == want), None)


def _gauge_steps(
    series: Sequence[_MetricSeries],
    grid: _Grid,
    metric: str,
    qualifier: Callable[[_MetricSeries], str | None],
) -> dict[tuple[str, str], dict[int, list[float]]]:
    """Gauge values per (component, qualifier) and step."""
    out: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for ms in series:
        if ms.metric != metric:
            continue
        q = qualifier(ms)
        if q is None:
            continue
        for t, v in ms.points:
            i = grid.index_closing(t)
            if i is not None and math.isfinite(v):
                out[(ms.component, q)][i].append(v)
    return out


def _histogram_latency(
    series: Sequence[_MetricSeries], grid: _Grid, max_gap_ns: int
) -> dict[str, dict[SliKind, dict[int, tuple[float, int]]]]:
    """Latency quantiles per component and step from histogram bucket counters."""
    per_le: dict[str, dict[float, _Sum]] = defaultdict(dict)
    for ms in series:
        if ms.metric != HISTOGRAM_BUCKET_FAMILY:
            continue
        try:
            le = float(ms.labels.get(_LE_LABEL, ""))
        except ValueError:
            continue
        steps = _counter_steps(ms.points, grid, max_gap_ns)
        per_le[ms.component].setdefault(le, _Sum.empty(grid.size)).add(steps)
    out: dict[str, dict[SliKind, dict[int, tuple[float, int]]]] = {}
    for c, by_le in per_le.items():
        values: dict[SliKind, dict[int, tuple[float, int]]] = defaultdict(dict)
        for i in range(grid.size):
            buckets = [(le, s.increase[i]) for le, s in by_le.items() if s.rate[i] is not None]
            for kind, q in _LATENCY_QUANTILES:
                v = _histogram_quantile(q, buckets)
                if v is not None:
                    values[kind][i] = (v, round(max(n for _, n in buckets)))
        out[c] = values
    return out


# --- one view --------------------------------------------------------------------------


def merge(
    span_based: Mapping[SliKey, SliSeries], metric_based: Mapping[SliKey, SliSeries]
) -> dict[SliKey, SliSeries]:
    """One view of both sources: where both have an SLI, the metric series (metrics count
    every request; traces are usually sampled); SLIs only traces show are kept.

    Error types are one family per component: when metrics break a component's errors
    down by type, the trace breakdown of that component (whose type names differ, e.g.
    ``RateLimitError`` against ``rate_limited``) is dropped rather than mixed in.
    """
    typed_by_metrics = {k.component for k in metric_based if k.kind is SliKind.ERROR_RATE_BY_TYPE}
    out = {
        k: s
        for k, s in span_based.items()
        if not (k.kind is SliKind.ERROR_RATE_BY_TYPE and k.component in typed_by_metrics)
    }
    out.update(metric_based)
    return dict(sorted(out.items()))
