"""What every part of the store shares: the engine and clock, transactions and reads that
turn driver errors into ``StoreError``, ``ping``/``close``, the batched
``INSERT ... ON CONFLICT DO NOTHING`` of the ingest hot path, and ``_require_incident``.

``_Base`` is the root of the mixins (``telemetry``, ``incidents``, ``outbox``) that
``store.SqlStore`` composes; it is what lets mypy check each mixin on its own. What must
not live here: methods of one concern (they go to that concern's mixin).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from sentinel.adapters.db.tables import INCIDENTS, LEASES
from sentinel.clock import Clock
from sentinel.errors import LeaseLost, StoreError, UnknownIncident

if TYPE_CHECKING:
    from sentinel.adapters.db.lease import Fence

# Bound parameters per statement: under SQLite's default limit (32766 since 3.32) and
# PostgreSQL's (65535).
_MAX_PARAMS = 10_000


class _Base:
    """The store's engine, clock and transactions; see the module docstring."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self._dialect = engine.dialect.name
        self._insert = pg_insert if self._dialect == "postgresql" else sqlite_insert
        # Set on a fenced view (``lease.LeaseMixin.fenced``): the term whose lease the
        # leader-only writes of this view need.
        self._fence: Callable[[], Fence | None] | None = None

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self, what: str) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as e:
            raise StoreError(f"store {self.url}: {what} failed: {e}") from e

    @contextmanager
    def _read(self, what: str) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as e:
            raise StoreError(f"store {self.url}: {what} failed: {e}") from e

    def _db_now(self) -> sa.ColumnElement[float]:
        """The database's clock, in seconds since the epoch (``lease``'s time base)."""
        if self._dialect == "postgresql":
            return sa.cast(
                sa.func.extract("epoch", sa.func.statement_timestamp()), sa.Float(precision=53)
            )
        return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Float())

    def _fence_holds(self, conn: Connection, fence: Fence, *, lock: bool) -> bool:
        t = LEASES
        q = sa.select(t.c.epoch).where(
            t.c.name == fence.name,
            t.c.holder == fence.holder,
            t.c.epoch == fence.epoch,
            t.c.expires_s > self._db_now(),
        )
        if lock and self._dialect == "postgresql":
            # A takeover's UPDATE of the lease waits until this write has committed.
            q = q.with_for_update(read=True)
        return conn.execute(q).first() is not None

    def _check_fence(self, conn: Connection, what: str) -> None:
        """In a leader-only write's transaction: refuse it unless this view's term still
        holds the lease (a no-op on an unfenced store)."""
        if self._fence is None:
            return
        fence = self._fence()
        if fence is None:
            raise LeaseLost(f"store {self.url}: {what} refused: this replica is not the leader")
        if not self._fence_holds(conn, fence, lock=True):
            raise LeaseLost(
                f"store {self.url}: {what} refused: replica {fence.holder!r} no longer holds "
                f"lease {fence.name!r} in epoch {fence.epoch!r}"
            )

    def ping(self) -> None:
        with self._read("ping") as conn:
            conn.execute(sa.text("SELECT 1"))

    @functools.cache  # noqa: B019  # a few (table, width) pairs per store
    def _insert_sql(
        self, table: str, columns: tuple[str, ...], key: tuple[str, ...], n_rows: int
    ) -> str:
        """``INSERT ... VALUES (..), (..) ... ON CONFLICT (key) DO NOTHING`` for ``n_rows``
        rows, in the driver's parameter style. Identifiers come from this package's
        constants; values are bound parameters."""
        mark = "%s" if self._dialect == "postgresql" else "?"
        one = f"({', '.join([mark] * len(columns))})"
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608
            f"VALUES {', '.join([one] * n_rows)} "
            f"ON CONFLICT ({', '.join(key)}) DO NOTHING"
        )

    def _insert_rows(
        self,
        conn: Connection,
        table: str,
        columns: tuple[str, ...],
        key: tuple[str, ...],
        rows: Sequence[tuple[Any, ...]],
    ) -> int:
        """INSERT rows (tuples in ``columns`` order), skipping those whose ``key`` is
        already stored; returns how many were new.

        The ingest hot path. Many rows per statement, straight through the driver: the
        driver's executemany would release and retake the GIL for every row, and while
        the event loop decodes the next request each retake can wait a whole switch
        interval. Also skips SQLAlchemy's per-row parameter processing."""
        per_statement = max(1, _MAX_PARAMS // len(columns))
        new = 0
        for i in range(0, len(rows), per_statement):
            chunk = rows[i : i + per_statement]
            sql = self._insert_sql(table, columns, key, len(chunk))
            params = tuple(itertools.chain.from_iterable(chunk))
            new += max(int(conn.exec_driver_sql(sql, params).rowcount), 0)
        return new

    def _insert_new(
        self,
        conn: Connection,
        table: str,
        key: tuple[str, ...],
        rows: Sequence[dict[str, Any]],
    ) -> int:
        """Like ``_insert_rows`` for rows given as dicts."""
        columns = tuple(rows[0])
        return self._insert_rows(
            conn, table, columns, key, [tuple(r[c] for c in columns) for r in rows]
        )

    def _require_incident(self, conn: Connection, incident_id: str) -> None:
        t = INCIDENTS
        if conn.execute(sa.select(t.c.id).where(t.c.id == incident_id)).first() is None:
            raise UnknownIncident(f"store {self.url}: no incident {incident_id!r}")
