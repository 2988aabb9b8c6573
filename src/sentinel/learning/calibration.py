"""Confidence calibration fitted on archived outcomes, and its check on held-out cases.

The engine's confidences are a softmax of the hypotheses' scores at a temperature, next
to a "none of these" logit (``sentinel.rca.rank.Calibration``). ``fit_calibration``
chooses both by maximum likelihood of the true root cause over a grid, from the raw
scores of diagnosed cases (``Outcome.scores``): the scores do not depend on the
calibration, so no case is diagnosed again. ``heldout_calibration`` says whether a refit
helps: it fits on part of the outcomes and compares the ECE of the others before (the
confidences they were diagnosed with) and after (recomputed from their raw scores).

What must not live here: scoring (``sentinel.learning.scoring``), the softmax itself
(``sentinel.rca.rank``, whose formula is reused, never copied), I/O.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Annotated, Protocol

from pydantic import BaseModel, ConfigDict, Field

from sentinel.learning.scoring import Outcome, ece
from sentinel.rca.rank import Calibration, softmax_confidences

__all__ = [
    "GRID",
    "CalibrationReport",
    "Scored",
    "fit_calibration",
    "heldout_calibration",
    "heldout_split",
    "recalibrated",
]

# Temperatures 0.2..3.0 by 0.1, "none of these" logits -3..3 by 0.25: the grid that
# fitted DEFAULT_CALIBRATION (bench/rca.py --fit-seed 7). Ties go to the first point.
GRID: tuple[Calibration, ...] = tuple(
    Calibration(temperature=t / 10, other=o / 4) for t in range(2, 31) for o in range(-12, 13)
)


class Scored(Protocol):
    """What a fit needs of one case: its truth and its hypotheses' raw scores."""

    @property
    def truth(self) -> str: ...
    @property
    def scores(self) -> Sequence[tuple[str, float]]: ...


def _nll(cal: Calibration, outcomes: Sequence[Scored]) -> float:
    """Negative log-likelihood of the true root causes (the "none of these" mass when a
    truth is not among the hypotheses) under ``cal``."""
    total = 0.0
    for o in outcomes:
        logits = [s / cal.temperature for _, s in o.scores]
        top = max([*logits, cal.other])
        z = math.fsum(math.exp(x - top) for x in logits) + math.exp(cal.other - top)
        hit = [x for (c, _), x in zip(o.scores, logits, strict=True) if c == o.truth]
        total -= (hit[0] if hit else cal.other) - top - math.log(z)
    return total


def fit_calibration(outcomes: Sequence[Scored]) -> Calibration:
    """The calibration of ``GRID`` under which the true root causes of ``outcomes`` are
    most likely. Deterministic: the same outcomes give the same calibration."""
    return min(GRID, key=lambda cal: _nll(cal, outcomes))


def recalibrated(o: Outcome, cal: Calibration) -> Outcome:
    """``o`` with its top confidence recomputed from its raw scores under ``cal`` (the
    ranking stays: the softmax keeps the order of the scores)."""
    if not o.scores:
        return o
    top = softmax_confidences([s for _, s in o.scores], cal)[0]
    return o.model_copy(update={"top_confidence": top})


def heldout_split(
    outcomes: Sequence[Outcome], *, holdout_share: float, seed: int
) -> tuple[list[Outcome], list[Outcome]]:
    """``(train, held_out)``: the outcomes ordered by a hash of ``seed`` and their case
    id, the first ``holdout_share`` of them (at least one, and never all) held out. The
    same ids give the same split, whatever their order."""
    if len(outcomes) < 2:
        raise ValueError(f"a held-out split needs at least 2 cases, got {len(outcomes)}")
    if not 0.0 < holdout_share < 1.0:
        raise ValueError(f"holdout_share must be in (0, 1), got {holdout_share!r}")

    def key(o: Outcome) -> tuple[str, str]:
        return hashlib.sha256(f"{seed}:{o.case}".encode()).hexdigest(), o.case

    ordered = sorted(outcomes, key=key)
    k = min(len(ordered) - 1, max(1, round(len(ordered) * holdout_share)))
    return ordered[k:], ordered[:k]


class CalibrationReport(BaseModel):
    """A calibration fitted on ``n_train`` outcomes, and the ECE of ``n_heldout`` others
    with the confidences they were diagnosed with (``ece_before``) and recomputed with
    the fitted calibration (``ece_after``). ``n_weak_left_out``: outcomes not used at all
    because their truth is weak."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fitted: Calibration
    n_train: int
    n_heldout: int
    ece_before: Annotated[float, Field(ge=0.0)]
    ece_after: Annotated[float, Field(ge=0.0)]
    n_weak_left_out: int = 0
    seed: int = 0
    holdout_share: float = 0.3


def heldout_calibration(
    outcomes: Sequence[Outcome],
    *,
    holdout_share: float = 0.3,
    seed: int = 0,
    include_weak: bool = False,
) -> CalibrationReport:
    """Fit a calibration on a part of ``outcomes`` (``heldout_split``) and report the ECE
    of the held-out rest before and after it.

    Outcomes with a weak truth are left out unless ``include_weak``: a weak truth is the
    component a verified automatic fix was aimed at, which is the engine's own top
    hypothesis, so fitting on it would teach the engine to trust itself more. Raises
    ``ValueError`` with fewer than 2 outcomes to use.
    """
    used = [o for o in outcomes if include_weak or not o.weak]
    train, held = heldout_split(used, holdout_share=holdout_share, seed=seed)
    fitted = fit_calibration(train)
    return CalibrationReport(
        fitted=fitted,
        n_train=len(train),
        n_heldout=len(held),
        ece_before=ece(held),
        ece_after=ece([recalibrated(o, fitted) for o in held]),
        n_weak_left_out=len(outcomes) - len(used),
        seed=seed,
        holdout_share=holdout_share,
    )
