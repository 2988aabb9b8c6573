"""The sections of the configuration file, one frozen model each (``[server]``,
``[ingest]``, ``[store]``, ``[cluster]``, ``[prometheus]``, ``[changes]``,
``[remediation]``, ``[slack]``, ``[approvals]``, ``[learning]``, ``[retention]``,
``[llm]``, ``[logging]``, ``[redaction]``), with the checks of their own fields.

What must not live here: detection's sections (``settings.detection``), reading the file
or the environment and the checks across sections (``settings.load``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from sentinel.redact import DEFAULT_CONTENT_PREFIXES, check_pattern
from sentinel.telemetry import ChangeKind, ComponentId, SliKind


class Section(BaseModel):
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


NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
# Built-in token names and their variables; any other name N reads SENTINEL_TOKEN_<N>.
BUILTIN_TOKENS: Mapping[str, str] = {
    "ingest": "SENTINEL_INGEST_TOKEN",
    "api": "SENTINEL_API_TOKEN",
}
TOKEN_ENV_PREFIX = "SENTINEL_TOKEN_"  # noqa: S105  # a prefix, not a secret


def token_env(name: str) -> str:
    """The environment variable holding the bearer token called ``name``."""
    return BUILTIN_TOKENS.get(name) or TOKEN_ENV_PREFIX + name.upper()


TokenNames = tuple[Annotated[str, Field(pattern=NAME_PATTERN)], ...]


class RouteAuth(Section):
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


class ServerSettings(Section):
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


class RedactionPattern(Section):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    regex: Annotated[str, Field(min_length=1)]

    @model_validator(mode="after")
    def _valid(self) -> RedactionPattern:
        why = check_pattern(self.name, self.regex)
        if why is not None:
            raise ValueError(f"redaction pattern {self.name!r} = {self.regex!r}: {why}")
        return self


class RedactionSettings(Section):
    """PII and secrets replaced by ``[REDACTED:<kind>]`` before prompts and messages are
    stored (``sentinel.redact``)."""

    enabled: bool = True
    # Attribute keys (prefixes) holding prompts and messages; [""] covers every attribute.
    content_prefixes: tuple[str, ...] = DEFAULT_CONTENT_PREFIXES
    patterns: tuple[RedactionPattern, ...] = ()


class IngestSettings(Section):
    max_body_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    queue_max_spans: Annotated[int, Field(ge=1)] = 262_144
    write_batch_spans: Annotated[int, Field(ge=1)] = 16_384
    retry_after_seconds: Annotated[int, Field(ge=1)] = 2
    ack_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    writer_process: bool = True


class StoreSettings(Section):
    url: str = "sqlite:///.sentinel/sentinel.db"
    auto_migrate: bool = True

    @field_validator("url")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if not (v.startswith("sqlite://") or v.startswith("postgresql")):
            raise ValueError("expected a 'sqlite:///PATH' or 'postgresql+psycopg://...' URL")
        return v


class ClusterSettings(Section):
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


class PromQLSli(Section):
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


class PrometheusSettings(Section):
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


class PathMapping(Section):
    glob: str = Field(min_length=1)
    component: ComponentId
    affects: tuple[ComponentId, ...] = ()
    kind: ChangeKind = ChangeKind.CONFIG


class RepoSettings(Section):
    # The name becomes a folder under changes.workdir: no separators, no "..".
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    url: str = Field(min_length=1)
    branch: str = "main"
    paths: tuple[PathMapping, ...] = ()


class ChangesSettings(Section):
    poll_seconds: Annotated[float, Field(gt=0)] = 30.0
    # On first sight of a repo, report the commits of this many hours before now.
    initial_lookback_hours: Annotated[float, Field(ge=0)] = 24.0
    workdir: str = ".sentinel/repos"
    repos: tuple[RepoSettings, ...] = ()


class PushMode(StrEnum):
    """Where a GitOps action's commit goes."""

    BRANCH = "branch"  # pushed to the repository's configured branch: live at once
    REVIEW = "review"  # a new branch sentinel/<incident>-<playbook>-<step>, for review


class RemediationSettings(Section):
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


class SlackSettings(Section):
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


class ApprovalSettings(Section):
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


class LearningSettings(Section):
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


class RetentionSettings(Section):
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


class LlmSettings(Section):
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


class LoggingSettings(Section):
    level: LogLevel = LogLevel.INFO
    format: LogFormat = LogFormat.JSON


class Secrets(Section):
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
