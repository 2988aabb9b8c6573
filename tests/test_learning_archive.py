"""The Learning Agent's archive on a real SQLite store and a real git repository: a
resolved incident becomes a case that ``sentinel rca`` diagnoses as live, people's
confirmations become its ``[truth]``, a fix verified but never confirmed is weak truth,
and neither a failing Prometheus nor a dirty archive repository stops an archive."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import random
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import git
import pytest
import typer
from structlog.testing import capture_logs
from typer.testing import CliRunner

from sentinel.adapters.db import SqlStore, open_store
from sentinel.adapters.prometheus import FakeMetricSource
from sentinel.agents.learning import LearningAgent
from sentinel.agents.metric import MetricAgent
from sentinel.cases import Case, CaseMeta, CaseTruth, FaultKind, TruthBasis, ingest_case, read_case
from sentinel.cli_confirm import confirm as confirm_command
from sentinel.clock import FakeClock
from sentinel.detection import Anomaly
from sentinel.errors import UnknownIncident
from sentinel.incidents import (
    IncidentOpened,
    IncidentResolved,
    IncidentStatus,
    LifecycleEvent,
    TrackedIncident,
    audit_entry,
    transition,
)
from sentinel.learning.archive import (
    ARCHIVED,
    ROOT_CAUSE_CONFIRMED,
    VALUE_FAMILY,
    ConfirmationError,
    case_folder_name,
)
from sentinel.playbooks.model import ActionKind, GitopsRollback, Notify
from sentinel.rca import Hypothesis
from sentinel.remediation import ActionRecord, ActionState, Gate, action_key
from sentinel.settings import Settings
from sentinel.sim import FaultSpec, Topology, plan_fault, simulate_case
from sentinel.telemetry import ChangeEvent, ChangeKind, Sample, SliKind, Span
from tests.gitrepos import commit_files
from tests.gitrepos import git as run_git
from tests.harness import make_settings
from tests.test_cli import ENV, assert_failed_cleanly, flat, invoke, write_config

# Every trace kept: the Metric Agent works from spans alone, as in test_metric_agent.
SPEC = FaultSpec(
    topology=Topology.SUPPORT, fault=FaultKind.TOOL_LATENCY, seed=255985076, sample_ratio=1.0
)
# What the healthy tail copies: this long of the traffic before the fault.
HEALTHY = timedelta(minutes=20)


def _new_id(old: str, width: int) -> str:
    return hashlib.sha256(b"healthy:" + old.encode()).hexdigest()[:width]


def with_recovery(case: Case) -> tuple[Span, ...]:
    """Spans of the system healthy again after the recording's end: the traces that began
    in the ``HEALTHY`` stretch ending a minute before the fault, shifted to begin at the
    case's end, with new ids. The simulator's fault lasts to the end of its recording, and
    only the Metric Agent resolves an incident (when its SLIs are back within baseline for
    ``resolve_minutes``): this is the traffic a fix at the case's end would give."""
    assert case.truth is not None
    until = case.truth.fault_start - timedelta(minutes=1)
    since = until - HEALTHY
    shift = (case.meta.end - since) // timedelta(microseconds=1) * 1000
    lo = (since - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000
    hi = lo + HEALTHY // timedelta(microseconds=1) * 1000
    first: dict[str, int] = {}
    for s in case.spans:
        first[s.trace_id] = min(first.get(s.trace_id, s.start_ns), s.start_ns)
    out = []
    for s in case.spans:
        if not lo <= first[s.trace_id] < hi:
            continue
        out.append(
            s._replace(
                trace_id=_new_id(s.trace_id, 32),
                span_id=_new_id(s.span_id, 16),
                parent_span_id=None if s.parent_span_id is None else _new_id(s.parent_span_id, 16),
                start_ns=s.start_ns + shift,
                end_ns=s.end_ns + shift,
                events=tuple(dataclasses.replace(e, time_ns=e.time_ns + shift) for e in s.events),
                evaluations=tuple(
                    dataclasses.replace(e, time_ns=e.time_ns + shift) for e in s.evaluations
                ),
                raw=None,
            )
        )
    return tuple(out)


@pytest.fixture(scope="module")
def recorded() -> Case:
    case = dataclasses.replace(simulate_case(SPEC), samples=())
    return dataclasses.replace(case, spans=(*case.spans, *with_recovery(case)))


def archive_repo(path: Path) -> Path:
    """A git repository for the archive, with a commit and unrelated work in progress
    (one file staged, one changed): archiving must commit its case and nothing else."""
    path.mkdir(parents=True)
    run_git(path, "init", "-q", "-b", "main")
    commit_files(path, {"README.md": "archived incidents\n", "notes.md": "v1\n"}, "start")
    (path / "staged.md").write_text("work in progress\n")
    run_git(path, "add", "staged.md")
    (path / "notes.md").write_text("v2, not committed\n")
    return path


def commits(repo_path: Path) -> list[tuple[str, list[str]]]:
    """(message, files changed) of each commit, newest first, read with gitpython."""
    repo = git.Repo(repo_path)
    try:
        return [
            (str(c.message).strip(), sorted(str(p) for p in c.stats.files))
            for c in repo.iter_commits("HEAD")
        ]
    finally:
        repo.close()


def assert_unrelated_work_untouched(repo_path: Path) -> None:
    assert run_git(repo_path, "diff", "--cached", "--name-only") == "staged.md"
    assert run_git(repo_path, "diff", "--name-only") == "notes.md"


# --- the round trip --------------------------------------------------------------------------


def test_a_resolved_incident_archived_and_confirmed_is_diagnosed_by_rca_as_live(
    tmp_path: Path, recorded: Case
) -> None:
    """The Metric Agent, run as the daemon runs it (every 30 s, the default interval and
    the replay's step: live and ``sentinel rca`` judge the same instants, so they date
    the incident alike; a run every 2 minutes sees the fault's first points later than
    the replay, on another path, and may date it a step apart), opens the incident,
    diagnoses it and resolves it once the healthy tail (``with_recovery``) has lasted
    ``resolve_minutes``.
    The Learning Agent archives it on resolution, as the daemon calls it, without truth;
    a person confirms the top hypothesis and the case is archived again with that truth.
    ``sentinel rca`` on the archived case ranks the same component first."""
    assert recorded.truth is not None
    archive = archive_repo(tmp_path / "archive")
    s = make_settings(
        tmp_path,
        detection={"ingest_lag_seconds": 0.0, "interval_seconds": 30.0},
        learning={"archive_dir": str(archive)},
    )
    store = open_store(s.store_url, FakeClock(recorded.meta.start))
    try:
        ingest_case(store, recorded)
        clock = FakeClock(recorded.truth.fault_start - timedelta(minutes=5))
        metric = MetricAgent(s, store, clock)
        learning = LearningAgent(s, store, clock)
        archived = []
        while not archived and clock.now() < recorded.meta.end + timedelta(minutes=30):
            clock.advance(s.detection.interval_seconds)
            run = asyncio.run(metric.run_once())
            resolved = [e.incident_id for e in run.events if isinstance(e, IncidentResolved)]
            archived += learning.run_once(resolved)

        (first,) = archived
        incident = store.get_incident(first.incident_id)
        assert incident is not None and incident.status is IncidentStatus.RESOLVED
        assert incident.resolved_at is not None and incident.resolved_at > recorded.meta.end
        live = store.hypotheses(incident.id)
        target = plan_fault(SPEC, random.Random(SPEC.seed)).target
        assert live[0].component == target  # the suite's own check of this spec
        assert first.truth is None and not first.note
        assert first.path == archive / case_folder_name(incident.id)
        assert ":" in incident.id and ":" not in first.path.name  # a safe folder name

        confirmed = learning.confirm(incident.id, None, None, by="cli:dana")
        assert not confirmed.corrected and confirmed.confirmation.fault == live[0].fault
        assert confirmed.archived is not None and confirmed.archived.path == first.path
        opened = [e for e in store.audit(incident.id) if e.action == "incident_opened"]
        onset = datetime.fromisoformat(opened[0].detail["onset"])
        assert confirmed.archived.truth == CaseTruth(
            root_cause=live[0].component,
            fault=live[0].fault,
            fault_start=onset,
            change=live[0].change,
            basis=TruthBasis.CONFIRMED,
        )
    finally:
        store.close()

    cfg = write_config(tmp_path / "cli")
    result = invoke("rca", str(first.path), "--json", "--config", str(cfg))
    assert result.exit_code == 0, result.output
    replayed = json.loads(result.output.splitlines()[-1])
    assert replayed["hypotheses"][0]["component"] == live[0].component
    assert replayed["case"] == first.path.name

    assert replayed["onset"] == onset.isoformat().replace("+00:00", "Z")

    # case.toml alone: reading the case's 50,000 spans again would only cost time.
    doc = tomllib.loads((first.path / "case.toml").read_text())
    truth = CaseTruth.model_validate(doc["truth"])
    assert truth.basis is TruthBasis.CONFIRMED and truth.root_cause == live[0].component
    meta = CaseMeta.model_validate(doc["case"])
    assert meta.start == onset - timedelta(minutes=s.learning.lookback_minutes)
    assert meta.end == incident.resolved_at
    assert f"Top hypothesis: {live[0].component}" in meta.description
    log = commits(archive)
    assert [m for m, _ in log] == [
        f"archive incident {incident.id}: confirmed {live[0].component} ({live[0].fault})",
        f"archive incident {incident.id}: no truth",
        "start",
    ]
    assert log[0][1] == [f"{first.path.name}/case.toml"]  # only the truth changed
    assert f"{first.path.name}/traces.jsonl.gz" in log[1][1]
    assert_unrelated_work_untouched(archive)


# --- a small incident, made by hand --------------------------------------------------------

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
ONSET = T0 + timedelta(minutes=30)
INCIDENT = "inc-20261101T103000Z-agent:support-agent"
PROMPT = "prompt:support-agent"
TOOL = "tool:crm_lookup"
AGENT = "agent:support-agent"
TOP = Hypothesis(
    component=PROMPT,
    fault="prompt_regression",
    confidence=0.8,
    change="9f1c2ab",
    evidence=("error_rate of agent:support-agent 0.01 -> 0.2",),
)
SECOND = Hypothesis(component=TOOL, fault="tool_errors", confidence=0.15)


@dataclasses.dataclass
class World:
    store: SqlStore
    clock: FakeClock
    settings: Settings
    archive: Path
    state: TrackedIncident

    def agent(self, source: FakeMetricSource | None = None) -> LearningAgent:
        return LearningAgent(self.settings, self.store, self.clock, source)


def _samples() -> list[Sample]:
    out = []
    for i in range(90):  # every 30 s for 45 minutes from T0
        t = T0 + timedelta(seconds=30 * i)
        for component in (AGENT, TOOL):
            labels = (("component", component),)
            out.append(Sample("component_requests_total", labels, component, t, 10.0 * i))
    return out


def _persist(store: SqlStore, state: TrackedIncident | None, ev: LifecycleEvent) -> TrackedIncident:
    new = transition(state, ev)
    store.put_incident(new.incident, [audit_entry(ev, "metric-agent")])
    return new


def make_world(tmp_path: Path, *, verified: bool, **sections: dict[str, object]) -> World:
    archive = archive_repo(tmp_path / "archive")
    s = make_settings(tmp_path, learning={"archive_dir": str(archive)}, **sections)
    clock = FakeClock(ONSET + timedelta(minutes=30))
    store = open_store(s.store_url, clock)
    store.add_samples(_samples())
    store.add_changes(
        [
            ChangeEvent(
                id="9f1c2ab",
                time=ONSET - timedelta(minutes=2),
                component=PROMPT,
                affects=(AGENT,),
                kind=ChangeKind.PROMPT,
                repo="agent-config",
                path="prompts/support.md",
            )
        ]
    )
    anomaly = Anomaly(
        component=AGENT,
        sli=SliKind.ERROR_RATE,
        onset=ONSET,
        baseline=0.01,
        observed=0.2,
        score=12.0,
    )
    opened = IncidentOpened(
        incident_id=INCIDENT, time=ONSET + timedelta(minutes=1), onset=ONSET, anomalies=(anomaly,)
    )
    state = _persist(store, None, opened)
    store.put_hypotheses(INCIDENT, [TOP, SECOND], ONSET + timedelta(minutes=1))
    if verified:
        store.put_action(
            ActionRecord(
                key=action_key(INCIDENT, "rollback-bad-change"),
                incident_id=INCIDENT,
                playbook="rollback-bad-change",
                hypothesis=TOP,
                gate=Gate.AUTO,
                state=ActionState.VERIFIED,
                step_ids=("tell-1", "rollback"),
                steps=(
                    Notify(action=ActionKind.NOTIFY, id="tell-1", message="rolling back"),
                    GitopsRollback(
                        action=ActionKind.GITOPS_ROLLBACK,
                        id="rollback",
                        change="9f1c2ab",
                        repo="agent-config",
                    ),
                ),
                created_at=ONSET + timedelta(minutes=2),
                updated_at=ONSET + timedelta(minutes=12),
            )
        )
    state = _persist(
        store, state, IncidentResolved(incident_id=INCIDENT, time=ONSET + timedelta(minutes=15))
    )
    return World(store, clock, s, archive, state)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path, verified=True)
    try:
        yield w
    finally:
        w.store.close()


def truth_table(path: Path) -> dict[str, object] | None:
    doc = tomllib.loads((path / "case.toml").read_text())
    truth = doc.get("truth")
    assert truth is None or isinstance(truth, dict)
    return truth


def archived_entries(store: SqlStore) -> list[dict[str, object]]:
    return [e.detail for e in store.audit(INCIDENT) if e.action == ARCHIVED]


def test_a_fix_verified_but_never_confirmed_is_weak_truth_until_a_person_corrects_it(
    world: World,
) -> None:
    agent = world.agent()
    (done,) = agent.run_once([INCIDENT])
    assert truth_table(done.path) == {
        "root_cause": PROMPT,
        "fault": "prompt_regression",
        "fault_start": ONSET,
        "change": "9f1c2ab",
        "remediation": "gitops_rollback",  # the fix's main step, not its notification
        "basis": "weak",
    }
    case = read_case(done.path)
    assert case.meta.start == ONSET - timedelta(minutes=45)
    assert case.meta.end == ONSET + timedelta(minutes=15)
    assert [c.id for c in case.changes] == ["9f1c2ab"]
    assert {s.component for s in case.samples} == {AGENT, TOOL}
    assert done.committed

    # Archived once: neither this agent nor a restarted one archives it again.
    assert agent.run_once([INCIDENT]) == []
    assert world.agent().run_once([INCIDENT, INCIDENT]) == []
    assert world.agent().catch_up() == []
    (entry,) = archived_entries(world.store)
    assert entry["truth"] == "weak" and entry["path"] == str(done.path)
    assert entry["commit"] == done.commit

    world.clock.advance(3600)
    confirmed = world.agent().confirm(INCIDENT, TOOL, None, by="slack:U0123")
    assert confirmed.corrected and confirmed.top == PROMPT
    assert confirmed.confirmation.fault == "tool_errors"  # the hypothesis' for that component
    assert confirmed.archived is not None and confirmed.archived.path == done.path
    assert truth_table(done.path) == {
        "root_cause": TOOL,
        "fault": "tool_errors",
        "fault_start": ONSET,
        "remediation": "gitops_rollback",
    }
    truth = read_case(done.path, with_truth=True).truth
    assert truth is not None and truth.basis is TruthBasis.CONFIRMED
    (said,) = [e for e in world.store.audit(INCIDENT) if e.action == ROOT_CAUSE_CONFIRMED]
    assert said.actor == "slack:U0123"
    assert said.detail == {
        "component": TOOL,
        "fault": "tool_errors",
        "top": PROMPT,
        "corrected": True,
    }
    assert [d["truth"] for d in archived_entries(world.store)] == ["weak", "confirmed"]
    assert world.agent().run_once([INCIDENT]) == []  # archived with this truth already

    assert [m for m, _ in commits(world.archive)] == [
        f"archive incident {INCIDENT}: confirmed {TOOL} (tool_errors)",
        f"archive incident {INCIDENT}: weak {PROMPT} (prompt_regression)",
        "start",
    ]
    assert_unrelated_work_untouched(world.archive)


def test_an_incident_without_a_verified_fix_or_a_confirmation_is_archived_without_truth(
    tmp_path: Path,
) -> None:
    w = make_world(tmp_path, verified=False)
    try:
        (done,) = w.agent().catch_up()
        assert done.truth is None and truth_table(done.path) is None
        assert archived_entries(w.store)[0]["truth"] == "none"
        confirmed = w.agent().confirm(INCIDENT, None, "prompt_regression", by="cli:dana")
        assert not confirmed.corrected
        assert truth_table(done.path) == {
            "root_cause": PROMPT,
            "fault": "prompt_regression",
            "fault_start": ONSET,
            "change": "9f1c2ab",
        }
    finally:
        w.store.close()


def test_confirming_an_open_incident_records_it_and_its_archive_will_carry_it(
    tmp_path: Path,
) -> None:
    archive = tmp_path / "plain-archive"  # not a git repository: files only
    s = make_settings(tmp_path, learning={"archive_dir": str(archive)})
    clock = FakeClock(ONSET + timedelta(minutes=5))
    store = open_store(s.store_url, clock)
    try:
        store.add_samples(_samples())
        anomaly = Anomaly(
            component=AGENT, sli=SliKind.ERROR_RATE, onset=ONSET, baseline=0.01, observed=0.2,
            score=12.0,
        )  # fmt: skip
        opened = IncidentOpened(incident_id=INCIDENT, time=ONSET, onset=ONSET, anomalies=(anomaly,))
        state = _persist(store, None, opened)
        agent = LearningAgent(s, store, clock)
        confirmed = agent.confirm(INCIDENT, AGENT, "agent_loop", by="cli:dana")
        assert confirmed.top is None and confirmed.corrected  # not diagnosed yet
        assert not confirmed.resolved and confirmed.archived is None
        assert agent.run_once([INCIDENT]) == []  # open: not archived
        assert not archive.exists()

        clock.advance(600)
        _persist(store, state, IncidentResolved(incident_id=INCIDENT, time=clock.now()))
        (done,) = agent.run_once([INCIDENT])
        assert not done.committed and "not in a git repository" in done.note
        assert truth_table(done.path) == {
            "root_cause": AGENT,
            "fault": "agent_loop",
            "fault_start": ONSET,
        }
    finally:
        store.close()


def test_confirming_an_unknown_incident_or_component_is_refused_and_says_what_is_known(
    world: World,
) -> None:
    agent = world.agent()
    with pytest.raises(UnknownIncident, match=r"no incident 'inc-nope' in store sqlite:///"):
        agent.confirm("inc-nope", None, None, by="cli:dana")
    with pytest.raises(ConfirmationError) as refused:
        agent.confirm(INCIDENT, "tool:nope", None, by="cli:dana")
    message = str(refused.value)
    assert "'tool:nope' is not a component sentinel knows" in message
    assert f"its hypotheses: {PROMPT}, {TOOL}" in message
    assert f"other known components: {AGENT}" in message  # from the store's samples
    with pytest.raises(ConfirmationError, match=r"root cause 'crm_lookup': component id"):
        agent.confirm(INCIDENT, "crm_lookup", None, by="cli:dana")
    assert not [e for e in world.store.audit(INCIDENT) if e.action == ROOT_CAUSE_CONFIRMED]
    # A component the store knows though no hypothesis names it is a correction.
    confirmed = agent.confirm(INCIDENT, AGENT, "agent_loop", by="cli:dana")
    assert confirmed.corrected and confirmed.archived is not None


def test_a_failing_prometheus_is_logged_and_the_case_archived_without_its_series(
    tmp_path: Path,
) -> None:
    decls = [
        # A plain selector the fake answers.
        {"component": TOOL, "sli": "latency_p95", "query": 'tool_p95_seconds{tool="crm"}'},
        # An expression the fake refuses (MetricQueryError), as a real server may fail.
        {
            "component": AGENT,
            "sli": "error_rate",
            "query": "sum(rate(errors_total[1m])) / sum(rate(requests_total[1m]))",
        },
    ]
    w = make_world(tmp_path, verified=True, prometheus={"slis": decls})
    try:
        points = [
            Sample(
                "tool_p95_seconds", (("tool", "crm"),), None, T0 + timedelta(seconds=15 * i), 0.5
            )
            for i in range(240)
        ]
        source = FakeMetricSource(points, clock=w.clock)
        with capture_logs() as logs:
            (done,) = w.agent(source=source).run_once([INCIDENT])
        failed = [e for e in logs if e["event"] == "prometheus series not archived"]
        assert len(failed) == 1 and AGENT in failed[0]["error"]
        case = read_case(done.path)
        assert "1 Prometheus SLI queries failed." in case.meta.description
        ours = [s for s in case.samples if s.metric == VALUE_FAMILY]
        assert ours and {s.component for s in ours} == {TOOL}
        assert dict(ours[0].labels) == {"component": TOOL, "sli": "latency_p95", "tool": "crm"}
        assert {s.time for s in ours} <= {T0 + timedelta(seconds=30 * i) for i in range(200)}
        assert dict(case.metric_types)[VALUE_FAMILY] == "gauge"
        assert truth_table(done.path) is not None and done.committed
    finally:
        w.store.close()


def test_a_git_failure_leaves_the_files_and_is_no_failure(world: World) -> None:
    lock = world.archive / ".git" / "index.lock"
    lock.write_text("")  # another git process holds the index
    with capture_logs() as logs:
        (done,) = world.agent().run_once([INCIDENT])
    assert not done.committed and "git failed" in done.note
    assert (done.path / "case.toml").is_file()
    assert any(e["event"] == "archive not committed" for e in logs)
    lock.unlink()
    # The next archive (a confirmation) commits the case, files from before included.
    confirmed = world.agent().confirm(INCIDENT, None, None, by="cli:dana")
    assert confirmed.archived is not None and confirmed.archived.committed
    (message, files), *_ = commits(world.archive)
    assert message == f"archive incident {INCIDENT}: confirmed {PROMPT} (prompt_regression)"
    assert f"{done.path.name}/traces.jsonl.gz" not in files  # no spans in this world
    assert f"{done.path.name}/metrics.om.gz" in files


def test_an_archive_folder_git_ignores_is_not_committed_and_that_is_no_error(
    world: World,
) -> None:
    (world.archive / ".gitignore").write_text("inc-*\n")
    with capture_logs() as logs:
        (done,) = world.agent().run_once([INCIDENT])
    assert not done.committed and "git ignores the archive folder" in done.note
    assert (done.path / "case.toml").is_file()
    assert not [e for e in logs if e["log_level"] == "error"]
    assert [m for m, _ in commits(world.archive)] == ["start"]


# --- the command ---------------------------------------------------------------------------


def cli() -> typer.Typer:
    """``confirm`` on an app of its own: ``sentinel.cli`` mounts it (owned elsewhere)."""
    app = typer.Typer()
    app.command()(confirm_command)
    app.command("unused", hidden=True)(lambda: None)  # keeps `confirm` a subcommand
    return app


def test_sentinel_confirm_prints_what_was_confirmed_and_where_it_was_archived(
    world: World, tmp_path: Path
) -> None:
    cfg = write_config(
        tmp_path / "cfg",
        f'[store]\nurl = "{world.settings.store_url}"\n'
        f'[learning]\narchive_dir = "{world.archive}"\n',
    )
    runner = CliRunner()
    app = cli()
    ok = runner.invoke(
        app, ["confirm", INCIDENT, "--root-cause", TOOL, "--config", str(cfg)], env=ENV
    )
    assert ok.exit_code == 0, ok.output
    out = flat(ok.output)
    assert (
        f"confirmed {TOOL} (tool_errors) as the root cause of {INCIDENT}: corrects the top "
        f"hypothesis, {PROMPT}"
    ) in out
    path = world.archive / case_folder_name(INCIDENT)
    assert f"case archived to {path} (committed as " in out
    assert f"[truth]: confirmed {TOOL} (tool_errors)" in out
    said = [e for e in world.store.audit(INCIDENT) if e.action == ROOT_CAUSE_CONFIRMED]
    assert said[-1].actor.startswith("cli:")

    unknown = runner.invoke(app, ["confirm", "inc-nope", "--config", str(cfg)], env=ENV)
    assert_failed_cleanly(unknown, 1)
    assert "error: no incident 'inc-nope'" in flat(unknown.output)
    bad = runner.invoke(
        app, ["confirm", INCIDENT, "--root-cause", "tool:nope", "--config", str(cfg)], env=ENV
    )
    assert_failed_cleanly(bad, 1)
    assert f"its hypotheses: {PROMPT}, {TOOL}" in flat(bad.output)
