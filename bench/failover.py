"""Failover time of two `sentinel run` replicas on one PostgreSQL: how long after the
leader is SIGKILLed the follower holds the leader lease, and how long until the
follower's first leader job (the Metric Agent) has run.

How it measures:
- a real PostgreSQL (tests/fixtures/postgres.py) and two daemons, each its own process
  (`python -m sentinel.cli run`), exactly as deployed, with the default `[cluster]`
  settings (takeover_seconds 30, renewals every 5 s, a lease of 25 s) unless told;
- each repetition waits until one replica leads (its `/healthz` says `"role": "leader"`),
  waits a random part of a renew interval (the kill lands anywhere in the leader's
  renewal cycle), SIGKILLs the leader, and starts a monotonic timer;
- "lease": the follower's `/healthz` polled every 50 ms until it says leader;
- "first job": its `/metrics` polled every 50 ms until
  `sentinel_job_duration_seconds_count{job="metric_agent"}` has grown: the first leader
  job has finished (a new leader runs it at once, it does not wait for the interval);
- the killed replica is started again as the next follower, and the next repetition
  kills whichever replica leads then.
The figures include the 50 ms polling granularity. They are bounded by design: the
lease expires at most 25 s after the leader's last renewal, and the follower tries every
5 s, so the takeover is at most 30 s (``takeover_seconds``).

Usage: `uv run python bench/failover.py [--repeat 5] [--takeover 30]`
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
POLL = 0.05
JOB = re.compile(r'^sentinel_job_duration_seconds_count\{job="metric_agent"\} (\S+)$', re.M)


@dataclass
class Replica:
    name: str
    config: Path
    url: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self, workdir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
        with (workdir / f"{self.name}.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sentinel.cli", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=env,
            )
        deadline = time.monotonic() + 120
        while self.role() is None:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"replica {self.name} did not start; see {workdir}")
            time.sleep(0.1)

    def role(self) -> str | None:
        try:
            return str(httpx.get(self.url + "/healthz", timeout=1).json()["role"])
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    def jobs(self) -> float:
        try:
            m = JOB.search(httpx.get(self.url + "/metrics", timeout=1).text)
        except httpx.HTTPError:
            return -1.0
        return float(m.group(1)) if m else 0.0

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _config(workdir: Path, name: str, url: str, takeover: float) -> Replica:
    from tests.ports import free_port

    port = free_port()
    path = workdir / f"{name}.toml"
    path.write_text(
        f"[server]\nport = {port}\n"
        f'[store]\nurl = "{url}"\n'
        f'[cluster]\nreplica_id = "{name}"\ntakeover_seconds = {takeover}\n'
        '[logging]\nformat = "json"\n'
        '[learning]\narchive_dir = ""\n'
    )
    return Replica(name, path, f"http://127.0.0.1:{port}")


def _leads(r: Replica) -> bool:
    return r.role() == "leader"


def _ran(r: Replica, before: float) -> bool:
    return r.jobs() > before


def _wait(cond: Callable[[], bool], bound: float, what: str) -> float:
    """Poll ``cond`` every POLL seconds; the monotonic time it became true."""
    deadline = time.monotonic() + bound
    while True:
        now = time.monotonic()
        if cond():
            return now
        if now > deadline:
            raise RuntimeError(f"no {what} within {bound:.0f} s")
        time.sleep(POLL)


def measure(repeat: int, takeover: float, workdir: Path, url: str) -> list[tuple[float, float]]:
    replicas = [_config(workdir, n, url, takeover) for n in ("a", "b")]
    renew = takeover / 6
    out: list[tuple[float, float]] = []
    try:
        for r in replicas:
            r.start(workdir)
        for i in range(repeat):
            _wait(lambda: any(r.role() == "leader" for r in replicas), 2 * takeover, "leader")
            leader = next(r for r in replicas if r.role() == "leader")
            follower = next(r for r in replicas if r is not leader)
            before = follower.jobs()
            time.sleep(random.uniform(0, renew))  # a kill anywhere in the cycle
            leader.kill()
            killed = time.monotonic()
            lease = _wait(partial(_leads, follower), 2 * takeover, "takeover")
            job = _wait(partial(_ran, follower, before), 2 * takeover, "first leader job")
            out.append((lease - killed, job - killed))
            print(
                f"  run {i + 1}: {leader.name} killed; {follower.name} leads after "
                f"{lease - killed:.2f} s, first job done after {job - killed:.2f} s",
                flush=True,
            )
            leader.start(workdir)  # the next follower
    finally:
        for r in replicas:
            r.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--takeover", type=float, default=30.0, help="[cluster] takeover_seconds")
    args = ap.parse_args()
    from tests.fixtures.postgres import PostgresServer

    workdir = Path(tempfile.mkdtemp(prefix="sentinel-failover-"))
    with PostgresServer() as pg:
        pg.create_database("failover")
        runs = measure(args.repeat, args.takeover, workdir, pg.url("failover"))
    lease = [r[0] for r in runs]
    job = [r[1] for r in runs]
    print(
        f"failover, 2 replicas on one PostgreSQL, takeover_seconds {args.takeover:g} "
        f"(renew every {args.takeover / 6:g} s, lease {args.takeover * 5 / 6:g} s), "
        f"{len(runs)} SIGKILLs of the leader at a random point of its renewal cycle, "
        f"polled every {POLL * 1000:.0f} ms, {os.cpu_count()} cores; logs in {workdir}"
    )
    print(f"{'':<28}{'median s':>10}{'max s':>10}")
    print(f"{'kill -> follower leads':<28}{statistics.median(lease):>10.2f}{max(lease):>10.2f}")
    print(f"{'kill -> first leader job':<28}{statistics.median(job):>10.2f}{max(job):>10.2f}")


if __name__ == "__main__":
    main()
