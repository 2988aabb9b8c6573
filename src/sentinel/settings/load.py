"""The root ``Settings`` and ``load_settings``: the file read as TOML, the ``SENTINEL_*``
variables (secrets and named tokens) merged in, everything validated strictly, then the
checks across sections. Errors name the file, the key and its line.

What must not live here: the sections' own fields (``sections``, ``detection``).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError, field_validator

from sentinel.errors import ConfigError
from sentinel.settings.detection import DetectionSettings, PricingSettings, SloSettings
from sentinel.settings.sections import (
    NAME_PATTERN,
    SECRET_ENV,
    TOKEN_ENV_PREFIX,
    ApprovalSettings,
    ChangesSettings,
    ClusterSettings,
    IngestSettings,
    LearningSettings,
    LlmSettings,
    LoggingSettings,
    PrometheusSettings,
    RedactionSettings,
    RemediationSettings,
    RetentionSettings,
    RouteGroup,
    Secrets,
    Section,
    ServerSettings,
    SlackMode,
    SlackSettings,
    StoreSettings,
    token_env,
)

ENV_PREFIX = "SENTINEL_"
CONFIG_ENV = "SENTINEL_CONFIG"


class Settings(Section):
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
    here = Path(__file__).resolve().parents[3] / "config.toml"
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
        if name.startswith(TOKEN_ENV_PREFIX) and re.fullmatch(NAME_PATTERN, token_name):
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
        max(det.reach_minutes, longest_slo, det.resolve_minutes) + 2 * det.step_seconds / 60
    )
    return max(metric_minutes, s.learning.lookback_minutes) / 60


def _check_retention(s: Settings, path: Path) -> None:
    floor = retention_floor_hours(s)
    for key in ("spans_hours", "samples_hours"):
        hours = getattr(s.retention, key)
        if 0 < hours < floor:
            raise ConfigError(
                f"{path}: retention.{key} = {hours!r} is shorter than the {floor:.2f} h of "
                "telemetry the daemon still reads (detection.baseline_minutes + the longer "
                "of recent_minutes and coarse_recent_minutes, the longest [[slo]] window, "
                "detection.resolve_minutes, "
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
