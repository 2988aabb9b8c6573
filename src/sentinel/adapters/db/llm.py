"""What sentinel's own LLM agents produced for an incident (``llm.records.LlmRecord``), as
a mixin of ``store.SqlStore`` (``ports.LlmOutputStore``): every run kept, whatever its
outcome, and the tokens they spent.

A record is never updated: each run is a new row, written with its audit entry
(``llm_output``, attributed to ``llm-<agent>``) in one transaction, so the trail and the
table never disagree after a crash. Which record is in use (the newest OK one of an agent
for the incident's current basis) is for the caller to decide.

What must not live here: the agents, their prompts and validation (``sentinel.llm``),
the token budget's policy (only the sum of what was spent is computed here).
"""

from __future__ import annotations

import sqlalchemy as sa
from pydantic import ValidationError

from sentinel.adapters.db.codec import _dumps, _loads
from sentinel.adapters.db.core import _Base
from sentinel.adapters.db.incidents import _audit_insert
from sentinel.adapters.db.tables import LLM_OUTPUTS
from sentinel.errors import StoreError
from sentinel.incidents import AuditEntry
from sentinel.llm.records import LlmAgentName, LlmRecord
from sentinel.ports import AuditAction


class LlmMixin(_Base):
    """The records of the LLM agents' runs."""

    def put_llm_output(self, record: LlmRecord) -> int:
        """Store ``record`` and its ``AuditAction.LLM_OUTPUT`` entry in one transaction and
        return the record's id. Raises ``UnknownIncident`` (and writes nothing) for an
        incident the store does not hold."""
        row = {
            "incident_id": record.incident_id,
            "agent": record.agent.value,
            "basis": record.basis,
            "outcome": record.outcome.value,
            "prompt": record.prompt,
            "prompt_version": record.prompt_version,
            "model": record.model,
            "created_at": record.created_at,
            "output": None if record.output is None else _dumps(record.output),
            "note": record.note,
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
            "cost_usd": record.cost_usd,
        }
        entry = AuditEntry(
            time=record.created_at,
            actor=f"llm-{record.agent.value}",
            action=AuditAction.LLM_OUTPUT.value,
            incident_id=record.incident_id,
            detail={
                "agent": record.agent.value,
                "outcome": record.outcome.value,
                "prompt": record.prompt,
                "prompt_version": record.prompt_version,
                "model": record.model,
                "tokens": record.tokens,
                "cost_usd": record.cost_usd,
                "note": record.note,
            },
        )
        what = f"writing the {record.agent.value} output of incident {record.incident_id!r}"
        with self._tx(what) as conn:
            self._require_incident(conn, record.incident_id)
            key = conn.execute(sa.insert(LLM_OUTPUTS).values(row)).inserted_primary_key
            if key is None or key[0] is None:  # pragma: no cover  # both dialects return it
                raise StoreError(f"store {self.url}: the new LLM output got no id")
            conn.execute(_audit_insert(entry))
        return int(key[0])

    def llm_outputs(self, incident_id: str, agent: LlmAgentName | None = None) -> list[LlmRecord]:
        """The incident's records, only ``agent``'s when given, oldest first (by
        ``created_at``, then by the order they were stored); [] when there are none."""
        t = LLM_OUTPUTS
        q = sa.select(t).where(t.c.incident_id == incident_id).order_by(t.c.created_at, t.c.id)
        if agent is not None:
            q = q.where(t.c.agent == agent.value)
        with self._read(f"reading the LLM outputs of incident {incident_id!r}") as conn:
            rows = conn.execute(q).mappings().all()
        return [self._llm_record(r) for r in rows]

    def llm_tokens_used(self, incident_id: str) -> int:
        """Input plus output tokens of every record of the incident; 0 when there are
        none."""
        t = LLM_OUTPUTS
        total = sa.func.coalesce(sa.func.sum(t.c.input_tokens + t.c.output_tokens), 0)
        q = sa.select(total).where(t.c.incident_id == incident_id)
        with self._read(f"summing the LLM tokens of incident {incident_id!r}") as conn:
            return int(conn.execute(q).scalar_one())

    def _llm_record(self, r: sa.RowMapping) -> LlmRecord:
        try:
            return LlmRecord(
                incident_id=r["incident_id"],
                agent=r["agent"],
                basis=r["basis"],
                outcome=r["outcome"],
                prompt=r["prompt"],
                prompt_version=r["prompt_version"],
                model=r["model"],
                created_at=r["created_at"],
                output=None if r["output"] is None else _loads(r["output"]),
                note=r["note"],
                input_tokens=r["input_tokens"],
                output_tokens=r["output_tokens"],
                cost_usd=r["cost_usd"],
            )
        except ValidationError as e:
            err = e.errors()[0]
            raise StoreError(
                f"store {self.url}: LLM output {r['id']} of incident {r['incident_id']!r} "
                f"cannot be read: {err['msg']} at {'.'.join(str(x) for x in err['loc'])!r}"
            ) from None
