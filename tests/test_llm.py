"""sentinel's own LLM agents on real parts: real pydantic-ai agents driven by
``FunctionModel`` (model requests are not allowed in this suite), a real SQLite store
holding a simulated incident that the real detector opened and the real engine diagnosed,
the real ticket outbox and the real Remediation Agent's gates.

What must not live here: the store's own round trips of the records (``test_store_llm``).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic_ai import models
from pydantic_ai.exceptions import ModelAPIError
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.usage import RequestUsage

from sentinel.adapters.db import SqlStore, open_store
from sentinel.adapters.executors import FakeExecutor, MemoryNotifier
from sentinel.agents.explainer import Explainer
from sentinel.agents.remediation import RemediationAgent
from sentinel.agents.root_cause import DiagnosisOutcome, diagnose_stored
from sentinel.agents.tickets import refresh_ticket
from sentinel.cases import FaultKind, ingest_case
from sentinel.clock import FakeClock
from sentinel.daemon import daemon_thread
from sentinel.detection import Anomaly
from sentinel.errors import ConfigError
from sentinel.incidents import Incident, IncidentOpened, TrackedIncident, audit_entry
from sentinel.llm.agents import anomaly_id, basis_of, build_model
from sentinel.llm.bounds import bounded_ranking, clamp_confidence, gate_ranking
from sentinel.llm.outputs import EvidenceKind, EvidenceRef, Investigation, RankedCause
from sentinel.llm.prompts import load_prompt
from sentinel.llm.records import LlmAgentName, LlmOutcome, LlmRecord
from sentinel.llm.story import current_investigation
from sentinel.observability import SelfMetrics
from sentinel.playbooks.model import Playbook
from sentinel.rca import Hypothesis, percent
from sentinel.remediation import Gate
from sentinel.settings import Secrets, Settings
from sentinel.sim import FaultSpec, Topology, simulate_case
from sentinel.telemetry import SliKind, Span
from tests.harness import make_settings
from tests.ports import free_port
from tests.test_cli import write_config
from tests.test_cli_incidents import detected, persist
from tests.test_cli_incidents import run as run_cli

ROOT = Path(__file__).resolve().parents[1]
SPAN_REF = re.compile(r"span ([0-9a-f]{32}):([0-9a-f]{16})")


@pytest.fixture(autouse=True)
def no_model_requests() -> Iterator[None]:
    """No test here may reach a real model: only FunctionModel answers."""
    with models.override_allow_model_requests(False):
        yield


@dataclass(frozen=True)
class World:
    db: Path  # a store with one open, diagnosed incident
    incident_id: str
    now: datetime


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    folder = tmp_path_factory.mktemp("llm")
    case = simulate_case(
        FaultSpec(topology=Topology.SUPPORT, fault=FaultKind.TOOL_RATE_LIMIT, seed=11)
    )
    now = case.meta.end
    db = folder / "world.db"
    store = open_store(f"sqlite:///{db}", FakeClock(now))
    try:
        ingest_case(store, case)
        (state,) = persist(store, detected(case)).values()
        assert diagnose_stored(store, state, now) is DiagnosisOutcome.DIAGNOSED
    finally:
        store.close()
    return World(db, state.id, now)


@pytest.fixture
def store(world: World, tmp_path: Path) -> Iterator[SqlStore]:
    """A copy of the world's store, for one test to write in."""
    db = tmp_path / "s.db"
    shutil.copy(world.db, db)
    s = open_store(f"sqlite:///{db}", FakeClock(world.now))
    yield s
    s.close()


def llm_settings(tmp_path: Path, **llm: Any) -> Settings:
    values = {"model": "openai:gpt-4o-mini", "prompts_dir": str(ROOT / "prompts"), **llm}
    return Settings.model_validate({"llm": values, "base_dir": tmp_path})


Reply = Callable[[list[ModelMessage], AgentInfo], ModelResponse]


def output(
    info: AgentInfo, args: dict[str, Any], tokens: tuple[int, int] = (300, 60)
) -> ModelResponse:
    return ModelResponse(
        parts=[ToolCallPart(info.output_tools[0].name, args)],
        usage=RequestUsage(input_tokens=tokens[0], output_tokens=tokens[1]),
    )


def tool_call(name: str, args: dict[str, Any]) -> ModelResponse:
    return ModelResponse(
        parts=[ToolCallPart(name, args)], usage=RequestUsage(input_tokens=200, output_tokens=20)
    )


def narrative(component: str, **over: Any) -> dict[str, Any]:
    return {
        "summary": "The support agent slowed down and failed more often.",
        "likely_cause": f"{component} is rate limited.",
        "cause_component": component,
        "next_checks": ["Check the tool's rate-limit headers."],
        **over,
    }


class Scripted:
    """A FunctionModel script: each call answers with the next reply."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.seen: list[list[ModelMessage]] = []

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.seen.append(list(messages))
        reply = self.replies[min(len(self.seen), len(self.replies)) - 1]
        return reply(messages, info)

    @property
    def model(self) -> FunctionModel:
        return FunctionModel(self)


def explainer(settings: Settings, store: SqlStore, model: FunctionModel, **kw: Any) -> Explainer:
    def refresh(incident_id: str) -> None:
        refresh_ticket(store, incident_id, max_shift=settings.llm.max_confidence_shift)

    return Explainer(settings, store, store.clock, model, on_written=refresh, **kw)


def ticket_text(store: SqlStore, incident_id: str) -> str:
    t = store.ticket(incident_id)
    assert t is not None
    return t.text


def retries_sent(messages: list[ModelMessage]) -> list[str]:
    """What was sent back to the model about its outputs (retry prompts; pydantic-ai
    answers a refused output tool call with its reason)."""
    return [
        p.model_response() if isinstance(p, RetryPromptPart) else str(p.content)
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, RetryPromptPart | ToolReturnPart)
    ]


# --- the narrative ---------------------------------------------------------------------------


def test_a_valid_narrative_is_stored_with_its_prompt_version_and_tokens_and_ticketed(
    world: World, store: SqlStore, tmp_path: Path
) -> None:
    top = store.hypotheses(world.incident_id)[0]
    script = Scripted(lambda m, info: output(info, narrative(top.component)))
    metrics = SelfMetrics()
    s = llm_settings(tmp_path, investigate_below=0.0)
    ex = explainer(s, store, script.model, metrics=metrics)

    run = asyncio.run(ex.run_once())

    (record,) = run.written
    assert record.outcome is LlmOutcome.OK and record.agent is LlmAgentName.NARRATIVE
    assert (record.prompt, record.prompt_version) == ("narrative", "v1")
    assert (record.input_tokens, record.output_tokens) == (300, 60)
    price = s.pricing.models["gpt-4o-mini"]
    assert record.cost_usd == pytest.approx(
        (300 * price.input_per_million + 60 * price.output_per_million) / 1e6
    )
    assert store.llm_outputs(world.incident_id) == [record]
    text = ticket_text(store, world.incident_id)
    assert "Summary: The support agent slowed down" in text
    assert f"Likely cause: {top.component} is rate limited." in text
    assert "written by narrative.v1 · openai:gpt-4o-mini" in text
    # The engine's ranking is still there, below the story.
    assert text.index("Summary:") < text.index("Likely causes:")
    assert metrics.llm_runs.labels(agent="narrative", outcome="ok")._value.get() == 1
    # `sentinel incident` tells the same story, and --json lists the record.
    cfg = write_config(tmp_path / "cli", f'[store]\nurl = "{store.url}"\n')
    shown = run_cli("incident", world.incident_id, "-c", str(cfg))
    assert shown.exit_code == 0, shown.output
    assert "Summary: The support agent slowed down" in shown.output
    doc = json.loads(run_cli("incident", world.incident_id, "--json", "-c", str(cfg)).output)
    assert [r["prompt_version"] for r in doc["llm"]] == ["v1"]
    # Same diagnosis: nothing to do again, the model is not called.
    assert asyncio.run(ex.run_once()).written == []
    assert len(script.seen) == 1


def test_pii_and_keys_in_an_output_are_redacted_before_it_is_stored(
    world: World, store: SqlStore, tmp_path: Path
) -> None:
    top = store.hypotheses(world.incident_id)[0]
    leaky = narrative(
        top.component,
        summary="Customer jane.doe@example.com (+1 415 555 0132) saw errors.",
        next_checks=["Rotate sk-proj-abcdefghijklmnopqrstuvwx, then retry."],
    )
    script = Scripted(lambda m, info: output(info, leaky))
    ex = explainer(llm_settings(tmp_path, investigate_below=0.0), store, script.model)

    asyncio.run(ex.run_once())

    (record,) = store.llm_outputs(world.incident_id)
    assert record.output is not None
    assert record.output["summary"] == "Customer [REDACTED:email] ([REDACTED:phone]) saw errors."
    assert record.output["next_checks"] == ["Rotate [REDACTED:api_key], then retry."]
    assert "jane.doe" not in ticket_text(store, world.incident_id)


def test_an_invalid_output_is_sent_back_and_the_corrected_one_is_kept(
    world: World, store: SqlStore, tmp_path: Path
) -> None:
    top = store.hypotheses(world.incident_id)[0]
    script = Scripted(
        # Not a hypothesis: refused by the validator.
        lambda m, info: output(info, narrative("tool:imaginary")),
        # Not the schema (no next_checks): refused by pydantic.
        lambda m, info: output(
            info, {k: v for k, v in narrative(top.component).items() if k != "next_checks"}
        ),
        lambda m, info: output(info, narrative(top.component)),
    )
    s = llm_settings(tmp_path, investigate_below=0.0, retries=2)

    (record,) = asyncio.run(explainer(s, store, script.model).run_once()).written

    assert record.outcome is LlmOutcome.OK
    assert record.output is not None and record.output["cause_component"] == top.component
    assert len(script.seen) == 3
    sent = retries_sent(script.seen[-1])
    assert any("'tool:imaginary' is not a hypothesis" in r for r in sent)
    assert any("next_checks" in r for r in sent)
    # Every attempt's tokens are counted.
    assert record.input_tokens == 900


# --- the investigator ------------------------------------------------------------------------


def cite_first_exemplar(component: str, confidence: float) -> Reply:
    """An investigator that reads the component's exemplar traces, then cites one."""

    def reply(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returned = [
            str(p.content)
            for m in messages
            if isinstance(m, ModelRequest)
            for p in m.parts
            if isinstance(p, ToolReturnPart) and p.tool_name == "exemplar_traces"
        ]
        if not returned:
            return tool_call("exemplar_traces", {"component": component})
        trace, span = SPAN_REF.findall(returned[-1])[0]
        return output(
            info,
            {
                "ranking": [
                    {
                        "component": component,
                        "confidence": confidence,
                        "reason": "its calls fail with 429s",
                        "evidence": [{"kind": "span", "id": f"{trace}:{span}"}],
                    }
                ],
                "summary": "The tool is rate limited.",
            },
        )

    return reply


def is_narrative(info: AgentInfo) -> bool:
    """Whether the run asking is the narrative (its output schema has cause_component)."""
    return "cause_component" in str(info.output_tools[0].parameters_json_schema)


def test_the_investigator_cites_what_its_tools_returned(
    world: World, store: SqlStore, tmp_path: Path
) -> None:
    engine = store.hypotheses(world.incident_id)
    second = engine[1]
    investigate = Scripted(cite_first_exemplar(second.component, 0.9))

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if is_narrative(info):
            return output(info, narrative(second.component))
        return investigate(messages, info)

    s = llm_settings(tmp_path, investigate_below=1.0)
    written = asyncio.run(explainer(s, store, FunctionModel(answer)).run_once()).written

    assert [r.agent for r in written] == [LlmAgentName.INVESTIGATOR, LlmAgentName.NARRATIVE]
    assert all(r.outcome is LlmOutcome.OK for r in written)
    assert len(investigate.seen) == 2  # a tool call, then the cited answer
    inv = current_investigation(store.llm_outputs(world.incident_id), engine)
    assert inv is not None and inv.ranking[0].component == second.component
    text = ticket_text(store, world.incident_id)
    assert "Investigator's re-ranking" in text
    # Moved up to first, its confidence moved at most 15 points.
    bounded = percent(min(second.confidence + 0.15, 0.9))
    engine_p = percent(second.confidence)
    assert f"1. {second.component} {bounded} (engine {engine_p}): its calls fail" in text


def test_hallucinated_evidence_is_refused_and_nothing_changes(
    world: World, store: SqlStore, tmp_path: Path
) -> None:
    engine = store.hypotheses(world.incident_id)
    made_up = {"kind": "span", "id": "0" * 32 + ":" + "1" * 16}

    def invent(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if is_narrative(info):
            return output(info, narrative(engine[0].component))
        return output(
            info,
            {
                "ranking": [
                    {
                        "component": engine[-1].component,
                        "confidence": 1.0,
                        "reason": "trust me",
                        "evidence": [made_up, {"kind": "change", "id": "no-such-change"}],
                    }
                ],
                "summary": "Invented.",
            },
        )

    s = llm_settings(tmp_path, investigate_below=1.0, retries=2)
    written = asyncio.run(explainer(s, store, FunctionModel(invent)).run_once()).written

    inv, story = written
    assert inv.outcome is LlmOutcome.REJECTED and inv.output is None
    assert "not in the store" in inv.note and "no-such-change" in inv.note
    assert story.outcome is LlmOutcome.OK  # the narrative still ran, on the engine's ranking
    assert current_investigation(store.llm_outputs(world.incident_id), engine) is None
    assert gate_ranking(engine, None, 0.15) == tuple(engine)
    text = ticket_text(store, world.incident_id)
    assert "LLM investigator unavailable (rejected" in text
    assert "Investigator's re-ranking" not in text


# --- limits ----------------------------------------------------------------------------------


def test_a_slow_llm_times_out_and_the_ticket_keeps_the_engines_ranking(
    world: World, store: SqlStore, tmp_path: Path
) -> None:
    async def slow(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    s = llm_settings(tmp_path, investigate_below=0.0, timeout_seconds=0.3)
    started = datetime.now(UTC)
    (record,) = asyncio.run(explainer(s, store, FunctionModel(slow)).run_once()).written
    assert datetime.now(UTC) - started < timedelta(seconds=10)
    assert record.outcome is LlmOutcome.TIMEOUT and "0.3 s" in record.note
    text = ticket_text(store, world.incident_id)
    assert "LLM narrative unavailable (timeout" in text
    assert "Likely causes:" in text and store.hypotheses(world.incident_id)[0].component in text


def test_an_exhausted_token_budget_stops_the_agents(
    world: World, store: SqlStore, tmp_path: Path
) -> None:
    top = store.hypotheses(world.incident_id)[0]
    script = Scripted(lambda m, info: output(info, narrative(top.component), tokens=(80, 40)))
    s = llm_settings(tmp_path, investigate_below=0.0, max_tokens_per_incident=100)
    ex = explainer(s, store, script.model)

    (first,) = asyncio.run(ex.run_once()).written
    assert first.outcome is LlmOutcome.BUDGET and first.tokens == 120
    assert store.llm_tokens_used(world.incident_id) == 120

    # A new diagnosis: the agents would run again, but the budget is spent.
    changed = [
        h.model_copy(update={"confidence": h.confidence * 0.9})
        for h in store.hypotheses(world.incident_id)
    ]
    store.put_hypotheses(world.incident_id, changed, world.now)
    (second,) = asyncio.run(ex.run_once()).written
    assert second.outcome is LlmOutcome.BUDGET and second.tokens == 0
    assert len(script.seen) == 1  # the model was not asked again
    assert "LLM narrative unavailable (budget" in ticket_text(store, world.incident_id)


def test_an_unreachable_llm_is_recorded_and_degrades(
    world: World, store: SqlStore, tmp_path: Path
) -> None:
    def down(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise ModelAPIError("gpt-4o-mini", "Connection refused")

    metrics = SelfMetrics()
    s = llm_settings(tmp_path, investigate_below=0.0)
    (record,) = asyncio.run(
        explainer(s, store, FunctionModel(down), metrics=metrics).run_once()
    ).written
    assert record.outcome is LlmOutcome.UNREACHABLE and "Connection refused" in record.note
    assert metrics.llm_runs.labels(agent="narrative", outcome="unreachable")._value.get() == 1
    assert "LLM narrative unavailable (unreachable" in ticket_text(store, world.incident_id)


# --- bounds: the LLM never lifts a gate ------------------------------------------------------


def investigation(*ranked: tuple[str, float], cite: str | None = None) -> Investigation:
    """A re-ranking citing, for each cause, the anomaly ``cite`` (else its error rate)."""
    return Investigation(
        ranking=[
            RankedCause(
                component=c,
                confidence=p,
                reason="r",
                evidence=[EvidenceRef(kind=EvidenceKind.ANOMALY, id=cite or f"{c}/error_rate")],
            )
            for c, p in ranked
        ],
        summary="s",
    )


def test_confidence_past_the_bound_is_clamped() -> None:
    engine = (
        Hypothesis(component="service:db", fault="service_latency", confidence=0.5),
        Hypothesis(component="tool:crm", fault="tool_rate_limit", confidence=0.25),
    )
    inv = investigation(("tool:crm", 0.99), ("service:db", 0.01))
    bounded = bounded_ranking(engine, inv, 0.15)
    assert [h.component for h in bounded] == ["tool:crm", "service:db"]
    assert [h.confidence for h in bounded] == pytest.approx([0.40, 0.35])
    gate = gate_ranking(engine, inv, 0.15)
    assert [h.confidence for h in gate] == pytest.approx([0.25, 0.35])


@given(
    st.lists(st.floats(0, 1), min_size=1, max_size=6),
    st.lists(st.tuples(st.integers(0, 7), st.floats(0, 1)), min_size=1, max_size=8),
    st.floats(0, 1),
)
def test_bounds_hold_for_any_investigation(
    engine_p: list[float], ranked: list[tuple[int, float]], shift: float
) -> None:
    engine = tuple(
        Hypothesis(component=f"tool:t{i}", fault="tool_errors", confidence=p)
        for i, p in enumerate(engine_p)
    )
    own = {h.component: h.confidence for h in engine}
    inv = investigation(*((f"tool:t{i}", p) for i, p in ranked))
    bounded = bounded_ranking(engine, inv, shift)
    gate = gate_ranking(engine, inv, shift)
    assert sorted(h.component for h in bounded) == sorted(own)  # nothing added or lost
    for h in bounded:
        assert abs(h.confidence - own[h.component]) <= shift + 1e-12
        assert 0.0 <= h.confidence <= 1.0
    for h in gate:
        assert h.confidence <= own[h.component]
    assert clamp_confidence(0.5, 0.99, shift) <= 0.5 + shift + 1e-12


AUTO_THROTTLE = Playbook.model_validate(
    {
        "name": "throttle",
        "match": {"faults": ["tool_rate_limit"], "components": ["tool:*"]},
        "gates": {"auto_above": 0.35, "approve_above": 0.1},
        "steps": [
            {
                "id": "limit",
                "action": "throttle",
                "requests_per_minute": 30,
                "git": {"path": "limits.yaml"},
            }
        ],
    }
)


def test_an_investigation_cannot_let_an_action_pass_a_gate(tmp_path: Path) -> None:
    """The investigator puts the engine's second hypothesis first at 0.99. Bounded, that
    is 0.40, past the auto gate of 0.35; the gate sees the engine's 0.25: approval."""
    t0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", FakeClock(t0))
    try:
        a = Anomaly(
            component="tool:crm",
            sli=SliKind.ERROR_RATE,
            onset=t0,
            baseline=0.0,
            observed=0.4,
            score=9,
        )
        inc = Incident(id="inc-1", title="errors", opened_at=t0, updated_at=t0)
        opened = IncidentOpened(incident_id=inc.id, time=t0, onset=t0, anomalies=(a,))
        store.put_incident(inc, [audit_entry(opened, "metric-agent")])
        engine = [
            Hypothesis(component="service:db", fault="service_latency", confidence=0.5),
            Hypothesis(component="tool:crm", fault="tool_rate_limit", confidence=0.25),
        ]
        store.put_hypotheses(inc.id, engine, t0)

        def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            if is_narrative(info):
                return output(info, narrative("tool:crm"))
            return output(
                info,
                investigation(
                    ("tool:crm", 0.99), ("service:db", 0.1), cite=anomaly_id(a)
                ).model_dump(mode="json"),
            )

        s = Settings.model_validate(
            {
                "llm": {"model": "openai:gpt-4o", "prompts_dir": str(ROOT / "prompts")},
                "remediation": {"config_repo": "config", "auto_above": 0.35, "approve_above": 0.1},
                "base_dir": tmp_path,
            }
        )
        asyncio.run(Explainer(s, store, store.clock, FunctionModel(answer)).run_once())
        assert current_investigation(store.llm_outputs(inc.id), engine) is not None

        agent = RemediationAgent(
            s, store, FakeExecutor(), MemoryNotifier(), FakeClock(t0), playbooks=[AUTO_THROTTLE]
        )
        tracked = TrackedIncident(incident=inc, onset=t0, anomalies=(a,))
        run = agent.run_once([tracked], {}, t0 + timedelta(seconds=30))
        assert run.proposed == ["inc-1/throttle"]
        record = store.get_action("inc-1/throttle")
        assert record is not None
        assert record.hypothesis.component == "tool:crm"
        assert record.hypothesis.confidence == pytest.approx(0.25)  # the engine's, not 0.40
        assert record.gate is Gate.APPROVE
    finally:
        store.close()


# --- prompts and config ----------------------------------------------------------------------


def test_prompts_are_loaded_by_name_newest_unless_pinned(tmp_path: Path) -> None:
    (tmp_path / "narrative.v1.md").write_text("one")
    (tmp_path / "narrative.v2.md").write_text("two")
    (tmp_path / "narrative.v10.md").write_text("ten")
    (tmp_path / "other.v3.md").write_text("x")
    assert load_prompt(tmp_path, "narrative").version == "v10"
    pinned = load_prompt(tmp_path, "narrative", "v2")
    assert (pinned.version, pinned.text) == ("v2", "two")
    with pytest.raises(ConfigError, match=r"no version 'v3' in .* \(v1, v2, v10\)"):
        load_prompt(tmp_path, "narrative", "v3")
    with pytest.raises(ConfigError, match="no prompt 'investigator'"):
        load_prompt(tmp_path, "investigator")
    (tmp_path / "empty.v1.md").write_text("  \n")
    with pytest.raises(ConfigError, match=r"empty\.v1\.md is empty"):
        load_prompt(tmp_path, "empty")
    # The bundled prompts load.
    assert {load_prompt(ROOT / "prompts", a.value).version for a in LlmAgentName} == {"v1"}


def test_the_model_comes_from_config(tmp_path: Path) -> None:
    assert build_model(Settings().llm, Secrets()) is None
    off = llm_settings(tmp_path)
    with pytest.raises(ConfigError, match="SENTINEL_LLM_API_KEY"):
        build_model(off.llm, Secrets())
    local = llm_settings(tmp_path, model="openai:llama3.1", base_url="http://127.0.0.1:11434/v1")
    model = build_model(local.llm, Secrets())
    assert isinstance(model, OpenAIChatModel) and model.model_name == "llama3.1"
    assert str(model.client.base_url).startswith("http://127.0.0.1:11434/v1")
    with pytest.raises(ValueError, match='use "none" or "openai:<model>"'):
        llm_settings(tmp_path, model="gpt-4o")


def test_a_record_is_tied_to_the_diagnosis_it_explained() -> None:
    h = [Hypothesis(component="tool:a", fault="tool_errors", confidence=0.4)]
    moved = [h[0].model_copy(update={"confidence": 0.41})]
    assert basis_of(h) == basis_of(list(h)) != basis_of(moved)
    a = Anomaly(
        component="tool:a",
        sli=SliKind.ERROR_RATE_BY_TYPE,
        qualifier="RateLimitError",
        onset=datetime(2026, 1, 1, tzinfo=UTC),
        baseline=0,
        observed=1,
        score=1,
    )
    assert anomaly_id(a) == "tool:a/error_rate_by_type/RateLimitError"
    rec = LlmRecord(
        incident_id="i",
        agent=LlmAgentName.INVESTIGATOR,
        basis=basis_of(h),
        outcome=LlmOutcome.OK,
        prompt="investigator",
        prompt_version="v1",
        model="m",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        output=investigation(("tool:a", 0.5)).model_dump(mode="json"),
    )
    assert current_investigation([rec], h) is not None
    assert current_investigation([rec], moved) is None  # written for another diagnosis


# --- in the daemon ---------------------------------------------------------------------------


def test_the_daemon_explains_an_incident_and_watches_its_own_agents(
    world: World, tmp_path: Path
) -> None:
    """A daemon with the LLM on (a FunctionModel) writes the narrative of its open
    incident into the ticket, and its own agent's spans come back through its own OTLP
    receiver (the real SDK exporter), with the GenAI attributes."""
    db = tmp_path / "sentinel.db"
    shutil.copy(world.db, db)
    port = free_port()
    s = make_settings(
        tmp_path,
        store_url=f"sqlite:///{db}",
        server={"port": port},
        remediation={"playbooks_dir": ""},
        learning={"archive_dir": ""},
        llm={
            "prompts_dir": str(ROOT / "prompts"),
            "investigate_below": 0.0,
            "every_seconds": 0.2,
            "export_traces_to": f"http://127.0.0.1:{port}/v1/traces",
        },
    )
    model = FunctionModel(lambda m, info: output(info, narrative("tool:kb_search")))
    started = datetime.now(UTC)
    with daemon_thread(s, FakeClock(world.now), llm_model=model) as d:
        deadline = time.monotonic() + 60
        records: list[LlmRecord] = []
        own: list[Span] = []
        while time.monotonic() < deadline and not (records and own):
            records = d.store.llm_outputs(world.incident_id)
            own = [
                sp
                for sp in d.store.spans(
                    started - timedelta(minutes=1), datetime.now(UTC) + timedelta(minutes=1)
                )
                if sp.service == "sentinel"
            ]
            time.sleep(0.2)
        ticket = d.store.ticket(world.incident_id)
    assert [r.outcome for r in records] == [LlmOutcome.OK]
    assert records[0].model.startswith("function:")
    assert ticket is not None and "Summary: The support agent slowed down" in ticket.text
    names = {sp.attributes.get("gen_ai.agent.name") for sp in own}
    assert "sentinel-narrative" in names
    assert "agent:sentinel-narrative" in {sp.component for sp in own}
    assert any(sp.operation is not None for sp in own)  # GenAI operation spans, not just HTTP
