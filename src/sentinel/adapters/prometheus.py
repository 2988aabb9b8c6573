"""Prometheus-compatible metric sources: the HTTP adapter and the in-memory fake beside it.

What lives here:

* ``PrometheusSource``: ``ports.MetricSource`` over the HTTP query API
  (``/api/v1/query``, ``/api/v1/query_range``) shared by Prometheus, VictoriaMetrics,
  Thanos and Mimir. Retries with exponential backoff on connection errors, timeouts, 5xx
  and 429; raises ``MetricQueryError`` when the server rejects the query and
  ``MetricSourceUnavailable`` when it cannot be reached.
* ``prometheus_from_settings``: builds it from ``Settings`` (None when no URL is set).
* ``FakeMetricSource``: the same Protocol over in-memory samples, for plain series
  selectors only, with Prometheus' lookback and step semantics. The contract tests run
  the same bodies against it and a real Prometheus so the two cannot drift.

Times go on the wire as Unix seconds with millisecond precision, which is all Prometheus
keeps; both sources therefore round query times to the millisecond.

What must not live here: SLI definitions or PromQL beyond selectors in the fake, detection,
reading case files, and reading configuration (``Settings`` is passed in).
"""

from __future__ import annotations

import asyncio
import bisect
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Self

import httpx
import structlog

from sentinel.clock import Clock, SystemClock
from sentinel.errors import (
    ConfigError,
    MetricQueryError,
    MetricSourceError,
    MetricSourceUnavailable,
)
from sentinel.settings import Settings
from sentinel.telemetry import Sample, Series

__all__ = [
    "MAX_POINTS_PER_SERIES",
    "MAX_RETRY_AFTER_SECONDS",
    "FakeMetricSource",
    "PrometheusSource",
    "prometheus_from_settings",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_US = timedelta(microseconds=1)

# Prometheus refuses range queries of more points per series than this (api/v1).
MAX_POINTS_PER_SERIES = 11_000
# A Retry-After longer than this is not waited for: the caller's schedule retries later,
# and a job that sleeps for minutes inside one query holds up everything behind it.
MAX_RETRY_AFTER_SECONDS = 30.0

Sleep = Callable[[float], Awaitable[None]]


def _to_ms(when: datetime) -> int:
    """Milliseconds since the epoch, rounded half up (what Prometheus keeps)."""
    if when.tzinfo is None:
        raise ValueError(f"metric queries need an aware datetime, got naive {when!r}")
    us = (when - _EPOCH) // _US
    return (us + 500) // 1000


def _from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _format_ms(ms: int) -> str:
    """Integer milliseconds as decimal seconds, without float rounding."""
    sign = "-" if ms < 0 else ""
    whole, frac = divmod(abs(ms), 1000)
    return f"{sign}{whole}.{frac:03d}"


def _step_ms(step: timedelta) -> int:
    # Prometheus keeps a step in whole milliseconds (it truncates the rest).
    return step // _MS


# --- the HTTP adapter ---------------------------------------------------------------------


class PrometheusSource:
    """``MetricSource`` over a Prometheus-compatible HTTP API.

    ``base_url`` is the API root: ``http://prometheus:9090``, or a path prefix such as
    ``http://vmselect:8481/select/0/prometheus`` for clustered VictoriaMetrics. Queries are
    sent as POST forms (no URL length limit; every compatible server accepts them).

    A request is tried ``1 + retries`` times. Connection errors, timeouts, 5xx and 429 are
    retried after ``backoff_seconds * 2**n`` (n = 0, 1, ...), or after the server's
    ``Retry-After`` (delta-seconds) when that is longer and at most
    ``MAX_RETRY_AFTER_SECONDS``. ``headers`` are sent with every request (Mimir's
    ``X-Scope-OrgID``). ``transport`` and ``sleep`` are the test seams.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_seconds: float = 10.0,
        retries: int = 3,
        backoff_seconds: float = 0.5,
        bearer_token: str | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        try:
            url = httpx.URL(base_url)
        except httpx.InvalidURL as e:
            raise ValueError(f"invalid URL {base_url!r}: {e}") from e
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"expected an http(s) URL with a host, got {base_url!r}")
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be > 0, got {timeout_seconds!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        if backoff_seconds < 0:
            raise ValueError(f"backoff_seconds must be >= 0, got {backoff_seconds!r}")
        self._base_url = base_url.rstrip("/")
        self._retries = retries
        self._backoff = backoff_seconds
        self._sleep = sleep
        sent = {"Accept": "application/json", "User-Agent": "sentinel", **(headers or {})}
        if bearer_token:
            sent["Authorization"] = f"Bearer {bearer_token}"
        self._client = httpx.AsyncClient(
            base_url=self._base_url,
            headers=sent,
            timeout=httpx.Timeout(timeout_seconds),
            transport=transport,
            # A redirect means a wrong URL; following it would turn the POST into a GET.
            follow_redirects=False,
        )

    @property
    def base_url(self) -> str:
        return self._base_url

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def instant(self, query: str, at: datetime | None = None) -> list[Series]:
        form = {"query": query}
        if at is not None:
            form["time"] = _format_ms(_to_ms(at))
        return await self._query("/api/v1/query", form, query)

    async def range(
        self, query: str, start: datetime, end: datetime, step: timedelta
    ) -> list[Series]:
        form = {
            "query": query,
            "start": _format_ms(_to_ms(start)),
            "end": _format_ms(_to_ms(end)),
            "step": _format_ms(_step_ms(step)),
        }
        return await self._query("/api/v1/query_range", form, query)

    async def _query(self, path: str, form: Mapping[str, str], query: str) -> list[Series]:
        url = self._base_url + path
        attempts = self._retries + 1
        reason = ""
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                response = await self._client.post(path, data=form)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as e:
                # str() of httpx timeouts is often empty: name the class too.
                reason = f"{type(e).__name__}: {e}".rstrip(": ")
            except httpx.TransportError as e:
                # Unsupported scheme, proxy or local protocol errors: retrying cannot help.
                raise MetricSourceUnavailable(
                    f"{url}: cannot send query {query!r}: {type(e).__name__}: {e}", query=query
                ) from e
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return _decode(response, url, query)
                if status == 429 or status >= 500:
                    reason = f"HTTP {status}: {_error_detail(response)}"
                    retry_after = _retry_after(response)
                elif 400 <= status < 500:
                    raise MetricQueryError(
                        f"{url} rejected query {query!r}: HTTP {status}: "
                        f"{_error_detail(response)}{_hint(status)}",
                        query=query,
                    )
                else:
                    raise MetricSourceUnavailable(
                        f"{url}: unexpected HTTP {status} for query {query!r}"
                        f"{_redirect_hint(response)}",
                        query=query,
                    )
            if attempt == attempts - 1:
                break
            delay = self._backoff * 2**attempt
            if retry_after is not None:
                if retry_after > MAX_RETRY_AFTER_SECONDS:
                    raise MetricSourceUnavailable(
                        f"{url}: {reason}; the server asks to retry after {retry_after:g} s "
                        f"(more than {MAX_RETRY_AFTER_SECONDS:g} s), giving up on query "
                        f"{query!r}",
                        query=query,
                    )
                delay = max(delay, retry_after)
            structlog.get_logger().warning(
                "prometheus.retry",
                url=url,
                query=query,
                attempt=attempt + 1,
                attempts=attempts,
                delay_seconds=delay,
                reason=reason,
            )
            await self._sleep(delay)
        raise MetricSourceUnavailable(
            f"{url}: query {query!r} failed {attempts} time(s); last: {reason}", query=query
        )


def prometheus_from_settings(settings: Settings) -> PrometheusSource | None:
    """The configured Prometheus source, or None when ``prometheus.url`` is empty.

    The bearer token comes from ``SENTINEL_PROMETHEUS_TOKEN`` (``settings.secrets``).
    """
    cfg = settings.prometheus
    if not cfg.url:
        return None
    token = settings.secrets.prometheus_token
    try:
        return PrometheusSource(
            cfg.url,
            timeout_seconds=cfg.timeout_seconds,
            retries=cfg.retries,
            backoff_seconds=cfg.backoff_seconds,
            bearer_token=token.get_secret_value() if token is not None else None,
            headers=cfg.headers,
        )
    except ValueError as e:
        raise ConfigError(f"prometheus.url: {e}") from e


def _retry_after(response: httpx.Response) -> float | None:
    # Only the delta-seconds form: the HTTP-date form would need the wall clock here, and
    # exponential backoff is a fine answer to it.
    value = response.headers.get("Retry-After", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _error_detail(response: httpx.Response) -> str:
    """The server's own words: Prometheus' ``errorType: error``, else the body's start."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        kind = body.get("errorType")
        return f"{kind}: {body['error']}" if isinstance(kind, str) else body["error"]
    text = response.text.strip()
    return text[:300] if text else response.reason_phrase


def _hint(status: int) -> str:
    if status in (401, 403):
        return " (check the token in SENTINEL_PROMETHEUS_TOKEN)"
    if status in (404, 405):
        return " (is prometheus.url the API root, e.g. http://host:9090?)"
    return ""


def _redirect_hint(response: httpx.Response) -> str:
    location = response.headers.get("Location")
    return f" (redirected to {location!r}: set prometheus.url to it)" if location else ""


def _decode(response: httpx.Response, url: str, query: str) -> list[Series]:
    try:
        body = response.json()
    except ValueError:
        raise MetricSourceError(
            f"{url}: answer to query {query!r} is not JSON (is prometheus.url the API "
            f"root?): {response.text[:200]!r}",
            query=query,
        ) from None
    if not isinstance(body, dict) or body.get("status") != "success":
        detail = body.get("error") if isinstance(body, dict) else None
        raise MetricQueryError(
            f"{url} rejected query {query!r}: {detail or str(body)[:300]}", query=query
        )
    warnings = body.get("warnings")
    if warnings or body.get("isPartial"):  # isPartial: VictoriaMetrics
        structlog.get_logger().warning(
            "prometheus.partial_answer",
            url=url,
            query=query,
            warnings=warnings,
            partial=bool(body.get("isPartial")),
        )
    try:
        return _series_of(body["data"])
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise MetricSourceError(
            f"{url}: unexpected answer shape for query {query!r}: {type(e).__name__}: {e}",
            query=query,
        ) from e


def _series_of(data: dict[str, Any]) -> list[Series]:
    kind = data["resultType"]
    result = data["result"]
    if kind == "matrix":
        return [
            _series(item["metric"], [_point(p) for p in item.get("values", ())]) for item in result
        ]
    if kind == "vector":
        return [_series(item["metric"], [_point(item["value"])]) for item in result]
    if kind == "scalar":
        return [Series(metric="", labels=(), points=(_point(result),))]
    raise ValueError(f"result type {kind!r} is not a series (expected matrix, vector, scalar)")


def _series(metric: Mapping[str, str], points: list[tuple[datetime, float]]) -> Series:
    labels = dict(metric)
    name = labels.pop("__name__", "")
    return Series(metric=name, labels=tuple(sorted(labels.items())), points=tuple(points))


def _point(pair: Sequence[Any]) -> tuple[datetime, float]:
    ts, value = pair
    # Values are strings ("1.5", "NaN", "+Inf"); float() reads all of them.
    return _from_ms(round(float(ts) * 1000)), float(value)


# --- the fake -------------------------------------------------------------------------------

_Op = Literal["=", "!=", "=~", "!~"]

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_OP_RE = re.compile(r"=~|!~|!=|=")
_OPS: Mapping[str, _Op] = {"=": "=", "!=": "!=", "=~": "=~", "!~": "!~"}
# PromQL words that the real parser reads as something other than a metric name.
_KEYWORDS = frozenset(
    {
        "sum", "avg", "count", "min", "max", "group", "stddev", "stdvar", "topk", "bottomk",
        "count_values", "quantile", "limitk", "limit_ratio", "and", "or", "unless", "atan2",
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
        "inf", "nan",
    }
)  # fmt: skip
_GO_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", "'": "'", '"': '"',
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Matcher:
    label: str
    op: _Op
    value: str
    pattern: re.Pattern[str] | None

    def matches(self, actual: str) -> bool:
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.pattern is not None
        hit = self.pattern.fullmatch(actual) is not None
        return hit if self.op == "=~" else not hit


class FakeMetricSource:
    """``MetricSource`` over in-memory samples, for plain series selectors.

    Understands ``name``, ``name{a="x",b!="y",c=~"re",d!~"re"}`` and ``{__name__="x"}``
    (quotes: ``"..."``, ``'...'`` or backquotes); anything else raises
    ``MetricQueryError``, as do the selectors Prometheus itself refuses (no non-empty
    matcher, the name given twice, a bad regex).

    Semantics follow Prometheus 2.x: a series' value at ``t`` is its latest sample in
    ``[t - lookback, t]``, stamped ``t``; a range query evaluates at ``start``,
    ``start + step``, ... up to ``end``. An absent label equals ``""``. ``instant`` without
    ``at`` uses ``clock`` (the system clock by default), as the server uses its own.
    Labels with an empty value are dropped, as Prometheus drops them when it stores them.
    """

    def __init__(
        self,
        samples: Iterable[Sample],
        *,
        clock: Clock | None = None,
        lookback: timedelta = timedelta(minutes=5),
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self._lookback_ms = _step_ms(lookback)
        points: dict[tuple[str, tuple[tuple[str, str], ...]], dict[int, float]] = {}
        for s in samples:
            # Prometheus drops labels with an empty value when it stores a series.
            labels = tuple(kv for kv in s.labels if kv[1] != "") if s.labels else s.labels
            # One value per millisecond, the last one written winning, as in the TSDB.
            points.setdefault((s.metric, labels), {})[_to_ms(s.time)] = s.value
        self._series: list[tuple[str, tuple[tuple[str, str], ...], list[int], list[float]]] = []
        for (metric, labels), by_ms in sorted(points.items()):
            times = sorted(by_ms)
            self._series.append((metric, labels, times, [by_ms[t] for t in times]))

    async def instant(self, query: str, at: datetime | None = None) -> list[Series]:
        matchers = _parse_selector(query)
        t = _to_ms(at if at is not None else self._clock.now())
        out = []
        for metric, labels, times, values in self._select(matchers):
            value = self._value_at(times, values, t)
            if value is not None:
                out.append(Series(metric, labels, ((_from_ms(t), value),)))
        return out

    async def range(
        self, query: str, start: datetime, end: datetime, step: timedelta
    ) -> list[Series]:
        matchers = _parse_selector(query)
        start_ms, end_ms, step_ms = _to_ms(start), _to_ms(end), _step_ms(step)
        # The same checks, in the same order, as Prometheus' /api/v1/query_range.
        if end_ms < start_ms:
            raise MetricQueryError(
                f"query {query!r}: end timestamp must not be before start time", query=query
            )
        if step_ms <= 0:
            raise MetricQueryError(
                f"query {query!r}: zero or negative query resolution step widths are not "
                f"accepted (step {step!r}; Prometheus keeps whole milliseconds)",
                query=query,
            )
        if (end_ms - start_ms) // step_ms > MAX_POINTS_PER_SERIES:
            raise MetricQueryError(
                f"query {query!r}: exceeded maximum resolution of "
                f"{MAX_POINTS_PER_SERIES:,} points per timeseries",
                query=query,
            )
        out = []
        for metric, labels, times, values in self._select(matchers):
            points = []
            for t in range(start_ms, end_ms + 1, step_ms):
                value = self._value_at(times, values, t)
                if value is not None:
                    points.append((_from_ms(t), value))
            if points:
                out.append(Series(metric, labels, tuple(points)))
        return out

    def _select(
        self, matchers: Sequence[_Matcher]
    ) -> Iterable[tuple[str, tuple[tuple[str, str], ...], list[int], list[float]]]:
        for entry in self._series:
            metric, labels = entry[0], entry[1]
            present = dict(labels)
            present["__name__"] = metric
            if all(m.matches(present.get(m.label, "")) for m in matchers):
                yield entry

    def _value_at(self, times: list[int], values: list[float], t: int) -> float | None:
        i = bisect.bisect_right(times, t) - 1
        # Closed window [t - lookback, t], as Prometheus 2.x (3.x leaves the start open).
        if i >= 0 and times[i] >= t - self._lookback_ms:
            return values[i]
        return None


def _parse_selector(query: str) -> list[_Matcher]:
    """``name{matchers}`` -> matchers (the name as a ``__name__`` matcher)."""

    def fail(why: str) -> MetricQueryError:
        return MetricQueryError(
            f"FakeMetricSource: query {query!r}: {why} (the fake understands plain series "
            f"selectors only)",
            query=query,
        )

    pos = _skip_ws(query, 0)
    matchers: list[_Matcher] = []
    name_match = _NAME_RE.match(query, pos)
    if name_match is not None:
        name = name_match.group()
        if name.lower() in _KEYWORDS:
            raise fail(f"{name!r} is a PromQL keyword, not a metric name")
        matchers.append(_Matcher("__name__", "=", name, None))
        pos = name_match.end()
    pos = _skip_ws(query, pos)
    if query.startswith("{", pos):
        pos += 1
        while True:
            pos = _skip_ws(query, pos)
            if query.startswith("}", pos):
                pos += 1
                break
            label = _LABEL_RE.match(query, pos)
            if label is None:
                raise fail(f"expected a label name at offset {pos}")
            pos = _skip_ws(query, label.end())
            op = _OP_RE.match(query, pos)
            if op is None:
                raise fail(f"expected =, !=, =~ or !~ at offset {pos}")
            pos = _skip_ws(query, op.end())
            value, pos = _string_literal(query, pos, fail)
            matchers.append(_matcher(label.group(), _OPS[op.group()], value, fail))
            pos = _skip_ws(query, pos)
            if query.startswith(",", pos):
                pos += 1
            elif not query.startswith("}", pos):
                raise fail(f"expected ',' or '}}' at offset {pos}")
        pos = _skip_ws(query, pos)
    if pos != len(query) or not matchers:
        raise fail(f"unsupported expression at offset {pos}")
    names = [m for m in matchers if m.label == "__name__"]
    if name_match is not None and len(names) > 1:
        raise fail("metric name must not be set twice")
    if all(m.matches("") for m in matchers):
        raise fail("vector selector must contain at least one non-empty matcher")
    return matchers


def _skip_ws(query: str, pos: int) -> int:
    while pos < len(query) and query[pos].isspace():
        pos += 1
    return pos


def _matcher(label: str, op: _Op, value: str, fail: Callable[[str], MetricQueryError]) -> _Matcher:
    if op in ("=~", "!~"):
        try:
            # Prometheus anchors regexes at both ends; fullmatch does the same.
            return _Matcher(label, op, value, re.compile(value))
        except re.error as e:
            raise fail(f"error parsing regexp {value!r}: {e}") from None
    return _Matcher(label, op, value, None)


def _string_literal(
    query: str, pos: int, fail: Callable[[str], MetricQueryError]
) -> tuple[str, int]:
    """A PromQL string at ``pos`` ("..." or '...' with Go escapes, or `raw`)."""
    quote = query[pos : pos + 1]
    if quote == "`":
        end = query.find("`", pos + 1)
        if end < 0:
            raise fail("unterminated raw string")
        return query[pos + 1 : end], end + 1
    if quote not in ('"', "'"):
        raise fail(f"expected a quoted string at offset {pos}")
    out: list[str] = []
    i = pos + 1
    while i < len(query):
        c = query[i]
        if c == quote:
            return "".join(out), i + 1
        if c == "\n":
            break
        if c != "\\":
            out.append(c)
            i += 1
            continue
        esc = query[i + 1 : i + 2]
        if esc in _GO_ESCAPES:
            out.append(_GO_ESCAPES[esc])
            i += 2
        elif esc in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = query[i + 2 : i + 2 + width]
            if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise fail(f"invalid escape '\\{esc}{digits}' at offset {i}")
            code = int(digits, 16)
            if code > 0x10FFFF:
                raise fail(f"escape '\\{esc}{digits}' is not a code point")
            out.append(chr(code))
            i += 2 + width
        else:
            raise fail(f"unknown escape '\\{esc}' at offset {i}")
    raise fail(f"unterminated string starting at offset {pos}")
