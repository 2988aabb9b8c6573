"""The one exception tree of sentinel.

Every error sentinel raises on purpose is a ``SentinelError``; callers catch the
narrowest class they can handle. Messages carry the offending value (``!r``) and where
it came from (a file and key, a query, a URL). Nothing else lives here.

    SentinelError
     ├── ConfigError            config.toml / SENTINEL_* env invalid (file, key, expected)
     ├── CaseFormatError        a case folder that does not follow CASE_FORMAT.md
     ├── TelemetryError         telemetry that cannot be decoded
     │    └── OTLPDecodeError   a malformed OTLP request body (-> HTTP 400)
     ├── StoreError             the database failed or is unreachable
     │    └── LeaseLost         a leader-only write by a replica that no longer holds the lease
     ├── MetricSourceError      Prometheus / VictoriaMetrics
     │    ├── MetricSourceUnavailable   connection refused, timeout, 5xx (retryable)
     │    └── MetricQueryError          the server rejected the query (4xx, bad PromQL)
     ├── ChangeFeedError        a git repository or change webhook payload that failed
     ├── SimulationError        the simulator's live run could not deliver its telemetry
     │    ├── LiveExportError   (sim/live.py: carries the run's LiveReport)
     │    └── DemoError         `sentinel demo` could not set up or keep its fleet running
     ├── IllegalTransition      an incident lifecycle event that does not apply to its state
     └── UnknownIncident        an incident id the store does not hold
"""

from __future__ import annotations


class SentinelError(Exception):
    """Base of every error sentinel raises on purpose."""


class ConfigError(SentinelError):
    """Configuration is invalid: names the file, the key and what was expected."""


class CaseFormatError(SentinelError):
    """A case folder does not follow the case format."""


class TelemetryError(SentinelError):
    """Telemetry that cannot be decoded."""


class OTLPDecodeError(TelemetryError):
    """A malformed OTLP request body."""


class StoreError(SentinelError):
    """The store failed or is unreachable."""


class LeaseLost(StoreError):
    """A write only the leader may make, refused because this replica no longer holds
    the leader lease (names the lease, the replica and the epoch it held)."""


class MetricSourceError(SentinelError):
    """A Prometheus-compatible metric source failed; carries the query."""

    def __init__(self, message: str, *, query: str | None = None) -> None:
        super().__init__(message)
        self.query = query


class MetricSourceUnavailable(MetricSourceError):
    """The source could not be reached or answered 5xx/timeout (retryable)."""


class MetricQueryError(MetricSourceError):
    """The source rejected the query itself (4xx, bad PromQL): retrying will not help."""


class ChangeFeedError(SentinelError):
    """A change source (git repository, webhook payload) failed; names the repo and URL."""

    def __init__(self, message: str, *, repo: str | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.repo = repo
        self.url = url


class IllegalTransition(SentinelError):
    """A lifecycle event that does not apply to the incident's state (names both)."""


class SimulationError(SentinelError):
    """The simulator could not do its work (a live run whose daemon refused or vanished)."""


class DemoError(SimulationError):
    """``sentinel demo`` could not set up its workspace, fleet or daemon, or its fleet
    died: says which, and where its log is."""


class UnknownIncident(SentinelError):
    """An incident id the store does not hold (names the id and the store)."""


class PlaybookError(SentinelError):
    """A playbook file that cannot be loaded, validated or rendered: names the file, the
    line and what was expected."""


class RemediationError(SentinelError):
    """An action failed while being carried out (git, HTTP); names the action and why."""


class ActionRefused(RemediationError):
    """An action refused before it changed anything (dirty tree, merge conflict, outside
    its blast radius): escalated to people, never retried on its own."""


class NotifyError(SentinelError):
    """A ticket or message could not be delivered; ``retry_after`` (seconds) when the
    service said how long to wait (Slack's 429), ``retryable`` False when retrying cannot
    help (a revoked token, an unknown channel)."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, retryable: bool = True
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.retryable = retryable


class ConfirmationError(SentinelError):
    """A confirmation that cannot be recorded: a component the incident and the store do
    not know (the message lists the known ones), or no fault to go with it."""
