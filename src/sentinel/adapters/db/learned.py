"""The learned state (``learning.priors.LearnedState``), as a mixin of ``store.SqlStore``:
every version kept, the newest in use.

A fit or a reset never overwrites: each is a new row with the next version number, and
its audit entry (``learned_state_written`` or ``learned_state_reset``, no incident) is
written in the same transaction. "Reset" is a version that learned nothing, so the
history of what was learned stays, and going back to an older version is writing its
content again.

What must not live here: fitting (``sentinel.learning``), what the state means to
ranking or remediation.
"""

from __future__ import annotations

from enum import StrEnum

import sqlalchemy as sa
from pydantic import ValidationError

from sentinel.adapters.db.core import _Base
from sentinel.adapters.db.incidents import _audit_insert
from sentinel.adapters.db.tables import LEARNED_STATE
from sentinel.errors import StoreError
from sentinel.incidents import AuditEntry
from sentinel.learning.priors import DEFAULT, LearnedState, LearnedVersion

# Who a fitted state is attributed to in the audit log unless the caller says otherwise.
LEARNING_ACTOR = "learning-agent"


class LearnedAction(StrEnum):
    """The audit actions of the learned state (``incident_id`` None)."""

    WRITTEN = "learned_state_written"
    RESET = "learned_state_reset"


class LearnedMixin(_Base):
    """Versions of the learned state."""

    def put_learned(self, state: LearnedState, *, actor: str = LEARNING_ACTOR) -> int:
        """Store ``state`` as a new version (its own ``version`` is ignored) and return
        the version number; earlier versions stay as they were."""
        return self._put_learned(state, actor, LearnedAction.WRITTEN)

    def reset_learned(self, actor: str) -> int:
        """Store a version that learned nothing (the engine's defaults), noted "reset by
        ``actor``", and return its number. The history stays."""
        return self._put_learned(LearnedState(note=f"reset by {actor}"), actor, LearnedAction.RESET)

    def _put_learned(self, state: LearnedState, actor: str, action: LearnedAction) -> int:
        now = self.clock.now()
        body = state.model_dump_json(exclude={"version"})
        t = LEARNED_STATE
        with self._tx("writing the learned state") as conn:
            result = conn.execute(sa.insert(t).values(created_at=now, note=state.note, state=body))
            key = result.inserted_primary_key
            if key is None or key[0] is None:  # pragma: no cover  # both dialects return it
                raise StoreError(f"store {self.url}: the new learned state got no version")
            version = int(key[0])
            entry = AuditEntry(
                time=now,
                actor=actor,
                action=action.value,
                detail={
                    "version": version,
                    "note": state.note,
                    "n_cases": state.n_cases,
                    "calibrated": state.calibrated,
                    "component_priors": len(state.component_priors),
                    "playbook_success": len(state.playbook_success),
                },
            )
            conn.execute(_audit_insert(entry))
        return version

    def learned(self) -> LearnedState:
        """The newest version, or ``learning.priors.DEFAULT`` (version 0) when nothing
        was ever stored."""
        t = LEARNED_STATE
        q = sa.select(t.c.version, t.c.state).order_by(t.c.version.desc()).limit(1)
        with self._read("reading the learned state") as conn:
            row = conn.execute(q).first()
        return DEFAULT if row is None else self._decode(row.version, row.state)

    def learned_version(self, version: int) -> LearnedState | None:
        """Version ``version`` of the learned state; None when there is no such version."""
        t = LEARNED_STATE
        q = sa.select(t.c.version, t.c.state).where(t.c.version == version)
        with self._read(f"reading learned state version {version!r}") as conn:
            row = conn.execute(q).first()
        return None if row is None else self._decode(row.version, row.state)

    def learned_versions(self) -> list[LearnedVersion]:
        """Every stored version, oldest first: number, when it was stored, its note."""
        t = LEARNED_STATE
        q = sa.select(t.c.version, t.c.created_at, t.c.note).order_by(t.c.version)
        with self._read("listing the learned state's versions") as conn:
            rows = conn.execute(q).all()
        return [
            LearnedVersion(version=r.version, created_at=r.created_at, note=r.note) for r in rows
        ]

    def _decode(self, version: int, text: str) -> LearnedState:
        try:
            state = LearnedState.model_validate_json(text)
        except ValidationError as e:
            raise StoreError(
                f"store {self.url}: learned state version {version} cannot be read: "
                f"{e.errors()[0]['msg']} at {'.'.join(str(x) for x in e.errors()[0]['loc'])!r}"
            ) from None
        return state.model_copy(update={"version": version})
