"""``sentinel incidents`` and ``sentinel incident ID``, in process (typer's
``CliRunner``, the commands mounted on a local app) on a real SQLite store: a simulated
case ingested, its incident opened and grown by the lifecycle events detection gives,
diagnosed by the Root Cause Agent on the store's evidence, and a fix proposed by the
bundled playbooks; a second incident, resolved.

What must not live here: what a ticket says (``test_tickets``), the agents themselves.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from sentinel.adapters.db import SqlStore, open_store
from sentinel.agents.remediation import RemediationEvent, action_entry
from sentinel.agents.root_cause import DiagnosisOutcome, diagnose_stored
from sentinel.cases import Case, FaultKind, ingest_case
from sentinel.cli_incidents import incident, incidents
from sentinel.clock import FakeClock
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
from sentinel.playbooks.loader import load_playbooks
from sentinel.playbooks.model import TemplateContext
from sentinel.remediation import ActionRecord, Gate, propose
from sentinel.settings import DetectionSettings, PricingSettings, RemediationSettings
from sentinel.sim import FaultSpec, Topology, simulate_case
from sentinel.tickets import percent
from tests.test_cli import ENV, assert_failed_cleanly, flat, write_config

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
TOOL = "tool:kb_search"

app = typer.Typer()
app.command()(incidents)
app.command()(incident)


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=ENV)


@dataclass(frozen=True)
class World:
    cfg: Path
    open_id: str  # diagnosed, with a proposed action
    resolved_id: str
    action: ActionRecord
    anomalies: int
    confidence: float  # the open incident's top hypothesis
    opened_with: int  # anomalies in the open incident's opening event


def persist(store: SqlStore, events: Sequence[LifecycleEvent]) -> dict[str, TrackedIncident]:
    """The lifecycle events written as the Metric Agent writes them: the incident's new
    state and the event's audit entry, together."""
    states: dict[str, TrackedIncident] = {}
    for ev in events:
        states[ev.incident_id] = transition(states.get(ev.incident_id), ev)
        store.put_incident(states[ev.incident_id].incident, [audit_entry(ev, "metric-agent")])
    return states


def detected(case: Case) -> tuple[LifecycleEvent, ...]:
    detection = DetectionSettings()
    slis = case_slis(case, timedelta(seconds=detection.step_seconds), PricingSettings())
    edges = component_edges(case.spans, case.topology, case.changes)
    _, events = replay(slis, edges, case.meta.start, case.meta.end, detection)
    return events


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    folder = tmp_path_factory.mktemp("incidents")
    cfg = write_config(folder)
    case = simulate_case(
        FaultSpec(topology=Topology.SUPPORT, fault=FaultKind.TOOL_RATE_LIMIT, seed=11)
    )
    now = case.meta.end
    store = open_store(f"sqlite:///{folder / 's.db'}", FakeClock(now))
    try:
        ingest_case(store, case)
        found_events = detected(case)
        (state,) = persist(store, found_events).values()
        (opened,) = (e for e in found_events if isinstance(e, IncidentOpened))
        assert diagnose_stored(store, state, now) is DiagnosisOutcome.DIAGNOSED

        top = store.hypotheses(state.id)[0]
        playbooks = load_playbooks([ROOT / "playbooks"], remediation=RemediationSettings())
        found, _ = propose(
            [p.playbook for p in playbooks.playbooks],
            state.id,
            top,
            TemplateContext(incident_id=state.id, component=top.component, fault=top.fault),
            history=[],
            paused=True,  # the kill switch is on: a person must approve
            policy=RemediationSettings(),
            now=now,
        )
        assert found is not None
        record = found.record
        entry = action_entry(
            RemediationEvent.PROPOSED,
            record,
            now,
            actor="remediation-agent",
            gate=record.gate.value,
            reasons=list(record.reasons),
        )
        assert store.put_action(record, [entry])

        # An incident the day before, of another case's telemetry, since resolved.
        other = simulate_case(
            FaultSpec(
                topology=Topology.SUPPORT,
                fault=FaultKind.TOOL_LATENCY,
                seed=2,
                start=case.meta.start - timedelta(days=1),
            )
        )
        events = detected(other)
        old_id = events[0].incident_id
        end = IncidentResolved(incident_id=old_id, time=events[-1].time + timedelta(minutes=9))
        persist(store, [*(e for e in events if e.incident_id == old_id), end])
    finally:
        store.close()
    return World(
        cfg, state.id, old_id, record, len(state.anomalies), top.confidence, len(opened.anomalies)
    )


# --- sentinel incidents ------------------------------------------------------------------------


def test_the_list_shows_status_top_hypothesis_and_action(world: World) -> None:
    r = run("incidents", "--config", str(world.cfg))
    assert r.exit_code == 0, r.output
    table = flat(r.output)
    assert world.open_id in table and world.resolved_id in table
    row = next(line for line in r.output.splitlines() if world.open_id in line)
    assert "│ open │" in flat(row)
    assert world.confidence >= 0.9  # a confident diagnosis, shown as the CLI rounds it
    assert f"{TOOL} (tool_rate_limit) {percent(world.confidence)}" in flat(row)
    assert f"{world.action.playbook}: proposed" in flat(row)
    resolved = next(line for line in r.output.splitlines() if world.resolved_id in line)
    assert "│ resolved │" in flat(resolved)
    # Newest first.
    assert table.index(world.open_id) < table.index(world.resolved_id)


def test_open_hides_resolved_incidents(world: World) -> None:
    r = run("incidents", "--open", "--config", str(world.cfg))
    assert r.exit_code == 0, r.output
    assert world.open_id in r.output and world.resolved_id not in r.output


def test_the_list_as_json(world: World) -> None:
    r = run("incidents", "--json", "--config", str(world.cfg))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert [i["id"] for i in doc["incidents"]] == [world.open_id, world.resolved_id]
    first, second = doc["incidents"]
    assert set(first) == {
        "id",
        "title",
        "status",
        "opened_at",
        "updated_at",
        "resolved_at",
        "components",
        "top_hypothesis",
        "action",
    }
    assert first["status"] == "open" and first["resolved_at"] is None
    assert first["opened_at"].endswith("Z")
    assert first["top_hypothesis"]["component"] == TOOL
    assert first["top_hypothesis"]["confidence"] > 0.9
    assert first["action"] == {
        "key": world.action.key,
        "playbook": world.action.playbook,
        "gate": "approve",
        "state": "proposed",
    }
    assert second["status"] == "resolved" and second["resolved_at"] is not None
    assert second["top_hypothesis"] is None and second["action"] is None


def test_an_empty_store_says_so(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    assert run("incidents", "--config", str(cfg)).output.strip() == "no incidents"
    assert run("incidents", "--open", "--config", str(cfg)).output.strip() == "no open incidents"
    assert json.loads(run("incidents", "--json", "--config", str(cfg)).output) == {"incidents": []}


# --- sentinel incident ID ---------------------------------------------------------------------


def test_the_detail_has_the_ticket_every_hypothesis_the_action_and_the_audit(
    world: World,
) -> None:
    r = run("incident", world.open_id, "--config", str(world.cfg))
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[2] == "status: open · diagnosed · action awaiting approval"
    # Every SLI, with its units, from the lifecycle events in the audit trail.
    wrong = lines[lines.index("What is wrong:") + 1 : lines.index("Likely causes:")]
    assert len(wrong) == world.anomalies == 6
    assert any(" ms -> " in line and " s (x" in line for line in wrong)
    assert any(f"error rate (rate_limited) of {TOOL} 0% -> " in line for line in wrong)

    store = open_store(f"sqlite:///{world.cfg.parent / 's.db'}", FakeClock(world.action.created_at))
    try:
        hypotheses = store.hypotheses(world.open_id)
        audit = store.audit(world.open_id)
    finally:
        store.close()
    assert f"Hypotheses ({len(hypotheses)}):" in lines
    for h in hypotheses:  # every one, with all its evidence
        assert any(line.startswith("  ") and h.component in line for line in lines)
        for e in h.evidence:
            assert f"       - {e}" in lines
    text = flat(r.output)
    assert (
        f"{world.action.key}: playbook {world.action.playbook}, gate approve, state proposed"
        in text
    )
    assert "why not automatic: remediation is paused (kill switch)" in text
    assert f"step throttle: throttle {TOOL} to 30 requests/min (limits.yaml)" in text

    assert f"Audit trail ({len(audit)}):" in lines
    trail = lines[lines.index(f"Audit trail ({len(audit)}):") + 1 :]
    assert [line.split()[3] for line in trail] == [e.action for e in audit]
    noun = "anomaly" if world.opened_with == 1 else "anomalies"
    assert f"metric-agent  incident_opened  {world.opened_with} {noun} from" in r.output
    assert "anomaly_merged  error_rate of agent:support-agent" in r.output
    assert f"root-cause-agent  diagnosed  {TOOL} (tool_rate_limit, 0.99" in r.output
    assert "action_proposed" in r.output and "gate: approve" in r.output


def test_graph_writes_a_png_of_the_causal_graph(world: World, tmp_path: Path) -> None:
    target = tmp_path / "graph.png"
    r = run("incident", world.open_id, "--graph", str(target), "--config", str(world.cfg))
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[-1] == f"causal graph written to {target}"
    png = target.read_bytes()
    assert png.startswith(PNG) and len(png) > 10_000
    # Drawn again from the same store: the same picture.
    again = tmp_path / "again.png"
    run("incident", world.open_id, "--graph", str(again), "--config", str(world.cfg))
    assert again.read_bytes() == png


def test_graph_into_a_missing_folder_fails_cleanly(world: World, tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "graph.png"
    r = run("incident", world.open_id, "--graph", str(target), "--config", str(world.cfg))
    assert_failed_cleanly(r, 1)
    assert "cannot write the graph to" in flat(r.output)


def test_the_detail_as_json(world: World, tmp_path: Path) -> None:
    target = tmp_path / "g.png"
    r = run("incident", world.open_id, "--json", "--graph", str(target), "--config", str(world.cfg))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert set(doc) == {
        "incident",
        "status_line",
        "anomalies",
        "hypotheses",
        "actions",
        "audit",
        "graph",
        "llm",
    }
    assert doc["incident"]["id"] == world.open_id and doc["incident"]["status"] == "open"
    assert doc["status_line"] == "open · diagnosed · action awaiting approval"
    assert len(doc["anomalies"]) == world.anomalies
    assert {"component", "sli", "qualifier", "onset", "baseline", "observed", "text"} <= set(
        doc["anomalies"][0]
    )
    assert [h["rank"] for h in doc["hypotheses"]] == list(range(1, len(doc["hypotheses"]) + 1))
    assert doc["hypotheses"][0]["component"] == TOOL and doc["hypotheses"][0]["evidence"]
    (action,) = doc["actions"]
    assert ActionRecord.model_validate(action) == world.action
    assert action["gate"] == Gate.APPROVE.value
    assert [e["action"] for e in doc["audit"]][:2] == ["incident_opened", "anomaly_merged"]
    assert doc["audit"][-1]["action"] == "action_proposed"
    assert doc["graph"] == str(target) and target.read_bytes().startswith(PNG)


def test_a_resolved_incident_without_diagnosis(world: World) -> None:
    r = run("incident", world.resolved_id, "--config", str(world.cfg))
    assert r.exit_code == 0, r.output
    assert r.output.startswith("[resolved] ")
    assert "status: resolved · no hypothesis yet" in r.output
    assert "Hypotheses: none yet" in r.output and "Actions: none" in r.output
    assert "incident_resolved" in r.output


def test_an_unknown_incident_is_a_clear_error(world: World) -> None:
    r = run("incident", "inc-nope", "--config", str(world.cfg))
    assert_failed_cleanly(r, 1)
    assert "error: no incident 'inc-nope' in store sqlite:///" in flat(r.output)
    assert "`sentinel incidents` lists them" in flat(r.output)
