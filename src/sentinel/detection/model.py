"""What detection says, and the rules of each SLI kind it judges by: the records
(``Anomaly``, ``NotEnoughData``, ``DetectionResult``), which way is bad for a kind, which
kinds are shares, and each kind's minimum effect (``big_enough``).

What must not live here: judging a series (``detectors``, ``judge``), statistics.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from sentinel.settings import DetectionSettings
from sentinel.sli import SliKey, SliKind
from sentinel.telemetry import AwareDatetime


class Direction(StrEnum):
    UP = "up"  # a rise is bad
    DOWN = "down"  # a drop is bad


class Detector(StrEnum):
    LEVEL_SHIFT = "level_shift"  # a step or a drift away from the baseline
    EMERGENCE = "emergence"  # an error type the baseline never showed
    BURN_RATE = "burn_rate"  # an SLO's error budget burning too fast (sentinel.slo)


class NotEnoughDataReason(StrEnum):
    TOO_FEW_BASELINE_POINTS = "too_few_baseline_points"
    TOO_FEW_RECENT_POINTS = "too_few_recent_points"
    GAP = "gap"  # no recent point at the end of the window
    ZERO_TRAFFIC = "zero_traffic"  # recent points, but no request behind them
    TOO_FEW_OBSERVATIONS = "too_few_observations"  # points, each resting on too little


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Anomaly(_Record):
    """A persistent shift of one SLI: its onset (change point), the baseline median, the
    value observed since the onset (median, or pooled share), and the evidence (robust z,
    or -log10 of the binomial tail probability)."""

    component: str
    sli: SliKind
    qualifier: str = ""
    onset: AwareDatetime
    baseline: float
    observed: float
    score: float
    detector: Detector = Detector.LEVEL_SHIFT
    slo: str = ""  # the SLO's name when detector is burn_rate

    @property
    def key(self) -> SliKey:
        return SliKey(self.component, self.sli, self.qualifier)


class NotEnoughData(_Record):
    component: str
    sli: SliKind
    qualifier: str = ""
    reason: NotEnoughDataReason


class DetectionResult(_Record):
    at: AwareDatetime
    anomalies: tuple[Anomaly, ...] = ()
    not_enough_data: tuple[NotEnoughData, ...] = ()
    checked: int = 0  # series judged (with enough data), anomalous or not


SHARES = frozenset(k for k in SliKind if k.share)
_LATENCIES = frozenset({SliKind.LATENCY_P50, SliKind.LATENCY_P95, SliKind.LATENCY_P99})
_USAGE = frozenset(
    {
        SliKind.INPUT_TOKENS_PER_REQUEST,
        SliKind.OUTPUT_TOKENS_PER_REQUEST,
        SliKind.COST_PER_REQUEST,
    }
)
# Positive quantities that scale: their minimum effect is a ratio to the baseline, and
# their noise grows with their level (the hindsight onset widens it on the plateau).
_MULTIPLICATIVE = _LATENCIES | _USAGE | {SliKind.STEPS_PER_RUN}
# Resource gauges: each sample measures the whole process, not one request.
GAUGES = frozenset({SliKind.MEMORY_UTILISATION, SliKind.MEMORY_WORKING_SET, SliKind.CPU_USAGE})
QUANTILE_MIN_COUNT = {SliKind.LATENCY_P95: 20, SliKind.LATENCY_P99: 100}


def direction_of(kind: SliKind) -> Direction:
    """Which way is bad: a lower evaluator score, a drop of traffic; a rise otherwise."""
    if kind in (SliKind.EVAL_SCORE, SliKind.REQUEST_RATE):
        return Direction.DOWN
    return Direction.UP


def is_share(kind: SliKind) -> bool:
    """Shares of requests in [0, 1], judged by pooling their observations."""
    return kind in SHARES


def is_error_type(key: SliKey) -> bool:
    """A share of one error type (of requests, or of calls refused before reaching their
    callee): one never seen in the baseline is judged by its emergence."""
    return key.kind is SliKind.ERROR_RATE_BY_TYPE or (
        key.kind is SliKind.REFUSED_CALL_RATE and bool(key.qualifier)
    )


def is_multiplicative(kind: SliKind) -> bool:
    """Durations, tokens, cost and steps: judged by their ratio to the baseline, their
    noise growing with their level."""
    return kind in _MULTIPLICATIVE


def big_enough(kind: SliKind, baseline: float, observed: float, s: DetectionSettings) -> bool:
    """Whether the shift from ``baseline`` to ``observed`` reaches the minimum effect of
    ``kind``, in its bad direction."""
    if kind in SHARES:
        return (
            observed - baseline >= s.error_rate_min_increase
            and observed >= baseline * s.error_rate_min_ratio
        )
    if kind in _LATENCIES:
        return (
            observed >= baseline * s.latency_min_ratio
            and observed - baseline >= s.latency_min_increase_seconds
        )
    if kind in _USAGE:
        return observed > baseline and observed >= baseline * s.usage_min_ratio
    if kind is SliKind.STEPS_PER_RUN:
        return (
            observed - baseline >= s.steps_min_increase and observed >= baseline * s.usage_min_ratio
        )
    if kind is SliKind.EVAL_SCORE:
        return baseline - observed >= s.eval_score_min_drop
    if kind is SliKind.REQUEST_RATE:
        return baseline > 0 and observed <= baseline * (1.0 - s.request_rate_min_drop)
    if kind is SliKind.MEMORY_UTILISATION:
        return observed - baseline >= s.memory_min_increase
    if kind is SliKind.MEMORY_WORKING_SET:
        return observed >= baseline * s.memory_min_ratio
    if kind is SliKind.CPU_USAGE:
        return (
            observed >= baseline * s.cpu_min_ratio
            and observed - baseline >= s.cpu_min_increase_cores
        )
    return False  # a kind without a declared minimum effect never pages


def within_baseline(kind: SliKind, baseline: float, value: float, s: DetectionSettings) -> bool:
    """Whether ``value`` is back within the baseline: short of the minimum effect."""
    return not big_enough(kind, baseline, value, s)
