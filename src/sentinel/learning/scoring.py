"""Scoring the RCA engine on cases with known truth, and comparing with a baseline.

``evaluate_archive`` runs ``sentinel.rca.diagnose`` over every case folder of an archive
and scores the rankings (CASE_FORMAT.md): AC@k, the share of cases whose true root cause
is among the first k hypotheses; Avg@5, the mean of AC@1..AC@5; ECE, the expected
calibration error of the top hypothesis' confidence (10 equal-width bins). A case that
cannot be scored (it does not load, has no ``[truth]``, or its truth names a component
the case never mentions) is listed in the report with the reason and skipped: one bad
case never stops an evaluation. ``regressions`` compares a report with a baseline report
(``EvalReport.to_json`` / ``from_json``), which is what ``sentinel eval --baseline``
gates CI on.

What must not live here: printing (``sentinel.cli_eval``), fitting the calibration
(``sentinel.learning.calibration``), reading case files (``sentinel.cases``).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sentinel.cases import CASE_TOML, Case, TruthBasis, read_case
from sentinel.errors import CaseFormatError, SentinelError
from sentinel.incidents import call_peer
from sentinel.rca.engine import Diagnosis, diagnose
from sentinel.rca.rank import DEFAULT_CALIBRATION, Calibration
from sentinel.settings import Settings
from sentinel.sli.metrics import MODEL_LABELS

__all__ = [
    "ECE_BINS",
    "MIN_KIND_CASES",
    "EvalProgress",
    "EvalReport",
    "Outcome",
    "Ranking",
    "Scores",
    "Skipped",
    "ac",
    "avg5",
    "case_folders",
    "ece",
    "evaluate_archive",
    "known_components",
    "outcome",
    "regressions",
    "report_of",
    "score",
]

ECE_BINS = 10
# A fault kind with fewer cases than this (in the report or the baseline) is not gated
# on: one case more or less would move its AC@1 by a third or more.
MIN_KIND_CASES = 3
# Scores are shares of a few dozen cases: anything closer than this is equal.
_EPS = 1e-9

EvalProgress = Callable[[int, int, str], None]
"""Called as ``progress(done, total, folder name)``: once with ``done = 0`` before the
first case, then after each case folder, scored or skipped."""


class Ranking(Protocol):
    """What the scores need of one diagnosed case (``Outcome``, or a benchmark's row)."""

    @property
    def truth(self) -> str: ...
    @property
    def ranked(self) -> Sequence[str]: ...
    @property
    def top_confidence(self) -> float | None: ...


_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Outcome(BaseModel):
    """One case diagnosed: the truth, the ranking, and the raw scores a calibration can
    be refitted from. ``scores`` are the hypotheses' ``(component, score)``, best first
    (the order of ``ranked``); ``top_confidence`` is None when the engine found nothing."""

    model_config = _FROZEN

    case: str
    fault: str
    truth: str
    ranked: tuple[str, ...]
    top_confidence: float | None
    scores: tuple[tuple[str, float], ...]
    weak: bool = False


def outcome(case: Case, diagnosis: Diagnosis) -> Outcome:
    """The outcome of ``diagnosis`` on ``case``, which must have been read with its truth."""
    if case.truth is None:
        raise ValueError(f"case {case.meta.id!r} has no truth to score against")
    hs = diagnosis.hypotheses
    return Outcome(
        case=case.meta.id,
        fault=case.truth.fault,
        truth=case.truth.root_cause,
        ranked=tuple(h.component for h in hs),
        top_confidence=hs[0].confidence if hs else None,
        scores=tuple((h.component, h.score) for h in hs),
        weak=case.truth.basis is TruthBasis.WEAK,
    )


def ac(rows: Sequence[Ranking], k: int) -> float:
    """AC@k: the share of ``rows`` whose truth is among the first ``k`` hypotheses."""
    return sum(r.truth in r.ranked[:k] for r in rows) / len(rows) if rows else 0.0


def avg5(rows: Sequence[Ranking]) -> float:
    """Avg@5: the mean of AC@1..AC@5."""
    return statistics.mean(ac(rows, k) for k in range(1, 6))


def ece(rows: Sequence[Ranking], bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top hypothesis' confidence: per equal-width bin
    of confidence, the gap between its mean confidence and its share of right top
    hypotheses, weighted by the bin's share of rows. No hypothesis counts as a wrong
    top hypothesis of confidence 0."""
    filled: dict[int, list[tuple[float, bool]]] = defaultdict(list)
    for r in rows:
        conf = r.top_confidence if r.top_confidence is not None else 0.0
        right = bool(r.ranked) and r.ranked[0] == r.truth
        filled[min(bins - 1, int(conf * bins))].append((conf, right))
    return math.fsum(
        len(b)
        / len(rows)
        * abs(statistics.mean(c for c, _ in b) - statistics.mean(o for _, o in b))
        for b in filled.values()
    )


_Share = Annotated[float, Field(ge=0.0, le=1.0)]


class Scores(BaseModel):
    """The scores of a set of cases (all 0 when ``n`` is 0)."""

    model_config = _FROZEN

    n: Annotated[int, Field(ge=0)]
    ac1: _Share
    ac3: _Share
    avg5: _Share
    ece: Annotated[float, Field(ge=0.0)]


def score(outcomes: Sequence[Ranking]) -> Scores:
    """AC@1, AC@3, Avg@5 and ECE of ``outcomes``."""
    if not outcomes:
        return Scores(n=0, ac1=0.0, ac3=0.0, avg5=0.0, ece=0.0)
    return Scores(
        n=len(outcomes),
        ac1=ac(outcomes, 1),
        ac3=ac(outcomes, 3),
        avg5=avg5(outcomes),
        ece=ece(outcomes),
    )


class Skipped(BaseModel):
    """A case folder that was not scored, and why."""

    model_config = _FROZEN

    case: str  # the folder's name (its id may be what could not be read)
    reason: str


class EvalReport(BaseModel):
    """The engine's scores on an archive: overall, per fault kind (the truth's ``fault``,
    which may be free text), the cases skipped and why, how many scored cases have only
    a weak truth (``TruthBasis.WEAK``), the calibration the confidences were made with,
    and every outcome. ``to_json`` gives a file ``from_json`` reads back, to serve as a
    baseline; it ignores keys it does not know, so ``sentinel eval --json`` output, which
    adds a few, is a baseline too."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    format: Literal[1] = 1
    archive: str
    overall: Scores
    by_fault: dict[str, Scores]
    skipped: tuple[Skipped, ...] = ()
    weak: Annotated[int, Field(ge=0)] = 0
    calibration: Calibration = DEFAULT_CALIBRATION
    outcomes: tuple[Outcome, ...] = ()

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "baseline") -> EvalReport:
        """Read a report back. Raises ``ValueError`` naming ``source`` and the first
        problem (not JSON, a missing or ill-typed key)."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "document"
            raise ValueError(
                f"{source}: not an evaluation report (from `sentinel eval --write-baseline` "
                f"or --json): {where}: {first['msg']}"
            ) from None


def report_of(
    archive: str,
    outcomes: Iterable[Outcome],
    skipped: Iterable[Skipped] = (),
    calibration: Calibration = DEFAULT_CALIBRATION,
) -> EvalReport:
    """The report of ``outcomes``: overall and per fault kind, kinds sorted by name."""
    found = tuple(outcomes)
    kinds: dict[str, list[Outcome]] = defaultdict(list)
    for o in found:
        kinds[o.fault].append(o)
    return EvalReport(
        archive=archive,
        overall=score(found),
        by_fault={k: score(kinds[k]) for k in sorted(kinds)},
        skipped=tuple(skipped),
        weak=sum(o.weak for o in found),
        calibration=calibration,
        outcomes=found,
    )


def case_folders(folder: Path) -> list[Path]:
    """The case folders of an archive, by name: ``folder`` itself if it is a case (holds
    a case.toml), else its sub-folders, hidden ones left out (``.git``, and the
    half-written ``.NAME.tmp-*`` of an interrupted ``write_case``)."""
    if not folder.is_dir():
        raise CaseFormatError(f"{folder}: not an archive of cases (no such folder)")
    if (folder / CASE_TOML).exists():
        return [folder]
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def evaluate_archive(
    folder: Path,
    settings: Settings,
    *,
    calibration: Calibration = DEFAULT_CALIBRATION,
    priors: Mapping[str, float] | None = None,
    progress: EvalProgress | None = None,
) -> EvalReport:
    """Diagnose every case of the archive at ``folder`` (a folder of case folders, or one
    case folder) as ``sentinel rca`` would, with ``settings``' detection, pricing and
    SLOs, and score the rankings against the cases' truth.

    Skipped and listed with the reason, never fatal: a folder that is not a readable case
    (``CaseFormatError``), a case without ``[truth]``, a truth whose root cause the case
    names nowhere (not in its spans, metrics, changes or topology: no engine could rank
    it), a case id already scored from another folder, and a case the engine fails on
    with a ``SentinelError``. Raises ``CaseFormatError`` only when ``folder`` is missing.
    """
    folders = case_folders(folder)
    outcomes: list[Outcome] = []
    skipped: list[Skipped] = []
    seen: dict[str, str] = {}  # case id -> the folder it was scored from
    if progress is not None:
        progress(0, len(folders), "")
    for done, path in enumerate(folders, 1):
        try:
            result = _evaluate_case(path, settings, calibration, priors, seen)
        except CaseFormatError as e:
            result = f"does not load: {e}"
        if isinstance(result, Outcome):
            outcomes.append(result)
            seen[result.case] = path.name
        else:
            skipped.append(Skipped(case=path.name, reason=result))
        if progress is not None:
            progress(done, len(folders), path.name)
    return report_of(str(folder), outcomes, skipped, calibration)


def _evaluate_case(
    path: Path,
    settings: Settings,
    calibration: Calibration,
    priors: Mapping[str, float] | None,
    seen: Mapping[str, str],
) -> Outcome | str:
    """The case's outcome, or why it cannot be scored."""
    case = read_case(path, with_truth=True)
    truth = case.truth
    if truth is None:
        return "no [truth]: its root cause is unknown, so there is nothing to score"
    if case.meta.id in seen:
        return f"case id {case.meta.id!r} was already scored from folder {seen[case.meta.id]!r}"
    if truth.root_cause not in known_components(case):
        return (
            f"unknown component: the truth's root cause {truth.root_cause!r} is in none of "
            "the case's spans, metrics, changes or topology"
        )
    try:
        found = diagnose(
            case,
            settings.detection,
            settings.pricing,
            settings.slo,
            priors=priors,
            calibration=calibration,
        )
    except SentinelError as e:
        return f"the engine failed on it: {e}"
    return outcome(case, found)


def known_components(case: Case) -> frozenset[str]:
    """Every component id the case's telemetry, changes or topology names: span
    components and the peers their CLIENT spans call, metric series' components and the
    models their GenAI labels name, changed and affected components, topology ends."""
    found: set[str] = set()
    for s in case.spans:
        found.add(s.component)
        peer = call_peer(s)
        if peer is not None:
            found.add(peer)
    for sample in case.samples:
        if sample.component is not None:
            found.add(sample.component)
        found.update(f"model:{v}" for k, v in sample.labels if k in MODEL_LABELS and v)
    for ch in case.changes:
        found.add(ch.component)
        found.update(ch.affects)
    for edge in case.topology:
        found.update((edge.caller, edge.callee))
    return frozenset(found)


def regressions(
    report: EvalReport,
    baseline: EvalReport,
    tolerance: float,
    *,
    min_cases: int = MIN_KIND_CASES,
) -> list[str]:
    """Where AC@1 fell below the baseline's by more than ``tolerance``, each described in
    words with both numbers: overall (unless the baseline scored no case), and per fault
    kind present in both with at least ``min_cases`` cases in each."""
    found: list[str] = []
    if baseline.overall.n > 0 and _fell(report.overall, baseline.overall, tolerance):
        found.append(_describe("overall", report.overall, baseline.overall, tolerance))
    for kind in sorted(report.by_fault.keys() & baseline.by_fault.keys()):
        now, then = report.by_fault[kind], baseline.by_fault[kind]
        if min(now.n, then.n) >= min_cases and _fell(now, then, tolerance):
            found.append(_describe(f"of {kind}", now, then, tolerance))
    return found


def _fell(now: Scores, then: Scores, tolerance: float) -> bool:
    return then.ac1 - now.ac1 > tolerance + _EPS


def _describe(what: str, now: Scores, then: Scores, tolerance: float) -> str:
    return (
        f"AC@1 {what} fell from {then.ac1:.3f} (baseline, {then.n} cases) to "
        f"{now.ac1:.3f} ({now.n} cases): down {then.ac1 - now.ac1:.3f}, more than the "
        f"tolerance {tolerance:.3f}"
    )
