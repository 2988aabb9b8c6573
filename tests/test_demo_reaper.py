"""Tests of the reaper (``sentinel.demo.reaper``): a command run under it stops when the
process that started it is killed outright, or when the reaper itself is stopped; its
exit status is passed on; a command that cannot start is named. Real processes.

What must not live here: the demo's Prometheus through a killed demo (test_demo.py).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from sentinel.demo.reaper import reaped

# A command that says its pid, then waits (optionally deaf to SIGTERM).
_SLEEPER = "import os, time; print(os.getpid(), flush=True); time.sleep(600)"
_DEAF = (
    "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print(os.getpid(), flush=True); time.sleep(600)"
)
# A parent that starts the sleeper under the reaper, says the reaper's pid, then waits.
_PARENT = f"""
import subprocess, sys, time
from sentinel.demo.reaper import reaped
p = subprocess.Popen(reaped([sys.executable, "-c", {_SLEEPER!r}]))
print(p.pid, flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (an exited process nobody reaped yet is a zombie: not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _running(pid)


def _read_pids(proc: subprocess.Popen[bytes], n: int = 1) -> list[int]:
    """The first ``n`` lines ``proc`` (or a process sharing its stdout) printed, as pids.
    Read from the pipe's descriptor: a buffered reader may hold a line select cannot see."""
    assert proc.stdout is not None
    fd, data = proc.stdout.fileno(), b""
    deadline = time.monotonic() + 30.0
    while data.count(b"\n") < n:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0.0))
        assert ready, f"{n} pid(s) not said within 30 s (got {data!r})"
        chunk = os.read(fd, 1024)
        assert chunk, f"stdout closed after {data!r}"
        data += chunk
    return [int(line) for line in data.split(b"\n")[:n]]


def _kill(*pids: int) -> None:
    for pid in pids:
        if pid and _running(pid):
            os.kill(pid, signal.SIGKILL)


def test_the_command_stops_when_its_starter_is_killed_outright() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE)
    pids: list[int] = []
    try:
        # The parent says the reaper's pid; the command, sharing its stdout, its own (in
        # either order: both must go).
        pids = _read_pids(parent, 2)
        assert len(set(pids)) == 2 and all(_running(p) for p in pids)
        parent.kill()  # SIGKILL: no finally runs in the parent
        parent.wait(10)
        assert all(_gone_within(p, 10.0) for p in pids), (
            "the command outlived the process that started it"
        )
    finally:
        parent.kill()
        parent.wait(10)
        assert parent.stdout is not None
        parent.stdout.close()
        _kill(*pids)


def test_a_stopped_reaper_stops_its_command_and_says_how_it_ended() -> None:
    proc = subprocess.Popen(reaped([sys.executable, "-c", _SLEEPER]), stdout=subprocess.PIPE)
    command = 0
    try:
        (command,) = _read_pids(proc)
        proc.terminate()
        assert proc.wait(10) == 128 + signal.SIGTERM
        assert _gone_within(command, 5.0)
    finally:
        proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
        _kill(command)


def test_a_command_deaf_to_sigterm_is_killed_after_the_grace() -> None:
    argv = reaped([sys.executable, "-c", _DEAF])
    argv.insert(argv.index("--"), "--grace=0.5")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    command = 0
    try:
        (command,) = _read_pids(proc)
        start = time.monotonic()
        proc.terminate()
        assert proc.wait(10) == 128 + signal.SIGKILL
        assert time.monotonic() - start >= 0.5  # it was given its grace first
        assert _gone_within(command, 5.0)
    finally:
        proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
        _kill(command)


def test_the_commands_exit_status_is_passed_on() -> None:
    done = subprocess.run(
        reaped([sys.executable, "-c", "raise SystemExit(3)"]), timeout=30, check=False
    )
    assert done.returncode == 3


def test_a_command_that_cannot_start_is_named() -> None:
    done = subprocess.run(
        reaped(["/nonexistent/prometheus", "--x"]),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 127
    assert "cannot start '/nonexistent/prometheus'" in done.stderr


def test_no_command_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sentinel.demo.reaper", "--parent-pid", str(os.getpid())],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "no COMMAND to run" in done.stderr
