"""Incident cases on disk (../shared/CASE_FORMAT.md): read, write, and load into the store.

A case is a folder: ``case.toml`` (metadata and, when known, the truth) plus optional
``traces.jsonl``, ``metrics.om``, ``changes.jsonl`` and ``topology.jsonl``, each possibly
gzip-compressed. This module owns the files: finding them, gzip, line numbers, atomic
writes, and turning every malformed line into a ``CaseFormatError`` naming ``file:line``.

The truth is kept away from engines: ``read_case`` does not even validate ``[truth]``
unless a scorer asks for it with ``with_truth=True``.

What must not live here: the wire formats themselves (OTLP/JSON is ``adapters/otlp.py``,
OpenMetrics is ``openmetrics.py``), diagnosis or scoring, and SQL (``ingest_case`` only
calls the store's port).
"""

from __future__ import annotations

import gzip as _gzip
import io
import json
import os
import re
import secrets
import shutil
import tomllib
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from sentinel.adapters.otlp import decode_json_object, encode_json
from sentinel.errors import CaseFormatError, OTLPDecodeError
from sentinel.openmetrics import parse_openmetrics, write_openmetrics
from sentinel.ports import TelemetryStore
from sentinel.telemetry import (
    AwareDatetime,
    ChangeEvent,
    ComponentId,
    Sample,
    Span,
    TopologyEdge,
)

__all__ = [
    "Case",
    "CaseMeta",
    "CaseTruth",
    "FaultKind",
    "IngestReport",
    "IngestStage",
    "ProgressCallback",
    "ingest_case",
    "read_case",
    "write_case",
]

CASE_TOML = "case.toml"
TRACES = "traces.jsonl"
METRICS = "metrics.om"
CHANGES = "changes.jsonl"
TOPOLOGY = "topology.jsonl"

# Spans per ExportTraceServiceRequest line: big enough to share resource and scope
# headers, small enough that one line stays a few hundred kilobytes.
SPANS_PER_LINE = 500

_CLIP = 120

_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")


class FaultKind(StrEnum):
    """The fault kinds of the benchmark (CASE_FORMAT.md). ``CaseTruth.fault`` may hold
    other free text too; ``CaseTruth.fault_kind`` is None then."""

    PROMPT_REGRESSION = "prompt_regression"
    MODEL_VERSION_CHANGE = "model_version_change"
    MODEL_PROVIDER_LATENCY = "model_provider_latency"
    MODEL_PROVIDER_ERRORS = "model_provider_errors"
    TOOL_RATE_LIMIT = "tool_rate_limit"
    TOOL_LATENCY = "tool_latency"
    TOOL_ERRORS = "tool_errors"
    TOOL_SCHEMA_CHANGE = "tool_schema_change"
    RETRIEVAL_DEGRADATION = "retrieval_degradation"
    AGENT_LOOP = "agent_loop"
    CONFIG_CHANGE = "config_change"
    SERVICE_LATENCY = "service_latency"
    SERVICE_ERRORS = "service_errors"
    RESOURCE_EXHAUSTION = "resource_exhaustion"


# Strict: TOML has real date-times, so a quoted "2026-..." or a bare number is a mistake
# worth reporting rather than guessing at. Unknown keys are typos (``fault_star``) that
# would otherwise silently change a score.
_MODEL_CONFIG = ConfigDict(frozen=True, extra="forbid", strict=True)


class CaseMeta(BaseModel):
    """The ``[case]`` table: which case, and the telemetry window [start, end]."""

    model_config = _MODEL_CONFIG

    id: Annotated[str, Field(min_length=1)]
    description: str = ""
    start: AwareDatetime
    end: AwareDatetime

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, end: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("start")
        if isinstance(start, datetime) and end <= start:
            raise ValueError(
                f"end {_iso(end)} is not after start {_iso(start)} (the window is empty)"
            )
        return end


class TruthBasis(StrEnum):
    """How a ``[truth]`` is known (an extension of CASE_FORMAT.md for archived
    incidents; a case without ``basis`` is confirmed truth, as every benchmark case is)."""

    CONFIRMED = "confirmed"  # a person confirmed (or corrected) the root cause
    WEAK = "weak"  # a fix for it was verified automatically, and nobody confirmed it


class CaseTruth(BaseModel):
    """The ``[truth]`` table: what really happened. Only scorers read it."""

    model_config = _MODEL_CONFIG

    root_cause: ComponentId
    fault: Annotated[str, Field(min_length=1)]
    fault_start: AwareDatetime
    change: str | None = None
    remediation: str | None = None
    # Not strict: TOML gives the enum's value as a string.
    basis: Annotated[TruthBasis, Field(strict=False)] = TruthBasis.CONFIRMED

    @property
    def fault_kind(self) -> FaultKind | None:
        """The fault as a benchmark kind, or None when it is free text."""
        try:
            return FaultKind(self.fault)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class Case:
    """A case in memory. A frozen dataclass rather than a pydantic model: it holds tens of
    thousands of spans and samples that are already validated records, and re-validating
    them on every construction would cost seconds.

    ``metric_types`` keeps the ``# TYPE`` of each metric family (sorted pairs) so that a
    case written back keeps its counters, histograms and summaries.
    ``rejected_spans`` counts well-formed spans the OTLP decoder refused (all-zero ids,
    end before start): they are not in ``spans``.
    """

    meta: CaseMeta
    truth: CaseTruth | None = None
    spans: tuple[Span, ...] = ()
    samples: tuple[Sample, ...] = ()
    changes: tuple[ChangeEvent, ...] = ()
    topology: tuple[TopologyEdge, ...] = ()
    metric_types: tuple[tuple[str, str], ...] = ()
    rejected_spans: int = 0


# --- reading ----------------------------------------------------------------------------


def read_case(path: Path, *, with_truth: bool = False) -> Case:
    """Read the case folder at ``path``.

    The ``[truth]`` table is validated and returned only when ``with_truth`` is true
    (scorers; ``truth`` is None if the case has none); otherwise ``truth`` is None
    whatever the file holds. Raises
    ``CaseFormatError`` naming ``file:line`` and the offending value for anything that
    does not follow the case format.
    """
    if not path.is_dir():
        raise CaseFormatError(f"{path}: not a case folder (no such directory)")
    meta, truth = _read_toml(path / CASE_TOML, with_truth=with_truth)

    traces = _data_file(path, TRACES)
    metrics = _data_file(path, METRICS)
    changes_file = _data_file(path, CHANGES)
    topology_file = _data_file(path, TOPOLOGY)
    if traces is None and metrics is None:
        raise CaseFormatError(
            f"{path}: a case needs {TRACES} or {METRICS} (or their .gz), found neither"
        )

    spans: tuple[Span, ...] = ()
    rejected = 0
    if traces is not None:
        spans, rejected = _read_traces(traces)
    samples: tuple[Sample, ...] = ()
    metric_types: tuple[tuple[str, str], ...] = ()
    if metrics is not None:
        samples, metric_types = _read_metrics(metrics)
    changes = tuple(_read_models(changes_file, ChangeEvent)) if changes_file is not None else ()
    topology = tuple(_read_models(topology_file, TopologyEdge)) if topology_file is not None else ()
    return Case(
        meta=meta,
        truth=truth,
        spans=spans,
        samples=samples,
        changes=changes,
        topology=topology,
        metric_types=metric_types,
        rejected_spans=rejected,
    )


def _data_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists; both is an error."""
    plain, packed = folder / name, folder / (name + ".gz")
    has_plain, has_packed = plain.exists(), packed.exists()
    if has_plain and has_packed:
        raise CaseFormatError(
            f"{folder}: both {name} and {name}.gz exist; a case holds one of them "
            "(which one is meant is ambiguous)"
        )
    if has_packed:
        return packed
    return plain if has_plain else None


def _read_toml(path: Path, *, with_truth: bool) -> tuple[CaseMeta, CaseTruth | None]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise CaseFormatError(f"{path}: missing (every case needs a {CASE_TOML})") from None
    except UnicodeDecodeError as e:
        raise CaseFormatError(f"{path}: not UTF-8 text: {e}") from None
    except OSError as e:
        raise CaseFormatError(f"{path}: cannot read: {e}") from e
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib (3.11-3.13) puts the position only in the message: "(at line 3, column 9)".
        m = re.search(r"at line (\d+), column (\d+)", str(e))
        line = m.group(1) if m else "1"
        raise CaseFormatError(f"{path}:{line}: not valid TOML: {e}") from None

    for key, value in doc.items():
        if key not in ("case", "truth"):
            what = "table" if isinstance(value, dict) else "key"
            raise CaseFormatError(
                f"{path}:{_toml_line(text, None, key)}: unknown top-level {what} {key!r} "
                "(case.toml holds only [case] and [truth])"
            )
    case_table = doc.get("case")
    if not isinstance(case_table, dict):
        raise CaseFormatError(
            f"{path}:{_toml_line(text, None, 'case')}: missing the [case] table "
            "(with id, start and end)"
        )
    meta = _validate_table(CaseMeta, case_table, "case", path, text)

    truth: CaseTruth | None = None
    if with_truth and "truth" in doc:
        truth_table = doc["truth"]
        if not isinstance(truth_table, dict):
            raise CaseFormatError(
                f"{path}:{_toml_line(text, None, 'truth')}: 'truth' must be a table, "
                f"got {_clip(repr(truth_table))}"
            )
        truth = _validate_table(CaseTruth, truth_table, "truth", path, text)
    return meta, truth


def _validate_table(model: type[_M], table: dict[str, Any], name: str, path: Path, text: str) -> _M:
    try:
        return model.model_validate(table)
    except ValidationError as e:
        err = e.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else None
        line = _toml_line(text, name, key)
        where = f"[{name}].{key}" if key else f"[{name}]"
        raise CaseFormatError(f"{path}:{line}: {where}: {_problem(err)}") from None


_TOML_HEADER_RE = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(?:#.*)?$")


def _toml_line(text: str, table: str | None, key: str | None) -> int:
    """The line of ``key`` in ``[table]`` (``table`` None: the top level), else the line of
    the table's header, else 1. tomllib gives values but no positions, and an error that
    names the line is worth this small scan."""
    current: str | None = None
    header_line = 0
    key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=") if key else None
    for lineno, line in enumerate(text.splitlines(), start=1):
        m = _TOML_HEADER_RE.match(line)
        if m is not None:
            current = m.group(1).strip("\"'")
            if table is None and key is not None and current.split(".")[0] == key:
                return lineno
            if current == table:
                header_line = lineno
            continue
        if key_re is not None and current == table and key_re.match(line):
            return lineno
    return header_line or 1


def _read_traces(path: Path) -> tuple[tuple[Span, ...], int]:
    spans: list[Span] = []
    rejected = 0
    for lineno, doc in _json_lines(path):
        try:
            batch = decode_json_object(doc)
        except OTLPDecodeError as e:
            raise CaseFormatError(
                f"{path}:{lineno}: not an OTLP/JSON ExportTraceServiceRequest: {e}"
            ) from None
        spans.extend(batch.spans)
        rejected += batch.rejected
    return tuple(spans), rejected


def _read_metrics(path: Path) -> tuple[tuple[Sample, ...], tuple[tuple[str, str], ...]]:
    data = b"".join(raw for _, raw in _raw_lines(path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CaseFormatError(f"{path}:{line}: not UTF-8 text: {e}") from None
    samples = parse_openmetrics(text, str(path))
    return tuple(samples), _metric_types(text)


def _metric_types(text: str) -> tuple[tuple[str, str], ...]:
    """``(family, type)`` of every ``# TYPE`` line but ``unknown``. parse_openmetrics has
    already checked these lines; it returns samples only, so the types are picked up here.
    ``unknown`` is left out because write_openmetrics gives it to every untyped family:
    keeping it would make a written-then-read case differ from the one written."""
    types: dict[str, str] = {}
    for line in text.split("\n"):
        if line.startswith("# TYPE "):
            parts = line.split(" ")
            if len(parts) == 4 and parts[3] != "unknown":
                types[parts[2]] = parts[3]
        elif line == "# EOF":
            break
    return tuple(sorted(types.items()))


def _read_models(path: Path, model: type[_M]) -> Iterator[_M]:
    for lineno, doc in _json_lines(path):
        if not isinstance(doc, dict):
            raise CaseFormatError(
                f"{path}:{lineno}: expected a JSON object, got {_clip(json.dumps(doc))}"
            )
        try:
            yield model.model_validate(doc)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in err['loc']) or 'line'}: {_problem(err)}"
                for err in e.errors()
            )
            raise CaseFormatError(f"{path}:{lineno}: {problems}") from None


def _json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """The JSON value on each non-blank line, with its line number."""
    for lineno, raw in _raw_lines(path):
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            text = raw.decode("utf-8", errors="replace").rstrip("\n")
            raise CaseFormatError(
                f"{path}:{lineno}: not a JSON value ({e}): {_clip(text)!r}"
            ) from None
        yield lineno, doc


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """The lines of ``path`` as bytes, gunzipped when the name ends in ``.gz``."""
    lineno = 0
    try:
        with _open_read(path) as f:
            for lineno, raw in enumerate(f, start=1):
                yield lineno, raw
    except (OSError, EOFError, zlib.error) as e:
        # A truncated or corrupt gzip stream surfaces only while reading.
        raise CaseFormatError(f"{path}:{lineno + 1}: cannot read: {e}") from e


def _open_read(path: Path) -> io.BufferedIOBase:
    if path.name.endswith(".gz"):
        return _gzip.open(path, "rb")
    return path.open("rb")


# --- writing ----------------------------------------------------------------------------


def write_case(case: Case, path: Path, *, gzip: bool = True, overwrite: bool = False) -> None:
    """Write ``case`` as a case folder at ``path``, atomically.

    Everything is written into a hidden folder beside ``path`` and then renamed into
    place, so a crash never leaves half a case where a reader looks. An existing non-empty
    ``path`` is replaced only with ``overwrite=True``: the old folder is renamed aside, the
    new one renamed in, the old one deleted (a crash between the two renames leaves no
    case at ``path`` but both, complete, as hidden folders beside it). Data files are
    gzip-compressed unless ``gzip=False``; files with nothing to hold are left out.
    """
    if not case.spans and not case.samples:
        raise CaseFormatError(
            f"cannot write case {case.meta.id!r} to {path}: it has neither spans nor "
            "samples, and a case needs traces or metrics"
        )
    if path.exists():
        if not path.is_dir():
            raise CaseFormatError(f"cannot write case to {path}: it exists and is not a folder")
        if any(path.iterdir()) and not overwrite:
            raise CaseFormatError(
                f"cannot write case to {path}: the folder is not empty "
                "(pass overwrite=True to replace it)"
            )
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{path.name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        _write_files(case, tmp, packed=gzip)
        _fsync_dir(tmp)
        _swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(parent)


def _write_files(case: Case, folder: Path, *, packed: bool) -> None:
    _write(folder, CASE_TOML, [case_toml(case.meta, case.truth).encode()], packed=False)
    if case.spans:
        _write(folder, TRACES, _trace_lines(case.spans), packed=packed)
    if case.samples:
        text = write_openmetrics(case.samples, dict(case.metric_types))
        _write(folder, METRICS, [text.encode()], packed=packed)
    if case.changes:
        _write(folder, CHANGES, _model_lines(case.changes), packed=packed)
    if case.topology:
        _write(folder, TOPOLOGY, _model_lines(case.topology), packed=packed)


def _trace_lines(spans: Sequence[Span]) -> Iterator[bytes]:
    for i in range(0, len(spans), SPANS_PER_LINE):
        request = encode_json(spans[i : i + SPANS_PER_LINE])
        try:
            # Strict JSON: the OpenTelemetry Collector and jq must read these lines too.
            line = json.dumps(request, separators=(",", ":"), allow_nan=False)
        except ValueError as e:
            raise CaseFormatError(
                f"cannot write spans {i}..{i + SPANS_PER_LINE - 1} as OTLP/JSON: {e}"
            ) from e
        yield line.encode() + b"\n"


def _model_lines(records: Iterable[BaseModel]) -> Iterator[bytes]:
    for r in records:
        doc = r.model_dump(mode="json", exclude_defaults=True)
        yield json.dumps(doc, ensure_ascii=False).encode() + b"\n"


def _write(folder: Path, name: str, chunks: Iterable[bytes], *, packed: bool) -> None:
    target = folder / (name + ".gz" if packed else name)
    with target.open("wb") as f:
        if packed:
            # mtime=0 and no file name in the header: the same case gives the same bytes.
            with _gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=6) as z:
                for chunk in chunks:
                    z.write(chunk)
        else:
            for chunk in chunks:
                f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def _swap_into_place(tmp: Path, path: Path) -> None:
    try:
        if path.is_dir() and any(path.iterdir()):
            # Move the old case aside first: rename(2) does not replace a non-empty folder.
            old = path.parent / f".{path.name}.old-{secrets.token_hex(4)}"
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)  # replaces an empty folder in one step
    except OSError as e:
        raise CaseFormatError(f"cannot move the written case into {path}: {e}") from e


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def case_toml(meta: CaseMeta, truth: CaseTruth | None) -> str:
    """The text of ``case.toml`` for ``meta`` and ``truth`` (no TOML writer dependency:
    the file has two flat tables of strings and date-times)."""
    lines = [
        "[case]",
        f"id = {_toml_str(meta.id)}",
        f"description = {_toml_str(meta.description)}",
        f"start = {_toml_datetime(meta.start)}",
        f"end = {_toml_datetime(meta.end)}",
    ]
    if truth is not None:
        lines += [
            "",
            "[truth]",
            f"root_cause = {_toml_str(truth.root_cause)}",
            f"fault = {_toml_str(truth.fault)}",
            f"fault_start = {_toml_datetime(truth.fault_start)}",
        ]
        if truth.change is not None:
            lines.append(f"change = {_toml_str(truth.change)}")
        if truth.remediation is not None:
            lines.append(f"remediation = {_toml_str(truth.remediation)}")
        if truth.basis is not TruthBasis.CONFIRMED:
            lines.append(f"basis = {_toml_str(truth.basis.value)}")
    return "\n".join(lines) + "\n"


_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_str(value: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for c in value:
        esc = _TOML_ESCAPES.get(c)
        if esc is not None:
            out.append(esc)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _toml_datetime(value: datetime) -> str:
    return _iso(value)


def _iso(value: datetime) -> str:
    """UTC with a trailing Z, microseconds only when present (TOML and RFC 3339)."""
    v = value.astimezone(UTC)
    text = v.strftime("%Y-%m-%dT%H:%M:%S")
    if v.microsecond:
        text += f".{v.microsecond:06d}".rstrip("0")
    return text + "Z"


# --- loading into the store -------------------------------------------------------------


class IngestStage(StrEnum):
    SPANS = "spans"
    SAMPLES = "samples"
    CHANGES = "changes"


ProgressCallback = Callable[[str, int, int], None]
"""Called as ``progress(stage, done, total)`` at the start of a stage and after each chunk."""


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What ``ingest_case`` stored. ``spans_seen`` is how many spans the case offered;
    ``*_new`` how many the store did not hold yet (0 on a second ingest)."""

    spans_new: int
    spans_seen: int
    samples_new: int
    changes_new: int
    rejected_spans: int


SPAN_CHUNK = 2_000
SAMPLE_CHUNK = 20_000
CHANGE_CHUNK = 1_000


def ingest_case(
    store: TelemetryStore,
    case: Case,
    *,
    progress: ProgressCallback | None = None,
) -> IngestReport:
    """Load the case's spans, samples and changes into ``store``, chunk by chunk.

    Idempotent: the store skips what it already holds, so a second ingest (or a re-run
    after a crash between chunks) adds nothing twice. Topology edges are not stored:
    the store has no place for them yet; engines read them from the case.
    """
    spans_new = _in_chunks(IngestStage.SPANS, case.spans, SPAN_CHUNK, store.add_spans, progress)
    samples_new = _in_chunks(
        IngestStage.SAMPLES, case.samples, SAMPLE_CHUNK, store.add_samples, progress
    )
    changes_new = _in_chunks(
        IngestStage.CHANGES, case.changes, CHANGE_CHUNK, store.add_changes, progress
    )
    return IngestReport(
        spans_new=spans_new,
        spans_seen=len(case.spans),
        samples_new=samples_new,
        changes_new=changes_new,
        rejected_spans=case.rejected_spans,
    )


def _in_chunks(
    stage: IngestStage,
    items: Sequence[_T],
    size: int,
    add: Callable[[Sequence[_T]], int],
    progress: ProgressCallback | None,
) -> int:
    total = len(items)
    if progress is not None:
        progress(stage, 0, total)
    new = 0
    for i in range(0, total, size):
        chunk = items[i : i + size]
        new += add(chunk)
        if progress is not None:
            progress(stage, i + len(chunk), total)
    return new


# --- messages ---------------------------------------------------------------------------


def _problem(err: Mapping[str, Any]) -> str:
    """One pydantic error as 'what was expected, got what'."""
    if err["type"] == "missing":
        return "required but missing"
    if err["type"] == "extra_forbidden":
        return f"unknown key (value {_clip(repr(err.get('input')))})"
    msg = str(err["msg"]).removeprefix("Value error, ")
    hint = ""
    if str(err["type"]).startswith("datetime"):
        hint = " (expected a date-time with a zone, such as 2026-11-01T10:00:00Z)"
    return f"{msg}{hint}, got {_clip(repr(err.get('input')))}"


def _clip(text: str, limit: int = _CLIP) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
