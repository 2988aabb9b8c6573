"""Ingest throughput of the OTLP/HTTP receiver: spans per second sustained, p99 request
latency, and the daemon's memory (RSS) over the run, into SQLite and into PostgreSQL.

How it measures:
- the daemon runs as its own process (`python -m sentinel.cli run`), exactly as deployed;
- N exporters (asyncio tasks, one HTTP/1.1 connection each) post OTLP/HTTP protobuf
  requests of B spans back to back, each waiting for its response (what the SDK's
  BatchSpanProcessor does); on 429/503 an exporter waits Retry-After and resends the
  same request, as OTLP exporters do;
- request bodies are realistic agent traces (agent run, LLM calls with tokens, tool
  calls, HTTP and DB client spans, evaluator events), encoded once; each request gets
  fresh trace ids by rewriting a marker inside the bytes, so no two requests collide and
  the client spends its CPU on sending, not encoding;
- after the run, the spans in the store are counted: every span acknowledged with 200
  must be there ("lost" must be 0);
- RSS is summed over the daemon's process tree (main, span writer child, resource
  tracker) every second from /proc; CPU time per process from /proc/PID/stat, and the
  client's own CPU, since exporters and daemon share this machine's cores.

Results and history: docs/performance.md.

Usage: `uv run python bench/ingest.py [--store sqlite|postgres|both] [--seconds 30]`
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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


def template_request(n_spans: int, seed: int = 7) -> bytes:
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
    t0 = 1_795_000_000_000_000_000
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
    acked_spans: int = 0
    refused: int = 0
    latencies: list[float] = field(default_factory=list)


async def exporter(
    url: str,
    template: bytes,
    spans_per_request: int,
    ids: Iterator[int],
    stop_at: float,
    tally: Tally,
) -> None:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=1)) as client:
        while time.monotonic() < stop_at:
            n = next(ids)
            body = template.replace(MARKER, n.to_bytes(4, "big"))
            while True:
                t = time.monotonic()
                r = await client.post(
                    url, content=body, headers={"Content-Type": "application/x-protobuf"}
                )
                tally.latencies.append(time.monotonic() - t)
                if r.status_code == 200:
                    tally.acked_spans += spans_per_request
                    break
                if r.status_code in (429, 503):
                    tally.refused += 1
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                    continue
                raise RuntimeError(f"unexpected {r.status_code}: {r.text[:200]}")


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
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        out[p] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of the daemon's whole process tree."""
    total = 0.0
    for p in tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_one(
    store_url: str, label: str, seconds: float, exporters: int, batch: int, workdir: Path
) -> dict[str, object]:
    port = free_port()
    cfg = workdir / f"{label}.toml"
    cfg.write_text(
        f'[server]\nport = {port}\n[store]\nurl = "{store_url}"\n[logging]\nlevel = "warning"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    with (workdir / f"{label}.log").open("wb") as daemon_log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sentinel.cli", "run", "--config", str(cfg)],
            env=env,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=daemon_log,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon did not start; see {workdir / (label + '.log')}")
            time.sleep(0.1)
        template = template_request(batch)
        rss: list[tuple[float, float]] = []
        tally = Tally()

        async def main() -> float:
            ids = itertools.count(1)
            start = time.monotonic()
            stop_at = start + seconds

            async def sample_rss() -> None:
                while time.monotonic() < stop_at:
                    rss.append((time.monotonic() - start, rss_mb(proc.pid)))
                    await asyncio.sleep(1)

            sampler = asyncio.create_task(sample_rss())
            await asyncio.gather(
                *(
                    exporter(f"{base}/v1/traces", template, batch, ids, stop_at, tally)
                    for _ in range(exporters)
                )
            )
            await sampler
            return time.monotonic() - start

        cpu0 = cpu_seconds(proc.pid)
        client0 = time.process_time()
        elapsed = asyncio.run(main())
        client_cpu = time.process_time() - client0
        cpu1 = cpu_seconds(proc.pid)
        daemon_cpu = {p: cpu1[p] - cpu0.get(p, 0.0) for p in cpu1}
        metrics = httpx.get(f"{base}/metrics").text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    engine = sa.create_engine(store_url)
    with engine.connect() as c:
        stored = int(c.execute(sa.text("SELECT count(*) FROM spans")).scalar_one())
    engine.dispose()
    lat = sorted(tally.latencies)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
    samples = [r for _, r in rss]
    q = len(samples)
    rss_at = [round(samples[min(q - 1, int(q * f))], 1) for f in (0.25, 0.5, 0.75, 0.999)]
    return {
        "store": label,
        "spans_per_second": round(tally.acked_spans / elapsed),
        "acked_spans": tally.acked_spans,
        "stored_spans": stored,
        "lost": tally.acked_spans - stored,
        "requests": len(lat),
        "refused_429_503": tally.refused,
        "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
        "p99_ms": round(p99 * 1000, 1),
        "rss_mb_peak": round(max(samples), 1) if samples else None,
        "rss_mb_at_25_50_75_100pct": rss_at if q else [],
        "seconds": round(elapsed, 1),
        # one figure per process of the daemon's tree: main, resource tracker, span writer
        "cpu_percent_per_process": [round(100 * c / elapsed) for c in daemon_cpu.values()],
        # the exporters share this machine's cores with the daemon
        "client_cpu_percent": round(100 * client_cpu / elapsed),
        "exporters": exporters,
        "spans_per_request": batch,
        "store_writes": int(_metric(metrics, "sentinel_store_write_seconds_count")),
        "mean_write_ms": round(
            1000
            * _metric(metrics, "sentinel_store_write_seconds_sum")
            / max(1.0, _metric(metrics, "sentinel_store_write_seconds_count")),
            1,
        ),
    }


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--exporters", type=int, default=4)
    ap.add_argument("--batch", type=int, default=512)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-bench-"))
    results = []
    try:
        shape = (args.seconds, args.exporters, args.batch, workdir)
        if args.store in ("sqlite", "both"):
            results.append(run_one(f"sqlite:///{workdir / 'bench.db'}", "sqlite", *shape))
        if args.store in ("postgres", "both"):
            from tests.fixtures.postgres import PostgresServer

            with PostgresServer() as pg:
                pg.create_database("bench")
                results.append(run_one(pg.url("bench"), "postgres", *shape))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"OTLP/HTTP protobuf ingest, {args.exporters} exporters x {args.batch}-span requests, "
        f"{args.seconds:.0f} s per store, daemon in its own process, {os.cpu_count()} cores"
    )
    cols = ("store", "spans/s", "p50 ms", "p99 ms", "lost", "refused", "RSS peak MB")
    print(f"{cols[0]:<10}" + "".join(f"{c:>12}" for c in cols[1:]) + "  RSS MB at 25/50/75/100%")
    keys = ("spans_per_second", "p50_ms", "p99_ms", "lost", "refused_429_503", "rss_mb_peak")
    for r in results:
        row = "".join(f"{r[k]!s:>12}" for k in keys)
        print(f"{r['store']!s:<10}{row}  {r['rss_mb_at_25_50_75_100pct']}")
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
