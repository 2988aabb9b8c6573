"""Helpers of the tests that kill a parent outright and check what it started is gone:
a Python parent run from a code string, the pids or lines it prints, and whether a pid
still runs.

What must not live here: what those parents start (the tests say).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def running(pid: int) -> bool:
    """Whether ``pid`` runs (an exited process nobody reaped yet is a zombie: not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def gone_within(pid: int, seconds: float) -> bool:
    """Whether ``pid`` has stopped running within ``seconds``."""
    deadline = time.monotonic() + seconds
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not running(pid)


def read_lines(proc: subprocess.Popen[bytes], n: int = 1, timeout: float = 60.0) -> list[str]:
    """The first ``n`` lines ``proc`` (or a process sharing its stdout) printed. Read from
    the pipe's descriptor: a buffered reader may hold a line select cannot see."""
    assert proc.stdout is not None
    fd, data = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < n:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0.0))
        assert ready, f"{n} line(s) not printed within {timeout:g} s (got {data!r})"
        chunk = os.read(fd, 1024)
        assert chunk, f"stdout closed after {data!r}"
        data += chunk
    return [line.decode() for line in data.split(b"\n")[:n]]


@contextlib.contextmanager
def spawned(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` run with its stdout piped; killed and reaped on the way out."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def parent(code: str, *args: str) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """``python -c code args`` (a parent to kill), as ``spawned``."""
    return spawned([sys.executable, "-c", code, *args])


def kill_running(*pids: int) -> None:
    """SIGKILL those of ``pids`` still running (a test's leftovers after a failure)."""
    for pid in pids:
        if pid and running(pid):
            os.kill(pid, signal.SIGKILL)
