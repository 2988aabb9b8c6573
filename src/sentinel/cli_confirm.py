"""``sentinel confirm ID [--root-cause COMPONENT] [--fault KIND]``: a person confirms (or
corrects) an incident's root cause, and a resolved incident's archived case gets it as
its ``[truth]``. ``sentinel.cli`` mounts it.

What must not live here: the confirmation and archive rules (``agents.learning``,
``learning.archive``), storage (adapters).
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from sentinel.cli_common import ConfigOption, err
from sentinel.cli_common import cli_settings as _settings
from sentinel.cli_common import fail as _fail
from sentinel.cli_common import say as _say
from sentinel.clock import SystemClock
from sentinel.errors import ConfigError, SentinelError
from sentinel.learning.archive import Archived, PrometheusSeries, truth_label
from sentinel.settings import Settings
from sentinel.telemetry import Series

if TYPE_CHECKING:
    from sentinel.adapters.prometheus import PrometheusSource

__all__ = ["confirm"]


class _OneLoopSource:
    """The configured Prometheus, connected on the first query and closed by ``run`` in
    the loop that used it (an httpx client must not outlive its event loop). Nothing is
    connected when the case is archived already: re-archiving keeps its telemetry."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._source: PrometheusSource | None = None

    def _connected(self) -> PrometheusSource:
        if self._source is None:
            from sentinel.adapters.prometheus import prometheus_from_settings

            self._source = prometheus_from_settings(self._settings)
            if self._source is None:  # no url: settings without one pass no source here
                raise ConfigError("prometheus.url is empty")
        return self._source

    async def instant(self, query: str, at: datetime | None = None) -> list[Series]:
        return await self._connected().instant(query, at)

    async def range(
        self, query: str, start: datetime, end: datetime, step: timedelta
    ) -> list[Series]:
        return await self._connected().range(query, start, end, step)

    def run(self, coro: Coroutine[Any, Any, PrometheusSeries]) -> PrometheusSeries:
        async def go() -> PrometheusSeries:
            try:
                return await coro
            finally:
                if self._source is not None:
                    await self._source.aclose()
                    self._source = None

        return asyncio.run(go())


def _where(archived: Archived) -> str:
    if archived.committed and archived.commit:
        how = f"committed as {archived.commit[:12]}"
    elif archived.note:
        how = f"not committed: {archived.note}"
    else:
        how = "not committed"
    return f"case archived to {archived.path} ({how}); [truth]: {truth_label(archived.truth)}"


def confirm(
    incident_id: Annotated[
        str, typer.Argument(help="The incident id (`sentinel incidents` lists them).")
    ],
    root_cause: Annotated[
        str | None,
        typer.Option(
            "--root-cause",
            metavar="COMPONENT",
            help="The component that caused it, e.g. tool:crm_lookup (default: the top "
            "hypothesis).",
        ),
    ] = None,
    fault: Annotated[
        str | None,
        typer.Option(
            "--fault",
            metavar="KIND",
            help="The fault kind, e.g. tool_latency (default: the hypothesis' for that "
            "component, else the top one's).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Confirm or correct an incident's root cause.

    Recorded in the audit log as cli:<your login>. Not gated by the approvers list: it
    changes no system, only what sentinel learns from the incident. A resolved
    incident's case is archived again at once with the confirmed truth (and committed
    when the archive folder is a git repository). Its ticket shows the confirmation.
    """
    from sentinel.adapters.db import open_store
    from sentinel.agents.learning import LearningAgent
    from sentinel.agents.tickets import refresh_ticket

    s = _settings(config)
    by = f"cli:{getpass.getuser()}"
    try:
        source = _OneLoopSource(s) if s.prometheus.url and s.prometheus.slis else None
        store = open_store(s.store_url, SystemClock(), auto_migrate=s.store.auto_migrate)
        try:
            agent = LearningAgent(
                s,
                store,
                store.clock,
                source,
                runner=source.run if source is not None else asyncio.run,
            )
            done = agent.confirm(incident_id, root_cause, fault, by)
            # the daemon delivers the update
            refresh_ticket(store, incident_id, max_shift=s.llm.max_confidence_shift)
        finally:
            store.close()
    except SentinelError as e:
        raise _fail(e) from e
    c = done.confirmation
    if done.top is None:
        whose = "it had no hypotheses"
    elif done.corrected:
        whose = f"corrects the top hypothesis, {done.top}"
    else:
        whose = "it was the top hypothesis"
    _say(f"confirmed {c.component} ({c.fault}) as the root cause of {incident_id}: {whose}")
    if done.archived is not None:
        _say(_where(done.archived))
    elif not done.resolved:
        _say("the incident is still open: its case is archived with this truth when it resolves")
    elif agent.folder is None:
        _say("not archived: learning.archive_dir is empty")
    else:
        # The confirmation stands: the next archive of the incident (the daemon's
        # catch-up, or confirming again) puts it in the case.
        err.print(
            Text.assemble(
                ("error:", "bold red"),
                " the confirmation is recorded, but the case was not archived: ",
                done.archive_error,
            ),
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
