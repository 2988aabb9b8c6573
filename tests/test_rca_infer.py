"""Metrics-only systems in the Root Cause engine: call structure inferred from the load
metrics when neither traces nor a topology give one (``sentinel.rca.infer``), the engine
on such a case, resource saturation as a cause, and a fault below the paging bar.

What must not live here: graphs from spans or topology (test_rca_graph.py), ranking on
hand-made graphs (test_rca_rank.py).
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from sentinel.cases import Case, FaultKind
from sentinel.incidents import case_slis, replay_case
from sentinel.rca.engine import BELOW_PAGING, diagnose, main_incident, with_inferred_topology
from sentinel.rca.infer import MIN_COMMON_POINTS, infer_topology
from sentinel.settings import DetectionSettings, PricingSettings
from sentinel.sim import FaultSpec, Topology, simulate_case
from sentinel.sim.faults import Magnitude
from sentinel.sli import SliKey, SliKind, SliSeries
from sentinel.telemetry import TopologyEdge

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
DET, PRICING = DetectionSettings(), PricingSettings()


def load(component: str, values: list[float], kind: SliKind = SliKind.REQUEST_RATE) -> SliSeries:
    return SliSeries(
        key=SliKey(component, kind),
        points=tuple((T0 + timedelta(seconds=15 * i), v) for i, v in enumerate(values)),
        counts=tuple(1 for _ in values),
    )


def test_components_whose_load_moves_together_are_linked_both_ways() -> None:
    rng = random.Random(3)
    traffic = [10 + 5 * rng.random() for _ in range(60)]
    slis = {
        s.key: s
        for s in (
            load("service:frontend", [t + rng.gauss(0, 0.3) for t in traffic]),
            load("service:cart", [0.6 * t + rng.gauss(0, 0.3) for t in traffic]),
            # no request counter: its CPU tracks the same traffic
            load("service:db", [0.02 * t for t in traffic], SliKind.CPU_USAGE),
            load("service:batch", [rng.random() for _ in traffic]),  # its own load
            load("service:idle", [1.0] * 60),  # flat: moves with nothing
        )
    }
    edges = {(e.caller, e.callee) for e in infer_topology(slis)}
    linked = {"service:frontend", "service:cart", "service:db"}
    assert edges == {(a, b) for a in linked for b in linked if a != b}


def test_too_short_a_window_infers_nothing() -> None:
    n = MIN_COMMON_POINTS - 1
    same = [float(i % 7) for i in range(n)]
    slis = {s.key: s for s in (load("service:a", same), load("service:b", same))}
    assert infer_topology(slis) == ()


def microservices(fault: FaultKind, seed: int, magnitude: Magnitude = Magnitude.STRONG) -> Case:
    case = simulate_case(FaultSpec(Topology.MICROSERVICES, fault, seed=seed, magnitude=magnitude))
    assert not case.spans  # the simulated microservice system is metrics only
    assert case.truth is not None
    return case


def test_a_metrics_only_case_without_topology_is_one_incident_with_the_cause_on_top() -> None:
    case = microservices(FaultKind.RESOURCE_EXHAUSTION, seed=103)
    bare = replace(case, topology=())
    assert case.truth is not None
    # Without any call edge, each service's anomalies would be an incident of its own.
    assert len(replay_case(bare, DET, PRICING)) > 1
    step = timedelta(seconds=DET.step_seconds)
    inferred = with_inferred_topology(bare, case_slis(bare, step, PRICING))
    assert inferred.topology
    incidents = replay_case(inferred, DET, PRICING)
    assert len(incidents) == 1
    main = main_incident(incidents)
    assert main is not None
    assert case.truth.root_cause in {a.component for a in main.anomalies}
    found = diagnose(bare, DET, PRICING)
    top = found.hypotheses[0]
    assert top.component == case.truth.root_cause
    assert top.fault == FaultKind.RESOURCE_EXHAUSTION.value
    assert any("cpu_usage" in e or "memory_utilisation" in e for e in top.evidence)


def test_a_known_topology_or_traces_are_never_replaced_by_an_inferred_one() -> None:
    case = microservices(FaultKind.RESOURCE_EXHAUSTION, seed=103)
    step = timedelta(seconds=DET.step_seconds)
    slis = case_slis(case, step, PRICING)
    assert with_inferred_topology(case, slis) is case
    one = (TopologyEdge(caller="service:frontend", callee="service:cartservice"),)
    assert with_inferred_topology(replace(case, topology=one), slis).topology == one


@pytest.mark.parametrize("seed", [103, 105])
def test_a_fault_below_the_paging_bar_is_still_diagnosed_and_says_so(seed: int) -> None:
    # A service a few ms slower: real, but short of the minimum effect of a team that
    # pages only on 20 ms or more (the default floor until session 25; at today's 2 ms
    # these faults page).
    bar = DET.model_copy(update={"latency_min_increase_seconds": 0.02})
    case = microservices(FaultKind.SERVICE_LATENCY, seed=seed, magnitude=Magnitude.SUBTLE)
    assert case.truth is not None
    assert replay_case(case, bar, PRICING) == ()
    found = diagnose(case, bar, PRICING)
    assert found.onset is not None
    assert found.hypotheses[0].component == case.truth.root_cause
    assert all(BELOW_PAGING in h.evidence for h in found.hypotheses)
    assert replay_case(case, DET, PRICING) != ()


def test_a_case_cut_minutes_before_its_fault_is_still_diagnosed() -> None:
    # 16 minutes in all, the fault after 9: short of the baseline that paging needs.
    spec = FaultSpec(Topology.MICROSERVICES, FaultKind.SERVICE_ERRORS, seed=101, minutes=16)
    case = simulate_case(spec)
    assert case.truth is not None
    assert replay_case(case, DET, PRICING) == ()
    found = diagnose(case, DET, PRICING)
    assert found.hypotheses[0].component == case.truth.root_cause
    assert found.onset is not None
    assert abs((found.onset - case.truth.fault_start).total_seconds()) <= 90
