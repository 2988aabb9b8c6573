"""What the LLM agents' stored records mean for an incident now: the records written for
its current diagnosis (``current_output``), the ticket's story (``story_view``) and the
investigation remediation may act on (``current_investigation``). Pure functions of the
records and the engine's hypotheses.

What must not live here: running the agents (``agents.explainer``), rendering the ticket
(``sentinel.tickets``).
"""

from __future__ import annotations

from collections.abc import Sequence

from sentinel.llm.bounds import bounded_ranking
from sentinel.llm.outputs import Investigation, Narrative
from sentinel.llm.records import LlmAgentName, LlmOutcome, LlmRecord, basis_of
from sentinel.rca import Hypothesis, percent
from sentinel.tickets import StoryView

__all__ = ["current_investigation", "current_output", "story_view"]


def current_output(
    records: Sequence[LlmRecord], agent: LlmAgentName, hypotheses: Sequence[Hypothesis]
) -> LlmRecord | None:
    """The newest record of ``agent`` written for the current diagnosis (same basis)."""
    basis = basis_of(hypotheses)
    mine = [r for r in records if r.agent is agent and r.basis == basis]
    return mine[-1] if mine else None


def current_investigation(
    records: Sequence[LlmRecord], hypotheses: Sequence[Hypothesis]
) -> Investigation | None:
    """The validated investigation of the current diagnosis, if one succeeded."""
    return _investigation(current_output(records, LlmAgentName.INVESTIGATOR, hypotheses))


def _investigation(r: LlmRecord | None) -> Investigation | None:
    if r is None or r.outcome is not LlmOutcome.OK or r.output is None:
        return None
    return Investigation.model_validate(r.output)


def story_view(
    records: Sequence[LlmRecord], hypotheses: Sequence[Hypothesis], max_shift: float
) -> StoryView | None:
    """What the ticket shows of the LLM's work on the current diagnosis; None when the
    agents have not run on it (or the LLM is off)."""
    narrative = current_output(records, LlmAgentName.NARRATIVE, hypotheses)
    investigated = current_output(records, LlmAgentName.INVESTIGATOR, hypotheses)
    if narrative is None and investigated is None:
        return None
    view = StoryView()
    notes: list[str] = []
    sources: list[str] = []
    for r in (narrative, investigated):
        if r is None:
            continue
        if r.outcome is LlmOutcome.OK:
            sources.append(f"{r.prompt}.{r.prompt_version} · {r.model}")
        else:
            notes.append(
                f"LLM {r.agent.value} unavailable ({r.outcome.value}: {r.note}); "
                "the ranking below is the engine's own"
            )
    if narrative is not None and narrative.outcome is LlmOutcome.OK and narrative.output:
        n = Narrative.model_validate(narrative.output)
        view = StoryView(
            summary=n.summary, likely_cause=n.likely_cause, next_checks=tuple(n.next_checks)
        )
    inv = _investigation(investigated)
    if inv is not None:
        engine = {h.component: h.confidence for h in hypotheses}
        reasons = {c.component: c.reason for c in inv.ranking}
        lines = tuple(
            f"{n}. {h.component} {percent(h.confidence)} (engine "
            f"{percent(engine[h.component])})"
            + (f": {reasons[h.component]}" if h.component in reasons else "")
            for n, h in enumerate(bounded_ranking(hypotheses, inv, max_shift)[:5], start=1)
        )
        view = view.model_copy(update={"investigation": lines})
    return view.model_copy(update={"note": " · ".join(notes), "source": " + ".join(sources)})
