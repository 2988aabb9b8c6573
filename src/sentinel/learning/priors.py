"""What sentinel learns from outcomes, as pure functions of typed data, and the learned
state that holds it.

- ``Beta`` and ``playbook_success``: per playbook and fault kind (the fault of the
  hypothesis it acted on), a Beta posterior of "the fix worked", from a uniform prior
  ``Beta(1, 1)`` and the remediations that started and ended: ``VERIFIED`` is a success,
  ``UNDONE`` or ``FAILED`` a failure. Actions that never started (rejected, expired,
  failed before their first step) say nothing about whether the playbook works.
- ``order_playbooks``: playbooks by posterior mean of success for a fault, best first;
  equal means keep the given order (a playbook never tried has mean 1/2).
- ``component_priors``: a small, bounded additive score bonus for components that were
  often the root cause of archived incidents (see the function for the formula).
- ``LearnedState``: everything learned, as one versioned record (the store keeps every
  version; ``DEFAULT`` is "nothing learned": the engine's own calibration, no priors).

What must not live here: I/O (the store's ``put_learned``/``learned``, reading archives:
``sentinel.cli_learn``), fitting the calibration (``learning.calibration``), ranking
(``sentinel.rca``), choosing a playbook (``sentinel.remediation.propose``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sentinel.cases import CaseTruth, TruthBasis
from sentinel.playbooks.model import Playbook
from sentinel.rca.rank import DEFAULT_CALIBRATION, Calibration
from sentinel.remediation import ActionRecord, ActionState
from sentinel.telemetry import AwareDatetime

__all__ = [
    "DEFAULT",
    "FAILURE_STATES",
    "PRIOR",
    "PRIOR_MIN_COUNT",
    "PRIOR_WEIGHT",
    "SUCCESS_STATES",
    "WEAK_WEIGHT",
    "Beta",
    "LearnedState",
    "LearnedVersion",
    "PlaybookSuccess",
    "component_priors",
    "order_playbooks",
    "playbook_success",
    "root_cause_counts",
    "success_of",
]

SUCCESS_STATES = frozenset({ActionState.VERIFIED})
FAILURE_STATES = frozenset({ActionState.UNDONE, ActionState.FAILED})

# Default bound of a component prior, in units of the ranking's score. The ranking's
# signals at full strength weigh 1.5 (a linked change), 2.0 (coverage) and 2.5 (symptom),
# and one strong anomaly about 1-3 (rca.rank.Weights): a bonus of at most 0.3 breaks
# near-ties between candidates, and cannot overturn a clear pattern of evidence.
PRIOR_WEIGHT = 0.3
# A component gets a bonus only once it was the root cause this often (weak truths
# counting half): one incident is not a pattern.
PRIOR_MIN_COUNT = 2.0
# What a weak truth (a fix verified automatically, nobody confirmed the cause) counts
# for: it names the engine's own top hypothesis, so counting it fully would teach the
# engine to trust itself.
WEAK_WEIGHT = 0.5

_FROZEN = ConfigDict(frozen=True, extra="forbid")
# Stored states are read with extra="ignore": a field a later version adds does not
# make an older sentinel fail to read the state.
_STORED = ConfigDict(frozen=True, extra="ignore")


class Beta(BaseModel):
    """A Beta distribution over a success probability; here the posterior of a playbook's
    success after ``PRIOR`` and its outcomes, so ``alpha - 1`` successes and
    ``beta - 1`` failures."""

    model_config = _STORED

    alpha: Annotated[float, Field(gt=0)] = 1.0
    beta: Annotated[float, Field(gt=0)] = 1.0

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    @property
    def successes(self) -> float:
        return self.alpha - PRIOR.alpha

    @property
    def trials(self) -> float:
        return self.alpha + self.beta - PRIOR.alpha - PRIOR.beta

    @property
    def text(self) -> str:
        """In words, for tickets: "4 of 5 worked", "never tried"."""
        if self.trials <= 0:
            return "never tried"
        return f"{self.successes:g} of {self.trials:g} worked"

    def observe(self, success: bool) -> Beta:
        """The posterior after one more outcome."""
        if success:
            return Beta(alpha=self.alpha + 1, beta=self.beta)
        return Beta(alpha=self.alpha, beta=self.beta + 1)


PRIOR = Beta(alpha=1.0, beta=1.0)

PlaybookKey = tuple[str, str]  # (playbook name, hypothesis fault)


def playbook_success(actions: Iterable[ActionRecord]) -> dict[PlaybookKey, Beta]:
    """Per (playbook, fault of the hypothesis it acted on): the posterior of success
    from ``PRIOR``. Counted: actions that started (``started_at`` set) and ended
    ``VERIFIED`` (success), ``UNDONE`` or ``FAILED`` (failure); others are left out."""
    out: dict[PlaybookKey, Beta] = {}
    for r in actions:
        if r.started_at is None:
            continue  # never touched anything: rejected, expired, refused before a step
        if r.state in SUCCESS_STATES:
            worked = True
        elif r.state in FAILURE_STATES:
            worked = False
        else:
            continue  # still running or verifying: no outcome yet
        key = (r.playbook, r.hypothesis.fault)
        out[key] = out.get(key, PRIOR).observe(worked)
    return out


def success_of(success: Mapping[PlaybookKey, Beta], playbook: str, fault: str) -> Beta:
    """The posterior of ``playbook`` for ``fault``; ``PRIOR`` when it was never tried."""
    return success.get((playbook, fault), PRIOR)


def order_playbooks(
    playbooks: Sequence[Playbook], fault: str, success: Mapping[PlaybookKey, Beta]
) -> list[Playbook]:
    """``playbooks`` by posterior mean of success for ``fault``, highest first. The sort
    is stable: playbooks with equal means (e.g. all never tried) keep the given order,
    which is what ``remediation.propose`` falls back on."""
    return sorted(playbooks, key=lambda p: -success_of(success, p.name, fault).mean)


def root_cause_counts(truths: Iterable[CaseTruth]) -> dict[str, float]:
    """How often each component was the root cause; a weak truth counts ``WEAK_WEIGHT``."""
    counts: dict[str, float] = defaultdict(float)
    for t in truths:
        counts[t.root_cause] += WEAK_WEIGHT if t.basis is TruthBasis.WEAK else 1.0
    return dict(counts)


def component_priors(
    truths: Iterable[CaseTruth],
    *,
    weight: float = PRIOR_WEIGHT,
    min_count: float = PRIOR_MIN_COUNT,
) -> dict[str, float]:
    """Per component that was often the root cause: an additive bonus to its ranking
    score (``rca.rank(priors=...)``).

    With ``c`` the number of truths naming a component (a weak truth counts
    ``WEAK_WEIGHT``) and ``m`` the mean of ``c`` over every component that was a root
    cause at least once::

        bonus = clip(weight * log((c + 1) / (m + 1)), 0, weight)   when c >= min_count

    Bounded on both sides on purpose. Never above ``weight``: the archive says how often
    a component failed before, not whether it failed now, so the prior may decide
    between candidates the evidence leaves close, never override strong evidence (see
    ``PRIOR_WEIGHT``). Never below 0: a component absent from the archive is not less
    likely to fail for it (a new prompt has no history), so nothing is pushed down. The
    ``+ 1`` damps small counts, ``min_count`` ignores one-off causes, and comparing with
    the mean favours only the components that fail more often than the typical cause (an
    archive whose every case names one component teaches nothing about ranking). Raises
    ``ValueError`` for a negative ``weight`` or ``min_count``.
    """
    if weight < 0 or min_count < 0:
        raise ValueError(f"weight and min_count must be >= 0, got {weight!r}, {min_count!r}")
    counts = root_cause_counts(truths)
    if not counts:
        return {}
    mean = math.fsum(counts.values()) / len(counts)
    out: dict[str, float] = {}
    for component, c in sorted(counts.items()):
        if c < min_count:
            continue
        bonus = min(weight, round(max(0.0, weight * math.log((c + 1) / (mean + 1))), 6))
        if bonus > 0:
            out[component] = bonus
    return out


class PlaybookSuccess(BaseModel):
    """One entry of ``LearnedState.playbook_success``."""

    model_config = _STORED

    playbook: str
    fault: str
    success: Beta


class LearnedState(BaseModel):
    """Everything learned, as one version. ``version`` is the store's number for it (0:
    never stored, the default); ``fitted_at`` when it was fitted; ``n_cases`` the
    archived cases with truth it was fitted on. ``temperature``/``other``: the fitted
    calibration, both None for the engine's default (``rca.rank.DEFAULT_CALIBRATION``);
    ``ece_before``/``ece_after``: the held-out ECE with the calibration in use before the
    fit and with the fitted one."""

    model_config = _STORED

    version: Annotated[int, Field(ge=0)] = 0
    fitted_at: AwareDatetime | None = None
    n_cases: Annotated[int, Field(ge=0)] = 0
    temperature: Annotated[float, Field(gt=0)] | None = None
    other: float | None = None
    ece_before: Annotated[float, Field(ge=0, le=1)] | None = None
    ece_after: Annotated[float, Field(ge=0, le=1)] | None = None
    component_priors: dict[str, float] = Field(default_factory=dict)
    playbook_success: tuple[PlaybookSuccess, ...] = ()
    note: str = ""

    @model_validator(mode="after")
    def _calibration_whole(self) -> LearnedState:
        if (self.temperature is None) != (self.other is None):
            raise ValueError(
                "temperature and other are set together (a fitted calibration) or both "
                f"left out (the default), got temperature={self.temperature!r}, "
                f"other={self.other!r}"
            )
        return self

    @property
    def calibrated(self) -> bool:
        """Whether a fitted calibration replaces the engine's default."""
        return self.temperature is not None

    def calibration(self) -> Calibration:
        """The calibration to rank with: the fitted one, else the engine's default."""
        if self.temperature is None or self.other is None:
            return DEFAULT_CALIBRATION
        return Calibration(temperature=self.temperature, other=self.other)

    def success(self) -> dict[PlaybookKey, Beta]:
        """``playbook_success`` as ``order_playbooks`` and ``success_of`` take it."""
        return {(e.playbook, e.fault): e.success for e in self.playbook_success}

    @staticmethod
    def success_entries(success: Mapping[PlaybookKey, Beta]) -> tuple[PlaybookSuccess, ...]:
        """``success`` as the state's list of entries, sorted by playbook and fault."""
        return tuple(
            PlaybookSuccess(playbook=p, fault=f, success=b) for (p, f), b in sorted(success.items())
        )


DEFAULT = LearnedState()


class LearnedVersion(BaseModel):
    """One stored version of the learned state, as a history lists it."""

    model_config = _FROZEN

    version: Annotated[int, Field(ge=1)]
    created_at: AwareDatetime
    note: str = ""
