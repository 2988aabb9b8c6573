"""Engines and migrations: ``create_engine_for`` (SQLite's pragmas, PostgreSQL's pool) and
``migrate`` (alembic ``upgrade head``, serialised across replicas).

What must not live here: the store's queries; no engine is created at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from sentinel.errors import StoreError


def create_engine_for(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across application crashes in WAL mode (only an OS crash
            # can lose the last transactions), at a fraction of FULL's fsync cost.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            # Span writes touch random pages of the (trace_id, span_id) index: a larger
            # page cache cuts their cost (bench/ingest.py). Bounded: 64 MiB per connection.
            cur.execute("PRAGMA cache_size=-65536")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
# Any 64-bit number, the same in every replica: serialises concurrent migrations.
_MIGRATION_LOCK = 0x5E471E1


def migrate(engine: Engine) -> None:
    """Apply pending alembic migrations (``upgrade head``)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Several replicas may start at once; only one migrates at a time.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except SQLAlchemyError as e:
        raise StoreError(
            f"store {engine.url.render_as_string(hide_password=True)}: migration failed: {e}"
        ) from e
