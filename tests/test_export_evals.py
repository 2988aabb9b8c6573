"""``sentinel export-evals ID --out FILE`` in process (typer's ``CliRunner``, the command
mounted on a local app) on a real SQLite store: a simulated prompt regression ingested
(every trace kept), its incident opened by the lifecycle events detection gives, its
failing agent runs written as a pydantic-evals dataset, and the dataset loaded with
pydantic_evals and RUN: a task replaying the bad outputs fails the expectation, a task
giving the agent's normal outputs passes it.

What must not live here: detection (``test_metric_agent``), the archive of cases
(``test_learning_archive``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from click.testing import Result
from pydantic_evals import Dataset
from pydantic_evals.reporting import EvaluationReport
from typer.testing import CliRunner

from sentinel.adapters.db import SqlStore, open_store
from sentinel.cases import Case, FaultKind, ingest_case
from sentinel.cli_learn import export_evals
from sentinel.clock import FakeClock
from sentinel.detection import Anomaly
from sentinel.incidents import (
    IncidentOpened,
    IncidentResolved,
    LifecycleEvent,
    TrackedIncident,
    audit_entry,
    case_slis,
    component_edges,
    replay,
    transition,
)
from sentinel.learning.evals_export import (
    EVALUATORS,
    BaselineSource,
    RunDataset,
    RunInputs,
    RunMetadata,
    RunOutput,
    ScoreAtLeast,
    evaluator_baselines,
    export_incident,
    load_dataset,
)
from sentinel.settings import DetectionSettings, PricingSettings
from sentinel.sim import FaultSpec, Topology, simulate_case
from sentinel.telemetry import GenAIOperation, SliKind
from tests.test_cli import ENV, assert_failed_cleanly, flat, write_config

SPEC = FaultSpec(
    topology=Topology.SUPPORT, fault=FaultKind.PROMPT_REGRESSION, seed=1, sample_ratio=1.0
)
AGENT = "agent:support-agent"

app = typer.Typer()
app.command("export-evals")(export_evals)


@app.callback()
def _group() -> None:
    """Keeps ``export-evals`` a sub-command (typer runs a lone command as the app)."""


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["export-evals", *args], env=ENV)


@dataclass(frozen=True)
class World:
    cfg: Path
    case: Case
    incident: TrackedIncident
    quiet_id: str  # an incident over a calm minute before the fault: nothing failed
    empty_id: str  # an incident a day before the case: no agent runs at all


def persist(store: SqlStore, events: Sequence[LifecycleEvent]) -> dict[str, TrackedIncident]:
    """The lifecycle events written as the Metric Agent writes them."""
    states: dict[str, TrackedIncident] = {}
    for ev in events:
        states[ev.incident_id] = transition(states.get(ev.incident_id), ev)
        store.put_incident(states[ev.incident_id].incident, [audit_entry(ev, "metric-agent")])
    return states


def quiet_incident(ident: str, case: Case, onset_before_fault: timedelta) -> list[LifecycleEvent]:
    """An incident of the agent's eval score opened ``onset_before_fault`` before the
    fault and resolved a minute later."""
    assert case.truth is not None
    onset = case.truth.fault_start - onset_before_fault
    anomaly = Anomaly(
        component=AGENT,
        sli=SliKind.EVAL_SCORE,
        qualifier="goal_completion",
        onset=onset,
        baseline=0.85,
        observed=0.6,
        score=9.0,
    )
    return [
        IncidentOpened(incident_id=ident, time=onset, onset=onset, anomalies=(anomaly,)),
        IncidentResolved(incident_id=ident, time=onset + timedelta(minutes=1)),
    ]


def _calm_minute(case: Case) -> timedelta:
    """How long before the fault a minute begins in which no run of the agent errored or
    scored low (agents fail now and then even when healthy: such a minute is found,
    not assumed)."""
    for minutes in range(20, 5, -1):
        events = quiet_incident("probe", case, timedelta(minutes=minutes))
        state = transition(transition(None, events[0]), events[1])
        end = state.incident.resolved_at
        assert end is not None
        found = export_incident(state, case.spans, end, lookback=timedelta(minutes=30))
        if found.judged and not found.failing:
            return timedelta(minutes=minutes)
    raise AssertionError("no calm minute before the fault")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    folder = tmp_path_factory.mktemp("export")
    cfg = write_config(folder)
    # Spans only: the export reads spans, and samples make ingest slower.
    case = dataclasses.replace(simulate_case(SPEC), samples=())
    detection = DetectionSettings()
    slis = case_slis(case, timedelta(seconds=detection.step_seconds), PricingSettings())
    edges = component_edges(case.spans, case.topology, case.changes)
    _, events = replay(slis, edges, case.meta.start, case.meta.end, detection)
    store = open_store(f"sqlite:///{folder / 's.db'}", FakeClock(case.meta.end))
    try:
        ingest_case(store, case)
        (state,) = persist(store, events).values()
        persist(store, quiet_incident("inc-quiet", case, _calm_minute(case)))
        persist(store, quiet_incident("inc-empty", case, timedelta(days=1)))
    finally:
        store.close()
    return World(cfg, case, state, "inc-quiet", "inc-empty")


@dataclass(frozen=True)
class Exported:
    path: Path
    result: Result


@pytest.fixture(scope="module")
def exported(world: World, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    path = tmp_path_factory.mktemp("out") / "regression.yaml"
    result = run(world.incident.id, "--out", str(path), "-c", str(world.cfg))
    return Exported(path, result)


def _key(inputs: RunInputs | dict[str, Any]) -> str:
    return RunInputs.model_validate(inputs).model_dump_json()


def test_the_export_is_a_yaml_dataset_with_its_schema(world: World, exported: Exported) -> None:
    assert exported.result.exit_code == 0, exported.result.output
    text = flat(exported.result.output)
    assert f"to {exported.path}" in text and "schema regression_schema.json" in text
    assert f"runs of {AGENT} failed" in text
    assert "the spans record no prompt content" in text
    first_line = exported.path.read_text().splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=regression_schema.json"
    assert (exported.path.parent / "regression_schema.json").is_file()
    doc = yaml.safe_load(exported.path.read_text())
    assert doc["name"] == f"incident-{world.incident.id}"
    assert doc["evaluators"] == ["RunSucceeded"]


def test_each_case_is_a_failing_run_of_the_incident_with_its_inputs_output_and_expectation(
    world: World, exported: Exported, loaded: RunDataset
) -> None:
    cases = loaded.cases
    assert cases
    n = len(cases)
    assert f"wrote {n} case(s)" in flat(exported.result.output)
    runs = {
        (s.trace_id, s.span_id): s
        for s in world.case.spans
        if s.operation is GenAIOperation.INVOKE_AGENT
    }
    by_score = 0
    for c in cases:
        meta = c.metadata
        assert isinstance(meta, RunMetadata) and isinstance(c.inputs, RunInputs)
        span = runs[(meta.trace_id, meta.span_id)]
        assert meta.incident == world.incident.id
        assert meta.agent == AGENT and c.inputs.agent == "support-agent"
        assert c.inputs.trace_id == span.trace_id
        assert meta.time >= world.incident.onset
        # The simulator records no content: the inputs are the request's attributes.
        assert c.inputs.prompt is None
        assert c.inputs.request["gen_ai.request.model"] == "gpt-4o"
        assert c.inputs.request["http.route"] == "/v1/agents/{agent}/runs"
        # The bad output is what the span says.
        assert meta.bad_output.error == span.error_type
        assert meta.bad_output.scores == {
            e.name: e.score for e in span.evaluations if e.score is not None
        }
        assert meta.why
        assert meta.incident_slis  # the agent's anomalies, as the incident saw them
        # The expectation: no error (the dataset's evaluator), and each score the run
        # got at least its evaluator's normal minimum.
        expected = {(e.evaluator, e.minimum) for e in c.evaluators if isinstance(e, ScoreAtLeast)}
        assert expected == {(name, b.minimum) for name, b in meta.baselines.items()}
        assert set(meta.baselines) == set(meta.bad_output.scores)
        low = [
            name
            for name, score in meta.bad_output.scores.items()
            if score < meta.baselines[name].minimum
        ]
        assert meta.bad_output.error is not None or low
        by_score += bool(low)
        for b in meta.baselines.values():
            assert b.source is BaselineSource.BEFORE_ONSET
            assert b.minimum < b.median and b.n >= 10
    # A prompt regression: most failing runs are worse answers, not errors.
    assert by_score > n // 2


@pytest.fixture(scope="module")
def loaded(exported: Exported) -> RunDataset:
    return load_dataset(exported.path)


def _report_of(dataset: RunDataset, *, good: bool) -> EvaluationReport[Any, Any, Any]:
    outputs: dict[str, RunOutput] = {}
    for c in dataset.cases:
        assert c.metadata is not None
        if good:  # what the agent gives normally: no error, each score at its median
            scores = {name: b.median for name, b in c.metadata.baselines.items()}
            outputs[_key(c.inputs)] = RunOutput(scores=scores, answer="a good answer")
        else:
            outputs[_key(c.inputs)] = c.metadata.bad_output
    assert len(outputs) == len(dataset.cases)  # the inputs tell the cases apart

    def replay(inputs: RunInputs) -> RunOutput:
        return outputs[_key(inputs)]

    return dataset.evaluate_sync(replay, progress=False)


def test_the_export_loads_in_pydantic_evals_and_replaying_the_bad_outputs_fails(
    loaded: RunDataset,
) -> None:
    report = _report_of(loaded, good=False)

    assert not report.failures  # the task ran for every case
    assert len(report.cases) == len(loaded.cases)
    for case in report.cases:
        assert not case.evaluator_failures
        assert "no_error" in case.assertions
        failed = [name for name, r in case.assertions.items() if r.value is False]
        assert failed, case.name  # every case states an expectation its bad run broke
        reasons = [r.reason for r in case.assertions.values() if r.value is False]
        assert all(reasons)


def test_giving_the_agents_normal_outputs_passes_the_expectation(loaded: RunDataset) -> None:
    report = _report_of(loaded, good=True)

    assert not report.failures
    for case in report.cases:
        assert not case.evaluator_failures
        assert case.assertions and all(r.value is True for r in case.assertions.values())
    averages = report.averages()
    assert averages is not None and averages.assertions == 1.0


def test_an_untyped_loader_runs_the_dataset_too(exported: Exported) -> None:
    # A consumer without sentinel's models: inputs and outputs are plain dicts.
    dataset = Dataset[dict[str, Any], dict[str, Any], dict[str, Any]].from_file(
        exported.path, custom_evaluator_types=EVALUATORS
    )

    report = dataset.evaluate_sync(lambda inputs: {"error": "Timeout"}, progress=False)

    for case in report.cases:
        assert case.assertions["no_error"].value is False
        assert case.assertions["no_error"].reason == "the run failed with 'Timeout'"
        scored = [name for name in case.assertions if name != "no_error"]
        assert all(case.assertions[n].reason == f"no {n.split(' >= ')[0]!r} score" for n in scored)


def test_an_unknown_incident_or_one_without_failing_runs_is_a_clear_error(
    world: World, tmp_path: Path
) -> None:
    out = tmp_path / "x.yaml"
    unknown = run("nope", "--out", str(out), "-c", str(world.cfg))
    assert_failed_cleanly(unknown, 1)
    assert "no incident 'nope'" in flat(unknown.output)

    quiet = run(world.quiet_id, "--out", str(out), "-c", str(world.cfg))
    assert_failed_cleanly(quiet, 1)
    assert "none of the" in flat(quiet.output)
    assert "errored or scored below its evaluators' normal: nothing to export" in flat(quiet.output)

    empty = run(world.empty_id, "--out", str(out), "-c", str(world.cfg))
    assert_failed_cleanly(empty, 1)
    assert f"no agent runs (invoke_agent spans) of its agents ({AGENT})" in flat(empty.output)
    assert not out.exists()

    wrong = run(world.incident.id, "--out", str(tmp_path / "x.txt"), "-c", str(world.cfg))
    assert_failed_cleanly(wrong, 2)
    assert "must end in .yaml, .yml or .json" in flat(wrong.output)


def test_baselines_come_from_the_scores_before_the_onset_else_from_the_anomaly(
    world: World,
) -> None:
    runs = [s for s in world.case.spans if s.operation is GenAIOperation.INVOKE_AGENT]
    before = [s for s in runs if s.start < world.incident.onset and s.component == AGENT]
    found = evaluator_baselines(before, world.incident.anomalies)
    assert {ev for agent, ev in found if agent == AGENT} == {
        "faithfulness",
        "goal_completion",
        "policy_adherence",
    }
    assert all(b.source is BaselineSource.BEFORE_ONSET for b in found.values())
    # Too few scores before the onset: the anomaly's baseline, and halfway down to what
    # the incident observed as the minimum.
    few = evaluator_baselines(before[:3], world.incident.anomalies)
    anomaly = next(
        a for a in world.incident.anomalies if a.sli is SliKind.EVAL_SCORE and a.component == AGENT
    )
    b = few[(AGENT, anomaly.qualifier)]
    assert b.source is BaselineSource.ANOMALY and b.n == 0
    assert b.median == pytest.approx(anomaly.baseline, abs=1e-4)
    assert b.minimum == pytest.approx((anomaly.baseline + anomaly.observed) / 2, abs=1e-4)


def test_at_most_max_cases_are_written_and_the_rest_counted(world: World) -> None:
    end = world.case.meta.end
    full = export_incident(world.incident, world.case.spans, end, lookback=timedelta(minutes=30))
    capped = export_incident(
        world.incident, world.case.spans, end, lookback=timedelta(minutes=30), max_cases=5
    )
    assert full.failing == capped.failing > 5
    assert len(capped.dataset.cases) == 5 and capped.left_out == full.failing - 5
    assert [c.name for c in capped.dataset.cases] == [c.name for c in full.dataset.cases[:5]]
