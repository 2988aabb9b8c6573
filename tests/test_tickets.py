"""Incident tickets (``sentinel.tickets``) and the causal graph's picture
(``sentinel.rca.picture``), built from real records: simulated cases through the real
detection, ranking and playbook matching.

What must not live here: posting tickets (the ticket desk's and Slack's tests), the
commands that print them (``test_cli_incidents``).
"""

from __future__ import annotations

import functools
import json
import re
import struct
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from sentinel.cases import Case, FaultKind
from sentinel.detection import Anomaly, Detector
from sentinel.incidents import IncidentStatus, TrackedIncident, replay_case
from sentinel.playbooks.loader import load_playbooks
from sentinel.playbooks.model import Playbook, TemplateContext
from sentinel.ports import Block, StepResult
from sentinel.rca import Hypothesis, build_graph, diagnose
from sentinel.rca.picture import MAX_INCHES, MAX_NODES, draw_incident_graph, symptom_paths
from sentinel.rca.rank import percent
from sentinel.remediation import ActionRecord, ActionState, Gate, propose
from sentinel.settings import DetectionSettings, PricingSettings, RemediationSettings
from sentinel.sim import FaultSpec, Topology, simulate_case
from sentinel.telemetry import SliKind, TopologyEdge
from sentinel.tickets import (
    APPROVE_ACTION_ID,
    HEADER_LIMIT,
    MAX_BLOCKS,
    MAX_EVIDENCE,
    MAX_HYPOTHESES,
    MAX_TEXT_SLIS,
    REJECT_ACTION_ID,
    SECTION_LIMIT,
    TicketView,
    build_ticket,
    describe_change,
    format_value,
    ticket_blocks,
    ticket_text,
)

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
TOOL = "tool:kb_search"


@dataclass(frozen=True)
class Diagnosed:
    case: Case
    incident: TrackedIncident
    hypotheses: tuple[Hypothesis, ...]


def diagnosed(fault: FaultKind, seed: int) -> Diagnosed:
    case = simulate_case(FaultSpec(topology=Topology.SUPPORT, fault=fault, seed=seed))
    found = diagnose(case, DetectionSettings(), PricingSettings())
    incidents = replay_case(case, DetectionSettings(), PricingSettings())
    (incident,) = [i for i in incidents if i.id == found.incident]
    return Diagnosed(case, incident, found.hypotheses)


@pytest.fixture(scope="module")
def latency() -> Diagnosed:
    return diagnosed(FaultKind.TOOL_LATENCY, 2)


@pytest.fixture(scope="module")
def rate_limit() -> Diagnosed:
    return diagnosed(FaultKind.TOOL_RATE_LIMIT, 11)


@functools.cache
def bundled() -> tuple[Playbook, ...]:
    loaded = load_playbooks([ROOT / "playbooks"], remediation=RemediationSettings())
    assert loaded.errors == ()
    return tuple(p.playbook for p in loaded.playbooks)


def proposal(d: Diagnosed, *, paused: bool) -> ActionRecord:
    """The bundled playbooks' proposal for the top hypothesis, as the Remediation Agent
    makes it (paused: the kill switch is on, so a person must approve)."""
    top = d.hypotheses[0]
    ctx = TemplateContext(incident_id=d.incident.id, component=top.component, fault=top.fault)
    found, _ = propose(
        bundled(),
        d.incident.id,
        top,
        ctx,
        history=[],
        paused=paused,
        policy=RemediationSettings(),
        now=d.incident.incident.opened_at,
    )
    assert found is not None
    return found.record


def ticket(d: Diagnosed, action: ActionRecord | None = None) -> TicketView:
    return build_ticket(d.incident.incident, d.incident.anomalies, d.hypotheses, action)


def texts(blocks: list[Block]) -> list[str]:
    """Every text a block carries, header and context included."""
    out: list[str] = []
    for b in blocks:
        if "text" in b:
            out.append(b["text"]["text"])
        out.extend(e["text"] for e in b.get("elements", ()) if e.get("type") == "mrkdwn")
    return out


def section(blocks: list[Block], title: str) -> str:
    (found,) = [t for t in texts(blocks) if t.startswith(title)]
    return found


def buttons(blocks: list[Block]) -> list[dict[str, object]]:
    return [
        e for b in blocks if b["type"] == "actions" for e in b["elements"] if e["type"] == "button"
    ]


# --- the SLIs --------------------------------------------------------------------------------


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_latency_lines_show_before_and_after_in_ms_and_s_with_the_factor(
    latency: Diagnosed,
) -> None:
    view = ticket(latency)
    by_sli = {s.sli: s for s in view.slis}
    assert set(by_sli) == {SliKind.LATENCY_P50, SliKind.LATENCY_P95}
    for a in latency.incident.anomalies:
        line = by_sli[a.sli].text
        m = re.fullmatch(
            rf"p(50|95) latency of tool:crm_lookup ([\d.]+) ms -> ([\d.]+) s "
            rf"\(x(\d+)\) since {a.onset:%H:%M} UTC",
            line,
        )
        assert m is not None, line
        # The baseline (tens of ms) in ms, the value after (seconds) in s, 3 digits.
        assert _number(m.group(2)) == pytest.approx(a.baseline * 1000, rel=5e-3)
        assert _number(m.group(3)) == pytest.approx(a.observed, rel=5e-3)
        assert int(m.group(4)) == round(a.observed / a.baseline)
    wrong = section(ticket_blocks(view), "*What is wrong*")
    assert "p95 latency of `tool:crm_lookup`" in wrong and " ms → *" in wrong


def test_shares_are_percentages_moved_by_points_and_a_new_error_type_is_named(
    rate_limit: Diagnosed,
) -> None:
    view = ticket(rate_limit)
    lines = [s.text for s in view.slis]
    # One line per anomaly: 6 found on steps, a 7th on the coarse path's 2-minute points.
    assert len(lines) == len(rate_limit.incident.anomalies) == 7
    # Earliest onset first.
    assert [s.onset for s in view.slis] == sorted(s.onset for s in view.slis)
    emergence = next(s for s in view.slis if s.detector is Detector.EMERGENCE)
    assert emergence.text.startswith(f"error rate (rate_limited) of {TOOL} 0% -> ")
    assert emergence.change == "new error type"
    failure = next(s for s in view.slis if s.sli is SliKind.TOOL_FAILURE_RATE)
    a = next(a for a in rate_limit.incident.anomalies if a.sli is SliKind.TOOL_FAILURE_RATE)
    m = re.fullmatch(
        rf"tool failure rate of {TOOL} ([\d.]+)% -> ([\d.]+)% \(\+([\d.]+) pp\) since .*",
        failure.text,
    )
    assert m is not None, failure.text
    assert _number(m.group(1)) == pytest.approx(a.baseline * 100, rel=5e-3)
    assert _number(m.group(2)) == pytest.approx(a.observed * 100, rel=5e-3)
    assert _number(m.group(3)) == pytest.approx((a.observed - a.baseline) * 100, rel=5e-3)


@pytest.mark.parametrize(
    ("kind", "before", "after", "want"),
    [
        (SliKind.COST_PER_REQUEST, 0.0041, 0.0123, ("$0.0041", "$0.0123", "x3")),
        (SliKind.OUTPUT_TOKENS_PER_REQUEST, 441.2, 1704.4, ("441 tokens", "1,704 tokens", "x3.9")),
        (SliKind.EVAL_SCORE, 0.9211, 0.6977, ("0.921", "0.698", "-0.223")),
        (SliKind.REQUEST_RATE, 12.5, 1.9, ("12.5 req/s", "1.9 req/s", "-85%")),
        (SliKind.CPU_USAGE, 0.35, 1.9, ("0.35 cores", "1.9 cores", "x5.4")),
        (SliKind.MEMORY_UTILISATION, 0.52, 0.97, ("52% of limit", "97% of limit", "+45 pp")),
        (SliKind.MEMORY_WORKING_SET, 512 * 2**20, 1.5 * 2**30, ("512 MiB", "1.5 GiB", "x3")),
        (SliKind.STEPS_PER_RUN, 4.0, 5.2, ("4 steps", "5.2 steps", "+30%")),
        (SliKind.LATENCY_P99, 1.25, 2.5, ("1.25 s", "2.5 s", "x2")),
    ],
)
def test_every_sli_kind_has_its_unit(
    kind: SliKind, before: float, after: float, want: tuple[str, str, str]
) -> None:
    assert (format_value(kind, before), format_value(kind, after)) == want[:2]
    assert describe_change(kind, before, after) == want[2]


def test_an_slo_alert_shows_its_budget_and_burn(rate_limit: Diagnosed) -> None:
    base = rate_limit.incident.anomalies[0]
    slo = base.model_copy(
        update={
            "detector": Detector.BURN_RATE,
            "slo": "orders-availability",
            "qualifier": "",
            "sli": SliKind.ERROR_RATE,
            "baseline": 0.005,
            "observed": 0.042,
        }
    )
    incident = rate_limit.incident.incident
    (line,) = build_ticket(incident, [slo], [], None).slis
    assert line.text.startswith(
        f"bad events of SLO 'orders-availability' (error rate) of {base.component} "
        "0.5% -> 4.2% (burning the budget x8.4)"
    )


# --- the hypotheses -----------------------------------------------------------------------


def test_hypotheses_are_ranked_with_percentages_and_their_first_evidence(
    rate_limit: Diagnosed,
) -> None:
    view = ticket(rate_limit)
    assert [h.rank for h in view.hypotheses] == list(range(1, len(view.hypotheses) + 1))
    assert [h.component for h in view.hypotheses] == [
        h.component for h in rate_limit.hypotheses[:MAX_HYPOTHESES]
    ]
    confidences = [h.confidence for h in view.hypotheses]
    assert confidences == sorted(confidences, reverse=True)
    top = view.hypotheses[0]
    assert top.text == f"1. {TOOL}: tool_rate_limit, {percent(rate_limit.hypotheses[0].confidence)}"
    assert 0.98 < rate_limit.hypotheses[0].confidence < 1.0
    assert (percent(0.995), percent(0.9999)) == (">99%", ">99%")  # 0.99x is never "100%"
    assert view.hypotheses[1].percent == "<1%"  # nor is 0.006 "0%"
    for h, full in zip(view.hypotheses, rate_limit.hypotheses, strict=False):
        assert h.evidence == full.evidence[:MAX_EVIDENCE]
        assert h.more_evidence == len(full.evidence) - len(h.evidence)

    causes = section(ticket_blocks(view), "*Likely causes*")
    shown = top.percent.replace(">", "&gt;").replace("<", "&lt;")
    assert causes.index(f"1. *{TOOL}*: tool_rate_limit, *{shown}*") < causes.index("2. *")
    # Evidence is mrkdwn-escaped: "->" would otherwise open a Slack link or tag.
    assert f"◦ {top.evidence[0].replace('>', '&gt;')}" in causes
    assert "-&gt;" in causes and "->" not in causes


def test_only_the_top_hypotheses_are_shown(rate_limit: Diagnosed) -> None:
    many = [
        rate_limit.hypotheses[0].model_copy(update={"component": f"tool:t{n}", "confidence": c})
        for n, c in enumerate([0.5, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02])
    ]
    view = build_ticket(rate_limit.incident.incident, rate_limit.incident.anomalies, many, None)
    assert len(view.hypotheses) == MAX_HYPOTHESES and view.more_hypotheses == 2
    assert "_and 2 less likely hypotheses_" in section(ticket_blocks(view), "*Likely causes*")


def test_an_undiagnosed_incident_says_so(rate_limit: Diagnosed) -> None:
    view = build_ticket(rate_limit.incident.incident, rate_limit.incident.anomalies, [], None)
    assert view.status_line == "open · no hypothesis yet"
    blocks = ticket_blocks(view)
    assert "No hypothesis yet" in section(blocks, "*Likely causes*")
    assert not [t for t in texts(blocks) if t.startswith("*Proposed fix")]


# --- the proposed fix and its buttons ----------------------------------------------------------


def test_a_fix_awaiting_approval_has_approve_and_reject_buttons_keyed_by_the_action(
    rate_limit: Diagnosed,
) -> None:
    record = proposal(rate_limit, paused=True)
    assert (record.gate, record.state) == (Gate.APPROVE, ActionState.PROPOSED)
    view = ticket(rate_limit, record)
    assert view.status_line == "open · diagnosed · action awaiting approval"
    blocks = ticket_blocks(view)
    approve, reject = buttons(blocks)
    assert approve["action_id"] == APPROVE_ACTION_ID and reject["action_id"] == REJECT_ACTION_ID
    assert approve["value"] == reject["value"] == record.key
    assert (approve["style"], reject["style"]) == ("primary", "danger")
    confirm = approve["confirm"]
    assert isinstance(confirm, dict) and record.playbook in confirm["text"]["text"]
    assert "confirm" not in reject
    # The buttons come right after the fix they decide, before the status line.
    kinds = [b["type"] for b in blocks]
    assert kinds == ["header", "section", "section", "section", "actions", "actions", "context"]

    fix = section(blocks, "*Proposed fix*")
    assert f"playbook `{record.playbook}` for *{TOOL}*" in fix
    assert "runs once a person approves it" in fix
    assert "• remediation is paused (kill switch)" in fix  # why it is not automatic
    assert f"1. throttle {TOOL} to 30 requests/min (limits.yaml)" in fix
    context = blocks[-1]["elements"][0]["text"]
    assert context.startswith("open · diagnosed · action awaiting approval · incident `inc-")


@pytest.mark.parametrize(
    ("state", "gate"),
    [(s, g) for s in ActionState for g in Gate if (s, g) != (ActionState.PROPOSED, Gate.APPROVE)],
)
def test_no_buttons_in_any_other_state_or_gate(
    rate_limit: Diagnosed, state: ActionState, gate: Gate
) -> None:
    record = proposal(rate_limit, paused=True).model_copy(update={"state": state, "gate": gate})
    blocks = ticket_blocks(ticket(rate_limit, record))
    assert buttons(blocks) == []
    # Only the root-cause menu remains.
    assert [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]] == [
        "sentinel_confirm"
    ]


def test_no_buttons_without_an_action(rate_limit: Diagnosed) -> None:
    blocks = ticket_blocks(ticket(rate_limit))
    assert buttons(blocks) == []
    assert "No playbook fits" in section(blocks, "*Proposed fix*")


def test_an_automatic_fix_says_it_runs_alone(rate_limit: Diagnosed) -> None:
    record = proposal(rate_limit, paused=False)
    assert record.gate is Gate.AUTO and record.reasons == ()
    fix = section(ticket_blocks(ticket(rate_limit, record)), "*Proposed fix*")
    assert ": runs automatically." in fix and "Why not automatic" not in fix


def test_the_status_line_and_step_results_follow_the_action(rate_limit: Diagnosed) -> None:
    record = proposal(rate_limit, paused=True)
    done = record.model_copy(
        update={
            "state": ActionState.VERIFIED,
            "decided_by": "slack:U123",
            "results": {
                "throttle": StepResult(
                    detail="rate limit set", commit="0123456789abcdef", branch="main"
                ),
                "tell": StepResult(detail="told"),
            },
            "note": "SLIs back within baseline",
        }
    )
    resolved = rate_limit.incident.incident.model_copy(
        update={
            "status": IncidentStatus.RESOLVED,
            "resolved_at": rate_limit.incident.incident.opened_at + timedelta(minutes=20),
        }
    )
    view = build_ticket(resolved, rate_limit.incident.anomalies, rate_limit.hypotheses, done)
    assert view.status_line == "resolved · diagnosed · action verified"
    blocks = ticket_blocks(view)
    assert blocks[0]["text"]["text"].startswith(":white_check_mark: ")
    fix = section(blocks, "*Proposed fix*")
    assert "→ rate limit set; commit 0123456789ab on main" in fix
    assert "*State:* action verified · SLIs back within baseline" in fix
    text = ticket_text(view)
    assert f"throttle: throttle {TOOL}" in text and "-> rate limit set" in text

    for state, words in [
        (ActionState.REJECTED, "action rejected by slack:U123"),
        (ActionState.RUNNING, "action running"),
        (ActionState.VERIFYING, "action verifying"),
        (ActionState.UNDONE, "action undone"),
        (ActionState.FAILED, "action failed"),
    ]:
        moved = done.model_copy(update={"state": state})
        line = build_ticket(resolved, (), rate_limit.hypotheses, moved).status_line
        assert line == f"resolved · diagnosed · {words}"


# --- limits, text, JSON ---------------------------------------------------------------------------


def test_a_huge_incident_is_cut_to_slacks_limits_never_failing(rate_limit: Diagnosed) -> None:
    base = rate_limit.incident.anomalies
    anomalies = [
        a.model_copy(update={"component": f"tool:t{n:03d}", "qualifier": "q" * (n % 40)})
        for n in range(200)
        for a in base[:1]
    ]
    evidence = tuple(f"{'x' * 500} <{n}>" for n in range(40))
    hypotheses = [
        h.model_copy(update={"evidence": evidence, "component": f"tool:{'h' * 200}{n}"})
        for n, h in enumerate(rate_limit.hypotheses * 3)
    ]
    record = proposal(rate_limit, paused=True)
    record = record.model_copy(
        update={"reasons": tuple(f"reason {'r' * 400} {n}" for n in range(30))}
    )
    incident = rate_limit.incident.incident.model_copy(update={"title": "t" * 400})
    view = build_ticket(incident, anomalies, hypotheses, record)
    assert len(view.slis) == 200  # the view keeps them all; rendering cuts

    blocks = ticket_blocks(view)
    assert len(blocks) <= MAX_BLOCKS
    header = blocks[0]["text"]["text"]
    assert len(header) == HEADER_LIMIT and header.endswith("…")
    for b in blocks:
        if b["type"] == "section":
            assert len(b["text"]["text"]) <= SECTION_LIMIT
    wrong = section(blocks, "*What is wrong*")
    shown = wrong.count("\n• ")
    assert 10 < shown < 200 and wrong.endswith(f"… and {200 - shown} more")
    assert section(blocks, "*Likely causes*").count("\n") > 3
    # The buttons survive: an approver must still be able to act on a huge incident.
    assert [b["value"] for b in buttons(blocks)] == [record.key, record.key]
    assert json.loads(json.dumps(blocks)) == blocks

    def sli_lines(text: str) -> int:
        return len(re.findall(r"^  - .* of tool:t\d{3} ", text, flags=re.MULTILINE))

    text = ticket_text(view)
    assert sli_lines(text) == MAX_TEXT_SLIS
    assert f"… and {200 - MAX_TEXT_SLIS} more" in text
    assert sli_lines(ticket_text(view, max_slis=None)) == 200


def test_the_text_version_reads_in_a_terminal(rate_limit: Diagnosed) -> None:
    record = proposal(rate_limit, paused=True)
    view = ticket(rate_limit, record)
    text = ticket_text(view)
    lines = text.splitlines()
    assert lines[0] == f"[open] {rate_limit.incident.incident.title}"
    assert lines[1].startswith(f"incident {rate_limit.incident.id} · opened 2026-11-01 ")
    assert lines[2] == "status: open · diagnosed · action awaiting approval"
    for s in view.slis:
        assert f"  - {s.text}" in lines
    top = percent(rate_limit.hypotheses[0].confidence)
    assert f"  1. {TOOL}: tool_rate_limit, {top}" in lines
    assert any(
        line.startswith(f"Proposed fix: playbook {record.playbook} for {TOOL}") for line in lines
    )
    assert "    - remediation is paused (kill switch)" in lines
    assert lines[-1] == f"  awaiting approval: action {record.key}"
    assert all(len(line) < 400 for line in lines)


def test_blocks_are_json_and_plain_text_objects_are_plain(rate_limit: Diagnosed) -> None:
    blocks = ticket_blocks(ticket(rate_limit, proposal(rate_limit, paused=True)))
    assert json.loads(json.dumps(blocks)) == blocks
    assert blocks[0] == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": f":rotating_light: {rate_limit.incident.incident.title}",
            "emoji": True,
        },
    }


# --- the picture ----------------------------------------------------------------------------


def test_the_path_from_the_top_hypothesis_climbs_to_the_symptoms(rate_limit: Diagnosed) -> None:
    d = rate_limit
    graph = build_graph(d.case.spans, d.case.changes, d.incident.anomalies, d.case.topology)
    anomalous = {a.component for a in d.incident.anomalies}
    nodes, edges = symptom_paths(graph, d.hypotheses[0], anomalous)
    assert anomalous <= nodes
    # A rate-limited tool slows its agent, which slows the gateway: up the call edges.
    assert ("agent:support-agent", TOOL) in edges
    assert ("service:support-gateway", "agent:support-agent") in edges
    assert all(graph.has_edge(*e) for e in edges)


def test_a_symptom_is_drawn_through_the_components_it_sickened(rate_limit: Diagnosed) -> None:
    """Two agents call the slow tool, one of them sick: the gateway's path climbs through
    the sick one, although the healthy one sorts first and is as close."""
    a = rate_limit.incident.anomalies[0]
    topology = [
        TopologyEdge(caller="service:gateway", callee="agent:a-healthy"),
        TopologyEdge(caller="service:gateway", callee="agent:b-sick"),
        TopologyEdge(caller="agent:a-healthy", callee="tool:slow"),
        TopologyEdge(caller="agent:b-sick", callee="tool:slow"),
    ]
    sick = ["tool:slow", "agent:b-sick", "service:gateway"]
    anomalies = [
        Anomaly(
            component=c,
            sli=SliKind.LATENCY_P95,
            onset=a.onset,
            baseline=0.1,
            observed=1.0,
            score=9.0,
        )
        for c in sick
    ]
    graph = build_graph([], [], anomalies, topology)
    top = Hypothesis(component="tool:slow", fault="tool_latency", confidence=0.9)
    nodes, edges = symptom_paths(graph, top, set(sick))
    assert nodes == set(sick)
    assert edges == {("agent:b-sick", "tool:slow"), ("service:gateway", "agent:b-sick")}


def test_the_picture_is_a_deterministic_png(rate_limit: Diagnosed) -> None:
    d = rate_limit
    graph = build_graph(d.case.spans, d.case.changes, d.incident.anomalies, d.case.topology)
    anomalous = {a.component for a in d.incident.anomalies}
    first = draw_incident_graph(graph, d.hypotheses, anomalous, title=d.incident.id)
    again = draw_incident_graph(graph, d.hypotheses, anomalous, title=d.incident.id)
    assert first.startswith(PNG) and first == again
    assert draw_incident_graph(graph, [], set(), title="nothing").startswith(PNG)


def png_size(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG) and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def test_a_300_node_graph_renders_within_the_bound(rate_limit: Diagnosed) -> None:
    names = [f"service:s{n:03d}" for n in range(300)]
    # A wide, deep catalog: each service called by one of the ten before it.
    topology = [
        TopologyEdge(caller=names[max(0, n - 1 - n % 10)], callee=names[n]) for n in range(1, 300)
    ]
    a = rate_limit.incident.anomalies[0]
    anomalies = [
        Anomaly(
            component=names[n],
            sli=SliKind.LATENCY_P95,
            onset=a.onset,
            baseline=0.1,
            observed=1.0,
            score=10.0,
        )
        for n in (0, 5, 120, 250)
    ]
    graph = build_graph([], [], anomalies, topology)
    assert graph.number_of_nodes() == 300 > MAX_NODES
    hypotheses = [
        Hypothesis(component=names[250], fault="service_latency", confidence=0.7),
        Hypothesis(component=names[120], fault="service_latency", confidence=0.2),
    ]
    png = draw_incident_graph(graph, hypotheses, {x.component for x in anomalies}, title="big")
    width, height = png_size(png)
    assert width <= MAX_INCHES[0] * 100 and height <= MAX_INCHES[1] * 100


def test_the_root_cause_menu_lists_the_hypotheses_and_shows_the_confirmed_one(
    rate_limit: Diagnosed,
) -> None:
    view = ticket(rate_limit, None)
    (menu_block,) = [
        b for b in ticket_blocks(view) if b.get("block_id", "").startswith("sentinel_confirm:")
    ]
    assert menu_block["block_id"] == f"sentinel_confirm:{view.incident_id}"
    (menu,) = menu_block["elements"]
    assert [o["value"] for o in menu["options"]] == [h.component for h in view.hypotheses]
    assert "initial_option" not in menu
    chosen = view.hypotheses[1].component
    confirmed = view.model_copy(update={"confirmed": chosen})
    blocks = ticket_blocks(confirmed)
    (menu_block,) = [b for b in blocks if b.get("block_id", "").startswith("sentinel_confirm:")]
    assert menu_block["elements"][0]["initial_option"]["value"] == chosen
    assert f"root cause confirmed: {chosen}" in blocks[-1]["elements"][0]["text"]
    assert f"root cause confirmed: {chosen}" in ticket_text(confirmed)
