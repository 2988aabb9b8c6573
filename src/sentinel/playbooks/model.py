"""The playbook schema: what a ``playbooks/*.yaml`` file may say, as pydantic models.

A playbook names the incidents it fits (``match``), how sure the diagnosis must be for
it to run alone or after an approval (``gates``), what it may never exceed
(``guardrails``), the typed actions it runs (``steps``, a discriminated union on
``action``), how success is judged (``verification``) and how each step is reversed
(``undo``). ``sentinel playbook schema`` exports ``Playbook``'s JSON Schema for editors.

String parameters of actions are templates: ``{{ name }}`` is replaced by a value of the
hypothesis being acted on (``TEMPLATE_VARIABLES``). Substitution is plain text, never a
shell or an expression language: a rendered value reaches git or HTTP as one typed
argument (ARCHITECTURE.md, safety invariant 5).

What must not live here: reading files (``playbooks.loader``), choosing a playbook or a
gate (``sentinel.remediation``), and doing anything (``adapters.executors``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sentinel.cases import FaultKind
from sentinel.errors import PlaybookError
from sentinel.telemetry import SliKind

__all__ = [
    "GIT_ACTIONS",
    "TEMPLATE_VARIABLES",
    "Action",
    "ActionKind",
    "AnyAction",
    "BlastRadius",
    "Escalate",
    "Gates",
    "GitFile",
    "GitopsRollback",
    "Guardrails",
    "Http",
    "HttpCall",
    "HttpMethod",
    "Match",
    "ModelFailover",
    "Notify",
    "Playbook",
    "ShadowMode",
    "TemplateContext",
    "Throttle",
    "UndoStrategy",
    "Verification",
    "render",
    "render_action",
    "step_id",
    "template_strings",
    "template_variables",
]

# Progressive autonomy: act alone only when very sure, ask above this, suggest below.
DEFAULT_AUTO_ABOVE = 0.9
DEFAULT_APPROVE_ABOVE = 0.6

_ID_RE = r"^[a-z0-9][a-z0-9_-]*$"


class _Model(BaseModel):
    # Unknown keys are typos that would silently change what a playbook does.
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- templates ---------------------------------------------------------------------------

# The values a template may use, and what each holds.
TEMPLATE_VARIABLES: Mapping[str, str] = {
    "incident_id": "the incident's id",
    "component": "the hypothesis' component id, e.g. tool:crm_lookup",
    "component_kind": "the kind part of the component id, e.g. tool",
    "component_name": "the name part of the component id, e.g. crm_lookup",
    "fault": "the hypothesised fault kind, e.g. tool_rate_limit",
    "change_id": "the id of the change the hypothesis links (a commit); absent without one",
    "change_repo": "the repository of that change, as named in [[changes.repos]]",
    "change_path": "the file that change touched",
}

_TEMPLATE_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


def template_variables(text: str) -> list[str]:
    """The variable names ``text`` refers to, in order (unknown ones included)."""
    return [m.group(1) for m in _TEMPLATE_RE.finditer(text)]


class TemplateContext(_Model):
    """The values templates are rendered with: one hypothesis of one incident."""

    incident_id: str
    component: str
    fault: str
    change_id: str | None = None
    change_repo: str | None = None
    change_path: str | None = None

    def values(self) -> dict[str, str | None]:
        kind, _, name = self.component.partition(":")
        return {
            "incident_id": self.incident_id,
            "component": self.component,
            "component_kind": kind,
            "component_name": name,
            "fault": self.fault,
            "change_id": self.change_id,
            "change_repo": self.change_repo,
            "change_path": self.change_path,
        }


def render(text: str, ctx: TemplateContext) -> str:
    """``text`` with every ``{{ name }}`` replaced. Raises ``PlaybookError`` naming the
    variable when it is unknown or has no value for this hypothesis."""
    values = ctx.values()

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            raise PlaybookError(
                f"unknown template variable {name!r} in {text!r}; "
                f"known: {', '.join(TEMPLATE_VARIABLES)}"
            )
        value = values[name]
        if value is None:
            raise PlaybookError(
                f"template {text!r} needs {name!r}, which this hypothesis does not have"
            )
        return value

    return _TEMPLATE_RE.sub(sub, text)


def _render_value(value: Any, ctx: TemplateContext) -> Any:
    if isinstance(value, str):
        return render(value, ctx)
    if isinstance(value, list | tuple):
        return [_render_value(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: _render_value(v, ctx) for k, v in value.items()}
    return value


def template_strings(
    value: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every string inside a dumped action, with its path (where templates may be)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from template_strings(v, (*path, i))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from template_strings(v, (*path, k))


# --- actions -----------------------------------------------------------------------------


class ActionKind(StrEnum):
    GITOPS_ROLLBACK = "gitops_rollback"
    THROTTLE = "throttle"
    SHADOW_MODE = "shadow_mode"
    MODEL_FAILOVER = "model_failover"
    HTTP = "http"
    NOTIFY = "notify"
    ESCALATE = "escalate"


class HttpMethod(StrEnum):
    GET = "GET"
    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"
    DELETE = "DELETE"


class GitFile(_Model):
    """A YAML file in a config repository that an action edits, in one commit."""

    repo: str | None = Field(
        default=None,
        min_length=1,
        description="a repository named in [[changes.repos]]; default: remediation.config_repo",
    )
    path: str = Field(min_length=1, description="the YAML file, relative to the repo root")


class HttpCall(_Model):
    """One typed HTTP request (no shell, no free-form command)."""

    method: HttpMethod = HttpMethod.POST
    url: str = Field(pattern=r"^https?://", description="http(s) URL; templates allowed")
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: dict[str, Any] | None = Field(default=None, alias="json")
    expect_status: tuple[int, ...] = Field(
        default=(200, 201, 202, 204), description="statuses that count as success"
    )
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _Action(_Model):
    id: str = Field(
        default="",
        pattern=r"^$|" + _ID_RE,
        description="the step's id (default: its action and position, e.g. rollback-1); "
        "undo entries and idempotency keys refer to it",
    )


class GitopsRollback(_Action):
    """Revert the commit that caused the incident, in a commit citing the incident."""

    action: Literal[ActionKind.GITOPS_ROLLBACK]
    change: str = Field(default="{{ change_id }}", description="the commit to revert")
    repo: str = Field(default="{{ change_repo }}", description="its repository")


class Throttle(_Action):
    """Set a rate limit for a tool, agent or tenant: in a GitOps config file
    (``rate_limits.<target>.requests_per_minute``) or through an HTTP endpoint."""

    action: Literal[ActionKind.THROTTLE]
    target: str = "{{ component }}"
    requests_per_minute: Annotated[float, Field(gt=0)]
    git: GitFile | None = None
    http: HttpCall | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Throttle:
        if (self.git is None) == (self.http is None):
            raise ValueError("throttle needs exactly one of 'git' or 'http'")
        return self


class ShadowMode(_Action):
    """Route a model or prompt version to shadow (``shadow.<target>: true`` in a GitOps
    config file): it keeps receiving copies of traffic, and its answers are not used."""

    action: Literal[ActionKind.SHADOW_MODE]
    target: str = "{{ component }}"
    git: GitFile


class ModelFailover(_Action):
    """Switch agents from a failing model to a fallback in a GitOps config file: every
    ``model: <model>`` value in the file (under ``agents.<agent>`` only, when ``agent``
    is set) becomes ``model: <fallback>``. Without ``fallback``, the file's own
    ``fallbacks.<model>`` names it."""

    action: Literal[ActionKind.MODEL_FAILOVER]
    model: str = "{{ component_name }}"
    fallback: str | None = Field(default=None, min_length=1)
    agent: str | None = None
    git: GitFile


class Http(_Action):
    """A typed webhook call."""

    action: Literal[ActionKind.HTTP]
    call: HttpCall


class Notify(_Action):
    """Tell the people watching the incident (the ticket, or the console)."""

    action: Literal[ActionKind.NOTIFY]
    message: str = Field(min_length=1)


class Escalate(_Action):
    """Hand the incident to a person: notify and page, with the reason."""

    action: Literal[ActionKind.ESCALATE]
    message: str = Field(min_length=1)


AnyAction = GitopsRollback | Throttle | ShadowMode | ModelFailover | Http | Notify | Escalate
Action = Annotated[AnyAction, Field(discriminator="action")]

# Actions that change a git repository: their default undo reverts the commit they made.
GIT_ACTIONS = frozenset(
    {
        ActionKind.GITOPS_ROLLBACK,
        ActionKind.THROTTLE,
        ActionKind.SHADOW_MODE,
        ActionKind.MODEL_FAILOVER,
    }
)
_A = TypeVar("_A", bound=_Action)


def step_id(step: AnyAction, index: int) -> str:
    """The step's id: its own, else ``<action>-<position from 1>``."""
    return step.id or f"{step.action.value.replace('_', '-')}-{index + 1}"


def render_action(step: _A, ctx: TemplateContext) -> _A:
    """The step with every template rendered (same type). Raises ``PlaybookError``."""
    data = step.model_dump(mode="json", by_alias=True)
    return type(step).model_validate(_render_value(data, ctx))


# --- the playbook ------------------------------------------------------------------------


class Match(_Model):
    faults: tuple[FaultKind, ...] = Field(
        min_length=1, description="fault kinds of the hypothesis it fixes"
    )
    components: tuple[str, ...] = Field(
        default=("*",), description="glob patterns of component ids, e.g. 'tool:*'"
    )
    min_confidence: Annotated[float, Field(ge=0, le=1)] = 0.0


class Gates(_Model):
    """Confidence gates. Above ``auto_above``: runs alone (if everything else allows);
    above ``approve_above``: asks a person; below both: a suggestion only."""

    auto_above: Annotated[float, Field(ge=0, le=1)] = DEFAULT_AUTO_ABOVE
    approve_above: Annotated[float, Field(ge=0, le=1)] = DEFAULT_APPROVE_ABOVE
    allow_auto: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> Gates:
        if self.approve_above > self.auto_above:
            raise ValueError(
                f"approve_above ({self.approve_above}) must not exceed auto_above "
                f"({self.auto_above})"
            )
        return self


class BlastRadius(_Model):
    """What the playbook may touch; an action reaching past it is never run alone."""

    components: tuple[str, ...] = Field(default=("*",), description="component id globs")
    repos: tuple[str, ...] = Field(default=(), description="repository names it may change")
    paths: tuple[str, ...] = Field(default=("**",), description="file globs in those repos")


class Guardrails(_Model):
    cooldown_seconds: Annotated[float, Field(ge=0)] = 900.0
    max_runs_per_hour: Annotated[int, Field(ge=1)] = 3
    blast_radius: BlastRadius = BlastRadius()
    dry_run: bool = False


class Verification(_Model):
    """The fix worked when these SLIs of the incident (all of them when empty) are back
    within their baseline for ``hold_minutes``, within ``window_minutes`` of applying."""

    slis: tuple[SliKind, ...] = ()
    window_minutes: Annotated[float, Field(gt=0)] = 10.0
    hold_minutes: Annotated[float, Field(gt=0)] = 3.0

    @model_validator(mode="after")
    def _hold_fits(self) -> Verification:
        if self.hold_minutes > self.window_minutes:
            raise ValueError(
                f"hold_minutes ({self.hold_minutes}) must fit in window_minutes "
                f"({self.window_minutes})"
            )
        return self


class UndoStrategy(StrEnum):
    REVERT = "revert"  # revert the commit the step made (git actions)
    NONE = "none"  # nothing to undo (notify) or irreversible: a failed fix escalates


class Playbook(_Model):
    name: str = Field(pattern=_ID_RE)
    description: str = ""
    match: Match
    gates: Gates = Gates()
    guardrails: Guardrails = Guardrails()
    steps: tuple[Action, ...] = Field(min_length=1)
    verification: Verification = Verification()
    undo: dict[str, UndoStrategy | Action] = Field(
        default_factory=dict,
        description="per step id: 'revert', 'none' or an action; default: revert for git "
        "actions, none for the others",
    )

    @model_validator(mode="after")
    def _undo_names_steps(self) -> Playbook:
        ids = [step_id(s, i) for i, s in enumerate(self.steps)]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"step ids must be unique; repeated: {twice}")
        for key, how in self.undo.items():
            if key not in ids:
                raise ValueError(f"undo names step {key!r}, which is not a step; steps: {ids}")
            step = self.steps[ids.index(key)]
            if how is UndoStrategy.REVERT and step.action not in GIT_ACTIONS:
                raise ValueError(
                    f"undo of step {key!r}: 'revert' needs a git action, not {step.action.value!r}"
                )
        return self

    def step_ids(self) -> list[str]:
        return [step_id(s, i) for i, s in enumerate(self.steps)]

    def undo_of(self, sid: str) -> UndoStrategy | AnyAction:
        """How step ``sid`` is reversed: the playbook's ``undo`` entry, else the default."""
        if sid in self.undo:
            return self.undo[sid]
        step = self.steps[self.step_ids().index(sid)]
        return UndoStrategy.REVERT if step.action in GIT_ACTIONS else UndoStrategy.NONE
