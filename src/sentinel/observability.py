"""sentinel watching itself: structured logs (structlog, JSON by default) and the figures
served on ``/metrics`` (a registry per daemon, never the global one, so tests and replicas
in one process do not share counters).

What must not live here: anything about the monitored agents' telemetry.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sentinel.settings import LogFormat, LoggingSettings


def configure_logging(settings: LoggingSettings, stream: TextIO | None = None) -> None:
    """Route structlog and the standard library's logging to ``stream`` (stderr by
    default), as JSON lines or as console text."""
    level = getattr(logging, settings.level.value.upper())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.format == LogFormat.JSON
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter stays at warning unless sentinel itself is debugging.
    for noisy in ("uvicorn.access", "apscheduler", "alembic", "httpx", "git"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


class SelfMetrics:
    """The daemon's own figures, served on /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "sentinel_ingest_requests",
            "OTLP export requests, by HTTP status code.",
            ["code"],
            registry=r,
        )
        self.spans_received = Counter(
            "sentinel_ingest_spans_received",
            "Spans accepted into the ingest queue.",
            registry=r,
        )
        self.spans_rejected = Counter(
            "sentinel_ingest_spans_rejected",
            "Spans not accepted, by reason: invalid (reported in partial_success), "
            "queue_full (request refused with 429), unavailable or closed (request "
            "refused with 503: store failing, shutting down). Requests refused whole "
            "(400, 401, 413, 415) are counted by sentinel_ingest_requests.",
            ["reason"],
            registry=r,
        )
        self.spans_stored = Counter(
            "sentinel_ingest_spans_stored",
            "Spans written to the store (duplicates of already stored spans excluded).",
            registry=r,
        )
        self.queue_spans = Gauge(
            "sentinel_ingest_queue_spans", "Spans waiting to be written.", registry=r
        )
        self.queue_capacity = Gauge(
            "sentinel_ingest_queue_capacity_spans", "Capacity of the ingest queue.", registry=r
        )
        self.write_seconds = Histogram(
            "sentinel_store_write_seconds",
            "Duration of span write transactions.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.store_errors = Counter(
            "sentinel_store_errors", "Failed store operations, by operation.", ["op"], registry=r
        )
        self.job_seconds = Histogram(
            "sentinel_job_duration_seconds",
            "Duration of scheduled jobs.",
            ["job"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.job_failures = Counter(
            "sentinel_job_failures", "Scheduled job runs that failed.", ["job"], registry=r
        )
        self.retention_deleted = Counter(
            "sentinel_retention_deleted_rows",
            "Rows deleted by retention ([retention]), by table (spans, evaluations, "
            'samples). Failed runs are counted by sentinel_job_failures{job="retention"}.',
            ["table"],
            registry=r,
        )
        self.retention_batches = Counter(
            "sentinel_retention_batches",
            "DELETE statements (one short transaction each) run by retention.",
            registry=r,
        )
        self.changes_received = Counter(
            "sentinel_changes_received",
            "Change events stored, by source (git, webhook).",
            ["source"],
            registry=r,
        )
        self.change_feed_failures = Counter(
            "sentinel_change_feed_failures", "Failed polls of a watched repo.", ["repo"], registry=r
        )
        self.metric_agent_runs = Counter(
            "sentinel_metric_agent_runs",
            "Metric Agent runs, by outcome: ok; degraded (a metric source failed: its SLIs "
            "are stale and no incident is resolved on this run); failed (the store failed: "
            "nothing judged, retried at the next interval).",
            ["outcome"],
            registry=r,
        )
        self.metric_source_failures = Counter(
            "sentinel_metric_source_failures",
            "Failed reads of a metric source by the Metric Agent, by source.",
            ["source"],
            registry=r,
        )
        self.incident_events = Counter(
            "sentinel_incident_events",
            "Incident lifecycle events persisted, by action.",
            ["action"],
            registry=r,
        )
        self.llm_runs = Counter(
            "sentinel_llm_runs",
            "Runs of sentinel's own LLM agents, by agent and outcome (ok, rejected, "
            "timeout, budget, unreachable, error). Anything but ok leaves the ticket on "
            "the deterministic text, with a note.",
            ["agent", "outcome"],
            registry=r,
        )
        self.llm_tokens = Counter(
            "sentinel_llm_tokens",
            "Tokens sentinel's own LLM agents used, by agent and direction.",
            ["agent", "direction"],
            registry=r,
        )
        self.llm_cost = Counter(
            "sentinel_llm_cost_usd",
            "What sentinel's own LLM agents cost, in USD, from [pricing] (0 for a model "
            "without a price).",
            registry=r,
        )
        self.rca_failures = Counter(
            "sentinel_rca_failures",
            "Root-cause diagnoses of an incident that failed, by reason: engine (the "
            "ranking raised; retried when the incident changes), store (reading its "
            "evidence or writing its hypotheses failed; retried next run), gone (the "
            "incident is no longer stored). The incident itself is kept either way.",
            ["reason"],
            registry=r,
        )
        self.playbook_errors = Counter(
            "sentinel_playbook_errors",
            "Playbook files skipped at start-up because they did not load (the log names "
            "the file and line).",
            registry=r,
        )
        self.remediation_events = Counter(
            "sentinel_remediation_events",
            "The Remediation Agent's decisions and outcomes, by event (action_proposed, "
            "action_approved (automatic), action_applied, action_verified, "
            "action_undone, action_failed, action_expired, ...) and gate (auto, approve, "
            "suggest). People's approvals and rejections are in the audit log.",
            ["event", "gate"],
            registry=r,
        )
        self.slack_requests_refused = Counter(
            "sentinel_slack_requests_refused",
            "Slack interactivity requests refused: a bad or missing signature, or a "
            "timestamp outside the 5-minute replay window.",
            registry=r,
        )
        self.tickets_delivered = Counter(
            "sentinel_tickets_delivered",
            "Ticket deliveries by what was done: posted, updated, found (a post found "
            "again after a crash), message (a thread message or file).",
            ["what"],
            registry=r,
        )
        self.ticket_failures = Counter(
            "sentinel_ticket_failures",
            "Ticket or thread deliveries that failed and wait for a retry (Slack down, 429).",
            registry=r,
        )
        self.leader = Gauge(
            "sentinel_leader",
            "1 while this replica holds the leader lease and runs the leader's jobs "
            "(detection, remediation, tickets, change feed, learning, LLM agents), else 0.",
            registry=r,
        )
        self.leader_changes = Counter(
            "sentinel_leader_changes",
            "Changes of this replica's role, by change: acquired (it became the leader), "
            "lost (its term ended: released, not renewed in time, or taken over).",
            ["change"],
            registry=r,
        )
        self.open_incidents = Gauge(
            "sentinel_open_incidents", "Incidents open after the last Metric Agent run.", registry=r
        )
        self.slis_tracked = Gauge(
            "sentinel_slis_tracked",
            "SLI series the Metric Agent judges, by verdict of its last run: judged or "
            "not_enough_data.",
            ["verdict"],
            registry=r,
        )
