"""Detection: robust baselines, level-shift/drift detectors with a change-point onset,
and the emergence of new error types, over SLI series (``sentinel.sli``).

Everything here is pure: ``detect`` takes the SLIs, the instant ``now`` and the settings,
and returns the anomalies and the series it could not judge. Calling it at each
interval with a later ``now`` is what the Metric Agent (and ``sentinel detect``) do.

How one series is judged at ``now`` (only steps complete at ``now`` are used):

- the *recent* window (``recent_minutes`` before now) is searched for a change point;
  the *baseline* is the ``baseline_minutes`` before it (so a shift in progress does not
  pollute its own baseline): its median, and its MAD as the noise scale;
- points resting on fewer than ``min_point_count`` observations are dropped (a p95 of
  two requests is noise), except for the request rate, whose 0 is a real value;
- every split of the recent window is a candidate onset; the tail after it must hold
  ``persistence_points`` points, exceed the minimum effect of its SLI kind (relative and
  absolute, in the direction that is bad for that kind), stay beyond it over the last
  ``persistence_points`` points, and be significant: a robust z of the tail's median for
  continuous SLIs, a binomial tail probability of the pooled errors for shares (error
  rates weigh each point by its requests; a continuous point resting on fewer
  observations than the baseline's typical point counts as noisier). The onset is the
  best two-level fit among the splits from the earliest significant one on (least
  absolute deviations, or the binomial likelihood for shares), moved back over the
  points just before it that are already clearly beyond the baseline (so a ramp is dated
  from its start, not its middle);
- a shift that has not held ``persistence_points`` yet is still an anomaly when its
  evidence and effect are overwhelming (the fast path: ``fast_persistence_points``, each
  resting on ``fast_min_point_count`` observations (evaluator scores:
  ``fast_min_score_count`` scored runs; a p50 above the slowest call of the baseline,
  its two slowest points aside, on ``min_point_count`` calls), with ``min_z`` and the minimum
  effects times ``fast_evidence_factor``, ratios and ``max_p_value`` to that power), so
  a hard failure pages on its first complete step; a drop of traffic always needs the
  full persistence;
- the fast path is also judged on the same SLI at ``step_seconds / fast_step_divisor``
  when the caller passes it (``fine``): the same detector and bars over its own
  baseline, so two points of a hard failure take half a step each. A share's short
  point needs only its share of the step's observations, and its baseline's runs count
  at their lower confidence bound (one error in three calls is not a burst); an
  evaluator score's short points count from one scored run, ``fast_min_score_count``
  runs being asked of them together; the onset found is put on the step grid;
- a series none of the step's paths finds a shift in (or not enough data in) is judged
  again on the same SLI at ``step_seconds * coarse_step_multiple`` when the caller passes
  it (``coarse``): the full path's bars and burst check over its own baseline, with
  ``coarse_persistence_points``, ``coarse_min_baseline_points`` and a longer recent
  window, ``coarse_recent_minutes`` (its tail holds more evidence). A subtle fault of a
  component called a few times a minute has too few errors or slow calls in any one step
  to pass the bars; pooled over longer points it does (its onset is on the coarse grid,
  which the hindsight refit dates again on the step's);
- a share's baseline rate is tested at its upper confidence bound: a quiet component
  that showed no error in its baseline by chance does not page on a few errors;
- a component whose baseline shows short bursts must beat its worst burst of as many
  points by the minimum effect (the fast path's, on the fast path; shares on the full
  path too), so the next burst of a bursty provider is not a page;
- a share's shift must not rest on one point: without its most erroneous point the rest
  of the persistence window must still be consistent with the minimum effect, and the
  onset found must leave the persistence behind it (a spike after quiet points is not
  a shift that held);
- an error type (of requests, or of calls refused before reaching their callee) with
  no error in the whole baseline that shows ``emergence_min_errors``
  recent errors is an emergence, whatever its baseline share;
- too few baseline or recent points, a gap at the end, zero traffic or too few
  observations give a typed ``NotEnoughData``, never a guess.

The package: ``model`` (the records, each SLI kind's direction and minimum effect),
``stats`` (baseline, tail probabilities, rate bounds), ``detectors`` (level shift, share
shift and emergence, traffic drop), ``changepoint`` (where a found shift starts),
``judge`` (the windows and paths above, ``detect``).

What must not live here: I/O, the clock, reading config (settings come in), incidents.
"""

from sentinel.detection.judge import CoarseMemo, detect, detect_series
from sentinel.detection.model import (
    Anomaly,
    DetectionResult,
    Detector,
    Direction,
    NotEnoughData,
    NotEnoughDataReason,
    direction_of,
    is_error_type,
    is_multiplicative,
    is_share,
    within_baseline,
)

__all__ = [
    "Anomaly",
    "CoarseMemo",
    "DetectionResult",
    "Detector",
    "Direction",
    "NotEnoughData",
    "NotEnoughDataReason",
    "detect",
    "detect_series",
    "direction_of",
    "is_error_type",
    "is_multiplicative",
    "is_share",
    "within_baseline",
]
