"""OpenMetrics text with an explicit timestamp on every sample: the ``metrics.om`` of a case.

What lives here: ``parse_openmetrics`` (text -> ``telemetry.Sample`` list) and
``write_openmetrics`` (samples -> text that ``promtool tsdb create-blocks-from openmetrics``
back-fills and that ``parse_openmetrics`` reads back to the same samples). Both are pure.

The dialect is the one CASE_FORMAT.md fixes, which is the one promtool accepts:

* ``# TYPE``, ``# HELP`` and ``# UNIT`` lines; the text ends with ``# EOF`` (a newline
  after it is fine, anything else is not); no blank lines and no other comments;
* label values escape only ``\\\\``, ``\\"`` and ``\\n``;
* values are decimal or ``NaN`` / ``+Inf`` / ``-Inf``; exemplars (`` # {...} v``) are
  accepted and dropped, as promtool drops them;
* every sample carries a timestamp in seconds, possibly fractional. Fractions are kept to
  the microsecond here; Prometheus keeps milliseconds (promtool truncates the rest).

What must not live here: file or gzip I/O (the case reader owns files), querying, and any
knowledge of which metrics a case holds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from sentinel.errors import CaseFormatError
from sentinel.telemetry import Sample, series_component

__all__ = ["METRIC_TYPES", "parse_openmetrics", "write_openmetrics"]

# The OpenMetrics types and the sample-name suffixes each family type owns.
METRIC_TYPES: Mapping[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

_METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_LABEL_NAME_RE = re.compile(_LABEL_NAME)
# A quoted label value, escapes left for _unescape to check (unrolled loop: fast in `re`).
_QUOTED = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_LABEL_PAIR_RE = re.compile(rf"({_LABEL_NAME})=({_QUOTED})")
# One sample line: name, optional label block, value, optional timestamp, optional exemplar.
# The label block is matched quote-aware so a `}` or ` # ` inside a value cannot end it.
_SAMPLE_RE = re.compile(
    r"([a-zA-Z_:][a-zA-Z0-9_:]*)"
    r'(\{[^"}]*(?:' + _QUOTED + r'[^"}]*)*\})?'
    r" (\S+)"
    r"(?: (\S+))?"
    r"(?: # (.*))?"
)
_PLAIN_TS_RE = re.compile(r"(-?)(\d+)(?:\.(\d+))?")
_ESCAPE_RE = re.compile(r"\\(.)")
_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


class _LineProblem(Exception):
    """Raised by the per-line helpers (saying what is wrong with which part);
    ``parse_openmetrics`` adds ``source:line`` and the whole line."""


def parse_openmetrics(text: str, source: str) -> list[Sample]:
    """Parse OpenMetrics text into samples, in file order.

    ``source`` names the text in error messages (a path, or ``"<string>"``). Raises
    ``CaseFormatError`` naming ``source:line`` and the offending text for any malformed
    line, a sample without a timestamp, a missing ``# EOF`` or content after it.
    """
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not start another
    samples: list[Sample] = []
    append = samples.append
    # Names, label blocks and timestamps repeat across thousands of lines: check each once.
    names: set[str] = set()
    label_cache: dict[str, tuple[tuple[tuple[str, str], ...], str | None]] = {}
    time_cache: dict[str, datetime] = {}
    typed: dict[str, int] = {}
    eof_line = 0

    for lineno, line in enumerate(lines, start=1):
        try:
            if line.startswith("#"):
                if line == "# EOF":
                    eof_line = lineno
                    break
                _check_metadata(line, lineno, typed)
                continue
            # Fast path with str methods (the regex costs ~5 us a line); anything unusual
            # (an exemplar, odd spacing, an invalid name) goes to the exact regex.
            split = _split_fast(line, names)
            name, block, value_text, ts_text = split or _split_exact(line, names)
            if ts_text is None:
                raise _LineProblem(
                    "sample without a timestamp (case metrics need an explicit timestamp, "
                    "in seconds, on every sample)",
                )
            if block is None:
                labels: tuple[tuple[str, str], ...] = ()
                component = None
            else:
                cached = label_cache.get(block)
                if cached is None:
                    cached = _parse_labels(block)
                    label_cache[block] = cached
                labels, component = cached
            when = time_cache.get(ts_text)
            if when is None:
                when = _parse_timestamp(ts_text)
                time_cache[ts_text] = when
            append(Sample(name, labels, component, when, _parse_value(value_text)))
        except _LineProblem as p:
            raise CaseFormatError(f"{source}:{lineno}: {p}: {_clip(line)!r}") from None

    if not eof_line:
        last = f": last line {_clip(lines[-1])!r}" if lines else ""
        raise CaseFormatError(
            f"{source}:{max(len(lines), 1)}: missing '# EOF' at the end (truncated file?){last}"
        )
    rest = lines[eof_line:]
    if rest:
        raise CaseFormatError(f"{source}:{eof_line + 1}: content after '# EOF': {_clip(rest[0])!r}")
    return samples


_Split = tuple[str, str | None, str, str | None]  # name, label block, value, timestamp


def _split_fast(line: str, names: set[str]) -> _Split | None:
    """Split a well-formed sample line, or None when the exact regex must decide."""
    if " # " in line:
        return None
    brace = line.find("{")
    if brace < 0:
        parts = line.split(" ")
        name = parts[0]
        block = None
        rest = parts[1:]
    else:
        # The label block ends at the last "} ": value and timestamp hold no "}", and a
        # block wrongly cut here (a value holding "} ") still gets fully checked later.
        close = line.rfind("} ")
        if close < brace:
            return None
        name = line[:brace]
        block = line[brace : close + 1]
        rest = line[close + 2 :].split(" ")
    if name not in names:
        if _METRIC_NAME_RE.fullmatch(name) is None:
            return None
        names.add(name)
    if len(rest) == 2 and rest[0] and rest[1]:
        return name, block, rest[0], rest[1]
    if len(rest) == 1 and rest[0]:
        return name, block, rest[0], None
    return None


def _split_exact(line: str, names: set[str]) -> _Split:
    m = _SAMPLE_RE.fullmatch(line)
    if m is None:
        raise _LineProblem(_why_not_a_sample(line))
    name, block, value_text, ts_text, _exemplar = m.groups()
    names.add(name)
    return name, block, value_text, ts_text


def _check_metadata(line: str, lineno: int, typed: dict[str, int]) -> None:
    parts = line.split(" ", 3)
    if len(parts) < 3 or parts[0] != "#" or parts[1] not in ("TYPE", "HELP", "UNIT"):
        raise _LineProblem(
            "not a sample and not '# TYPE', '# HELP', '# UNIT' or '# EOF' "
            "(OpenMetrics allows no other comments)",
        )
    keyword, family = parts[1], parts[2]
    if _METRIC_NAME_RE.fullmatch(family) is None:
        raise _LineProblem(f"invalid metric family name {family!r} in '# {keyword}'")
    if keyword == "TYPE":
        kind = parts[3] if len(parts) == 4 else ""
        if kind not in METRIC_TYPES:
            raise _LineProblem(
                f"unknown metric type {kind!r} (expected one of {', '.join(METRIC_TYPES)})",
            )
        if family in typed:
            raise _LineProblem(
                f"second '# TYPE' for family {family!r} (first on line {typed[family]})"
            )
        typed[family] = lineno


def _why_not_a_sample(line: str) -> str:
    if line == "":
        return "blank line (OpenMetrics allows none; promtool rejects it)"
    name = _METRIC_NAME_RE.match(line)
    if name is None:
        return "invalid metric name"
    if line[name.end() : name.end() + 1] == "{":
        return 'malformed label set (expected {name="value",...} with quoted values)'
    return "malformed sample (expected 'name{labels} value timestamp', single spaces)"


def _parse_labels(block: str) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """``{a="x",b="y"}`` -> sorted pairs and the series' component."""
    body = block[1:-1]
    if not body:
        return (), None
    pairs: dict[str, str] = {}
    pos = 0
    end = len(body)
    while True:
        m = _LABEL_PAIR_RE.match(body, pos)
        if m is None:
            raise _LineProblem(
                f"malformed label set at {body[pos : pos + 30]!r} "
                '(expected name="value" pairs separated by commas)',
            )
        key, quoted = m.group(1), m.group(2)
        if key == "__name__":
            raise _LineProblem("label '__name__' in braces: the metric name goes before them")
        if key in pairs:
            raise _LineProblem(f"label {key!r} given twice")
        pairs[key] = _unescape(quoted[1:-1])
        pos = m.end()
        if pos == end:
            break
        if body[pos] != ",":
            raise _LineProblem(f"expected ',' between labels at {body[pos : pos + 30]!r}")
        pos += 1
    labels = tuple(sorted(pairs.items()))
    return labels, series_component(pairs)


def _unescape(raw: str) -> str:
    if "\\" not in raw:
        return raw

    def one(m: re.Match[str]) -> str:
        c = m.group(1)
        out = _UNESCAPES.get(c)
        if out is None:
            raise _LineProblem(
                f"invalid escape '\\{c}' in a label value (only \\\\, \\\" and \\n are allowed)",
            )
        return out

    return _ESCAPE_RE.sub(one, raw)


def _parse_value(text: str) -> float:
    # float() also takes "1_000" and surrounding blanks; OpenMetrics does not.
    if "_" not in text:
        try:
            return float(text)
        except ValueError:
            pass
    raise _LineProblem(f"invalid sample value {text!r}")


def _parse_timestamp(text: str) -> datetime:
    """Seconds since the epoch -> aware UTC datetime, exact to the microsecond (no float
    rounding: ``1795899615.123`` must become .123000, not .122999)."""
    m = _PLAIN_TS_RE.fullmatch(text)
    try:
        if m is not None:
            sign, whole, frac = m.groups()
            us = int(whole) * 1_000_000
            if frac:
                if len(frac) <= 6:
                    us += int(frac.ljust(6, "0"))
                else:
                    us += int(Decimal("0." + frac).scaleb(6).to_integral_value())
            return _EPOCH + timedelta(microseconds=-us if sign else us)
        d = Decimal(text)  # exponent forms such as 1.7958996e9
        if not d.is_finite() or "_" in text:
            raise _LineProblem(f"invalid timestamp {text!r}")
        return _EPOCH + timedelta(microseconds=int(d.scaleb(6).to_integral_value()))
    except (InvalidOperation, ValueError):
        raise _LineProblem(f"invalid timestamp {text!r} (expected seconds)") from None
    except OverflowError:
        raise _LineProblem(f"timestamp {text!r} is out of range") from None


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# --- writing ------------------------------------------------------------------------------


def write_openmetrics(samples: Iterable[Sample], types: Mapping[str, str] | None = None) -> str:
    """OpenMetrics text for ``samples``, ending with ``# EOF`` and a newline.

    ``types`` maps a metric family to its OpenMetrics type (``{"component_requests":
    "counter"}``); a counter may also be named by its sample name (``"X_total"``). The
    samples of a family are then named with that type's suffixes (a counter ``X`` holds
    ``X_total`` and ``X_created``). A sample that no typed family owns is its own family
    of type ``unknown``. Every family gets a ``# TYPE`` line; families are written one after
    the other in name order, each series in label order, each series' points in time order.
    Label ``__name__`` is never written (it is the metric name).

    Raises ``CaseFormatError`` for what the format cannot hold: an invalid metric or
    label name, a naive datetime, an unknown type, or a sample that does not fit the
    family its name falls in.
    """
    owner, family_type = _families(types or {})
    by_family: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], list[Sample]]] = {}
    for s in samples:
        family = owner.get(s.metric)
        if family is None:
            if s.metric in family_type:
                suffixes = ", ".join(s.metric + x for x in METRIC_TYPES[family_type[s.metric]])
                raise CaseFormatError(
                    f"cannot write sample {s.metric!r}: family {s.metric!r} is a "
                    f"{family_type[s.metric]}, whose samples are named {suffixes}"
                )
            if _METRIC_NAME_RE.fullmatch(s.metric) is None:
                raise CaseFormatError(
                    f"cannot write sample {s.metric!r}: not a valid OpenMetrics metric name"
                )
            family = s.metric
        by_family.setdefault(family, {}).setdefault((s.metric, s.labels), []).append(s)

    out: list[str] = []
    label_text: dict[tuple[tuple[str, str], ...], str] = {}
    time_text: dict[datetime, str] = {}
    for family in sorted(by_family):
        out.append(f"# TYPE {family} {family_type.get(family, 'unknown')}\n")
        series = by_family[family]
        for key in sorted(series):
            metric, labels = key
            block = label_text.get(labels)
            if block is None:
                block = _format_labels(metric, labels)
                label_text[labels] = block
            prefix = metric + block + " "
            for s in sorted(series[key], key=_time_key):
                ts = time_text.get(s.time)
                if ts is None:
                    ts = _format_timestamp(s)
                    time_text[s.time] = ts
                out.append(f"{prefix}{_format_value(s.value)} {ts}\n")
    out.append("# EOF\n")
    return "".join(out)


def _families(types: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(sample name -> family, family -> type) for the typed families."""
    owner: dict[str, str] = {}
    family_type: dict[str, str] = {}
    for name, kind in types.items():
        if kind not in METRIC_TYPES:
            raise CaseFormatError(
                f"unknown metric type {kind!r} for {name!r} "
                f"(expected one of {', '.join(METRIC_TYPES)})"
            )
        family = name[: -len("_total")] if kind == "counter" and name.endswith("_total") else name
        if _METRIC_NAME_RE.fullmatch(family) is None:
            raise CaseFormatError(f"{family!r} is not a valid OpenMetrics metric family name")
        if family in family_type and family_type[family] != kind:
            raise CaseFormatError(
                f"family {family!r} given two types: {family_type[family]!r} and {kind!r}"
            )
        family_type[family] = kind
        for suffix in METRIC_TYPES[kind]:
            sample_name = family + suffix
            other = owner.get(sample_name)
            if other is not None and other != family:
                raise CaseFormatError(
                    f"sample name {sample_name!r} would belong to two families, "
                    f"{other!r} and {family!r}"
                )
            owner[sample_name] = family
    return owner, family_type


def _format_labels(metric: str, labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    parts = []
    seen: set[str] = set()
    # Sorted, as parse_openmetrics returns them, so that a round trip is the identity.
    for key, value in sorted(labels):
        if key == "__name__" or _LABEL_NAME_RE.fullmatch(key) is None:
            raise CaseFormatError(
                f"cannot write sample {metric!r}: {key!r} is not a valid label name"
            )
        if key in seen:
            raise CaseFormatError(f"cannot write sample {metric!r}: label {key!r} given twice")
        seen.add(key)
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        parts.append(f'{key}="{escaped}"')
    return "{" + ",".join(parts) + "}"


def _format_value(value: float) -> str:
    v = float(value)  # an int slipped in where a float is typed must not break the writer
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    # Whole numbers (counters, most gauges) read better and parse faster without ".0";
    # below 2**53 the integer is the float exactly.
    if v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(v)  # shortest text that reads back to the same float


def _time_key(s: Sample) -> datetime:
    return s.time


def _format_timestamp(s: Sample) -> str:
    if s.time.tzinfo is None:
        raise CaseFormatError(
            f"cannot write sample {s.metric!r}: naive datetime {s.time!r} (need aware UTC)"
        )
    us = (s.time - _EPOCH) // _US
    sign = "-" if us < 0 else ""
    whole, frac = divmod(abs(us), 1_000_000)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}." + f"{frac:06d}".rstrip("0")
