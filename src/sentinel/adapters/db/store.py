"""``SqlStore``, composed of its parts, and ``open_store``, the way the rest of sentinel
gets one.

What must not live here: methods (they belong to ``core`` or to one concern's mixin).
"""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from sentinel.adapters.db.engine import create_engine_for, migrate
from sentinel.adapters.db.incidents import IncidentsMixin
from sentinel.adapters.db.learned import LearnedMixin
from sentinel.adapters.db.lease import LeaseMixin
from sentinel.adapters.db.llm import LlmMixin
from sentinel.adapters.db.outbox import OutboxMixin
from sentinel.adapters.db.telemetry import TelemetryMixin
from sentinel.clock import Clock
from sentinel.errors import StoreError
from sentinel.settings import mask_url


class SqlStore(TelemetryMixin, IncidentsMixin, OutboxMixin, LearnedMixin, LlmMixin, LeaseMixin):
    """``ports.TelemetryStore`` and the incident/audit/cursor store on SQLAlchemy, with
    the ticket outbox, the versions of the learned state, what the LLM agents wrote
    (``ports.LlmOutputStore``) and the leader lease."""


def open_store(url: str, clock: Clock, *, auto_migrate: bool = True) -> SqlStore:
    """Connect to the store at ``url`` and bring its schema up to date."""
    try:
        engine = create_engine_for(url)
    except (SQLAlchemyError, ValueError) as e:
        raise StoreError(f"store URL {mask_url(url)!r} is not usable: {mask_url(str(e))}") from e
    if auto_migrate:
        try:
            migrate(engine)
        except StoreError:
            engine.dispose()
            raise
    return SqlStore(engine, clock)
