"""Span writes in a child process, so that the database work runs on another core than
the event loop that decodes OTLP.

Why a process: ingest is bound by the GIL. Decoding protobuf and binding SQL parameters
both need it, so in one process they take turns on one core (bench/ingest.py measured
the daemon at ~95% of one core, below 20,000 spans/s). The child receives the rows that
``db.span_rows`` builds (plain tuples: < 1 us per span to pickle each way) and writes
them with the same ``SqlStore.insert_span_rows`` as in-process ingest.

Failure: if the child dies, ``write`` raises ``StoreError`` and the next call starts a
new child; the ingest queue keeps the batch and retries it, and the store skips rows
that were already committed. Nothing here touches HTTP or decoding.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import signal
import threading
from collections.abc import Sequence
from multiprocessing.process import BaseProcess

import structlog

from sentinel.adapters.db import SpanRows, SqlStore, create_engine_for, span_rows
from sentinel.clock import SystemClock
from sentinel.errors import StoreError
from sentinel.settings import mask_url
from sentinel.telemetry import Span

log = structlog.get_logger(__name__)

_STOP = None


def _child_main(url: str, conn: multiprocessing.connection.Connection) -> None:
    # The parent decides when the writer stops (after the ingest queue is written): a
    # SIGTERM/SIGINT sent to the whole process group must not cut a write short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    store = SqlStore(create_engine_for(url), SystemClock())
    try:
        while True:
            try:
                batch = conn.recv()
            except EOFError:
                return  # the parent is gone
            if batch is _STOP:
                return
            try:
                conn.send(("ok", store.insert_span_rows(batch)))
            except StoreError as e:
                conn.send(("error", str(e)))
    finally:
        store.close()
        conn.close()


class SpanWriterProcess:
    """``write(spans) -> new`` like ``SqlStore.add_spans``, done by a child process.

    Several threads may call ``write`` at once: batches are pipelined (the next one is
    sent while the child writes the current one, so it never waits for the parent) and
    answered in the order they were sent."""

    def __init__(self, url: str, *, postgres: bool) -> None:
        self._url = url
        self._postgres = postgres
        # spawn, not fork: the parent has threads and an event loop.
        self._ctx = multiprocessing.get_context("spawn")
        # Lock order: _send_lock, then _turn.
        self._send_lock = threading.Lock()  # one sender at a time; guards _proc/_conn/_sent
        self._turn = threading.Condition()  # replies are read in ticket order
        self._proc: BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._generation = 0  # a new child, a new generation: older tickets are void
        self._sent = 0
        self._received = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        with self._send_lock:
            self._ensure()

    def _ensure(self) -> multiprocessing.connection.Connection:
        """The live child's pipe, starting a child if needed. Hold _send_lock."""
        if self._proc is not None and self._proc.is_alive() and self._conn is not None:
            return self._conn
        if self._proc is not None:
            self._proc.join(5)
            log.warning(
                "span writer process found dead between writes; restarting it",
                exit_code=self._proc.exitcode,
            )
        self._reset()
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_child_main, args=(self._url, child), name="sentinel-span-writer", daemon=True
        )
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        log.info("span writer process started", pid=proc.pid)
        return parent

    def _reset(self) -> int | None:
        """Drop the current child (killing it if alive) and void its tickets. Hold
        _send_lock. Returns its exit code."""
        code = None
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(5)  # reap it, so its exit code is known
            code = self._proc.exitcode
            self._proc.close()
        self._proc = self._conn = None
        with self._turn:
            self._generation += 1
            self._sent = self._received = 0
            self._turn.notify_all()
        return code

    def _send(self, batch: SpanRows) -> tuple[multiprocessing.connection.Connection, int, int]:
        """Send a batch; returns the pipe, the child's generation and the batch's ticket."""
        with self._send_lock:
            conn = self._ensure()
            generation, ticket = self._generation, self._sent
            self._sent += 1
            try:
                conn.send(batch)
            except OSError as e:
                code = self._reset()
                raise self._death(code, e) from e
        return conn, generation, ticket

    def _death(self, code: int | None, error: BaseException) -> StoreError:
        return StoreError(
            f"store {mask_url(self._url)}: the span writer process died (exit code {code}): "
            f"{error or type(error).__name__}; it is restarted"
        )

    def _died(self, generation: int, error: BaseException) -> StoreError:
        with self._send_lock:
            code = self._reset() if generation == self._generation else None
        return self._death(code, error)

    def write(self, spans: Sequence[Span]) -> int:
        if not spans:
            return 0
        batch: SpanRows = span_rows(spans, postgres=self._postgres)
        conn, generation, ticket = self._send(batch)
        with self._turn:
            while self._generation == generation and self._received != ticket:
                self._turn.wait()
            if self._generation != generation:
                raise StoreError(
                    f"store {mask_url(self._url)}: the span writer process died before "
                    "answering; it is restarted"
                )
        # Our turn: nobody else reads the pipe until _received moves on.
        try:
            status, value = conn.recv()
        except (EOFError, OSError) as e:
            raise self._died(generation, e) from e
        with self._turn:
            if self._generation == generation:
                self._received += 1
                self._turn.notify_all()
        if status != "ok":
            raise StoreError(str(value))
        return int(value)

    def close(self, timeout: float = 30.0) -> None:
        with self._send_lock:
            if self._conn is not None and self._proc is not None and self._proc.is_alive():
                with contextlib.suppress(OSError):  # the child died already: nothing to stop
                    self._conn.send(_STOP)
                self._proc.join(timeout)
            self._reset()
