"""The simulator of AI-agent fleets and their faults, for the demo, tests and benchmarks.

Case mode: ``simulate_case(FaultSpec(...))`` returns a ``sentinel.cases.Case`` (telemetry
and truth) that is a pure function of the spec: topology, fault kind, seed, magnitude,
onset, start and length. ``suite`` yields specs covering every fault kind.

Modules: ``topology`` (the systems), ``faults`` (what a fault does and where),
``engine`` (the request walk), ``output`` (metrics, spans, the case).
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
from sentinel.sim.output import simulate_case
from sentinel.sim.topology import Topology, system

__all__ = [
    "FaultPlan",
    "FaultSpec",
    "Magnitude",
    "Onset",
    "Remediation",
    "Topology",
    "candidates",
    "fits",
    "plan_fault",
    "simulate_case",
    "suite",
    "system",
]
