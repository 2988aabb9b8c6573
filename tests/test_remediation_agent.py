"""The Remediation Agent end to end on real parts: a SQLite store, real git repositories
(a bare "remote" and sentinel's working clone), the bundled playbooks. Crashes are
injected between commit and push (a child process that dies there) and between apply
and verify; a restarted agent on the same store finishes and applies each action once.
The kill switch and the guardrails are property-tested over sequences of incidents.

What must not live here: the pure decisions (``test_remediation``) and the executors'
own git behaviour (``test_executors``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.adapters.db import SqlStore, open_store
from sentinel.adapters.executors import Executor, FakeExecutor, GitOps, MemoryNotifier
from sentinel.agents.metric import MetricAgent
from sentinel.agents.remediation import RemediationAgent, RemediationEvent
from sentinel.cases import FaultKind, ingest_case
from sentinel.clock import FakeClock
from sentinel.detection import Anomaly
from sentinel.incidents import Incident, IncidentOpened, TrackedIncident, audit_entry
from sentinel.playbooks.loader import load_playbooks
from sentinel.playbooks.model import AnyAction, BlastRadius, Playbook
from sentinel.ports import StepResult
from sentinel.rca import Hypothesis
from sentinel.remediation import ActionRecord, ActionState, Gate
from sentinel.settings import ChangesSettings, RemediationSettings, RepoSettings, Settings
from sentinel.sim import FaultSpec, Topology, simulate_case
from sentinel.sli import SliKey, SliSeries
from sentinel.telemetry import ChangeEvent, ChangeKind, SliKind
from tests.gitrepos import commit_files, git
from tests.harness import make_settings as make_harness_settings
from tests.harness import running_daemon

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[1]
PROMPT_GOOD = "You are the support agent.\nNever promise refunds.\n"
PROMPT_BAD = "You are the support agent.\nPromise refunds to everyone.\n"
AGENT = "agent:support-agent"
KEY = SliKey(AGENT, SliKind.LATENCY_P95)


@dataclass
class Remote:
    path: Path
    bad: str  # the commit that broke the prompt

    def show(self, path: str) -> str:
        return git(self.path, "show", f"main:{path}") + "\n"

    def commits(self) -> list[str]:
        return git(self.path, "rev-list", "main").split()

    def messages(self) -> list[str]:
        return [git(self.path, "log", "-1", "--format=%B", c) for c in self.commits()]


def make_remote(root: Path) -> Remote:
    remote = root / "remote.git"
    git(root, "init", "-q", "--bare", "-b", "main", str(remote))
    seed = root / "seed"
    seed.mkdir()
    git(seed, "init", "-q", "-b", "main")
    commit_files(seed, {"prompts/support.md": PROMPT_GOOD}, "initial prompt")
    bad = commit_files(seed, {"prompts/support.md": PROMPT_BAD}, "tighten refund wording")
    git(seed, "push", "-q", str(remote), "main")
    return Remote(remote, bad)


def make_settings(root: Path, remote: Remote, **rem: object) -> Settings:
    return Settings(
        changes=ChangesSettings(
            repos=(RepoSettings(name="agent-config", url=str(remote.path), branch="main"),)
        ),
        remediation=RemediationSettings(
            config_repo="agent-config", workdir=str(root / "gitops"), **rem
        ),
        base_dir=root,
    )


def bundled() -> list[Playbook]:
    loaded = load_playbooks([ROOT / "playbooks"], remediation=RemediationSettings())
    assert loaded.errors == ()
    return [p.playbook for p in loaded.playbooks]


def incident(incident_id: str = "inc-1", at: datetime = T0) -> TrackedIncident:
    a = Anomaly(
        component=AGENT, sli=SliKind.LATENCY_P95, onset=at, baseline=1.0, observed=3.0, score=9
    )
    inc = Incident(id=incident_id, title="latency", opened_at=at, updated_at=at)
    return TrackedIncident(incident=inc, onset=at, anomalies=(a,))


def seed_incident(
    store: SqlStore, remote: Remote, confidence: float, inc: TrackedIncident | None = None
) -> TrackedIncident:
    inc = inc or incident()
    # With its lifecycle event, as the Metric Agent writes it: a daemon sees it open.
    opened = IncidentOpened(
        incident_id=inc.id, time=inc.onset, onset=inc.onset, anomalies=inc.anomalies
    )
    store.put_incident(inc.incident, [audit_entry(opened, "metric-agent")])
    short = remote.bad[:7]
    store.add_changes(
        [
            ChangeEvent(
                id=short,
                time=inc.onset - timedelta(minutes=2),
                component="prompt:support-agent",
                affects=(AGENT,),
                kind=ChangeKind.PROMPT,
                repo="agent-config",
                path="prompts/support.md",
            )
        ]
    )
    h = Hypothesis(
        component="prompt:support-agent",
        fault="prompt_regression",
        confidence=confidence,
        change=short,
        evidence=("latency_p95 of agent:support-agent 1.0 -> 3.0",),
    )
    store.put_hypotheses(inc.id, [h], inc.onset)
    return inc


def latency(bad_until: datetime, end: datetime) -> dict[SliKey, SliSeries]:
    """latency_p95 of the agent every 30 s from T0 - 40 min: 3.0 until ``bad_until``,
    then back to 1.0."""
    pts: list[tuple[datetime, float]] = []
    t = T0 - timedelta(minutes=40)
    while t < end:
        pts.append((t, 3.0 if t < bad_until else 1.0))
        t += timedelta(seconds=30)
    return {KEY: SliSeries(key=KEY, points=tuple(pts), counts=tuple(40 for _ in pts))}


@dataclass
class Daemon:
    """What a daemon holds for remediation: rebuilt from disk to "restart" it."""

    root: Path
    remote: Remote
    settings: Settings
    store: SqlStore
    notifier: MemoryNotifier
    agent: RemediationAgent
    executor: Executor


def start(root: Path, remote: Remote, *, after_commit: object = None, **rem: object) -> Daemon:
    s = make_settings(root, remote, **rem)
    clock = FakeClock(T0)
    store = open_store("sqlite:///" + str(root / "sentinel.db"), clock)
    notifier = MemoryNotifier()
    gitops = GitOps(
        s.remediation,
        s.changes.repos,
        root / "gitops",
        clock,
        after_commit=after_commit,  # type: ignore[arg-type]
    )
    executor = Executor(gitops, notifier)
    agent = RemediationAgent(s, store, executor, notifier, clock, playbooks=bundled())
    return Daemon(root, remote, s, store, notifier, agent, executor)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Daemon]:
    d = start(tmp_path, make_remote(tmp_path))
    try:
        yield d
    finally:
        d.executor.close()
        d.store.close()


def events(store: SqlStore, incident_id: str = "inc-1") -> list[str]:
    return [e.action for e in store.audit(incident_id) if e.action.startswith(("action", "step"))]


# --- the whole loop --------------------------------------------------------------------


def test_a_sure_diagnosis_is_rolled_back_once_verified_and_audited(world: Daemon) -> None:
    inc = seed_incident(world.store, world.remote, 0.95)
    before = world.remote.commits()
    now = T0 + timedelta(minutes=3)
    run = world.agent.run_once([inc], latency(now, now), now)
    assert run.proposed == run.applied == ["inc-1/rollback-bad-change"]

    # One revert commit on the remote, citing the incident; the prompt is good again.
    assert len(world.remote.commits()) == len(before) + 1
    assert world.remote.show("prompts/support.md") == PROMPT_GOOD
    msg = world.remote.messages()[0]
    assert "inc-1" in msg and world.remote.bad in msg
    assert "Sentinel-Action: inc-1/rollback-bad-change/rollback" in msg

    (record,) = world.store.actions("inc-1")
    assert record.state is ActionState.VERIFYING and record.gate is Gate.AUTO
    # Not yet: verification needs 5 minutes of good points after the fix.
    later = now + timedelta(minutes=2)
    assert world.agent.run_once([inc], latency(now, later), later).verified == []
    done = now + timedelta(minutes=6)
    assert world.agent.run_once([inc], latency(now, done), done).verified == [record.key]
    assert world.store.get_action(record.key).state is ActionState.VERIFIED  # type: ignore[union-attr]
    # Running again changes nothing: the incident has its remediation.
    world.agent.run_once([inc], latency(now, done), done + timedelta(minutes=1))
    assert len(world.remote.commits()) == len(before) + 1

    assert events(world.store) == [
        RemediationEvent.PROPOSED,
        RemediationEvent.APPROVED,
        RemediationEvent.STARTED,
        RemediationEvent.STEP_APPLIED,
        RemediationEvent.STEP_APPLIED,
        RemediationEvent.APPLIED,
        RemediationEvent.VERIFIED,
    ]
    (proposed,) = [e for e in world.store.audit("inc-1") if e.action == "action_proposed"]
    assert proposed.actor == "remediation-agent"
    assert proposed.detail["hypothesis"]["confidence"] == 0.95
    assert proposed.detail["hypothesis"]["evidence"] == [
        "latency_p95 of agent:support-agent 1.0 -> 3.0"
    ]
    assert proposed.detail["gate"] == "auto"
    told = [m for _, m, _ in world.notifier.sent]
    assert any("Reverted " + world.remote.bad[:7] in m for m in told)  # the playbook's step
    assert any("verified" in m for m in told)


def test_records_carry_the_clock_and_verification_judges_only_complete_points(
    world: Daemon,
) -> None:
    """The daemon's SLIs are complete up to its judged time, its clock less the ingest lag.
    Its records carry the clock's time: stamped with the judged time, an automatic fix
    was dated before the incident that opened on the same run. Verification judges at the
    judged time: points the lag has not completed do not count towards the hold."""
    inc = seed_incident(world.store, world.remote, 0.95)
    now = T0 + timedelta(minutes=3)
    lag = timedelta(seconds=5)
    run = world.agent.run_once([inc], latency(now, now), now, judged_at=now - lag)
    assert run.applied == ["inc-1/rollback-bad-change"]
    (record,) = world.store.actions("inc-1")
    assert record.created_at == now and record.applied_at == now
    # Good points from the fix on; the hold is 5 minutes of them.
    done = now + timedelta(minutes=5)
    slis = latency(now, done + timedelta(minutes=1))
    assert world.agent.run_once([inc], slis, done, judged_at=done - lag).verified == []
    run = world.agent.run_once([inc], slis, done + lag, judged_at=done)
    assert run.verified == [record.key]
    verified = world.store.get_action(record.key)
    assert verified is not None and verified.updated_at == done + lag


def test_a_fix_that_does_not_help_is_undone_and_people_are_told(world: Daemon) -> None:
    inc = seed_incident(world.store, world.remote, 0.95)
    now = T0 + timedelta(minutes=3)
    never = now + timedelta(hours=2)
    world.agent.run_once([inc], latency(never, now), now)
    assert world.remote.show("prompts/support.md") == PROMPT_GOOD
    end = now + timedelta(minutes=15)
    run = world.agent.run_once([inc], latency(never, end), end)
    assert run.undone == ["inc-1/rollback-bad-change"]
    # The revert was reverted: the change was not the cause, so it is back.
    assert world.remote.show("prompts/support.md") == PROMPT_BAD
    record = world.store.get_action("inc-1/rollback-bad-change")
    assert record is not None and record.state is ActionState.UNDONE
    assert record.undo_results["rollback"].commit is not None
    assert "tell" not in record.undo_results  # a notification has nothing to undo
    escalations = [m for _, m, esc in world.notifier.sent if esc]
    assert escalations and "did not help within 15 min, so it was undone" in escalations[-1]
    # ... and what was still off when the window closed.
    assert escalations[-1].endswith(
        ". Not back: latency_p95 of agent:support-agent was 3 at 10:13:00 (baseline 1)"
    )
    assert record.note.endswith(
        "Not back: latency_p95 of agent:support-agent was 3 at 10:13:00 (baseline 1)"
    )
    assert events(world.store)[-2:] == [RemediationEvent.STEP_UNDONE, RemediationEvent.UNDONE]


def test_a_less_sure_diagnosis_waits_for_approval(world: Daemon) -> None:
    inc = seed_incident(world.store, world.remote, 0.75)
    before = world.remote.commits()
    now = T0 + timedelta(minutes=3)
    run = world.agent.run_once([inc], latency(now, now), now)
    (record,) = world.store.actions("inc-1")
    assert run.proposed == [record.key] and run.applied == []
    assert record.state is ActionState.PROPOSED and record.gate is Gate.APPROVE
    assert "confidence 0.75 is below the auto threshold 0.90" in record.reasons
    world.agent.run_once([inc], latency(now, now), now + timedelta(minutes=1))
    assert world.remote.commits() == before  # nothing without a person

    approved = world.agent.decide(
        record.key, approve=True, actor="slack:U123", reason="looks right"
    )
    assert approved.state is ActionState.APPROVED and approved.decided_by == "slack:U123"
    world.agent.run_once([inc], latency(now, now), now + timedelta(minutes=2))
    assert len(world.remote.commits()) == len(before) + 1
    who = [(e.actor, e.action) for e in world.store.audit("inc-1")]
    assert ("slack:U123", RemediationEvent.APPROVED.value) in who


def test_a_rejected_action_never_runs(world: Daemon) -> None:
    inc = seed_incident(world.store, world.remote, 0.75)
    before = world.remote.commits()
    now = T0 + timedelta(minutes=3)
    world.agent.run_once([inc], latency(now, now), now)
    key = "inc-1/rollback-bad-change"
    world.agent.decide(key, approve=False, actor="cli:dana", reason="not the prompt")
    world.agent.run_once([inc], latency(now, now), now + timedelta(minutes=1))
    assert world.remote.commits() == before
    assert world.store.get_action(key).state is ActionState.REJECTED  # type: ignore[union-attr]


def test_the_kill_switch_stops_an_approved_action_until_resumed(world: Daemon) -> None:
    inc = seed_incident(world.store, world.remote, 0.75)
    before = world.remote.commits()
    now = T0 + timedelta(minutes=3)
    world.agent.run_once([inc], latency(now, now), now)
    world.agent.decide("inc-1/rollback-bad-change", approve=True, actor="cli:dana")
    world.store.set_paused(True, actor="cli:dana")
    run = world.agent.run_once([inc], latency(now, now), now + timedelta(minutes=1))
    assert run.waiting == ["inc-1/rollback-bad-change"] and world.remote.commits() == before
    world.store.set_paused(False, actor="cli:dana")
    world.agent.run_once([inc], latency(now, now), now + timedelta(minutes=2))
    assert len(world.remote.commits()) == len(before) + 1


def test_the_config_kill_switch_makes_even_a_sure_fix_wait(tmp_path: Path) -> None:
    d = start(tmp_path, make_remote(tmp_path), paused=True)
    try:
        inc = seed_incident(d.store, d.remote, 0.99)
        before = d.remote.commits()
        now = T0 + timedelta(minutes=3)
        d.agent.run_once([inc], latency(now, now), now)
        (record,) = d.store.actions("inc-1")
        assert record.gate is Gate.APPROVE
        assert "remediation is paused (kill switch)" in record.reasons
        assert d.remote.commits() == before
    finally:
        d.executor.close()
        d.store.close()


# --- crashes -----------------------------------------------------------------------------


def _die_after_commit(commit: str) -> None:
    os._exit(17)  # the process dies between the commit and the push


def crash_between_commit_and_push(root: str) -> None:
    """Run in a child process: the agent commits the revert and dies before pushing."""
    base = Path(root)
    remote = Remote(base / "remote.git", (base / "bad").read_text())
    d = start(base, remote, after_commit=_die_after_commit)
    inc = incident()
    now = T0 + timedelta(minutes=3)
    d.agent.run_once([inc], latency(now, now), now)
    raise AssertionError("the child should have died in after_commit")


def test_a_crash_between_commit_and_push_applies_the_revert_exactly_once(tmp_path: Path) -> None:
    remote = make_remote(tmp_path)
    (tmp_path / "bad").write_text(remote.bad)
    before = remote.commits()
    d = start(tmp_path, remote)
    seed_incident(d.store, remote, 0.95)
    d.executor.close()
    d.store.close()

    code = (
        "import sys; from tests.test_remediation_agent import crash_between_commit_and_push; "
        "crash_between_commit_and_push(sys.argv[1])"
    )
    child = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert child.returncode == 17, child.stderr
    assert remote.commits() == before  # committed locally, never pushed
    (record,) = _actions(tmp_path)
    assert record.state is ActionState.RUNNING and record.running_step == "rollback"

    d = start(tmp_path, remote)  # the restarted daemon, same store and workdir
    try:
        now = T0 + timedelta(minutes=4)
        run = d.agent.run_once([incident()], latency(now, now), now)
        assert run.applied == ["inc-1/rollback-bad-change"]
        assert len(remote.commits()) == len(before) + 1  # exactly one revert
        assert remote.show("prompts/support.md") == PROMPT_GOOD
        assert (
            sum(
                "Sentinel-Action: inc-1/rollback-bad-change/rollback" in m
                for m in remote.messages()
            )
            == 1
        )
    finally:
        d.executor.close()
        d.store.close()


def _actions(root: Path) -> list[ActionRecord]:
    store = open_store("sqlite:///" + str(root / "sentinel.db"), FakeClock(T0))
    try:
        return store.actions()
    finally:
        store.close()


class Crash(BaseException):
    """A process death at a chosen point (BaseException: nothing on the way catches it)."""


class CrashingStore(SqlStore):
    """The real store, dying just before it writes the move to ``die_at``."""

    die_at: ActionState | None = None

    def put_action(
        self,
        record: ActionRecord,
        audit: Sequence[object] = (),
        *,
        prev: ActionRecord | None = None,
    ) -> bool:
        if record.state is self.die_at:
            raise Crash
        return super().put_action(record, audit, prev=prev)  # type: ignore[arg-type]


def test_a_crash_between_apply_and_verify_resumes_verification_without_reapplying(
    tmp_path: Path,
) -> None:
    remote = make_remote(tmp_path)
    before = remote.commits()
    d = start(tmp_path, remote)
    d.store.__class__ = CrashingStore
    d.store.die_at = ActionState.VERIFYING  # type: ignore[attr-defined]
    inc = seed_incident(d.store, remote, 0.95)
    now = T0 + timedelta(minutes=3)
    with pytest.raises(Crash):
        d.agent.run_once([inc], latency(now, now), now)
    d.executor.close()
    d.store.close()
    (record,) = _actions(tmp_path)
    assert record.state is ActionState.APPLIED
    assert len(remote.commits()) == len(before) + 1

    d = start(tmp_path, remote)
    try:
        later = now + timedelta(minutes=6)
        run = d.agent.run_once([inc], latency(now, later), later)
        assert run.verified == ["inc-1/rollback-bad-change"] and run.applied == []
        assert len(remote.commits()) == len(before) + 1  # nothing applied twice
    finally:
        d.executor.close()
        d.store.close()


# --- steps that cannot be found again -------------------------------------------------------

WEBHOOK = Playbook.model_validate(
    {
        "name": "call-ops",
        "match": {"faults": ["tool_rate_limit"]},
        "steps": [
            {"id": "call", "action": "http", "call": {"url": "http://ops.test/throttle"}},
        ],
    }
)


def _fake_agent(
    root: Path, playbooks: Sequence[Playbook], executor: FakeExecutor, **rem: object
) -> tuple[RemediationAgent, SqlStore, MemoryNotifier]:
    store = open_store("sqlite:///" + str(root / "fake.db"), FakeClock(T0))
    notifier = MemoryNotifier()
    s = Settings(remediation=RemediationSettings(config_repo="config", **rem), base_dir=root)
    agent = RemediationAgent(s, store, executor, notifier, FakeClock(T0), playbooks=playbooks)
    return agent, store, notifier


def _tool_incident(
    store: SqlStore, incident_id: str, at: datetime, confidence: float
) -> TrackedIncident:
    inc = incident(incident_id, at)
    store.put_incident(inc.incident)
    h = Hypothesis(component="tool:crm", fault="tool_rate_limit", confidence=confidence)
    store.put_hypotheses(incident_id, [h], at)
    return inc


def test_an_interrupted_http_step_is_never_sent_again(tmp_path: Path) -> None:
    executor = FakeExecutor()
    agent, store, notifier = _fake_agent(tmp_path, [WEBHOOK], executor)
    try:
        inc = _tool_incident(store, "inc-h", T0, 0.95)
        # What a crash while the request was in flight leaves: the step marked running,
        # no result.
        step = WEBHOOK.steps[0]
        record = ActionRecord(
            key="inc-h/call-ops",
            incident_id="inc-h",
            playbook="call-ops",
            hypothesis=store.hypotheses("inc-h")[0],
            gate=Gate.AUTO,
            state=ActionState.RUNNING,
            step_ids=("call",),
            steps=(step,),
            created_at=T0,
            updated_at=T0,
            started_at=T0,
            running_step="call",
        )
        assert store.put_action(record)
        run = agent.run_once([inc], {}, T0 + timedelta(minutes=1))
        assert run.failed == ["inc-h/call-ops"]
        assert executor.calls == []  # not sent a second time
        failed = store.get_action("inc-h/call-ops")
        assert failed is not None and "outcome is unknown" in failed.note
        assert notifier.sent and notifier.sent[-1][2] is True  # escalated
    finally:
        store.close()


# --- properties over sequences of incidents --------------------------------------------------

THROTTLE = Playbook.model_validate(
    {
        "name": "throttle",
        "match": {"faults": ["tool_rate_limit"], "components": ["tool:*"]},
        "guardrails": {"cooldown_seconds": 600, "max_runs_per_hour": 3},
        "steps": [
            {
                "id": "limit",
                "action": "throttle",
                "requests_per_minute": 30,
                "git": {"path": "limits.yaml"},
            }
        ],
        "verification": {"window_minutes": 5, "hold_minutes": 1},
    }
)


class PauseSpy(FakeExecutor):
    """The fake executor, recording whether the kill switch was on at each call."""

    store: SqlStore | None = None
    while_paused: int = 0

    def apply(
        self, step: AnyAction, *, key: str, incident_id: str, allowed: BlastRadius
    ) -> StepResult:
        assert self.store is not None
        self.while_paused += self.store.paused()
        return super().apply(step, key=key, incident_id=incident_id, allowed=allowed)

    def revert(
        self, step: AnyAction, result: StepResult, *, key: str, incident_id: str
    ) -> StepResult:
        assert self.store is not None
        self.while_paused += self.store.paused()
        return super().revert(step, result, key=key, incident_id=incident_id)


op = st.one_of(
    st.tuples(st.just("incident"), st.floats(0.5, 1.0)),
    st.tuples(st.just("pause"), st.booleans()),
    st.tuples(st.just("run"), st.integers(1, 20)),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(op, min_size=1, max_size=14))
def test_no_action_at_all_while_paused_ever(ops: list[tuple[str, object]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spy = PauseSpy()
        agent, store, _ = _fake_agent(Path(tmp), [THROTTLE], spy)
        spy.store = store
        try:
            now, open_, n = T0, [], 0
            for kind, arg in ops:
                if kind == "incident":
                    n += 1
                    open_.append(_tool_incident(store, f"inc-{n}", now, float(arg)))  # type: ignore[arg-type]
                elif kind == "pause":
                    store.set_paused(bool(arg), actor="prop")
                else:
                    now += timedelta(minutes=int(arg))  # type: ignore[call-overload]
                    # People approve whatever waits for them, paused or not; the SLIs
                    # never recover, so verification fails and undoes: an action too.
                    agent.run_once(open_, {}, now)
                    for r in store.actions(states=[ActionState.PROPOSED]):
                        if r.gate is Gate.APPROVE:
                            agent.decide(r.key, approve=True, actor="prop")
                    agent.run_once(open_, {}, now + timedelta(seconds=30))
            assert spy.while_paused == 0
        finally:
            store.close()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    gaps=st.lists(st.integers(0, 25), min_size=1, max_size=12),
    sure=st.lists(st.booleans(), min_size=12, max_size=12),
)
def test_cooldown_and_rate_limits_hold_for_any_sequence_of_incidents(
    gaps: list[int], sure: list[bool]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        executor = FakeExecutor()
        agent, store, _ = _fake_agent(Path(tmp), [THROTTLE], executor)
        try:
            now, open_ = T0, []
            for i, gap in enumerate(gaps):
                now += timedelta(minutes=gap)
                open_.append(_tool_incident(store, f"inc-{i}", now, 0.95 if sure[i] else 0.7))
                for pending in store.actions(states=[ActionState.PROPOSED]):
                    if pending.gate is Gate.APPROVE:  # people approve everything at once
                        agent.decide(pending.key, approve=True, actor="prop")
                agent.run_once(open_, {}, now)
                agent.run_once(open_, {}, now + timedelta(minutes=1))
            starts = sorted(r.started_at for r in store.actions() if r.started_at is not None)
            g = THROTTLE.guardrails
            for a, b in itertools.pairwise(starts):
                assert (b - a).total_seconds() >= g.cooldown_seconds
            for t in starts:
                in_hour = [s for s in starts if t <= s < t + timedelta(hours=1)]
                assert len(in_hour) <= g.max_runs_per_hour
            applies = [c for c in executor.calls if c.kind.value == "apply"]
            assert len(applies) == len(starts)  # each started action applied once
        finally:
            store.close()


# --- with the other agents ----------------------------------------------------------------


def test_a_detected_prompt_regression_is_rolled_back_at_its_change_and_undone_when_it_persists(
    tmp_path: Path,
) -> None:
    """Detection, diagnosis and remediation on a simulated case: the Metric Agent opens
    the incident, the Root Cause Agent blames the prompt commit, the bundled rollback
    playbook reverts exactly that commit once; the recorded telemetry never recovers (it
    is a recording), so verification fails and the revert is undone."""
    spec = FaultSpec(
        topology=Topology.SUPPORT, fault=FaultKind.PROMPT_REGRESSION, seed=3, sample_ratio=1.0
    )
    case = dataclasses.replace(simulate_case(spec), samples=())
    assert case.truth is not None and case.truth.change is not None
    store = open_store("sqlite:///" + str(tmp_path / "s.db"), FakeClock(case.meta.start))
    try:
        ingest_case(store, case)
        s = make_harness_settings(
            tmp_path,
            detection={"ingest_lag_seconds": 0.0},
            remediation={"config_repo": "agent-config"},
        )
        clock = FakeClock(case.truth.fault_start - timedelta(minutes=5))
        metric = MetricAgent(s, store, clock)
        repo = next(c.repo for c in case.changes if c.id == case.truth.change)
        executor = FakeExecutor(repos=(repo,), config_repo=repo)
        notifier = MemoryNotifier()
        remedy = RemediationAgent(s, store, executor, notifier, clock, playbooks=bundled())
        applied_at = None
        for _ in range(60):  # 30 minutes of runs
            clock.advance(s.detection.interval_seconds)
            run = asyncio.run(metric.run_once())
            done = remedy.run_once(metric.open_incidents, metric.window.series(), run.judged_at)
            if done.applied:
                applied_at = run.judged_at
            if done.undone:
                break
        assert applied_at is not None
        (record,) = store.actions()
        assert record.hypothesis.change == case.truth.change
        assert record.steps[0].change == case.truth.change  # type: ignore[union-attr]
        assert record.state is ActionState.UNDONE
        applies = [c for c in executor.calls if c.kind.value == "apply"]
        reverts = [c for c in executor.calls if c.kind.value == "revert"]
        assert [c.key for c in applies] == [
            f"{record.incident_id}/rollback-bad-change/rollback",
            f"{record.incident_id}/rollback-bad-change/tell",
        ]
        assert [c.key for c in reverts] == [
            f"{record.incident_id}/rollback-bad-change/rollback/undo"
        ]
        assert executor.live() == []  # nothing left applied
    finally:
        store.close()


def test_the_daemon_loads_good_playbooks_and_skips_a_broken_one(tmp_path: Path) -> None:
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "good.yaml").write_text(
        (ROOT / "playbooks" / "throttle-rate-limited-tool.yaml").read_text()
    )
    (folder / "broken.yaml").write_text(
        "name: broken\nmatch: {faults: [tool_rate_limit]}\nsteps:\n  - action: teleport\n"
    )
    s = make_harness_settings(tmp_path, remediation={"playbooks_dir": "playbooks"})
    with running_daemon(s) as d:
        agent = d.daemon.remediation_agent
        assert agent is not None and list(agent.playbooks) == ["throttle-rate-limited-tool"]
        text = httpx.get(d.url + "/metrics").text
        assert "sentinel_playbook_errors_total 1.0" in text


def test_the_api_serves_the_audit_log_and_the_actions(tmp_path: Path) -> None:
    executor = FakeExecutor()
    agent, store, _ = _fake_agent(tmp_path, [THROTTLE], executor)
    try:
        inc = _tool_incident(store, "inc-api", T0, 0.95)
        agent.run_once([inc], {}, T0 + timedelta(minutes=1))
        s = make_harness_settings(tmp_path, store={"url": f"sqlite:///{tmp_path / 'fake.db'}"})
        with running_daemon(s, store=store) as d:
            actions = httpx.get(d.url + "/api/actions", params={"incident": "inc-api"}).json()
            audit = httpx.get(d.url + "/api/audit", params={"incident": "inc-api"}).json()
            other = httpx.get(d.url + "/api/audit", params={"incident": "nope"}).json()
    finally:
        store.close()
    (action,) = actions
    assert action["key"] == "inc-api/throttle" and action["state"] == "verifying"
    assert action["results"]["limit"]["repo"] == "config"
    assert [e["action"] for e in audit][:3] == ["diagnosed", "action_proposed", "action_approved"]
    assert audit[1]["detail"]["hypothesis"]["confidence"] == 0.95
    assert other == []


def test_a_proposal_nobody_decides_expires_and_is_escalated(tmp_path: Path) -> None:
    executor = FakeExecutor()
    agent, store, notifier = _fake_agent(tmp_path, [THROTTLE], executor)
    try:
        inc = _tool_incident(store, "inc-x", T0, 0.75)
        agent.run_once([inc], {}, T0)
        assert agent.run_once([inc], {}, T0 + timedelta(minutes=29)).expired == []
        run = agent.run_once([inc], {}, T0 + timedelta(minutes=30))
        assert run.expired == ["inc-x/throttle"]
        record = store.get_action("inc-x/throttle")
        assert record is not None and record.state is ActionState.EXPIRED
        _, message, escalated = notifier.sent[-1]
        assert escalated and "the approval expired" in message
        # Too late now: an approval changes nothing and nothing runs.
        agent.decide("inc-x/throttle", approve=True, actor="slack:U1")
        agent.run_once([inc], {}, T0 + timedelta(minutes=31))
        assert executor.calls == []
    finally:
        store.close()


def test_without_slack_the_console_shows_each_ticket_and_its_thread(tmp_path: Path) -> None:
    import io

    from sentinel.agents.tickets import ConsoleSink, OutboxNotifier, TicketDesk

    agent, store, _ = _fake_agent(tmp_path, [THROTTLE], FakeExecutor())
    out = io.StringIO()
    desk = TicketDesk(store, ConsoleSink(out), cap_seconds=10)
    agent.notifier = OutboxNotifier(store)
    try:
        inc = _tool_incident(store, "inc-c", T0, 0.75)
        agent.run_once([inc], {}, T0)
        desk.refresh(["inc-c"])
        asyncio.run(desk.deliver(T0))
        first = out.getvalue()
        assert first.startswith("=== ticket inc-c ===")
        assert "tool:crm" in first and "approval" in first.lower()
        assert "[inc-c] root cause tool:crm" in first  # the proposal, in the thread
        assert "track record: throttle for tool_rate_limit: never tried" in first
        agent.decide("inc-c/throttle", approve=True, actor="cli:dana")
        agent.run_once([inc], {}, T0 + timedelta(minutes=1))
        desk.refresh(["inc-c"])
        asyncio.run(desk.deliver(T0 + timedelta(minutes=1)))
        later = out.getvalue()[len(first) :]
        assert "=== ticket inc-c (updated) ===" in later and "applied" in later
    finally:
        store.close()


# --- what was learned, used ---------------------------------------------------------------

THROTTLE_HTTP = Playbook.model_validate(
    {
        "name": "throttle-http",
        "match": {"faults": ["tool_rate_limit"], "components": ["tool:*"]},
        "steps": [
            {
                "id": "limit",
                "action": "throttle",
                "requests_per_minute": 30,
                "http": {"url": "http://gateway.test/limits"},
            }
        ],
    }
)


def test_a_playbook_that_failed_on_a_fault_goes_after_one_that_worked(tmp_path: Path) -> None:
    executor = FakeExecutor()
    agent, store, _ = _fake_agent(tmp_path, [THROTTLE, THROTTLE_HTTP], executor)
    try:
        # Earlier: the git throttle was undone (it did not help) on a rate-limited tool.
        old = _tool_incident(store, "inc-old", T0, 0.95)
        agent.run_once([old], {}, T0)
        assert store.get_action("inc-old/throttle") is not None
        agent.run_once([old], {}, T0 + timedelta(minutes=6))  # verification window over
        assert store.get_action("inc-old/throttle").state is ActionState.UNDONE  # type: ignore[union-attr]
        # Now: the same fault again; the HTTP throttle (never tried) is proposed first.
        new = _tool_incident(store, "inc-new", T0 + timedelta(hours=2), 0.95)
        agent.run_once([new], {}, T0 + timedelta(hours=2))
        assert [r.playbook for r in store.actions("inc-new")] == ["throttle-http"]
    finally:
        store.close()


def test_the_daemon_diagnoses_with_the_learned_calibration(tmp_path: Path) -> None:
    from sentinel.agents.root_cause import learned_diagnosis
    from sentinel.learning.priors import LearnedState
    from sentinel.rca import diagnose_incident

    store = open_store("sqlite:///" + str(tmp_path / "l.db"), FakeClock(T0))
    try:
        spec = FaultSpec(topology=Topology.SUPPORT, fault=FaultKind.TOOL_LATENCY, seed=2)
        case = simulate_case(spec)
        from sentinel.incidents import replay_case
        from sentinel.settings import DetectionSettings, PricingSettings

        incidents = replay_case(case, DetectionSettings(), PricingSettings())
        anomalies = incidents[0].anomalies
        default = diagnose_incident(anomalies, case.spans, case.changes)
        assert tuple(learned_diagnosis(store)(anomalies, case.spans, case.changes)) == default
        store.put_learned(LearnedState(temperature=3.0, other=3.0, note="test"))
        learned = learned_diagnosis(store)(anomalies, case.spans, case.changes)
        assert [h.component for h in learned] == [h.component for h in default]  # same order
        assert learned[0].confidence < default[0].confidence  # a flatter calibration
        store.reset_learned("test")
        assert tuple(learned_diagnosis(store)(anomalies, case.spans, case.changes)) == default
    finally:
        store.close()
