"""Tests of the reaper (``sentinel.demo.reaper``): a command run under it stops when the
process that started it is killed outright, or when the reaper itself is stopped; its
exit status is passed on; a command that cannot start is named. Real processes.

What must not live here: the demo's Prometheus through a killed demo (test_demo.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sentinel.demo.reaper import reaped
from tests.orphans import gone_within, kill_running, parent, read_lines, running, spawned

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


@contextmanager
def _reaped(code: str, *options: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The reaper running ``python -c code`` (which says its pid), and that pid; both
    gone on the way out."""
    argv = reaped([sys.executable, "-c", code])
    argv[argv.index("--") : argv.index("--")] = options
    command = 0
    with spawned(argv) as proc:
        try:
            command = int(read_lines(proc, 1, timeout=30.0)[0])
            yield proc, command
        finally:
            kill_running(command)


def test_the_command_stops_when_its_starter_is_killed_outright() -> None:
    pids: list[int] = []
    with parent(_PARENT) as starter:
        try:
            # The parent says the reaper's pid; the command, sharing its stdout, its own
            # (in either order: both must go).
            pids = [int(line) for line in read_lines(starter, 2, timeout=30.0)]
            assert len(set(pids)) == 2 and all(running(p) for p in pids)
            starter.kill()  # SIGKILL: no finally runs in the parent
            starter.wait(10)
            assert all(gone_within(p, 10.0) for p in pids), (
                "the command outlived the process that started it"
            )
        finally:
            kill_running(*pids)


def test_a_stopped_reaper_stops_its_command_and_says_how_it_ended() -> None:
    with _reaped(_SLEEPER) as (proc, command):
        proc.terminate()
        assert proc.wait(10) == 128 + signal.SIGTERM
        assert gone_within(command, 5.0)


def test_a_command_deaf_to_sigterm_is_killed_after_the_grace() -> None:
    with _reaped(_DEAF, "--grace=0.5") as (proc, command):
        start = time.monotonic()
        proc.terminate()
        assert proc.wait(10) == 128 + signal.SIGKILL
        assert time.monotonic() - start >= 0.5  # it was given its grace first
        assert gone_within(command, 5.0)


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
