"""``sentinel learn`` (fit, show or reset what sentinel learned from outcomes) and
``sentinel export-evals ID --out FILE`` (an incident's failing agent runs as a
pydantic-evals dataset). ``sentinel.cli`` mounts ``learn`` and ``export_evals``.

``sentinel learn`` fits a new version of the learned state (``learning.priors``) and
stores it; the store keeps every version and the newest is in use:

- playbook success per (playbook, fault), from the store's finished actions;
- component priors, from the ``[truth]`` of the archived cases (``--archive``, default
  ``learning.archive_dir``): a case that does not load is listed with the reason and
  skipped, never fatal;
- the confidence calibration, refitted (``learning.calibration.heldout_calibration``:
  fitted on part of the cases, checked on the others) only when the archive holds at
  least ``learning.min_cases`` cases with confirmed truth, and adopted only when it
  lowers the held-out ECE of the calibration in use; else that one is kept, and it says
  why.

``--show`` prints the state in use and the history of versions; ``--reset`` writes a
version that learned nothing (the engine's defaults), keeping the history.

Exit status: 0 done; 1 the store failed, the incident is unknown, or there is nothing
to export; 2 the command was misused (an invalid config, ``--show`` with ``--reset``, a
missing ``--archive`` folder, an output file that is not .yaml, .yml or .json).

What must not live here: fitting and exporting themselves (``sentinel.learning``),
storage (``adapters.db``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from sentinel.cases import CaseTruth, TruthBasis, read_case
from sentinel.cli_common import ByOption, ConfigOption, case_progress, err, out
from sentinel.cli_common import cli_settings as _settings
from sentinel.cli_common import fail as _fail
from sentinel.cli_common import say as _say
from sentinel.cli_common import who as _who
from sentinel.clock import SystemClock
from sentinel.errors import CaseFormatError, SentinelError, UnknownIncident
from sentinel.learning.priors import (
    LearnedState,
    component_priors,
    playbook_success,
    root_cause_counts,
)
from sentinel.remediation import ActionState
from sentinel.settings import Settings

if TYPE_CHECKING:
    from sentinel.adapters.db import SqlStore
    from sentinel.learning.calibration import CalibrationReport

__all__ = ["Fit", "export_evals", "fit_learned", "learn"]


EXIT_USAGE = 2
# The held-out split of the calibration check: fixed, so two fits of one archive agree
# (the same seed as `sentinel eval --calibrate`).
CALIBRATION_SEED = 0
# At most this many spans are read for an export (the oldest of the window).
MAX_SPANS = 200_000


def _usage(message: str) -> typer.Exit:
    err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def _error(message: str) -> typer.Exit:
    err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    return typer.Exit(1)


# --- sentinel learn -------------------------------------------------------------------------


def learn(
    archive: Annotated[
        Path | None,
        typer.Option(
            "--archive",
            help="The archive of cases to learn from (default: learning.archive_dir).",
            file_okay=False,
            metavar="DIR",
        ),
    ] = None,
    show: Annotated[
        bool, typer.Option("--show", help="Print the learned state in use and its history.")
    ] = False,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset",
            help="Write a new version that learned nothing (the engine's defaults); "
            "the history stays.",
        ),
    ] = False,
    by: ByOption = None,
    config: ConfigOption = None,
) -> None:
    """Learn from outcomes: playbook success rates, component priors, calibration.

    Fits a new version from the store's finished remediations and the archive's cases
    with truth; the calibration is refitted only with at least learning.min_cases cases
    with confirmed truth, and kept otherwise. --show prints the version in use, --reset
    writes one that learned nothing.
    """
    if show and reset:
        raise _usage("--show and --reset do not go together: pick one")
    settings = _settings(config)
    if archive is not None and not archive.is_dir():
        raise _usage(f"{archive}: no such folder (expected an archive of case folders)")
    folder = archive
    if folder is None and settings.learning.archive_dir:
        folder = settings.resolve(settings.learning.archive_dir)
    from sentinel.adapters.db import open_store

    clock = SystemClock()
    try:
        store = open_store(settings.store_url, clock, auto_migrate=settings.store.auto_migrate)
        try:
            if show:
                _print_state(store)
            elif reset:
                version = store.reset_learned(_who(by))
                _say(
                    f"learned state reset: version {version} learned nothing (the engine's "
                    "defaults are in use); earlier versions stay in the history"
                )
            else:
                fit = _fit_with_progress(store, settings, folder, clock.now())
                version = store.put_learned(fit.state, actor=_who(by))
                _print_fit(fit, version, folder)
        finally:
            store.close()
    except SentinelError as e:
        raise _fail(e) from e


@dataclass(frozen=True)
class Fit:
    """A fit, before it is stored: the new state and what it was learned from.
    ``skipped``: (case folder, reason) of cases that did not load; ``without_truth``:
    cases that loaded but have no ``[truth]``; ``actions``: finished actions counted;
    ``calibration``: the held-out check when a calibration was fitted (adopted or not);
    ``calibration_note``: what happened to the calibration, in words."""

    state: LearnedState
    truths: int = 0
    weak: int = 0
    without_truth: int = 0
    skipped: tuple[tuple[str, str], ...] = ()
    actions: int = 0
    archive_found: bool = True
    calibration: CalibrationReport | None = None
    calibration_note: str = ""
    root_causes: dict[str, float] = field(default_factory=dict)  # component -> weighted count


EvalProgress = Callable[[int, int, str], None]


def fit_learned(
    store: SqlStore,
    settings: Settings,
    folder: Path | None,
    now: datetime,
    *,
    progress: EvalProgress | None = None,
) -> Fit:
    """Fit a new learned state (not stored yet) from the store's actions and the archive
    at ``folder`` (None or a missing folder: no cases); see the module docstring."""
    previous = store.learned()
    finished = store.actions(states=list(ActionState))
    success = playbook_success(finished)
    truths, without, skipped, found = _read_truths(folder)
    confirmed = sum(t.basis is not TruthBasis.WEAK for t in truths)

    report, note = None, ""
    calibration = previous.calibration()
    kept = f"kept {_calibration_text(previous)}"
    temperature, other = previous.temperature, previous.other
    ece_before, ece_after = previous.ece_before, previous.ece_after
    need = settings.learning.min_cases
    if folder is None or confirmed < max(need, 2):
        note = (
            f"{kept}: {confirmed} case(s) with confirmed truth, a refit needs "
            f"learning.min_cases = {need}"
        )
    else:
        from sentinel.learning.calibration import heldout_calibration
        from sentinel.learning.scoring import evaluate_archive

        # Scores without priors: the held-out cases' truths are among those the priors
        # were fitted on, and would make the check look better than it is.
        evaluated = evaluate_archive(folder, settings, calibration=calibration, progress=progress)
        usable = sum(not o.weak for o in evaluated.outcomes)
        if usable < max(need, 2):
            note = (
                f"{kept}: only {usable} case(s) with confirmed truth could be diagnosed, a "
                f"refit needs learning.min_cases = {need}"
            )
        else:
            report = heldout_calibration(evaluated.outcomes, seed=CALIBRATION_SEED)
            if report.ece_after < report.ece_before:
                temperature, other = report.fitted.temperature, report.fitted.other
                ece_before, ece_after = report.ece_before, report.ece_after
                note = (
                    f"refitted: temperature {report.fitted.temperature:g}, other "
                    f"{report.fitted.other:g}"
                )
            else:
                note = (
                    f"{kept}: the refit does not lower the held-out ECE "
                    f"({report.ece_before:.3f} before, {report.ece_after:.3f} after)"
                )
    state = LearnedState(
        fitted_at=now,
        n_cases=len(truths),
        temperature=temperature,
        other=other,
        ece_before=ece_before,
        ece_after=ece_after,
        component_priors=component_priors(truths),
        playbook_success=LearnedState.success_entries(success),
        note=(
            f"fitted on {len(truths)} case(s) with truth and "
            f"{sum(int(b.trials) for b in success.values())} finished action(s); "
            f"calibration {note}"
        ),
    )
    return Fit(
        state=state,
        truths=len(truths),
        weak=len(truths) - confirmed,
        without_truth=without,
        skipped=tuple(skipped),
        actions=sum(int(b.trials) for b in success.values()),
        archive_found=found,
        calibration=report,
        calibration_note=note,
        root_causes=root_cause_counts(truths),
    )


def _read_truths(
    folder: Path | None,
) -> tuple[list[CaseTruth], int, list[tuple[str, str]], bool]:
    """The truths of the archive's cases, how many cases have none, the cases skipped
    and why, and whether the archive exists."""
    if folder is None or not folder.is_dir():
        return [], 0, [], False
    from sentinel.learning.scoring import case_folders

    truths: list[CaseTruth] = []
    skipped: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    without = 0
    for path in case_folders(folder):
        try:
            case = read_case(path, with_truth=True)
        except CaseFormatError as e:
            skipped.append((path.name, f"does not load: {e}"))
            continue
        if case.meta.id in seen:
            skipped.append(
                (
                    path.name,
                    f"case id {case.meta.id!r} was already read from {seen[case.meta.id]!r}",
                )
            )
            continue
        seen[case.meta.id] = path.name
        if case.truth is None:
            without += 1
        else:
            truths.append(case.truth)
    return truths, without, skipped, True


def _fit_with_progress(
    store: SqlStore, settings: Settings, folder: Path | None, now: datetime
) -> Fit:
    with case_progress("diagnosing cases") as show:
        return fit_learned(store, settings, folder, now, progress=show)


def _calibration_text(state: LearnedState) -> str:
    cal = state.calibration()
    head = "the fitted calibration" if state.calibrated else "the engine's default calibration"
    return f"{head} (temperature {cal.temperature:g}, other {cal.other:g})"


def _print_fit(fit: Fit, version: int, folder: Path | None) -> None:
    _say(f"learned state version {version} written")
    if folder is None:
        _say("no archive (learning.archive_dir is empty), so no component priors")
    elif not fit.archive_found:
        _say(f"archive {folder}: no such folder, so no component priors")
    else:
        weak = f" ({fit.weak} weak)" if fit.weak else ""
        _say(
            f"archive {folder}: {fit.truths} case(s) with truth{weak}, "
            f"{fit.without_truth} without, {len(fit.skipped)} skipped"
        )
        for name, why in fit.skipped:
            _say(f"  skipped {name}: {why}")
    _print_priors(fit.state, fit.root_causes)
    _print_success(fit.state, fit.actions)
    report = fit.calibration
    if report is not None:
        weak = (
            f", {report.n_weak_left_out} with weak truth left out" if report.n_weak_left_out else ""
        )
        _say(
            f"calibration fitted on {report.n_train} case(s), checked on "
            f"{report.n_heldout} held out{weak}: temperature {report.fitted.temperature:g}, "
            f"other {report.fitted.other:g}; held-out ECE {report.ece_before:.3f} before, "
            f"{report.ece_after:.3f} after"
        )
    _say(f"calibration: {fit.calibration_note}")


def _print_priors(state: LearnedState, counts: dict[str, float] | None = None) -> None:
    if not state.component_priors:
        _say("component priors: none (no component was the root cause often enough)")
        return
    table = Table("component", "bonus", *(("root cause of",) if counts else ()))
    for component, bonus in sorted(state.component_priors.items(), key=lambda kv: -kv[1]):
        extra = (f"{counts.get(component, 0.0):g} case(s)",) if counts else ()
        table.add_row(Text(component), f"+{bonus:.3f}", *extra)
    _say("component priors (added to the ranking score):")
    out.print(table)


def _print_success(state: LearnedState, actions: int | None = None) -> None:
    if not state.playbook_success:
        _say("playbook success: none (no remediation has finished yet)")
        return
    head = f" (from {actions} finished action(s))" if actions is not None else ""
    _say(f"playbook success{head}:")
    table = Table("playbook", "fault", "outcomes", "mean")
    for e in state.playbook_success:
        table.add_row(Text(e.playbook), Text(e.fault), e.success.text, f"{e.success.mean:.2f}")
    out.print(table)


def _print_state(store: SqlStore) -> None:
    state = store.learned()
    if state.version == 0:
        _say("nothing learned yet (version 0): the engine's defaults are in use")
    else:
        fitted = (
            f", fitted {state.fitted_at:%Y-%m-%dT%H:%M:%SZ} on {state.n_cases} case(s)"
            if state.fitted_at is not None
            else ""
        )
        _say(f"learned state version {state.version}{fitted}: {state.note}")
    cal = _calibration_text(state)
    if state.ece_before is not None and state.ece_after is not None:
        cal += f"; held-out ECE {state.ece_before:.3f} before its fit, {state.ece_after:.3f} after"
    _say(f"calibration: {cal}")
    _print_priors(state)
    _print_success(state)
    versions = store.learned_versions()
    if versions:
        _say("history:")
        table = Table("version", "stored", "note")
        for v in versions:
            table.add_row(str(v.version), f"{v.created_at:%Y-%m-%dT%H:%M:%SZ}", Text(v.note))
        out.print(table)


# --- sentinel export-evals ------------------------------------------------------------------


def export_evals(
    incident_id: Annotated[str, typer.Argument(help="The incident's id.", metavar="ID")],
    out_file: Annotated[
        Path,
        typer.Option(
            "--out",
            help="The dataset file to write (.yaml; .json also works); its JSON schema "
            "is written beside it.",
            dir_okay=False,
            metavar="FILE",
        ),
    ],
    config: ConfigOption = None,
) -> None:
    """Write an incident's failing agent runs as a pydantic-evals dataset.

    One case per agent run in the incident's window that errored or scored below its
    evaluator's normal: the run's inputs, its bad output and scores as metadata, and
    the expectation (no error, each score at least its normal minimum) as evaluators.
    Load it with pydantic_evals.Dataset.from_file and the evaluators of
    sentinel.learning.evals_export.EVALUATORS.
    """
    if out_file.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise _usage(f"{out_file}: the dataset file must end in .yaml, .yml or .json")
    settings = _settings(config)
    from sentinel.adapters.db import open_store
    from sentinel.incidents import fold, lifecycle_events
    from sentinel.learning.evals_export import export_incident, write_dataset

    clock = SystemClock()
    try:
        store = open_store(settings.store_url, clock, auto_migrate=settings.store.auto_migrate)
        try:
            incident = store.get_incident(incident_id)
            if incident is None:
                raise UnknownIncident(f"no incident {incident_id!r} in the store")
            state = fold(lifecycle_events(store.audit(incident_id)))
            if state is None:
                raise _error(
                    f"incident {incident_id!r} has no lifecycle events in the audit log: "
                    "its onset and anomalies are unknown"
                )
            end = incident.resolved_at or clock.now()
            lookback = timedelta(minutes=settings.detection.baseline_minutes)
            spans = store.spans(state.onset - lookback, end, limit=MAX_SPANS)
        finally:
            store.close()
    except SentinelError as e:
        raise _fail(e) from e
    if len(spans) >= MAX_SPANS:
        err.print(
            f"warning: only the first {MAX_SPANS} spans of the window were read",
            highlight=False,
            markup=False,
        )
    found = export_incident(state, spans, end, lookback=lookback)
    window = f"{state.onset:%Y-%m-%dT%H:%M:%SZ} to {end:%Y-%m-%dT%H:%M:%SZ}"
    agents = ", ".join(found.agents) or "none"
    if found.judged == 0:
        raise _error(
            f"incident {incident_id!r}: no agent runs (invoke_agent spans) of its agents "
            f"({agents}) from {window}: nothing to export"
        )
    if found.failing == 0:
        raise _error(
            f"incident {incident_id!r}: none of the {found.judged} agent runs of {agents} "
            f"from {window} errored or scored below its evaluators' normal: nothing to export"
        )
    try:
        schema = write_dataset(found.dataset, out_file)
    except OSError as e:
        raise _error(f"{out_file}: cannot write the dataset: {e}") from None
    n = len(found.dataset.cases)
    left = f" ({found.left_out} more left out)" if found.left_out else ""
    _say(
        f"wrote {n} case(s){left} to {out_file} (schema {schema.name}): {found.failing} of "
        f"{found.judged} runs of {agents} failed from {window}"
    )
    if found.with_prompt:
        _say(f"inputs: the recorded prompt for {found.with_prompt} case(s)")
    else:
        _say(
            "inputs: the spans record no prompt content, so each case holds the agent, the "
            "trace id and the request attributes"
        )
