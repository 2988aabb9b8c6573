"""The SLI records and what both sources share: ``SliKind``, ``SliKey``, ``SliSeries``,
the time grid every series is laid on, the means and latency quantiles both sources
compute, the component id prefixes, and ``merge``, which combines the two sources' output
and needs nothing but the records.

What must not live here: anything that reads spans (``spans``) or metric samples
(``metrics``); this module imports neither, so both can import it. Baselines, anomaly
detection, I/O and configuration stay out of the whole package.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from operator import lt

from sentinel.telemetry import SliKind as SliKind  # re-exported: the SLI vocabulary


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
    # Each point with its count, (time, value, count): derived, built once here because
    # detection slices it at every step of a replay (zipping anew each time was most of
    # a replay's cost).
    rows: tuple[tuple[datetime, float, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.points) != len(self.counts):
            raise ValueError(f"{self.key}: {len(self.points)} points but {len(self.counts)} counts")
        times = [t for t, _ in self.points]
        values = [v for _, v in self.points]
        object.__setattr__(self, "rows", tuple(zip(times, values, self.counts, strict=True)))
        # The checks run in C (map) on the good path, which every series built takes (the
        # Metric Agent builds thousands a run); the loops only name what is wrong.
        if not all(map(lt, times, times[1:])):
            for t0, t1 in pairwise(times):
                if t1 <= t0:
                    raise ValueError(f"{self.key}: points not in time order at {t1.isoformat()!r}")
        if not all(map(math.isfinite, values)):
            for t, v in self.points:
                if not math.isfinite(v):
                    raise ValueError(f"{self.key}: value {v!r} at {t.isoformat()!r} is not finite")
        if self.counts and min(self.counts) < 0:
            raise ValueError(f"{self.key}: negative count in {self.counts!r}")


# --- the time grid -------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_S = 1_000_000_000


def step_start(t: datetime, step: timedelta) -> datetime:
    """The start of the grid step holding ``t``, steps aligned on the epoch (so a grid
    built at any time puts its points on the same instants)."""
    return _EPOCH + ((t - _EPOCH) // step) * step


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


_LATENCY_QUANTILES = (
    (SliKind.LATENCY_P50, 0.5),
    (SliKind.LATENCY_P95, 0.95),
    (SliKind.LATENCY_P99, 0.99),
)

# --- component ids -------------------------------------------------------------------

_SERVICE_PREFIX = "service:"
_MODEL_PREFIX = "model:"
_TOOL_PREFIX = "tool:"
_AGENT_PREFIX = "agent:"


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
