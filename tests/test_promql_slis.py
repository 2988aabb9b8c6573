"""Tests of SLIs declared as PromQL queries: ``sli.promql_series`` (pure: the grid rule,
gaps, counts, the checks of an answer) and ``agents.promql.fetch_promql_slis``, whose
contract body runs against ``FakeMetricSource`` and a real Prometheus back-filled from the
same OpenMetrics file, plus real-only PromQL and the failures of single declarations.

What must not live here: the metric source's own contract (tests/test_prometheus.py).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentinel.adapters.prometheus import FakeMetricSource, PrometheusSource
from sentinel.agents.promql import MAX_CONCURRENT_QUERIES, fetch_promql_slis
from sentinel.errors import MetricQueryError, MetricSourceUnavailable
from sentinel.openmetrics import write_openmetrics
from sentinel.ports import MetricSource
from sentinel.settings import PromQLSli
from sentinel.sli import ASSUMED_COUNT, SliKey, SliKind, SliSeries, promql_series
from sentinel.telemetry import Sample, Series
from tests.ports import free_port

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MIN = timedelta(minutes=1)
END = T0 + 10 * MIN  # ten one-minute steps


def decl(
    sli: SliKind = SliKind.ERROR_RATE,
    query: str = "q",
    count_query: str = "",
    *,
    component: str = "service:a",
    qualifier: str = "",
) -> PromQLSli:
    return PromQLSli(
        component=component, sli=sli, qualifier=qualifier, query=query, count_query=count_query
    )


def series(*points: tuple[datetime, float], **labels: str) -> Series:
    return Series("m", tuple(sorted(labels.items())), tuple(points))


def at_step_ends(values: Sequence[float]) -> Series:
    """What a range query from T0+1m by 1m answers: value k-1 at T0 + k minutes."""
    return series(*((T0 + (k + 1) * MIN, v) for k, v in enumerate(values)))


def run(
    d: PromQLSli,
    values: Sequence[Series],
    counts: Sequence[Series] | None = None,
    end: datetime = END,
) -> SliSeries:
    return promql_series(d, values, counts, T0, end, MIN)


# --- promql_series: pure ---------------------------------------------------------------


def test_an_evaluation_instant_is_the_point_of_the_step_ending_there() -> None:
    got = run(decl(SliKind.LATENCY_P50), [at_step_ends([0.1, 0.2, 0.3])])
    assert got.key == SliKey("service:a", SliKind.LATENCY_P50)
    assert got.points == ((T0, 0.1), (T0 + MIN, 0.2), (T0 + 2 * MIN, 0.3))
    assert got.counts == (ASSUMED_COUNT,) * 3


def test_instants_snap_to_the_nearest_step_end_and_outside_ones_are_dropped() -> None:
    ms = timedelta(milliseconds=1)
    answer = series(
        (T0, 9.0),  # ends no step: describes the time before the window
        (T0 + MIN - ms, 1.0),  # Prometheus' millisecond rounding either way
        (T0 + 2 * MIN + ms, 2.0),
        (T0 + 11 * MIN, 9.0),  # after the window
    )
    assert run(decl(SliKind.LATENCY_P50), [answer]).points == ((T0, 1.0), (T0 + MIN, 2.0))


def test_a_clipped_last_step_gets_no_point() -> None:
    # Steps [0, 1m), [1m, 1m30s): the second ends at 2m, after the window's end.
    got = run(decl(SliKind.LATENCY_P50), [at_step_ends([0.1, 0.2])], end=T0 + 1.5 * MIN)
    assert got.points == ((T0, 0.1),)


def test_nan_and_inf_are_gaps() -> None:
    got = run(decl(), [at_step_ends([0.1, math.nan, 0.3, math.inf])])
    assert got.points == ((T0, 0.1), (T0 + 2 * MIN, 0.3))


def test_counts_come_from_the_count_query_rounded_and_a_missing_count_drops_the_point() -> None:
    d = decl(count_query="c")
    got = run(d, [at_step_ends([0.1, 0.2, 0.3, 0.4])], [at_step_ends([10.4, 0.0, math.nan])])
    assert got.points == ((T0, 0.1), (T0 + MIN, 0.2))
    assert got.counts == (10, 0)
    assert run(d, [at_step_ends([0.1])], []).points == ()


def test_without_a_count_query_a_request_rate_rests_on_the_requests_it_implies() -> None:
    got = run(decl(SliKind.REQUEST_RATE), [at_step_ends([2.0, 0.0, 0.51])])
    assert got.counts == (120, 0, 31)


def test_zero_series_is_an_sli_without_points() -> None:
    got = run(decl(count_query="c"), [], [])
    assert (got.points, got.counts) == ((), ())


@pytest.mark.parametrize("which", ["query", "count_query"])
def test_more_than_one_series_is_an_error_naming_query_sli_and_label_sets(which: str) -> None:
    d = decl(SliKind.EVAL_SCORE, "score", "n", qualifier="faithfulness")
    two = [at_step_ends([0.5]) for _ in range(2)]
    two = [series(*two[0].points, pod="p1"), series(*two[1].points, pod="p2")]
    one = [at_step_ends([0.5])]
    with pytest.raises(MetricQueryError) as err:
        run(d, two if which == "query" else one, one if which == "query" else two)
    message = str(err.value)
    for words in ("service:a eval_score 'faithfulness'", "'p1'", "'p2'", "2 series"):
        assert words in message
    assert err.value.query == ("score" if which == "query" else "n")


@pytest.mark.parametrize("value", [-0.01, 1.5])
def test_a_share_outside_0_1_is_an_error_naming_the_query(value: float) -> None:
    with pytest.raises(MetricQueryError, match=r"'errs'.*share in \[0, 1\]") as err:
        run(decl(SliKind.ERROR_RATE, "errs"), [at_step_ends([0.1, value])])
    assert err.value.query == "errs"
    # Only shares are bounded: a latency of 1.5 s is fine.
    assert run(decl(SliKind.LATENCY_P95), [at_step_ends([1.5])]).points == ((T0, 1.5),)


def test_a_negative_count_is_an_error_and_counts_must_match_the_declaration() -> None:
    with pytest.raises(MetricQueryError, match="negative count"):
        run(decl(count_query="c"), [at_step_ends([0.1])], [at_step_ends([-3.0])])
    with pytest.raises(ValueError, match="count_query"):
        run(decl(count_query="c"), [at_step_ends([0.1])], None)
    with pytest.raises(ValueError, match="count_query"):
        run(decl(), [at_step_ends([0.1])], [])


# --- contract: the same body against the fake and a real Prometheus ----------------------


def _samples() -> list[Sample]:
    """Every 15 s from T0-5m to T0+15m: a share and a request gauge of service:a (value at
    T0+k min: k/100 and 10k+0.4, the share NaN at T0+4m, the requests at T0+6m), two pods of
    a latency gauge, and a counter growing 1 per second."""
    out = []
    for j in range(-20, 61):
        t, minutes = T0 + j * timedelta(seconds=15), j / 4
        a = (("component", "service:a"),)
        share = math.nan if j == 16 else minutes / 100
        requests = math.nan if j == 24 else 10 * minutes + 0.4
        out += [
            Sample("sli_share", a, "service:a", t, share),
            Sample("sli_requests", a, "service:a", t, requests),
            Sample("sli_latency", (("pod", "p1"),), None, t, 0.2),
            Sample("sli_latency", (("pod", "p2"),), None, t, 0.3),
            Sample("x_total", a, "service:a", t, 15.0 * (j + 20)),
        ]
    return out


@pytest.fixture(scope="module")
def metrics_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("promql-slis") / "metrics.om"
    path.write_text(write_openmetrics(_samples(), {"x": "counter"}), encoding="utf-8")
    yield path


@pytest.fixture
def prometheus_url(metrics_file: Path, prometheus_from_file: Callable[[Path], str]) -> str:
    return prometheus_from_file(metrics_file)


@pytest.fixture
async def real(prometheus_url: str) -> AsyncIterator[PrometheusSource]:
    async with PrometheusSource(prometheus_url, retries=0) as source:
        yield source


@pytest.fixture(params=["fake", pytest.param("prometheus", marks=pytest.mark.prometheus)])
async def source(request: pytest.FixtureRequest) -> AsyncIterator[MetricSource]:
    if request.param == "fake":
        yield FakeMetricSource(_samples())
        return
    # Only the real parameter needs (and starts) a Prometheus; async fixtures cannot be
    # asked for from here, so the URL comes from the synchronous one.
    async with PrometheusSource(request.getfixturevalue("prometheus_url"), retries=0) as real:
        yield real


SHARE_KEY = SliKey("service:a", SliKind.ERROR_RATE)
SHARE = decl(
    SliKind.ERROR_RATE, 'sli_share{component="service:a"}', 'sli_requests{component="service:a"}'
)


async def test_declared_slis_come_back_on_the_grid_and_bad_ones_as_failures(
    source: MetricSource,
) -> None:
    nothing = decl(SliKind.ERROR_RATE, 'sli_share{component="service:zz"}', component="service:z")
    pods = decl(SliKind.LATENCY_P50, "sli_latency", component="service:b")
    not_a_share = decl(SliKind.GUARDRAIL_TRIGGERS, "sli_requests")
    got = await fetch_promql_slis(source, [SHARE, pods, nothing, not_a_share], T0, END, MIN)
    # Step k-1 holds the value at T0+k min; T0+4m (share NaN) and T0+6m (count NaN) are gaps.
    steps = [k for k in range(1, 11) if k not in (4, 6)]
    assert got.slis[SliKey("service:a", SliKind.ERROR_RATE)] == SliSeries(
        SliKey("service:a", SliKind.ERROR_RATE),
        tuple((T0 + (k - 1) * MIN, k / 100) for k in steps),
        tuple(10 * k for k in steps),
    )
    assert got.slis[SliKey("service:z", SliKind.ERROR_RATE)].points == ()
    assert len(got.slis) == 2
    assert [type(e) for e in got.failures] == [MetricQueryError, MetricQueryError]
    assert "service:b latency_p50" in str(got.failures[0])
    assert "'p1'" in str(got.failures[0]) and "'p2'" in str(got.failures[0])
    assert "service:a guardrail_triggers" in str(got.failures[1])


async def test_a_window_without_a_whole_step_asks_for_nothing(source: MetricSource) -> None:
    got = await fetch_promql_slis(source, [SHARE], T0, T0 + MIN / 2, MIN)
    assert got.slis[SHARE_KEY].points == () and got.failures == ()


# --- real PromQL, and failures, against a real Prometheus --------------------------------


@pytest.mark.prometheus
async def test_real_promql_functions_and_a_bad_query_next_to_them(real: PrometheusSource) -> None:
    rate = decl(SliKind.REQUEST_RATE, 'sum(rate(x_total{component="service:a"}[1m]))')
    errors = decl(SliKind.ERROR_RATE, "clamp_max(sum(sli_share) * 2, 1)", "sum(sli_requests)")
    broken = decl(SliKind.LATENCY_P95, "histogram_quantile(0.95, sum(rate(x[1m]))")
    got = await fetch_promql_slis(real, [rate, broken, errors], T0, END, MIN)
    request_rate = got.slis[SliKey("service:a", SliKind.REQUEST_RATE)]
    assert [t for t, _ in request_rate.points] == [T0 + i * MIN for i in range(10)]
    assert [v for _, v in request_rate.points] == pytest.approx([1.0] * 10)
    assert request_rate.counts == (60,) * 10
    assert [v for _, v in got.slis[SHARE_KEY].points][:3] == pytest.approx([0.02, 0.04, 0.06])
    (failure,) = got.failures
    assert isinstance(failure, MetricQueryError)
    assert failure.query == broken.query
    assert "service:a latency_p95" in str(failure) and "parse error" in str(failure)


async def test_an_unreachable_source_fails_each_declaration_by_name() -> None:
    other = decl(SliKind.LATENCY_P50, "sli_latency", component="service:b")
    async with PrometheusSource(f"http://127.0.0.1:{free_port()}", retries=0) as down:
        got = await fetch_promql_slis(down, [SHARE, other], T0, END, MIN)
    assert got.slis == {}
    assert [type(e) for e in got.failures] == [MetricSourceUnavailable] * 2
    assert "service:a error_rate" in str(got.failures[0])
    assert "service:b latency_p50" in str(got.failures[1])
    assert isinstance(got.failures[0].__cause__, MetricSourceUnavailable)


class PartlyDown:
    """The fake, except that one query finds the source unreachable."""

    def __init__(self, down_query: str) -> None:
        self.fake = FakeMetricSource(_samples())
        self.down_query = down_query
        self.in_flight = self.most_in_flight = 0

    async def instant(self, query: str, at: datetime | None = None) -> list[Series]:
        return await self.fake.instant(query, at)

    async def range(
        self, query: str, start: datetime, end: datetime, step: timedelta
    ) -> list[Series]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)  # let the other queries start
            if query == self.down_query:
                raise MetricSourceUnavailable(f"connection refused for {query!r}", query=query)
            return await self.fake.range(query, start, end, step)
        finally:
            self.in_flight -= 1


async def test_one_failing_declaration_does_not_hide_the_others() -> None:
    source = PartlyDown(SHARE.count_query)
    fine = decl(SliKind.LATENCY_P50, 'sli_share{component="service:a"}')
    got = await fetch_promql_slis(source, [SHARE, fine], T0, END, MIN)
    assert list(got.slis) == [SliKey("service:a", SliKind.LATENCY_P50)]
    (failure,) = got.failures
    assert isinstance(failure, MetricSourceUnavailable)
    assert failure.query == SHARE.count_query
    assert str(failure).startswith("[[prometheus.slis]] service:a error_rate: ")


async def test_queries_run_concurrently_but_bounded() -> None:
    source = PartlyDown("none")
    decls = [decl(SliKind.EVAL_SCORE, "sli_latency", component=f"service:{n}") for n in range(10)]
    got = await fetch_promql_slis(source, decls, T0, END, MIN)
    assert len(got.failures) == 10  # two pods each: every one is refused, none hides another
    assert source.most_in_flight == MAX_CONCURRENT_QUERIES
