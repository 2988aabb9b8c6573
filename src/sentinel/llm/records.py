"""What sentinel's own LLM agents produced for an incident, as stored: one ``LlmRecord``
per agent run (narrative or investigation), whatever its outcome, with the prompt version,
the model, the tokens and the cost. The store keeps every record (``llm_outputs``); the
newest one of an agent for the incident's current diagnosis is the one in use.

What must not live here: the agents themselves (``sentinel.llm.agents``), SQL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sentinel.rca import Hypothesis
from sentinel.telemetry import AwareDatetime

__all__ = ["LlmAgentName", "LlmOutcome", "LlmRecord", "basis_of"]


class LlmAgentName(StrEnum):
    NARRATIVE = "narrative"  # the ticket's summary, likely cause and what to check next
    INVESTIGATOR = "investigator"  # a bounded re-ranking when the engine is unsure


class LlmOutcome(StrEnum):
    OK = "ok"  # validated output, in use
    REJECTED = "rejected"  # invalid (or cited evidence not in the store) after the retries
    TIMEOUT = "timeout"  # no answer within llm.timeout_seconds
    BUDGET = "budget"  # the incident's token budget is spent (or would be by this run)
    UNREACHABLE = "unreachable"  # the endpoint refused, failed or could not be reached
    ERROR = "error"  # anything else the model or the run raised


class LlmRecord(BaseModel):
    """One run of one LLM agent on one incident."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    incident_id: str
    agent: LlmAgentName
    # Digest of the hypotheses the run was given (``basis_of``): a record whose
    # basis is not the incident's current one is stale, and the agent runs again.
    basis: str
    outcome: LlmOutcome
    prompt: str  # the prompt's name (prompts/<name>.v<N>.md)
    prompt_version: str  # "v1"
    model: str  # as configured ("openai:gpt-4o", "function:..." in tests)
    created_at: AwareDatetime
    # The validated output as JSON data (``Narrative`` or ``Investigation``); None unless OK.
    output: dict[str, Any] | None = None
    note: str = ""  # why it is not OK, for the ticket and the log
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def basis_of(hypotheses: Sequence[Hypothesis]) -> str:
    """A digest of what an agent was given: a stored output whose basis differs from the
    incident's current one was written for an older diagnosis."""
    data = [
        [h.component, h.fault, round(h.confidence, 3), h.change, list(h.evidence)]
        for h in hypotheses
    ]
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:16]
