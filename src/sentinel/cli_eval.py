"""``sentinel eval ARCHIVE_DIR``: the RCA engine's accuracy and calibration on archived
cases (or any folder of cases with truth), per fault kind, optionally gated on a
baseline report so that a change to sentinel's own configuration can fail CI.
``sentinel.cli`` mounts ``eval_archive`` as the ``eval`` command.

Exit status: 0 when the archive was evaluated and, with ``--baseline``, AC@1 fell by no
more than the tolerance (overall, and per fault kind with at least 3 cases in both);
1 when it fell by more (one line per regression on stderr); 2 when the command could
not do its job (an invalid config, a missing archive folder, a missing or unreadable
baseline file, a baseline file that cannot be written). A bad case in the archive is
never an error: it is listed as skipped, with the reason.

``--json`` prints one JSON document: the report (``EvalReport``: ``format``,
``archive``, ``overall`` and ``by_fault`` (``{n, ac1, ac3, avg5, ece}``), ``skipped``
(``[{case, reason}]``), ``weak``, ``calibration`` (``{temperature, other}``) and
``outcomes`` (``[{case, fault, truth, ranked, top_confidence, scores, weak}]``)), plus
``verdict`` (``{baseline, tolerance, regressions: [str], passed}``) with ``--baseline``
and ``calibration_check`` with ``--calibrate``. The document is itself a valid baseline
file, as is what ``--write-baseline`` writes (the report alone).

What must not live here: scoring or fitting (``sentinel.learning``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from sentinel.cli_common import ConfigOption, case_progress, err, out
from sentinel.cli_common import cli_settings as _settings
from sentinel.cli_common import say as _say
from sentinel.errors import SentinelError
from sentinel.learning.calibration import CalibrationReport, heldout_calibration
from sentinel.learning.scoring import EvalReport, Scores, evaluate_archive, regressions
from sentinel.settings import Settings

__all__ = ["eval_archive"]

# Piped output gets a wide console: rich would otherwise fold the table's cells.

EXIT_REGRESSION = 1
EXIT_USAGE = 2
# The held-out split of --calibrate: fixed, so that two runs on one archive agree.
CALIBRATION_SEED = 0


def _usage(message: str) -> typer.Exit:
    err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def eval_archive(
    archive_dir: Annotated[
        Path,
        typer.Argument(
            help="A folder of case folders (learning.archive_dir, or benchmark cases), "
            "or one case folder.",
            file_okay=False,
        ),
    ],
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            help="A report from --write-baseline or --json: exit 1 when AC@1 falls below "
            "it by more than the tolerance.",
            dir_okay=False,
            metavar="FILE",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    tolerance: Annotated[
        float | None,
        typer.Option(
            "--tolerance",
            help="Largest AC@1 drop that is not a regression (default: learning.eval_tolerance).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    write_baseline: Annotated[
        Path | None,
        typer.Option(
            "--write-baseline",
            help="Write this run's report to FILE, to serve as a later --baseline.",
            dir_okay=False,
            metavar="FILE",
        ),
    ] = None,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate",
            help="Also fit the confidence calibration on part of the cases and report "
            "the ECE of the others before and after.",
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Score root-cause analysis on archived cases: AC@1, AC@3, Avg@5, ECE per fault kind.

    Every case is diagnosed from its telemetry, as `sentinel rca` does, with this
    config's detection, pricing and SLOs, and scored against its truth. Cases that do
    not load, have no truth, or whose truth names a component they never mention are
    listed as skipped. Exit 1 when AC@1 falls below --baseline by more than the
    tolerance; exit 2 when the config, the archive or the baseline file is unusable.
    """
    settings = _settings(config)
    tol = settings.learning.eval_tolerance if tolerance is None else tolerance
    if not archive_dir.is_dir():
        raise _usage(f"{archive_dir}: no such folder (expected a folder of case folders)")
    base = _read_baseline(baseline) if baseline is not None else None

    try:
        report = _evaluate(archive_dir, settings)
    except SentinelError as e:  # only a vanished folder: bad cases are skipped
        raise _usage(str(e)) from e
    if write_baseline is not None:
        _write(write_baseline, report.to_json())

    found = regressions(report, base, tol) if base is not None else []
    check = _calibration_check(report, settings) if calibrate else None
    if as_json:
        doc: dict[str, Any] = report.model_dump(mode="json")
        if base is not None:
            doc["verdict"] = {
                "baseline": str(baseline),
                "tolerance": tol,
                "regressions": found,
                "passed": not found,
            }
        if calibrate:
            doc["calibration_check"] = (
                check.model_dump(mode="json") if isinstance(check, CalibrationReport) else check
            )
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        _print_report(report)
        if calibrate:
            _print_calibration(report, check)
        if base is not None:
            _print_verdict(baseline, base, tol, found)
    for line in found:
        err.print(
            Text.assemble(("regression:", "bold red"), " ", line), highlight=False, soft_wrap=True
        )
    if found:
        raise typer.Exit(EXIT_REGRESSION)


def _read_baseline(path: Path) -> EvalReport:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _usage(f"{path}: baseline file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _usage(f"{path}: cannot read the baseline file: {e}") from None
    try:
        return EvalReport.from_json(text, str(path))
    except ValueError as e:
        raise _usage(str(e)) from None


def _evaluate(archive_dir: Path, settings: Settings) -> EvalReport:
    with case_progress("cases") as show:
        return evaluate_archive(archive_dir, settings, progress=show)


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a crash never leaves half a baseline."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _usage(f"{path}: cannot write the baseline file: {e}") from None


def _calibration_check(report: EvalReport, settings: Settings) -> CalibrationReport | str:
    """The held-out calibration report, or why there is none."""
    usable = sum(not o.weak for o in report.outcomes)
    need = settings.learning.min_cases
    if usable < max(need, 2):
        return (
            f"too few cases with confirmed truth to fit a calibration: {usable}, "
            f"need learning.min_cases = {need}"
        )
    return heldout_calibration(report.outcomes, seed=CALIBRATION_SEED)


def _row(name: str, s: Scores) -> tuple[Text, str, str, str, str, str]:
    return (Text(name), str(s.n), f"{s.ac1:.3f}", f"{s.ac3:.3f}", f"{s.avg5:.3f}", f"{s.ece:.3f}")


def _print_report(report: EvalReport) -> None:
    folders = report.overall.n + len(report.skipped)
    cal = report.calibration
    _say(
        f"{report.archive}: {folders} case folder(s), {report.overall.n} scored"
        + (f" ({report.weak} with weak truth)" if report.weak else "")
        + f", {len(report.skipped)} skipped; confidences at temperature "
        f"{cal.temperature:g}, other {cal.other:g}"
    )
    if report.overall.n:
        table = Table("fault", "cases", "AC@1", "AC@3", "Avg@5", "ECE")
        for col in table.columns[1:]:
            col.justify = "right"
        for kind, s in report.by_fault.items():
            table.add_row(*_row(kind, s))
        table.add_section()
        table.add_row(*_row("all", report.overall))
        out.print(table)
    else:
        _say("no case could be scored")
    if report.skipped:
        _say(f"skipped {len(report.skipped)} case(s):")
        for skip in report.skipped:
            _say(f"  {skip.case}: {skip.reason}")


def _print_calibration(report: EvalReport, check: CalibrationReport | str | None) -> None:
    if not isinstance(check, CalibrationReport):
        _say(f"calibration: {check}")
        return
    now, fit = report.calibration, check.fitted
    weak = f", {check.n_weak_left_out} with weak truth left out" if check.n_weak_left_out else ""
    _say(
        f"calibration fitted on {check.n_train} case(s), checked on {check.n_heldout} "
        f"held out{weak}: temperature {now.temperature:g} -> {fit.temperature:g}, other "
        f"{now.other:g} -> {fit.other:g}; held-out ECE {check.ece_before:.3f} before, "
        f"{check.ece_after:.3f} after"
    )


def _print_verdict(path: Path | None, base: EvalReport, tol: float, found: list[str]) -> None:
    against = (
        f"baseline {path} (AC@1 {base.overall.ac1:.3f} over {base.overall.n} cases), "
        f"tolerance {tol:.3f}"
    )
    if found:
        _say(f"{against}: {len(found)} regression(s)")
    else:
        _say(f"{against}: no regression")
