"""What the Learning Agent's calibration does to the confidence of the top hypothesis,
on held-out archived cases; and how long `sentinel eval` takes per archived case.

How it measures:
- an archive of simulated incidents: `sentinel.sim.suite(N, seed)` (every fault kind, all
  topologies, strong/subtle, abrupt/ramped), each written as a case folder with its
  [truth], as the Learning Agent archives resolved incidents;
- `sentinel.learning.scoring.evaluate_archive`: what `sentinel eval` runs (the engine on
  every case, never reading [truth]; AC@1, AC@3, Avg@5, ECE of the top-1 confidence, 10
  bins), with the engine's default calibration and, for the "miscalibrated" line, a
  deliberately underconfident one (temperature 3, other +3): what a calibration that
  no longer fits the fleet looks like;
- `sentinel.learning.calibration.heldout_calibration`: the calibration refitted on 70 % of
  the cases (split by a hash of the case id), ECE on the other 30 % before and after.

Usage: `.venv/bin/python bench/learning.py [--cases 40] [--seed 2026]`
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from sentinel.cases import write_case
from sentinel.learning.calibration import heldout_calibration
from sentinel.learning.scoring import evaluate_archive
from sentinel.rca.rank import DEFAULT_CALIBRATION, Calibration
from sentinel.settings import Settings
from sentinel.sim import simulate_case, suite


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=40)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp)
        started = time.monotonic()
        for spec in suite(args.cases, args.seed):
            case = simulate_case(spec)
            write_case(case, archive / case.meta.id)
        say(
            f"archive: {args.cases} simulated cases (suite seed {args.seed}), "
            f"written in {time.monotonic() - started:.0f} s"
        )
        for name, cal in (
            ("default calibration", DEFAULT_CALIBRATION),
            ("miscalibrated (temperature 3, other +3)", Calibration(temperature=3.0, other=3.0)),
        ):
            started = time.monotonic()
            report = evaluate_archive(archive, settings, calibration=cal)
            seconds = time.monotonic() - started
            o = report.overall
            say(
                f"\n{name}: eval of {o.n} cases in {seconds:.0f} s "
                f"({seconds / max(1, o.n):.2f} s/case), {len(report.skipped)} skipped"
            )
            say(f"  AC@1 {o.ac1:.3f}  AC@3 {o.ac3:.3f}  Avg@5 {o.avg5:.3f}  ECE {o.ece:.3f}")
            for seed in (0, 1, 2):
                cal_report = heldout_calibration(report.outcomes, seed=seed)
                f = cal_report.fitted
                say(
                    f"  held-out split {seed}: fit on {cal_report.n_train}, ECE on "
                    f"{cal_report.n_heldout} held out {cal_report.ece_before:.3f} -> "
                    f"{cal_report.ece_after:.3f} (temperature {f.temperature:g}, "
                    f"other {f.other:g})"
                )


if __name__ == "__main__":
    main()
