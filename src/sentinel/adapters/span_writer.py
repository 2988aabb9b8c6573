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
    """``write(spans) -> new`` like ``SqlStore.add_spans``, done by a child process."""

    def __init__(self, url: str, *, postgres: bool) -> None:
        self._url = url
        self._postgres = postgres
        # spawn, not fork: the parent has threads and an event loop.
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._proc: BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        with self._lock:
            self._ensure()

    def _ensure(self) -> multiprocessing.connection.Connection:
        if self._proc is not None and self._proc.is_alive() and self._conn is not None:
            return self._conn
        if self._proc is not None:
            self._proc.join(5)
            log.warning(
                "span writer process found dead between writes; restarting it",
                exit_code=self._proc.exitcode,
            )
        self._discard()
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_child_main, args=(self._url, child), name="sentinel-span-writer", daemon=True
        )
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        log.info("span writer process started", pid=proc.pid)
        return parent

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(5)
            self._proc.close()
        self._proc = self._conn = None

    def write(self, spans: Sequence[Span]) -> int:
        if not spans:
            return 0
        batch: SpanRows = span_rows(spans, postgres=self._postgres)
        with self._lock:
            conn = self._ensure()
            try:
                conn.send(batch)
                status, value = conn.recv()
            except (EOFError, OSError) as e:
                code = None
                if self._proc is not None:
                    self._proc.join(5)  # reap it, so its exit code is known
                    code = self._proc.exitcode
                self._discard()
                raise StoreError(
                    f"store {mask_url(self._url)}: the span writer process died "
                    f"(exit code {code}): {e or type(e).__name__}; it is restarted"
                ) from e
        if status != "ok":
            raise StoreError(str(value))
        return int(value)

    def close(self, timeout: float = 30.0) -> None:
        with self._lock:
            if self._conn is not None and self._proc is not None and self._proc.is_alive():
                with contextlib.suppress(OSError):  # the child died already: nothing to stop
                    self._conn.send(_STOP)
                self._proc.join(timeout)
            self._discard()
