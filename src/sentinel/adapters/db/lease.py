"""Leases in the store, as a mixin of ``store.SqlStore``: the leader lease that lets one of
several ``sentinel run`` replicas on one database run the schedules, and the fencing of
the writes only the leader may make.

One row per lease name. ``acquire_lease`` takes a free or expired lease, or renews the
caller's own, in one compare-and-set statement (``UPDATE ... WHERE holder = me OR
expires_s < now``); ``epoch``, the fencing token, grows by one at every new term (another
holder, or the same one after its lease expired). ``release_lease`` ends a term at once
(graceful shutdown: the next replica need not wait for the expiry).

Time: expiries are on the database's clock (PostgreSQL's ``statement_timestamp()``,
SQLite's ``julianday('now')``, which is the one machine all SQLite users share), never a
replica's, so clock skew between replicas cannot give two holders at once. Durations are
real seconds: a lease is about processes dying, whatever clock the daemon judges
telemetry by. A holder measures its own term from just before the statement that
granted it, on its monotonic clock, and stops leading at ``ttl`` from then: earlier than
the database lets anyone else take over, as long as the two clocks tick at the same rate.

Fencing (``fenced``): a view of the store whose leader-only writes (incidents, their
hypotheses, action records) check, in their own transaction, that the term they were
made for still holds the lease (on PostgreSQL with ``FOR SHARE``: a takeover waits for
the write to commit). A paused ex-leader that wakes up after a takeover gets
``LeaseLost``, and writes nothing.

What must not live here: when to renew, and what a leader runs (``daemon``/``cluster``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

import sqlalchemy as sa

from sentinel.adapters.db.core import _Base
from sentinel.adapters.db.tables import LEASES

LEADER_LEASE = "leader"


@dataclass(frozen=True)
class Lease:
    """A lease as the store saw it: who holds it, in which term (``epoch``), and for
    how long from the statement's time (``remaining_s``, negative once expired)."""

    name: str
    holder: str
    epoch: int
    remaining_s: float

    def held_by(self, holder: str) -> bool:
        return self.holder == holder and self.remaining_s > 0


@dataclass(frozen=True)
class Fence:
    """A term of a lease: writes fenced by it succeed only while it is the current one."""

    name: str
    holder: str
    epoch: int


class LeaseMixin(_Base):
    """Acquire, renew, release and read leases; fenced views of the store."""

    def acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> Lease:
        """Take the lease ``name`` for ``holder`` for ``ttl_seconds`` if it is free,
        expired or already ``holder``'s (then renewed; the epoch stays while the term
        lasts). Returns the lease as it is after the attempt: ``held_by(holder)`` says
        whether the caller holds it."""
        t = LEASES
        now = self._db_now()
        ours = sa.and_(t.c.holder == holder, t.c.expires_s >= now)
        stmt = (
            sa.update(t)
            .where(t.c.name == name, sa.or_(t.c.holder == holder, t.c.expires_s < now))
            .values(
                holder=holder,
                epoch=sa.case((ours, t.c.epoch), else_=t.c.epoch + 1),
                acquired_s=sa.case((ours, t.c.acquired_s), else_=now),
                expires_s=now + ttl_seconds,
            )
            .returning(t.c.epoch)
        )
        with self._tx(f"acquiring lease {name!r} for {holder!r}") as conn:
            row = conn.execute(stmt).first()
            if row is None:
                first = (
                    self._insert(t)
                    .values(
                        name=name,
                        holder=holder,
                        epoch=1,
                        acquired_s=now,
                        expires_s=now + ttl_seconds,
                    )
                    .on_conflict_do_nothing(index_elements=["name"])
                    .returning(t.c.epoch)
                )
                row = conn.execute(first).first()
            if row is not None:
                return Lease(name, holder, int(row.epoch), float(ttl_seconds))
            held = self._lease_row(conn, name)
        assert held is not None  # the row exists: the insert conflicted
        return held

    def release_lease(self, name: str, holder: str, epoch: int) -> bool:
        """End ``holder``'s term ``epoch`` now, so another replica takes over at its next
        attempt. False when the term was over already."""
        t = LEASES
        stmt = (
            sa.update(t)
            .where(t.c.name == name, t.c.holder == holder, t.c.epoch == epoch)
            .values(expires_s=self._db_now() - 0.001)
        )
        with self._tx(f"releasing lease {name!r} of {holder!r}") as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    def lease(self, name: str) -> Lease | None:
        """The lease ``name`` as the store has it now, or None if never taken."""
        with self._read(f"reading lease {name!r}") as conn:
            return self._lease_row(conn, name)

    def holds_lease(self, fence: Fence) -> bool:
        """Whether ``fence``'s term still holds its lease, unexpired."""
        with self._read(f"checking lease {fence.name!r}") as conn:
            return self._fence_holds(conn, fence, lock=False)

    def fenced(self, fence: Callable[[], Fence | None]) -> Self:
        """A view of this store (same engine) whose leader-only writes first check, in
        their transaction, that the term ``fence()`` returns still holds its lease, and
        raise ``LeaseLost`` otherwise (``fence()`` None: not leading)."""
        view = copy.copy(self)
        view._fence = fence
        return view

    def _lease_row(self, conn: sa.Connection, name: str) -> Lease | None:
        t = LEASES
        q = sa.select(t.c.holder, t.c.epoch, (t.c.expires_s - self._db_now()).label("left"))
        r = conn.execute(q.where(t.c.name == name)).first()
        if r is None:
            return None
        return Lease(name, str(r.holder), int(r.epoch), float(r.left))
