"""The composition root of ``sentinel run``: settings ▶ adapters ▶ jobs ▶ HTTP app, all on
one asyncio event loop (uvicorn serves, APScheduler's AsyncIOScheduler runs the jobs).

Several replicas may share one store (``sentinel.cluster``): every replica ingests OTLP
and serves the API and ``/metrics``; only the holder of the leader lease runs the jobs that
act or write incident state (``leader_only``). The store ping and the lease's own renewal
run everywhere. A replica that becomes leader starts as a restarted daemon would: the open
incidents are read again from the store.

Shutdown order on SIGTERM/SIGINT (or ``request_stop()``): stop accepting connections and
let in-flight requests finish (uvicorn), stop starting jobs and wait for running ones,
release the leader lease, write everything still in the ingest queue, then close the store.

What must not live here: logic that a stage or an adapter owns. Jobs here only call them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from sentinel.adapters.db import SqlStore, open_store
from sentinel.adapters.prometheus import PrometheusSource, prometheus_from_settings
from sentinel.adapters.slack import (
    Click,
    Decision,
    SlackSink,
    SocketModeListener,
    slack_sink_from_settings,
)
from sentinel.adapters.span_writer import SpanWriterProcess
from sentinel.agents.approvals import ClickHandler, GroupMembers
from sentinel.agents.explainer import Explainer
from sentinel.agents.learning import LearningAgent
from sentinel.agents.metric import MetricAgent
from sentinel.agents.remediation import RemediationAgent, verified_moved_off
from sentinel.agents.root_cause import learned_diagnosis
from sentinel.agents.tickets import ConsoleSink, OutboxNotifier, TicketDesk, incident_picture
from sentinel.api import AppDeps, create_app
from sentinel.clock import Clock, SystemClock
from sentinel.cluster import Change, LeaderLease, default_replica_id
from sentinel.errors import ConfigError, NotifyError, SentinelError, StoreError
from sentinel.incidents import IncidentResolved
from sentinel.ingest import IngestQueue
from sentinel.llm.agents import build_model
from sentinel.llm.tracing import self_tracing
from sentinel.observability import SelfMetrics, configure_logging
from sentinel.playbooks.loader import load_playbooks
from sentinel.ports import TicketSink
from sentinel.retention import run_retention
from sentinel.settings import Settings, SlackMode
from sentinel.sli import step_start
from sentinel.telemetry import ChangeEvent

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from pydantic_ai.models import Model

    from sentinel.adapters.executors import Executor

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

STORE_PING_SECONDS = 10.0
# While Socket Mode is not connected (Slack down at start-up), try again this often.
SLACK_RECONNECT_SECONDS = 30.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling. uvicorn re-raises SIGTERM once it has
    stopped serving, which would kill the process before the ingest queue is written; the
    daemon handles the signals itself (``Daemon.serve``)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Daemon:
    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        *,
        store: SqlStore | None = None,
        llm_model: Model | None = None,
        ticket_sink: TicketSink | None = None,
    ) -> None:
        """``store``: an already open store to use instead of opening ``settings``' one
        (the daemon closes it on shutdown). ``llm_model``: the model of the LLM agents
        instead of the one ``[llm]`` names (tests: a ``FunctionModel``). ``ticket_sink``:
        where tickets go without Slack instead of stdout (the demo: a file)."""
        self.settings = settings
        self.llm_model = llm_model
        self.ticket_sink = ticket_sink
        self.explainer: Explainer | None = None
        self._llm_tracing: TracerProvider | None = None
        self.clock = clock
        self.metrics = SelfMetrics()
        self.port: int | None = None
        self.store: SqlStore | None = store
        self.prometheus: PrometheusSource | None = None
        self.metric_agent: MetricAgent | None = None
        self.remediation_agent: RemediationAgent | None = None
        self.ticket_desk: TicketDesk | None = None
        self.learning_agent: LearningAgent | None = None
        self._background: set[asyncio.Future[Any]] = set()
        self.slack: SlackSink | None = None
        self._listener: SocketModeListener | None = None
        self._server: uvicorn.Server | None = None
        self._stopping = False
        self._running_jobs: set[asyncio.Task[object]] = set()
        # gitpython is not thread-safe and leaks children when used concurrently: every
        # git operation runs on this one worker thread.
        self._git_worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="git")
        self._executor: Executor | None = None
        self.lease: LeaderLease | None = None

    def _leading(self) -> bool:
        return self.lease is not None and self.lease.current() is not None

    def _check_lease(self) -> None:
        """Right before a remediation step: raises ``LeaseLost`` unless leading."""
        assert self.lease is not None
        self.lease.check()

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping and sig == signal.SIGINT and self._server is not None:
            self._server.force_exit = True  # a second Ctrl-C: stop waiting
        log.info("signal received, shutting down", signal=sig.name)
        self.request_stop()

    def request_stop(self) -> None:
        """Begin a graceful shutdown (what SIGTERM does). Call on the daemon's loop."""
        self._stopping = True
        if self._server is not None:
            self._server.should_exit = True

    async def serve(self, sock: socket.socket | None = None) -> None:
        """Run until stopped. ``sock``: an already bound socket (tests, port 0)."""
        s = self.settings
        injected = self.store is not None
        if self.store is None:
            try:
                self.store = await asyncio.to_thread(
                    open_store, s.store_url, self.clock, auto_migrate=s.store.auto_migrate
                )
            except StoreError as e:
                # The daemon cannot work without a store: this one is fatal, and says why.
                log.error("cannot open the store", error=str(e))
                raise
        store = self.store
        log.info("store open", url=store.url)
        writer: SpanWriterProcess | None = None
        write = store.add_spans
        if s.ingest.writer_process and not injected:
            writer = SpanWriterProcess(
                s.store_url, postgres=store.engine.dialect.name == "postgresql"
            )
            await asyncio.to_thread(writer.start)
            write = writer.write
        queue = IngestQueue(
            write,
            max_spans=s.ingest.queue_max_spans,
            batch_spans=s.ingest.write_batch_spans,
            metrics=self.metrics,
            # Two threads keep the writer process busy: one batch is sent while the
            # other is written. In-process writes gain nothing from a second writer.
            writers=2 if writer is not None else 1,
        )
        queue.start()
        self.prometheus = prometheus_from_settings(s)

        scheduler = AsyncIOScheduler(timezone="UTC")
        store_reachable = True
        lease = self.lease = LeaderLease(
            store,
            s.cluster.replica_id or default_replica_id(),
            s.cluster.lease_seconds,
            metrics=self.metrics,
        )
        # The leader's writes of incident state go through this view: refused once its
        # term no longer holds the lease (``adapters.db.lease``).
        leader_store = store.fenced(lease.current)

        async def ping_store() -> None:
            # Readiness must notice a lost database even when no span is being written.
            nonlocal store_reachable
            try:
                await asyncio.to_thread(store.ping)
            except StoreError as e:
                if store_reachable:
                    log.error("store unreachable", error=str(e))
                store_reachable = False
                raise
            if not store_reachable:
                log.info("store reachable again")
            store_reachable = True

        self._schedule(scheduler, "ping_store", ping_store, STORE_PING_SECONDS)

        def new_metric_agent() -> MetricAgent:
            # One per term: its open incidents are read from the store at its first run,
            # as a restarted daemon reads them, and it writes under its own term's fence.
            fence = lease.current()
            return MetricAgent(
                s,
                store.fenced(lambda: fence),
                self.clock,
                source=self.prometheus,
                metrics=self.metrics,
                diagnose=learned_diagnosis(store),
                moved_off=partial(verified_moved_off, store),
            )

        self.metric_agent = new_metric_agent()
        notifier = OutboxNotifier(store)
        remediation = self.remediation_agent = self._remediation_agent(leader_store, notifier)
        desk = self.ticket_desk = self._ticket_desk(store)
        learning = self.learning_agent = self._learning_agent(store)

        async def metric_agent() -> None:
            agent = self.metric_agent
            assert agent is not None
            run = await agent.run_once()
            resolved = [e.incident_id for e in run.events if isinstance(e, IncidentResolved)]
            touched = [i.id for i in agent.open_incidents] + resolved
            if remediation is not None:
                # After detection and diagnosis: propose, act, verify. On the git worker
                # thread, where every git operation runs one at a time.
                loop = asyncio.get_running_loop()
                acted = await loop.run_in_executor(
                    self._git_worker,
                    remediation.run_once,
                    agent.open_incidents,
                    agent.window.series(),
                    self.clock.now(),
                    run.judged_at,
                )
                # An incident resolved earlier may still have its action verified or its
                # proposal expire: its ticket must say so too.
                touched += acted.incidents()
                resolved += acted.incidents()  # a fix verified after resolution: weak truth
            await asyncio.to_thread(desk.refresh, touched)
            if learning is not None and resolved:
                # Archive what resolved (and re-archive what a verified fix changed the
                # truth of), on the git worker: the archive may be a git repository.
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._git_worker, learning.run_once, resolved)

        async def keep_lease() -> None:
            change = await asyncio.to_thread(lease.attempt)
            if change is Change.ACQUIRED:
                self.metric_agent = new_metric_agent()
                job = scheduler.get_job("metric_agent")
                if job is not None and scheduler.running:
                    # A takeover: detection and remediation resume now, not at the next
                    # interval (the old leader may have died a whole interval ago).
                    job.modify(next_run_time=SystemClock().now())
                if learning is not None:
                    # Incidents that resolved while no replica led are archived now.
                    catch_up = asyncio.get_running_loop().run_in_executor(
                        self._git_worker, learning.catch_up
                    )
                    self._background.add(catch_up)
                    catch_up.add_done_callback(self._background.discard)
            if not self._leading() and self._listener is not None:
                # Slack delivers each Socket Mode event to one connection: the leader's.
                listener, self._listener = self._listener, None
                await listener.close()

        renew = s.cluster.renew_interval
        self._schedule(scheduler, "cluster_lease", keep_lease, renew, first_in=renew)

        async def deliver_tickets() -> None:
            await desk.deliver(self.clock.now())

        explainer = self.explainer = self._explainer(store, desk)
        if explainer is not None:

            async def explain() -> None:
                await explainer.run_once()

            self._schedule(scheduler, "llm_explain", explain, s.llm.every_seconds, leader_only=True)

        self._schedule(
            scheduler, "deliver_tickets", deliver_tickets, s.slack.deliver_seconds, leader_only=True
        )
        if s.retention.enabled:

            async def retention() -> None:
                # On a worker thread, batch by batch (sentinel.retention): ingest goes on.
                await asyncio.to_thread(
                    run_retention, store, s, self.clock.now(), metrics=self.metrics
                )

            # One replica deletes: the others would only race it for the same rows.
            every = s.retention.every_seconds
            self._schedule(
                scheduler,
                "retention",
                retention,
                every,
                first_in=min(60.0, every),
                leader_only=True,
            )
        handler = self._click_handler(store, desk)
        slack_http: dict[str, Any] = {}
        if handler is not None and s.slack.mode is SlackMode.SOCKET:

            async def connect_slack() -> None:
                await self._connect_slack(handler)

            self._schedule(
                scheduler, "connect_slack", connect_slack, SLACK_RECONNECT_SECONDS, leader_only=True
            )
        elif handler is not None:
            secret = s.secrets.slack_signing_secret
            assert secret is not None  # checked by load_settings for http mode

            slack_http = {
                "slack_signing_secret": secret.get_secret_value(),
                "slack_clock": self.clock,
                "on_slack_click": _on_click(handler),
            }

        # Interval in the daemon's clock seconds (an accelerated simulation runs it faster),
        # first run just after a step of the SLI grid completes (plus the ingest lag): a
        # run then judges a step as soon as it can, and detection delay is not wasted
        # waiting for the next interval.
        det = s.detection
        now = self.clock.now()
        grid = timedelta(seconds=det.step_seconds)
        lag = timedelta(seconds=det.ingest_lag_seconds)
        first = step_start(now - lag, grid) + grid + lag  # the next step end + lag
        self._schedule(
            scheduler,
            "metric_agent",
            metric_agent,
            det.interval_seconds / self.clock.speed,
            first_in=(first - now).total_seconds() / self.clock.speed,
            leader_only=True,
        )
        if s.changes.repos:
            # Imported only when repos are configured: gitpython refuses to import on a
            # machine without the git program, and the daemon needs it for nothing else.
            from sentinel.adapters.git import GitChangeFeed

            feed = GitChangeFeed(
                s.changes.repos,
                workdir=s.resolve(s.changes.workdir),
                cursors=store,
                clock=self.clock,
                initial_lookback=timedelta(hours=s.changes.initial_lookback_hours),
            )

            def store_changes(events: Sequence[ChangeEvent]) -> None:
                # Called by the feed before it moves a repo's cursor: at-least-once, and
                # the store skips changes it already has.
                new = store.add_changes(events)
                self.metrics.changes_received.labels(source="git").inc(new)
                log.info("change events stored", new=new, seen=len(events))

            async def poll_changes() -> None:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._git_worker, feed.poll, store_changes)
                for failure in result.failures:
                    log.error("change feed poll failed", error=str(failure))
                    self.metrics.change_feed_failures.labels(repo=failure.repo or "?").inc()

            self._schedule(
                scheduler, "poll_changes", poll_changes, s.changes.poll_seconds, leader_only=True
            )

        app = create_app(
            AppDeps(
                settings=s,
                store=store,
                queue=queue,
                metrics=self.metrics,
                ready_checks={"store_reachable": lambda: store_reachable},
                shutting_down=lambda: self._stopping,
                cluster=lambda: {"replica": lease.replica_id, "role": lease.role.value},
                **slack_http,
            )
        )
        config = uvicorn.Config(
            app,
            host=s.server.host,
            port=s.server.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(s.server.shutdown_timeout_seconds),
            # Large OTLP batches arrive as single requests; keep the default h11 limits.
        )
        self._server = _Server(config)
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await keep_lease()  # before the first jobs: a lone replica leads at once
        except StoreError as e:
            log.error("cannot take the leader lease; trying again", error=str(e))
        scheduler.start()
        # Objects alive at start-up never become garbage: keep the collector off them, so
        # the per-span objects of ingest are the only thing it scans. And scan less often:
        # ingest allocates many short-lived, acyclic objects per span (bench/ingest.py).
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        serve_task = asyncio.create_task(
            self._server.serve(sockets=[sock] if sock is not None else None)
        )
        while not self._server.started and not serve_task.done():
            await asyncio.sleep(0.01)
        if self._server.started:
            bound = self._server.servers[0].sockets[0].getsockname()
            self.port = int(bound[1])
            log.info("sentinel listening", host=s.server.host, port=self.port)
        try:
            await serve_task
        finally:
            self._stopping = True
            log.info("shutting down: waiting for running jobs and the ingest queue")
            scheduler.pause()
            timeout = s.server.shutdown_timeout_seconds
            if self._running_jobs:
                await asyncio.wait(self._running_jobs, timeout=timeout)
            try:
                # A follower takes over at its next attempt, not at the lease's expiry.
                await asyncio.to_thread(lease.release)
            except StoreError as e:
                log.error("cannot release the leader lease", error=str(e))
            drained = await queue.close(timeout)
            if writer is not None:
                await asyncio.to_thread(writer.close, timeout)
            scheduler.shutdown(wait=False)
            self._git_worker.shutdown(wait=True)
            if self._executor is not None:
                self._executor.close()
            if self._listener is not None:
                await self._listener.close()
            if self.slack is not None:
                await self.slack.close()
            if self.prometheus is not None:
                await self.prometheus.aclose()
            if self._llm_tracing is not None:
                await asyncio.to_thread(self._llm_tracing.shutdown)
            await asyncio.to_thread(store.close)
            log.info("stopped", queue_drained=drained)

    def _ticket_desk(self, store: SqlStore) -> TicketDesk:
        """Tickets go to Slack when a channel is configured, else to the console."""
        s = self.settings

        def picture(incident_id: str) -> bytes | None:
            return incident_picture(store, incident_id, self.clock.now())

        self.slack = slack_sink_from_settings(s)
        sink: TicketSink = self.slack or self.ticket_sink or ConsoleSink(sys.stdout)
        return TicketDesk(
            store,
            sink,
            cap_seconds=s.slack.retry_max_seconds,
            picture=picture,
            metrics=self.metrics,
            max_shift=s.llm.max_confidence_shift,
        )

    def _explainer(self, store: SqlStore, desk: TicketDesk) -> Explainer | None:
        """The LLM agents, when ``[llm]`` names a model (or one was given). A bad LLM
        config (no key, no prompt) is logged and the daemon runs without them: the
        deterministic core never needs them."""
        s = self.settings
        try:
            model = self.llm_model or build_model(s.llm, s.secrets)
            if model is None:
                return None
            instrument = None
            if s.llm.export_traces_to:
                instrument, self._llm_tracing = self_tracing(s.llm.export_traces_to)

            def refresh(incident_id: str) -> None:
                desk.refresh([incident_id])

            explainer = Explainer(
                s,
                store,
                self.clock,
                model,
                instrument=instrument,
                metrics=self.metrics,
                on_written=refresh,
            )
        except ConfigError as e:
            log.error("llm agents off: bad [llm] config", error=str(e))
            return None
        log.info(
            "llm agents on",
            model=explainer.model_name,
            prompts={a.value: p.version for a, p in explainer.prompts.items()},
            traces_to=s.llm.export_traces_to or None,
        )
        return explainer

    def _learning_agent(self, store: SqlStore) -> LearningAgent | None:
        """The Learning Agent archives resolved incidents, when an archive is configured."""
        s = self.settings
        if not s.learning.archive_dir:
            return None
        loop = asyncio.get_running_loop()

        def runner(coro: Coroutine[Any, Any, _T]) -> _T:
            # The agent runs on the git worker; Prometheus' client lives on this loop.
            return asyncio.run_coroutine_threadsafe(coro, loop).result()

        return LearningAgent(s, store, self.clock, self.prometheus, runner=runner)

    def _click_handler(self, store: SqlStore, desk: TicketDesk) -> ClickHandler | None:
        if self.slack is None:
            return None
        s = self.settings
        slack = self.slack
        groups = GroupMembers(s.approvals.slack_groups, slack.group_members, self.clock)
        learning = self.learning_agent

        async def deliver() -> None:
            await desk.deliver(self.clock.now())

        async def confirm(incident_id: str, component: str, actor: str) -> str:
            assert learning is not None
            loop = asyncio.get_running_loop()
            done = await loop.run_in_executor(
                self._git_worker, learning.confirm, incident_id, component, None, actor
            )
            await asyncio.to_thread(desk.refresh, [incident_id])
            verb = "corrected to" if done.corrected else "confirmed as"
            return f"Root cause of {incident_id} {verb} {component}. Thank you."

        return ClickHandler(
            store,
            s.approvals,
            slack,
            groups,
            self.clock,
            after=deliver,
            confirm=confirm if learning is not None else None,
        )

    async def _connect_slack(self, handler: ClickHandler) -> None:
        """Socket Mode: connect (again) until Slack answers; clicks then arrive here."""
        if self._listener is not None or self.slack is None:
            return
        token = self.settings.secrets.slack_app_token
        assert token is not None  # checked by load_settings for socket mode

        listener = SocketModeListener(
            token.get_secret_value(), self.slack.web_client, _on_click(handler)
        )
        try:
            await listener.start()
        except NotifyError as e:
            await listener.close()
            log.error("slack socket mode connection failed; retrying", error=str(e))
            return
        self._listener = listener
        log.info("slack socket mode connected")

    def _remediation_agent(
        self, store: SqlStore, notifier: OutboxNotifier
    ) -> RemediationAgent | None:
        """The Remediation Agent with the playbooks that load; a broken playbook is logged
        with its file and line and skipped, never fatal. None without any playbook."""
        s = self.settings
        rem = s.remediation
        if not rem.playbooks_dir:
            return None
        folder = s.resolve(rem.playbooks_dir)
        if not folder.is_dir():
            log.warning("no playbooks folder: remediation is off", folder=str(folder))
            return None
        loaded = load_playbooks([folder], remediation=rem)
        for problem in loaded.errors:
            log.error("playbook skipped", error=str(problem))
            self.metrics.playbook_errors.inc()
        if not loaded.playbooks:
            log.warning("no valid playbook: remediation is off", folder=str(folder))
            return None
        log.info(
            "playbooks loaded",
            playbooks=[p.playbook.name for p in loaded.playbooks],
            paused=rem.paused,
        )
        # Imported here: gitpython refuses to import on a machine without git, and a daemon
        # without playbooks needs none of it.
        from sentinel.adapters.executors import Executor, GitOps

        gitops = GitOps(rem, s.changes.repos, s.resolve(rem.workdir), self.clock)
        self._executor = Executor(gitops, notifier)
        return RemediationAgent(
            s,
            store,
            self._executor,
            notifier,
            self.clock,
            playbooks=[p.playbook for p in loaded.playbooks],
            metrics=self.metrics,
            fence=self._check_lease,
        )

    def _schedule(
        self,
        scheduler: AsyncIOScheduler,
        name: str,
        job: Callable[[], Awaitable[None]],
        every_seconds: float,
        first_in: float = 0.0,
        *,
        leader_only: bool = False,
    ) -> None:
        """``leader_only``: a run starts only while this replica holds the leader lease."""

        async def run() -> None:
            if leader_only and not self._leading():
                return
            task = asyncio.current_task()
            assert task is not None
            self._running_jobs.add(task)
            start = self.clock.monotonic()
            try:
                await job()
            except SentinelError as e:
                # Expected failures of an outside system: logged and counted, and the job
                # runs again at its next time. Anything else is a bug: APScheduler logs it
                # with its traceback and the daemon keeps running.
                self.metrics.job_failures.labels(job=name).inc()
                log.error("job failed", job=name, error=str(e))
            finally:
                self.metrics.job_seconds.labels(job=name).observe(self.clock.monotonic() - start)
                self._running_jobs.discard(task)

        scheduler.add_job(
            run,
            "interval",
            seconds=every_seconds,
            id=name,
            max_instances=1,
            coalesce=True,
            # APScheduler runs on real time, whatever clock the daemon judges by.
            next_run_time=SystemClock().now() + timedelta(seconds=first_in),
        )


def _on_click(handler: ClickHandler) -> Callable[[Click], Coroutine[Any, Any, None]]:
    """A Slack click (Socket Mode or HTTP) handed to the approvals stage."""

    async def on_click(click: Click) -> None:
        if click.decision is Decision.CONFIRM:
            assert click.component is not None  # parse_click sets it for a choice
            await handler.choose_cause(click.action_key, click.component, user_id=click.user_id)
            return
        await handler.click(
            click.action_key, approve=click.decision is Decision.APPROVE, user_id=click.user_id
        )

    return on_click


def run(settings: Settings, clock: Clock) -> None:
    """``sentinel run``: configure logging and serve until SIGTERM/SIGINT."""
    configure_logging(settings.logging)
    # uvloop when available: a faster event loop for the receiver (bench/ingest.py).
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(Daemon(settings, clock).serve())


@dataclass
class RunningDaemon:
    """A daemon serving on its own thread (``daemon_thread``)."""

    daemon: Daemon
    url: str
    loop: asyncio.AbstractEventLoop

    @property
    def store(self) -> SqlStore:
        assert self.daemon.store is not None
        return self.daemon.store


@contextlib.contextmanager
def daemon_thread(
    settings: Settings,
    clock: Clock,
    *,
    store: SqlStore | None = None,
    start_timeout: float = 30.0,
    llm_model: Model | None = None,
    ticket_sink: TicketSink | None = None,
) -> Iterator[RunningDaemon]:
    """Run a daemon on its own thread and event loop until the block ends (graceful stop,
    as SIGTERM). For embedding: tests, benchmarks, the demo. Port 0 binds any free port;
    ``url`` is where it listens. An error of the daemon is raised here."""
    daemon = Daemon(settings, clock, store=store, llm_model=llm_model, ticket_sink=ticket_sink)
    loop_box: list[asyncio.AbstractEventLoop] = []
    errors: list[BaseException] = []

    async def main() -> None:
        loop_box.append(asyncio.get_running_loop())
        await daemon.serve()

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as e:  # noqa: BLE001  # re-raised in the caller's thread
            errors.append(e)

    thread = threading.Thread(target=target, name="sentinel-daemon", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while daemon.port is None:
        if errors:
            raise errors[0]
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the daemon did not start")
        time.sleep(0.01)
    running = RunningDaemon(daemon, f"http://{settings.server.host}:{daemon.port}", loop_box[0])
    try:
        yield running
    finally:
        running.loop.call_soon_threadsafe(daemon.request_stop)
        thread.join(settings.server.shutdown_timeout_seconds + 30)
        if thread.is_alive():
            raise RuntimeError("the daemon did not stop")
        if errors:
            raise errors[0]
