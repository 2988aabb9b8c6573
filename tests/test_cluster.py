"""Two sentinel daemons as real processes on one real PostgreSQL, one real git remote and
the bundled playbooks; the leader is SIGKILLed mid-incident and during an action, and the
follower finishes the incident with every action applied exactly once.

The incident is seeded as the Metric and Root Cause Agents persist one (opened, with its
lifecycle event; diagnosed at 0.95 confidence, blaming a prompt commit), so that the test
controls the moment of the kill. The daemons run on an accelerated clock (60x, shared
through a wall-time anchor), so the rollback's 5-minute verification and the incident's
resolution take seconds; the test feeds healthy spans through a real OTel SDK exporter
once the fix is out. Each replica is ``sentinel.daemon.run`` in its own process (what
``sentinel run`` calls, with a ``ScaledClock`` instead of the system clock).

What must not live here: the lease's own contract (``test_lease.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from sentinel.adapters.db import LEADER_LEASE, SqlStore, open_store
from sentinel.clock import ScaledClock
from sentinel.incidents import IncidentStatus
from sentinel.remediation import ActionState
from tests.gitrepos import git
from tests.ports import free_port
from tests.test_remediation_agent import PROMPT_GOOD, Remote, make_remote, seed_incident

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[1]
SPEED = 60.0
ACTION = "rollback-bad-change"
TRAILER = "/rollback-bad-change/rollback"
# Bounds of the waits below, in real seconds: each is far more than its step needs.
START_S = 60.0
STEP_S = 45.0


def serve_replica(config: str, origin: str, wall0: str) -> None:
    """Run in a child process: one replica on the clock the test shares with it."""
    from sentinel import daemon
    from sentinel.settings import load_settings

    at = datetime.fromisoformat(origin) + timedelta(seconds=(time.time() - float(wall0)) * SPEED)
    daemon.run(load_settings(Path(config)), ScaledClock(at, SPEED))


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def role(self) -> str | None:
        try:
            return str(httpx.get(self.url + "/healthz", timeout=2).json()["role"])
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    def events(self) -> list[dict[str, object]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)  # the process only: its git children live on
        self.proc.wait(10)


@dataclass
class Cluster:
    root: Path
    store: SqlStore
    remote: Remote
    clock: ScaledClock
    origin: datetime
    wall0: float
    replicas: list[Replica]

    def start(self, name: str) -> Replica:
        port = free_port()
        config = self.root / f"{name}.toml"
        config.write_text(
            f"[server]\nport = {port}\n"
            f'[store]\nurl = "{self.store.engine.url.render_as_string(hide_password=False)}"\n'
            f'[cluster]\nreplica_id = "{name}"\ntakeover_seconds = 3.0\nrenew_seconds = 0.5\n'
            "[ingest]\nwriter_process = false\n"
            '[logging]\nformat = "json"\n'
            "[detection]\nresolve_minutes = 5.0\n"
            "[changes]\npoll_seconds = 300.0\n"
            f'[[changes.repos]]\nname = "agent-config"\nurl = "{self.remote.path}"\n'
            f'[remediation]\nconfig_repo = "agent-config"\nworkdir = "{name}-gitops"\n'
            f'playbooks_dir = "{self.playbooks()}"\n'
            '[learning]\narchive_dir = ""\n'
        )
        log = self.root / f"{name}.log"
        code = (
            "import sys; from tests.test_cluster import serve_replica; serve_replica(*sys.argv[1:])"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", code, str(config), self.origin.isoformat(), str(self.wall0)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )
        replica = Replica(name, proc, f"http://127.0.0.1:{port}", log)
        self.replicas.append(replica)
        wait_for(lambda: replica.role() is not None, START_S, f"{name} to serve", replica)
        return replica

    def playbooks(self) -> Path:
        """The bundled rollback playbook, its verification window widened from 15 to 60
        clock minutes: a replica starting on a busy machine takes several seconds, which
        are minutes at 60x."""
        folder = self.root / "playbooks"
        if not folder.exists():
            folder.mkdir()
            text = (ROOT / "playbooks" / f"{ACTION}.yaml").read_text()
            assert "window_minutes: 15\n  hold_minutes: 5" in text
            text = text.replace(
                "window_minutes: 15\n  hold_minutes: 5", "window_minutes: 60\n  hold_minutes: 3"
            )
            (folder / f"{ACTION}.yaml").write_text(text)
        return folder

    def action(self) -> ActionState | None:
        records = self.store.actions()
        return records[0].state if records else None

    def reverts(self) -> int:
        return sum(TRAILER in m for m in self.remote.messages())


def wait_for(done: Callable[[], bool], bound: float, what: str, *watch: Replica) -> None:
    """Poll ``done`` every 0.1 s, at most ``bound`` seconds (a bound, not a figure)."""
    for _ in range(int(bound / 0.1)):
        if done():
            return
        for r in watch:
            assert r.proc.poll() is None or r.proc.returncode == -signal.SIGKILL, (
                f"{r.name} exited with {r.proc.returncode}:\n{r.log.read_text()[-3000:]}"
            )
        time.sleep(0.1)
    logs = "\n".join(f"--- {r.name}\n{r.log.read_text()[-4000:]}" for r in watch)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str) -> Iterator[Cluster]:
    origin = datetime.now(UTC).replace(microsecond=0)
    wall0 = time.time()
    clock = ScaledClock(origin, SPEED)
    remote = make_remote(tmp_path)
    store = open_store(postgres_url, clock)
    c = Cluster(tmp_path, store, remote, clock, origin, wall0, [])
    try:
        yield c
    finally:
        for r in c.replicas:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.proc.pid, signal.SIGKILL)  # the replica and any git child
            r.proc.wait(10)
        store.close()


@contextlib.contextmanager
def healthy_spans(c: Cluster, replica: Replica) -> Iterator[None]:
    """The support agent answering in 0.5 s (its baseline was 1.0 s), sent through a real
    OTel SDK exporter to ``replica``, stamped on the shared clock, until the block ends."""
    provider = TracerProvider(resource=Resource.create({"service.name": "support"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(replica.url + "/v1/traces")))
    tracer = provider.get_tracer("test_cluster")
    stop = threading.Event()

    def feed() -> None:
        for _ in range(3000):  # 5 minutes at most
            if stop.wait(0.1):
                return
            end = c.clock.now()
            for i in range(3):
                t1 = int((end - timedelta(seconds=i)).timestamp() * 1e9)
                span = tracer.start_span(
                    "invoke_agent support-agent",
                    start_time=t1 - 500_000_000,
                    attributes={
                        "gen_ai.operation.name": "invoke_agent",
                        "gen_ai.agent.name": "support-agent",
                    },
                )
                span.end(end_time=t1)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        provider.shutdown()


def assert_finished_once(c: Cluster, leader: Replica, follower: Replica) -> None:
    """The follower finished the incident; everything happened exactly once."""
    (incident,) = c.store.incidents()
    assert incident.status is IncidentStatus.RESOLVED
    (record,) = c.store.actions()
    assert record.state is ActionState.VERIFIED
    audit = [e.action for e in c.store.audit(incident.id)]
    assert audit.count("incident_opened") == 1
    assert audit.count("action_proposed") == 1
    assert audit.count("action_applied") == 1
    assert audit.count("action_verified") == 1
    assert c.reverts() == 1
    assert c.remote.show("prompts/support.md") == PROMPT_GOOD
    lease = c.store.lease(LEADER_LEASE)
    assert lease is not None and lease.holder == follower.name and lease.epoch == 2
    acquired = [e for e in follower.events() if e.get("event") == "leader_acquired"]
    assert [(e["replica"], e["epoch"]) for e in acquired] == [(follower.name, 2)]
    resolved = [e for e in c.store.audit(incident.id) if e.action == "incident_resolved"]
    assert len(resolved) == 1


def test_the_follower_finishes_an_incident_whose_leader_was_killed(cluster: Cluster) -> None:
    c = cluster
    # Seeded before the replicas start: a Metric Agent reads the open incidents when
    # its term begins, as a restarted daemon does.
    seed_incident(c.store, c.remote, 0.95, _incident_now(c))
    a = c.start("a")
    wait_for(lambda: a.role() == "leader", START_S, "a to lead", a)
    b = c.start("b")
    assert b.role() == "follower"
    # a rolls the prompt back and waits for the SLIs: killed mid-incident.
    wait_for(lambda: c.action() is ActionState.VERIFYING, STEP_S, "the rollback", a)
    assert c.reverts() == 1
    a.kill()
    wait_for(lambda: b.role() == "leader", STEP_S, "b to take over", b)
    with healthy_spans(c, b):
        wait_for(lambda: c.action() is ActionState.VERIFIED, STEP_S, "verification", b)
        wait_for(
            lambda: c.store.incidents(open_only=True) == [], STEP_S, "the incident to resolve", b
        )
    assert_finished_once(c, a, b)
    verified = [e for e in c.store.audit() if e.action == "action_verified"]
    assert verified[0].actor == "remediation-agent"


def test_a_leader_killed_during_its_push_leaves_the_revert_applied_once(
    cluster: Cluster,
) -> None:
    c = cluster
    hold, release = c.root / "push-started", c.root / "release"
    hook = c.remote.path / "hooks" / "pre-receive"
    # The push waits in the remote until the test says so (at most 60 s: bounded).
    hook.write_text(
        "#!/bin/sh\n"
        f"touch '{hold}'\n"
        "i=0\n"
        f"while [ ! -e '{release}' ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n"
        "cat > /dev/null\n"
    )
    hook.chmod(0o755)
    # Seeded before the replicas start: a Metric Agent reads the open incidents when
    # its term begins, as a restarted daemon does.
    seed_incident(c.store, c.remote, 0.95, _incident_now(c))
    a = c.start("a")
    wait_for(lambda: a.role() == "leader", START_S, "a to lead", a)
    b = c.start("b")
    assert b.role() == "follower"
    wait_for(hold.exists, STEP_S, "a's push", a)
    (record,) = c.store.actions()
    assert record.state is ActionState.RUNNING and record.running_step == "rollback"
    a.kill()  # its git push, a child, is still waiting in the remote's hook
    wait_for(lambda: b.role() == "leader", STEP_S, "b to take over", b)
    release.touch()  # the orphaned push may now land, as b resumes the action
    with healthy_spans(c, b):
        wait_for(lambda: c.action() is ActionState.VERIFIED, STEP_S, "verification", b)
        wait_for(
            lambda: c.store.incidents(open_only=True) == [], STEP_S, "the incident to resolve", b
        )
    assert_finished_once(c, a, b)
    # The step a left under way was a git step: found again by its key or applied by b,
    # never both (one commit with its trailer on the remote, asserted above).
    applied = [e for e in c.store.audit() if e.action == "step_applied"]
    assert [e.detail["step"] for e in applied] == ["rollback", "tell"]
    assert git(c.remote.path, "rev-list", "--count", "main") == "3"


def _incident_now(c: Cluster):  # type: ignore[no-untyped-def]
    from tests.test_remediation_agent import incident

    return incident("inc-1", c.clock.now() - timedelta(minutes=2))
