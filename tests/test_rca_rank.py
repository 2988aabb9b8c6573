"""Ranking root-cause hypotheses (``sentinel.rca.rank``), the engine on cases
(``sentinel.rca.engine``) and ``sentinel rca CASE_DIR [--json]``: causes downstream of
their symptoms, changes that stand for what they affect, red herrings, demand that flows
down, silent indexes behind worse answers, priors, probabilities, and the documented JSON.

What must not live here: building the graph (test_rca_graph.py), detection.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentinel.cases import Case, FaultKind, write_case
from sentinel.cli import app
from sentinel.detection import Anomaly
from sentinel.rca import build_graph
from sentinel.rca.engine import diagnose
from sentinel.rca.rank import Hypothesis, rank
from sentinel.settings import DetectionSettings, PricingSettings
from sentinel.sim import FaultSpec, Topology, simulate_case
from sentinel.telemetry import ChangeEvent, ChangeKind, SliKind, TopologyEdge
from tests.test_detection import rate_limit_behind_retries

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
GATEWAY, AGENT, TOOL, SERVICE = "service:gateway", "agent:helper", "tool:lookup", "service:crm"
MODEL, INDEX = "model:gpt-4o", "index:docs"
CHAIN = (
    TopologyEdge(caller=GATEWAY, callee=AGENT),
    TopologyEdge(caller=AGENT, callee=TOOL),
    TopologyEdge(caller=TOOL, callee=SERVICE),
    TopologyEdge(caller=AGENT, callee=MODEL),
    TopologyEdge(caller=AGENT, callee=INDEX),
)


def anomaly(
    component: str, sli: SliKind, *, at: int = 0, score: float = 20.0, qualifier: str = ""
) -> Anomaly:
    return Anomaly(
        component=component,
        sli=sli,
        qualifier=qualifier,
        onset=T0 + timedelta(seconds=at),
        baseline=1.0,
        observed=2.0,
        score=score,
    )


def change(
    component: str, affects: tuple[str, ...], *, before: int = 60, cid: str = "9f1c2ab"
) -> ChangeEvent:
    return ChangeEvent(
        id=cid,
        time=T0 - timedelta(seconds=before),
        component=component,
        affects=affects,
        kind=ChangeKind.PROMPT if component.startswith("prompt:") else ChangeKind.CONFIG,
        author="dana",
        summary="tighten refund wording",
    )


def ranked(
    anomalies: list[Anomaly], changes: tuple[ChangeEvent, ...] = (), **kw: object
) -> tuple[Hypothesis, ...]:
    return rank(build_graph((), changes, anomalies, CHAIN), **kw)  # type: ignore[arg-type]


def test_a_slow_service_explains_the_slow_tool_and_agent_above_it() -> None:
    # The callers' anomalies are even stronger (they add their own noise): position in
    # the graph, not the loudest symptom, decides.
    found = ranked(
        [
            anomaly(GATEWAY, SliKind.LATENCY_P95, score=40, at=30),
            anomaly(AGENT, SliKind.LATENCY_P50, score=35, at=30),
            anomaly(TOOL, SliKind.LATENCY_P50, score=30),
            anomaly(SERVICE, SliKind.LATENCY_P50, score=12),
        ]
    )
    assert [h.component for h in found][:1] == [SERVICE]
    assert found[0].fault == FaultKind.SERVICE_LATENCY.value
    assert len({h.component for h in found}) == len(found)
    assert all(0.0 <= h.confidence <= 1.0 for h in found)
    assert [h.score for h in found] == sorted((h.score for h in found), reverse=True)
    assert math.fsum(h.confidence for h in found) <= 1.0 + 1e-9
    assert any("explains the anomalies of 3 other" in e for e in found[0].evidence)


def test_where_direction_is_unknown_a_saturated_service_is_the_cause_not_a_victim() -> None:
    # Two services linked both ways (an inferred topology): the frontend's errors are
    # louder, but only the shipping service saturates, and no neighbour's latency or
    # errors can raise a service's CPU.
    front, ship = "service:frontend", "service:shipping"
    both = (TopologyEdge(caller=front, callee=ship), TopologyEdge(caller=ship, callee=front))
    anomalies = [
        anomaly(front, SliKind.ERROR_RATE, score=7600, at=30),
        anomaly(front, SliKind.LATENCY_P50, score=340, at=30),
        anomaly(ship, SliKind.ERROR_RATE, score=2760, at=30),
        anomaly(ship, SliKind.LATENCY_P50, score=210, at=30),
        anomaly(ship, SliKind.CPU_USAGE, score=16, at=0),
    ]
    found = rank(build_graph((), (), anomalies, both))
    assert [h.component for h in found] == [ship, front]
    assert found[0].fault == FaultKind.RESOURCE_EXHAUSTION.value
    assert "its symptoms may come from: service:shipping" in found[1].evidence


def test_where_direction_is_unknown_the_source_is_the_one_whose_errors_rose_most() -> None:
    # The frontend serves more requests, so its smaller rise scores higher; but a
    # caller's error share is its callee's diluted by the requests that skip the callee.
    front, checkout = "service:frontend", "service:checkout"
    both = (
        TopologyEdge(caller=front, callee=checkout),
        TopologyEdge(caller=checkout, callee=front),
    )
    loud = anomaly(front, SliKind.ERROR_RATE, score=27).model_copy(
        update={"baseline": 0.011, "observed": 0.054}
    )
    deep = anomaly(checkout, SliKind.ERROR_RATE, score=7.4).model_copy(
        update={"baseline": 0.012, "observed": 0.126}
    )
    assert [h.component for h in rank(build_graph((), (), [loud, deep], both))] == [
        checkout,
        front,
    ]
    # Known direction (the frontend calls the checkout): the same holds, from the graph.
    known = rank(build_graph((), (), [loud, deep], both[:1]))
    assert known[0].component == checkout


def test_a_prompt_change_stands_for_the_agent_it_affects() -> None:
    found = ranked(
        [
            anomaly(AGENT, SliKind.EVAL_SCORE, qualifier="faithfulness"),
            anomaly(AGENT, SliKind.OUTPUT_TOKENS_PER_REQUEST),
        ],
        (change("prompt:helper", (AGENT,)),),
    )
    top = found[0]
    assert top.component == "prompt:helper"
    assert top.fault == FaultKind.PROMPT_REGRESSION.value
    assert top.change == "9f1c2ab"
    assert any("9f1c2ab" in e and "dana" in e and "60 s before" in e for e in top.evidence)
    # The agent itself is still a hypothesis, below its prompt.
    assert [h.component for h in found].index(AGENT) > 0


def test_a_red_herring_change_on_a_victim_does_not_outrank_the_cause_below_it() -> None:
    found = ranked(
        [
            anomaly(AGENT, SliKind.LATENCY_P50, score=30, at=30),
            anomaly(TOOL, SliKind.LATENCY_P50, score=25),
        ],
        (change("prompt:helper", (AGENT,), before=90),),
    )
    assert found[0].component == TOOL
    assert found[0].fault == FaultKind.TOOL_LATENCY.value
    herring = next(h for h in found if h.component == "prompt:helper")
    assert any("may come from: tool:lookup" in e for e in herring.evidence)


def test_a_looping_agent_is_the_cause_of_its_models_longer_slower_calls() -> None:
    # Demand flows down: more steps and tokens at the agent make its model slower, and
    # that slowness explains nothing above it.
    found = ranked(
        [
            anomaly(AGENT, SliKind.STEPS_PER_RUN, score=15),
            anomaly(AGENT, SliKind.INPUT_TOKENS_PER_REQUEST, score=12),
            anomaly(MODEL, SliKind.INPUT_TOKENS_PER_REQUEST, score=30),
            anomaly(MODEL, SliKind.LATENCY_P50, score=25),
            anomaly(GATEWAY, SliKind.LATENCY_P95, score=20, at=30),
        ]
    )
    assert found[0].component == AGENT
    assert found[0].fault == FaultKind.AGENT_LOOP.value


def test_worse_answers_with_no_change_point_at_a_silent_index() -> None:
    found = ranked([anomaly(AGENT, SliKind.EVAL_SCORE, qualifier="faithfulness", score=9)])
    components = [h.component for h in found]
    assert INDEX in components
    index = found[components.index(INDEX)]
    assert index.fault == FaultKind.RETRIEVAL_DEGRADATION.value
    # A silent suspect is never credited with failures its own spans would show.
    errors = ranked(
        [
            anomaly(AGENT, SliKind.EVAL_SCORE, qualifier="faithfulness", score=9),
            anomaly(AGENT, SliKind.ERROR_RATE, score=9),
        ]
    )
    silent = next(h for h in errors if h.component == INDEX)
    assert not any("error_rate" in e for e in silent.evidence)


def test_priors_move_a_hypothesis_and_nothing_anomalous_gives_nothing() -> None:
    anomalies = [
        anomaly(TOOL, SliKind.ERROR_RATE, score=20),
        anomaly(SERVICE, SliKind.LATENCY_P50, score=20),
    ]
    plain = ranked(anomalies)
    assert plain[0].component == SERVICE  # slow enough to time its caller out
    moved = ranked(anomalies, priors={TOOL: 10.0})
    assert moved[0].component == TOOL
    assert moved[0].confidence > plain[1].confidence
    assert ranked([]) == ()


@pytest.mark.parametrize("error_type", ["429", "RateLimitError", "rate_limited"])
def test_calls_refused_with_a_rate_limit_make_their_tool_rate_limited(error_type: str) -> None:
    # A gateway in front of the service answers 429: the service saw nothing, the tool's
    # calls were refused (its retries mostly went through, so its own errors did not
    # rise). The tool is the cause, and what is wrong with it is a rate limit.
    found = ranked(
        [
            anomaly(TOOL, SliKind.REFUSED_CALL_RATE, score=6),
            anomaly(TOOL, SliKind.REFUSED_CALL_RATE, qualifier=error_type, score=6),
            anomaly(TOOL, SliKind.LATENCY_P95, at=60, score=8),
        ]
    )
    assert found[0].component == TOOL
    assert found[0].fault == FaultKind.TOOL_RATE_LIMIT.value
    assert any(f"refused_call_rate[{error_type}]" in e for e in found[0].evidence)


def test_calls_refused_for_another_reason_are_tool_errors_not_a_rate_limit() -> None:
    found = ranked([anomaly(TOOL, SliKind.REFUSED_CALL_RATE, qualifier="ConnectError")])
    assert found[0].component == TOOL
    assert found[0].fault == FaultKind.TOOL_ERRORS.value


@pytest.fixture(scope="module")
def tool_case() -> Case:
    spec = FaultSpec(topology=Topology.SUPPORT, fault=FaultKind.TOOL_LATENCY, seed=255985076)
    return simulate_case(spec)


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory: pytest.TempPathFactory, tool_case: Case) -> Path:
    folder = tmp_path_factory.mktemp("rca") / "tool-latency"
    write_case(tool_case, folder)
    return folder


def test_the_engine_finds_a_simulated_tool_fault_first_with_its_onset(tool_case: Case) -> None:
    truth = tool_case.truth
    assert truth is not None
    found = diagnose(tool_case, DetectionSettings(), PricingSettings())
    assert found.hypotheses[0].component == truth.root_cause
    assert found.onset is not None
    assert abs(found.onset - truth.fault_start) <= timedelta(seconds=90)
    # The same window cut before the fault: nothing to diagnose, not a guess.
    early = truth.fault_start - timedelta(minutes=1)
    calm = replace(tool_case, meta=tool_case.meta.model_copy(update={"end": early}))
    nothing = diagnose(calm, DetectionSettings(), PricingSettings())
    assert nothing.onset is None and nothing.hypotheses == ()


def test_the_engine_names_a_rate_limit_seen_only_in_refused_calls() -> None:
    case = rate_limit_behind_retries()
    assert case.truth is not None
    found = diagnose(case, DetectionSettings(), PricingSettings())
    assert found.hypotheses[0].component == case.truth.root_cause
    assert found.hypotheses[0].fault == FaultKind.TOOL_RATE_LIMIT.value


RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_rca_json_is_what_an_engine_returns(case_dir: Path) -> None:
    result = CliRunner().invoke(app, ["rca", str(case_dir), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"case", "onset", "hypotheses"}
    assert doc["case"] == "sim-support-tool_latency-255985076"
    assert RFC3339.match(doc["onset"])
    assert doc["hypotheses"][0]["component"] == "tool:order_status"
    for h in doc["hypotheses"]:
        assert (
            {"component", "fault", "confidence", "evidence"}
            <= set(h)
            <= {
                "component",
                "fault",
                "confidence",
                "change",
                "evidence",
            }
        )
        assert 0.0 <= h["confidence"] <= 1.0
        assert h["evidence"] and all(isinstance(e, str) for e in h["evidence"])
    text = CliRunner().invoke(app, ["rca", str(case_dir), "--top", "2"])
    assert text.exit_code == 0
    assert "1. tool:order_status (tool_latency)" in text.stdout
    assert "3. " not in text.stdout


def test_rca_of_a_missing_case_is_one_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["rca", str(tmp_path / "nope"), "--json"])
    assert result.exit_code != 0
    assert "nope" in result.output


def test_a_prompt_change_explains_the_tokens_its_agent_now_asks_of_its_model() -> None:
    # The picture an incident can open on: the model's answers got longer, the agent
    # itself shows nothing yet. Demand flows down, so the prompt change to the agent
    # above the model is the suspect, and a model without errors or latency is no
    # provider fault.
    found = ranked(
        [anomaly(MODEL, SliKind.OUTPUT_TOKENS_PER_REQUEST, score=12)],
        (change("prompt:helper", (AGENT,)),),
    )
    top = found[0]
    assert top.component == "prompt:helper"
    assert top.fault == FaultKind.PROMPT_REGRESSION.value
    assert top.change == "9f1c2ab"
    model = next(h for h in found if h.component == MODEL)
    assert model.fault == FaultKind.MODEL_VERSION_CHANGE.value


def test_a_lone_demand_anomaly_is_never_a_certain_diagnosis() -> None:
    # One candidate used to mean certainty (a softmax over one score): a callee's usage
    # shift is as well explained by the agent that asks for it, which stands as a
    # silent suspect, so neither clears an automatic gate.
    found = ranked([anomaly(MODEL, SliKind.OUTPUT_TOKENS_PER_REQUEST, score=12)])
    components = [h.component for h in found]
    assert AGENT in components and MODEL in components
    assert found[0].confidence < 0.9
    agent = found[components.index(AGENT)]
    assert agent.fault == FaultKind.PROMPT_REGRESSION.value
    assert any("model:gpt-4o" in e for e in agent.evidence)
    # A silent suspect is not credited with what its own spans would show: the model's
    # errors are the model's.
    errors = ranked(
        [
            anomaly(MODEL, SliKind.OUTPUT_TOKENS_PER_REQUEST, score=12),
            anomaly(MODEL, SliKind.ERROR_RATE, score=30),
        ]
    )
    assert errors[0].component == MODEL
    silent = next(h for h in errors if h.component == AGENT)
    assert not any("error_rate" in e for e in silent.evidence)
