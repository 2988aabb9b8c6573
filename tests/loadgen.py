"""A load generator for the OTLP/HTTP receiver, shared by tests/test_load.py and
bench/ingest.py: realistic agent-trace request bodies encoded once (fresh trace ids per
request by rewriting a marker in the bytes, so the client spends its CPU on sending),
closed-loop and paced exporters that honour Retry-After as OTLP exporters do, a
``sentinel run`` process, memory and CPU of its process tree from /proc, and a
server-side throttle that makes a PostgreSQL store absorb a known number of spans per
second at most.

What must not live here: assertions (the test's) and printing (the bench's).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tests.ports import free_port

MARKER = b"\xa5\x5a\xc3\x3c"  # the last 4 bytes of every trace id in the template


def _kv(out: object, key: str, value: object) -> None:
    kv = out.add()  # type: ignore[attr-defined]
    kv.key = key
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    else:
        kv.value.string_value = str(value)


# (name, parent is the root?, span kind, duration ms, attributes): one agent run.
AGENT_TRACE: list[tuple[str, bool, int, float, dict[str, object]]] = [
    (
        "invoke_agent support-agent",
        False,
        1,
        2400,
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support-agent"},
    ),
    *[
        (
            "chat gpt-4o",
            True,
            3,
            800,
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2025-07-27",
                "server.address": "api.openai.com",
            },
        )
    ]
    * 2,
    (
        "execute_tool crm_lookup",
        True,
        1,
        120,
        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "crm_lookup"},
    ),
    (
        "GET",
        True,
        3,
        100,
        {
            "http.request.method": "GET",
            "server.address": "crm-api",
            "url.full": "http://crm-api/v1/customers/{id}",
            "http.response.status_code": 200,
        },
    ),
    (
        "execute_tool kb_search",
        True,
        1,
        90,
        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "kb_search"},
    ),
    (
        "search help-center",
        True,
        3,
        60,
        {
            "db.system.name": "qdrant",
            "db.collection.name": "help-center",
            "db.operation.name": "search",
            "server.address": "vector-db",
        },
    ),
    (
        "SELECT customers",
        True,
        3,
        12,
        {
            "db.system.name": "postgresql",
            "db.collection.name": "customers",
            "db.operation.name": "SELECT",
            "server.address": "crm-db",
            "peer.service": "crm-db",
        },
    ),
]


def template_request(n_spans: int, seed: int = 7, start_ns: int | None = None) -> bytes:
    """One ExportTraceServiceRequest of ``n_spans`` spans: whole agent runs of 8 spans
    (agent, 2 LLM calls with tokens, 2 tools, HTTP and DB client spans, and evaluator
    scores on half the runs)."""
    rnd = random.Random(seed)
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in {
        "service.name": "support-agent-svc",
        "service.version": "1.42.0",
        "deployment.environment.name": "production",
        "telemetry.sdk.language": "python",
    }.items():
        _kv(rs.resource.attributes, k, v)
    ss = rs.scope_spans.add()
    ss.scope.name = "pydantic-ai"
    # Now by default: spans must be recent, or the daemon's retention may delete them.
    t0 = time.time_ns() if start_ns is None else start_ns
    made = 0
    while made < n_spans:
        trace_id = rnd.randbytes(12) + MARKER
        root = rnd.randbytes(8)
        start = t0 + made * 1_000_000
        for name, child, kind, dur_ms, attrs in AGENT_TRACE:
            if made >= n_spans:
                break
            p = ss.spans.add()
            p.trace_id = trace_id
            p.span_id = rnd.randbytes(8) if child else root
            if child:
                p.parent_span_id = root
            p.name = name
            p.kind = kind  # type: ignore[assignment]
            p.start_time_unix_nano = start
            p.end_time_unix_nano = start + int(dur_ms * 1e6)
            for k, v in attrs.items():
                _kv(p.attributes, k, v)
            if name.startswith("chat"):
                _kv(p.attributes, "gen_ai.usage.input_tokens", rnd.randint(800, 3000))
                _kv(p.attributes, "gen_ai.usage.output_tokens", rnd.randint(10, 300))
            if not child and rnd.random() < 0.5:
                e = p.events.add()
                e.name = "gen_ai.evaluation.result"
                e.time_unix_nano = p.end_time_unix_nano
                _kv(e.attributes, "gen_ai.evaluation.name", "faithfulness")
                _kv(e.attributes, "gen_ai.evaluation.score.value", rnd.uniform(0.7, 1.0))
            made += 1
    body = req.SerializeToString()
    # Rewriting the marker must touch trace ids and nothing else.
    assert body.count(MARKER) == len(ss.spans), "marker bytes must occur once per span"
    return body


@dataclass
class Tally:
    """What the exporters saw. A request is identified by the number written over the
    marker of its trace ids (``request_number``); a refused request is resent with the
    same number, so the store skips the spans it already has."""

    spans_per_request: int
    acked: set[int] = field(default_factory=set)  # request numbers answered 200
    sent: set[int] = field(default_factory=set)  # request numbers sent at least once
    refusals: dict[int, int] = field(default_factory=dict)  # status code -> responses
    refusals_without_retry_after: int = 0
    unexpected: list[str] = field(default_factory=list)  # other statuses, transport errors
    latencies: list[float] = field(default_factory=list)

    @property
    def acked_spans(self) -> int:
        return len(self.acked) * self.spans_per_request

    @property
    def refused(self) -> int:
        return sum(self.refusals.values())


def request_number(trace_id_hex: str) -> int:
    """The request a stored span came from: the last 4 bytes of its trace id."""
    return int(trace_id_hex[-8:], 16)


async def exporter(
    url: str,
    template: bytes,
    ids: Iterator[int],
    stop_at: float,
    tally: Tally,
    *,
    every_seconds: float = 0.0,
    first_in: float = 0.0,
) -> None:
    """Post requests until ``stop_at``, each waiting for its response (the OTel SDK's
    BatchSpanProcessor does the same). ``every_seconds``: start a new request at most
    this often (0: back to back), the first after ``first_in``. On 429/503 wait
    Retry-After and resend the same request, as OTLP exporters do; a request still
    refused at ``stop_at`` is dropped."""
    headers = {"Content-Type": "application/x-protobuf"}
    await asyncio.sleep(first_in)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=1)) as client:
        due = time.monotonic()
        while time.monotonic() < stop_at:
            n = next(ids)
            body = template.replace(MARKER, n.to_bytes(4, "big"))
            while time.monotonic() < stop_at:
                tally.sent.add(n)
                t = time.monotonic()
                try:
                    r = await client.post(url, content=body, headers=headers)
                except httpx.TransportError as e:
                    tally.unexpected.append(f"{type(e).__name__}: {e}")
                    return
                tally.latencies.append(time.monotonic() - t)
                if r.status_code == 200:
                    tally.acked.add(n)
                    break
                if r.status_code in (429, 503):
                    tally.refusals[r.status_code] = tally.refusals.get(r.status_code, 0) + 1
                    after = r.headers.get("retry-after")
                    if after is None:
                        tally.refusals_without_retry_after += 1
                    await asyncio.sleep(float(after or "1"))
                    continue
                tally.unexpected.append(f"{r.status_code}: {r.text[:200]}")
                return
            due += every_seconds
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            due = max(due, time.monotonic() - every_seconds)  # no burst to catch up


def tree(pid: int) -> list[int]:
    """The daemon and its descendants (the span writer process)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    out, frontier = [pid], [pid]
    while frontier:
        frontier = [p for p, pp in parents.items() if pp in frontier]
        out += frontier
    return out


def cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU time so far of each process of the daemon's tree (from /proc)."""
    out = {}
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        out[p] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of the daemon's whole process tree (main, span writer child,
    multiprocessing's resource tracker), in MiB."""
    total = 0.0
    for p in tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue  # ended meanwhile
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


class DaemonProcess:
    """``sentinel run`` in its own process, exactly as deployed, with a config written to
    ``workdir`` (``extra_toml`` is appended to it). Its log is ``workdir/<label>.log``."""

    def __init__(self, store_url: str, workdir: Path, label: str, extra_toml: str = "") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{label}.log"
        cfg = workdir / f"{label}.toml"
        cfg.write_text(
            f'[server]\nport = {self.port}\n[store]\nurl = "{store_url}"\n'
            f'[logging]\nlevel = "warning"\n{extra_toml}'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sentinel.cli", "run", "--config", str(cfg)],
                env=env,
                cwd=workdir,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon did not start; see {self.log_path}")
            time.sleep(0.1)

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self, timeout: float = 120) -> int:
        """SIGTERM (a graceful stop: the queue is written first); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return int(self.proc.returncode)


def throttle_spans(store_url: str, seconds_per_span: float) -> None:
    """Make the PostgreSQL store absorb at most 1 / ``seconds_per_span`` spans per second:
    a statement trigger on ``spans`` sleeps on the server ``seconds_per_span`` for every
    row the statement inserted. ``pg_sleep`` never sleeps less than asked, and the span
    writer writes one batch at a time, so the ceiling holds whatever the machine's load;
    one sleep per batch (not per row) keeps the time lost to wake-ups small, so the
    store absorbs close to the ceiling (the rows' own cost comes on top). The schema must
    exist."""
    engine = sa.create_engine(store_url)
    try:
        with engine.begin() as c:
            c.execute(
                sa.text(
                    "CREATE OR REPLACE FUNCTION sentinel_test_throttle() RETURNS trigger "
                    "LANGUAGE plpgsql AS $$ BEGIN "
                    f"PERFORM pg_sleep({float(seconds_per_span)!r} * count(*)) FROM new_rows; "
                    "RETURN NULL; END $$"
                )
            )
            c.execute(
                sa.text(
                    "CREATE TRIGGER sentinel_test_throttle AFTER INSERT ON spans "
                    "REFERENCING NEW TABLE AS new_rows "
                    "FOR EACH STATEMENT EXECUTE FUNCTION sentinel_test_throttle()"
                )
            )
    finally:
        engine.dispose()


def stored_per_request(store_url: str) -> dict[int, int]:
    """Spans in the store, by request number (``request_number``)."""
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as c:
            rows = c.execute(sa.text("SELECT trace_id FROM spans")).scalars().all()
    finally:
        engine.dispose()
    out: dict[int, int] = {}
    for trace_id in rows:
        n = request_number(trace_id)
        out[n] = out.get(n, 0) + 1
    return out


@dataclass
class LoadRun:
    tally: Tally
    seconds: float
    rss_mb: list[float]  # the daemons' trees summed, one sample a second
    cpu_seconds: dict[int, float]  # per process of the daemons' trees, during the run
    client_cpu_seconds: float

    def rss_quarters(self) -> list[list[float]]:
        q = len(self.rss_mb)
        return [self.rss_mb[q * i // 4 : q * (i + 1) // 4] for i in range(4)]


def run_load(
    daemon_pids: list[int],
    urls: list[str],
    *,
    exporters: int,
    seconds: float,
    spans_per_request: int,
    spans_per_second: float = 0.0,
    span_age_seconds: float = 0.0,
) -> LoadRun:
    """``exporters`` exporters (split evenly across ``urls``) for ``seconds``, offering
    ``spans_per_second`` in total (0: as fast as they are answered), of spans that
    started ``span_age_seconds`` ago. RSS of the daemons' process trees is sampled every
    second."""
    start_ns = time.time_ns() - int(span_age_seconds * 1e9)
    template = template_request(spans_per_request, start_ns=start_ns)
    tally = Tally(spans_per_request)
    every = exporters * spans_per_request / spans_per_second if spans_per_second else 0.0
    rss: list[float] = []

    async def main() -> float:
        ids = itertools.count(1)
        start = time.monotonic()
        stop_at = start + seconds

        async def sample_rss() -> None:
            while time.monotonic() < stop_at:
                rss.append(sum(rss_mb(p) for p in daemon_pids))
                await asyncio.sleep(1)

        sampler = asyncio.create_task(sample_rss())
        await asyncio.gather(
            *(
                exporter(
                    f"{urls[i % len(urls)]}/v1/traces",
                    template,
                    ids,
                    stop_at,
                    tally,
                    every_seconds=every,
                    # staggered, so that paced requests do not arrive in lockstep
                    first_in=every * i / exporters,
                )
                for i in range(exporters)
            )
        )
        await sampler
        return time.monotonic() - start

    cpu0 = {k: v for p in daemon_pids for k, v in cpu_seconds(p).items()}
    client0 = time.process_time()
    elapsed = asyncio.run(main())
    client_cpu = time.process_time() - client0
    cpu1 = {k: v for p in daemon_pids for k, v in cpu_seconds(p).items()}
    return LoadRun(
        tally=tally,
        seconds=elapsed,
        rss_mb=rss,
        cpu_seconds={p: cpu1[p] - cpu0.get(p, 0.0) for p in cpu1},
        client_cpu_seconds=client_cpu,
    )
