"""The Remediation Agent's pure decisions (``sentinel.remediation``): gates, guardrails,
blast radius, the action state machine and verification, property-tested."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.detection import Anomaly, Detector
from sentinel.errors import IllegalTransition
from sentinel.incidents import Incident, TrackedIncident, recovered
from sentinel.playbooks.model import (
    ActionKind,
    Gates,
    GitFile,
    Guardrails,
    ModelFailover,
    Playbook,
    ShadowMode,
    TemplateContext,
    Verification,
)
from sentinel.rca import Hypothesis
from sentinel.remediation import (
    ActionRecord,
    ActionState,
    Gate,
    Verdict,
    advance,
    blast_radius_violations,
    decide,
    effective_blast_radius,
    effective_gates,
    guardrail_violations,
    matches,
    moved_off,
    propose,
    verification_gap,
    verify,
)
from sentinel.settings import DetectionSettings, RemediationSettings
from sentinel.sli import SliKey, SliSeries
from sentinel.telemetry import SliKind

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def playbook(**over: object) -> Playbook:
    data: dict[str, object] = {
        "name": "rollback",
        "match": {"faults": ["prompt_regression"], "components": ["prompt:*"]},
        "steps": [
            {"action": "gitops_rollback"},
            {"action": "notify", "message": "{{ component }}"},
        ],
        "guardrails": {"blast_radius": {"paths": ["prompts/**"]}},
    }
    data.update(over)
    return Playbook.model_validate(data)


def hyp(confidence: float = 0.95, *, change: str | None = "abc1234", **over: str) -> Hypothesis:
    return Hypothesis(
        component=over.get("component", "prompt:support"),
        fault=over.get("fault", "prompt_regression"),
        confidence=confidence,
        change=change,
        evidence=("latency up",),
    )


def ctx(h: Hypothesis, path: str = "prompts/support.md") -> TemplateContext:
    return TemplateContext(
        incident_id="inc-1",
        component=h.component,
        fault=h.fault,
        change_id=h.change,
        change_repo="agent-config" if h.change else None,
        change_path=path if h.change else None,
    )


POLICY = RemediationSettings()


def test_matching_needs_fault_component_and_confidence() -> None:
    pb = playbook(
        match={"faults": ["prompt_regression"], "components": ["prompt:*"], "min_confidence": 0.5}
    )
    assert matches(pb, hyp())
    assert not matches(pb, hyp(fault="tool_latency"))
    assert not matches(pb, hyp(component="tool:search"))
    assert not matches(pb, hyp(0.4))


def test_propose_renders_steps_and_gates_auto_when_sure() -> None:
    h = hyp(0.95)
    proposal, skipped = propose(
        [playbook()], "inc-1", h, ctx(h), history=[], paused=False, policy=POLICY, now=T0
    )
    assert proposal is not None and skipped == ()
    r = proposal.record
    assert r.key == "inc-1/rollback" and r.gate is Gate.AUTO and r.reasons == ()
    assert r.step_ids == ("gitops-rollback-1", "notify-2")
    assert r.steps[0].change == "abc1234" and r.steps[0].repo == "agent-config"  # type: ignore[union-attr]
    assert r.steps[1].message == "prompt:support"  # type: ignore[union-attr]
    assert r.revert == (True, False)


def test_rollback_without_a_linked_change_does_not_apply() -> None:
    h = hyp(0.95, change=None)
    proposal, skipped = propose(
        [playbook()], "inc-1", h, ctx(h), history=[], paused=False, policy=POLICY, now=T0
    )
    assert proposal is None
    assert len(skipped) == 1 and "change_id" in skipped[0]


def test_gate_levels_and_reasons() -> None:
    pb = playbook()
    assert (
        decide(pb, 0.95, paused=False, guardrails=[], blast_radius=[], policy=POLICY)[0]
        is Gate.AUTO
    )
    gate, reasons = decide(pb, 0.7, paused=False, guardrails=[], blast_radius=[], policy=POLICY)
    assert gate is Gate.APPROVE and "below the auto threshold 0.90" in reasons[0]
    gate, reasons = decide(pb, 0.5, paused=False, guardrails=[], blast_radius=[], policy=POLICY)
    assert gate is Gate.SUGGEST and "approval threshold 0.60" in reasons[-1]
    gate, reasons = decide(pb, 0.99, paused=True, guardrails=[], blast_radius=[], policy=POLICY)
    assert gate is Gate.APPROVE and reasons == ("remediation is paused (kill switch)",)
    gate, _ = decide(pb, 0.99, paused=False, guardrails=[], blast_radius=["path x"], policy=POLICY)
    assert gate is Gate.SUGGEST
    dry = playbook(guardrails={"dry_run": True})
    assert (
        decide(dry, 0.99, paused=False, guardrails=[], blast_radius=[], policy=POLICY)[0]
        is Gate.SUGGEST
    )


def test_playbook_gates_never_looser_than_config_unless_allowed() -> None:
    loose = playbook(gates={"auto_above": 0.5, "approve_above": 0.2})
    assert effective_gates(loose, POLICY) == (0.9, 0.6)
    assert effective_gates(loose, RemediationSettings(allow_looser_gates=True)) == (0.5, 0.2)
    strict = playbook(gates={"auto_above": 0.97, "approve_above": 0.8})
    assert effective_gates(strict, POLICY) == (0.97, 0.8)


def test_blast_radius_paths_repos_and_components() -> None:
    pb = playbook(guardrails={"blast_radius": {"paths": ["prompts/**"], "repos": ["agent-config"]}})
    h = hyp()
    steps = propose([pb], "i", h, ctx(h), history=[], paused=False, policy=POLICY, now=T0)[
        0
    ].record.steps  # type: ignore[union-attr]
    assert blast_radius_violations(pb, h, steps, ctx(h), POLICY) == []
    out = blast_radius_violations(pb, h, steps, ctx(h, "secrets/keys.yaml"), POLICY)
    assert out == ["path 'secrets/keys.yaml' is outside the playbook's blast radius ['prompts/**']"]
    policy = RemediationSettings(allowed_components=("tool:*",), allowed_paths=("config/**",))
    out = blast_radius_violations(pb, h, steps, ctx(h), policy)
    assert "component 'prompt:support' is outside the config's blast radius" in out
    assert "path 'prompts/support.md' is not in remediation.allowed_paths" in out


def test_the_effective_blast_radius_never_allows_more_than_either_side() -> None:
    pb = playbook(
        guardrails={"blast_radius": {"paths": ["prompts/**", "config/**"], "repos": ["a", "b"]}}
    )
    assert effective_blast_radius(pb, POLICY).paths == ("config/**", "prompts/**")
    assert effective_blast_radius(pb, POLICY).repos == ("a", "b")
    narrow = RemediationSettings(allowed_paths=("prompts/support/**", "secrets/**"))
    r = effective_blast_radius(pb, narrow)
    assert r.paths == ("prompts/support/**",)
    disjoint = RemediationSettings(allowed_paths=("tools/**",))
    assert effective_blast_radius(pb, disjoint).paths == ("",)  # nothing at all
    only_b = RemediationSettings.model_construct(
        **{**POLICY.model_dump(), "allowed_repos": ("b", "c")}
    )
    assert effective_blast_radius(pb, only_b).repos == ("b",)


def _started(pb: str, at: datetime) -> ActionRecord:
    return ActionRecord(
        key=f"i-{at.isoformat()}/{pb}",
        incident_id="i",
        playbook=pb,
        hypothesis=hyp(),
        gate=Gate.AUTO,
        state=ActionState.VERIFIED,
        step_ids=(),
        steps=(),
        created_at=at,
        updated_at=at,
        started_at=at,
    )


def test_cooldown_and_hourly_limit() -> None:
    pb = playbook(guardrails={"cooldown_seconds": 600, "max_runs_per_hour": 2})
    assert guardrail_violations(pb, [], T0) == []
    once = [_started("rollback", T0)]
    assert guardrail_violations(pb, once, T0 + timedelta(minutes=5))[0].startswith("cooldown")
    assert guardrail_violations(pb, once, T0 + timedelta(minutes=10)) == []
    assert guardrail_violations(pb, [_started("other", T0)], T0) == []
    twice = [*once, _started("rollback", T0 + timedelta(minutes=20))]
    out = guardrail_violations(pb, twice, T0 + timedelta(minutes=40))
    assert out and out[0].startswith("rate limit")
    assert guardrail_violations(pb, twice, T0 + timedelta(minutes=61)) == []


# --- properties ------------------------------------------------------------------------

unit = st.floats(min_value=0, max_value=1, allow_nan=False)


@st.composite
def gates_and_policy(draw: st.DrawFn) -> tuple[Playbook, RemediationSettings]:
    a, b = sorted([draw(unit), draw(unit)])
    pa, pb_ = sorted([draw(unit), draw(unit)])
    book = playbook(gates=Gates(approve_above=a, auto_above=b, allow_auto=draw(st.booleans())))
    policy = RemediationSettings(
        approve_above=pa, auto_above=pb_, allow_looser_gates=draw(st.booleans())
    )
    return book, policy


@settings(max_examples=400, deadline=None)
@given(
    gp=gates_and_policy(),
    confidence=unit,
    paused=st.booleans(),
    guard=st.lists(st.text(min_size=1, max_size=5), max_size=2),
    blast=st.lists(st.text(min_size=1, max_size=5), max_size=2),
    dry=st.booleans(),
)
def test_no_automatic_action_below_the_auto_threshold_ever(
    gp: tuple[Playbook, RemediationSettings],
    confidence: float,
    paused: bool,
    guard: list[str],
    blast: list[str],
    dry: bool,
) -> None:
    book, policy = gp
    book = book.model_copy(update={"guardrails": Guardrails(dry_run=dry)})
    gate, reasons = decide(
        book, confidence, paused=paused, guardrails=guard, blast_radius=blast, policy=policy
    )
    if gate is Gate.AUTO:
        assert confidence >= book.gates.auto_above
        if not policy.allow_looser_gates:
            assert confidence >= policy.auto_above
        assert book.gates.allow_auto and not paused and not guard and not blast and not dry
        assert reasons == ()
    else:
        assert reasons  # never silent about why a person is needed
    if gate is Gate.APPROVE:
        assert confidence >= effective_gates(book, policy)[1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list(ActionState)), max_size=12))
def test_state_machine_only_takes_legal_paths(path: list[ActionState]) -> None:
    legal = {
        ActionState.PROPOSED: {ActionState.APPROVED, ActionState.REJECTED, ActionState.EXPIRED},
        ActionState.APPROVED: {ActionState.RUNNING, ActionState.FAILED},
        ActionState.RUNNING: {ActionState.APPLIED, ActionState.FAILED},
        ActionState.APPLIED: {ActionState.VERIFYING},
        ActionState.VERIFYING: {ActionState.VERIFIED, ActionState.UNDONE, ActionState.FAILED},
    }
    r = _started("p", T0).model_copy(update={"state": ActionState.PROPOSED, "started_at": None})
    for to in path:
        if to in legal.get(r.state, set()):
            r2 = advance(r, to, T0 + timedelta(seconds=1))
            assert r2.state is to
            if to is ActionState.RUNNING:
                assert r2.started_at is not None
            r = r2
        else:
            with pytest.raises(IllegalTransition, match=repr(to.value)):
                advance(r, to, T0)


# --- verification ------------------------------------------------------------------------


def _incident() -> TrackedIncident:
    a = Anomaly(
        component="agent:support",
        sli=SliKind.LATENCY_P95,
        onset=T0,
        baseline=1.0,
        observed=3.0,
        score=9.0,
        detector=Detector.LEVEL_SHIFT,
    )
    inc = Incident(
        id="inc-1", title="t", opened_at=T0, updated_at=T0, components=("agent:support",)
    )
    return TrackedIncident(incident=inc, onset=T0, anomalies=(a,))


def _series(values: list[float], start: datetime) -> dict[SliKey, SliSeries]:
    key = SliKey("agent:support", SliKind.LATENCY_P95)
    pts = tuple((start + timedelta(seconds=30 * i), v) for i, v in enumerate(values))
    return {key: SliSeries(key=key, points=pts, counts=tuple(50 for _ in values))}


def test_verify_needs_hold_after_the_fix_and_fails_after_the_window() -> None:
    spec = Verification(window_minutes=10, hold_minutes=3)
    det = DetectionSettings()
    applied = T0 + timedelta(minutes=20)
    good = _series([3.0] * 40 + [1.0] * 30, T0)  # back to 1.0 from applied on
    assert (
        verify(_incident(), good, applied + timedelta(minutes=2), applied, spec, det)
        is Verdict.PENDING
    )
    assert (
        verify(_incident(), good, applied + timedelta(minutes=4), applied, spec, det)
        is Verdict.VERIFIED
    )
    bad = _series([3.0] * 70, T0)
    assert (
        verify(_incident(), bad, applied + timedelta(minutes=5), applied, spec, det)
        is Verdict.PENDING
    )
    assert (
        verify(_incident(), bad, applied + timedelta(minutes=10), applied, spec, det)
        is Verdict.FAILED
    )
    # No data after the fix is not recovery.
    assert (
        verify(_incident(), {}, applied + timedelta(minutes=10), applied, spec, det)
        is Verdict.FAILED
    )
    # What kept it from being verified, for the people told it was undone.
    end = applied + timedelta(minutes=10)
    assert verification_gap(_incident(), good, end, spec, det) is None
    assert verification_gap(_incident(), bad, end, spec, det) == (
        "latency_p95 of agent:support was 3 at 10:27:00 (baseline 1)"
    )
    assert verification_gap(_incident(), {}, end, spec, det) == (
        "no data for latency_p95 of agent:support"
    )
    thin = _series([3.0] * 40 + [1.0] * 16, T0)  # its points stop 2 min before the end
    assert verification_gap(_incident(), thin, end, spec, det) == (
        "latency_p95 of agent:support has 2 point(s) since 10:27:00, 4 needed"
    )


def test_a_failover_is_verified_on_what_users_see_not_on_the_model_it_left() -> None:
    """After a failover the failing model gets no traffic: its SLIs have no data, and
    missing data is not recovery. The agent's SLIs decide; without them nothing can."""
    model_errors = Anomaly(
        component="model:gpt-4o",
        sli=SliKind.ERROR_RATE,
        onset=T0,
        baseline=0.0,
        observed=0.4,
        score=30.0,
    )
    inc = _incident()
    both = inc.model_copy(update={"anomalies": (*inc.anomalies, model_errors)})
    steps = (
        ModelFailover(
            action=ActionKind.MODEL_FAILOVER, model="gpt-4o", git=GitFile(path="agents.yaml")
        ),
        ShadowMode(
            action=ActionKind.SHADOW_MODE, target="prompt:support", git=GitFile(path="r.yaml")
        ),
    )
    off = moved_off(steps)
    assert off == {"model:gpt-4o", "prompt:support"}
    spec = Verification(window_minutes=10, hold_minutes=3)
    det = DetectionSettings()
    applied = T0 + timedelta(minutes=20)
    good = _series([3.0] * 40 + [1.0] * 30, T0)  # the agent recovers; gpt-4o has no data
    later = applied + timedelta(minutes=10)
    assert verify(both, good, later, applied, spec, det) is Verdict.FAILED
    assert verify(both, good, later, applied, spec, det, moved_off=off) is Verdict.VERIFIED
    assert recovered(both, good, later, det, moved_off=off)
    assert not recovered(both, good, later, det)
    # Every anomaly on a component moved off: nothing left to judge, not recovered.
    only_model = inc.model_copy(update={"anomalies": (model_errors,)})
    assert verify(only_model, good, later, applied, spec, det, moved_off=off) is Verdict.FAILED
    assert not recovered(only_model, good, later, det, moved_off=off)
