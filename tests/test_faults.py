"""Faults survived (issue 10), each injected for real on this machine: a real Prometheus
stopped or slowed past its timeout (a loopback proxy in front of it), the real PostgreSQL
restarted under OTLP load, the git remote gone during a rollback, and SQLite's disk full
(a small tmpfs). Each must give a clear log line and a /metrics counter, no crash and no
lost data, and the product carries on once the fault is gone.

What must not live here: the adapters' own failure contracts, tested where they live
(tests/test_prometheus.py, test_span_writer.py, test_executors.py, test_daemon.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sentinel.adapters.db import open_store
from sentinel.adapters.executors import Executor, GitOps, MemoryNotifier
from sentinel.agents.remediation import MAX_ATTEMPTS, RemediationAgent, RemediationEvent
from sentinel.clock import FakeClock
from sentinel.observability import SelfMetrics
from sentinel.remediation import ActionState
from tests.test_remediation_agent import (
    PROMPT_GOOD,
    T0,
    Daemon,
    bundled,
    events,
    latency,
    make_remote,
    make_settings,
    seed_incident,
)

# --- the git remote unreachable during a rollback -----------------------------------------


def counted(metrics: SelfMetrics, event: str) -> float:
    total = 0.0
    for family in metrics.registry.collect():
        if family.name == "sentinel_remediation_events":
            for s in family.samples:
                if s.name.endswith("_total") and s.labels["event"] == event:
                    total += s.value
    return total


class Remediation(Daemon):
    metrics: SelfMetrics


@pytest.fixture
def rollback(tmp_path: Path) -> Iterator[tuple[Remediation, list[str]]]:
    """The Remediation Agent of a daemon on a real git remote whose path is renamed away
    right after sentinel commits its revert (before the push): the fault of a rollback
    the remote dropped in the middle. Yields it and the commits made."""
    remote = make_remote(tmp_path)
    made: list[str] = []

    def remote_goes_away(sha: str) -> None:
        made.append(sha)
        if remote.path.exists():
            remote.path.rename(tmp_path / "away.git")

    s = make_settings(tmp_path, remote)
    clock = FakeClock(T0)
    store = open_store("sqlite:///" + str(tmp_path / "sentinel.db"), clock)
    notifier = MemoryNotifier()
    gitops = GitOps(
        s.remediation, s.changes.repos, tmp_path / "gitops", clock, after_commit=remote_goes_away
    )
    executor = Executor(gitops, notifier)
    metrics = SelfMetrics()
    agent = RemediationAgent(
        s, store, executor, notifier, clock, playbooks=bundled(), metrics=metrics
    )
    d = Remediation(tmp_path, remote, s, store, notifier, agent, executor)
    d.metrics = metrics
    try:
        yield d, made
    finally:
        executor.close()
        store.close()


def test_a_rollback_whose_remote_vanished_is_not_applied_is_told_and_pushed_once_when_back(
    rollback: tuple[Remediation, list[str]],
) -> None:
    world, made = rollback
    inc = seed_incident(world.store, world.remote, 0.95)
    before = world.remote.commits()
    now = T0 + timedelta(minutes=3)
    with capture_logs() as logs:
        run = world.agent.run_once([inc], latency(now, now), now)

    assert run.applied == [] and len(made) == 1  # committed locally, the push failed
    (record,) = world.store.actions("inc-1")
    assert record.state is ActionState.RUNNING and "rollback" not in record.results
    assert events(world.store)[-1] == RemediationEvent.STEP_FAILED
    (line,) = [e for e in logs if e["event"] == "remediation step failed; retried next run"]
    assert line["log_level"] == "warning" and line["step"] == "rollback"
    assert line["attempt"] == 1 and "push" in line["error"]
    assert counted(world.metrics, "step_failed") == 1
    assert counted(world.metrics, "action_applied") == 0
    told = [m for _, m, _ in world.notifier.sent]
    assert any("'rollback' failed and is NOT applied (attempt 1 of" in m for m in told)
    assert not any("applied for the incident" in m for m in told)

    # The remote is back: the commit already made is pushed, not a second revert.
    (world.root / "away.git").rename(world.remote.path)
    later = now + timedelta(minutes=1)
    run = world.agent.run_once([inc], latency(now, later), later)
    assert run.applied == ["inc-1/rollback-bad-change"]
    assert world.remote.commits()[: len(made)] == made
    assert len(world.remote.commits()) == len(before) + 1
    assert world.remote.show("prompts/support.md") == PROMPT_GOOD
    # And never again, whatever runs next.
    for minutes in (2, 3):
        world.agent.run_once([inc], latency(now, later), now + timedelta(minutes=minutes))
    assert len(world.remote.commits()) == len(before) + 1
    assert counted(world.metrics, "action_applied") == 1
    assert events(world.store).count(RemediationEvent.APPLIED) == 1


def test_a_remote_that_stays_away_fails_the_action_and_escalates_it(
    rollback: tuple[Remediation, list[str]],
) -> None:
    world, made = rollback
    inc = seed_incident(world.store, world.remote, 0.95)
    now = T0 + timedelta(minutes=3)
    with capture_logs() as logs:
        for attempt in range(MAX_ATTEMPTS):
            world.agent.run_once([inc], latency(now, now), now + timedelta(minutes=attempt))

    (record,) = world.store.actions("inc-1")
    assert record.state is ActionState.FAILED and "rollback" not in record.results
    assert len(made) == 1  # one local commit, never a second one
    assert counted(world.metrics, "step_failed") == MAX_ATTEMPTS - 1
    assert counted(world.metrics, "action_failed") == 1
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["remediation failed"]
    escalations = [m for _, m, escalate in world.notifier.sent if escalate]
    assert escalations and "FAILED" in escalations[-1] and "agent-config" in escalations[-1]
    assert not world.remote.path.exists()
