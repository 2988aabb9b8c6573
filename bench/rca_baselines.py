"""Published root-cause-analysis baselines (RCAEval) run on sentinel's incident cases.

A benchmark that compares sentinel's RCA engine against the literature needs the
literature's own code: this module feeds a case's metrics to RCAEval's implementations
(BARO, N-Sigma, PC-PageRank, PC-RandomWalk, ...) exactly as RCAEval's evaluation does (one
wide table of metric time series, the true fault start given as ``inject_time``) and maps
the ranked columns back to sentinel component ids. Nothing here re-implements an
algorithm: only the data conversion and the name mapping are ours.

RCAEval and its numeric stack are in the ``bench`` dependency group, not a runtime
dependency: ``uv sync --group bench`` (a plain ``uv sync`` removes them again).

Conversion (``case_frame``): one column per (component, metric family, sample kind, other
labels) on a regular grid at the samples' own interval. Counters become per-second rates
(resets handled); gauges and summary quantiles stay as they are; a histogram's or
summary's ``_sum``/``_count`` become a mean (Δsum/Δcount) and a rate of ``_count``;
histogram buckets are skipped. Small gaps are forward-filled, constant columns dropped,
and copies (columns equal up to scale and offset, e.g. a service's and its tool's request
rate) merged: a merged column stands for every component it came from. The PC-based
methods also get the columns that are linear combinations of others left out, since
causal-learn's Fisher-z test fails on a singular correlation matrix (see
``_independent``); BARO and N-Sigma see every column.

Usage: ``rank_baselines(case, truth.fault_start)`` -> ``{"baro": ["service:x", ...], ...}``;
``run_baselines`` gives the same with the failure reason and seconds per method. A method
that crashes on a case yields an empty ranking and its reason, never an exception.
Self-check: ``.venv/bin/python bench/rca_baselines.py`` runs on ../shared/cases.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import random
import re
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentinel.openmetrics import METRIC_TYPES

try:
    import numpy as np
except ImportError as exc:  # the bench group is not installed: available() says so
    _MISSING: str | None = f"{type(exc).__name__}: {exc}"
else:
    _MISSING = None

if TYPE_CHECKING:
    import pandas as pd

    from sentinel.cases import Case

__all__ = [
    "METHODS",
    "BaselineRun",
    "CaseFrame",
    "available",
    "case_frame",
    "rank_baselines",
    "run_baselines",
]

# Method name -> (module, function) inside RCAEval. Only metric-based methods whose
# dependencies the `bench` group installs; the short aliases are the names the
# benchmark uses. Importing the function's own module (not the `RCAEval.e2e` namespace)
# keeps the lookup independent of which names RCAEval re-exports on this Python.
METHODS: Mapping[str, tuple[str, str]] = {
    "baro": ("RCAEval.e2e.baro", "baro"),
    "nsigma": ("RCAEval.e2e", "nsigma"),
    "pagerank": ("RCAEval.e2e.pc_pagerank", "pc_pagerank"),
    "pc_pagerank": ("RCAEval.e2e.pc_pagerank", "pc_pagerank"),
    "randomwalk": ("RCAEval.e2e.pc_randomwalk", "pc_randomwalk"),
    "pc_randomwalk": ("RCAEval.e2e.pc_randomwalk", "pc_randomwalk"),
}

# RCAEval's `preprocess` does nothing at all when `dataset` is None, so the `time` column
# would be ranked as a metric; any other name (except its "causalrca-sock-shop" special
# case) makes it drop `time` and constant columns, as on its own datasets.
DATASET = "sentinel"
# Forward-fill at most this many missing grid points (1 min at 15 s): a longer hole is
# an absent series, and inventing values over it would fake a change.
GAP_STEPS = 4
# Seed for the global RNGs before each method: PC-RandomWalk picks its start node with
# np.random, and a benchmark must give the same ranking on every run.
SEED = 0
# Columns correlated above 1 - this are copies of each other (merged), and a column whose
# standardized values other columns explain to within this share of its variance adds
# nothing for a conditional-independence test (dropped for the PC-based methods).
COPY_TOLERANCE = 1e-6
# Methods that build a graph with PC and Fisher-z tests, which need a full-rank table.
_PC_METHODS = frozenset({"pagerank", "pc_pagerank", "randomwalk", "pc_randomwalk"})
# Labels that name the component (resolved into Sample.component): not part of a name.
_IDENTITY_LABELS = frozenset({"component", "namespace", "service_name", "service", "pod"})
_INSTALL = "install them with `uv sync --group bench`"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


@dataclass(frozen=True, slots=True)
class CaseFrame:
    """A case's metrics as RCAEval wants them.

    ``data``: column ``time`` (unix seconds) then one float column per series, no NaN.
    ``components``: column -> the component ids it stands for (several when copies were
    merged), kept as a table so no column name is ever parsed back.
    """

    data: pd.DataFrame
    components: dict[str, tuple[str, ...]]
    step: float


@dataclass(frozen=True, slots=True)
class BaselineRun:
    """One method on one case: the ranking (empty on failure) and why it failed."""

    method: str
    ranking: list[str]
    error: str | None
    seconds: float


# --- availability ---------------------------------------------------------------------


@cache
def _function(method: str) -> Callable[..., dict[str, Any]]:
    module, name = METHODS[method]
    # RCAEval.e2e calls warnings.filterwarnings("ignore") at import: keep that from
    # silencing warnings for the whole benchmark process.
    with warnings.catch_warnings():
        fn: Callable[..., dict[str, Any]] = getattr(importlib.import_module(module), name)
    return fn


def available(methods: Sequence[str] = ("baro", "pagerank")) -> str | None:
    """None when the baselines can run, else a one-line reason (e.g. package missing)."""
    if _MISSING is not None:
        return f"RCAEval baselines unavailable ({_MISSING}); {_INSTALL}"
    try:
        for method in methods:
            _function(method)
    except KeyError as exc:
        return f"unknown baseline method {exc}; known: {', '.join(METHODS)}"
    except ImportError as exc:
        return f"RCAEval baselines unavailable ({type(exc).__name__}: {exc}); {_INSTALL}"
    return None


# --- conversion -----------------------------------------------------------------------


def _owners(metric_types: Sequence[tuple[str, str]]) -> dict[str, tuple[str, str, str]]:
    """Sample name -> (family, type, suffix), from the case's `# TYPE` lines."""
    owners: dict[str, tuple[str, str, str]] = {}
    for name, kind in metric_types:
        suffixes = METRIC_TYPES.get(kind, ("",))
        family = name.removesuffix("_total") if kind == "counter" else name
        for suffix in suffixes:
            owners[family + suffix] = (family, kind, suffix)
    return owners


def _increments(cumulative: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grid index, increase, seconds) between consecutive present points of a counter.

    A drop means the counter restarted from zero, so the increase is the new value, as
    Prometheus' rate() assumes.
    """
    idx = np.flatnonzero(~np.isnan(cumulative))
    values = cumulative[idx]
    inc = np.diff(values)
    reset = inc < 0
    inc[reset] = values[1:][reset]
    return idx[1:], inc, np.diff(idx) * step


def _on_grid(points: list[tuple[float, float]], t0: float, step: float, n: int) -> np.ndarray:
    """Values placed at their nearest grid point (the last one wins a shared point)."""
    points.sort()
    times = np.fromiter((p[0] for p in points), float, len(points))
    values = np.fromiter((p[1] for p in points), float, len(points))
    slots = np.clip(np.rint((times - t0) / step).astype(np.int64), 0, n - 1)
    last = np.r_[slots[1:] != slots[:-1], True]
    out = np.full(n, np.nan)
    out[slots[last]] = values[last]
    return out


def _rate(cumulative: np.ndarray, step: float) -> np.ndarray:
    idx, inc, dt = _increments(cumulative, step)
    out = np.full(cumulative.shape, np.nan)
    out[idx] = inc / dt
    # Before a counter's first sample nothing was counted (Prometheus creates a labelled
    # counter such as status="error" at its first event), so its rate there is 0.
    # (The first sample's own increase is unknown, as in rate(): it stays NaN and is filled
    # from a neighbour.)
    present = np.flatnonzero(~np.isnan(cumulative))
    if present.size:
        out[: present[0]] = 0.0
    return out


def _mean(total: np.ndarray, count: np.ndarray, step: float) -> np.ndarray:
    """Mean observation per interval, Δsum/Δcount: the latency a summary or histogram
    reports without needing its buckets. NaN where nothing was observed."""
    both = np.where(np.isnan(total) | np.isnan(count), np.nan, 0.0)
    idx, d_count, _ = _increments(count + both, step)
    _, d_total, _ = _increments(total + both, step)
    out = np.full(total.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[idx] = np.where(d_count > 0, d_total / d_count, np.nan)
    return out


def _column_name(component: str, series: str, labels: tuple[tuple[str, str], ...]) -> str:
    shown = [v for k, v in labels if k not in _IDENTITY_LABELS]
    name = _UNSAFE.sub("_", "_".join([component, series, *shown]))
    # RCAEval's preprocess divides columns ending in "_mem" by 1e6 (its datasets' bytes).
    return name + "_" if name.endswith("_mem") else name


def case_frame(case: Case) -> CaseFrame:
    """The case's metrics as one wide table on a regular grid (see the module docstring).

    Raises ValueError when the case has no component-attributed metric sample that
    varies, and
    ImportError when the bench group is not installed.
    """
    if _MISSING is not None:
        raise ImportError(f"{_MISSING}; {_INSTALL}")
    import pandas as pd

    samples = [s for s in case.samples if s.component is not None]
    if not samples:
        raise ValueError("the case has no metric samples attributed to a component")
    owners = _owners(case.metric_types)

    # Grid at the samples' own interval: the median gap between distinct sample times.
    stamps = np.unique(np.fromiter((s.time.timestamp() for s in samples), float, len(samples)))
    step = float(np.median(np.diff(stamps))) if stamps.size > 1 else 15.0
    step = max(1.0, round(step))
    t0 = float(stamps[0])
    n = round((float(stamps[-1]) - t0) / step) + 1

    # Raw series: (component, family, kind, suffix, labels) -> points.
    raw: dict[tuple[str, str, str, str, tuple[tuple[str, str], ...]], list[tuple[float, float]]]
    raw = defaultdict(list)
    for s in samples:
        family, kind, suffix = owners.get(s.metric, (s.metric, "unknown", ""))
        labels = tuple(kv for kv in s.labels if kv[0] != "component")
        assert s.component is not None
        raw[(s.component, family, kind, suffix, labels)].append((s.time.timestamp(), s.value))

    columns: dict[str, np.ndarray] = {}
    comp_of: dict[str, str] = {}

    def add(
        component: str, series: str, labels: tuple[tuple[str, str], ...], v: np.ndarray
    ) -> None:
        name = base = _column_name(component, series, labels)
        k = 1
        while name in columns:  # two label sets that differ only in identity labels
            k += 1
            name = f"{base}_{k}"
        columns[name] = v
        comp_of[name] = component

    for (component, family, kind, suffix, labels), points in sorted(raw.items()):
        grid = _on_grid(points, t0, step, n)
        if kind == "counter" and suffix == "_total":
            add(component, f"{family}_rate", labels, _rate(grid, step))
        elif kind in ("histogram", "summary") and suffix == "_count":
            add(component, f"{family}_count_rate", labels, _rate(grid, step))
            total_key = (component, family, kind, "_sum", labels)
            if total_key in raw:
                total = _on_grid(raw[total_key], t0, step, n)
                add(component, f"{family}_mean", labels, _mean(total, grid, step))
        elif kind in ("histogram", "summary") and suffix == "_sum":
            continue  # used with its _count above
        elif suffix in ("_bucket", "_created", "_info") or kind == "info":
            # Buckets would add one column per bound, all saying what _mean says; creation
            # times and info labels do not move with a fault.
            continue
        else:  # gauge, summary quantile, gaugehistogram _gsum/_gcount, unknown, stateset
            add(component, f"{family}{suffix}", labels, grid)

    frame = pd.DataFrame(columns)
    # A rate's or mean's first point has no interval before it: take the next one.
    frame = frame.ffill(limit=GAP_STEPS).bfill(limit=GAP_STEPS)
    frame = frame.loc[:, frame.notna().all() & (frame.nunique() > 1)]
    if frame.empty:
        raise ValueError("no metric series varies over the case's window")

    # Merge copies (columns that are the same up to scale and offset, e.g. a service's and
    # its tool's request rate): they carry the same evidence, and PC's Fisher-z test fails
    # on the singular correlation matrix they make. The kept column stands for all of them.
    values = frame.to_numpy(dtype=float)
    z = (values - values.mean(axis=0)) / values.std(axis=0)
    corr = z.T @ z / len(z)
    components: dict[str, tuple[str, ...]] = {}
    kept: list[int] = []
    for i, name in enumerate(frame.columns):
        copy_of = next((k for k in kept if corr[k, i] > 1 - COPY_TOLERANCE), None)
        if copy_of is None:
            kept.append(i)
            components[name] = (comp_of[name],)
            continue
        first = str(frame.columns[copy_of])
        if comp_of[name] not in components[first]:
            components[first] = (*components[first], comp_of[name])
    frame = frame[list(components)]
    frame.insert(0, "time", t0 + step * np.arange(n))
    return CaseFrame(data=frame.reset_index(drop=True), components=components, step=step)


def _independent(frame: CaseFrame) -> pd.DataFrame:
    """``frame.data`` without the columns that are linear combinations of others.

    Fisher-z inverts correlation sub-matrices and fails ("Data correlation matrix is
    singular") when one column is a combination of others, as a total of its parts is
    (requests = ok calls + error calls). Columns are taken round-robin over components
    (every component's first column, then every second one, ...), so a component loses its
    last column only when all of its columns are combinations of other components' ones.
    """
    data = frame.data
    by_component: dict[str, list[str]] = defaultdict(list)
    for column, comps in frame.components.items():
        by_component[comps[0]].append(column)
    longest = max((len(columns) for columns in by_component.values()), default=0)
    order = [
        columns[rank]
        for rank in range(longest)
        for columns in by_component.values()
        if rank < len(columns)
    ]
    basis: list[np.ndarray] = []  # orthonormal, Gram-Schmidt over the kept columns
    kept: list[str] = []
    for column in order:
        v = data[column].to_numpy(dtype=float)
        v = (v - v.mean()) / v.std()
        norm = float(v @ v)
        for _ in range(2):  # twice: one pass loses orthogonality over ~100 columns
            for b in basis:
                v = v - (b @ v) * b
        if float(v @ v) > COPY_TOLERANCE * norm:
            basis.append(v / np.sqrt(v @ v))
            kept.append(column)
    keep = set(kept)
    return data[["time", *(c for c in data.columns if c in keep)]]


# --- running --------------------------------------------------------------------------


def _components(ranks: Sequence[str], components: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Column ranking -> component ranking, each component once at its best rank."""
    out: list[str] = []
    seen: set[str] = set()
    for column in ranks:
        for component in components.get(column, ()):
            if component not in seen:
                seen.add(component)
                out.append(component)
    return out


def _run(method: str, frame: CaseFrame, inject_time: float) -> BaselineRun:
    start = time.perf_counter()

    def failed(reason: str) -> BaselineRun:
        return BaselineRun(method, [], reason, time.perf_counter() - start)

    try:
        fn = _function(method)
    except ImportError as exc:
        return failed(f"not importable: {type(exc).__name__}: {exc}")
    chatter = io.StringIO()
    random.seed(SEED)
    np.random.seed(SEED)  # RCAEval draws from the legacy global RNG
    try:
        # RCAEval prints progress and numpy warns about degenerate columns; keep both out
        # of the benchmark's output, but keep the text to explain a failure.
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(chatter),
            contextlib.redirect_stderr(chatter),
        ):
            warnings.simplefilter("ignore")
            data = _independent(frame) if method in _PC_METHODS else frame.data
            out = fn(data.copy(), inject_time=inject_time, dataset=DATASET)
    except Exception as exc:  # noqa: BLE001 - a baseline's crash on one case is a result, not a benchmark failure
        return failed(f"{type(exc).__name__}: {exc}")
    # RCAEval's @rca wrapper swallows a crash and returns the plain column order with an
    # empty "adj" list (a real run returns an array): that is no ranking at all.
    adj = out.get("adj") if isinstance(out, dict) else None
    if isinstance(adj, list) and not adj:
        said = [line for line in chatter.getvalue().splitlines() if "failed" in line]
        return failed(said[-1] if said else "RCAEval's wrapper reported a failure")
    ranks = out.get("ranks") if isinstance(out, dict) else None
    if not isinstance(ranks, list):
        return failed(f"unexpected result: {type(out).__name__} without a 'ranks' list")
    ranking = _components([str(r) for r in ranks], frame.components)
    return BaselineRun(method, ranking, None, time.perf_counter() - start)


def run_baselines(
    case: Case, fault_start: datetime, methods: Sequence[str] = ("baro", "pagerank")
) -> dict[str, BaselineRun]:
    """Each method's ranking of the case (see ``rank_baselines``), with its failure
    reason (None on success) and wall seconds. Raises ValueError for an unknown method
    name only; any failure on the case itself is in the result."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown baseline method(s) {unknown}; known: {', '.join(METHODS)}")
    try:
        frame = case_frame(case)
    except ImportError as exc:
        return {m: BaselineRun(m, [], f"not importable: {exc}", 0.0) for m in methods}
    except ValueError as exc:
        return {m: BaselineRun(m, [], f"no input: {exc}", 0.0) for m in methods}
    inject_time = fault_start.timestamp()
    before = int((frame.data["time"] < inject_time).sum())
    if before == 0 or before == len(frame.data):
        # BARO and N-Sigma compare the fault period with the time before it; RCAEval
        # would fail on an empty side with an IndexError that explains nothing.
        side = "before" if before == 0 else "at or after"
        reason = f"no input: no metric samples {side} the fault start {fault_start.isoformat()}"
        return {m: BaselineRun(m, [], reason, 0.0) for m in methods}
    return {m: _run(m, frame, inject_time) for m in methods}


def rank_baselines(
    case: Case, fault_start: datetime, methods: Sequence[str] = ("baro", "pagerank")
) -> dict[str, list[str]]:
    """For each method, the component ids (like "service:cartservice", "tool:web_search")
    ranked most-likely root cause first, computed from the case's METRICS only, given the
    true fault start (as RCAEval's evaluation does). A method that failed on the case
    gets an empty list, and its reason is written to stderr."""
    runs = run_baselines(case, fault_start, methods)
    for run in runs.values():
        if run.error is not None:
            sys.stderr.write(f"{case.meta.id}: baseline {run.method} failed: {run.error}\n")
    return {m: run.ranking for m, run in runs.items()}


# --- self-check -----------------------------------------------------------------------


def _main() -> int:
    from sentinel.cases import read_case

    shared = Path(__file__).resolve().parents[1].parent / "shared" / "cases"
    methods = tuple(sys.argv[1:]) or ("baro", "pagerank")
    reason = available(methods)
    if reason is not None:
        print(reason)
        return 1
    for folder in sorted(p for p in shared.iterdir() if p.is_dir()):
        case = read_case(folder, with_truth=True)
        assert case.truth is not None
        t = time.perf_counter()
        frame = case_frame(case)
        convert = time.perf_counter() - t
        print(
            f"{case.meta.id}: truth {case.truth.root_cause} ({case.truth.fault}); "
            f"{frame.data.shape[1] - 1} columns x {frame.data.shape[0]} rows at "
            f"{frame.step:.0f} s, converted in {convert:.2f}s"
        )
        runs = run_baselines(case, case.truth.fault_start, methods)
        for method, run in runs.items():
            if run.error is not None:
                print(f"  {method:10s} FAILED ({run.seconds:.2f}s): {run.error}")
                continue
            rank = (
                run.ranking.index(case.truth.root_cause) + 1
                if case.truth.root_cause in run.ranking
                else None
            )
            print(
                f"  {method:10s} {run.seconds:6.2f}s  truth at "
                f"{rank if rank else '-'}/{len(run.ranking)}  top5 {run.ranking[:5]}"
            )
        print(f"  case total {time.perf_counter() - t:.2f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
