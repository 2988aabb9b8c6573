"""Tests of the simulator (``sentinel.sim``): every fitting (topology, fault) makes a case
that round-trips through the case format, deterministically, whose truth is visible in
its own telemetry where the fault says it should be, and whose callers feel it less.

What must not live here: tests of the case format itself (``test_cases.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.cases import Case, FaultKind, read_case, write_case
from sentinel.sim import (
    FaultSpec,
    Topology,
    fits,
    simulate_case,
    suite,
)
from sentinel.sim.faults import Effect, plan_fault
from sentinel.sim.topology import ServiceNode, system

FITTING = [(t, f) for t in Topology for f in FaultKind if fits(t, f)]
UNFIT = [(t, f) for t in Topology for f in FaultKind if not fits(t, f)]
SEED = 11


class Series:
    """The case's samples by (metric, labels), values in time order."""

    def __init__(self, case: Case) -> None:
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = defaultdict(list)
        times: set[datetime] = set()
        for s in case.samples:
            self.values[(s.metric, s.labels)].append(s.value)
            times.add(s.time)
        self.times = sorted(times)

    def index(self, t: datetime) -> int:
        return max(i for i, x in enumerate(self.times) if x <= t)

    def matching(self, metric: str, /, **labels: str) -> list[list[float]]:
        return [
            v
            for (m, ls), v in self.values.items()
            if m == metric and all(dict(ls).get(k) == want for k, want in labels.items())
        ]

    def increase(self, metric: str, a: int, b: int, /, **labels: str) -> float:
        return sum(v[b] - v[a] for v in self.matching(metric, **labels))

    def gauge_mean(self, metric: str, a: int, b: int, /, **labels: str) -> float:
        rows = self.matching(metric, **labels)
        assert rows, (metric, labels)
        vals = [x for v in rows for x in v[a:b]]
        return sum(vals) / len(vals)


class Windows:
    """Sample indexes of the before and after windows around the fault."""

    def __init__(self, case: Case, series: Series, ramp: float) -> None:
        assert case.truth is not None
        start = case.meta.start
        fs = case.truth.fault_start
        self.before = (series.index(start + timedelta(minutes=2)), series.index(fs))
        self.after = (
            series.index(fs + timedelta(seconds=ramp + 60)),
            len(series.times) - 1,
        )


def error_ratio(s: Series, w: tuple[int, int], comp: str) -> float:
    n = s.increase("component_requests_total", *w, component=comp)
    return s.increase("component_errors_total", *w, component=comp) / max(n, 1)


def mean_latency(s: Series, w: tuple[int, int], comp: str) -> float:
    n = s.increase("component_request_duration_seconds_count", *w, component=comp)
    return s.increase("component_request_duration_seconds_sum", *w, component=comp) / max(n, 1)


@pytest.fixture(scope="module")
def cases() -> dict[tuple[Topology, FaultKind], Case]:
    return {(t, f): simulate_case(FaultSpec(t, f, SEED)) for t, f in FITTING}


def test_every_fault_kind_fits_some_topology() -> None:
    assert {f for _, f in FITTING} == set(FaultKind)
    assert all(fits(Topology.SUPPORT, f) for f in FaultKind)


@pytest.mark.parametrize(("topology", "fault"), FITTING, ids=lambda x: str(x))
def test_a_fitting_case_round_trips(topology: Topology, fault: FaultKind, tmp_path: Path) -> None:
    # A short window keeps this fast; the full window is checked below, in memory.
    case = simulate_case(FaultSpec(topology, fault, SEED, minutes=15))
    write_case(case, tmp_path / "case")
    assert read_case(tmp_path / "case", with_truth=True) == case
    assert case.truth is not None
    assert case.meta.id == f"sim-{topology.value}-{fault.value}-{SEED}"
    assert case.meta.start < case.truth.fault_start < case.meta.end


@pytest.mark.parametrize(("topology", "fault"), FITTING, ids=lambda x: str(x))
def test_a_case_shows_its_root_cause_and_red_herrings(
    topology: Topology, fault: FaultKind, cases: dict[tuple[Topology, FaultKind], Case]
) -> None:
    case = cases[(topology, fault)]
    truth = case.truth
    assert truth is not None
    assert truth.fault_kind is fault
    assert case.meta.end - case.meta.start == timedelta(minutes=50)
    fault_offset = (case.meta.end - truth.fault_start).total_seconds()
    assert 15 * 60 - 1 <= fault_offset <= 25 * 60 + 1

    # The root cause is a component the case shows.
    present = (
        {s.component for s in case.spans}
        | {s.component for s in case.samples}
        | {c.component for c in case.changes}
    )
    assert truth.root_cause in present
    if truth.change is not None:
        change = next(c for c in case.changes if c.id == truth.change)
        assert change.component == truth.root_cause
        assert change.time <= truth.fault_start
        assert truth.remediation == "gitops_rollback"
    herrings = [c for c in case.changes if c.id != truth.change]
    assert 1 <= len(herrings) <= 3
    assert all(c.component != truth.root_cause for c in herrings)

    # Traces: a few thousand at most, none for a metrics-only system.
    if topology is Topology.MICROSERVICES:
        assert case.spans == ()
    else:
        assert 300 <= len(case.spans) <= 5000
        assert any(e.name == "gen_ai.evaluation.result" for s in case.spans for e in s.events)

    # Counters never go down.
    s = Series(case)
    for (metric, _), values in s.values.items():
        if metric.endswith(("_total", "_count", "_sum", "_bucket")):
            assert all(b >= a for a, b in itertools.pairwise(values)), metric


@pytest.mark.parametrize(("topology", "fault"), FITTING, ids=lambda x: str(x))
def test_the_fault_is_visible_at_its_target_and_weaker_upstream(
    topology: Topology, fault: FaultKind, cases: dict[tuple[Topology, FaultKind], Case]
) -> None:
    case = cases[(topology, fault)]
    plan = plan_fault(FaultSpec(topology, fault, SEED), random.Random(SEED))
    assert case.truth is not None and plan.root == case.truth.root_cause
    s = Series(case)
    w = Windows(case, s, plan.ramp)
    target = plan.target
    effect = plan.mechanism.effect
    if effect is Effect.ERRORS:
        before, after = error_ratio(s, w.before, target), error_ratio(s, w.after, target)
        assert after > max(3 * before, before + 0.03), (before, after)
    elif effect is Effect.LATENCY:
        q = {"component": target, "quantile": "0.95"}
        before = s.gauge_mean("component_request_duration_seconds", *w.before, **q)
        after = s.gauge_mean("component_request_duration_seconds", *w.after, **q)
        assert after > 1.3 * before, (before, after)
    elif effect is Effect.QUALITY:
        drops = [
            s.gauge_mean("gen_ai_evaluation_score", *w.after, **dict(labels))
            - s.gauge_mean("gen_ai_evaluation_score", *w.before, **dict(labels))
            for (m, labels) in s.values
            if m == "gen_ai_evaluation_score"
        ]
        assert min(drops) < -0.03, drops
        if fault is FaultKind.PROMPT_REGRESSION:
            score = "gen_ai_evaluation_score"
            drop = s.gauge_mean(score, *w.after, component=target) - s.gauge_mean(
                score, *w.before, component=target
            )
            assert drop < -0.1
    elif effect is Effect.COST:

        def per_run(win: tuple[int, int]) -> float:
            tokens = s.increase("gen_ai_client_token_usage_total", *win, component=target)
            return tokens / s.increase("component_requests_total", *win, component=target)

        assert per_run(w.after) > 1.5 * per_run(w.before)
    else:
        host = target.split(":", 1)[1]
        before = s.gauge_mean("container_memory_working_set_bytes", *w.before, service_name=host)
        after = max(
            x
            for v in s.matching("container_memory_working_set_bytes", service_name=host)
            for x in v[w.after[0] :]
        )
        assert after > 1.3 * before
        assert s.increase("kube_pod_container_status_restarts_total", *w.after, service_name=host)

    # Callers feel a propagating fault, less than the target does.
    if effect not in (Effect.ERRORS, Effect.LATENCY, Effect.SATURATION):
        return
    callers = [
        c
        for c in plan.system.callers(target)
        if s.increase("component_requests_total", *w.after, component=c) > 50
    ]
    assert callers
    caller = max(
        callers, key=lambda c: s.increase("component_requests_total", *w.after, component=c)
    )
    if effect is Effect.LATENCY:
        root_ratio = mean_latency(s, w.after, target) / mean_latency(s, w.before, target)
        ratio = mean_latency(s, w.after, caller) / mean_latency(s, w.before, caller)
        assert 1.02 < ratio <= root_ratio * 1.02, (caller, ratio, root_ratio)
    else:
        root_up = error_ratio(s, w.after, target) - error_ratio(s, w.before, target)
        up = error_ratio(s, w.after, caller) - error_ratio(s, w.before, caller)
        assert 0.003 < up < root_up, (caller, up, root_up)


@pytest.mark.parametrize(("topology", "fault"), UNFIT, ids=lambda x: str(x))
def test_unfit_combinations_raise(topology: Topology, fault: FaultKind) -> None:
    with pytest.raises(ValueError, match=f"{fault.value}.*{topology.value}"):
        simulate_case(FaultSpec(topology, fault, 1))


def test_unfit_includes_tool_faults_on_microservices() -> None:
    assert (Topology.MICROSERVICES, FaultKind.TOOL_ERRORS) in UNFIT
    assert (Topology.RAG, FaultKind.TOOL_RATE_LIMIT) in UNFIT


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_inputs_give_byte_identical_case_files(tmp_path: Path) -> None:
    spec = FaultSpec(Topology.SUPPORT, FaultKind.PROMPT_REGRESSION, 5)
    write_case(simulate_case(spec), tmp_path / "a")
    write_case(simulate_case(spec), tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    write_case(
        simulate_case(FaultSpec(Topology.SUPPORT, FaultKind.PROMPT_REGRESSION, 6)), tmp_path / "c"
    )
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_the_sample_ratio_samples_the_same_traffic() -> None:
    """A lower ratio keeps a subset of the same traces, and changes neither the traffic
    nor the metrics: a spans-only case is its metrics' case with every trace kept."""
    spec = FaultSpec(Topology.RAG, FaultKind.RETRIEVAL_DEGRADATION, 9, minutes=12)
    low = simulate_case(dataclasses.replace(spec, sample_ratio=0.1))
    full = simulate_case(dataclasses.replace(spec, sample_ratio=1.0))
    assert low.samples == full.samples
    assert 0 < len(low.spans) < len(full.spans)

    def shapes(case: Case) -> dict[str, list[tuple[object, ...]]]:
        """Each trace's spans, without the ids and contents drawn for spans alone."""
        by_trace: dict[str, list[tuple[object, ...]]] = defaultdict(list)
        for s in case.spans:
            by_trace[s.trace_id].append(
                (s.component, s.name, s.start_ns, s.end_ns, s.status, s.error_type)
            )
        return {t: sorted(v, key=repr) for t, v in by_trace.items()}

    kept, every = shapes(low), shapes(full)
    assert kept.keys() < every.keys()
    assert all(kept[t] == every[t] for t in kept)
    # about a tenth of the traces, as the ratio says
    assert 0.05 < len(kept) / len(every) < 0.15


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), pick=st.integers(0, len(FITTING) - 1))
def test_any_seed_gives_a_consistent_short_case(seed: int, pick: int) -> None:
    topology, fault = FITTING[pick]
    spec = FaultSpec(topology, fault, seed, minutes=12)
    case = simulate_case(spec)
    assert case == simulate_case(spec)
    assert case.truth is not None
    assert case.meta.start < case.truth.fault_start < case.meta.end
    assert case.truth.change is None or any(c.id == case.truth.change for c in case.changes)
    nodes = system(topology).nodes
    assert all(s.component in nodes or s.component.startswith("service:") for s in case.samples)


def test_the_suite_covers_every_fault_kind_with_varied_difficulty() -> None:
    specs = list(suite(28, seed=3))
    assert len(specs) == 28
    assert {s.fault for s in specs[:14]} == set(FaultKind)
    assert all(fits(s.topology, s.fault) for s in specs)
    assert len({(s.magnitude, s.onset) for s in specs}) == 4
    assert specs == list(suite(28, seed=3))


def test_subtle_ramped_faults_are_weaker(tmp_path: Path) -> None:
    strong = FaultSpec(Topology.MICROSERVICES, FaultKind.SERVICE_ERRORS, 2)
    from sentinel.sim import Magnitude, Onset

    subtle = FaultSpec(
        Topology.MICROSERVICES, FaultKind.SERVICE_ERRORS, 2, Magnitude.SUBTLE, Onset.RAMPED
    )
    ps = plan_fault(strong, random.Random(2))
    pw = plan_fault(subtle, random.Random(2))
    assert pw.mechanism.error_rate < ps.mechanism.error_rate
    assert pw.ramp > 0 == ps.ramp
    case = simulate_case(subtle)
    write_case(case, tmp_path / "c")
    assert read_case(tmp_path / "c", with_truth=True) == case


def test_no_wall_clock_or_global_random_in_the_simulator() -> None:
    src = Path(__file__).parents[1] / "src" / "sentinel" / "sim"
    text = "\n".join(p.read_text() for p in src.glob("*.py"))
    assert "datetime.now" not in text
    assert "random.random(" not in text and "random.choice(" not in text
    assert isinstance(system(Topology.RAG).node("service:reranker"), ServiceNode)


@pytest.mark.parametrize("topology", list(Topology), ids=str)
def test_expected_call_rates_match_the_simulated_traffic(
    topology: Topology, cases: dict[tuple[Topology, FaultKind], Case]
) -> None:
    # The fault-free part of a case, counted by the simulator's own request counters.
    fault = next(f for t, f in FITTING if t is topology)
    case = cases[(topology, fault)]
    series = Series(case)
    w = Windows(case, series, ramp=0.0)
    seconds = (series.times[w.before[1]] - series.times[w.before[0]]).total_seconds()
    expected = system(topology).calls_per_second()
    checked = 0
    for comp, rate in expected.items():
        if not series.matching("component_requests_total", component=comp) or rate < 0.2:
            continue  # not metered (external), or too few calls to count precisely
        seen = series.increase("component_requests_total", *w.before, component=comp) / seconds
        assert seen == pytest.approx(rate, rel=0.3), comp
        checked += 1
    assert checked >= 3


def test_subtle_faults_reach_the_default_minimum_effects() -> None:
    from sentinel.settings import DetectionSettings
    from sentinel.sim import Magnitude
    from sentinel.sim.faults import SUBTLE_MIN_ERRORS_PER_10_MIN

    det = DetectionSettings()
    error_faults = 0
    for (topology, fault), seed in itertools.product(FITTING, range(6)):
        spec = FaultSpec(topology, fault, seed, Magnitude.SUBTLE)
        plan = plan_fault(spec, random.Random(seed))
        mech = plan.mechanism
        strong = plan_fault(
            FaultSpec(topology, fault, seed, Magnitude.STRONG), random.Random(seed)
        ).mechanism
        if fault is FaultKind.MODEL_PROVIDER_LATENCY:
            assert mech.latency_mult >= det.latency_min_ratio
        if fault is FaultKind.MODEL_VERSION_CHANGE:
            assert mech.score_drop >= det.eval_score_min_drop
        if mech.effect is Effect.ERRORS and not mech.retries:
            error_faults += 1
            # Enough failures to be told from chance in ten minutes, unless the subtle
            # rate is already the strong one's ceiling.
            rate = plan.system.calls_per_second()[plan.target]
            floor = SUBTLE_MIN_ERRORS_PER_10_MIN / (rate * 600)
            assert mech.error_rate >= min(floor, strong.error_rate / 1.15**2) * 0.999, (
                topology,
                fault,
                plan.target,
            )
            assert mech.error_rate <= strong.error_rate * 1.15 / 0.85
    assert error_faults > 20
