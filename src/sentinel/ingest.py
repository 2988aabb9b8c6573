"""The ingest queue: a bounded buffer of decoded spans between the OTLP receiver and the
store, drained by one writer that commits queued requests together (group commit).

The contract the receiver builds on:
- ``offer()`` either takes all of a request's spans or none: when the queue has no room it
  says so at once (the receiver answers 429), and it never grows past its capacity.
- the future ``offer()`` returns resolves only once the spans are committed, so an HTTP
  200 means "stored". Spans stay queued while the store is failing and are written when it
  is back; a request that gave up waiting was answered 503 and will be retried by its
  exporter, and the store skips the duplicates.
- ``close()`` stops taking spans and writes everything already queued.

What must not live here: HTTP, decoding, SQL.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import structlog

from sentinel.errors import StoreError
from sentinel.observability import SelfMetrics
from sentinel.telemetry import Span

log = structlog.get_logger(__name__)


class Refusal(Enum):
    """Why ``offer()`` did not take a request's spans."""

    FULL = "queue_full"  # -> 429: come back later
    CLOSED = "closed"  # -> 503: shutting down
    UNHEALTHY = "unavailable"  # -> 503: the store is failing


@dataclass(slots=True)
class _Item:
    spans: Sequence[Span]
    done: asyncio.Future[None]


class IngestQueue:
    def __init__(
        self,
        write: Callable[[Sequence[Span]], int],
        *,
        max_spans: int,
        batch_spans: int,
        metrics: SelfMetrics,
        writers: int = 1,
        retry_initial_seconds: float = 0.2,
        retry_max_seconds: float = 5.0,
    ) -> None:
        """``writers``: threads calling ``write`` at once (2 pipelines batches into a
        span writer process: one is sent while the other is written)."""
        self._write = write
        self._writers = writers
        self._max = max_spans
        self._batch = batch_spans
        self._metrics = metrics
        self._retry_initial = retry_initial_seconds
        self._retry_max = retry_max_seconds
        # Shared between the event loop (offer) and the writer thread, under _cond.
        self._cond = threading.Condition()
        self._items: collections.deque[_Item] = collections.deque()
        self._queued = 0  # spans in _items plus the batch being written
        self._closed = False
        self._healthy = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        metrics.queue_capacity.set(max_spans)

    # -- the receiver's side (event loop) --

    @property
    def depth(self) -> int:
        return self._queued

    @property
    def healthy(self) -> bool:
        """False while the store is failing writes."""
        return self._healthy

    def offer(self, spans: Sequence[Span]) -> asyncio.Future[None] | Refusal:
        """Queue all of ``spans`` or none. Returns a future resolved once they are
        stored, or why they were refused."""
        with self._cond:
            if self._closed:
                return Refusal.CLOSED
            if not self._healthy and self._queued >= self._batch:
                # The store is down and a batch is already waiting on it: refuse rather
                # than hold more spans the store may not take for a while.
                return Refusal.UNHEALTHY
            # A request larger than the whole queue is still taken when the queue is
            # empty (its size is bounded by the body limit); otherwise it never gets in.
            if self._queued + len(spans) > self._max and self._queued > 0:
                return Refusal.FULL
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._items.append(_Item(spans, done))
            self._queued += len(spans)
            self._metrics.queue_spans.set(self._queued)
            self._cond.notify()
        return done

    # -- the writer: a thread, so that one write follows another without waiting for
    # -- the event loop (busy decoding the next request) to schedule it.

    def start(self) -> None:
        if not self._threads:
            self._loop = asyncio.get_running_loop()
            self._threads = [
                threading.Thread(target=self._run, name=f"ingest-writer-{i}", daemon=True)
                for i in range(self._writers)
            ]
            for t in self._threads:
                t.start()

    def _take(self) -> list[_Item] | None:
        """The next batch: queued requests up to ``batch_spans`` (at least one). None
        once closed and empty."""
        with self._cond:
            while not self._items:
                if self._closed:
                    return None
                self._cond.wait()
            batch: list[_Item] = []
            count = 0
            while self._items and (not batch or count + len(self._items[0].spans) <= self._batch):
                item = self._items.popleft()
                batch.append(item)
                count += len(item.spans)
            return batch

    def _run(self) -> None:
        delay = self._retry_initial
        while (batch := self._take()) is not None:
            spans: list[Span] = [s for item in batch for s in item.spans]
            try:
                with self._metrics.write_seconds.time():
                    new = self._write(spans)
            except StoreError as e:
                self._metrics.store_errors.labels(op="write_spans").inc()
                if self._healthy:
                    log.error(
                        "store write failed; spans kept in the queue",
                        error=str(e),
                        spans=len(spans),
                    )
                with self._cond:
                    self._healthy = False
                    # Back to the front, in order: nothing acknowledged or queued is lost.
                    self._items.extendleft(reversed(batch))
                    # Wait before retrying; close() does not cut this short, so a store
                    # that is back in time still gets the queue written.
                    self._cond.wait(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            if not self._healthy:
                log.info("store writes recovered", spans=len(spans))
            delay = self._retry_initial
            with self._cond:
                self._healthy = True
                self._queued -= len(spans)
                self._metrics.queue_spans.set(self._queued)
            self._metrics.spans_stored.inc(new)
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_resolve, batch)

    async def close(self, timeout: float) -> bool:
        """Stop taking spans and write what is queued. True if everything was written
        within ``timeout`` seconds."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if not self._threads:
            return not self._items
        deadline = time.monotonic() + timeout
        for t in self._threads:
            await asyncio.to_thread(t.join, max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            log.error("ingest queue not drained before the shutdown timeout", spans=self._queued)
            return False
        return True


def _resolve(batch: list[_Item]) -> None:
    for item in batch:
        if not item.done.done():
            item.done.set_result(None)
