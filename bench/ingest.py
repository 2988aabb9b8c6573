"""Ingest throughput of the OTLP/HTTP receiver: spans per second sustained, p99 request
latency, and the daemon's memory (RSS) over the run, into SQLite and into PostgreSQL,
with one or several replicas; and the load test's scenario (`--load-test`): peak memory
while 16 exporters offer twice what the store absorbs.

How it measures:
- each daemon runs as its own process (`python -m sentinel.cli run`), exactly as
  deployed; with `--replicas N` (PostgreSQL only) N daemons share one database and the
  exporters are split evenly across them;
- N exporters (asyncio tasks in this one client process, one HTTP/1.1 connection each)
  post OTLP/HTTP protobuf requests of B spans back to back, each waiting for its
  response (what the SDK's BatchSpanProcessor does); on 429/503 an exporter waits
  Retry-After and resends the same request, as OTLP exporters do;
- request bodies are realistic agent traces (agent run, LLM calls with tokens, tool
  calls, HTTP and DB client spans, evaluator events), encoded once; each request gets
  fresh trace ids by rewriting a marker inside the bytes (tests/loadgen.py), so no two
  requests collide and the client spends its CPU on sending, not encoding;
- after the run, the spans in the store are counted per request: every span
  acknowledged with 200 must be there ("lost" must be 0);
- RSS is summed over the daemons' process trees (main, span writer child, resource
  tracker) every second from /proc; CPU time per process from /proc/PID/stat, and the
  client's own CPU, since exporters and daemons share this machine's cores; the load
  average before and after is printed, since the machine may be shared.

`--load-test`: the scenario of tests/test_load.py. A statement trigger on PostgreSQL's
spans table sleeps 1 ms per span inserted (at most 1,000 spans/s absorbed, whatever
else runs); 16
exporters of 256-span requests are paced to offer 2,000 spans/s for 60 s against a
2,048-span queue.

Results and history: docs/performance.md.

Usage: `uv run python bench/ingest.py [--store sqlite|postgres|both] [--seconds 30]
[--replicas 1] [--exporters 4] [--batch 512]` or `uv run python bench/ingest.py --load-test`
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.loadgen import (  # noqa: E402  # after the sys.path entry
    DaemonProcess,
    LoadRun,
    run_load,
    stored_per_request,
    throttle_spans,
)

LOAD_TEST_INGEST = (
    "[ingest]\nqueue_max_spans = 2048\nwrite_batch_spans = 512\nretry_after_seconds = 1\n"
)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_one(
    store_url: str,
    label: str,
    workdir: Path,
    *,
    seconds: float,
    exporters: int,
    batch: int,
    replicas: int = 1,
    spans_per_second: float = 0.0,
    span_age_hours: float = 24.0,
    extra_toml: str = "",
) -> dict[str, object]:
    daemons = [
        DaemonProcess(store_url, workdir, f"{label}-{i}", extra_toml) for i in range(replicas)
    ]
    metrics: list[str] = []
    try:
        for d in daemons:
            d.wait_ready()
        idle = [d.rss_mb() for d in daemons]
        load_before = load_average()
        run = run_load(
            [d.proc.pid for d in daemons],
            [d.url for d in daemons],
            exporters=exporters,
            seconds=seconds,
            spans_per_request=batch,
            spans_per_second=spans_per_second,
            span_age_seconds=span_age_hours * 3600,
        )
        load_after = load_average()
        alive = all(d.proc.poll() is None for d in daemons)
        metrics = [httpx.get(f"{d.url}/metrics", timeout=10).text for d in daemons]
    finally:
        codes = [d.stop() for d in daemons]
    stored = stored_per_request(store_url)
    return summary(run, stored, label, exporters, batch, replicas, metrics) | {
        "rss_mb_idle": round(sum(idle), 1),
        "daemons_alive_after_run": alive,
        "exit_codes": codes,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "offered_spans_per_second": spans_per_second or "as fast as answered",
        "span_age_hours": span_age_hours,
    }


def summary(
    run: LoadRun,
    stored: dict[int, int],
    label: str,
    exporters: int,
    batch: int,
    replicas: int,
    metrics: list[str],
) -> dict[str, object]:
    t = run.tally
    lost = sum(batch - min(batch, stored.get(n, 0)) for n in t.acked)
    lat = sorted(t.latencies)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
    samples = run.rss_mb
    q = len(samples)
    rss_at = [round(samples[min(q - 1, int(q * f))], 1) for f in (0.25, 0.5, 0.75, 0.999)]
    writes = sum(_metric(m, "sentinel_store_write_seconds_count") for m in metrics)
    write_s = sum(_metric(m, "sentinel_store_write_seconds_sum") for m in metrics)
    return {
        "store": label,
        "replicas": replicas,
        "spans_per_second": round(t.acked_spans / run.seconds),
        "acked_spans": t.acked_spans,
        "stored_spans": sum(stored.values()),
        "lost": lost,
        "requests": len(lat),
        "refused_429": t.refusals.get(429, 0),
        "refused_503": t.refusals.get(503, 0),
        "refusals_without_retry_after": t.refusals_without_retry_after,
        "errors": t.unexpected[:5],
        "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
        "p99_ms": round(p99 * 1000, 1),
        "rss_mb_peak": round(max(samples), 1) if samples else None,
        "rss_mb_at_25_50_75_100pct": rss_at if q else [],
        "seconds": round(run.seconds, 1),
        # one figure per process of the daemons' trees: main, resource tracker, writer
        "cpu_percent_per_process": [round(100 * c / run.seconds) for c in run.cpu_seconds.values()],
        # the exporters share this machine's cores with the daemons
        "client_cpu_percent": round(100 * run.client_cpu_seconds / run.seconds),
        "exporters": exporters,
        "spans_per_request": batch,
        "store_writes": int(writes),
        "mean_write_ms": round(1000 * write_s / max(1.0, writes), 1),
    }


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--exporters", type=int, default=4)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="daemons sharing one PostgreSQL database (exporters split across them)",
    )
    ap.add_argument(
        "--load-test",
        action="store_true",
        help="tests/test_load.py's scenario: peak memory at twice what the store absorbs",
    )
    ap.add_argument(
        "--span-age-hours",
        type=float,
        default=24.0,
        help="how old the spans sent are; the default keeps them out of the Metric Agent's "
        "detection window (as in the runs before); 0: the agent reads them too",
    )
    args = ap.parse_args()
    if args.replicas > 1 and args.store != "postgres":
        ap.error("--replicas > 1 needs --store postgres (replicas share one database)")
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-bench-"))
    results = []
    try:
        if args.load_test:
            from tests.fixtures.postgres import PostgresServer

            from sentinel.adapters.db import open_store
            from sentinel.clock import SystemClock

            with PostgresServer() as pg:
                pg.create_database("bench")
                url = pg.url("bench")
                open_store(url, SystemClock()).close()
                throttle_spans(url, 0.001)
                results.append(
                    run_one(
                        url,
                        "postgres-throttled",
                        workdir,
                        seconds=60,
                        exporters=16,
                        batch=256,
                        spans_per_second=2000,
                        span_age_hours=args.span_age_hours,
                        extra_toml=LOAD_TEST_INGEST,
                    )
                )
        else:
            shape = {
                "seconds": args.seconds,
                "exporters": args.exporters,
                "batch": args.batch,
                "span_age_hours": args.span_age_hours,
            }
            if args.store in ("sqlite", "both"):
                url = f"sqlite:///{workdir / 'bench.db'}"
                results.append(run_one(url, "sqlite", workdir, **shape))
            if args.store in ("postgres", "both"):
                from tests.fixtures.postgres import PostgresServer

                with PostgresServer() as pg:
                    pg.create_database("bench")
                    results.append(
                        run_one(
                            pg.url("bench"), "postgres", workdir, replicas=args.replicas, **shape
                        )
                    )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(args, results)


def report(args: argparse.Namespace, results: list[dict[str, object]]) -> None:
    cores = os.cpu_count()
    if args.load_test:
        print(
            "Load test scenario (tests/test_load.py): PostgreSQL throttled to at most 1,000 "
            "spans/s by a statement trigger sleeping 1 ms per span; 16 exporters x "
            "256-span requests paced to offer 2,000 spans/s for 60 s; queue_max_spans = "
            f"2048; spans {args.span_age_hours:g} h old; one daemon in its own process; "
            f"{cores} cores"
        )
    else:
        print(
            f"OTLP/HTTP protobuf ingest, {args.exporters} exporters x {args.batch}-span "
            f"requests back to back, {args.seconds:.0f} s per store, {args.replicas} "
            f"daemon process(es) sharing the store, exporters in one client process, "
            f"{cores} cores shared by client, daemons and database"
        )
    cols = ("store", "replicas", "spans/s", "p99 ms", "lost", "429", "503", "RSS MB")
    print(
        f"{cols[0]:<20}" + "".join(f"{c:>10}" for c in cols[1:]) + "  RSS MB idle; at 25/50/75/100%"
    )
    keys = (
        "replicas",
        "spans_per_second",
        "p99_ms",
        "lost",
        "refused_429",
        "refused_503",
        "rss_mb_peak",
    )
    for r in results:
        row = "".join(f"{r[k]!s:>10}" for k in keys)
        print(f"{r['store']!s:<20}{row}  {r['rss_mb_idle']}; {r['rss_mb_at_25_50_75_100pct']}")
        print(
            f"{'':<20}acked {r['acked_spans']} spans, stored {r['stored_spans']}; load "
            f"average {r['load_average_before']} before, {r['load_average_after']} after "
            f"(1/5/15 min; above {cores} means other work competed for the cores)"
        )
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
