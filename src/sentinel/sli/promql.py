"""SLIs declared as PromQL queries (``[[prometheus.slis]]``, ``PromQLSli``): the query's
answer placed on the SLI grid. Pure: the caller runs the queries and passes the series in.

The grid rule. A range query evaluated at ``start + k*step`` (k = 1, 2, ...) gives, for
a ``rate(x[step])`` or a gauge read with lookback, the value of the moments just before
that instant: it is the point of step ``k-1``, ``[start + (k-1)*step, start + k*step)``,
stamped with that step's start (as ``records`` counts a gauge sample for the step ending
at or after it). An instant is snapped to the nearest step end, which absorbs the
millisecond rounding of Prometheus' times. Only steps that end at or before ``end`` get a
point: a clipped last step would need a value describing time after ``end``. So the
caller asks for ``start + step`` .. ``start + whole_steps*step`` (``query_range``).

Counts: from ``count_query``'s one series at the same steps, rounded; a step where it has
no finite value drops the point. Without a count query a request-rate point rests on the
requests its rate implies (rate * step seconds, what the traffic-drop test counts), and
any other point on ``ASSUMED_COUNT``: large, so no ``min_point_count`` filter drops it,
but shares then weigh every step alike and their binomial tests treat each step as
``ASSUMED_COUNT`` requests (declare a count query for shares).

What must not live here: running queries, concurrency, the metric source (``agents``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sentinel.errors import MetricQueryError
from sentinel.settings import PromQLSli
from sentinel.sli.records import SliKey, SliKind, SliSeries, _Grid, _ns
from sentinel.telemetry import Series

__all__ = ["ASSUMED_COUNT", "describe_promql_sli", "promql_key", "promql_series", "whole_steps"]

# Observations a point without a count query is taken to rest on (see the docstring).
ASSUMED_COUNT = 1_000_000


def promql_key(decl: PromQLSli) -> SliKey:
    return SliKey(decl.component, decl.sli, decl.qualifier)


def describe_promql_sli(decl: PromQLSli) -> str:
    """How errors name a declaration: the config table and the SLI it declares."""
    qualifier = f" {decl.qualifier!r}" if decl.qualifier else ""
    return f"[[prometheus.slis]] {decl.component} {decl.sli.value}{qualifier}"


def whole_steps(start: datetime, end: datetime, step: timedelta) -> int:
    """How many steps of the grid end at or before ``end`` (the ones that get points)."""
    grid = _Grid.of(start, end, step)
    return (grid.end_ns - grid.start_ns) // grid.step_ns


def promql_series(
    decl: PromQLSli,
    values: Sequence[Series],
    counts: Sequence[Series] | None,
    start: datetime,
    end: datetime,
    step: timedelta,
) -> SliSeries:
    """The SLI ``decl`` declares, from the answers to its ``query`` (``values``) and its
    ``count_query`` (``counts``; None exactly when it has none), on the grid of
    ``[start, end)`` by ``step``. Zero series: an SLI without points.

    Raises ``MetricQueryError`` (naming the declaration and the query) when a query gave
    more than one series, a share is outside [0, 1] or a count is negative.
    """
    if (counts is None) != (decl.count_query == ""):
        raise ValueError(
            f"{describe_promql_sli(decl)}: counts must be given exactly when count_query "
            f"is set (count_query={decl.count_query!r})"
        )
    grid = _Grid.of(start, end, step)
    by_step = _on_grid(decl, decl.query, values, grid)
    if decl.sli.share:
        for i, v in by_step.items():
            if not 0.0 <= v <= 1.0:
                kind = decl.sli.value
                why = f"gave {v!r} for the step at {_at(grid, i)}, but {kind} is a share in [0, 1]"
                raise _error(decl, decl.query, why)
    if counts is None:
        count_of = {i: _implied_count(decl.sli, v, grid.seconds(i)) for i, v in by_step.items()}
    else:
        count_of = {}
        for i, c in _on_grid(decl, decl.count_query, counts, grid).items():
            if round(c) < 0:
                why = f"gave a negative count {c!r} for the step at {_at(grid, i)}"
                raise _error(decl, decl.count_query, why)
            count_of[i] = round(c)
    steps = sorted(i for i in by_step if i in count_of)  # a missing count drops the point
    return SliSeries(
        key=promql_key(decl),
        points=tuple((grid.time(i), by_step[i]) for i in steps),
        counts=tuple(count_of[i] for i in steps),
    )


def _on_grid(
    decl: PromQLSli, query: str, answer: Sequence[Series], grid: _Grid
) -> Mapping[int, float]:
    """Step -> finite value of the one series of ``answer`` (NaN/Inf are gaps)."""
    if len(answer) > 1:
        found = ", ".join(_labelset(s) for s in answer)
        why = f"gave {len(answer)} series, expected one (aggregate them): {found}"
        raise _error(decl, query, why)
    out: dict[int, float] = {}
    last = (grid.end_ns - grid.start_ns) // grid.step_ns
    for t, v in answer[0].points if answer else ():
        # Nearest step end: Prometheus keeps milliseconds, the grid nanoseconds.
        k = (_ns(t) - grid.start_ns + grid.step_ns // 2) // grid.step_ns
        if 1 <= k <= last and math.isfinite(v):
            out[k - 1] = v
    return out


def _implied_count(kind: SliKind, value: float, seconds: float) -> int:
    if kind is SliKind.REQUEST_RATE:
        return max(0, round(value * seconds))
    return ASSUMED_COUNT


def _labelset(s: Series) -> str:
    inner = ", ".join(f"{k}={v!r}" for k, v in s.labels)
    return f"{s.metric}{{{inner}}}"


def _at(grid: _Grid, i: int) -> str:
    return repr(grid.time(i).isoformat())


def _error(decl: PromQLSli, query: str, why: str) -> MetricQueryError:
    return MetricQueryError(f"{describe_promql_sli(decl)}: query {query!r} {why}", query=query)
