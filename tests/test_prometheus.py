"""Contract tests of ports.MetricSource: the same bodies run against FakeMetricSource (loaded
from a case's metrics.om.gz) and a real Prometheus back-filled from the same file, so the
fake cannot drift. Then the adapter's edges: retries, timeouts, errors, wire format (through
httpx.MockTransport, a real closed port and a real slow server on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import math
import re
import tomllib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from pydantic import SecretStr

from sentinel.adapters.prometheus import (
    FakeMetricSource,
    PrometheusSource,
    prometheus_from_settings,
)
from sentinel.clock import FakeClock
from sentinel.errors import (
    ConfigError,
    MetricQueryError,
    MetricSourceError,
    MetricSourceUnavailable,
)
from sentinel.openmetrics import parse_openmetrics
from sentinel.ports import MetricSource
from sentinel.settings import PrometheusSettings, Secrets, Settings, load_settings
from sentinel.telemetry import Sample, Series
from tests.ports import free_port

CASES_DIR = Path(__file__).resolve().parents[2] / "shared" / "cases"
CASE_DIRS = sorted(p.parent for p in CASES_DIR.glob("*/metrics.om.gz"))
STEP = timedelta(seconds=15)  # the cases' sample interval

Key = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class Case:
    name: str
    metrics_file: Path
    start: datetime
    end: datetime
    samples: tuple[Sample, ...]
    lines: tuple[str, ...]  # the raw sample lines, to check numbers without our parser


@functools.cache
def load_case(case_dir: Path) -> Case:
    meta = tomllib.loads((case_dir / "case.toml").read_text(encoding="utf-8"))["case"]
    path = case_dir / "metrics.om.gz"
    text = gzip.decompress(path.read_bytes()).decode("utf-8")
    return Case(
        name=case_dir.name,
        metrics_file=path,
        start=meta["start"],
        end=meta["end"],
        samples=tuple(parse_openmetrics(text, str(path))),
        lines=tuple(line for line in text.splitlines() if line and not line.startswith("#")),
    )


def raw_line(line: str) -> tuple[str, float, datetime]:
    """``name{labels} value ts`` -> (selector text, value, time). The cases' label values hold
    no escapes, so the selector text is valid PromQL as it stands."""
    selector, value, ts = line.rsplit(" ", 2)
    return selector, float(value), datetime.fromtimestamp(int(ts), UTC)


def by_series(series: Iterable[Series]) -> dict[Key, tuple[tuple[datetime, float], ...]]:
    out = {}
    for s in series:
        key = (s.metric, s.labels)
        assert key not in out, f"series {key} returned twice"
        out[key] = s.points
    return out


def file_series(samples: Iterable[Sample]) -> dict[Key, tuple[tuple[datetime, float], ...]]:
    grouped: dict[Key, list[tuple[datetime, float]]] = {}
    for s in samples:
        grouped.setdefault((s.metric, s.labels), []).append((s.time, s.value))
    return {k: tuple(sorted(v)) for k, v in grouped.items()}


def test_shared_cases_are_present() -> None:
    assert CASE_DIRS, f"no */metrics.om.gz under {CASES_DIR}"


@pytest.fixture(params=CASE_DIRS, ids=lambda p: p.name)
def case(request: pytest.FixtureRequest) -> Case:
    return load_case(request.param)


@pytest.fixture(params=["fake", pytest.param("prometheus", marks=pytest.mark.prometheus)])
async def source(request: pytest.FixtureRequest, case: Case) -> AsyncIterator[MetricSource]:
    if request.param == "fake":
        yield FakeMetricSource(case.samples)
        return
    start: Callable[[Path], str] = request.getfixturevalue("prometheus_from_file")
    async with PrometheusSource(start(case.metrics_file), retries=0) as real:
        yield real


FIRST_CASE = [CASE_DIRS[0]] if CASE_DIRS else []


# --- contract: the same body against the fake and the real Prometheus -------------------


async def test_range_over_the_case_window_returns_the_case_samples(
    case: Case, source: MetricSource
) -> None:
    got = await source.range('{__name__=~".+"}', case.start, case.end, STEP)
    # Every series of the cases has a sample every 15 s across the window, so evaluating at
    # start, start+15s, ... returns exactly the file's samples, stamped with their own times.
    assert by_series(got) == file_series(case.samples)


async def test_instant_at_a_sample_returns_its_value_from_the_file(
    case: Case, source: MetricSource
) -> None:
    for line in (case.lines[0], case.lines[len(case.lines) // 2], case.lines[-1]):
        selector, value, at = raw_line(line)
        got = await source.instant(selector, at)
        assert len(got) == 1, (selector, got)
        assert got[0].points == ((at, value),), line
        assert got[0].metric == selector.split("{", 1)[0]


async def test_instant_takes_the_latest_sample_within_five_minutes(
    case: Case, source: MetricSource
) -> None:
    first = raw_line(case.lines[0])
    selector = first[0]
    points = [raw_line(line) for line in case.lines if line.startswith(selector + " ")]
    (_, first_value, first_time), (_, last_value, last_time) = points[0], points[-1]

    between = first_time + timedelta(seconds=7.5)
    got = await source.instant(selector, between)
    # The point is stamped with the evaluation time, not the sample's.
    assert [s.points for s in got] == [((between, first_value),)]

    late = last_time + timedelta(minutes=4, seconds=59)
    assert [s.points for s in await source.instant(selector, late)] == [((late, last_value),)]
    assert await source.instant(selector, last_time + timedelta(minutes=5, seconds=1)) == []
    assert await source.instant(selector, first_time - timedelta(seconds=1)) == []


async def test_range_steps_start_at_start_and_stop_at_end(case: Case, source: MetricSource) -> None:
    selector = raw_line(case.lines[0])[0]
    raw = [raw_line(line)[1:] for line in case.lines if line.startswith(selector + " ")]
    start = case.start + timedelta(seconds=7.5)
    step = timedelta(seconds=100)
    expected = []
    t = start
    while t <= case.end:
        seen = [(when, v) for v, when in raw if t - timedelta(minutes=5) <= when <= t]
        if seen:
            expected.append((t, max(seen)[1]))
        t += step
    got = await source.range(selector, start, case.end, step)
    assert len(got) == 1
    assert got[0].points == tuple(expected)


MATCHER_CASES: list[tuple[str, Callable[[str, dict[str, str], str], bool]]] = [
    (
        'component_requests_total{component=~"service:.*"}',
        lambda m, lb, c: m == "component_requests_total" and lb["component"].startswith("service:"),
    ),
    (
        'component_requests_total{component!~"service:.*"}',
        lambda m, lb, c: (
            m == "component_requests_total" and not lb["component"].startswith("service:")
        ),
    ),
    (
        'component_requests_total{component="FIRST"}',
        lambda m, lb, c: m == "component_requests_total" and lb["component"] == c,
    ),
    (
        "component_requests_total{component!='FIRST'}",
        lambda m, lb, c: m == "component_requests_total" and lb["component"] != c,
    ),
    ('{__name__="component_errors_total"}', lambda m, lb, c: m == "component_errors_total"),
    (
        '{__name__=~"component_(requests|errors)_total", component=~`(agent|service):.*`}',
        lambda m, lb, c: (
            m in ("component_requests_total", "component_errors_total")
            and re.fullmatch("(agent|service):.*", lb["component"]) is not None
        ),
    ),
    (
        'component_requests_total{no_such_label=""}',
        lambda m, lb, c: m == "component_requests_total",
    ),
    ('component_requests_total{no_such_label!=""}', lambda m, lb, c: False),
    (
        'kube_pod_container_status_restarts_total{namespace="prod",service_name!~"orders.*",}',
        lambda m, lb, c: (
            m == "kube_pod_container_status_restarts_total"
            and not lb["service_name"].startswith("orders")
        ),
    ),
]


async def test_label_matchers_select_the_same_series(case: Case, source: MetricSource) -> None:
    first = next(s for s in case.samples if s.metric == "component_requests_total")
    first_component = dict(first.labels)["component"]
    keys = file_series(case.samples).keys()
    for template, wanted in MATCHER_CASES:
        query = template.replace("FIRST", first_component)
        got = await source.range(query, case.start, case.end, timedelta(minutes=10))
        expected = {k for k in keys if wanted(k[0], dict(k[1]), first_component)}
        assert set(by_series(got)) == expected, query


@pytest.mark.parametrize("case", FIRST_CASE, indirect=True, ids=lambda p: p.name)
@pytest.mark.parametrize(
    "query",
    [
        "sum(",
        '{a=""}',
        '{__name__=~".*"}',
        'component_requests_total{__name__="component_errors_total"}',
        'component_requests_total{component=~"("}',
        "component_requests_total{component=}",
    ],
)
async def test_bad_queries_raise_metric_query_error_with_the_query(
    case: Case, source: MetricSource, query: str
) -> None:
    with pytest.raises(MetricQueryError) as err:
        await source.instant(query, case.end)
    assert err.value.query == query
    assert query in str(err.value)


@pytest.mark.parametrize("case", FIRST_CASE, indirect=True, ids=lambda p: p.name)
@pytest.mark.parametrize(
    ("start_shift", "step"),
    [
        (timedelta(hours=1), timedelta(seconds=15)),  # end before start
        (timedelta(0), timedelta(0)),  # zero step
        (timedelta(0), timedelta(microseconds=500)),  # below Prometheus' millisecond
        (-timedelta(hours=24), timedelta(seconds=1)),  # more than 11,000 points
    ],
    ids=["end-before-start", "zero-step", "sub-ms-step", "too-many-points"],
)
async def test_bad_ranges_raise_metric_query_error(
    case: Case, source: MetricSource, start_shift: timedelta, step: timedelta
) -> None:
    query = "component_requests_total"
    with pytest.raises(MetricQueryError) as err:
        await source.range(query, case.end + start_shift, case.end, step)
    assert err.value.query == query


# --- the fake on its own ------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def sample(metric: str, labels: dict[str, str], at: datetime, value: float) -> Sample:
    return Sample(metric, tuple(sorted(labels.items())), None, at, value)


@pytest.mark.parametrize(
    "query",
    ["rate(x[5m])", "x[5m]", "x offset 5m", "x + 1", "sum(x)", "1", "sum", "x @ 100", "x{y}"],
)
async def test_fake_refuses_anything_but_a_selector(query: str) -> None:
    with pytest.raises(MetricQueryError, match="plain series selectors") as err:
        await FakeMetricSource([]).instant(query, T0)
    assert err.value.query == query


async def test_fake_reads_promql_strings_like_prometheus() -> None:
    odd = 'a"b\\c\nd'
    fake = FakeMetricSource([sample("x", {"v": odd}, T0, 1.0), sample("x", {"v": "é"}, T0, 2.0)])
    for query in ('x{v="a\\"b\\\\c\\nd"}', "x{v='a\"b\\\\c\\nd'}", 'x{v=~"a.b.c\\nd"}'):
        assert [s.labels for s in await fake.instant(query, T0)] == [(("v", odd),)], query
    assert [s.points for s in await fake.instant('x{v="\\u00e9"}', T0)] == [((T0, 2.0),)]
    assert [s.points for s in await fake.instant("x{v=`é`}", T0)] == [((T0, 2.0),)]


async def test_fake_instant_without_a_time_asks_its_clock() -> None:
    clock = FakeClock(T0 + timedelta(minutes=1))
    fake = FakeMetricSource([sample("x", {}, T0, 3.0)], clock=clock)
    assert [s.points for s in await fake.instant("x")] == [((clock.now(), 3.0),)]
    clock.advance(10 * 60)
    assert await fake.instant("x") == []


async def test_fake_keeps_the_last_value_written_for_a_millisecond() -> None:
    fake = FakeMetricSource([sample("x", {}, T0, 1.0), sample("x", {}, T0, 2.0)])
    assert [s.points for s in await fake.instant("x", T0)] == [((T0, 2.0),)]


# --- the adapter's edges ------------------------------------------------------------------


class RecordingSleep:
    """Stands in for asyncio.sleep: records the backoff delays instead of waiting them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


async def test_unreachable_port_is_unavailable_after_the_configured_retries() -> None:
    sleep = RecordingSleep()
    url = f"http://127.0.0.1:{free_port()}"
    with structlog.testing.capture_logs() as logs:
        async with PrometheusSource(url, retries=3, backoff_seconds=0.5, sleep=sleep) as src:
            with pytest.raises(MetricSourceUnavailable) as err:
                await src.instant("up", T0)
    assert sleep.delays == [0.5, 1.0, 2.0]
    retries = [e for e in logs if e["event"] == "prometheus.retry"]
    assert [e["attempt"] for e in retries] == [1, 2, 3]
    assert all("ConnectError" in e["reason"] for e in retries)
    assert err.value.query == "up"
    assert f"{url}/api/v1/query" in str(err.value)
    assert "4 time(s)" in str(err.value)


async def test_a_server_slower_than_the_timeout_is_unavailable() -> None:
    requests = 0
    release = asyncio.Event()
    handlers: set[asyncio.Task[Any]] = set()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            requests += 1
            await release.wait()  # never answers while the client waits
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with PrometheusSource(
            f"http://127.0.0.1:{port}", timeout_seconds=0.2, retries=1, sleep=RecordingSleep()
        ) as src:
            with pytest.raises(MetricSourceUnavailable, match="ReadTimeout") as err:
                await src.range("up", T0, T0 + timedelta(hours=1), timedelta(minutes=1))
    finally:
        release.set()
        server.close()
        await server.wait_closed()
        await asyncio.gather(*handlers, return_exceptions=True)
    assert requests == 2
    assert err.value.query == "up"


def api_answer(result_type: str, result: object, **extra: object) -> httpx.Response:
    return httpx.Response(
        200,
        json={"status": "success", "data": {"resultType": result_type, "result": result}} | extra,
    )


VECTOR = [{"metric": {"__name__": "up", "job": "a", "instance": "x"}, "value": [1.5, "1"]}]


class Script:
    """A MockTransport handler answering from a list; records the requests it saw."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def scripted(
    script: Script, sleep: RecordingSleep | None = None, **kwargs: Any
) -> PrometheusSource:
    kwargs.setdefault("retries", 3)
    return PrometheusSource(
        kwargs.pop("base_url", "http://prom.test:9090"),
        transport=httpx.MockTransport(script),
        sleep=sleep or RecordingSleep(),
        **kwargs,
    )


async def test_5xx_is_retried_with_exponential_backoff_then_succeeds() -> None:
    script = Script(httpx.Response(503), httpx.Response(502), api_answer("vector", VECTOR))
    sleep = RecordingSleep()
    async with scripted(script, sleep, backoff_seconds=0.25) as src:
        got = await src.instant("up", T0)
    assert len(script.requests) == 3
    assert sleep.delays == [0.25, 0.5]
    at = datetime(1970, 1, 1, 0, 0, 1, 500_000, tzinfo=UTC)
    assert got == [Series("up", (("instance", "x"), ("job", "a")), ((at, 1.0),))]


async def test_429_honours_a_small_retry_after() -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "3"}), api_answer("vector", VECTOR))
    sleep = RecordingSleep()
    async with scripted(script, sleep, backoff_seconds=0.5) as src:
        await src.instant("up", T0)
    assert sleep.delays == [3.0]


async def test_429_with_a_long_retry_after_gives_up_at_once() -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "3600"}))
    sleep = RecordingSleep()
    async with scripted(script, sleep) as src:
        with pytest.raises(MetricSourceUnavailable, match="3600") as err:
            await src.instant("up", T0)
    assert len(script.requests) == 1
    assert sleep.delays == []
    assert err.value.query == "up"


async def test_5xx_until_the_retries_run_out_is_unavailable() -> None:
    script = Script(httpx.Response(500, json={"status": "error", "error": "boom"}))
    async with scripted(script, retries=2) as src:
        with pytest.raises(MetricSourceUnavailable, match="HTTP 500: boom") as err:
            await src.instant("up", T0)
    assert len(script.requests) == 3
    assert "http://prom.test:9090/api/v1/query" in str(err.value)


async def test_connection_errors_are_retried() -> None:
    script = Script(httpx.ConnectError("refused"), api_answer("vector", []))
    async with scripted(script) as src:
        assert await src.instant("up", T0) == []
    assert len(script.requests) == 2


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}, "parse error"),
        (422, {"status": "error", "errorType": "execution", "error": "many-to-many"}, "many"),
        (401, {"message": "no"}, "SENTINEL_PROMETHEUS_TOKEN"),
        (404, None, "API root"),
    ],
)
async def test_4xx_raises_metric_query_error_without_retrying(
    status: int, body: object, words: str
) -> None:
    script = Script(httpx.Response(status, json=body))
    sleep = RecordingSleep()
    async with scripted(script, sleep) as src:
        with pytest.raises(MetricQueryError, match=words) as err:
            await src.instant("sum(up", T0)
    assert len(script.requests) == 1
    assert sleep.delays == []
    assert err.value.query == "sum(up"
    assert "http://prom.test:9090/api/v1/query" in str(err.value)


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(200, text="<html>grafana</html>"), MetricSourceError),
        (httpx.Response(200, json={"status": "error", "error": "nope"}), MetricQueryError),
        (api_answer("string", [1, "s"]), MetricSourceError),
        (api_answer("vector", [{"metric": {}}]), MetricSourceError),
        (httpx.Response(301, headers={"Location": "https://x"}), MetricSourceUnavailable),
    ],
    ids=["not-json", "status-error", "string-result", "bad-shape", "redirect"],
)
async def test_odd_answers_raise_errors_of_the_tree(
    response: httpx.Response, error: type[MetricSourceError]
) -> None:
    async with scripted(Script(response)) as src:
        with pytest.raises(error) as err:
            await src.instant("up", T0)
    assert err.value.query == "up"


async def test_requests_are_post_forms_with_millisecond_times_and_the_token() -> None:
    script = Script(api_answer("matrix", []))
    base = "http://vmselect.test:8481/select/0/prometheus/"
    async with scripted(script, base_url=base, bearer_token="s3cret") as src:
        at = datetime(2026, 11, 28, 21, 0, 15, 123456, tzinfo=UTC)
        await src.instant('up{job="a"}', at)
        await src.range("up", at, at + timedelta(hours=1), timedelta(seconds=15, microseconds=1))
    instant, ranged = script.requests
    assert instant.method == "POST"
    assert instant.url.path == "/select/0/prometheus/api/v1/query"
    assert instant.headers["Authorization"] == "Bearer s3cret"
    assert dict(httpx.QueryParams(instant.content.decode())) == {
        "query": 'up{job="a"}',
        "time": "1795899615.123",
    }
    assert ranged.url.path == "/select/0/prometheus/api/v1/query_range"
    assert dict(httpx.QueryParams(ranged.content.decode())) == {
        "query": "up",
        "start": "1795899615.123",
        "end": "1795903215.123",
        "step": "15.000",
    }


async def test_matrix_vector_and_scalar_answers_become_series() -> None:
    matrix = [
        {
            "metric": {"job": "b", "__name__": "lat", "a": "1"},
            "values": [[1795899615, "NaN"], [1795899630.5, "+Inf"], [1795899645, "-2.5e-3"]],
        },
        {"metric": {"job": "c"}, "values": [[1795899615, "1"]]},
    ]
    # VictoriaMetrics adds fields of its own; they must not matter.
    script = Script(
        api_answer("matrix", matrix, isPartial=False, stats={"seriesFetched": "2"}),
        api_answer("scalar", [1795899615, "42"]),
    )
    async with scripted(script) as src:
        got = await src.range("lat", T0, T0, timedelta(seconds=15))
        scalar = await src.instant("42", T0)
    t = datetime(2026, 11, 28, 21, 0, 15, tzinfo=UTC)
    assert [(s.metric, s.labels) for s in got] == [
        ("lat", (("a", "1"), ("job", "b"))),
        ("", (("job", "c"),)),
    ]
    (t0, v0), (t1, v1), (t2, v2) = got[0].points
    assert (t0, t1, t2) == (t, t + timedelta(seconds=15.5), t + timedelta(seconds=30))
    assert math.isnan(v0) and v1 == math.inf and v2 == -0.0025
    assert all(p[0].tzinfo is UTC for p in got[0].points)
    assert scalar == [Series("", (), ((t, 42.0),))]


async def test_naive_datetimes_are_refused() -> None:
    async with scripted(Script(api_answer("vector", []))) as src:
        with pytest.raises(ValueError, match="naive"):
            await src.instant("up", datetime(2026, 1, 1))  # noqa: DTZ001


async def test_closing_the_source_closes_its_transport() -> None:
    closed: list[bool] = []

    class Transport(httpx.MockTransport):
        async def aclose(self) -> None:
            closed.append(True)

    async with PrometheusSource("http://prom.test", transport=Transport(Script())):
        pass
    assert closed == [True]


@pytest.mark.parametrize("url", ["prom:9090", "ftp://prom", "http://", "http://[::1"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        PrometheusSource(url)


async def test_prometheus_from_settings(tmp_path: Path) -> None:
    assert prometheus_from_settings(Settings()) is None
    settings = Settings(
        prometheus=PrometheusSettings(url="http://prom:9090/", retries=1),
        secrets=Secrets(prometheus_token=SecretStr("t")),
    )
    source = prometheus_from_settings(settings)
    assert source is not None
    assert source.base_url == "http://prom:9090"
    await source.aclose()
    # A URL without a scheme is refused when the config is loaded, naming the key.
    cfg = tmp_path / "config.toml"
    cfg.write_text('[prometheus]\nurl = "prom:9090"\n')
    with pytest.raises(ConfigError, match=r"config\.toml:2: prometheus\.url: .*http\(s\) URL"):
        load_settings(cfg, env={})


async def test_configured_headers_go_with_every_query_and_credentials_stay_out_of_them(
    tmp_path: Path,
) -> None:
    # Mimir and Cortex pick the tenant from a header; the token still comes from the env.
    script = Script(api_answer("vector", []))
    settings = Settings(
        prometheus=PrometheusSettings(
            url="http://mimir:8080/prometheus", headers={"X-Scope-OrgID": "team-a"}
        ),
        secrets=Secrets(prometheus_token=SecretStr("t")),
    )
    source = prometheus_from_settings(settings)
    assert source is not None
    await source.aclose()
    async with scripted(script, headers=settings.prometheus.headers, bearer_token="t") as src:
        await src.instant("up", T0)
    sent = script.requests[0].headers
    assert sent["X-Scope-OrgID"] == "team-a"
    assert sent["Authorization"] == "Bearer t"
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[prometheus]\nurl = "http://p:9090"\nheaders = { Authorization = "Bearer x" }\n'
    )
    with pytest.raises(ConfigError, match=r"prometheus\.headers: .*'Authorization' may not be set"):
        load_settings(cfg, env={})
    cfg.write_text('[prometheus]\nurl = "http://p:9090"\nheaders = { "X Org" = "a" }\n')
    with pytest.raises(ConfigError, match=r"header name 'X Org' is not a valid"):
        load_settings(cfg, env={})
