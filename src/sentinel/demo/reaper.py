"""Run one command and stop it once the process that asked for it is gone:
``python -m sentinel.demo.reaper --parent-pid PID -- COMMAND ...``.

Why: the demo starts a Prometheus (a third-party binary) beside its daemon. Its
``finally`` stops it, but a demo killed outright (SIGKILL, a CI timeout, the OOM killer)
runs no ``finally``, and the Prometheus went on running, holding its port and its data
folder. The demo's own fleet watches its parent itself (``demo.fleet``); a binary we do
not own cannot, and ``PR_SET_PDEATHSIG`` needs a ``preexec_fn``, which is unsafe in a
process with threads (the daemon's). So this small process sits between them:

* it starts COMMAND (an argument list, no shell) with the same standard streams;
* SIGTERM or SIGINT, or its parent no longer being ``PID`` (checked every 0.2 s), stops
  COMMAND: SIGTERM, then SIGKILL after ``--grace`` seconds;
* it exits when COMMAND does, with COMMAND's exit status (128 + N if signal N ended
  it), so a caller's ``poll()`` of this process says whether COMMAND still runs.

This module imports only the standard library (``sentinel.demo`` imports nothing, and
``sentinel`` itself a few records): it starts in a fraction of a second.

What must not live here: what COMMAND is (``demo.processes`` says).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

__all__ = ["main", "reaped"]

_POLL_SECONDS = 0.2


def reaped(command: Sequence[str], *, parent_pid: int | None = None) -> list[str]:
    """``command`` run under this module, stopped once ``parent_pid`` (default: this
    process) is gone."""
    pid = os.getpid() if parent_pid is None else parent_pid
    return [sys.executable, "-m", "sentinel.demo.reaper", "--parent-pid", str(pid), "--", *command]


def _status(code: int) -> int:
    """An exit status as a shell gives it: 128 + N for a child killed by signal N."""
    return 128 - code if code < 0 else code


def _stop(child: subprocess.Popen[bytes], grace: float) -> int:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return _status(child.returncode)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m sentinel.demo.reaper",
        description="Run COMMAND; stop it when the process PID is no longer this one's parent.",
    )
    ap.add_argument("--parent-pid", type=int, required=True, metavar="PID")
    ap.add_argument("--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL")
    ap.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("no COMMAND to run (put it after --)")
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    # Installed before the child starts: a stop sent at once is not lost.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        child = subprocess.Popen(list(command))  # the caller's argument list, no shell
    except OSError as e:
        sys.stderr.write(f"reaper: cannot start {command[0]!r}: {e}\n")
        return 127
    while child.poll() is None:
        if stopping or os.getppid() != args.parent_pid:
            return _stop(child, args.grace)
        time.sleep(_POLL_SECONDS)
    return _status(child.returncode)


if __name__ == "__main__":
    sys.exit(main())
