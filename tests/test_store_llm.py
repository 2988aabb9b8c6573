"""Contract tests of the store's LLM outputs (``adapters/db/llm.py``, ``ports.LlmOutputStore``)
and of ``span()``, one span by its ids: every test body runs against SQLite (a file in
tmp_path) and a real PostgreSQL (``tests/fixtures/postgres.py``), as ``test_store`` does,
including the ``0006`` migration that adds the ``llm_outputs`` table.

What must not live here: the LLM agents and their prompts, the token budget's policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from sentinel.adapters.db import METADATA, SqlStore, open_store
from sentinel.clock import FakeClock
from sentinel.errors import UnknownIncident
from sentinel.llm.records import LlmAgentName, LlmOutcome, LlmRecord
from sentinel.ports import AuditAction, LlmOutputStore, TelemetryStore
from tests.test_store import (
    AGENT,
    EVERYTHING,
    HEAD,
    MODEL,
    NOW,
    TABLES,
    _alembic,
    _raw,
    _tables,
    _versions,
    fleet_spans,
    sample_incidents,
)

LLM_TABLES = TABLES | {"llm_outputs"}


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    """A migrated store on the backend under test, holding incidents inc-1 and inc-2."""
    s = open_store(store_url, FakeClock(NOW))
    try:
        one, two, _ = sample_incidents()
        s.put_incident(one)
        s.put_incident(two)
        yield s
    finally:
        s.close()


def narrative(**update: object) -> LlmRecord:
    """An OK narrative of inc-1, with every field set."""
    record = LlmRecord(
        incident_id="inc-1",
        agent=LlmAgentName.NARRATIVE,
        basis="sha256:1f2e3d",
        outcome=LlmOutcome.OK,
        prompt="narrative",
        prompt_version="v1",
        model="openai:gpt-4o",
        created_at=NOW + timedelta(minutes=2),
        output={
            "summary": "relevance dropped after prompt change c1f2e3 — 相关性下降 😀",
            "likely_cause": {"component": "prompt:support-agent", "confidence": 0.71},
            "next_checks": ["diff the prompt", "replay 20 requests"],
            "cited": [],
            "score": 1 / 3,
            "flag": True,
            "missing": None,
        },
        note="",
        input_tokens=1_834,
        output_tokens=412,
        cost_usd=0.0123456789,
    )
    return record.model_copy(update=update)


def investigation(**update: object) -> LlmRecord:
    """A rejected investigation of inc-1: no output, a note, tokens spent anyway."""
    record = LlmRecord(
        incident_id="inc-1",
        agent=LlmAgentName.INVESTIGATOR,
        basis="sha256:1f2e3d",
        outcome=LlmOutcome.REJECTED,
        prompt="investigator",
        prompt_version="v2",
        model="function:fake",
        created_at=NOW + timedelta(minutes=3),
        note="cited span 00f067aa0ba902b9 is not in the store (after 2 retries)",
        input_tokens=5_120,
        output_tokens=96,
        cost_usd=0.05,
    )
    return record.model_copy(update=update)


# --- the port ---------------------------------------------------------------------------


def test_the_sql_store_is_an_llm_output_store_and_a_telemetry_store(store: SqlStore) -> None:
    # mypy checks these assignments against the Protocols.
    port: LlmOutputStore = store
    telemetry: TelemetryStore = store
    assert port.llm_outputs("inc-1") == []
    assert telemetry.span("4bf92f3577b34da6a3ce929d0e0e4736", AGENT) is None


# --- records ----------------------------------------------------------------------------


def test_records_round_trip_with_every_field_oldest_first(store: SqlStore) -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    first = narrative()
    second = investigation()
    third = narrative(  # a later narrative, stored before an earlier timeout
        basis="sha256:9a8b7c",
        created_at=(NOW + timedelta(minutes=10)).astimezone(ist),
        output={"summary": "billing-api answers 503", "next_checks": []},
        input_tokens=0,
        output_tokens=0,
        cost_usd=0.0,
    )
    timeout = narrative(
        outcome=LlmOutcome.TIMEOUT,
        created_at=NOW + timedelta(minutes=5),
        output=None,
        note="no answer within 30 s",
        input_tokens=900,
        output_tokens=0,
        cost_usd=0.001,
    )
    # A record of the same time as ``second``: storing order breaks the tie.
    same_time = investigation(outcome=LlmOutcome.BUDGET, note="budget spent", input_tokens=0)

    ids = [store.put_llm_output(r) for r in (first, second, third, timeout, same_time)]

    assert len(set(ids)) == 5
    assert ids == sorted(ids)
    got = store.llm_outputs("inc-1")
    assert got == [first, second, same_time, timeout, third]
    assert got[0].output == first.output  # nested values, unicode, None, a non-short float
    assert got[0].cost_usd == 0.0123456789
    assert got[1].output is None
    assert got[1].note == second.note
    assert got[4].created_at == NOW + timedelta(minutes=10)
    assert got[4].created_at.utcoffset() == timedelta(0)  # read back as UTC
    assert store.llm_outputs("inc-2") == []
    assert store.llm_outputs("inc-404") == []


def test_records_are_filtered_by_agent(store: SqlStore) -> None:
    n1 = narrative()
    i1 = investigation()
    n2 = narrative(created_at=NOW + timedelta(minutes=4), outcome=LlmOutcome.UNREACHABLE)
    other = narrative(incident_id="inc-2")
    for r in (n1, i1, n2, other):
        store.put_llm_output(r)

    assert store.llm_outputs("inc-1", LlmAgentName.NARRATIVE) == [n1, n2]
    assert store.llm_outputs("inc-1", agent=LlmAgentName.INVESTIGATOR) == [i1]
    assert store.llm_outputs("inc-2", LlmAgentName.NARRATIVE) == [other]
    assert store.llm_outputs("inc-2", LlmAgentName.INVESTIGATOR) == []
    assert store.llm_outputs("inc-1") == [n1, i1, n2]


def test_tokens_used_sums_every_record_of_the_incident(store: SqlStore) -> None:
    assert store.llm_tokens_used("inc-1") == 0
    assert store.llm_tokens_used("inc-404") == 0

    store.put_llm_output(narrative())  # 1834 + 412
    store.put_llm_output(investigation())  # 5120 + 96, rejected: spent all the same
    store.put_llm_output(narrative(outcome=LlmOutcome.ERROR, input_tokens=0, output_tokens=0))
    store.put_llm_output(narrative(incident_id="inc-2", input_tokens=7, output_tokens=3))

    assert store.llm_tokens_used("inc-1") == 1_834 + 412 + 5_120 + 96
    assert store.llm_tokens_used("inc-2") == 10

    # Counts beyond 32 bits are kept whole on both backends.
    big = narrative(incident_id="inc-2", input_tokens=3_000_000_000, output_tokens=2**31)
    store.put_llm_output(big)
    assert store.llm_tokens_used("inc-2") == 10 + 3_000_000_000 + 2**31
    assert store.llm_outputs("inc-2")[-1] == big


def test_a_record_of_an_unknown_incident_is_refused_and_nothing_is_written(
    store: SqlStore,
) -> None:
    with pytest.raises(UnknownIncident, match="'inc-404'"):
        store.put_llm_output(narrative(incident_id="inc-404"))

    assert store.llm_outputs("inc-404") == []
    assert store.llm_tokens_used("inc-404") == 0
    assert store.audit() == []
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM llm_outputs")).scalar_one() == 0


def test_each_record_has_its_audit_entry(store: SqlStore) -> None:
    store.put_llm_output(narrative())
    store.put_llm_output(investigation())

    trail = store.audit("inc-1")
    assert [(e.time, e.actor, e.action, e.incident_id) for e in trail] == [
        (NOW + timedelta(minutes=2), "llm-narrative", AuditAction.LLM_OUTPUT.value, "inc-1"),
        (NOW + timedelta(minutes=3), "llm-investigator", "llm_output", "inc-1"),
    ]
    assert trail[0].detail == {
        "agent": "narrative",
        "outcome": "ok",
        "prompt": "narrative",
        "prompt_version": "v1",
        "model": "openai:gpt-4o",
        "tokens": 1_834 + 412,
        "cost_usd": 0.0123456789,
        "note": "",
    }
    assert trail[1].detail == {
        "agent": "investigator",
        "outcome": "rejected",
        "prompt": "investigator",
        "prompt_version": "v2",
        "model": "function:fake",
        "tokens": 5_120 + 96,
        "cost_usd": 0.05,
        "note": "cited span 00f067aa0ba902b9 is not in the store (after 2 retries)",
    }
    assert store.audit("inc-2") == []


# --- one span by its ids ----------------------------------------------------------------


def test_span_returns_the_stored_span_or_none(store: SqlStore) -> None:
    spans = fleet_spans()
    store.add_spans(spans)
    stored = {(s.trace_id, s.span_id): s for s in store.spans(*EVERYTHING)}

    for s in spans:
        got = store.span(s.trace_id, s.span_id)
        assert got == s
        assert got == stored[(s.trace_id, s.span_id)]
    model = store.span(spans[0].trace_id, MODEL)
    assert model is not None
    assert (model.input_tokens, model.output_tokens) == (1200, 85)

    trace = spans[0].trace_id
    assert store.span(trace, "ffffffffffffffff") is None  # known trace, unknown span
    assert store.span("0" * 32, AGENT) is None  # unknown trace, known span id
    assert store.span("", "") is None


# --- the migration ----------------------------------------------------------------------


def test_migrations_create_the_llm_outputs_table_without_drift(store_url: str) -> None:
    assert HEAD == "0007"  # 0007 (leases) came after
    s = open_store(store_url, FakeClock(NOW))
    s.close()

    assert "llm_outputs" in _tables(store_url)
    assert _tables(store_url) == LLM_TABLES
    assert _versions(store_url) == [HEAD]
    with _raw(store_url) as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, METADATA) == []
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes("llm_outputs")}
        assert "ix_llm_outputs_incident_id" in indexes


def test_a_database_at_0005_gains_the_table_and_loses_it_on_downgrade(store_url: str) -> None:
    _alembic(store_url, upgrade_to="0005")
    assert _tables(store_url) == LLM_TABLES - {"llm_outputs", "leases"}

    s = open_store(store_url, FakeClock(NOW))  # upgrades to head
    try:
        assert _versions(store_url) == [HEAD]
        s.put_incident(sample_incidents()[0])
        s.put_llm_output(narrative())
        assert s.llm_outputs("inc-1") == [narrative()]
    finally:
        s.close()

    _alembic(store_url, downgrade_to="0005")
    assert _tables(store_url) == LLM_TABLES - {"llm_outputs", "leases"}
    assert _versions(store_url) == ["0005"]

    _alembic(store_url, upgrade_to="head")
    assert _tables(store_url) == LLM_TABLES
    assert _versions(store_url) == [HEAD]
