"""The processes around the demo's daemon: the fleet's (``demo.fleet``, spoken to over
its control server), an optional Prometheus scraping the daemon, and the daemon's logging
pointed at the workspace while the demo holds the terminal.

What must not live here: what the demo does with them (``demo.run``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import structlog

from sentinel.clock import ScaledClock
from sentinel.demo.fleet import FleetFault
from sentinel.demo.reaper import reaped
from sentinel.errors import DemoError
from sentinel.observability import configure_logging
from sentinel.settings import LoggingSettings

__all__ = ["FleetProcess", "fleet_process", "logging_to", "prometheus"]


@dataclass
class FleetProcess:
    proc: subprocess.Popen[str]
    control: str
    log: Path

    def status(self) -> dict[str, Any]:
        try:
            r = httpx.get(f"{self.control}/status", timeout=2.0)
            return dict(r.json())
        except (httpx.HTTPError, ValueError):
            return {}

    def fault(self, kind: FleetFault, on: bool) -> None:
        url = f"{self.control}/faults/{kind.value}"
        try:
            r = httpx.post(url, timeout=5.0) if on else httpx.delete(url, timeout=5.0)
            r.raise_for_status()
        except httpx.HTTPError as e:
            raise DemoError(f"the fleet refused fault {kind.value!r}: {e}") from e

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace").splitlines()[-15:]
            raise DemoError(
                f"the fleet stopped (exit {self.proc.returncode}); {self.log}:\n" + "\n".join(tail)
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def fleet_process(
    ws: Path, endpoint: str, remote: Path, clock: ScaledClock, wall0_ns: int, seed: int
) -> Iterator[FleetProcess]:
    log = ws / "fleet.log"
    with log.open("a") as err:
        proc = subprocess.Popen(  # our own module, fixed arguments
            [
                sys.executable,
                "-m",
                "sentinel.demo.fleet",
                "--endpoint",
                endpoint,
                "--repo",
                str(remote),
                "--origin",
                clock.origin.isoformat(),
                "--wall0-ns",
                str(wall0_ns),
                "--speed",
                str(clock.speed),
                "--seed",
                str(seed),
                "--parent-pid",
                str(os.getpid()),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60.0)
    line = proc.stdout.readline() if ready else ""
    fleet = FleetProcess(proc, "", log)
    try:
        try:
            info = json.loads(line)
        except ValueError:
            fleet.check()  # it died: the error quotes its log
            raise DemoError(f"the fleet did not start within 60 s; see {log}") from None
        fleet.control = f"http://127.0.0.1:{info['control']}"
        yield fleet
    finally:
        fleet.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def prometheus(ws: Path, daemon_url: str) -> Iterator[str | None]:
    """A Prometheus scraping the daemon's own /metrics, if one is installed; its URL.
    The daemon does not query it: its samples are stamped in real time, and the demo's
    clock runs faster."""
    binary = shutil.which("prometheus")
    if binary is None:
        yield None
        return
    folder = ws / "prometheus"
    folder.mkdir(exist_ok=True)
    target = daemon_url.removeprefix("http://")
    (folder / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 5s\nscrape_configs:\n"
        f"  - job_name: sentinel\n    static_configs:\n      - targets: ['{target}']\n"
    )
    port = _free_port()
    with (folder / "prometheus.log").open("a") as log:
        # Under the reaper: a demo killed outright runs no finally, and the Prometheus
        # would outlive it.
        proc = subprocess.Popen(  # fixed arguments, no shell
            reaped(
                [
                    binary,
                    f"--config.file={folder / 'prometheus.yml'}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ]
            ),
            stdout=log,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15.0
        up = False
        while time.monotonic() < deadline and proc.poll() is None and not up:
            with contextlib.suppress(httpx.HTTPError):
                up = httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200
            if not up:
                time.sleep(0.2)
        yield url if up else None
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def logging_to(path: Path, settings: LoggingSettings) -> Iterator[None]:
    """The daemon logs to the workspace while the demo holds the terminal; the process's
    logging is put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = structlog.get_config()
    with path.open("a") as out:
        configure_logging(settings, stream=out)
        try:
            yield
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
            structlog.configure(**saved)
