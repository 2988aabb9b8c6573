"""The LLM stage as the daemon runs it: every open incident with hypotheses gets a
narrative for its ticket, and an investigation when the engine's top hypothesis is unsure
(confidence below ``llm.investigate_below``). Each run is recorded (``LlmRecord``: outcome,
prompt version, model, tokens, cost) whatever happens, and the ticket is refreshed.

The LLM never blocks anything: a timeout, a spent token budget, an unreachable endpoint, an
output that fails validation (hallucinated evidence included) are recorded with a note, and
the ticket keeps the deterministic ranking and says why. A run is not repeated for the same
diagnosis (the record's ``basis``), so a failing endpoint costs one attempt per diagnosis,
not one per interval.

What must not live here: the agents and their checks (``llm.agents``), the bounds
(``llm.bounds``), SQL, scheduling (``daemon.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import httpx
import structlog
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelAPIError, UnexpectedModelBehavior, UsageLimitExceeded
from pydantic_ai.models import Model
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RunUsage, UsageLimits

from sentinel.agents.root_cause import evidence_window
from sentinel.clock import Clock
from sentinel.errors import StoreError, UnknownIncident
from sentinel.incidents import Incident, fold, lifecycle_events
from sentinel.llm.agents import (
    Evidence,
    basis_of,
    investigator_agent,
    narrative_agent,
    render_incident,
)
from sentinel.llm.bounds import bounded_ranking
from sentinel.llm.outputs import Investigation, Narrative
from sentinel.llm.prompts import Prompt, load_prompt
from sentinel.llm.records import LlmAgentName, LlmOutcome, LlmRecord
from sentinel.observability import SelfMetrics
from sentinel.ports import IncidentStore, LlmOutputStore, TelemetryStore
from sentinel.rca import Hypothesis
from sentinel.redact import redactor_for
from sentinel.settings import Settings
from sentinel.telemetry import TopologyEdge

__all__ = ["ExplainRun", "ExplainStore", "Explainer"]

log = structlog.get_logger(__name__)

# The most a single model response may write; the rest of the budget stays for retries.
MAX_OUTPUT_TOKENS = 2_000


class ExplainStore(TelemetryStore, IncidentStore, LlmOutputStore, Protocol):
    """What the stage reads and writes (``adapters.db.SqlStore``)."""


@dataclass
class ExplainRun:
    """What one run did."""

    written: list[LlmRecord] = field(default_factory=list)


class Explainer:
    """Runs the narrative and investigator agents on open incidents (``run_once``)."""

    def __init__(
        self,
        settings: Settings,
        store: ExplainStore,
        clock: Clock,
        model: Model,
        *,
        instrument: InstrumentationSettings | None = None,
        metrics: SelfMetrics | None = None,
        on_written: Callable[[str], None] | None = None,
        topology: Sequence[TopologyEdge] = (),
    ) -> None:
        """Loads the prompts now: a missing or empty prompt file is a ``ConfigError``."""
        self.settings = settings
        self._redactor = redactor_for(settings.redaction)
        self.llm = settings.llm
        self.store = store
        self.clock = clock
        self.model = model
        self.metrics = metrics
        self.on_written = on_written
        self.topology = tuple(topology)
        folder = settings.resolve(self.llm.prompts_dir)
        self.prompts: dict[LlmAgentName, Prompt] = {
            a: load_prompt(folder, a.value, self.llm.prompt_versions.get(a.value))
            for a in LlmAgentName
        }
        retries = self.llm.retries
        self.narrative = narrative_agent(
            model, self.prompts[LlmAgentName.NARRATIVE], retries=retries, instrument=instrument
        )
        self.investigator = investigator_agent(
            model, self.prompts[LlmAgentName.INVESTIGATOR], retries=retries, instrument=instrument
        )

    @property
    def model_name(self) -> str:
        return (
            self.llm.model if self.llm.enabled else f"{self.model.system}:{self.model.model_name}"
        )

    async def run_once(self) -> ExplainRun:
        run = ExplainRun()
        incidents = await asyncio.to_thread(self.store.incidents, open_only=True)
        for incident in incidents:
            try:
                run.written.extend(await self.explain(incident))
            except UnknownIncident:
                continue  # deleted meanwhile
        return run

    async def explain(self, incident: Incident) -> list[LlmRecord]:
        """The agents this incident still needs for its current diagnosis, run and
        recorded; the ticket refreshed when something was written."""
        hypotheses = tuple(await asyncio.to_thread(self.store.hypotheses, incident.id))
        if not hypotheses:
            return []
        basis = basis_of(hypotheses)
        done = {
            r.agent
            for r in await asyncio.to_thread(self.store.llm_outputs, incident.id)
            if r.basis == basis
        }
        wanted = [LlmAgentName.NARRATIVE]
        if hypotheses[0].confidence < self.llm.investigate_below:
            # First, so that the narrative tells the investigated story.
            wanted.insert(0, LlmAgentName.INVESTIGATOR)
        todo = [a for a in wanted if a not in done]
        if not todo:
            return []
        now = self.clock.now()
        evidence = await asyncio.to_thread(self._evidence, incident, hypotheses, now)
        if evidence is None:
            return []
        written: list[LlmRecord] = []
        for agent in todo:
            record = await self._run(agent, evidence, basis)
            await asyncio.to_thread(self.store.put_llm_output, record)
            written.append(record)
            self._count(record)
            if agent is LlmAgentName.INVESTIGATOR and record.outcome is LlmOutcome.OK:
                assert record.output is not None
                inv = Investigation.model_validate(record.output)
                evidence.hypotheses = bounded_ranking(
                    hypotheses, inv, self.llm.max_confidence_shift
                )
        if self.on_written is not None:
            await asyncio.to_thread(self.on_written, incident.id)
        return written

    def _evidence(
        self, incident: Incident, hypotheses: tuple[Hypothesis, ...], now: datetime
    ) -> Evidence | None:
        state = fold(lifecycle_events(self.store.audit(incident.id)))
        if state is None:
            return None
        try:
            spans, changes = evidence_window(self.store, state.onset, now)
        except StoreError as e:
            log.error(
                "llm: reading the incident's evidence failed", incident=incident.id, error=str(e)
            )
            return None
        return Evidence(
            incident=incident,
            anomalies=tuple(state.anomalies),
            hypotheses=hypotheses,
            spans=tuple(spans),
            changes=tuple(changes),
            now=now,
            store=self.store,
            topology=self.topology,
            pricing=self.settings.pricing,
        )

    async def _run(self, agent: LlmAgentName, ev: Evidence, basis: str) -> LlmRecord:
        prompt = self.prompts[agent]
        used = await asyncio.to_thread(self.store.llm_tokens_used, ev.incident.id)
        left = self.llm.max_tokens_per_incident - used
        usage = RunUsage()

        def redact(value: Any) -> Any:
            # Before it is stored: the model may quote an e-mail or a key it was shown.
            return value if self._redactor is None else self._redactor.value(value)

        def record(
            outcome: LlmOutcome, output: BaseModel | None = None, note: str = ""
        ) -> LlmRecord:
            return LlmRecord(
                incident_id=ev.incident.id,
                agent=agent,
                basis=basis,
                outcome=outcome,
                prompt=prompt.name,
                prompt_version=prompt.version,
                model=self.model_name,
                created_at=self.clock.now(),
                output=None if output is None else redact(output.model_dump(mode="json")),
                note=redact(note),
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost_usd=self._cost(usage),
            )

        if left <= 0:
            return record(
                LlmOutcome.BUDGET,
                note=f"the incident's token budget ({self.llm.max_tokens_per_incident}) is spent",
            )
        runner: Agent[Evidence, Narrative] | Agent[Evidence, Investigation] = (
            self.narrative if agent is LlmAgentName.NARRATIVE else self.investigator
        )
        try:
            async with asyncio.timeout(self.llm.timeout_seconds):
                result = await runner.run(
                    render_incident(ev),
                    deps=ev,
                    usage=usage,
                    usage_limits=UsageLimits(total_tokens_limit=left, request_limit=10),
                    model_settings=ModelSettings(
                        max_tokens=min(left, MAX_OUTPUT_TOKENS),
                        timeout=self.llm.timeout_seconds,
                    ),
                )
        except TimeoutError:
            return record(
                LlmOutcome.TIMEOUT, note=f"no answer within {self.llm.timeout_seconds:g} s"
            )
        except UsageLimitExceeded as e:
            return record(LlmOutcome.BUDGET, note=f"the incident's token budget ran out: {e}")
        except UnexpectedModelBehavior as e:
            why = ev.rejections[-1] if ev.rejections else str(e)
            return record(
                LlmOutcome.REJECTED, note=f"output refused after {self.llm.retries} retries: {why}"
            )
        except (ModelAPIError, httpx.HTTPError, OSError) as e:
            return record(LlmOutcome.UNREACHABLE, note=f"{type(e).__name__}: {e}"[:500])
        except Exception as e:  # an LLM bug must not stop the stage: recorded, logged
            log.error("llm agent failed", agent=agent.value, incident=ev.incident.id, exc_info=True)
            return record(LlmOutcome.ERROR, note=f"{type(e).__name__}: {e}"[:500])
        return record(LlmOutcome.OK, output=result.output)

    def _cost(self, usage: RunUsage) -> float:
        price = self.settings.pricing.models.get(self.llm.model.removeprefix("openai:"))
        return 0.0 if price is None else price.cost(usage.input_tokens, usage.output_tokens)

    def _count(self, r: LlmRecord) -> None:
        log.info(
            "llm output recorded",
            incident=r.incident_id,
            agent=r.agent.value,
            outcome=r.outcome.value,
            prompt=f"{r.prompt}.{r.prompt_version}",
            tokens=r.tokens,
            cost_usd=round(r.cost_usd, 6),
            note=r.note or None,
        )
        if self.metrics is None:
            return
        self.metrics.llm_runs.labels(agent=r.agent.value, outcome=r.outcome.value).inc()
        self.metrics.llm_tokens.labels(agent=r.agent.value, direction="input").inc(r.input_tokens)
        self.metrics.llm_tokens.labels(agent=r.agent.value, direction="output").inc(r.output_tokens)
        self.metrics.llm_cost.inc(r.cost_usd)
