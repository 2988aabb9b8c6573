"""The demo's display: the stages as a live table on a terminal, or one line per stage
in order (logs, CI), the approval question, and the summary.

What must not live here: the stages' logic (``demo.stages``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sentinel.demo.stages import StageState, StageView

if TYPE_CHECKING:
    from sentinel.demo.run import DemoResult

__all__ = ["Display", "print_summary"]


def _ago(t: datetime | None, ref: datetime | None) -> str:
    if t is None or ref is None:
        return ""
    s = (t - ref).total_seconds()
    sign = "-" if s < 0 else "+"
    m, sec = divmod(round(abs(s)), 60)
    return f"{sign}{m}m{sec:02d}s"


_MARK = {
    StageState.DONE: ("✔", "green"),
    StageState.WAITING: ("…", "dim"),
    StageState.FAILED: ("✘", "red"),
    StageState.SKIPPED: ("–", "yellow"),
}


class Display:
    """The demo's output: a live table of the stages on a terminal, else one line per
    stage as it completes (logs, CI)."""

    def __init__(self, console: Console | None = None, *, ask: TextIO | None = None) -> None:
        self.console = console or Console()
        self.live: Live | None = None
        self._printed: set[str] = set()
        self._input = ask

    @property
    def interactive(self) -> bool:
        """A live table (a terminal), or one line per stage."""
        return self.console.is_terminal

    @property
    def can_ask(self) -> bool:
        return self.console.is_terminal or self._input is not None

    def say(self, text: str, style: str = "") -> None:
        if self.live is not None:
            self.live.console.print(Text(text, style=style))
        else:
            self.console.print(Text(text, style=style), soft_wrap=True)

    def table(self, views: tuple[StageView, ...], fault: datetime | None, footer: str) -> Table:
        t = Table(show_header=False, box=None, expand=False, pad_edge=False)
        t.add_column(width=3, justify="right")
        t.add_column(width=2)
        t.add_column(width=20, no_wrap=True)
        t.add_column(width=9, no_wrap=True)
        t.add_column(overflow="fold")
        for i, v in enumerate(views, 1):
            mark, style = _MARK[v.state]
            t.add_row(
                f"{i}.",
                Text(mark, style=style),
                Text(v.stage.value, style="bold" if v.state is StageState.DONE else ""),
                _ago(v.at, fault),
                Text(v.detail, style="dim" if v.state is StageState.WAITING else ""),
            )
        t.add_row("", "", "", "", Text(footer, style="dim"))
        return t

    def update(self, views: tuple[StageView, ...], fault: datetime | None, footer: str) -> None:
        if self.interactive:
            if self.live is None:
                self.live = Live(
                    self.table(views, fault, footer), console=self.console, refresh_per_second=4
                )
                self.live.start()
            else:
                self.live.update(self.table(views, fault, footer))
            return
        for i, v in enumerate(views, 1):
            if v.state is StageState.WAITING:
                break  # in order: a later stage waits for this one to be printed
            key = f"{i}:{v.state.value}"
            if key not in self._printed:
                self._printed.add(key)
                mark, _ = _MARK[v.state]
                self.console.print(
                    f"{mark} {i:>2}. {v.stage.value:<20} {_ago(v.at, fault):>9}  {v.detail}",
                    soft_wrap=True,
                    highlight=False,
                )

    def confirm(self, question: str) -> bool:
        if self.live is not None:
            self.live.stop()
        try:
            if self._input is not None:
                self.console.print(question, end="")
                answer = self._input.readline()
            else:
                answer = self.console.input(question)
        finally:
            if self.live is not None:
                self.live.start()
        return answer.strip().lower() in ("y", "yes")

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def _duration(d: timedelta | None, step: float | None = None) -> str:
    if d is None:
        return "—"
    s = d.total_seconds()
    m, sec = divmod(round(s), 60)
    text = f"{m}m{sec:02d}s" if m else f"{sec}s"
    if step:
        text += f" ({s / step:.1f} intervals of {step:g} s)"
    return text


def print_summary(d: Display, r: DemoResult) -> None:
    s = r.summary
    top = s.top
    spec = r.scenario
    lines = [
        (f"Summary: {spec.scenario.value} at {r.snapshot.now:%H:%M} clock time", "bold"),
        (f"  fault               {spec.what}", ""),
        (f"  detection delay     {_duration(s.detection_delay, r.interval)}", ""),
        (f"  time to diagnosis   {_duration(s.time_to_diagnosis)}", ""),
        (
            f"  time to fix         {_duration(s.time_to_fix)} applied, "
            f"{_duration(s.time_to_verified)} verified",
            "",
        ),
    ]
    if top is not None:
        verdict = "right" if s.right else f"WRONG (the root cause is {spec.root_cause})"
        lines.append(
            (
                f"  top hypothesis      {top.component} ({top.fault}, {top.confidence:.0%}): "
                f"{verdict}",
                "green" if s.right else "red",
            )
        )
    else:
        lines.append(("  top hypothesis      none", "red"))
    if r.snapshot.false_incidents:
        lines.append(
            (f"  before the fault    incidents {', '.join(r.snapshot.false_incidents)}", "yellow")
        )
    lines.append((f"  real time           {r.wall_seconds:.0f} s at {r.speed}x", ""))
    inc = r.snapshot.incident
    lines.append((f"  workspace           {r.workspace}", ""))
    if inc is not None:
        cfg = r.workspace / "sentinel.toml"
        lines.append((f"  look around         sentinel incident {inc.id} --config {cfg}", ""))
        lines.append(
            (f"                      sentinel audit --incident {inc.id} --config {cfg}", "")
        )
    if r.timed_out:
        lines.append(("  gave up waiting: a stage did not complete in time (see the logs)", "red"))
    for text, style in lines:
        d.say(text, style)
