"""``sentinel demo``: the whole loop on a live simulated fleet (``sentinel.demo``).

What must not live here: the demo itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sentinel.cli_common import ConfigOption, cli_settings, out
from sentinel.cli_common import fail as _fail
from sentinel.demo.scenarios import Scenario
from sentinel.errors import DemoError, SentinelError


def demo(
    scenario: Annotated[
        Scenario, typer.Option("--scenario", help="The fault injected into the fleet.")
    ] = Scenario.PROMPT_REGRESSION,
    speed: Annotated[
        float,
        typer.Option(
            "--speed", help="Clock seconds per real second (30: a clock minute takes 2 s)."
        ),
    ] = 30.0,
    slack: Annotated[
        bool,
        typer.Option(
            "--slack",
            help="Tickets to Slack: [slack] and [approvals] of --config, tokens from "
            "SENTINEL_SLACK_*.",
        ),
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Approve a fix that needs a person, unasked.")
    ] = False,
    manual: Annotated[
        bool,
        typer.Option("--manual", help="Every fix asks a person (playbooks without auto)."),
    ] = False,
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace", help="An empty folder for the demo's files (default: a new temp one)."
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run the whole loop on a live simulated fleet of pydantic-ai agents: a fault is
    injected, then detected, diagnosed, ticketed, fixed, verified and archived.

    Offline, on embedded defaults (SQLite, the OTLP receiver, a local git config
    repository, tickets on the console). About 2 minutes at the default speed.
    """
    from sentinel.demo.run import Approve, DemoOptions, Display, print_summary, run_demo

    settings = None
    if slack:
        settings = cli_settings(config, serving=True)
        if not settings.slack.channel:
            raise _fail(DemoError("--slack needs [slack] channel in the config file"))
    options = DemoOptions(
        scenario=scenario,
        speed=speed,
        workspace=workspace,
        approve=Approve.YES if yes else Approve.ASK,
        slack=settings,
        manual=manual,
    )
    display = Display(out)
    try:
        result = run_demo(options, display)
    except SentinelError as e:
        raise _fail(e) from e
    except KeyboardInterrupt:
        out.print("interrupted; the workspace is kept", highlight=False)
        raise typer.Exit(130) from None
    print_summary(display, result)
    if not result.ok or not result.summary.right:
        raise typer.Exit(1)
