"""Tests of ``SpanWriterProcess``, the child process that writes spans for the daemon, on a
real SQLite file and a real PostgreSQL: it must store exactly what ``SqlStore.add_spans``
stores, survive the death of its child without losing a retried batch, and leave no
process behind when closed.

What must not live here: the store's own semantics (tests/test_store.py) or the ingest
queue that retries batches (tests/test_receiver.py, tests/test_daemon.py).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from sentinel.adapters.db import EVALUATIONS, SqlStore, open_store
from sentinel.adapters.otlp import decode_json_object, decode_protobuf, encode_protobuf
from sentinel.adapters.span_writer import SpanWriterProcess
from sentinel.clock import SystemClock
from sentinel.errors import StoreError
from sentinel.telemetry import Span
from tests.fixtures.postgres import PostgresServer

T0 = 1_796_000_000_000_000_000  # 2026-12 in nanoseconds
EVERYTHING = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
WAIT_SECONDS = 30.0  # bound of every wait loop; none is expected to come near it


# --- spans -----------------------------------------------------------------------------------


def _kv(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"key": key, "value": value}


def _sv(value: str) -> dict[str, Any]:
    return {"stringValue": value}


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)
_attribute = st.one_of(
    st.tuples(
        st.sampled_from(["gen_ai.operation.name"]),
        st.sampled_from(["chat", "execute_tool", "invoke_agent", "retrieval"]).map(_sv),
    ),
    st.tuples(
        st.sampled_from(["gen_ai.request.model", "gen_ai.tool.name", "gen_ai.agent.name"]),
        st.sampled_from(["gpt-4o", "crm_lookup", "care-agent", "nul\x00name"]).map(_sv),
    ),
    st.tuples(
        st.sampled_from(["gen_ai.usage.input_tokens", "http.response.status_code"]),
        st.one_of(
            st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda n: {"intValue": n}),
            st.sampled_from([200, 404, 503]).map(lambda n: {"intValue": str(n)}),
        ),
    ),
    st.tuples(st.sampled_from(["peer.service", "error.type", "x.note"]), _text.map(_sv)),
    st.tuples(st.just("x.ratio"), st.floats(allow_nan=False).map(lambda f: {"doubleValue": f})),
)


@st.composite
def _json_span(draw: st.DrawFn) -> dict[str, Any]:
    start = T0 + draw(st.integers(min_value=0, max_value=10**12))
    span: dict[str, Any] = {
        # A few ids only, so that batches repeat spans (within a batch and across them).
        "traceId": draw(st.sampled_from(["a" * 32, "b" * 32])),
        "spanId": f"{draw(st.integers(min_value=1, max_value=12)):016x}",
        "name": draw(_text),
        "kind": draw(st.integers(min_value=0, max_value=5)),
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + draw(st.integers(min_value=0, max_value=10**10))),
        "status": {"code": draw(st.integers(min_value=0, max_value=2)), "message": draw(_text)},
        "attributes": [_kv(k, v) for k, v in draw(st.lists(_attribute, max_size=4))],
    }
    if draw(st.booleans()):
        span["events"] = [
            {
                "name": "gen_ai.evaluation.result",
                "timeUnixNano": str(start),
                "attributes": [
                    _kv("gen_ai.evaluation.name", _sv(draw(st.sampled_from(["rel", "tox"])))),
                    _kv("gen_ai.evaluation.score.value", {"doubleValue": draw(st.floats(0, 1))}),
                ],
            }
        ]
    return span


@st.composite
def span_batches(draw: st.DrawFn) -> list[Span]:
    spans = draw(st.lists(_json_span(), min_size=1, max_size=6))
    service = draw(st.sampled_from(["crm-api", "support-gateway"]))
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [_kv("service.name", _sv(service))]},
                "scopeSpans": [{"scope": {"name": "prop"}, "spans": spans}],
            }
        ]
    }
    decoded = decode_json_object(doc).spans
    if draw(st.booleans()):
        # As the protobuf receiver makes them: with the exporter's bytes in ``raw``.
        decoded = decode_protobuf(encode_protobuf(decoded)).spans
    return decoded


def fixed_spans(trace: str, n: int, *, first: int = 1) -> list[Span]:
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [_kv("service.name", _sv("crm-api"))]},
                "scopeSpans": [
                    {
                        "scope": {"name": "fixed"},
                        "spans": [
                            {
                                "traceId": trace,
                                "spanId": f"{i:016x}",
                                "name": f"span {i}",
                                "kind": 3,
                                "startTimeUnixNano": str(T0 + i),
                                "endTimeUnixNano": str(T0 + i + 1000),
                                "attributes": [
                                    _kv("peer.service", _sv("crm-db")),
                                    _kv("gen_ai.usage.input_tokens", {"intValue": str(i)}),
                                ],
                            }
                            for i in range(first, first + n)
                        ],
                    }
                ],
            }
        ]
    }
    spans = decode_json_object(doc).spans
    assert len(spans) == n
    return spans


# --- backends --------------------------------------------------------------------------------


@dataclass
class Backend:
    """Two stores of one kind: one written by a ``SpanWriterProcess``, one by
    ``add_spans`` in this process (the reference)."""

    written: SqlStore
    reference: SqlStore
    url: str
    postgres: bool

    def writer(self) -> SpanWriterProcess:
        return SpanWriterProcess(self.url, postgres=self.postgres)


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        url, ref_url = f"sqlite:///{tmp_path / 'written.db'}", f"sqlite:///{tmp_path / 'ref.db'}"
        cleanup = None
    else:
        url = str(request.getfixturevalue("postgres_url"))
        server: PostgresServer = request.getfixturevalue("postgres_server")
        ref_name = "ref_" + url.rsplit("/", 1)[1][:50]
        server.create_database(ref_name)
        ref_url = server.url(ref_name)

        def cleanup() -> None:
            if server.running:
                server.drop_database(ref_name)

    written = open_store(url, SystemClock())
    reference = open_store(ref_url, SystemClock())
    try:
        yield Backend(written, reference, url, postgres=request.param == "postgres")
    finally:
        written.close()
        reference.close()
        if cleanup is not None:
            cleanup()


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Iterator[Backend]:
    url = f"sqlite:///{tmp_path / 'written.db'}"
    written = open_store(url, SystemClock())
    reference = open_store(f"sqlite:///{tmp_path / 'ref.db'}", SystemClock())
    try:
        yield Backend(written, reference, url, postgres=False)
    finally:
        written.close()
        reference.close()


def _evaluation_rows(store: SqlStore) -> list[tuple[Any, ...]]:
    t = EVALUATIONS
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.trace_id, t.c.span_id, t.c.component, t.c.name, t.c.score, t.c.label)
        ).all()
    return sorted(tuple(r) for r in rows)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.002)


def _in_recv(thread: threading.Thread) -> bool:
    """Whether ``thread`` is blocked receiving from a multiprocessing pipe (the writer
    has sent its batch and waits for the child's answer)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "recv" and code.co_filename.endswith(
            os.path.join("multiprocessing", "connection.py")
        ):
            return True
        frame = frame.f_back
    return False


def _is_zombie_or_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


# --- the same rows as add_spans --------------------------------------------------------------


_PROPERTY = settings(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_writes_equal_what_add_spans_writes(backend: Backend) -> None:
    writer = backend.writer()
    writer.start()
    # Each PostgreSQL example is a few round trips: fewer of them, and no shrinking.
    examples = 10 if backend.postgres else 25
    phases = (Phase.explicit, Phase.generate) if backend.postgres else tuple(Phase)

    @settings(_PROPERTY, max_examples=examples, phases=phases)
    @given(batch=span_batches())
    def check(batch: list[Span]) -> None:
        new = writer.write(batch)
        assert new == backend.reference.add_spans(batch)
        assert backend.written.spans(*EVERYTHING) == backend.reference.spans(*EVERYTHING)
        assert _evaluation_rows(backend.written) == _evaluation_rows(backend.reference)

    try:
        check()
        assert backend.written.span_count() > 0
    finally:
        writer.close()


def test_a_repeated_write_stores_nothing_new(backend: Backend) -> None:
    spans = fixed_spans("c" * 32, 20)
    writer = backend.writer()
    try:
        assert writer.write(spans) == 20
        assert writer.write(spans) == 0
        assert writer.write(spans[5:] + fixed_spans("c" * 32, 3, first=21)) == 3
    finally:
        writer.close()
    assert backend.written.span_count() == 23
    assert backend.written.spans(*EVERYTHING) == sorted(
        [*spans, *fixed_spans("c" * 32, 3, first=21)], key=lambda s: s.start_ns
    )


def test_an_empty_write_is_a_noop_that_starts_no_child(sqlite_backend: Backend) -> None:
    writer = sqlite_backend.writer()
    assert writer.write([]) == 0
    assert writer.pid is None
    writer.close()


def test_a_store_error_in_the_child_is_raised_and_the_child_lives_on(tmp_path: Path) -> None:
    # A database without the schema: every insert fails inside the child.
    url = f"sqlite:///{tmp_path / 'unmigrated.db'}"
    writer = SpanWriterProcess(url, postgres=False)
    try:
        with pytest.raises(StoreError, match="writing 2 spans failed") as info:
            writer.write(fixed_spans("d" * 32, 2))
        assert "died" not in str(info.value)
        pid = writer.pid
        assert pid is not None and not _gone(pid)
        with pytest.raises(StoreError):
            writer.write(fixed_spans("d" * 32, 1))
        assert writer.pid == pid  # the same child answered both
    finally:
        writer.close()


# --- the child dies --------------------------------------------------------------------------


def test_a_child_killed_during_a_write_raises_and_the_retry_loses_nothing(
    backend: Backend,
) -> None:
    before = fixed_spans("e" * 32, 5)
    batch = fixed_spans("e" * 32, 5, first=6)
    writer = backend.writer()
    try:
        assert writer.write(before) == 5
        pid = writer.pid
        assert pid is not None
        # Stopped, the child can neither answer nor be seen dead: the write below is
        # surely waiting for its answer when the child is killed.
        os.kill(pid, signal.SIGSTOP)
        failures: list[BaseException] = []

        def write() -> None:
            try:
                writer.write(batch)
            except BaseException as e:  # noqa: BLE001  # checked by the test thread
                failures.append(e)

        thread = threading.Thread(target=write)
        thread.start()
        try:
            _wait_until(lambda: _in_recv(thread), "the write to wait for the child")
        finally:
            os.kill(pid, signal.SIGKILL)
        thread.join(WAIT_SECONDS)
        assert not thread.is_alive()

        assert len(failures) == 1
        error = failures[0]
        assert isinstance(error, StoreError)
        assert "span writer process died" in str(error)
        assert _gone(pid)  # the dead child was reaped

        # The queue retries the failed batch: a new child writes it, once.
        assert writer.write(batch) == 5
        assert writer.pid is not None and writer.pid != pid
        assert writer.write(batch) == 0
    finally:
        writer.close()
    stored = backend.written.spans(*EVERYTHING)
    assert stored == [*before, *batch]


def test_a_child_killed_between_writes_is_replaced(sqlite_backend: Backend) -> None:
    before = fixed_spans("f" * 32, 3)
    batch = fixed_spans("f" * 32, 3, first=4)
    writer = sqlite_backend.writer()
    try:
        assert writer.write(before) == 3
        pid = writer.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        _wait_until(lambda: _is_zombie_or_gone(pid), "the killed child to exit")
        # Its death is known before the next batch is sent: a new child takes it.
        with capture_logs() as logs:
            new = writer.write(batch)
        assert new == 3
        assert writer.pid is not None and writer.pid != pid
        assert _gone(pid)
        assert any(e["event"] == "span writer process started" for e in logs)
    finally:
        writer.close()
    assert sqlite_backend.written.spans(*EVERYTHING) == [*before, *batch]


def test_a_kill_at_any_moment_loses_no_retried_batch(sqlite_backend: Backend) -> None:
    # The daemon's retry loop: on StoreError the same batch is written again.
    writer = sqlite_backend.writer()
    expected: list[Span] = []
    try:
        for round_ in range(2):
            batch = fixed_spans("9" * 32, 4, first=1 + 4 * round_)
            expected.extend(batch)
            pid = writer.pid
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            for _attempt in range(3):
                try:
                    assert writer.write(batch) == 4
                    break
                except StoreError as e:
                    assert "died" in str(e)
            else:
                raise AssertionError("the batch was never written")
    finally:
        writer.close()
    assert sqlite_backend.written.spans(*EVERYTHING) == expected


# --- close -----------------------------------------------------------------------------------


def test_close_ends_the_child(sqlite_backend: Backend) -> None:
    writer = sqlite_backend.writer()
    writer.write(fixed_spans("1" * 32, 2))
    pid = writer.pid
    assert pid is not None and not _gone(pid)
    writer.close()
    assert writer.pid is None
    # close() joins the child, so it is reaped, not left a zombie.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    writer.close()  # a second close is harmless


def test_close_kills_a_child_that_does_not_stop(sqlite_backend: Backend) -> None:
    writer = sqlite_backend.writer()
    writer.write(fixed_spans("2" * 32, 1))
    pid = writer.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # it cannot read the stop message
    writer.close(timeout=0.2)
    assert _gone(pid)


def test_close_after_the_child_died_is_harmless(sqlite_backend: Backend) -> None:
    writer = sqlite_backend.writer()
    writer.write(fixed_spans("3" * 32, 1))
    pid = writer.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    writer.close()
    assert _gone(pid)
    assert writer.pid is None


def test_a_closed_writer_starts_a_new_child_when_used_again(sqlite_backend: Backend) -> None:
    writer = sqlite_backend.writer()
    writer.write(fixed_spans("4" * 32, 1))
    first = writer.pid
    writer.close()
    try:
        assert writer.write(fixed_spans("4" * 32, 1, first=2)) == 1
        assert writer.pid is not None and writer.pid != first
    finally:
        writer.close()
    assert sqlite_backend.written.span_count() == 2


# --- pipelining: several threads write at once ------------------------------------------------


def test_concurrent_writers_are_answered_each_with_their_own_count(backend: Backend) -> None:
    # The ingest queue runs two writer threads against one child: batches are pipelined
    # and every caller must get the count of its own batch back, not its neighbour's.
    batches = [fixed_spans(f"{t:032x}", n) for t, n in enumerate((3, 7, 1, 5, 2, 9, 4, 6), 1)]
    writer = backend.writer()
    results: dict[int, int] = {}
    failures: list[BaseException] = []

    def write(i: int) -> None:
        try:
            results[i] = writer.write(batches[i])
        except BaseException as e:  # noqa: BLE001  # checked by the test thread
            failures.append(e)

    try:
        threads = [threading.Thread(target=write, args=(i,)) for i in range(len(batches))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT_SECONDS)
        assert failures == []
        assert results == {i: len(b) for i, b in enumerate(batches)}
    finally:
        writer.close()
    stored = {(s.trace_id, s.span_id) for s in backend.written.spans(*EVERYTHING)}
    assert stored == {(s.trace_id, s.span_id) for b in batches for s in b}


def test_a_death_with_two_batches_in_flight_fails_both_and_the_retries_lose_nothing(
    sqlite_backend: Backend,
) -> None:
    first, second = fixed_spans("1" * 32, 4), fixed_spans("2" * 32, 4)
    writer = sqlite_backend.writer()
    try:
        writer.start()
        pid = writer.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # both batches get sent, neither is answered
        failures: list[BaseException] = []

        def write(batch: list[Span]) -> None:
            try:
                writer.write(batch)
            except BaseException as e:  # noqa: BLE001  # checked by the test thread
                failures.append(e)

        threads = [threading.Thread(target=write, args=(b,)) for b in (first, second)]
        for t in threads:
            t.start()
            _wait_until(lambda t=t: _in_recv(t) or _waits_its_turn(t), "the batch to be sent")
        os.kill(pid, signal.SIGKILL)
        for t in threads:
            t.join(WAIT_SECONDS)
            assert not t.is_alive()
        assert len(failures) == 2
        assert all(isinstance(e, StoreError) and "died" in str(e) for e in failures)
        # The queue retries both: a new child writes each once.
        assert writer.write(first) == 4
        assert writer.write(second) == 4
        assert writer.pid != pid
    finally:
        writer.close()
    assert len(sqlite_backend.written.spans(*EVERYTHING)) == 8


def _waits_its_turn(thread: threading.Thread) -> bool:
    """Whether ``thread`` has sent its batch and waits for an earlier one's answer."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == "wait" and frame.f_code.co_filename.endswith("threading.py"):
            return True
        frame = frame.f_back
    return False
