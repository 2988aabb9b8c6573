"""Contract tests of the leader lease (``adapters/db/lease.py``) and of this replica's side
of it (``sentinel.cluster``): every store test body runs against SQLite (a file in
tmp_path) and a real PostgreSQL (``tests/fixtures/postgres.py``). Expiry is reached
without waiting: a lease granted for a negative time is already expired on the
database's clock.

What must not live here: the daemon's jobs and real processes (``test_cluster.py``).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from sentinel.adapters.db import LEADER_LEASE, Fence, SqlStore, open_store
from sentinel.adapters.executors import FakeExecutor, MemoryNotifier
from sentinel.agents.remediation import RemediationAgent
from sentinel.clock import FakeClock
from sentinel.cluster import Change, LeaderLease, Role
from sentinel.errors import LeaseLost
from sentinel.incidents import Incident
from sentinel.observability import SelfMetrics
from sentinel.playbooks.model import Playbook
from sentinel.rca import Hypothesis
from sentinel.remediation import ActionState
from sentinel.settings import ClusterSettings, RemediationSettings, Settings
from tests.harness import make_settings, running_daemon
from tests.test_remediation_agent import incident

NOW = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    s = open_store(store_url, FakeClock(NOW))
    try:
        yield s
    finally:
        s.close()


# --- the lease in the store -------------------------------------------------------------


def test_one_holder_at_a_time_renewals_keep_the_epoch(store: SqlStore) -> None:
    assert store.lease(LEADER_LEASE) is None
    a = store.acquire_lease(LEADER_LEASE, "a", 60)
    assert (a.holder, a.epoch, a.held_by("a")) == ("a", 1, True)
    b = store.acquire_lease(LEADER_LEASE, "b", 60)
    assert (b.holder, b.epoch, b.held_by("b"), b.held_by("a")) == ("a", 1, False, True)
    assert 0 < b.remaining_s <= 60
    again = store.acquire_lease(LEADER_LEASE, "a", 60)
    assert (again.holder, again.epoch) == ("a", 1)  # a renewal: the same term
    assert store.holds_lease(Fence(LEADER_LEASE, "a", 1))
    assert not store.holds_lease(Fence(LEADER_LEASE, "b", 1))


def test_an_expired_lease_goes_to_the_next_replica_in_a_new_epoch(store: SqlStore) -> None:
    store.acquire_lease(LEADER_LEASE, "a", -1)  # granted already expired: "a" died
    assert not store.holds_lease(Fence(LEADER_LEASE, "a", 1))
    b = store.acquire_lease(LEADER_LEASE, "b", 60)
    assert (b.holder, b.epoch, b.held_by("b")) == ("b", 2, True)
    # "a" wakes up: it does not get the lease back, and sees who holds it.
    a = store.acquire_lease(LEADER_LEASE, "a", 60)
    assert (a.holder, a.epoch, a.held_by("a")) == ("b", 2, False)
    # Its own lease expired and nobody took it: still a new term.
    store.acquire_lease(LEADER_LEASE, "b", -1)
    assert store.acquire_lease(LEADER_LEASE, "b", 60).epoch == 3


def test_a_released_lease_is_taken_at_once_and_only_its_term_can_release(
    store: SqlStore,
) -> None:
    store.acquire_lease(LEADER_LEASE, "a", 60)
    assert not store.release_lease(LEADER_LEASE, "b", 1)  # not b's
    assert not store.release_lease(LEADER_LEASE, "a", 7)  # not this term
    assert not store.acquire_lease(LEADER_LEASE, "b", 60).held_by("b")
    assert store.release_lease(LEADER_LEASE, "a", 1)
    b = store.acquire_lease(LEADER_LEASE, "b", 60)
    assert (b.holder, b.epoch) == ("b", 2)
    assert not store.release_lease(LEADER_LEASE, "a", 1)  # a's term is over


def test_of_replicas_racing_for_a_free_lease_exactly_one_wins(store: SqlStore) -> None:
    store.acquire_lease(LEADER_LEASE, "dead", -1)
    barrier = threading.Barrier(8)
    won: list[str] = []

    def race(me: str) -> None:
        barrier.wait(10)
        if store.acquire_lease(LEADER_LEASE, me, 60).held_by(me):
            won.append(me)

    threads = [threading.Thread(target=race, args=(f"r{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(won) == 1
    lease = store.lease(LEADER_LEASE)
    assert lease is not None and (lease.holder, lease.epoch) == (won[0], 2)


def test_a_fenced_write_of_an_ex_leader_is_refused_and_writes_nothing(store: SqlStore) -> None:
    store.acquire_lease(LEADER_LEASE, "a", 60)
    term_a = Fence(LEADER_LEASE, "a", 1)
    as_a = store.fenced(lambda: term_a)
    one = Incident(id="inc-1", title="t", opened_at=NOW, updated_at=NOW)
    as_a.put_incident(one)  # leading: written
    assert store.get_incident("inc-1") == one

    store.release_lease(LEADER_LEASE, "a", 1)
    store.acquire_lease(LEADER_LEASE, "b", 60)  # b took over
    two = Incident(id="inc-2", title="t", opened_at=NOW, updated_at=NOW)
    with pytest.raises(LeaseLost, match=r"'a'.*epoch 1"):
        as_a.put_incident(two)
    h = Hypothesis(component="tool:crm", fault="tool_rate_limit", confidence=0.9)
    with pytest.raises(LeaseLost):
        as_a.put_hypotheses("inc-1", [h], NOW)
    assert store.get_incident("inc-2") is None and store.hypotheses("inc-1") == []
    with pytest.raises(LeaseLost, match="not the leader"):
        store.fenced(lambda: None).put_incident(two)
    store.put_incident(two)  # the unfenced store (people, the CLI) is not refused
    assert store.get_incident("inc-2") == two


# --- this replica's side: LeaderLease ---------------------------------------------------------


def test_a_leader_that_is_not_renewed_in_time_stops_leading_on_its_own(store: SqlStore) -> None:
    clock = FakeClock(NOW)
    metrics = SelfMetrics()
    a = LeaderLease(store, "a", 20, metrics=metrics, clock=clock)
    b = LeaderLease(store, "b", 20, clock=clock)
    with capture_logs() as logs:
        assert a.attempt() is Change.ACQUIRED
        assert b.attempt() is None and b.role is Role.FOLLOWER
        assert a.role is Role.LEADER and a.current() == Fence(LEADER_LEASE, "a", 1)
        clock.advance(15)
        assert a.attempt() is None  # renewed: the deadline moves on
        clock.advance(15)
        assert a.current() is not None
        clock.advance(6)  # 21 s since the last renewal was sent
        assert a.current() is None and a.role is Role.FOLLOWER
        with pytest.raises(LeaseLost):
            a.check()
    assert [(e["event"], e["replica"], e["epoch"]) for e in logs] == [
        ("leader_acquired", "a", 1),
        ("leader_lost", "a", 1),
    ]
    assert logs[1]["why"] == "not renewed in time"
    assert metrics.leader._value.get() == 0
    assert metrics.leader_changes.labels(change="acquired")._value.get() == 1
    assert metrics.leader_changes.labels(change="lost")._value.get() == 1


def test_a_leader_whose_lease_was_taken_learns_it_at_its_next_attempt(store: SqlStore) -> None:
    a = LeaderLease(store, "a", 60)
    b = LeaderLease(store, "b", 60)
    assert a.attempt() is Change.ACQUIRED
    a.check()
    store.release_lease(LEADER_LEASE, "a", 1)  # what an expiry looks like to b
    assert b.attempt() is Change.ACQUIRED and b.current() == Fence(LEADER_LEASE, "b", 2)
    with pytest.raises(LeaseLost, match="no longer holds"):
        a.check()  # the store says so, whatever a's own deadline says
    assert a.attempt() is Change.LOST and a.current() is None
    b.release()
    assert a.attempt() is Change.ACQUIRED and a.current() == Fence(LEADER_LEASE, "a", 3)


def test_an_ex_leader_never_applies_a_step(store: SqlStore, tmp_path: Path) -> None:
    """The Remediation Agent asks the lease right before a step: after a takeover, the
    approved action stays unapplied for the new leader to run."""
    webhook = Playbook.model_validate(
        {
            "name": "call-ops",
            "match": {"faults": ["tool_rate_limit"]},
            "steps": [{"id": "call", "action": "http", "call": {"url": "http://ops.test/x"}}],
        }
    )
    inc = incident("inc-h", NOW)
    store.put_incident(inc.incident)
    h = Hypothesis(component="tool:crm", fault="tool_rate_limit", confidence=0.95)
    store.put_hypotheses("inc-h", [h], NOW)
    a = LeaderLease(store, "a", 60)
    assert a.attempt() is Change.ACQUIRED
    executor = FakeExecutor()
    s = Settings(remediation=RemediationSettings(config_repo="config"), base_dir=tmp_path)
    agent = RemediationAgent(
        s,
        store.fenced(a.current),
        executor,
        MemoryNotifier(),
        FakeClock(NOW),
        playbooks=[webhook],
        fence=a.check,
    )
    store.release_lease(LEADER_LEASE, "a", 1)
    store.acquire_lease(LEADER_LEASE, "b", 60)  # b took over while a was paused
    with pytest.raises(LeaseLost):
        agent.run_once([inc], {}, NOW)
    assert executor.calls == []
    assert store.actions() == []  # not even proposed: the fenced write was refused

    # Proposed and started, then taken over right before its step: the step is not
    # marked under way, so the next leader sends it (once), not "outcome unknown".
    store.release_lease(LEADER_LEASE, "b", 2)
    assert a.attempt() is Change.ACQUIRED  # epoch 3

    def taken_over() -> None:
        raise LeaseLost("taken over")

    agent.fence = taken_over
    with pytest.raises(LeaseLost):
        agent.run_once([inc], {}, NOW)
    (record,) = store.actions()
    assert (record.state, record.running_step, executor.calls) == (ActionState.RUNNING, None, [])
    agent.fence = a.check
    assert agent.run_once([inc], {}, NOW).applied == ["inc-h/call-ops"]
    assert [c.key for c in executor.calls] == ["inc-h/call-ops/call"]


# --- settings ---------------------------------------------------------------------------


def test_cluster_settings_derive_the_lease_and_refuse_a_slow_renewal() -> None:
    c = ClusterSettings()
    assert (c.takeover_seconds, c.renew_interval, c.lease_seconds) == (30.0, 5.0, 25.0)
    c = ClusterSettings(takeover_seconds=9, renew_seconds=3)
    assert c.lease_seconds == 6
    with pytest.raises(ValueError, match=r"renew_seconds \(4\.0\).*takeover_seconds \(9\.0\)"):
        ClusterSettings(takeover_seconds=9.0, renew_seconds=4.0)
    dumped = json.loads(Settings().model_dump_json())["cluster"]
    assert dumped == {"replica_id": "", "takeover_seconds": 30.0, "renew_seconds": 0.0}


# --- the daemon ---------------------------------------------------------------------------


def _role(url: str) -> str:
    return str(httpx.get(url + "/healthz", timeout=10).json()["role"])


def _leader_gauge(url: str) -> float:
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        if family.name == "sentinel_leader":
            return float(family.samples[0].value)
    raise AssertionError("no sentinel_leader on /metrics")


def test_a_daemon_stopped_gracefully_hands_the_lease_over_at_once(tmp_path: Path) -> None:
    """Two daemons on one SQLite store: one leads, the other follows; the leader's
    graceful stop releases the lease, so the follower leads at its next attempt, long
    before the 60 s lease would have expired."""
    url = "sqlite:///" + str(tmp_path / "shared.db")

    def settings(name: str) -> Settings:
        cluster = {"replica_id": name, "takeover_seconds": 60.0, "renew_seconds": 0.2}
        return make_settings(tmp_path, url, cluster=cluster, ingest={"writer_process": False})

    with contextlib.ExitStack() as a_stack:
        a = a_stack.enter_context(running_daemon(settings("a")))
        assert httpx.get(a.url + "/healthz", timeout=10).json() == {
            "status": "ok",
            "role": "leader",
            "replica": "a",
        }
        with running_daemon(settings("b")) as b:
            assert (_role(b.url), _leader_gauge(a.url), _leader_gauge(b.url)) == (
                "follower",
                1.0,
                0.0,
            )
            a_stack.close()  # a stops gracefully (SIGTERM's path)
            for _ in range(200):  # at most 20 s: a third of the lease
                if _role(b.url) == "leader":
                    break
                time.sleep(0.1)
            assert (_role(b.url), _leader_gauge(b.url)) == ("leader", 1.0)
            lease = b.store.lease(LEADER_LEASE)
            assert lease is not None and (lease.holder, lease.epoch) == ("b", 2)
