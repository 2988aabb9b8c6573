"""SLIs from metric samples: ``metric_slis``, the metric families and labels it reads
(the ``_FAMILY`` constants), and what only it needs (counters to per-second rates with
reset and gap handling, gauges per step, histogram quantiles).

What must not live here: spans (``spans``), the records and the grid (``records``), and
anything that queries a metric store (samples and time come in as arguments).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from sentinel.sli.records import (
    _LATENCY_QUANTILES,
    _MODEL_PREFIX,
    _NS_PER_S,
    _TOOL_PREFIX,
    SliKey,
    SliKind,
    SliSeries,
    _build,
    _Grid,
    _mean,
    _ns,
    _td_ns,
)
from sentinel.telemetry import Sample

# Beyond this, two samples of a counter are too far apart to say when the increase
# between them happened: the stretch is a gap, not a spread-out rate (Prometheus's
# default lookback delta, for the same reason).
DEFAULT_MAX_GAP = timedelta(minutes=5)

REQUESTS_FAMILY = "component_requests_total"
ERRORS_FAMILY = "component_errors_total"
SUMMARY_FAMILY = "component_request_duration_seconds"
SUMMARY_COUNT_FAMILY = "component_request_duration_seconds_count"
HISTOGRAM_BUCKET_FAMILY = "gen_ai_client_operation_duration_seconds_bucket"
TOKENS_FAMILY = "gen_ai_client_token_usage_total"
TOOL_CALLS_FAMILY = "gen_ai_tool_calls_total"
EVAL_FAMILY = "gen_ai_evaluation_score"
COST_FAMILY = "agent_cost_usd_per_hour"
MEMORY_FAMILY = "container_memory_working_set_bytes"
CPU_FAMILY = "container_cpu_usage_seconds_total"
MEMORY_LIMIT_FAMILY = "container_spec_memory_limit_bytes"

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
        MEMORY_FAMILY,
        MEMORY_LIMIT_FAMILY,
        CPU_FAMILY,
    }
)

# Label names (Prometheus spellings of the OpenTelemetry attributes).
_QUANTILE_LABEL = "quantile"
_LE_LABEL = "le"
_ERROR_TYPE_LABEL = "error_type"
_TOKEN_TYPE_LABELS = ("gen_ai_token_type", "token_type")
MODEL_LABELS = ("gen_ai_request_model", "gen_ai_response_model")
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
    quantiles = _gauge_steps(
        _observed_quantiles(series), grid, SUMMARY_FAMILY, lambda ms: ms.label(_QUANTILE_LABEL)
    )
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
        kind, model = token_kind(ms), ms.label(*MODEL_LABELS)
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
    # A score gauge keeps reporting its last value until a new score comes: a sample
    # equal to the one before it is that held value, not a new observation.
    evaluator = _gauge_steps(
        [_fresh(ms) for ms in series if ms.metric == EVAL_FAMILY],
        grid,
        EVAL_FAMILY,
        lambda ms: ms.label(*_EVALUATOR_LABELS) or "",
    )
    for (c, name), by_step in evaluator.items():
        # A score gauge is the mean over the runs scored in its interval: it rests on the
        # component's requests of the step when a counter gives them (as the docstring's
        # convention says), not on the two or so samples of the gauge.
        runs = requests.get(c)
        put(
            SliKey(c, SliKind.EVAL_SCORE, name),
            {
                i: (_mean(xs), runs.count(i) if runs and runs.rate[i] is not None else len(xs))
                for i, xs in by_step.items()
            },
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

    # CPU: cores in use, the CPU-seconds counter's rate added up over a component's
    # containers. Absolute, not a share of a quota: quotas are often unset, and a
    # saturated service shows as a rise either way. Counts: samples in the step (the
    # counter's increase is CPU time, not events).
    for c, cpu in family(CPU_FAMILY).items():
        put(
            SliKey(c, SliKind.CPU_USAGE),
            {i: (r, 1) for i, r in enumerate(cpu.rate) if r is not None},
        )

    # Memory utilisation: the working set over the limit of the same container (the
    # same labels), added up over a component's containers; containers without a limit
    # (0 or absent: unlimited) do not count. Counts: working-set samples.
    def container(ms: _MetricSeries) -> str:
        return repr(sorted(ms.labels.items()))

    used = _gauge_steps(series, grid, MEMORY_FAMILY, container)
    limits = _gauge_steps(series, grid, MEMORY_LIMIT_FAMILY, container)
    memory: dict[str, dict[int, tuple[float, float, int]]] = defaultdict(dict)
    for (c, labels), by_step in used.items():
        limit_steps = limits.get((c, labels), {})
        for i, xs in by_step.items():
            lim = limit_steps.get(i)
            if not lim or _mean(lim) <= 0:
                continue
            ws, cap, k = memory[c].get(i, (0.0, 0.0, 0))
            memory[c][i] = (ws + _mean(xs), cap + _mean(lim), k + len(xs))
    for c, mem_steps in memory.items():
        put(
            SliKey(c, SliKind.MEMORY_UTILISATION),
            {i: (ws / cap, k) for i, (ws, cap, k) in mem_steps.items()},
        )
    # A component none of whose containers has a limit (many clusters set none; exported
    # datasets often drop it) still leaks memory: its working set in bytes, added up.
    unlimited: dict[str, dict[int, tuple[float, int]]] = defaultdict(dict)
    for (c, _), by_step in used.items():
        if c in memory:
            continue
        for i, xs in by_step.items():
            total, k = unlimited[c].get(i, (0.0, 0))
            unlimited[c][i] = (total + _mean(xs), k + len(xs))
    for c, byte_steps in unlimited.items():
        put(SliKey(c, SliKind.MEMORY_WORKING_SET), byte_steps)
    return dict(sorted(out.items()))


def _fresh(ms: _MetricSeries) -> _MetricSeries:
    """``ms`` without the samples that repeat the value before them (a held gauge)."""
    points = [p for j, p in enumerate(ms.points) if j == 0 or p[1] != ms.points[j - 1][1]]
    return _MetricSeries(ms.metric, ms.labels, ms.component, points)


def _observed_quantiles(series: Sequence[_MetricSeries]) -> list[_MetricSeries]:
    """The summary quantile series, each without the samples taken when its ``_count``
    had not moved since the sample before. A summary keeps reporting its quantiles while
    no request comes (the last interval's, or its sliding window's), so such a sample is
    no observation of the step it falls in: averaged in, a quiet half-step's held slow
    call made a fast step look slow, and a step without calls had a latency."""
    counts: dict[tuple[str, _Labels], dict[int, float]] = {
        (ms.component, tuple(sorted(ms.labels.items()))): dict(ms.points)
        for ms in series
        if ms.metric == SUMMARY_COUNT_FAMILY
    }
    out = []
    for ms in series:
        if ms.metric != SUMMARY_FAMILY:
            continue
        plain = tuple(sorted((k, v) for k, v in ms.labels.items() if k != _QUANTILE_LABEL))
        count = counts.get((ms.component, plain))
        if count is None:
            out.append(ms)
            continue
        kept = [
            (t, v)
            for j, (t, v) in enumerate(ms.points)
            if j == 0
            or (before := count.get(ms.points[j - 1][0])) is None
            or (now := count.get(t)) is None
            or now != before
        ]
        out.append(_MetricSeries(ms.metric, ms.labels, ms.component, kept))
    return out


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
