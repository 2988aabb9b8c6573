"""Fetching the SLIs declared as PromQL queries (``[[prometheus.slis]]``) from a metric
source: runs each declaration's query (and count query) over the window, a few at a time,
and places the answers on the SLI grid with ``sentinel.sli.promql_series``.

One failing declaration never hides the others: the source's errors (unreachable, timeout,
rejected PromQL) and answers that do not make an SLI (several series, a share outside
[0, 1]) come back in ``PromqlFetch.failures``, each naming its declaration.

What must not live here: the grid rule and the checks of an answer (``sentinel.sli``),
HTTP (``adapters.prometheus``), reading the configuration (declarations come in),
detection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sentinel.errors import MetricQueryError, MetricSourceError, SentinelError
from sentinel.ports import MetricSource
from sentinel.settings import PromQLSli
from sentinel.sli import (
    SliKey,
    SliSeries,
    describe_promql_sli,
    promql_series,
    whole_steps,
)
from sentinel.telemetry import Series

__all__ = ["MAX_CONCURRENT_QUERIES", "PromqlFetch", "fetch_promql_slis"]

# Queries in flight at once: enough to overlap round trips, few enough that a long list of
# declarations does not flood the metric store.
MAX_CONCURRENT_QUERIES = 4


@dataclass(frozen=True, slots=True)
class PromqlFetch:
    """The declared SLIs that could be read (an SLI whose query matched nothing has no
    points), and one error per declaration that could not, naming it."""

    slis: dict[SliKey, SliSeries]
    failures: tuple[SentinelError, ...] = ()


async def fetch_promql_slis(
    source: MetricSource,
    decls: Sequence[PromQLSli],
    start: datetime,
    end: datetime,
    step: timedelta,
    *,
    concurrency: int = MAX_CONCURRENT_QUERIES,
) -> PromqlFetch:
    """Every declaration of ``decls`` over ``[start, end)`` by ``step`` (see
    ``sentinel.sli.promql`` for how the query's instants map to the grid's steps).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
    steps = whole_steps(start, end, step)  # also refuses a bad window before any query
    gate = asyncio.Semaphore(concurrency)

    async def query(q: str) -> list[Series]:
        if steps == 0:
            return []  # no step ends inside the window: nothing to ask for
        async with gate:
            return await source.range(q, start + step, start + steps * step, step)

    async def one(decl: PromQLSli) -> SliSeries | MetricSourceError:
        try:
            values = await query(decl.query)
            counts = await query(decl.count_query) if decl.count_query else None
        except MetricSourceError as e:
            # The source's message names the query; say which declaration it was.
            named = type(e)(f"{describe_promql_sli(decl)}: {e}", query=e.query)
            named.__cause__ = e
            return named
        try:
            return promql_series(decl, values, counts, start, end, step)
        except MetricQueryError as e:  # names the declaration already
            return e

    # Results keep declaration order. Settings refuse two declarations of one SLI.
    outcomes = [one(decl) for decl in decls]
    slis: dict[SliKey, SliSeries] = {}
    failures: list[SentinelError] = []
    for result in await asyncio.gather(*outcomes):
        if isinstance(result, SliSeries):
            slis[result.key] = result
        else:
            failures.append(result)
    return PromqlFetch(slis=dict(sorted(slis.items())), failures=tuple(failures))
