"""The demo's scenarios: which fault is injected into the live fleet, what the right root
cause is, and which bundled playbook should fix it. The truth here is read only by the
demo's summary ("was the top hypothesis right?") and its tests, never by sentinel.

What must not live here: how a fault is carried out (``demo.fleet`` for faults inside
the fleet, ``demo.run`` for the git commit of a prompt regression).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sentinel.cases import FaultKind

__all__ = ["SCENARIOS", "Scenario", "ScenarioSpec"]


class Scenario(StrEnum):
    PROMPT_REGRESSION = "prompt_regression"
    TOOL_RATE_LIMIT = "tool_rate_limit"
    MODEL_PROVIDER_ERRORS = "model_provider_errors"
    SERVICE_LATENCY = "service_latency"


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    scenario: Scenario
    fault: FaultKind
    root_cause: str  # the component a right diagnosis puts on top
    playbook: str | None  # the bundled playbook that fixes it; None: no automatic fix
    what: str  # the fault, for people
    # A fault nobody at sentinel can fix ends after this many clock minutes (the
    # downstream team fixing their service); None: it lasts until sentinel fixes it.
    heals_after_minutes: float | None = None


SCENARIOS: dict[Scenario, ScenarioSpec] = {
    s.scenario: s
    for s in (
        ScenarioSpec(
            Scenario.PROMPT_REGRESSION,
            FaultKind.PROMPT_REGRESSION,
            root_cause="prompt:support-agent",
            playbook="rollback-bad-change",
            what=(
                "a commit to prompts/support.md tells the support agent to promise refunds: "
                "its answers stop matching the refund policy and get longer"
            ),
        ),
        ScenarioSpec(
            Scenario.TOOL_RATE_LIMIT,
            FaultKind.TOOL_RATE_LIMIT,
            root_cause="tool:order_status",
            playbook="throttle-rate-limited-tool",
            what=(
                "orders-api, behind the order_status tool, lowers its quota to 34 requests "
                "a minute (the agents need about 50) and answers 429 past it"
            ),
        ),
        ScenarioSpec(
            Scenario.MODEL_PROVIDER_ERRORS,
            FaultKind.MODEL_PROVIDER_ERRORS,
            root_cause="model:gpt-4o",
            playbook="model-failover",
            what="the gpt-4o provider fails 40 % of requests with HTTP 503",
        ),
        ScenarioSpec(
            Scenario.SERVICE_LATENCY,
            FaultKind.SERVICE_LATENCY,
            root_cause="service:kb-api",
            playbook=None,
            what=(
                "kb-api, the knowledge base behind the kb_search tool, answers 6 times "
                "slower; no playbook fixes a service sentinel does not own, so its team "
                "does, 12 minutes later"
            ),
            heals_after_minutes=12.0,
        ),
    )
}
