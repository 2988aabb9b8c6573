"""Service level indicators: defined once, here, for detection, root-cause analysis and
verification alike.

An SLI is a time series of one measured quantity of one component (``SliKey``), on a
fixed grid of steps ``[start + i*step, start + (i+1)*step)`` clipped to ``end``. Every
point carries how many observations it rests on (``SliSeries.counts``), so that a
consumer can tell a confident value from a guess.

Two sources, one vocabulary:

- ``span_slis``: from traces. Exact per-request values (durations, tokens, evaluator
  scores, agent steps), but traces are usually sampled, so everything except
  ``request_rate`` is a ratio or a mean, which sampling does not bias.
- ``metric_slis``: from metric samples (the families the simulator and common exporters
  write; see the ``_FAMILY`` constants). Counters become per-second rates with reset and
  gap handling.
- ``merge``: one view, metric series winning where both exist (metrics see every request).

Conventions: latencies in seconds; rates per second; costs in USD per request; an empty
bucket is a gap (no point), never a made-up zero, except that a component with no request
in a step really had a request rate of 0.

Modules: ``records`` (the records, the time grid (``step_start``) and helpers both sources share,
``merge``), ``spans`` (``span_slis``), ``metrics`` (``metric_slis``, the ``_FAMILY``
constants, ``DEFAULT_MAX_GAP``), ``promql`` (``promql_series``: the answer of a query
declared in ``[[prometheus.slis]]``, placed on the grid). Import from ``sentinel.sli``, not
from the modules.

What must not live here: baselines, anomaly detection, I/O of any kind (callers pass the
spans, samples and time in), and reading the configuration (prices come in as
``PricingSettings``, declared queries as ``PromQLSli``); in this file, anything but re-exports.
"""

from sentinel.sli.metrics import (
    COST_FAMILY,
    DEFAULT_MAX_GAP,
    ERRORS_FAMILY,
    EVAL_FAMILY,
    HISTOGRAM_BUCKET_FAMILY,
    MEMORY_FAMILY,
    MEMORY_LIMIT_FAMILY,
    REQUESTS_FAMILY,
    SUMMARY_COUNT_FAMILY,
    SUMMARY_FAMILY,
    TOKENS_FAMILY,
    TOOL_CALLS_FAMILY,
    metric_slis,
)
from sentinel.sli.promql import (
    ASSUMED_COUNT,
    describe_promql_sli,
    promql_key,
    promql_series,
    whole_steps,
)
from sentinel.sli.records import SliKey, SliKind, SliSeries, merge, step_start
from sentinel.sli.spans import span_slis, span_slis_by_step

__all__ = [
    "ASSUMED_COUNT",
    "COST_FAMILY",
    "DEFAULT_MAX_GAP",
    "ERRORS_FAMILY",
    "EVAL_FAMILY",
    "HISTOGRAM_BUCKET_FAMILY",
    "MEMORY_FAMILY",
    "MEMORY_LIMIT_FAMILY",
    "REQUESTS_FAMILY",
    "SUMMARY_COUNT_FAMILY",
    "SUMMARY_FAMILY",
    "TOKENS_FAMILY",
    "TOOL_CALLS_FAMILY",
    "SliKey",
    "SliKind",
    "SliSeries",
    "describe_promql_sli",
    "merge",
    "metric_slis",
    "promql_key",
    "promql_series",
    "span_slis",
    "span_slis_by_step",
    "step_start",
    "whole_steps",
]
