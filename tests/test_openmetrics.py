"""sentinel.openmetrics: parsing the shared cases, errors that name source:line, the writer's
shape, a hypothesis round trip write -> parse, and (marked prometheus) that promtool and a
real Prometheus read the writer's output back to the same numbers."""

from __future__ import annotations

import gzip
import math
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sentinel.adapters.prometheus import PrometheusSource
from sentinel.errors import CaseFormatError
from sentinel.openmetrics import METRIC_TYPES, parse_openmetrics, write_openmetrics
from sentinel.telemetry import Sample, series_component

CASES_DIR = Path(__file__).resolve().parents[2] / "shared" / "cases"
CASE_FILES = sorted(CASES_DIR.glob("*/metrics.om.gz"))
UTC_TIME = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)  # 1700000000


def read_text(path: Path) -> str:
    return gzip.decompress(path.read_bytes()).decode("utf-8")


def declared_types(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))


def value_key(v: float) -> str:
    # NaN != NaN, and -0.0 == 0.0: compare the exact float instead.
    return "nan" if math.isnan(v) else v.hex()


def sample_key(s: Sample) -> tuple[object, ...]:
    return (s.metric, s.labels, s.component, s.time, value_key(s.value))


def test_shared_cases_are_present() -> None:
    assert CASE_FILES, f"no */metrics.om.gz under {CASES_DIR}"


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: p.parent.name)
def test_parses_every_shared_case(path: Path) -> None:
    text = read_text(path)
    window = tomllib.loads((path.parent / "case.toml").read_text(encoding="utf-8"))["case"]
    samples = parse_openmetrics(text, str(path))

    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(samples) == len(lines)
    for line, s in ((lines[0], samples[0]), (lines[-1], samples[-1])):
        head, value, ts = line.rsplit(" ", 2)
        assert s.metric == head.split("{", 1)[0]
        assert s.value == float(value)
        assert s.time == datetime.fromtimestamp(int(ts), UTC)
    assert all(window["start"] <= s.time <= window["end"] for s in samples)
    assert all(s.time.tzinfo is UTC for s in samples)
    assert all(s.component == series_component(dict(s.labels)) for s in samples)
    assert all(s.component for s in samples)  # these cases name a component on every series
    assert all(s.labels == tuple(sorted(s.labels)) for s in samples)


def test_parses_metadata_escapes_special_values_and_fractional_times() -> None:
    text = (
        "# TYPE http_requests counter\n"
        '# HELP http_requests Requests, with "quotes" and a \\\\ backslash.\n'
        "# UNIT http_requests requests\n"
        'http_requests_total{path="/a\\"b\\\\c\\nd",job="api"} 12 1700000000.5\n'
        'http_requests_total{job="api",path="} # {"} 1.5e3 1700000000.25 # {trace_id="a"} 1\n'
        "# TYPE temp gauge\n"
        "temp NaN 1700000000\n"
        "temp{} +Inf 1700000001\n"
        "temp -Inf 1700000002.1234567\n"
        'other{component="tool:crm",service_name="x"} -0.5 1.7e9\n'
        'other{service_name="x"} 0 -1.5\n'
        "# EOF\n"
    )
    s = parse_openmetrics(text, "t.om")
    assert [x.metric for x in s] == ["http_requests_total"] * 2 + ["temp"] * 3 + ["other"] * 2
    assert s[0].labels == (("job", "api"), ("path", '/a"b\\c\nd'))
    assert s[0].component == "service:api"  # from the job label
    assert s[0].value == 12.0
    assert s[0].time == UTC_TIME + timedelta(seconds=0.5)
    assert s[1].labels == (("job", "api"), ("path", "} # {"))
    assert s[1].value == 1500.0
    assert s[1].time == UTC_TIME + timedelta(milliseconds=250)
    assert math.isnan(s[2].value) and s[2].labels == () and s[2].component is None
    assert s[3].value == math.inf
    assert s[4].value == -math.inf
    assert s[4].time == UTC_TIME + timedelta(seconds=2, microseconds=123457)  # rounded
    assert s[5].component == "tool:crm"
    assert s[5].time == UTC_TIME  # 1.7e9
    assert s[6].time == datetime(1969, 12, 31, 23, 59, 58, 500000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("a 1\n# EOF\n", 1, "without a timestamp"),
        ('# TYPE a gauge\na{b="c"} x 1\n# EOF\n', 2, "invalid sample value 'x'"),
        ("a 1_000 1\n# EOF\n", 1, "invalid sample value"),
        ('a{b="c\\t"} 1 1\n# EOF\n', 1, "invalid escape"),
        ('a{b="c} 1 1\n# EOF\n', 1, "malformed label set"),
        ('a{b="c",} 1 1\n# EOF\n', 1, "malformed label set"),
        ("a{b=c} 1 1\n# EOF\n", 1, "malformed label set"),
        ('a{b="1",b="2"} 1 1\n# EOF\n', 1, "given twice"),
        ('a{__name__="b"} 1 1\n# EOF\n', 1, "__name__"),
        ("9a 1 1\n# EOF\n", 1, "invalid metric name"),
        ("a  1 1\n# EOF\n", 1, "malformed sample"),
        ("a 1 1 2\n# EOF\n", 1, "malformed sample"),
        ("a 1 NaN\n# EOF\n", 1, "invalid timestamp"),
        ("a 1 1e999\n# EOF\n", 1, "out of range"),
        ("a 1 1\n\nb 1 1\n# EOF\n", 2, "blank line"),
        ("a 1 1\n# EOF\nb 1 1\n", 3, "content after '# EOF'"),
        ("a 1 1\nb 1 1\n", 2, "missing '# EOF'"),
        ("# TYPE a sometype\n# EOF\n", 1, "unknown metric type 'sometype'"),
        ("# TYPE a gauge\n# TYPE a counter\n# EOF\n", 2, "first on line 1"),
        ("# just a comment\n# EOF\n", 1, "no other comments"),
        ("# TYPE 9a gauge\n# EOF\n", 1, "invalid metric family name"),
    ],
)
def test_errors_name_the_source_line_and_the_text(text: str, line: int, words: str) -> None:
    with pytest.raises(CaseFormatError) as err:
        parse_openmetrics(text, "case/metrics.om")
    message = str(err.value)
    assert message.startswith(f"case/metrics.om:{line}: "), message
    assert words in message
    offending = text.split("\n")[line - 1]
    if offending:
        assert repr(offending) in message or repr(offending[:20])[:-1] in message


def test_an_empty_text_lacks_its_eof() -> None:
    with pytest.raises(CaseFormatError, match=r"^x:1: missing '# EOF'"):
        parse_openmetrics("", "x")


# --- the writer ---------------------------------------------------------------------------


def at(seconds: float) -> datetime:
    return UTC_TIME + timedelta(seconds=seconds)


def sample(metric: str, labels: dict[str, str], when: datetime, value: float) -> Sample:
    labels_ = tuple(sorted(labels.items()))
    return Sample(metric, labels_, series_component(labels), when, float(value))


def test_writer_groups_families_and_names_counters_x_total() -> None:
    samples = [
        sample("req_total", {"component": "agent:a"}, at(15), 2),
        sample("temp", {}, at(0), 1.25),
        sample("req_total", {"component": "agent:a"}, at(0), 1),
        sample("lat_bucket", {"le": "+Inf"}, at(0), 3),
        sample("lat_count", {}, at(0), 3),
        sample("req_total", {"component": "agent:b"}, at(0), 7),
        sample("lat_sum", {}, at(0), 0.5),
    ]
    text = write_openmetrics(samples, {"req": "counter", "lat": "histogram"})
    assert text == (
        "# TYPE lat histogram\n"
        'lat_bucket{le="+Inf"} 3 1700000000\n'
        "lat_count 3 1700000000\n"
        "lat_sum 0.5 1700000000\n"
        "# TYPE req counter\n"
        'req_total{component="agent:a"} 1 1700000000\n'
        'req_total{component="agent:a"} 2 1700000015\n'
        'req_total{component="agent:b"} 7 1700000000\n'
        "# TYPE temp unknown\n"
        "temp 1.25 1700000000\n"
        "# EOF\n"
    )
    assert sorted(map(sample_key, parse_openmetrics(text, "w"))) == sorted(map(sample_key, samples))


def test_writer_accepts_a_counter_named_by_its_sample() -> None:
    text = write_openmetrics([sample("req_total", {}, at(0), 1)], {"req_total": "counter"})
    assert text.startswith("# TYPE req counter\nreq_total 1 1700000000\n")


def test_writer_escapes_and_spells_special_values() -> None:
    samples = [
        sample("x", {"v": 'a"b\\c\nd'}, at(0.001), math.nan),
        sample("x", {"v": "2"}, at(-1_700_000_001.5), math.inf),
        sample("x", {"v": "3"}, at(0.000001), -math.inf),
        sample("x", {"v": "4"}, at(0), -0.0),
        sample("x", {"v": "5"}, at(0), 1e300),
        sample("x", {"v": "6"}, at(0), 0.1),
    ]
    lines = write_openmetrics(samples).splitlines()
    assert lines == [
        "# TYPE x unknown",
        'x{v="2"} +Inf -1.5',
        'x{v="3"} -Inf 1700000000.000001',
        'x{v="4"} -0 1700000000',
        'x{v="5"} 1e+300 1700000000',
        'x{v="6"} 0.1 1700000000',
        'x{v="a\\"b\\\\c\\nd"} NaN 1700000000.001',
        "# EOF",
    ]


@pytest.mark.parametrize(
    ("samples", "types", "words"),
    [
        ([sample("a", {}, at(0), 1)], {"a": "counter"}, "named a_total, a_created"),
        ([sample("a", {}, at(0), 1)], {"a": "summary", "a_count": "gauge"}, "two families"),
        ([sample("a", {}, at(0), 1)], {"a": "histogrm"}, "unknown metric type"),
        ([sample("a", {}, at(0), 1)], {"a": "gauge", "a_total": "counter"}, "two types"),
        ([sample("http.server.duration", {}, at(0), 1)], None, "not a valid OpenMetrics"),
        ([sample("a", {"b-c": "1"}, at(0), 1)], None, "not a valid label name"),
        ([sample("a", {"__name__": "b"}, at(0), 1)], None, "not a valid label name"),
        ([sample("a", {}, datetime(2026, 1, 1), 1)], None, "naive"),  # noqa: DTZ001
    ],
)
def test_writer_refuses_what_the_format_cannot_hold(
    samples: list[Sample], types: dict[str, str] | None, words: str
) -> None:
    with pytest.raises(CaseFormatError, match=re.escape(words)):
        write_openmetrics(samples, types)


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: p.parent.name)
def test_writer_reads_back_the_shared_cases(path: Path) -> None:
    text = read_text(path)
    samples = parse_openmetrics(text, str(path))
    written = write_openmetrics(samples, declared_types(text))
    assert declared_types(written) == declared_types(text)
    again = parse_openmetrics(written, "written")
    assert sorted(map(sample_key, again)) == sorted(map(sample_key, samples))


# --- round trip ---------------------------------------------------------------------------

METRIC_NAMES = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", fullmatch=True)
LABEL_NAMES = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: n != "__name__"
)
LABEL_VALUES = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
TIMES = st.datetimes(
    min_value=datetime(1900, 1, 1),  # noqa: DTZ001 - hypothesis wants naive bounds
    max_value=datetime(2300, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
VALUES = st.floats(allow_nan=True, allow_infinity=True)


def samples_named(names: st.SearchStrategy[str]) -> st.SearchStrategy[list[Sample]]:
    labels = st.dictionaries(LABEL_NAMES, LABEL_VALUES, max_size=3)
    one = st.builds(sample, names, labels, TIMES, VALUES)
    return st.lists(one, max_size=25)


@st.composite
def typed_samples(draw: st.DrawFn) -> tuple[list[Sample], dict[str, str]]:
    families = draw(
        st.dictionaries(
            METRIC_NAMES.filter(lambda n: not n.endswith("_total")),
            st.sampled_from(sorted(METRIC_TYPES)),
            min_size=1,
            max_size=4,
        )
    )
    names = [f + suffix for f, kind in families.items() for suffix in METRIC_TYPES[kind]]
    assume(len(names) == len(set(names)))
    return draw(samples_named(st.sampled_from(names))), families


@settings(deadline=None)
@given(samples_named(METRIC_NAMES))
def test_round_trip_without_types(samples: list[Sample]) -> None:
    text = write_openmetrics(samples)
    parsed = parse_openmetrics(text, "<written>")
    assert sorted(map(sample_key, parsed)) == sorted(map(sample_key, samples))
    assert write_openmetrics(parsed) == text


@settings(deadline=None)
@given(typed_samples())
def test_round_trip_with_types_keeps_families_together(
    drawn: tuple[list[Sample], dict[str, str]],
) -> None:
    samples, types = drawn
    text = write_openmetrics(samples, types)
    assert text.endswith("# EOF\n")
    parsed = parse_openmetrics(text, "<written>")
    assert sorted(map(sample_key, parsed)) == sorted(map(sample_key, samples))
    family_of = {f + sfx: f for f, kind in types.items() for sfx in METRIC_TYPES[kind]}
    order: list[str] = []
    # split("\n"), not splitlines(): a label value may hold a raw \r or \u2028.
    for line in text.split("\n")[:-1]:
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ")
            assert kind == types[family]
            order.append(family)
        elif line != "# EOF":
            name = re.match(r"[a-zA-Z0-9_:]+", line)
            assert name is not None and family_of[name.group()] == order[-1]
    assert len(order) == len(set(order))  # one TYPE line per family: never interleaved


# --- promtool and the real Prometheus -----------------------------------------------------


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name!r} not found; install the Debian package: apt-get install prometheus")
    return path


@pytest.mark.prometheus
def test_promtool_accepts_the_writers_output(tmp_path: Path) -> None:
    text = read_text(CASE_FILES[0])
    written = tmp_path / "metrics.om"
    written.write_text(write_openmetrics(parse_openmetrics(text, "case"), declared_types(text)))
    result = subprocess.run(
        [_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(written),
         str(tmp_path / "data")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


TRICKY_LABELS: Sequence[str] = ('a"b', "c\\d", "e\nf", "ünï €", "} # {", 'x,y="z"', "")
TRICKY_VALUES: Sequence[float] = (math.nan, math.inf, -math.inf, 1.5, -0.25, 1e300, 0.0)


@pytest.mark.prometheus
async def test_prometheus_reads_the_writers_output_back(
    tmp_path: Path, prometheus_from_file: Callable[[Path], str]
) -> None:
    base = datetime(2026, 11, 28, 21, 0, tzinfo=UTC)
    samples = [
        sample("om_rt_requests_total", {"v": label}, base + timedelta(seconds=i * 1.001 + 0.123),
               value)
        for i, (label, value) in enumerate(zip(TRICKY_LABELS, TRICKY_VALUES, strict=True))
    ]  # fmt: skip
    path = tmp_path / "tricky.om"
    path.write_text(write_openmetrics(samples, {"om_rt_requests": "counter"}), encoding="utf-8")
    query_time = base + timedelta(minutes=1)
    async with PrometheusSource(prometheus_from_file(path), retries=0) as prom:
        values = await prom.instant("om_rt_requests_total", query_time)
        stamps = await prom.instant("timestamp(om_rt_requests_total)", query_time)
    expected = {s.labels: s for s in samples}
    # An empty label value is no label at all in Prometheus.
    expected[()] = expected.pop((("v", ""),))
    assert {s.labels for s in values} == set(expected)
    for series in values:
        assert series.metric == "om_rt_requests_total"
        assert value_key(series.points[0][1]) == value_key(expected[series.labels].value)
    assert {s.labels for s in stamps} == set(expected)
    epoch, ms = datetime(1970, 1, 1, tzinfo=UTC), timedelta(milliseconds=1)
    for series in stamps:
        # Prometheus keeps milliseconds, and these times have no finer part.
        stamp_ms = round(series.points[0][1] * 1000)
        assert stamp_ms * ms == expected[series.labels].time - epoch
