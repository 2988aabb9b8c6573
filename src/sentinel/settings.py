"""Typed configuration: the only reader of ``config.toml`` and of ``SENTINEL_*`` variables.

``load_settings()`` is called once, in the composition root (``daemon.py`` / ``cli.py``),
and the resulting frozen ``Settings`` is passed down. Unknown keys and wrong types are
rejected with the file, the key (and its line when it can be found) and what was
expected. Secrets never come from the file: only from the environment.

What must not live here: building engines, clients or anything else with side effects.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from sentinel.errors import ConfigError
from sentinel.redact import DEFAULT_CONTENT_PREFIXES, check_pattern
from sentinel.telemetry import ChangeKind, ComponentId, SliKind

ENV_PREFIX = "SENTINEL_"
CONFIG_ENV = "SENTINEL_CONFIG"


class _Section(BaseModel):
    # strict: a quoted number or "yes" for a boolean is a mistake to report, not to guess.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class RouteGroup(StrEnum):
    """The HTTP routes, grouped by who calls them (``server.auth`` keys)."""

    TRACES = "traces"  # POST /v1/traces: OTLP exporters
    CHANGES = "changes"  # POST /api/changes: CI/CD webhooks
    READ = "read"  # GET /api/audit, /api/actions: people and tools reading decisions
    METRICS = "metrics"  # GET /metrics: Prometheus
    HEALTH = "health"  # GET /healthz, /readyz: orchestrators' probes


_NAME = r"^[a-z][a-z0-9_]*$"
# Built-in token names and their variables; any other name N reads SENTINEL_TOKEN_<N>.
BUILTIN_TOKENS: Mapping[str, str] = {
    "ingest": "SENTINEL_INGEST_TOKEN",
    "api": "SENTINEL_API_TOKEN",
}
TOKEN_ENV_PREFIX = "SENTINEL_TOKEN_"  # noqa: S105  # a prefix, not a secret


def token_env(name: str) -> str:
    """The environment variable holding the bearer token called ``name``."""
    return BUILTIN_TOKENS.get(name) or TOKEN_ENV_PREFIX + name.upper()


TokenNames = tuple[Annotated[str, Field(pattern=_NAME)], ...]


class RouteAuth(_Section):
    """Which bearer tokens each route group accepts (any one of them); ``[]`` leaves the
    group open. Metrics and health are open by default: Prometheus and probes send no
    token, and they show no prompts, incidents or decisions."""

    traces: TokenNames = ("ingest",)
    changes: TokenNames = ("api",)
    read: TokenNames = ("api",)
    metrics: TokenNames = ()
    health: TokenNames = ()

    def tokens(self, group: RouteGroup) -> TokenNames:
        names: TokenNames = getattr(self, group.value)
        return names


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 4318
    # Before server.auth: true made a missing SENTINEL_INGEST_TOKEN / SENTINEL_API_TOKEN an
    # error at start-up, even on loopback. Kept with that meaning.
    ingest_auth: bool = False
    api_auth: bool = False
    auth: RouteAuth = RouteAuth()
    shutdown_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")


class RedactionPattern(_Section):
    name: Annotated[str, Field(pattern=_NAME)]
    regex: Annotated[str, Field(min_length=1)]

    @model_validator(mode="after")
    def _valid(self) -> RedactionPattern:
        why = check_pattern(self.name, self.regex)
        if why is not None:
            raise ValueError(f"redaction pattern {self.name!r} = {self.regex!r}: {why}")
        return self


class RedactionSettings(_Section):
    """PII and secrets replaced by ``[REDACTED:<kind>]`` before prompts and messages are
    stored (``sentinel.redact``)."""

    enabled: bool = True
    # Attribute keys (prefixes) holding prompts and messages; [""] covers every attribute.
    content_prefixes: tuple[str, ...] = DEFAULT_CONTENT_PREFIXES
    patterns: tuple[RedactionPattern, ...] = ()


class IngestSettings(_Section):
    max_body_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    queue_max_spans: Annotated[int, Field(ge=1)] = 262_144
    write_batch_spans: Annotated[int, Field(ge=1)] = 16_384
    retry_after_seconds: Annotated[int, Field(ge=1)] = 2
    ack_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    writer_process: bool = True


class StoreSettings(_Section):
    url: str = "sqlite:///.sentinel/sentinel.db"
    auto_migrate: bool = True

    @field_validator("url")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if not (v.startswith("sqlite://") or v.startswith("postgresql")):
            raise ValueError("expected a 'sqlite:///PATH' or 'postgresql+psycopg://...' URL")
        return v


class ClusterSettings(_Section):
    """Several ``sentinel run`` replicas on one store: the leader lease
    (``adapters.db.lease``). Every replica ingests and serves the API; only the lease
    holder runs the jobs that act or write incident state. Seconds here are real seconds
    on the database's clock, whatever clock the daemon judges telemetry by."""

    # This replica's name in the lease; empty: "<hostname>-<pid>", unique per process.
    replica_id: str = ""
    # The longest a follower takes to lead after the leader died (> 0).
    takeover_seconds: Annotated[float, Field(gt=0)] = 30.0
    # How often the leader renews and the followers try; 0: takeover_seconds / 6.
    renew_seconds: Annotated[float, Field(ge=0)] = 0.0

    @property
    def renew_interval(self) -> float:
        return self.renew_seconds or self.takeover_seconds / 6

    @property
    def lease_seconds(self) -> float:
        """How long a granted lease lasts: a follower's next attempt after the expiry
        comes within one renew interval, so takeover is at most ``takeover_seconds``."""
        return self.takeover_seconds - self.renew_interval

    @model_validator(mode="after")
    def _renew_well_under_takeover(self) -> ClusterSettings:
        if self.renew_interval > self.takeover_seconds / 3:
            raise ValueError(
                f"renew_seconds ({self.renew_seconds!r}) must be at most a third of "
                f"takeover_seconds ({self.takeover_seconds!r}): a leader renews several "
                "times per lease, so one slow renewal does not lose it"
            )
        return self


class PromQLSli(_Section):
    """An SLI read from a PromQL query instead of computed from spans or the known metric
    families: one series per declared SLI (a query giving several series is an error)."""

    component: ComponentId
    sli: SliKind
    # The error type for error_rate_by_type, the evaluator for eval_score, else empty.
    qualifier: str = ""
    # Evaluated over the detection window every detection.step_seconds, in the SLI's
    # unit (seconds, shares in [0, 1], requests per second, ...).
    query: str = Field(min_length=1)
    # Observations behind each point (e.g. requests per step); empty: each point is taken
    # as resting on enough observations.
    count_query: str = ""


# RFC 9110 token characters.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class PrometheusSettings(_Section):
    url: str = ""

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if v:
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("expected an http(s) URL with a host, e.g. http://prometheus:9090")
        return v

    timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    retries: Annotated[int, Field(ge=0, le=10)] = 3
    backoff_seconds: Annotated[float, Field(ge=0)] = 0.5
    # Extra request headers, e.g. {"X-Scope-OrgID" = "team-a"}: Mimir's (and Cortex's)
    # tenant. Not for credentials: the bearer token comes from SENTINEL_PROMETHEUS_TOKEN.
    headers: dict[str, str] = {}
    slis: tuple[PromQLSli, ...] = ()

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if name.lower() in ("authorization", "proxy-authorization", "cookie", "host"):
                raise ValueError(
                    f"header {name!r} may not be set here (credentials come from "
                    "SENTINEL_PROMETHEUS_TOKEN)"
                )
            if any(ch in value for ch in "\r\n\0"):
                raise ValueError(f"header {name!r}: value {value!r} holds a line break")
        return v

    @field_validator("slis")
    @classmethod
    def _one_declaration_per_sli(cls, v: tuple[PromQLSli, ...]) -> tuple[PromQLSli, ...]:
        seen: dict[tuple[str, str, str], int] = {}
        for i, d in enumerate(v):
            key = (d.component, d.sli.value, d.qualifier)
            if key in seen:
                raise ValueError(
                    f"entries {seen[key]} and {i} both declare {d.sli.value!r} of "
                    f"{d.component!r}" + (f" ({d.qualifier!r})" if d.qualifier else "")
                )
            seen[key] = i
        return v


class PathMapping(_Section):
    glob: str = Field(min_length=1)
    component: ComponentId
    affects: tuple[ComponentId, ...] = ()
    kind: ChangeKind = ChangeKind.CONFIG


class RepoSettings(_Section):
    # The name becomes a folder under changes.workdir: no separators, no "..".
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    url: str = Field(min_length=1)
    branch: str = "main"
    paths: tuple[PathMapping, ...] = ()


class ChangesSettings(_Section):
    poll_seconds: Annotated[float, Field(gt=0)] = 30.0
    # On first sight of a repo, report the commits of this many hours before now.
    initial_lookback_hours: Annotated[float, Field(ge=0)] = 24.0
    workdir: str = ".sentinel/repos"
    repos: tuple[RepoSettings, ...] = ()


class PushMode(StrEnum):
    """Where a GitOps action's commit goes."""

    BRANCH = "branch"  # pushed to the repository's configured branch: live at once
    REVIEW = "review"  # a new branch sentinel/<incident>-<playbook>-<step>, for review


class RemediationSettings(_Section):
    """The Remediation Agent (``sentinel.remediation``, ``sentinel.agents.remediation``)."""

    # Kill switch in config: no action at all, automatic or approved, while true. The
    # store's switch (`sentinel pause` / `sentinel resume`) works beside it: either pauses.
    paused: bool = False
    # Folder of *.yaml playbooks. Empty: none (incidents get no proposal).
    playbooks_dir: str = "playbooks"
    # Playbooks may only make the gates stricter (higher) than these, unless allowed.
    auto_above: Annotated[float, Field(ge=0, le=1)] = 0.9
    approve_above: Annotated[float, Field(ge=0, le=1)] = 0.6
    allow_looser_gates: bool = False
    # The [[changes.repos]] name GitOps actions change when a playbook names no repo.
    config_repo: str = ""
    # Where sentinel keeps its working clones of the config repositories it changes.
    workdir: str = ".sentinel/gitops"
    push: PushMode = PushMode.BRANCH
    author_name: str = Field(default="sentinel", min_length=1)
    author_email: str = Field(default="sentinel@localhost", min_length=3)
    # Global policy: no action runs alone outside these, whatever a playbook says.
    # Component id globs; repository names (empty: every [[changes.repos]]); path globs.
    allowed_components: tuple[str, ...] = ("*",)
    allowed_repos: tuple[str, ...] = ()
    allowed_paths: tuple[str, ...] = ("**",)

    @model_validator(mode="after")
    def _ordered(self) -> RemediationSettings:
        if self.approve_above > self.auto_above:
            raise ValueError(
                f"approve_above ({self.approve_above}) must not exceed auto_above "
                f"({self.auto_above})"
            )
        return self


class SlackMode(StrEnum):
    SOCKET = "socket"  # Socket Mode: an outbound websocket, no public URL needed
    HTTP = "http"  # Slack posts interactions to POST /slack/interactions (signed)


class SlackSettings(_Section):
    """Slack tickets and buttons (``adapters.slack``). Off while ``channel`` is empty.
    Tokens come from the environment only: SENTINEL_SLACK_BOT_TOKEN (xoxb-),
    SENTINEL_SLACK_APP_TOKEN (xapp-, Socket Mode), SENTINEL_SLACK_SIGNING_SECRET (HTTP)."""

    channel: str = ""  # the channel id tickets go to, e.g. C0123456789
    mode: SlackMode = SlackMode.SOCKET
    # Slack's Web API; tests and proxies point it elsewhere.
    base_url: str = "https://slack.com/api/"
    # Delivery retries back off exponentially up to this, or as long as Retry-After says.
    retry_max_seconds: Annotated[float, Field(gt=0)] = 300.0
    # How often the outbox of tickets and thread messages is delivered.
    deliver_seconds: Annotated[float, Field(gt=0)] = 2.0

    @field_validator("base_url")
    @classmethod
    def _http_base(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("http", "https"):
            raise ValueError(f"must be an http(s) URL, got {v!r}")
        return v if v.endswith("/") else v + "/"


class ApprovalSettings(_Section):
    """Who may approve or reject remediation actions, from Slack or the CLI, and how long
    a proposal waits for them."""

    # "slack:<user id>" or "cli:<login>", e.g. ["slack:U0123ABCD", "cli:dana"].
    users: tuple[str, ...] = ()
    # Slack user group ids (S...) whose members may approve.
    slack_groups: tuple[str, ...] = ()
    # A proposal nobody decided on within this long expires and is escalated.
    expire_minutes: Annotated[float, Field(gt=0)] = 30.0

    @field_validator("users")
    @classmethod
    def _prefixed(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [u for u in v if not re.fullmatch(r"(slack|cli):[^\s:]+", u)]
        if bad:
            raise ValueError(f"each user must be 'slack:<user id>' or 'cli:<login>', got {bad!r}")
        return v


class LearningSettings(_Section):
    """The Learning Agent (``sentinel.learning``, ``agents.learning``)."""

    # Where resolved incidents are archived as cases (CASE_FORMAT.md). If the folder is
    # a git repository, each case is committed. Empty: nothing is archived.
    archive_dir: str = ".sentinel/archive"
    # Telemetry archived before an incident's onset (its baseline, for replays).
    lookback_minutes: Annotated[float, Field(gt=0)] = 45.0
    # `sentinel eval --baseline`: fail when AC@1 falls by more than this.
    eval_tolerance: Annotated[float, Field(ge=0, le=1)] = 0.05
    # Refit the calibration only with at least this many archived cases with confirmed
    # truth (priors are fitted from any number).
    min_cases: Annotated[int, Field(ge=1)] = 20


class RetentionSettings(_Section):
    """Deleting old telemetry (``sentinel.retention``): spans with their evaluator scores,
    and metric samples, older than these ages; 0 keeps them forever. Incidents, actions
    and the audit log are never deleted. A retention shorter than what the daemon still
    reads (``retention_floor``) is refused."""

    spans_hours: Annotated[float, Field(ge=0)] = 168.0
    samples_hours: Annotated[float, Field(ge=0)] = 168.0
    # Rows per DELETE statement (one short transaction each): the span writer waits at
    # most one batch for the store.
    batch_rows: Annotated[int, Field(ge=1, le=1_000_000)] = 5_000
    every_seconds: Annotated[float, Field(gt=0)] = 600.0

    @property
    def enabled(self) -> bool:
        return self.spans_hours > 0 or self.samples_hours > 0


class LlmSettings(_Section):
    """sentinel's own LLM agents (``sentinel.llm``): the ticket's narrative, and an
    investigation when the engine is unsure. Detection, ranking, gates and verification
    never need them. The API key comes from SENTINEL_LLM_API_KEY only."""

    # "none": no LLM (the default). "openai:<model>": OpenAI, or with base_url any
    # OpenAI-compatible server (Ollama, vLLM, a gateway).
    model: str = "none"
    base_url: str = ""
    # One agent run, model calls and tools included.
    timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    # Retries of an output that failed validation (bad shape, evidence not in the store).
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    # Tokens (input + output) all runs on one incident may use; then the ticket says so.
    max_tokens_per_incident: Annotated[int, Field(gt=0)] = 60_000
    # The investigator runs when the top hypothesis' confidence is below this.
    investigate_below: Annotated[float, Field(ge=0, le=1)] = 0.6
    # How far the investigator may move a hypothesis' confidence, either way. What a
    # gate sees is never above the engine's confidence, whatever this is.
    max_confidence_shift: Annotated[float, Field(ge=0, le=1)] = 0.15
    # Versioned prompt files, prompts/<name>.v<N>.md; the newest unless pinned here
    # (e.g. prompt_versions = { narrative = "v1" }).
    prompts_dir: str = "prompts"
    prompt_versions: dict[str, str] = {}
    # OTLP/HTTP traces endpoint for the agents' own spans (GenAI conventions); "" keeps
    # them in-process. Pointing it at sentinel's own /v1/traces makes sentinel watch itself.
    export_traces_to: str = ""
    # How often the daemon looks for incidents to explain.
    every_seconds: Annotated[float, Field(gt=0)] = 10.0

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if v != "none" and not re.fullmatch(r"openai:\S+", v):
            raise ValueError(
                f'model {v!r}: use "none" or "openai:<model>" (with base_url for any '
                "OpenAI-compatible server such as Ollama or vLLM)"
            )
        return v

    @field_validator("prompt_versions")
    @classmethod
    def _versions(cls, v: dict[str, str]) -> dict[str, str]:
        bad = {k: x for k, x in v.items() if not re.fullmatch(r"v[0-9]+", x)}
        if bad:
            raise ValueError(f'prompt versions look like "v1"; got {bad}')
        return v

    @property
    def enabled(self) -> bool:
        return self.model != "none"


class LoggingSettings(_Section):
    level: LogLevel = LogLevel.INFO
    format: LogFormat = LogFormat.JSON


class ModelPrice(_Section):
    """List price of one model, in USD per million tokens."""

    input_per_million: Annotated[float, Field(ge=0)]
    output_per_million: Annotated[float, Field(ge=0)]

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD of that many tokens."""
        return (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / 1e6


# Providers' published list prices (USD per million tokens) when this table was written;
# they change: config.toml says how to replace them. Keys are the model names as spans
# report them (gen_ai.request.model), matched exactly.
DEFAULT_MODEL_PRICES: Mapping[str, ModelPrice] = {
    "gpt-4o": ModelPrice(input_per_million=2.5, output_per_million=10.0),
    "gpt-4o-mini": ModelPrice(input_per_million=0.15, output_per_million=0.6),
    "gpt-4.1": ModelPrice(input_per_million=2.0, output_per_million=8.0),
    "gpt-4.1-mini": ModelPrice(input_per_million=0.4, output_per_million=1.6),
    "text-embedding-3-small": ModelPrice(input_per_million=0.02, output_per_million=0.0),
    "text-embedding-3-large": ModelPrice(input_per_million=0.13, output_per_million=0.0),
}


class PricingSettings(_Section):
    """Per-model token prices, for the cost-per-request SLI of traces. A model missing
    here has no cost SLI (unknown, never zero)."""

    models: dict[str, ModelPrice] = Field(default_factory=lambda: dict(DEFAULT_MODEL_PRICES))


class DetectionSettings(_Section):
    """The Metric Agent's detectors (``sentinel.detection``) and incident grouping
    (``sentinel.incidents``)."""

    # SLI grid: one point per step; detection runs as if every step were an interval.
    step_seconds: Annotated[float, Field(gt=0)] = 30.0
    # Trailing baseline, ending where the recent (searched) window begins.
    baseline_minutes: Annotated[float, Field(gt=0)] = 30.0
    # The recent window searched for a change point; excluded from the baseline.
    recent_minutes: Annotated[float, Field(gt=0)] = 10.0
    min_baseline_points: Annotated[int, Field(ge=3)] = 20
    # Consecutive recent points a shift must hold before it is an anomaly.
    persistence_points: Annotated[int, Field(ge=1)] = 4
    # A shift whose evidence is overwhelming (min_z times this factor; max_p_value to
    # this power) needs only fast_persistence_points: a hard failure pages within an
    # interval or two, not after the full persistence. Equal persistences: no fast path.
    fast_persistence_points: Annotated[int, Field(ge=1)] = 2
    fast_evidence_factor: Annotated[float, Field(ge=1)] = 1.75
    # ... and each of those points rests on at least this many observations (never fewer
    # than min_point_count): a p50 of four calls, two of them slow, is common noise
    # however far it lands. Its own setting since session 11, so that the evidence factor
    # can come down without the floor coming with it (it was min_point_count times the
    # factor, and a floor of 4 or 5 gave 2-4 false incidents per multi_agent day).
    fast_min_point_count: Annotated[int, Field(ge=1)] = 6
    # ... except evaluator scores: a mean of scores bounded in [0, 1] has no heavy tail,
    # and evaluators score a sample of runs, so a score's 15 s point holds 2-6 of them
    # (its agent serves about 1.5 times as many requests). Since session 12 (a prompt
    # regression replayed on spans alone pages a step sooner; no false incident added).
    fast_min_score_count: Annotated[int, Field(ge=1)] = 3
    # The fast path is also judged on the SLIs at step_seconds / fast_step_divisor (same
    # bars, its points that much shorter): with 30 s steps, two points of evidence take
    # 30 s, not 60 s, to accumulate. 1: the fast path sees the step's points only.
    # An incident may then open on its first lone anomaly (the demo's prompt regression
    # can open on its model's token count alone): the Root Cause Agent keeps the agents
    # asking for that usage, and changes to them, as candidates (``rca.rank``).
    fast_step_divisor: Annotated[int, Field(ge=1)] = 2
    # Points resting on fewer observations (requests, runs, scores) are ignored.
    min_point_count: Annotated[int, Field(ge=1)] = 3
    # Robust z (shift of the recent median over the baseline's MAD) required.
    min_z: Annotated[float, Field(gt=0)] = 6.5
    # For shares (error rates): binomial tail probability of the recent errors.
    max_p_value: Annotated[float, Field(gt=0, lt=1)] = 1e-6
    # Minimum effects, so that real but harmless wiggles do not page.
    error_rate_min_increase: Annotated[float, Field(gt=0, le=1)] = 0.05
    error_rate_min_ratio: Annotated[float, Field(ge=1)] = 2.0
    latency_min_ratio: Annotated[float, Field(ge=1)] = 1.5
    latency_min_increase_seconds: Annotated[float, Field(ge=0)] = 0.05
    usage_min_ratio: Annotated[float, Field(ge=1)] = 1.3
    steps_min_increase: Annotated[float, Field(ge=0)] = 1.0
    eval_score_min_drop: Annotated[float, Field(gt=0)] = 0.05
    request_rate_min_drop: Annotated[float, Field(gt=0, le=1)] = 0.5
    # Memory utilisation (working set / limit): up by this share of the limit.
    memory_min_increase: Annotated[float, Field(gt=0, le=1)] = 0.1
    # Memory without a limit (working-set bytes): up by this ratio.
    memory_min_ratio: Annotated[float, Field(ge=1)] = 1.2
    # CPU in use (cores): this many times the baseline, and by at least this many cores
    # (a service idling at 0.01 cores doubles on a few busy requests).
    cpu_min_ratio: Annotated[float, Field(ge=1)] = 1.5
    cpu_min_increase_cores: Annotated[float, Field(ge=0)] = 0.1
    # An error type absent from the baseline needs this many recent errors.
    emergence_min_errors: Annotated[int, Field(ge=1)] = 5
    # Anomalies this close in time and this close in the component graph: one incident.
    correlation_minutes: Annotated[float, Field(gt=0)] = 15.0
    correlation_max_hops: Annotated[int, Field(ge=1)] = 4
    # An incident open this long (or resolving sooner) has its onset dated again from the
    # data since (``sentinel.onset``): a ramp is dated where it began, not where it paged.
    # 0: never.
    onset_refit_minutes: Annotated[float, Field(ge=0)] = 10.0
    # An incident resolves once its SLIs stay within baseline this long.
    resolve_minutes: Annotated[float, Field(gt=0)] = 10.0
    # How often the Metric Agent runs in the daemon.
    interval_seconds: Annotated[float, Field(gt=0)] = 30.0
    # A step is judged only once it ended this long ago: spans reach the store after they
    # end, batched by their exporters (the OTel SDK exports every 5 s by default).
    ingest_lag_seconds: Annotated[float, Field(ge=0)] = 5.0


class BurnWindow(_Section):
    """One multi-window burn-rate rule: the SLO pages when the error budget burns at least
    ``burn_rate`` times too fast over both the long and the short window (the short one
    makes the alert stop soon after the burn does)."""

    long_minutes: Annotated[float, Field(gt=0)]
    short_minutes: Annotated[float, Field(gt=0)]
    burn_rate: Annotated[float, Field(gt=0)]

    @model_validator(mode="after")
    def _short_within_long(self) -> BurnWindow:
        if self.short_minutes >= self.long_minutes:
            raise ValueError(
                f"short_minutes ({self.short_minutes:g}) must be less than long_minutes "
                f"({self.long_minutes:g})"
            )
        return self


# The two paging rules of the Google SRE workbook for a 30-day budget: 2 % of the budget
# in an hour, 5 % in six hours.
DEFAULT_BURN_WINDOWS = (
    BurnWindow(long_minutes=60.0, short_minutes=5.0, burn_rate=14.4),
    BurnWindow(long_minutes=360.0, short_minutes=30.0, burn_rate=6.0),
)


class SloSettings(_Section):
    """A service level objective on one SLI of one component. For shares (error_rate,
    tool_failure_rate, ...) the events are requests and a bad event is a failed one; for
    every other SLI the events are steps of the SLI grid, and a step is bad when its value
    is on the wrong side of ``threshold`` (latency above, evaluator score below, ...)."""

    name: str = Field(min_length=1)
    component: ComponentId
    sli: SliKind
    qualifier: str = ""
    # The share of good events the objective promises, e.g. 0.995.
    objective: Annotated[float, Field(gt=0, lt=1)]
    # Required for non-share SLIs: the value a good step must meet.
    threshold: float | None = None
    # The period the error budget (1 - objective) is spent over.
    period_days: Annotated[float, Field(gt=0)] = 30.0
    windows: tuple[BurnWindow, ...] = Field(default=DEFAULT_BURN_WINDOWS, min_length=1)

    @model_validator(mode="after")
    def _threshold_when_needed(self) -> SloSettings:
        if self.sli.share and self.threshold is not None:
            raise ValueError(
                f"threshold is only for non-share SLIs: the events of {self.sli.value!r} are "
                "requests, counted good or bad by the objective alone"
            )
        if not self.sli.share and self.threshold is None:
            raise ValueError(
                f"threshold is required for sli {self.sli.value!r}: the value a good step "
                "must meet (e.g. threshold = 2.0 for a latency, 0.85 for an evaluator score)"
            )
        return self


class Secrets(_Section):
    """Values read from ``SENTINEL_*`` environment variables only."""

    ingest_token: SecretStr | None = None
    api_token: SecretStr | None = None
    prometheus_token: SecretStr | None = None
    store_url: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    llm_api_key: SecretStr | None = None
    # Bearer tokens named in server.auth beyond "ingest" and "api": SENTINEL_TOKEN_<NAME>.
    tokens: dict[str, SecretStr] = {}

    def token(self, name: str) -> SecretStr | None:
        """The bearer token called ``name`` (see ``token_env``), None when unset."""
        if name == "ingest":
            return self.ingest_token
        if name == "api":
            return self.api_token
        return self.tokens.get(name)


# env var -> Secrets field
SECRET_ENV: Mapping[str, str] = {
    "SENTINEL_INGEST_TOKEN": "ingest_token",
    "SENTINEL_API_TOKEN": "api_token",
    "SENTINEL_PROMETHEUS_TOKEN": "prometheus_token",
    "SENTINEL_STORE_URL": "store_url",
    "SENTINEL_SLACK_BOT_TOKEN": "slack_bot_token",
    "SENTINEL_SLACK_APP_TOKEN": "slack_app_token",
    "SENTINEL_SLACK_SIGNING_SECRET": "slack_signing_secret",
    "SENTINEL_LLM_API_KEY": "llm_api_key",
}


class Settings(_Section):
    server: ServerSettings = ServerSettings()
    ingest: IngestSettings = IngestSettings()
    store: StoreSettings = StoreSettings()
    cluster: ClusterSettings = ClusterSettings()
    prometheus: PrometheusSettings = PrometheusSettings()
    changes: ChangesSettings = ChangesSettings()
    logging: LoggingSettings = LoggingSettings()
    pricing: PricingSettings = PricingSettings()
    detection: DetectionSettings = DetectionSettings()
    slo: tuple[SloSettings, ...] = ()
    remediation: RemediationSettings = RemediationSettings()
    slack: SlackSettings = SlackSettings()
    approvals: ApprovalSettings = ApprovalSettings()
    learning: LearningSettings = LearningSettings()
    llm: LlmSettings = LlmSettings()
    retention: RetentionSettings = RetentionSettings()
    redaction: RedactionSettings = RedactionSettings()
    secrets: Secrets = Secrets()

    @field_validator("slo")
    @classmethod
    def _unique_slo_names(cls, v: tuple[SloSettings, ...]) -> tuple[SloSettings, ...]:
        names = [s.name for s in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"SLO names must be unique; repeated: {', '.join(map(repr, twice))}")
        return v

    # Where relative paths in the file are resolved from: the config file's folder.
    base_dir: Path = Path()

    @property
    def store_url(self) -> str:
        """The effective store URL: SENTINEL_STORE_URL if set, relative SQLite paths
        resolved against the config file's folder."""
        url = (
            self.secrets.store_url.get_secret_value() if self.secrets.store_url else self.store.url
        )
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            rest = url[len(prefix) :]
            if rest and rest != ":memory:":
                return prefix + str((self.base_dir / rest).resolve())
        return url

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else (self.base_dir / p).resolve()


def default_config_path() -> Path:
    """config.toml at the project root (beside src/), else in the working directory."""
    here = Path(__file__).resolve().parents[2] / "config.toml"
    return here if here.exists() else Path("config.toml")


def load_settings(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    serving: bool = True,
) -> Settings:
    """Read, validate and return the settings. Raises ``ConfigError``.

    ``path``: the config file; else ``$SENTINEL_CONFIG``; else the default config.toml.
    A missing file is an error when it was asked for by name. ``serving``: also require
    the secrets the HTTP server needs (commands that only read the store pass False).
    """
    env = os.environ if env is None else env
    explicit = path is not None or CONFIG_ENV in env
    if path is None:
        path = Path(env[CONFIG_ENV]) if CONFIG_ENV in env else default_config_path()
    data: dict[str, Any] = {}
    text = ""
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from e
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e}") from e
    elif explicit:
        raise ConfigError(f"{path}: config file not found")

    for reserved in ("secrets", "base_dir"):
        if reserved in data:
            raise ConfigError(
                f"{path}: key {reserved!r} is not allowed in the file; secrets come from "
                f"environment variables: {', '.join(sorted(SECRET_ENV))}"
            )
    secrets: dict[str, Any] = {}
    tokens: dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        token_name = name.removeprefix(TOKEN_ENV_PREFIX).lower()
        if name.startswith(TOKEN_ENV_PREFIX) and re.fullmatch(_NAME, token_name):
            if value:
                tokens[token_name] = value
            continue
        field_name = SECRET_ENV.get(name)
        if field_name is None:
            known = ", ".join(sorted([*SECRET_ENV, CONFIG_ENV, TOKEN_ENV_PREFIX + "<NAME>"]))
            raise ConfigError(f"environment: unknown variable {name!r}; known: {known}")
        if value:
            secrets[field_name] = value
    secrets["tokens"] = tokens
    data["secrets"] = secrets
    data["base_dir"] = str(path.resolve().parent)

    try:
        # JSON mode: TOML's data is JSON's (no dates in this file), and strict JSON
        # validation takes enum values and paths as strings while refusing "4318" for
        # an integer or "yes" for a boolean.
        settings = Settings.model_validate_json(json.dumps(data))
    except ValidationError as e:
        raise ConfigError(_describe(e, path, text)) from e
    _check_cross_fields(settings, path, serving=serving)
    return settings


def retention_floor_hours(s: Settings) -> float:
    """The shortest retention the daemon can run with: what the Metric Agent reads back
    each run (its detection window, the longest SLO window, the resolve window, plus two
    steps) and the Learning Agent's lookback before an onset. Telemetry of incidents
    still open is kept anyway (``retention.cutoff``)."""
    det = s.detection
    longest_slo = max((w.long_minutes for slo in s.slo for w in slo.windows), default=0.0)
    metric_minutes = (
        max(det.baseline_minutes + det.recent_minutes, longest_slo, det.resolve_minutes)
        + 2 * det.step_seconds / 60
    )
    return max(metric_minutes, s.learning.lookback_minutes) / 60


def _check_retention(s: Settings, path: Path) -> None:
    floor = retention_floor_hours(s)
    for key in ("spans_hours", "samples_hours"):
        hours = getattr(s.retention, key)
        if 0 < hours < floor:
            raise ConfigError(
                f"{path}: retention.{key} = {hours!r} is shorter than the {floor:.2f} h of "
                "telemetry the daemon still reads (detection.baseline_minutes + "
                "recent_minutes, the longest [[slo]] window, detection.resolve_minutes, "
                "learning.lookback_minutes); raise it, or 0 to keep everything"
            )


def _check_cross_fields(s: Settings, path: Path, *, serving: bool) -> None:
    _check_retention(s, path)
    if serving and s.llm.enabled and not s.llm.base_url and s.secrets.llm_api_key is None:
        raise ConfigError(
            f"{path}: llm.model = {s.llm.model!r} needs the API key in SENTINEL_LLM_API_KEY "
            '(or llm.base_url for a server that needs none; model = "none" turns the LLM off)'
        )
    if serving and s.server.ingest_auth and s.secrets.ingest_token is None:
        raise ConfigError(
            f"{path}: server.ingest_auth = true needs the token in SENTINEL_INGEST_TOKEN"
        )
    if serving and s.server.api_auth and s.secrets.api_token is None:
        raise ConfigError(f"{path}: server.api_auth = true needs the token in SENTINEL_API_TOKEN")
    if serving and not s.server.loopback:
        for group in RouteGroup:
            accepted = s.server.auth.tokens(group)
            if accepted and all(s.secrets.token(n) is None for n in accepted):
                env_names = " or ".join(token_env(n) for n in accepted)
                raise ConfigError(
                    f"{path}: server.host = {s.server.host!r} is not loopback and "
                    f"server.auth.{group.value} = {list(accepted)!r} needs {env_names} in the "
                    f"environment (or server.auth.{group.value} = [] to leave it open)"
                )
    if serving and s.slack.channel:
        needed = {"SENTINEL_SLACK_BOT_TOKEN": s.secrets.slack_bot_token}
        if s.slack.mode is SlackMode.SOCKET:
            needed["SENTINEL_SLACK_APP_TOKEN"] = s.secrets.slack_app_token
        else:
            needed["SENTINEL_SLACK_SIGNING_SECRET"] = s.secrets.slack_signing_secret
        missing = sorted(name for name, value in needed.items() if value is None)
        if missing:
            raise ConfigError(
                f"{path}: slack.channel is set (mode {s.slack.mode.value!r}), which needs "
                f"{', '.join(missing)} in the environment"
            )
    if s.ingest.writer_process and s.store_url in ("sqlite://", "sqlite:///:memory:"):
        raise ConfigError(
            f"{path}: an in-memory SQLite store cannot be shared with the span writer "
            "process: use a file, or set ingest.writer_process = false"
        )
    names = [r.name for r in s.changes.repos]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"{path}: changes.repos: repo names must be unique, got {sorted(dup)}")
    if s.remediation.config_repo and s.remediation.config_repo not in names:
        raise ConfigError(
            f"{path}: remediation.config_repo = {s.remediation.config_repo!r} is not in "
            f"[[changes.repos]] ({sorted(names) or 'none configured'})"
        )
    unknown = sorted(set(s.remediation.allowed_repos) - set(names))
    if unknown:
        raise ConfigError(
            f"{path}: remediation.allowed_repos names {unknown}, which are not in "
            f"[[changes.repos]] ({sorted(names) or 'none configured'})"
        )


def _describe(err: ValidationError, path: Path, text: str) -> str:
    lines = [f"{path}: invalid configuration ({err.error_count()} error(s))"]
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        if loc and loc[0] == "secrets":
            env_name = next((k for k, v in SECRET_ENV.items() if v == loc[-1]), loc[-1])
            lines.append(f"  environment {env_name}: {e['msg']}")
            continue
        key = ".".join(loc)
        where = _line_of(text, loc)
        at = f":{where}" if where else ""
        if e["type"] == "extra_forbidden":
            lines.append(f"  {path}{at}: unknown key {key!r}")
        else:
            lines.append(f"  {path}{at}: {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def _line_of(text: str, loc: list[str]) -> int | None:
    """Best-effort line number of a key path in the TOML text (for error messages)."""
    if not text or not loc:
        return None
    keys = [k for k in loc if not k.isdigit()]
    leaf = keys[-1]
    table = ".".join(keys[:-1])
    in_table = table == ""
    header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*$")
    assign = re.compile(rf"^\s*{re.escape(leaf)}\s*=")
    for i, line in enumerate(text.splitlines(), start=1):
        m = header.match(line)
        if m:
            in_table = m.group(1) == table
            if in_table and table and keys[-1] == m.group(1).split(".")[-1]:
                return i
            continue
        if in_table and assign.match(line):
            return i
    return None


# --- printing the effective config (check-config) ---------------------------------------

MASK = "********"


def effective_config(s: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, secrets masked."""
    data = s.model_dump(mode="json", exclude={"secrets", "base_dir"})
    data["store"]["url"] = mask_url(s.store_url)
    data["secrets (from environment)"] = {
        env: (MASK if getattr(s.secrets, field) is not None else "(unset)")
        for env, field in sorted(SECRET_ENV.items())
    } | {token_env(name): MASK for name in sorted(s.secrets.tokens)}
    return data


def mask_url(url: str) -> str:
    """Hide the password of a URL (``scheme://user:pass@host`` -> ``user:********@``)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", rf"\g<1>{MASK}@", url)


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """A minimal TOML writer for the effective config (scalars, lists, tables)."""
    scalars: list[str] = []
    tables: list[str] = []
    for key, value in data.items():
        name = _toml_key(key)
        full = f"{prefix}.{name}" if prefix else name
        if isinstance(value, Mapping):
            tables.append(f"\n[{full}]\n" + to_toml(value, full))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for item in value:
                tables.append(f"\n[[{full}]]\n" + to_toml(item, full))
        else:
            scalars.append(f"{name} = {_toml_value(value)}")
    body = "\n".join(scalars)
    return body + ("\n" if body else "") + "".join(tables)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return _toml_string(str(v))


def _toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
