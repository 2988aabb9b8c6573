"""Call structure inferred from metrics, for systems whose telemetry shows none: no traces
and no ``topology.jsonl`` (metrics-only systems, such as RCAEval's RE1 datasets).

Method: co-movement of load. A callee's request rate is the sum of its callers' call
rates, so the load of components that call each other rises and falls together. Each
component's load series is its request rate (its CPU use when it has no request
counter); two components whose load series correlate (Pearson, over the steps both have)
at or above ``min_correlation`` are linked, in both directions.

Why this and not something cleverer:
- Direction cannot be read from co-movement, and the usual tie-breakers fail on real
  systems: a caller's latency is not always above its callee's (a frontend that calls the
  slow checkout on a quarter of its requests is faster on average), and at 15 s steps a
  call takes milliseconds, so no lag separates caller from callee (Granger causality needs
  one). Linking both ways leaves the choice between the two ends to what the ranking can
  actually see: anomaly strength and which onset came first.
- The PC algorithm (RCAEval's PC-PageRank) tests conditional independence on the ~200
  points of an hour: unstable at that size, and 5-50 s per case (docs/performance.md).
- When one load drives every service (a load generator, the daily cycle), every pair
  correlates and the graph is complete. That is the honest answer: the metrics do not say
  more. It still does what the graph is needed for here: anomalies of the services of one
  system, close in time, become one incident (correlation needs a path) and each can
  explain the others.

What must not live here: spans or topology files (``component_edges`` reads those), and
ranking.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import combinations

from sentinel.sli import SliKey, SliKind, SliSeries
from sentinel.telemetry import TopologyEdge

DEFAULT_MIN_CORRELATION = 0.5
# Pairs grow with the square of the components: beyond this many, only the busiest are
# linked (a daemon infers on every run; 100 components take a fraction of a second).
DEFAULT_MAX_COMPONENTS = 100
# Fewer common steps than this say nothing about co-movement (about 5 minutes at 15 s).
MIN_COMMON_POINTS = 20
_LOAD_KINDS = (SliKind.REQUEST_RATE, SliKind.CPU_USAGE)


def _load_series(slis: Mapping[SliKey, SliSeries]) -> dict[str, dict[float, float]]:
    """Per component, its load per step start (epoch seconds): the request rate, else CPU."""
    out: dict[str, dict[float, float]] = {}
    for kind in _LOAD_KINDS:
        for key, series in slis.items():
            if key.kind is kind and not key.qualifier and key.component not in out:
                out[key.component] = {t.timestamp(): v for t, v in series.points}
    return out


def _pearson(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = math.fsum(xs) / n, math.fsum(ys) / n
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    syy = math.fsum((y - my) ** 2 for y in ys)
    if sxx <= 0 or syy <= 0:
        return 0.0  # a flat series moves with nothing
    return sxy / math.sqrt(sxx * syy)


def infer_topology(
    slis: Mapping[SliKey, SliSeries],
    *,
    min_correlation: float = DEFAULT_MIN_CORRELATION,
    max_components: int = DEFAULT_MAX_COMPONENTS,
) -> tuple[TopologyEdge, ...]:
    """Edges (both ways) between components whose load moves together; see the module
    docstring. Sorted, so the same metrics give the same graph. Of more than
    ``max_components`` components, the busiest (most load summed) are linked."""
    load = _load_series(slis)
    if len(load) > max_components:
        busiest = sorted(load, key=lambda c: (-math.fsum(load[c].values()), c))
        load = {c: load[c] for c in busiest[:max_components]}
    edges: list[TopologyEdge] = []
    for a, b in combinations(sorted(load), 2):
        common = sorted(load[a].keys() & load[b].keys())
        if len(common) < MIN_COMMON_POINTS:
            continue
        r = _pearson([load[a][t] for t in common], [load[b][t] for t in common])
        if r >= min_correlation:
            edges.append(TopologyEdge(caller=a, callee=b))
            edges.append(TopologyEdge(caller=b, callee=a))
    return tuple(edges)
