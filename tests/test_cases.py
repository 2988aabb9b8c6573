"""The case format (CASE_FORMAT.md): reading the shared cases, write/read round trips,
errors that name file:line, and loading a case into real SQLite and PostgreSQL stores."""

from __future__ import annotations

import gzip
import json
import math
import tomllib
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sentinel.adapters.db import SqlStore, open_store
from sentinel.adapters.otlp import encode_json
from sentinel.cases import (
    Case,
    CaseMeta,
    CaseTruth,
    FaultKind,
    IngestReport,
    case_toml,
    ingest_case,
    read_case,
    write_case,
)
from sentinel.clock import SystemClock
from sentinel.errors import CaseFormatError
from sentinel.telemetry import (
    ChangeEvent,
    ChangeKind,
    Evaluation,
    GenAIOperation,
    Sample,
    Span,
    SpanEvent,
    SpanKind,
    SpanStatus,
    TopologyEdge,
)

CASES = Path("/work/shared/cases")
PUBLIC = sorted(p.name for p in CASES.iterdir() if p.is_dir()) if CASES.is_dir() else []
needs_cases = pytest.mark.skipif(not PUBLIC, reason=f"no shared cases at {CASES}")


def _data_files(folder: Path) -> set[str]:
    return {p.name.removesuffix(".gz") for p in folder.iterdir()}


def _by_key(spans: tuple[Span, ...] | list[Span]) -> dict[tuple[str, str], Span]:
    out = {(s.trace_id, s.span_id): s for s in spans}
    assert len(out) == len(spans), "span keys are not unique"
    return out


def _sample_key(s: Sample) -> tuple[Any, ...]:
    # NaN != NaN: compare values by their text so a NaN sample still matches itself.
    return (
        s.metric,
        s.labels,
        s.component,
        s.time,
        repr(s.value) if math.isnan(s.value) else s.value,
    )


def assert_same_case(a: Case, b: Case) -> None:
    assert a.meta == b.meta
    assert a.truth == b.truth
    assert _by_key(a.spans) == _by_key(b.spans)
    assert Counter(map(_sample_key, a.samples)) == Counter(map(_sample_key, b.samples))
    assert a.changes == b.changes
    assert a.topology == b.topology
    assert a.metric_types == b.metric_types


# --- the shared cases -------------------------------------------------------------------


@needs_cases
@pytest.mark.parametrize("name", PUBLIC)
def test_reads_the_shared_cases(name: str) -> None:
    folder = CASES / name
    files = _data_files(folder)
    case = read_case(folder)

    assert case.meta.id == name
    assert case.meta.start < case.meta.end
    assert case.meta.start.tzinfo is not None
    # Non-empty exactly where the file exists.
    assert bool(case.spans) == ("traces.jsonl" in files)
    assert bool(case.samples) == ("metrics.om" in files)
    assert bool(case.changes) == ("changes.jsonl" in files)
    assert bool(case.topology) == ("topology.jsonl" in files)
    assert case.rejected_spans == 0
    if case.samples:
        assert dict(case.metric_types)  # the # TYPE lines were kept
    # An engine never gets the truth by default.
    assert case.truth is None


@needs_cases
def test_public_04_is_metrics_only() -> None:
    case = read_case(CASES / "public-04-resource-exhaustion")
    assert case.spans == ()
    assert len(case.samples) > 0


@needs_cases
@pytest.mark.parametrize("name", PUBLIC)
def test_truth_read_only_when_asked_and_equal_to_the_toml(name: str) -> None:
    folder = CASES / name
    raw = tomllib.loads((folder / "case.toml").read_text())
    case = read_case(folder, with_truth=True)

    assert case.truth is not None
    t = raw["truth"]
    assert case.truth.root_cause == t["root_cause"]
    assert case.truth.fault == t["fault"]
    assert case.truth.fault_start == t["fault_start"]
    assert case.truth.change == t.get("change")
    assert case.truth.remediation == t.get("remediation")
    assert case.truth.fault_kind is FaultKind(t["fault"])
    assert case.meta.start == raw["case"]["start"]
    assert case.meta.end == raw["case"]["end"]


# --- round trips ------------------------------------------------------------------------


T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
T0_NS = int(T0.timestamp()) * 1_000_000_000


def _span(i: int, **over: Any) -> Span:
    base = Span(
        trace_id=f"{i + 1:032x}",
        span_id=f"{i + 1:016x}",
        parent_span_id=None,
        name="chat gpt-4o",
        kind=SpanKind.CLIENT,
        start_ns=T0_NS + i * 1_000_000,
        end_ns=T0_NS + i * 1_000_000 + 250_000,
        service="support-agent",
        component="model:gpt-4o",
        peer=None,
        operation=GenAIOperation.CHAT,
        status=SpanStatus.UNSET,
        status_message="",
        error_type=None,
        http_status=None,
        input_tokens=120,
        output_tokens=30,
        evaluations=(),
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 120,
            "gen_ai.usage.output_tokens": 30,
        },
        events=(),
        resource={"service.name": "support-agent"},
        scope="sentinel.test",
    )
    return base._replace(**over)


def _rich_case() -> Case:
    """A small case exercising what the format must carry: odd strings, attribute types,
    events with evaluator scores, errors, extra fields of change events."""
    eval_event = SpanEvent(
        name="gen_ai.evaluation.result",
        time_ns=T0_NS + 5,
        attributes={"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.25},
    )
    spans = (
        _span(0),
        _span(
            1,
            parent_span_id=f"{1:016x}",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 120,
                "gen_ai.usage.output_tokens": 30,
                "blob": b"\x00\xffbytes",
                "list": ["a", 1, 2.5, True],
                "nested": {"k": "v", "n": 3},
                "unicode": 'ünïcode "quoted"\n',
            },
            events=(eval_event,),
            evaluations=(Evaluation(name="relevance", score=0.25, label=None, time_ns=T0_NS + 5),),
        ),
        _span(
            2,
            name="GET /v1/customers/{id}",
            kind=SpanKind.SERVER,
            service="crm-api",
            component="service:crm-api",
            operation=None,
            status=SpanStatus.ERROR,
            status_message="upstream timeout",
            error_type="504",
            http_status=504,
            input_tokens=None,
            output_tokens=None,
            attributes={"http.response.status_code": 504},
            resource={"service.name": "crm-api", "service.version": "2.26.5"},
            scope="otelhttp",
        ),
    )
    samples = tuple(
        Sample(
            metric=metric,
            labels=(("component", "model:gpt-4o"), ("le", le))
            if le
            else (("component", "model:gpt-4o"),),
            component="model:gpt-4o",
            time=T0 + timedelta(seconds=15 * k, microseconds=123_000 * (k % 2)),
            value=value,
        )
        for k in range(4)
        for metric, le, value in (
            ("component_requests_total", "", float(100 + k)),
            ("latency_seconds_bucket", "0.5", float(k)),
            ("latency_seconds_bucket", "+Inf", float(2 * k)),
            ("latency_seconds_count", "", float(2 * k)),
            ("latency_seconds_sum", "", 0.1 * k),
            ("queue_depth", "", -1.5 if k else math.inf),
        )
    )
    return Case(
        meta=CaseMeta(
            id="rich-001",
            description='quotes " and \\ backslash\nnew line, tab\t, ünïcode, bell \x07',
            start=T0,
            end=T0 + timedelta(minutes=50),
        ),
        truth=CaseTruth(
            root_cause="prompt:support-agent",
            fault="a free-text fault",
            fault_start=T0 + timedelta(minutes=32, microseconds=500),
            change="9f1c2ab",
        ),
        spans=spans,
        samples=samples,
        changes=(
            ChangeEvent(
                id="9f1c2ab",
                time=T0 + timedelta(minutes=31, seconds=40),
                component="prompt:support-agent",
                affects=("agent:support-agent",),
                kind=ChangeKind.PROMPT,
                author="dana",
                summary="tighten refund wording",
                version="3.1",  # an extra field: kept through write, read and the store
            ),
            ChangeEvent(id="x1", time=T0, component="config:ledger"),
        ),
        topology=(TopologyEdge(caller="service:frontend", callee="service:cartservice"),),
        metric_types=(("component_requests", "counter"), ("latency_seconds", "histogram")),
    )


@pytest.mark.parametrize("packed", [True, False], ids=["gzip", "plain"])
def test_round_trip_rich_case(tmp_path: Path, packed: bool) -> None:
    case = _rich_case()
    write_case(case, tmp_path / "c", gzip=packed)

    suffix = ".gz" if packed else ""
    assert {p.name for p in (tmp_path / "c").iterdir()} == {
        "case.toml",
        f"traces.jsonl{suffix}",
        f"metrics.om{suffix}",
        f"changes.jsonl{suffix}",
        f"topology.jsonl{suffix}",
    }
    assert read_case(tmp_path / "c").truth is None
    back = read_case(tmp_path / "c", with_truth=True)
    assert_same_case(case, back)
    assert back.truth is not None and back.truth.fault_kind is None
    # Nothing but the case is left beside it.
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


@needs_cases
def test_round_trip_shared_case(tmp_path: Path) -> None:
    case = read_case(CASES / "public-01-prompt-regression", with_truth=True)
    write_case(case, tmp_path / "gz")
    assert_same_case(case, read_case(tmp_path / "gz", with_truth=True))
    # And plain: a reader accepts both, and the two hold the same case.
    write_case(case, tmp_path / "plain", gzip=False)
    assert_same_case(case, read_case(tmp_path / "plain", with_truth=True))
    # One ExportTraceServiceRequest per line, 500 spans at most each.
    lines = (tmp_path / "plain" / "traces.jsonl").read_text().splitlines()
    assert len(lines) == math.ceil(len(case.spans) / 500)
    assert (tmp_path / "plain" / "metrics.om").read_text().endswith("# EOF\n")


def test_gzip_output_is_deterministic(tmp_path: Path) -> None:
    case = _rich_case()
    write_case(case, tmp_path / "a")
    write_case(case, tmp_path / "b")
    for p in (tmp_path / "a").iterdir():
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes(), p.name


def test_case_toml_is_valid_toml_with_escapes() -> None:
    case = _rich_case()
    doc = tomllib.loads(case_toml(case.meta, case.truth))
    assert doc["case"]["description"] == case.meta.description
    assert doc["truth"]["fault_start"] == case.truth.fault_start  # type: ignore[union-attr]
    assert "remediation" not in doc["truth"]


def test_write_refuses_non_empty_folder_unless_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "c"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    case = _rich_case()
    with pytest.raises(CaseFormatError, match=r"not empty.*overwrite=True"):
        write_case(case, target)
    assert (target / "notes.txt").read_text() == "keep me"

    write_case(case, target, overwrite=True)
    assert not (target / "notes.txt").exists()
    assert_same_case(case, read_case(target, with_truth=True))
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


def test_write_into_an_empty_existing_folder(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    write_case(_rich_case(), tmp_path / "c")
    assert read_case(tmp_path / "c").meta.id == "rich-001"


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    bad = replace(
        _rich_case(),
        samples=(Sample("not a metric name", (), None, T0, 1.0),),
    )
    with pytest.raises(CaseFormatError, match="not a metric name"):
        write_case(bad, tmp_path / "c")
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_a_case_without_telemetry(tmp_path: Path) -> None:
    empty = replace(_rich_case(), spans=(), samples=())
    with pytest.raises(CaseFormatError, match="neither spans nor samples"):
        write_case(empty, tmp_path / "c")
    assert list(tmp_path.iterdir()) == []


# --- errors -----------------------------------------------------------------------------

GOOD_TOML = """\
[case]
id = "c-1"
description = ""
start = 2026-11-01T10:00:00Z
end = 2026-11-01T10:50:00Z
"""


def _trace_line(**span_over: Any) -> str:
    request = encode_json([_span(0)])
    request["resourceSpans"][0]["scopeSpans"][0]["spans"][0].update(span_over)
    return json.dumps(request)


def _make(folder: Path, files: dict[str, str | bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        if name.endswith(".gz"):
            data = gzip.compress(data)
        (folder / name).write_bytes(data)
    return folder


def _error(folder: Path, *, with_truth: bool = False) -> str:
    with pytest.raises(CaseFormatError) as info:
        read_case(folder, with_truth=with_truth)
    return str(info.value)


def test_minimal_case_reads(tmp_path: Path) -> None:
    case = read_case(_make(tmp_path / "c", {"case.toml": GOOD_TOML, "traces.jsonl": _trace_line()}))
    assert case.meta == CaseMeta(id="c-1", start=T0, end=T0 + timedelta(minutes=50), description="")
    assert case.spans == (_span(0),)


def test_missing_case_toml(tmp_path: Path) -> None:
    folder = _make(tmp_path / "c", {"traces.jsonl": _trace_line()})
    msg = _error(folder)
    assert f"{folder / 'case.toml'}: missing" in msg


def test_missing_folder(tmp_path: Path) -> None:
    assert "no such directory" in _error(tmp_path / "nope")


def test_bad_toml_names_the_line(tmp_path: Path) -> None:
    toml = GOOD_TOML.replace('description = ""', "description = oops")
    folder = _make(tmp_path / "c", {"case.toml": toml, "traces.jsonl": _trace_line()})
    assert f"{folder / 'case.toml'}:3: not valid TOML" in _error(folder)


def test_missing_case_id(tmp_path: Path) -> None:
    toml = GOOD_TOML.replace('id = "c-1"\n', "")
    folder = _make(tmp_path / "c", {"case.toml": toml, "traces.jsonl": _trace_line()})
    msg = _error(folder)
    assert f"{folder / 'case.toml'}:1: [case].id: required but missing" in msg


def test_missing_case_table(tmp_path: Path) -> None:
    folder = _make(tmp_path / "c", {"case.toml": "", "traces.jsonl": _trace_line()})
    assert "case.toml:1: missing the [case] table" in _error(folder)


def test_end_before_start(tmp_path: Path) -> None:
    toml = GOOD_TOML.replace("end = 2026-11-01T10:50:00Z", "end = 2026-11-01T09:00:00Z")
    folder = _make(tmp_path / "c", {"case.toml": toml, "traces.jsonl": _trace_line()})
    msg = _error(folder)
    assert "case.toml:5: [case].end: end 2026-11-01T09:00:00Z is not after start" in msg


def test_naive_and_quoted_datetimes(tmp_path: Path) -> None:
    naive = GOOD_TOML.replace("start = 2026-11-01T10:00:00Z", "start = 2026-11-01T10:00:00")
    folder = _make(tmp_path / "a", {"case.toml": naive, "traces.jsonl": _trace_line()})
    assert "case.toml:4: [case].start: time '2026-11-01T10:00:00' has no timezone" in _error(folder)

    quoted = GOOD_TOML.replace("start = 2026-11-01T10:00:00Z", 'start = "2026-11-01T10:00:00Z"')
    folder = _make(tmp_path / "b", {"case.toml": quoted, "traces.jsonl": _trace_line()})
    msg = _error(folder)
    assert "case.toml:4: [case].start:" in msg
    assert "expected a date-time with a zone" in msg
    assert "'2026-11-01T10:00:00Z'" in msg


def test_unknown_top_level_table_and_key(tmp_path: Path) -> None:
    folder = _make(
        tmp_path / "a",
        {"case.toml": GOOD_TOML + "\n[extra]\nx = 1\n", "traces.jsonl": _trace_line()},
    )
    assert "case.toml:7: unknown top-level table 'extra'" in _error(folder)
    folder = _make(
        tmp_path / "b", {"case.toml": "x = 1\n" + GOOD_TOML, "traces.jsonl": _trace_line()}
    )
    assert "case.toml:1: unknown top-level key 'x'" in _error(folder)


def test_unknown_key_in_case_table(tmp_path: Path) -> None:
    toml = GOOD_TOML + 'owner = "dana"\n'
    folder = _make(tmp_path / "c", {"case.toml": toml, "traces.jsonl": _trace_line()})
    assert "case.toml:6: [case].owner: unknown key" in _error(folder)


def test_truth_is_not_parsed_unless_asked(tmp_path: Path) -> None:
    toml = GOOD_TOML + '\n[truth]\nroot_cause = "not-a-component"\nfault = "x"\n'
    folder = _make(tmp_path / "c", {"case.toml": toml, "traces.jsonl": _trace_line()})
    assert read_case(folder).truth is None  # an engine never trips over the truth
    msg = _error(folder, with_truth=True)
    assert "case.toml:8: [truth].root_cause:" in msg
    assert "'not-a-component'" in msg


def test_truth_missing_fault_start(tmp_path: Path) -> None:
    toml = GOOD_TOML + '\n[truth]\nroot_cause = "tool:crm"\nfault = "tool_errors"\n'
    folder = _make(tmp_path / "c", {"case.toml": toml, "traces.jsonl": _trace_line()})
    assert "case.toml:7: [truth].fault_start: required but missing" in _error(
        folder, with_truth=True
    )


def test_needs_traces_or_metrics(tmp_path: Path) -> None:
    folder = _make(tmp_path / "c", {"case.toml": GOOD_TOML, "changes.jsonl": ""})
    assert "needs traces.jsonl or metrics.om" in _error(folder)


def test_traces_line_not_json(tmp_path: Path) -> None:
    lines = _trace_line() + "\n" + '{"resourceSpans": [' + "x" * 500 + "\n"
    folder = _make(tmp_path / "c", {"case.toml": GOOD_TOML, "traces.jsonl.gz": lines})
    msg = _error(folder)
    assert f"{folder / 'traces.jsonl.gz'}:2: not a JSON value" in msg
    assert len(msg) < 400  # the offending line is truncated
    assert "..." in msg


def test_traces_line_with_bad_hex_ids(tmp_path: Path) -> None:
    folder = _make(
        tmp_path / "c",
        {"case.toml": GOOD_TOML, "traces.jsonl": _trace_line(traceId="zz" * 16)},
    )
    msg = _error(folder)
    assert f"{folder / 'traces.jsonl'}:1:" in msg
    assert "traceId" in msg
    assert repr("zz" * 16) in msg


def test_rejected_spans_are_counted_not_fatal(tmp_path: Path) -> None:
    lines = _trace_line() + "\n" + _trace_line(traceId="0" * 32) + "\n"
    case = read_case(_make(tmp_path / "c", {"case.toml": GOOD_TOML, "traces.jsonl": lines}))
    assert len(case.spans) == 1
    assert case.rejected_spans == 1


def test_changes_line_missing_id(tmp_path: Path) -> None:
    changes = (
        '{"id": "a1", "time": "2026-11-01T10:31:40Z", "component": "prompt:support-agent"}\n'
        '{"time": "2026-11-01T10:31:40Z", "component": "prompt:support-agent"}\n'
    )
    folder = _make(
        tmp_path / "c",
        {"case.toml": GOOD_TOML, "traces.jsonl": _trace_line(), "changes.jsonl": changes},
    )
    msg = _error(folder)
    assert f"{folder / 'changes.jsonl'}:2: id: required but missing" in msg


def test_changes_line_with_bad_component(tmp_path: Path) -> None:
    changes = '{"id": "a1", "time": "2026-11-01T10:31:40Z", "component": "Prompt/support"}\n'
    folder = _make(
        tmp_path / "c",
        {"case.toml": GOOD_TOML, "traces.jsonl": _trace_line(), "changes.jsonl.gz": changes},
    )
    msg = _error(folder)
    assert f"{folder / 'changes.jsonl.gz'}:1: component:" in msg
    assert "'Prompt/support'" in msg


def test_changes_line_not_an_object(tmp_path: Path) -> None:
    folder = _make(
        tmp_path / "c",
        {"case.toml": GOOD_TOML, "traces.jsonl": _trace_line(), "changes.jsonl": "\n[1, 2]\n"},
    )
    assert "changes.jsonl:2: expected a JSON object, got [1, 2]" in _error(folder)


def test_topology_line_with_bad_callee(tmp_path: Path) -> None:
    topo = '{"caller": "service:a", "callee": "b"}\n'
    folder = _make(
        tmp_path / "c",
        {"case.toml": GOOD_TOML, "traces.jsonl": _trace_line(), "topology.jsonl": topo},
    )
    msg = _error(folder)
    assert "topology.jsonl:1: callee:" in msg and "'b'" in msg


def test_both_plain_and_gzip_present(tmp_path: Path) -> None:
    changes = '{"id": "a1", "time": "2026-11-01T10:31:40Z", "component": "config:x"}\n'
    folder = _make(
        tmp_path / "c",
        {
            "case.toml": GOOD_TOML,
            "traces.jsonl": _trace_line(),
            "changes.jsonl": changes,
            "changes.jsonl.gz": changes,
        },
    )
    assert "both changes.jsonl and changes.jsonl.gz exist" in _error(folder)


def test_truncated_gzip(tmp_path: Path) -> None:
    folder = _make(tmp_path / "c", {"case.toml": GOOD_TOML})
    data = gzip.compress((_trace_line() + "\n").encode() * 50)
    (folder / "traces.jsonl.gz").write_bytes(data[: len(data) // 2])
    msg = _error(folder)
    assert "traces.jsonl.gz:" in msg and "cannot read" in msg


def test_metrics_errors_name_file_and_line(tmp_path: Path) -> None:
    om = "# TYPE up gauge\nup 1 1795899615\nup 1\n# EOF\n"
    folder = _make(tmp_path / "c", {"case.toml": GOOD_TOML, "metrics.om.gz": om})
    msg = _error(folder)
    assert f"{folder / 'metrics.om.gz'}:3: sample without a timestamp" in msg


def test_metrics_not_utf8(tmp_path: Path) -> None:
    om = b'# TYPE up gauge\nup{x="\xff"} 1 1795899615\n# EOF\n'
    folder = _make(tmp_path / "c", {"case.toml": GOOD_TOML, "metrics.om": om})
    assert "metrics.om:2: not UTF-8" in _error(folder)


# --- ingest into real stores ------------------------------------------------------------


def _expected(case: Case, *, first: bool) -> IngestReport:
    return IngestReport(
        spans_new=len(case.spans) if first else 0,
        spans_seen=len(case.spans),
        samples_new=len(case.samples) if first else 0,
        changes_new=len(case.changes) if first else 0,
        rejected_spans=case.rejected_spans,
    )


def _ingest_and_check(store: SqlStore, case: Case, *, check_new_counts: bool = True) -> None:
    """Ingest twice; what went in comes back out, and the second time adds nothing.

    ``check_new_counts`` also checks the report's samples_new / changes_new, which depend on
    the store returning honest row counts (see test_ingest_report_counts_postgres).
    """
    calls: list[tuple[str, int, int]] = []
    report = ingest_case(store, case, progress=lambda *a: calls.append(a))
    # Progress starts at 0 and ends at the total of each stage.
    for stage, items in (
        ("spans", case.spans),
        ("samples", case.samples),
        ("changes", case.changes),
    ):
        mine = [(d, t) for s, d, t in calls if s == stage]
        assert mine[0] == (0, len(items)) and mine[-1] == (len(items), len(items))
        assert [d for d, _ in mine] == sorted(d for d, _ in mine)

    # What went in comes back out.
    lo = min(s.start for s in case.spans) - timedelta(seconds=1)
    hi = max(s.start for s in case.spans) + timedelta(seconds=1)
    assert _by_key(store.spans(lo, hi)) == _by_key(case.spans)
    times = [c.time for c in case.changes] + [s.time for s in case.samples] + [lo, hi]
    window = (min(times) - timedelta(seconds=1), max(times) + timedelta(seconds=1))
    assert store.changes(*window) == sorted(case.changes, key=lambda c: (c.time, c.id))
    stored = store.samples(*window)

    # The store keeps sample times to the millisecond.
    def ms(s: Sample) -> tuple[Any, ...]:
        return (s.metric, s.labels, s.component, round(s.time.timestamp() * 1000), s.value)

    assert Counter(map(ms, stored)) == Counter(map(ms, case.samples))

    # A second ingest adds nothing: the store holds exactly what it held.
    again = ingest_case(store, case)
    assert store.span_count() == len(case.spans)
    assert len(store.samples(*window)) == len(stored)
    assert len(store.changes(*window)) == len(case.changes)

    assert (report.spans_new, report.spans_seen) == (len(case.spans), len(case.spans))
    assert (again.spans_new, again.spans_seen) == (0, len(case.spans))
    if check_new_counts:
        assert report == _expected(case, first=True)
        assert again == _expected(case, first=False)


def _store_case() -> Case:
    """The rich case plus a slice of a shared one, so chunking (2,000 spans) is exercised."""
    case = _rich_case()
    if PUBLIC:
        shared = read_case(CASES / "public-01-prompt-regression")
        case = replace(
            case,
            spans=case.spans + shared.spans[:4_500],
            samples=case.samples + shared.samples[:25_000],
            changes=case.changes + shared.changes,
        )
    return case


def test_ingest_into_sqlite(tmp_path: Path) -> None:
    store = open_store("sqlite:///" + str(tmp_path / "s.db"), SystemClock())
    try:
        _ingest_and_check(store, _store_case())
    finally:
        store.close()


@pytest.mark.postgres
def test_ingest_into_postgres(postgres_url: str) -> None:
    store = open_store(postgres_url, SystemClock())
    try:
        _ingest_and_check(store, _store_case(), check_new_counts=False)
    finally:
        store.close()


@pytest.mark.postgres
def test_ingest_report_counts_postgres(postgres_url: str) -> None:
    store = open_store(postgres_url, SystemClock())
    try:
        case = _rich_case()
        assert ingest_case(store, case) == _expected(case, first=True)
        assert ingest_case(store, case) == _expected(case, first=False)
    finally:
        store.close()


def test_a_weak_truth_survives_a_write_and_a_read(tmp_path: Path) -> None:
    import dataclasses

    from sentinel.cases import TruthBasis
    from sentinel.sim import FaultSpec, Topology, simulate_case

    case = simulate_case(FaultSpec(topology=Topology.SUPPORT, fault=FaultKind.TOOL_LATENCY, seed=1))
    assert case.truth is not None
    weak = dataclasses.replace(case, truth=case.truth.model_copy(update={"basis": TruthBasis.WEAK}))
    write_case(weak, tmp_path / "weak")
    assert 'basis = "weak"' in (tmp_path / "weak" / "case.toml").read_text()
    back = read_case(tmp_path / "weak", with_truth=True)
    assert back.truth is not None and back.truth.basis is TruthBasis.WEAK
    write_case(case, tmp_path / "confirmed")
    assert "basis" not in (tmp_path / "confirmed" / "case.toml").read_text()
    assert read_case(tmp_path / "confirmed", with_truth=True).truth.basis is TruthBasis.CONFIRMED  # type: ignore[union-attr]
