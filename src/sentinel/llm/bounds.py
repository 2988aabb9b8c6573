"""What the investigator may change, and what it may not: it re-orders the engine's
hypotheses and moves each confidence at most ``max_shift`` either way; what a gate sees is
never above the engine's own confidence. Pure functions of the engine's hypotheses and a
validated ``Investigation``.

What must not live here: running the LLM, the gates themselves (``sentinel.remediation``).
"""

from __future__ import annotations

from collections.abc import Sequence

from sentinel.llm.outputs import Investigation
from sentinel.rca import Hypothesis

__all__ = ["bounded_ranking", "clamp_confidence", "gate_ranking"]


def clamp_confidence(engine: float, proposed: float, max_shift: float) -> float:
    """``proposed`` kept within ``max_shift`` of ``engine``, and within [0, 1]."""
    low, high = max(0.0, engine - max_shift), min(1.0, engine + max_shift)
    return min(max(proposed, low), high)


def bounded_ranking(
    engine: Sequence[Hypothesis], investigation: Investigation, max_shift: float
) -> tuple[Hypothesis, ...]:
    """The engine's hypotheses in the investigator's order (those it did not rank follow,
    in the engine's order), each confidence clamped to ``max_shift`` of the engine's and
    its evidence extended with the investigator's reason and citations. A component the
    engine did not propose is ignored: the investigator re-ranks, it does not invent."""
    by_component: dict[str, Hypothesis] = {}
    for hyp in engine:
        by_component.setdefault(hyp.component, hyp)
    out: list[Hypothesis] = []
    seen: set[str] = set()
    for cause in investigation.ranking:
        h = by_component.get(cause.component)
        if h is None or cause.component in seen:
            continue
        seen.add(cause.component)
        cited = ", ".join(f"{e.kind.value} {e.id}" for e in cause.evidence)
        out.append(
            h.model_copy(
                update={
                    "confidence": clamp_confidence(h.confidence, cause.confidence, max_shift),
                    "evidence": (*h.evidence, f"investigator: {cause.reason} ({cited})"),
                }
            )
        )
    out.extend(h for h in engine if h.component not in seen)
    return tuple(out)


def gate_ranking(
    engine: Sequence[Hypothesis], investigation: Investigation | None, max_shift: float
) -> tuple[Hypothesis, ...]:
    """The ranking remediation acts on: the investigator's order when there is an
    investigation, each confidence the lower of the engine's and the bounded one. The
    LLM can make an action more cautious, or point it at another hypothesis with that
    hypothesis' own (lower) confidence; it can never lift a confidence past a gate."""
    if investigation is None:
        return tuple(engine)
    own = {h.component: h.confidence for h in engine}
    return tuple(
        h.model_copy(update={"confidence": min(h.confidence, own[h.component])})
        for h in bounded_ranking(engine, investigation, max_shift)
    )
