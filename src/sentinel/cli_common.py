"""What every ``sentinel`` command module shares: the consoles, the ``--config`` and
``--by`` options, settings loading, and the one way a command fails (one line on
stderr, exit 2 for a bad configuration, 1 otherwise, never a traceback).

What must not live here: commands themselves.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from sentinel.errors import ConfigError, SentinelError
from sentinel.settings import Settings, load_settings

# Piped output gets a wide console: rich would otherwise cut tables at 80 columns and
# fold file:line messages.
out = Console(width=None if sys.stdout.isatty() else 250)
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file (default: $SENTINEL_CONFIG, else config.toml).",
        dir_okay=False,
    ),
]
ByOption = Annotated[
    str | None, typer.Option("--by", help="Who is acting, for the audit log (default: you).")
]


def fail(e: SentinelError) -> typer.Exit:
    """Print ``e`` as one line on stderr; the exit to raise. Text, not markup: messages
    quote user input ("[case]", paths, component names)."""
    err.print(Text.assemble(("error:", "bold red"), " ", str(e)), highlight=False, soft_wrap=True)
    return typer.Exit(2 if isinstance(e, ConfigError) else 1)


def cli_settings(path: Path | None, *, serving: bool = False) -> Settings:
    """The settings, or a clean exit 2 naming what is wrong with them. ``serving``: also
    require the secrets the HTTP server needs (only `sentinel run` does)."""
    try:
        return load_settings(path, serving=serving)
    except ConfigError as e:
        raise fail(e) from e


def say(line: str = "") -> None:
    """One line of plain text on stdout (no markup: it may quote user input)."""
    out.print(line, highlight=False, markup=False, soft_wrap=True)


def who(by: str | None) -> str:
    """The actor of a CLI decision: ``--by`` when given, else ``cli:<login>``."""
    return by or f"cli:{getpass.getuser()}"


@contextmanager
def case_progress(label: str) -> Iterator[Callable[[int, int, str], None]]:
    """A progress bar on stderr for work over archived cases; yields the callback
    ``(done, total, case name)`` that ``evaluate_archive`` and ``fit_learned`` call."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def show(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name or label)

        yield show
