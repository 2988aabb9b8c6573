"""``sentinel demo``: a fault injected into a live simulated fleet, then detected,
diagnosed, ticketed, fixed, verified, resolved and archived by a real daemon on embedded
defaults, shown stage by stage.

``run_demo(options)`` sets up a workspace (a git config repository, SQLite, the playbooks
bundled with sentinel, an archive folder), starts the daemon on its own thread with a
``ScaledClock`` and the fleet (``demo.fleet``) in its own process, waits for the baseline,
injects the scenario's fault, and follows the store until the case is archived. It
returns a ``DemoResult``; the display is a ``Display`` (rich, or plain lines when the
output is not a terminal).

Everything the daemon decides, it decides alone: the demo only injects the fault and,
when a fix needs a person, asks the one at the terminal (or approves with ``--yes``),
through the same approval path as ``sentinel approve``.

What must not live here: the fleet (``demo.fleet``), the stages' logic (``demo.stages``).
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from ruamel.yaml import YAML

from sentinel.agents.approvals import decide_as
from sentinel.agents.tickets import ConsoleSink
from sentinel.clock import ScaledClock
from sentinel.daemon import RunningDaemon, daemon_thread
from sentinel.demo.display import Display, print_summary
from sentinel.demo.fleet import BAD_PROMPT, FleetFault, config_files
from sentinel.demo.processes import FleetProcess, fleet_process, logging_to, prometheus
from sentinel.demo.scenarios import SCENARIOS, Scenario, ScenarioSpec
from sentinel.demo.stages import (
    Snapshot,
    StageState,
    StageView,
    Summary,
    finished,
    progress,
    read_snapshot,
    summarize,
)
from sentinel.errors import DemoError
from sentinel.remediation import ActionState, Gate
from sentinel.settings import (
    ApprovalSettings,
    ChangesSettings,
    DetectionSettings,
    LearningSettings,
    LogFormat,
    LoggingSettings,
    PathMapping,
    RemediationSettings,
    RepoSettings,
    ServerSettings,
    Settings,
    SlackSettings,
    StoreSettings,
    to_toml,
)
from sentinel.telemetry import ChangeKind

__all__ = ["Approve", "DemoOptions", "DemoResult", "Display", "print_summary", "run_demo"]

CONFIG_REPO = "agent-config"
DEVELOPER = ("Dana Developer", "dana@example.com")
POLL_REAL_SECONDS = 0.25


class Approve(StrEnum):
    ASK = "ask"  # ask the person at the terminal
    YES = "yes"  # approve as the demo's user (--yes)
    NO = "no"  # never: the proposal expires


@dataclass(frozen=True, slots=True)
class DemoOptions:
    scenario: Scenario = Scenario.PROMPT_REGRESSION
    speed: float = 30.0
    workspace: Path | None = None  # None: a new temporary folder (kept afterwards)
    approve: Approve = Approve.ASK
    # --slack: the user's settings, whose [slack], [approvals] and secrets are used.
    slack: Settings | None = None
    seed: int = 7
    manual: bool = False  # every fix asks a person (playbooks with allow_auto: false)
    # Clock minutes from the start after which the demo gives up on a stage.
    timeout_minutes: float = 80.0


@dataclass(frozen=True, slots=True)
class DemoResult:
    scenario: ScenarioSpec
    speed: float
    workspace: Path
    snapshot: Snapshot
    stages: tuple[StageView, ...]
    summary: Summary
    wall_seconds: float
    fault_commit: str | None
    timed_out: bool
    interval: float  # the Metric Agent's, in clock seconds

    @property
    def ok(self) -> bool:
        return not self.timed_out and all(
            v.state in (StageState.DONE, StageState.SKIPPED) for v in self.stages
        )


# --- the workspace ----------------------------------------------------------------------


def _git(cwd: Path, *args: str, when: datetime | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    env.update(
        GIT_AUTHOR_NAME=DEVELOPER[0],
        GIT_AUTHOR_EMAIL=DEVELOPER[1],
        GIT_COMMITTER_NAME=DEVELOPER[0],
        GIT_COMMITTER_EMAIL=DEVELOPER[1],
    )
    if when is not None:
        # Dated on the daemon's clock, as every commit of a fleet it watches would be.
        env.update(GIT_AUTHOR_DATE=when.isoformat(), GIT_COMMITTER_DATE=when.isoformat())
    done = subprocess.run(  # fixed arguments, no shell
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise DemoError(f"git {' '.join(args)} in {cwd} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _config_repo(ws: Path, when: datetime) -> Path:
    """The fleet's config repository: a bare "remote" and the developer's clone."""
    remote = ws / "config.git"
    _git(ws, "init", "-q", "--bare", "-b", "main", str(remote))
    dev = ws / "developer"
    dev.mkdir()
    _git(dev, "init", "-q", "-b", "main")
    for path, text in config_files().items():
        f = dev / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    _git(dev, "add", "-A")
    _git(dev, "commit", "-q", "-m", "Support and research agents: first config", when=when)
    _git(dev, "remote", "add", "origin", str(remote))
    _git(dev, "push", "-q", "origin", "main")
    return remote


def _bundled_playbooks() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "playbooks"
        if (candidate / "rollback-bad-change.yaml").is_file():
            return candidate
    raise DemoError(
        f"the bundled playbooks (playbooks/*.yaml) were not found above {here}; "
        "run the demo from a checkout of sentinel"
    )


def _playbooks(ws: Path, manual: bool) -> Path:
    """The bundled playbooks; with ``manual``, copies in the workspace whose gates say
    ``allow_auto: false``, so that every fix asks a person."""
    bundled = _bundled_playbooks()
    if not manual:
        return bundled
    folder = ws / "playbooks"
    folder.mkdir()
    yaml = YAML()
    for path in sorted(bundled.glob("*.yaml")):
        data = yaml.load(path.read_text())
        data.setdefault("gates", {})["allow_auto"] = False
        with (folder / path.name).open("w") as out:
            yaml.dump(data, out)
    return folder


def demo_settings(ws: Path, remote: Path, options: DemoOptions) -> Settings:
    """Embedded defaults in the workspace. Intervals the daemon counts in real seconds
    (the change feed's poll) are divided by the speed so that they match the defaults in
    clock time; the ingest lag covers the fleet's exporters (0.1 real s between batches)."""
    speed = options.speed
    user = f"cli:{getpass.getuser()}"
    slack = options.slack
    approvers = (user, *(slack.approvals.users if slack is not None else ()))
    repo = RepoSettings(
        name=CONFIG_REPO,
        url=str(remote),
        paths=(
            PathMapping(
                glob="prompts/support.md",
                component="prompt:support-agent",
                affects=("agent:support-agent",),
                kind=ChangeKind.PROMPT,
            ),
            PathMapping(
                glob="agents.yaml",
                component="config:agents",
                affects=("agent:support-agent", "agent:research-agent"),
                kind=ChangeKind.CONFIG,
            ),
            PathMapping(
                glob="limits.yaml",
                component="config:limits",
                affects=("tool:order_status", "tool:kb_search"),
                kind=ChangeKind.CONFIG,
            ),
        ),
    )
    base = Settings()
    return Settings(
        server=ServerSettings(port=0),
        store=StoreSettings(url=f"sqlite:///{ws / 'sentinel.db'}"),
        changes=ChangesSettings(
            poll_seconds=base.changes.poll_seconds / speed,
            workdir=str(ws / "repos"),
            repos=(repo,),
        ),
        detection=DetectionSettings(ingest_lag_seconds=max(5.0, 0.3 * speed)),
        remediation=RemediationSettings(
            playbooks_dir=str(_playbooks(ws, options.manual)),
            config_repo=CONFIG_REPO,
            workdir=str(ws / "gitops"),
        ),
        approvals=ApprovalSettings(
            users=approvers,
            slack_groups=slack.approvals.slack_groups if slack is not None else (),
        ),
        learning=LearningSettings(archive_dir=str(ws / "archive")),
        # Without Slack, tickets go to a file: delivered every 2 clock seconds.
        slack=slack.slack
        if slack is not None
        else SlackSettings(deliver_seconds=max(0.05, base.slack.deliver_seconds / speed)),
        secrets=slack.secrets if slack is not None else base.secrets,
        logging=LoggingSettings(format=LogFormat.CONSOLE),
        base_dir=ws,
    )


def _write_config(ws: Path, s: Settings) -> Path:
    """The demo's settings as a config file, for looking around afterwards
    (``sentinel incident ID --config``). Secrets stay out: they come from the environment."""
    path = ws / "sentinel.toml"
    path.write_text(
        "# Written by `sentinel demo`: the settings its daemon ran with.\n"
        + to_toml(s.model_dump(mode="json", exclude={"secrets", "base_dir"}))
    )
    return path


# --- the run ----------------------------------------------------------------------------


@dataclass
class _State:
    baseline_at: datetime | None = None
    fault_commit: str | None = None
    asked: set[str] = field(default_factory=set)
    healed: bool = False


def _inject(spec: ScenarioSpec, fleet: FleetProcess, ws: Path, clock: ScaledClock) -> str | None:
    """Inject the scenario's fault now; the commit it made, if any."""
    if spec.scenario is Scenario.PROMPT_REGRESSION:
        dev = ws / "developer"
        (dev / "prompts" / "support.md").write_text(BAD_PROMPT)
        _git(dev, "commit", "-q", "-am", "Support agent: warmer tone on refunds", when=clock.now())
        _git(dev, "push", "-q", "origin", "main")
        return _git(dev, "rev-parse", "HEAD")
    fleet.fault(FleetFault(spec.scenario.value), on=True)
    return None


def _gauge(running: RunningDaemon, verdict: str) -> int:
    v = running.daemon.metrics.registry.get_sample_value(
        "sentinel_slis_tracked", {"verdict": verdict}
    )
    return int(v or 0)


def _maybe_approve(
    running: RunningDaemon,
    snap: Snapshot,
    options: DemoOptions,
    state: _State,
    display: Display,
    approver: str,
) -> None:
    a = snap.action
    if a is None or a.gate is not Gate.APPROVE or a.state is not ActionState.PROPOSED:
        return
    if a.key in state.asked:
        return
    state.asked.add(a.key)
    h = a.hypothesis
    what = f"{a.playbook} for {h.component} ({h.fault}, {h.confidence:.0%})"
    if options.approve is Approve.NO or (options.approve is Approve.ASK and not display.can_ask):
        display.say(
            f"  {what} needs approval: `sentinel approve {a.incident_id} --config "
            f"{running.daemon.settings.base_dir / 'sentinel.toml'}` (or run the demo with --yes)",
            "yellow",
        )
        return
    if options.approve is Approve.ASK:
        expire = running.daemon.settings.approvals.expire_minutes * 60 / options.speed
        yes = display.confirm(f"Approve {what}? It expires in about {expire:.0f} s. [y/N] ")
    else:
        yes = True
    store = running.store
    outcome = decide_as(
        store,
        running.daemon.settings.approvals,
        a.key,
        approve=yes,
        actor=approver,
        now=store.clock.now(),
        reason="" if yes else "declined at the demo's prompt",
    )
    display.say(f"  {outcome.message}", "green" if yes else "yellow")


def run_demo(options: DemoOptions, display: Display | None = None) -> DemoResult:
    """Run one scenario end to end; see the module docstring. Raises ``DemoError`` when
    the workspace, the fleet or the daemon cannot be set up, or the fleet dies."""
    d = display or Display()
    spec = SCENARIOS[options.scenario]
    if not options.speed > 0:
        raise DemoError(f"--speed must be positive, got {options.speed!r}")
    if shutil.which("git") is None:
        raise DemoError("the demo needs git (its config repository is a git repository)")
    if options.workspace is None:
        ws = Path(tempfile.mkdtemp(prefix="sentinel-demo-"))
    else:
        ws = options.workspace
        ws.mkdir(parents=True, exist_ok=True)
        if any(ws.iterdir()):
            raise DemoError(f"the demo workspace {ws} is not empty; give a new folder")
    wall0 = time.monotonic()
    origin = datetime.now(UTC).replace(microsecond=0)
    wall0_ns = time.time_ns()
    clock = ScaledClock(origin, options.speed)
    remote = _config_repo(ws, clock.now() - timedelta(hours=1))
    s = demo_settings(ws, remote, options)
    _write_config(ws, s)
    approver = s.approvals.users[0]  # the demo's own user (demo_settings puts it first)
    step = s.detection.step_seconds
    tickets = (ws / "tickets.txt").open("a")
    sink = None if s.slack.channel else ConsoleSink(tickets)
    where = f"Slack channel {s.slack.channel}" if s.slack.channel else f"console ({tickets.name})"
    d.say(
        f"sentinel demo: {spec.scenario.value} at {options.speed:g}x "
        f"(a clock minute is {60 / options.speed:.1f} s); workspace {ws}",
        "bold",
    )
    d.say(f"  fault to come: {spec.what}")
    state = _State()
    snap = Snapshot(now=clock.now())
    timed_out = False
    try:
        with (
            logging_to(ws / "sentinel.log", s.logging),
            daemon_thread(s, clock, ticket_sink=sink) as running,
            prometheus(ws, running.url) as prom,
            fleet_process(
                ws, f"{running.url}/v1/traces", remote, clock, wall0_ns, options.seed
            ) as fleet,
        ):
            d.say(
                f"  daemon {running.url} (SQLite, OTLP receiver, the bundled playbooks); "
                f"tickets to {where}; logs in {ws / 'sentinel.log'}"
            )
            d.say(
                "  fleet: support-agent (gpt-4o; order_status -> orders-api, kb_search -> "
                "kb-api) and research-agent (gpt-4o-mini; kb_search), "
                f"config from {remote}"
            )
            d.say(
                f"  Prometheus {prom} scrapes the daemon's /metrics"
                if prom
                else "  Prometheus: not installed (optional)"
            )
            deadline = origin + timedelta(minutes=options.timeout_minutes)
            while True:
                fleet.check()
                now = clock.now()
                judged, lacking = _gauge(running, "judged"), _gauge(running, "not_enough_data")
                # Tail latencies of thin traffic may never have enough observations:
                # the baseline is learned once the Metric Agent judges any series.
                if state.baseline_at is None and judged > 0:
                    state.baseline_at = now
                if (
                    snap.fault_start is None
                    and state.baseline_at is not None
                    and now >= state.baseline_at + timedelta(seconds=step)
                ):
                    state.fault_commit = _inject(spec, fleet, ws, clock)
                    snap = Snapshot(now=now, fault_start=clock.now())
                    commit = f" (commit {state.fault_commit[:7]})" if state.fault_commit else ""
                    d.say(f"  fault injected at {clock.now():%H:%M:%S}{commit}", "bold yellow")
                if (
                    spec.heals_after_minutes is not None
                    and snap.fault_start is not None
                    and not state.healed
                    and now >= snap.fault_start + timedelta(minutes=spec.heals_after_minutes)
                ):
                    fleet.fault(FleetFault(spec.scenario.value), on=False)
                    state.healed = True
                    d.say(f"  {spec.root_cause}'s team fixed it at {now:%H:%M:%S}", "yellow")
                snap = read_snapshot(
                    running.store,
                    now,
                    previous=snap,
                    baseline_at=state.baseline_at,
                    judged=judged,
                    ticket_where=where,
                )
                _maybe_approve(running, snap, options, state, d, approver)
                views = progress(snap)
                st = fleet.status()
                footer = (
                    f"clock {now:%H:%M:%S} ({options.speed:g}x) · SLI series: {judged} judged, "
                    f"{lacking} without enough data · fleet: {st.get('runs', 0):,} runs, "
                    f"{st.get('failed', 0):,} failed, models {st.get('models', {})}"
                    f", pace {st.get('pace', 1.0):.2f} of the clock"
                )
                d.update(views, snap.fault_start, footer)
                if snap.fault_start is not None and finished(views):
                    break
                if now > deadline:
                    timed_out = True
                    break
                time.sleep(POLL_REAL_SECONDS)
    finally:
        d.close()
        tickets.close()
    views = progress(snap)
    result = DemoResult(
        scenario=spec,
        speed=options.speed,
        workspace=ws,
        snapshot=snap,
        stages=views,
        summary=summarize(snap, spec.root_cause),
        wall_seconds=time.monotonic() - wall0,
        fault_commit=state.fault_commit,
        timed_out=timed_out,
        interval=s.detection.interval_seconds,
    )
    return result
