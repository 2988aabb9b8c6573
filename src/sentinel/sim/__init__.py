"""The simulator of AI-agent fleets and their faults, for the demo, tests and benchmarks.

Case mode: ``simulate_case(FaultSpec(...))`` returns a ``sentinel.cases.Case`` (telemetry
and truth) that is a pure function of the spec: topology, fault kind, seed, magnitude,
onset, start and length. ``suite`` yields specs covering every fault kind.

Live mode: ``LiveRun(spec, clock, endpoint).run()`` (or ``run_live``) plays the same case in
real or accelerated time against a running daemon: spans as OTLP/HTTP once they have
ended on the clock, metrics on a ``/metrics`` endpoint to scrape.

Modules: ``topology`` (the systems), ``faults`` (what a fault does and where),
``engine`` (the request walk), ``output`` (metrics, spans, the case), ``live`` (playing
a case to a daemon).
"""

from sentinel.sim.faults import (
    FaultPlan,
    FaultSpec,
    Magnitude,
    Onset,
    Remediation,
    candidates,
    fits,
    plan_fault,
    suite,
)
from sentinel.sim.live import LiveExportError, LiveReport, LiveRun, RetryPolicy, run_live
from sentinel.sim.output import simulate_case
from sentinel.sim.topology import Topology, system

__all__ = [
    "FaultPlan",
    "FaultSpec",
    "LiveExportError",
    "LiveReport",
    "LiveRun",
    "Magnitude",
    "Onset",
    "Remediation",
    "RetryPolicy",
    "Topology",
    "candidates",
    "fits",
    "plan_fault",
    "run_live",
    "simulate_case",
    "suite",
    "system",
]
