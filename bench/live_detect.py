"""Live detection delay: a real daemon (SQLite, its OTLP receiver, the Metric Agent on its
default 30 s interval) watches the simulator's live mode, and the delay from the fault's
start to the incident being opened is measured, in seconds and in detection intervals.

How it measures:
- each case is one `FaultSpec` played by `sentinel.sim.live.LiveRun` against a daemon
  started in this process (`sentinel.daemon.daemon_thread`); both share one
  `ScaledClock`, so a 50-minute window is lived in 50/speed minutes. Every trace is kept
  (`sample_ratio=1.0`): the daemon has no Prometheus here, spans are all it sees;
- spans are exported once ended, every 5 simulated seconds (the OpenTelemetry SDK's
  default batch delay), as protobuf OTLP/HTTP;
- the daemon's store is polled; the delay is the first incident's `opened_at` minus the
  truth's `fault_start` (clock seconds). An incident opened before the fault is counted
  as a false incident; a case with none within `--give-up` minutes counts as missed;
- the figure is the median delay over all the cases, against the target of 2 intervals;
  a missed case counts as later than any detected one (before session 10 the median
  was taken over the detected cases alone).
  At speed S every real second the machine loses is S clock seconds: spans the receiver
  has not stored by the time a run reads them (the ingest lag allows 5 clock seconds,
  0.25 real s at 20x), or a run the scheduler starts late. The length of the run itself
  does not count: an incident is opened at the clock time its run started. So the speed
  is kept modest, and the machine quiet.

`--replay` measures the same cases without a daemon or a clock: each is simulated with
full traces, its metric samples dropped (the live daemon here sees spans only), and
replayed step by step (`sentinel.incidents.replay_case`), and the delay is
the step that opened the first incident plus the ingest lag, which is when a live run
aligned on the step grid (as the daemon's is) would judge it. Where in a step the fault
falls decides how soon it shows; the replay plays each case at `--phases` starts spread
over one step (default 5) and takes the median over every (case, start). Live, round r
of `--rounds` R waits for the clock second that puts the fault where the replay's start
r of R does (until session 22 a run started at whatever second the clock showed, and
two rounds put each case's fault at about the same second of its step: one phase
measured twice); `--rounds 5` plays the replay's five phases, run for run. The replay
is the live figure without the machine's timing noise (runs against steps, CPU), in
minutes of wall time: the way to compare detector changes; the live run is the
measurement. Until session 11
the replay played each case at the simulator's default start only (one phase) and with
its metric samples: 53.5 s, where five phases give 69.0 s and five phases on spans alone
92.5 s (the defaults of session 10). Spans alone and five phases match the live runs.

Usage: `.venv/bin/python bench/live_detect.py [--speed 20] [--cases 8] [--rounds 1]
[--replay [--phases 5]]`
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from detect import simulate  # the spans-only case, as bench/detect.py --spans-only builds it
from sentinel.cases import FaultKind
from sentinel.clock import ScaledClock
from sentinel.daemon import daemon_thread
from sentinel.incidents import replay_case
from sentinel.observability import configure_logging
from sentinel.settings import DetectionSettings, PricingSettings, Settings
from sentinel.sim import FaultSpec, Magnitude, Topology, plan_fault
from sentinel.sim.live import LiveReport, LiveRun

CASES = [
    FaultSpec(Topology.SUPPORT, FaultKind.TOOL_LATENCY, seed=11),
    FaultSpec(Topology.SUPPORT, FaultKind.MODEL_PROVIDER_ERRORS, seed=12),
    FaultSpec(Topology.RAG, FaultKind.RETRIEVAL_DEGRADATION, seed=13),
    FaultSpec(Topology.MULTI_AGENT, FaultKind.TOOL_ERRORS, seed=14),
    FaultSpec(Topology.SUPPORT, FaultKind.PROMPT_REGRESSION, seed=15),
    FaultSpec(Topology.RAG, FaultKind.SERVICE_LATENCY, seed=16),
    FaultSpec(Topology.MULTI_AGENT, FaultKind.MODEL_PROVIDER_LATENCY, seed=17),
    FaultSpec(Topology.SUPPORT, FaultKind.TOOL_RATE_LIMIT, seed=18, magnitude=Magnitude.SUBTLE),
]


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fault_offset(spec: FaultSpec) -> float:
    """Seconds from the start of ``spec``'s window to its fault (the simulator's plan)."""
    return plan_fault(spec, random.Random(spec.seed)).fault_start


def fault_phase(spec: FaultSpec, step: float, shift: timedelta = timedelta(0)) -> float:
    """Where in its step (seconds after the step's start, on the epoch's grid) the fault
    of ``spec`` started ``shift`` after its default start falls."""
    return (spec.start.timestamp() + shift.total_seconds() + fault_offset(spec)) % step


def wait_for_phase(clock: ScaledClock, offset: float, phase: float, step: float) -> None:
    """Sleep until a case whose fault comes ``offset`` seconds after its start, started
    at the clock's next whole second, would put its fault ``phase`` seconds into a step:
    a run then plays the fault where a replayed phase does, instead of wherever the wall
    clock happens to stand."""
    now = clock.now().replace(microsecond=0) + timedelta(seconds=1)
    wait = (phase - (now.timestamp() + offset)) % step
    target = now + timedelta(seconds=wait)
    while clock.now() < target:
        time.sleep(0.01)


def run_case(
    spec: FaultSpec, speed: float, give_up: timedelta, phase: float | None = None
) -> tuple[float | None, int, float]:
    """(delay in clock seconds or None if missed, false incidents before the fault, the
    fault's phase in its step). ``phase``: where in a step to put the fault (else
    wherever the clock stands when the case starts)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.model_validate_json(
            json.dumps(
                {
                    "server": {"port": 0},
                    "store": {"url": f"sqlite:///{Path(tmp) / 'sentinel.db'}"},
                    "logging": {"level": "warning"},
                    "base_dir": tmp,
                }
            )
        )
        configure_logging(settings.logging)
        origin = datetime.now(UTC).replace(microsecond=0)
        clock = ScaledClock(origin, speed)
        spec = replace(spec, sample_ratio=1.0)
        step = settings.detection.step_seconds
        with daemon_thread(settings, clock) as d:
            if phase is not None:
                wait_for_phase(clock, fault_offset(spec), phase, step)
            live = LiveRun(spec, clock, d.url, export_interval=5.0 / speed)
            fault = live.truth.fault_start
            result: list[LiveReport] = []
            runner = threading.Thread(target=lambda: result.append(live.run()), daemon=True)
            runner.start()
            delay: float | None = None
            false = 0
            try:
                while runner.is_alive() and clock.now() < fault + give_up:
                    incidents = d.store.incidents()
                    false = sum(1 for i in incidents if i.opened_at < fault)
                    after = sorted(i.opened_at for i in incidents if i.opened_at >= fault)
                    if after:
                        delay = (after[0] - fault).total_seconds()
                        break
                    time.sleep(0.05)
            finally:
                live.stop()
                runner.join(60)
        return delay, false, fault.timestamp() % step


def replay_delay(
    spec: FaultSpec, det: DetectionSettings, shift: timedelta = timedelta(0)
) -> tuple[float | None, int]:
    """(delay in seconds or None if missed, false incidents before the fault) of the case
    replayed with full traces, started ``shift`` after its default start, as a live run
    on the step grid would see it."""
    # The live daemon here has no Prometheus: spans are all it sees, so the replay drops
    # the case's metric samples too (their SLIs win where both measure one, they count
    # every request, and some faults show on them a step or more sooner).
    case = simulate(replace(spec, start=spec.start + shift), spans_only=True)
    assert case.truth is not None
    fault = case.truth.fault_start
    incidents = replay_case(case, det, PricingSettings())
    false = sum(1 for i in incidents if i.incident.opened_at < fault)
    after = sorted(i.incident.opened_at for i in incidents if i.incident.opened_at >= fault)
    if not after:
        return None, false
    return (after[0] - fault).total_seconds() + det.ingest_lag_seconds, false


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--speed", type=float, default=20.0, help="clock seconds per real second")
    ap.add_argument("--cases", type=int, default=len(CASES))
    ap.add_argument("--give-up", type=float, default=10.0, help="minutes after the fault")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="live: play every case this many times, round r with its fault where the "
        "replay's start r of --rounds puts it in a step (--rounds 5: the replay's 5 "
        "phases); the median is over every run",
    )
    ap.add_argument(
        "--replay", action="store_true", help="replay the cases instead of running them live"
    )
    ap.add_argument(
        "--phases",
        type=int,
        default=5,
        help="with --replay: starts per case, spread over one step (the fault's phase)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a [detection] setting (JSON value; with --replay only)",
    )
    args = ap.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    if overrides and not args.replay:
        ap.error("--set works with --replay only (the live daemon reads its defaults)")
    det = DetectionSettings.model_validate(overrides)
    interval = det.interval_seconds
    if args.phases < 1 or args.rounds < 1:
        ap.error(f"--phases and --rounds must be at least 1, got {args.phases}, {args.rounds}")
    shifts = [
        timedelta(seconds=int(i * det.step_seconds / args.phases)) for i in range(args.phases)
    ]
    if args.replay:
        say(
            f"replayed detection delay (no daemon): full traces, spans only (no metric "
            f"samples, as live), step {det.step_seconds:g} s, "
            f"judged at each step's end + {det.ingest_lag_seconds:g} s ingest lag; each case "
            f"started at +{', +'.join(f'{x.total_seconds():g}' for x in shifts)} s"
            + (f"; overrides {overrides}" if overrides else "")
        )
    else:
        say(
            f"live detection delay: speed x{args.speed:g}, Metric Agent every {interval:g} s "
            f"(clock), spans only (every trace kept), OTLP export every 5 s (clock)"
        )
    delays: list[float] = []
    missed = false_total = 0
    t = time.perf_counter()
    for spec in CASES[: args.cases]:
        name = f"{spec.topology.value}/{spec.fault.value}/{spec.magnitude.value}"
        if args.replay:
            found = [replay_delay(spec, det, shift) for shift in shifts]
            false = sum(f for _, f in found)
            got = [d for d, _ in found if d is not None]
            missed += len(found) - len(got)
            delays += got
            shown = ", ".join("missed" if d is None else f"{d:.0f}" for d, _ in found)
            say(f"  {name:<50} opened after the fault: {shown} s")
        else:
            false = 0
            for r in range(args.rounds):
                shift = timedelta(seconds=r * det.step_seconds / args.rounds)
                want = fault_phase(spec, det.step_seconds, shift)
                delay, f, got = run_case(spec, args.speed, timedelta(minutes=args.give_up), want)
                false += f
                at = f"fault {got:4.1f} s into its step"
                if delay is None:
                    missed += 1
                    say(f"  {name:<50} {at}: missed (no incident within {args.give_up:g} min)")
                else:
                    delays.append(delay)
                    n = delay / interval
                    say(f"  {name:<50} {at}: opened {delay:6.1f} s after ({n:.2f} intervals)")
        false_total += false
        if false:
            say(f"    {false} incident(s) opened before the fault")
    say("")
    if delays:
        # A missed case is later than any detected one: it counts in the median as
        # infinitely late, never as absent (that would flatter a detector that misses).
        med = statistics.median([*delays, *[math.inf] * missed])
        shown = (
            "over the give-up time"
            if math.isinf(med)
            else f"{med:.1f} s = {med / interval:.2f} intervals"
        )
        say(
            f"median delay fault -> incident over all {len(delays) + missed} runs (a miss "
            f"counts as later than any): {shown} (target <= 2); "
            f"min {min(delays):.1f} s, max {max(delays):.1f} s; "
            f"{len(delays)} detected, {missed} missed, {false_total} false before the fault"
        )
        if missed:
            alone = statistics.median(delays)
            say(
                f"  (over the {len(delays)} detected alone: {alone:.1f} s = "
                f"{alone / interval:.2f} intervals)"
            )
    say(f"wall time {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
