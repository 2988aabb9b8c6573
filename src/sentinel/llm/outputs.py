"""The structured outputs of sentinel's LLM agents, as the model must return them. Their
shape is checked by pydantic; what they claim (a component that is a hypothesis, evidence
that is in the store) is checked by the agents' output validators (``llm.agents``).

What must not live here: the checks against the store, the bounds on confidence
(``llm.bounds``).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EvidenceKind", "EvidenceRef", "Investigation", "Narrative", "RankedCause"]


class _Output(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Narrative(_Output):
    """The ticket's story of the incident."""

    summary: str = Field(
        min_length=1, max_length=1500, description="What happened, in 2-4 plain sentences."
    )
    likely_cause: str = Field(
        min_length=1,
        max_length=500,
        description="The most likely cause and why, in one or two sentences.",
    )
    cause_component: str = Field(
        description="The hypothesis component the likely cause is about, exactly as listed."
    )
    next_checks: list[str] = Field(
        min_length=1,
        max_length=5,
        description="What a person should check next, most useful first.",
    )


class EvidenceKind(StrEnum):
    SPAN = "span"  # id "<trace_id>:<span_id>", as the exemplar_traces tool lists it
    CHANGE = "change"  # id: the change's id, as the changes tool lists it
    ANOMALY = "anomaly"  # id "<component>/<sli>" or "<component>/<sli>/<qualifier>"


class EvidenceRef(_Output):
    kind: EvidenceKind
    id: str = Field(min_length=1, max_length=200)


class RankedCause(_Output):
    component: str = Field(description="A hypothesis component, exactly as listed.")
    confidence: float = Field(ge=0, le=1)
    reason: str = Field(min_length=1, max_length=600)
    evidence: list[EvidenceRef] = Field(
        min_length=1,
        max_length=8,
        description="Evidence the tools returned that supports this rank.",
    )


class Investigation(_Output):
    """The investigator's re-ranking of the engine's hypotheses, best first."""

    ranking: list[RankedCause] = Field(min_length=1, max_length=10)
    summary: str = Field(
        min_length=1, max_length=1000, description="What the investigation found, in 1-3 sentences."
    )
