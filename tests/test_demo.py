"""``sentinel demo`` end to end, and its parts.

The end-to-end tests run the real demo at 30x: the fleet's own process (pydantic-ai
agents on ``FunctionModel``, tool HTTP services, a git config repository), a real daemon
(SQLite, its OTLP receiver, the bundled playbooks), the fault, and the whole loop up to
the archived case. They check the outcome in the store, the git remote and the archive,
not in the demo's own report.

What must not live here: the agents' own behaviour (their tests).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rich.console import Console
from typer.testing import CliRunner

from sentinel.adapters.db import open_store
from sentinel.agents.remediation import RemediationEvent
from sentinel.cases import read_case
from sentinel.cli import app
from sentinel.clock import FakeClock
from sentinel.demo.fleet import (
    BAD_PROMPT,
    GOOD_PROMPT,
    Bucket,
    Pace,
    config_files,
    parse_config,
)
from sentinel.demo.run import (
    Approve,
    DemoOptions,
    DemoResult,
    Display,
    demo_settings,
    print_summary,
    run_demo,
)
from sentinel.demo.scenarios import Scenario
from sentinel.demo.stages import Snapshot, Stage, StageState, finished, progress
from sentinel.demo.timing import SPAN_OVERHEAD_NS, TimedExporter, TraceClocks, VirtualTimes, Warp
from sentinel.incidents import Incident, IncidentStatus
from sentinel.remediation import ActionState
from sentinel.settings import Settings
from tests.gitrepos import git
from tests.orphans import gone_within, kill_running, parent, read_lines, running

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


# --- end to end ---------------------------------------------------------------------------


def _run(tmp_path: Path, scenario: Scenario, **options: object) -> tuple[DemoResult, str]:
    out = io.StringIO()
    display = Display(Console(file=out, width=250, force_terminal=False), ask=io.StringIO("y\n"))
    result = run_demo(
        DemoOptions(scenario=scenario, speed=30.0, workspace=tmp_path / "ws", **options),  # type: ignore[arg-type]
        display,
    )
    print_summary(display, result)
    return result, out.getvalue()


def _remote_log(result: DemoResult) -> list[str]:
    return git(result.workspace / "config.git", "log", "--format=%s", "main").splitlines()


@pytest.fixture
def alone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A full demo runs a fleet, a daemon and Prometheus at 30x, where a detection
    interval is one real second, and needs about 1.3 of the two cores. Side by side the
    demos have missed their stages (sessions 16 and 18: the rate limit opened 32 clock
    minutes late, on the wrong component; the fleet's quota not slowing with its pace,
    ``demo.fleet.Pace``, was most of that). So they take a lock that every xdist worker
    of the run shares (the run's base temporary folder), and run one after the other.
    (xdist's `--dist loadgroup` would do it, but does not group under pytest 9.2:
    pytest-xdist issue 1386.)"""
    lock = tmp_path_factory.getbasetemp().parent / "full-demo.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


def _check_common(result: DemoResult, text: str) -> None:
    spec = result.scenario
    assert result.ok, text
    assert result.summary.right, text
    assert result.snapshot.false_incidents == (), text
    # The stages, printed in order, each once.
    marks = [line for line in text.splitlines() if line.startswith(("✔", "–", "✘"))]
    assert [m.split(".", 1)[1].split("  ")[0].strip() for m in marks] == [s.value for s in Stage], (
        text
    )
    assert "right" in text
    # Causal order: nothing done about the incident is dated before it opened.
    at = {v.stage: v.at for v in result.stages}
    opened = at[Stage.INCIDENT]
    assert opened is not None, text
    later = (Stage.HYPOTHESES, Stage.APPROVAL, Stage.ACTION, Stage.VERIFICATION, Stage.RESOLVED)
    for stage in later:
        when = at[stage]
        assert when is not None and when >= opened, (stage, text)
    action, verified = at[Stage.ACTION], at[Stage.VERIFICATION]
    assert action is not None and verified is not None and action <= verified, text
    # What the store says, read afresh.
    store = open_store(f"sqlite:///{result.workspace / 'sentinel.db'}", FakeClock(T0))
    try:
        inc = result.snapshot.incident
        assert inc is not None
        stored = store.get_incident(inc.id)
        assert stored is not None and stored.status is IncidentStatus.RESOLVED
        top = store.hypotheses(inc.id)[0]
        assert top.component == spec.root_cause
        (action,) = store.actions(inc.id)  # proposed once, applied once
        assert action.playbook == spec.playbook
        assert action.state is ActionState.VERIFIED
        applied = [e for e in store.audit(inc.id) if e.action == RemediationEvent.APPLIED]
        assert len(applied) == 1
    finally:
        store.close()
    # The case is archived, with the fix's root cause as its (weak) truth.
    case = read_case(Path(result.snapshot.archived_path), with_truth=True)
    assert case.truth is not None
    assert case.truth.root_cause == spec.root_cause
    assert case.spans


@pytest.mark.usefixtures("alone")
def test_the_demo_rolls_a_prompt_regression_back_once_and_archives_it(tmp_path: Path) -> None:
    result, text = _run(tmp_path, Scenario.PROMPT_REGRESSION, approve=Approve.NO)
    _check_common(result, text)
    assert result.fault_commit is not None
    # Exactly one revert of exactly the bad commit, and the prompt is good again.
    log = _remote_log(result)
    reverts = [s for s in log if s.startswith("Revert")]
    assert len(reverts) == 1 and "warmer tone" in reverts[0], log
    assert git(result.workspace / "config.git", "show", "main:prompts/support.md") + "\n" == (
        GOOD_PROMPT
    )
    assert "automatic" in text


@pytest.mark.usefixtures("alone")
def test_the_demo_asks_before_throttling_a_rate_limited_tool(tmp_path: Path) -> None:
    """With --manual every fix needs a person: the demo asks, the answer "y" approves
    it through the same path as `sentinel approve`, and the throttle lands once."""
    result, text = _run(tmp_path, Scenario.TOOL_RATE_LIMIT, approve=Approve.ASK, manual=True)
    _check_common(result, text)
    assert "Approve throttle-rate-limited-tool" in text
    assert result.snapshot.action is not None
    assert (result.snapshot.action.decided_by or "").startswith("cli:")
    throttles = [s for s in _remote_log(result) if s.startswith("Throttle tool:order_status")]
    assert len(throttles) == 1
    limits = yaml.safe_load(git(result.workspace / "config.git", "show", "main:limits.yaml"))
    assert limits["rate_limits"]["tool:order_status"]["requests_per_minute"] == 30


# --- the parts ----------------------------------------------------------------------------


# A demo process that starts the fleet, prints the fleet's pid and waits: what a test
# (or a user's terminal) holds when it is killed outright.
_DEMO_PARENT = """
import sys, time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from sentinel.clock import ScaledClock
from sentinel.demo.processes import fleet_process
from sentinel.demo.run import _config_repo
ws = Path(sys.argv[1])
origin = datetime.now(UTC).replace(microsecond=0)
remote = _config_repo(ws, origin - timedelta(hours=1))
clock = ScaledClock(origin, 30.0)
with fleet_process(ws, "http://127.0.0.1:9/v1/traces", remote, clock, time.time_ns(), 7) as f:
    print(f.proc.pid, flush=True)
    time.sleep(600)
"""


def test_the_fleet_stops_when_the_demo_is_killed_outright(tmp_path: Path) -> None:
    fleet = 0
    with parent(_DEMO_PARENT, str(tmp_path)) as demo:
        try:
            fleet = int(read_lines(demo)[0])
            assert running(fleet)
            demo.kill()  # SIGKILL: no finally runs in the parent
            demo.wait(10)
            assert gone_within(fleet, 20.0), "the fleet outlived the demo that started it"
        finally:
            kill_running(fleet)


_PROMETHEUS_PARENT = """
import sys, time
from pathlib import Path
from sentinel.demo.processes import prometheus
with prometheus(Path(sys.argv[1]), "http://127.0.0.1:9") as url:
    print(url, flush=True)
    time.sleep(600)
"""


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


def test_the_demos_prometheus_stops_when_the_demo_is_killed_outright(tmp_path: Path) -> None:
    """The demo's Prometheus, a binary we do not own, runs under the reaper: a demo killed
    outright (no finally) leaves no Prometheus behind."""
    with parent(_PROMETHEUS_PARENT, str(tmp_path)) as demo:
        try:
            url = read_lines(demo)[0].strip()
            assert url.startswith("http://"), f"no Prometheus ({url!r}): is it installed?"
            assert _answers(url)
            demo.kill()  # SIGKILL: no finally runs in the parent
            demo.wait(10)
            deadline = time.monotonic() + 20.0
            while _answers(url) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not _answers(url), "the demo's Prometheus outlived the demo that started it"
        finally:
            # A Prometheus left by a failure: found by its data folder, under tmp_path.
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                with contextlib.suppress(OSError):
                    if str(tmp_path).encode() in cmdline.read_bytes():
                        kill_running(int(cmdline.parent.name))


def test_spans_are_timed_on_their_trace_clock_not_on_the_machine() -> None:
    """A span lasts what the simulation says it waited (plus 1 ms per boundary), however
    long the machine took; a trace starts at its warped real start; children stay
    inside their parents."""
    warp = Warp.from_origin(T0, wall0_ns=1_000_000_000, speed=30.0)
    clocks = TraceClocks()
    times = VirtualTimes(clocks, warp)
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(times)
    provider.add_span_processor(SimpleSpanProcessor(TimedExporter(memory, times)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("root", start_time=1_000_000_000 + 10**9) as root:
        trace_id = root.get_span_context().trace_id
        with tracer.start_as_current_span("model"):
            clocks.advance(trace_id, 0.8)  # the model's answer took 0.8 clock seconds
        with tracer.start_as_current_span("tool"):
            clocks.advance(trace_id, 0.12)
    assert len(clocks) == 0  # the trace's clock ends with its root
    spans = {s.name: s for s in memory.get_finished_spans()}
    root_s, model, tool = spans["root"], spans["model"], spans["tool"]

    def ns(s: object) -> tuple[int, int]:
        start, end = getattr(s, "start_time"), getattr(s, "end_time")  # noqa: B009
        assert isinstance(start, int) and isinstance(end, int)
        return start, end

    start = warp(1_000_000_000 + 10**9)
    assert start == round(T0.timestamp() * 1e9) + 30 * 10**9  # 1 real s = 30 clock s
    assert ns(root_s)[0] == start + SPAN_OVERHEAD_NS
    assert ns(model)[1] - ns(model)[0] == 800_000_000 + SPAN_OVERHEAD_NS
    assert ns(tool)[1] - ns(tool)[0] == 120_000_000 + SPAN_OVERHEAD_NS
    assert ns(root_s)[0] < ns(model)[0] < ns(model)[1] < ns(tool)[0] < ns(tool)[1]
    assert ns(tool)[1] < ns(root_s)[1]


def test_a_fleet_slower_than_the_clock_slows_its_quotas_by_the_same_share() -> None:
    """On a machine that runs the fleet at three quarters of the clock, orders-api's
    quota admits three quarters of its clock-time figure: the demand, slowed alike,
    stays over the quota by the same share, so the rate-limit fault still refuses calls."""
    pace = Pace(window=60.0)
    assert pace.value == 1.0  # nothing measured yet
    for _ in range(200):  # arrivals asked for 1.2 clock s and took 1.6
        pace.record(1.2, 1.6)
    assert pace.value == pytest.approx(0.75)
    for _ in range(200):  # the machine keeps up again; the slow past fades
        pace.record(1.2, 1.2)
    assert pace.value == pytest.approx(1.0, abs=0.01)
    pace.record(1.2, 1.1)  # a wait that ended early never makes the fleet faster
    assert pace.value <= 1.0

    def admitted(per_minute: float, pace: float) -> int:
        # A call every 0.02 real s (0.6 clock s at 30x), for 20 real s (10 clock minutes).
        bucket = Bucket(per_minute, speed=30.0, now=0.0, burst=1.0)
        return sum(bucket.take(k * 0.02, pace) for k in range(1, 1001))

    # 34 a clock minute, less what the burst cap of 1 wastes between the calls' ticks.
    assert admitted(34.0, 1.0) == pytest.approx(340, rel=0.03)
    assert admitted(34.0, 0.75) == pytest.approx(0.75 * admitted(34.0, 1.0), rel=0.02)


def test_the_fleet_config_names_the_broken_file() -> None:
    files = config_files()
    cfg = parse_config(files, "a" * 40)
    assert cfg.models == {"support-agent": "gpt-4o", "research-agent": "gpt-4o-mini"}
    assert cfg.rate_limits["tool:order_status"] == 600
    assert BAD_PROMPT != GOOD_PROMPT == cfg.prompt
    with pytest.raises(ValueError, match=r"agents\.yaml at aaaaaaa"):
        parse_config({**files, "agents.yaml": "agents: [1, 2]\n"}, "a" * 40)
    with pytest.raises(ValueError, match=r"limits\.yaml at aaaaaaa"):
        parse_config({**files, "limits.yaml": "rate_limits: {t: {rpm: 3}}\n"}, "a" * 40)


def _incident(status: IncidentStatus = IncidentStatus.OPEN) -> Incident:
    return Incident(
        id="inc-1",
        title="t",
        status=status,
        opened_at=T0 + timedelta(minutes=2),
        updated_at=T0,
        resolved_at=T0 + timedelta(minutes=20) if status is IncidentStatus.RESOLVED else None,
        components=("agent:support-agent",),
    )


def test_stages_wait_in_order_and_a_fault_without_a_playbook_skips_the_fix() -> None:
    before = progress(Snapshot(now=T0, judged=0))
    assert [v.state for v in before] == [StageState.WAITING] * 10
    assert not finished(before)
    learned = progress(Snapshot(now=T0, baseline_at=T0, judged=40))
    assert learned[0].state is StageState.DONE and "40 SLI series" in learned[0].detail
    # Resolved with nothing proposed (no playbook matched): the fix stages are skipped,
    # and the demo is finished once the case is archived.
    snap = Snapshot(
        now=T0 + timedelta(minutes=30),
        baseline_at=T0,
        judged=40,
        fault_start=T0,
        incident=_incident(IncidentStatus.RESOLVED),
        ticket_at=T0 + timedelta(minutes=3),
        ticket_where="console",
    )
    views = progress(snap)
    by = {v.stage: v for v in views}
    assert by[Stage.HYPOTHESES].state is StageState.WAITING  # not diagnosed yet
    for s in (Stage.APPROVAL, Stage.ACTION, Stage.VERIFICATION):
        assert by[s].state is StageState.SKIPPED
    assert by[Stage.RESOLVED].state is StageState.DONE
    assert not finished(views)  # not archived yet


def test_the_demo_command_refuses_bad_input_with_a_clear_error(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["demo", "--scenario", "meteor_strike"])
    assert bad.exit_code == 2
    assert "meteor_strike" in bad.output
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    r = runner.invoke(app, ["demo", "--workspace", str(busy)])
    assert r.exit_code == 1
    assert "not empty" in r.output
    assert (busy / "keep.txt").read_text() == "mine"  # nothing touched
    r = runner.invoke(app, ["demo", "--speed", "0", "--workspace", str(tmp_path / "new")])
    assert r.exit_code == 1 and "--speed must be positive" in r.output


def test_with_slack_the_demo_uses_the_users_slack_and_approvers(tmp_path: Path) -> None:
    """--slack: the [slack] section, its secrets and the approvers of the user's config
    go to the demo's daemon; without it, tickets go to a file, delivered on clock time."""
    user = Settings.model_validate_json(  # JSON mode, as a config file is read
        json.dumps(
            {
                "slack": {"channel": "C0DEMO", "mode": "http"},
                "approvals": {"users": ["slack:U1"], "slack_groups": ["S9"]},
                "secrets": {"slack_bot_token": "xoxb-1", "slack_signing_secret": "shh"},
            }
        )
    )
    ws = tmp_path / "ws"
    ws.mkdir()
    s = demo_settings(ws, ws / "config.git", DemoOptions(slack=user, speed=30.0))
    assert s.slack.channel == "C0DEMO" and s.slack.mode.value == "http"
    assert s.secrets.slack_bot_token is not None
    assert s.secrets.slack_bot_token.get_secret_value() == "xoxb-1"
    assert "slack:U1" in s.approvals.users and s.approvals.slack_groups == ("S9",)
    assert any(u.startswith("cli:") for u in s.approvals.users)
    plain = demo_settings(ws, ws / "config.git", DemoOptions(speed=30.0))
    assert plain.slack.channel == ""
    assert plain.slack.deliver_seconds == pytest.approx(2.0 / 30.0)
    assert plain.changes.poll_seconds == pytest.approx(1.0)  # 30 clock seconds
    assert plain.store.url.endswith("ws/sentinel.db")
