"""Typed configuration: the only reader of ``config.toml`` and of ``SENTINEL_*`` variables.

``load_settings()`` is called once, in the composition root (``daemon.py`` / ``cli.py``),
and the resulting frozen ``Settings`` is passed down. Unknown keys and wrong types are
rejected with the file, the key (and its line when it can be found) and what was
expected. Secrets never come from the file: only from the environment.

The package: ``sections`` (the file's sections), ``detection`` (``[pricing]``,
``[detection]``, ``[[slo]]``), ``load`` (the root ``Settings``, ``load_settings`` and the
checks across sections), ``show`` (the effective configuration, masked). Import from the
package.

What must not live here: building engines, clients or anything else with side effects.
"""

from sentinel.settings.detection import (
    DEFAULT_BURN_WINDOWS,
    DEFAULT_MODEL_PRICES,
    BurnWindow,
    DetectionSettings,
    ModelPrice,
    PricingSettings,
    SloSettings,
)
from sentinel.settings.load import (
    CONFIG_ENV,
    ENV_PREFIX,
    Settings,
    default_config_path,
    load_settings,
    retention_floor_hours,
)
from sentinel.settings.sections import (
    BUILTIN_TOKENS,
    NAME_PATTERN,
    SECRET_ENV,
    TOKEN_ENV_PREFIX,
    ApprovalSettings,
    ChangesSettings,
    ClusterSettings,
    IngestSettings,
    LearningSettings,
    LlmSettings,
    LogFormat,
    LoggingSettings,
    LogLevel,
    PathMapping,
    PrometheusSettings,
    PromQLSli,
    PushMode,
    RedactionPattern,
    RedactionSettings,
    RemediationSettings,
    RepoSettings,
    RetentionSettings,
    RouteAuth,
    RouteGroup,
    Secrets,
    ServerSettings,
    SlackMode,
    SlackSettings,
    StoreSettings,
    TokenNames,
    token_env,
)
from sentinel.settings.show import (
    MASK,
    effective_config,
    mask_url,
    to_toml,
)

__all__ = [
    "BUILTIN_TOKENS",
    "CONFIG_ENV",
    "DEFAULT_BURN_WINDOWS",
    "DEFAULT_MODEL_PRICES",
    "ENV_PREFIX",
    "MASK",
    "NAME_PATTERN",
    "SECRET_ENV",
    "TOKEN_ENV_PREFIX",
    "ApprovalSettings",
    "BurnWindow",
    "ChangesSettings",
    "ClusterSettings",
    "DetectionSettings",
    "IngestSettings",
    "LearningSettings",
    "LlmSettings",
    "LogFormat",
    "LogLevel",
    "LoggingSettings",
    "ModelPrice",
    "PathMapping",
    "PricingSettings",
    "PromQLSli",
    "PrometheusSettings",
    "PushMode",
    "RedactionPattern",
    "RedactionSettings",
    "RemediationSettings",
    "RepoSettings",
    "RetentionSettings",
    "RouteAuth",
    "RouteGroup",
    "Secrets",
    "ServerSettings",
    "Settings",
    "SlackMode",
    "SlackSettings",
    "SloSettings",
    "StoreSettings",
    "TokenNames",
    "default_config_path",
    "effective_config",
    "load_settings",
    "mask_url",
    "retention_floor_hours",
    "to_toml",
    "token_env",
]
