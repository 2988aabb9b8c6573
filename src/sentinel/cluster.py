"""The leader lease as one replica keeps it: ``LeaderLease.attempt`` (every
``cluster.renew_interval``, on every replica) takes or renews the lease in the store;
``current`` says whether this replica leads right now; ``check`` asks the store, right
before a remediation step, whether the term still holds.

A term starts when the store grants the lease and ends, on this replica's monotonic clock,
``lease_seconds`` after the attempt that last renewed it was sent: always before the
database would let another replica take the lease (``adapters.db.lease``). A leader whose
renewals fail (the database unreachable, the process paused) thus stops leading on its
own, and its leader-only writes are refused by the store's fence once another replica
holds the lease.

Logs ``leader_acquired`` and ``leader_lost`` (replica, epoch, why); ``/metrics`` has
``sentinel_leader`` (1 while leading) and ``sentinel_leader_changes`` (by change).

What must not live here: SQL (``adapters.db.lease``), which jobs only a leader runs
(``daemon``).
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import structlog

from sentinel.adapters.db.lease import LEADER_LEASE, Fence, Lease
from sentinel.clock import Clock, SystemClock
from sentinel.errors import LeaseLost, StoreError
from sentinel.observability import SelfMetrics

log = structlog.get_logger(__name__)


class Role(StrEnum):
    LEADER = "leader"
    FOLLOWER = "follower"


class Change(StrEnum):
    """What an attempt (or the passing of time) did to this replica's role."""

    ACQUIRED = "acquired"
    LOST = "lost"


class LeaseStore(Protocol):
    """What the keeper needs of the store (``adapters.db.SqlStore``)."""

    def acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> Lease: ...

    def release_lease(self, name: str, holder: str, epoch: int) -> bool: ...

    def holds_lease(self, fence: Fence) -> bool: ...


def default_replica_id() -> str:
    """``<hostname>-<pid>``: unique per process, and says where to look."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class _Term:
    fence: Fence
    deadline: float  # on the keeper's monotonic clock


class LeaderLease:
    """This replica's side of the leader lease. ``attempt`` and ``release`` block (store
    I/O): the daemon runs them on a worker thread. ``current`` may be called from any
    thread."""

    def __init__(
        self,
        store: LeaseStore,
        replica_id: str,
        lease_seconds: float,
        *,
        metrics: SelfMetrics | None = None,
        clock: Clock | None = None,
        name: str = LEADER_LEASE,
    ) -> None:
        """``clock``: its ``monotonic`` measures terms, in real seconds (the system
        clock unless a test drives it)."""
        self.store = store
        self.replica_id = replica_id
        self.lease_seconds = lease_seconds
        self.metrics = metrics
        self.clock = clock or SystemClock()
        self.name = name
        self._term: _Term | None = None
        self._lock = threading.Lock()

    def attempt(self) -> Change | None:
        """Take or renew the lease once; what changed, if anything. A failing store
        raises ``StoreError``: the term then lasts until its deadline, no longer."""
        sent = self.clock.monotonic()
        try:
            lease = self.store.acquire_lease(self.name, self.replica_id, self.lease_seconds)
        except StoreError:
            self.current()  # steps down if the deadline passed
            raise
        with self._lock:
            if lease.held_by(self.replica_id):
                fence = Fence(self.name, self.replica_id, lease.epoch)
                was = self._term
                self._term = _Term(fence, sent + self.lease_seconds)
                if was is not None and was.fence == fence:
                    return None
                if was is not None:  # our term ended unnoticed and a new one began
                    self._lost(was, "a new term began")
                self._acquired(fence)
                return Change.ACQUIRED
            if self._term is not None:
                self._lost(self._term, f"held by {lease.holder!r} in epoch {lease.epoch}")
                self._term = None
                return Change.LOST
            return None

    def current(self) -> Fence | None:
        """This replica's term while it leads, else None (its deadline passed: it stops
        leading now, whatever the store says later)."""
        with self._lock:
            term = self._term
            if term is None:
                return None
            if self.clock.monotonic() < term.deadline:
                return term.fence
            self._lost(term, "not renewed in time")
            self._term = None
            return None

    @property
    def role(self) -> Role:
        return Role.LEADER if self.current() is not None else Role.FOLLOWER

    def check(self) -> None:
        """Raise ``LeaseLost`` unless this replica leads and the store agrees that its
        term still holds the lease: asked right before an action step is applied."""
        fence = self.current()
        if fence is None:
            raise LeaseLost(f"replica {self.replica_id!r} is not the leader")
        if not self.store.holds_lease(fence):
            raise LeaseLost(
                f"replica {self.replica_id!r} no longer holds lease {fence.name!r} in "
                f"epoch {fence.epoch!r}"
            )

    def release(self) -> None:
        """End the term now (graceful shutdown): a follower takes over at its next
        attempt instead of waiting for the expiry."""
        with self._lock:
            term, self._term = self._term, None
            if term is None:
                return
            self._lost(term, "released")
        self.store.release_lease(term.fence.name, term.fence.holder, term.fence.epoch)

    # --- logs and figures -----------------------------------------------------------------

    def _acquired(self, fence: Fence) -> None:
        log.info("leader_acquired", replica=self.replica_id, epoch=fence.epoch, lease=self.name)
        if self.metrics is not None:
            self.metrics.leader.set(1)
            self.metrics.leader_changes.labels(change=Change.ACQUIRED.value).inc()

    def _lost(self, term: _Term, why: str) -> None:
        log.warning(
            "leader_lost",
            replica=self.replica_id,
            epoch=term.fence.epoch,
            lease=self.name,
            why=why,
        )
        if self.metrics is not None:
            self.metrics.leader.set(0)
            self.metrics.leader_changes.labels(change=Change.LOST.value).inc()
