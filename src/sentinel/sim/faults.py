"""Faults the simulator injects: which components each fault kind can hit in a system,
how it changes their behaviour (a ``Mechanism``), when it starts, which change event
caused it, which red-herring changes surround it, and how it is fixed.

What lives here: ``FaultSpec`` (the whole input of a simulated case), ``plan_fault``
(spec to ``FaultPlan``, drawing only from the generator it is given), and ``suite``.

What must not live here: the request simulation (``sim/engine.py``) or telemetry output.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sentinel.cases import FaultKind
from sentinel.sim.topology import (
    AgentNode,
    IndexNode,
    ModelNode,
    ServiceNode,
    System,
    ToolNode,
    Topology,
    name_of,
    system,
)
from sentinel.telemetry import ChangeEvent, ChangeKind, GenAIOperation

DEFAULT_START = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
DEFAULT_MINUTES = 50
MIN_MINUTES = 10


class Magnitude(StrEnum):
    STRONG = "strong"
    SUBTLE = "subtle"


class Onset(StrEnum):
    ABRUPT = "abrupt"
    RAMPED = "ramped"


class Remediation(StrEnum):
    GITOPS_ROLLBACK = "gitops_rollback"
    THROTTLE = "throttle"
    MODEL_FAILOVER = "model_failover"
    ESCALATE = "escalate"


class ToolStatus(StrEnum):
    """The ``status`` label of ``gen_ai_tool_calls_total``."""

    OK = "ok"
    ERROR = "error"
    INVALID = "invalid"
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"


class Effect(StrEnum):
    """What a fault does to its target's SLIs, for tests and benchmarks to check."""

    ERRORS = "errors"
    LATENCY = "latency"
    QUALITY = "quality"  # evaluator scores
    COST = "cost"  # steps and tokens per run
    SATURATION = "saturation"  # cpu / memory, then latency, errors, restarts


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """One way a call fails, as its span and metrics show it."""

    type: str
    http: int | None = None
    tool_status: ToolStatus = ToolStatus.ERROR
    message: str = ""


MODEL_ERRORS = (
    ErrorSpec("RateLimitError", 429, ToolStatus.RATE_LIMITED),
    ErrorSpec("InternalServerError", 500),
    ErrorSpec("ServiceUnavailableError", 503),
    ErrorSpec("OverloadedError", 529),
)
TOOL_ERRORS = (
    ErrorSpec("ToolExecutionError"),
    ErrorSpec("TimeoutError", tool_status=ToolStatus.TIMEOUT),
)
SERVICE_ERRORS = (ErrorSpec("500", 500), ErrorSpec("503", 503), ErrorSpec("504", 504))
AGENT_ERRORS = (
    ErrorSpec("OutputParserException"),
    ErrorSpec("InvalidToolCall", tool_status=ToolStatus.INVALID),
    ErrorSpec("GuardrailTriggered"),
)
INDEX_ERRORS = (ErrorSpec("UnexpectedResponse", 503),)
DB_ERRORS = (ErrorSpec("timeout"),)
RATE_LIMITED = ErrorSpec("RateLimitError", 429, ToolStatus.RATE_LIMITED)
INVALID_TOOL_CALL = ErrorSpec("InvalidToolCall", tool_status=ToolStatus.INVALID)
HTTP_STATUS_ERROR = ErrorSpec("HTTPStatusError")
CONTEXT_WINDOW = ErrorSpec("ContextWindowExceededError")
MAX_TURNS = ErrorSpec("MaxTurnsExceeded")
UNAVAILABLE = ErrorSpec("503", 503)


@dataclass(frozen=True, slots=True)
class Mechanism:
    """How a fault changes its target at full intensity (``level`` 1). Callers feel it
    through the call graph: slower or failed calls slow down or fail their callers."""

    effect: Effect
    latency_mult: float = 1.0  # own latency
    latency_add: float = 0.0  # seconds added to the own latency
    error_rate: float = 0.0
    errors: tuple[ErrorSpec, ...] = ()
    retries: bool = False  # rate limiting: the client retries with backoff
    score_drop: float = 0.0  # evaluator score lost by runs that touch the target
    tokens_mult: float = 1.0  # output tokens of the target's model calls
    extra_steps: float = 0.0  # tool steps added to the target agent's runs
    rows_mult: float = 1.0  # retrieval results returned by the target index
    leak: bool = False  # memory grows to the limit: latency, errors, OOM restarts


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """Everything a simulated case is a pure function of."""

    topology: Topology
    fault: FaultKind
    seed: int
    magnitude: Magnitude = Magnitude.STRONG
    onset: Onset = Onset.ABRUPT
    minutes: int = DEFAULT_MINUTES
    start: datetime = field(default=DEFAULT_START)
    # Share of traces exported (head sampling); None: the topology's own, as a production
    # fleet would sample. 1.0 gives a live run full traces, for a daemon without metrics.
    sample_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.sample_ratio is not None and not 0.0 <= self.sample_ratio <= 1.0:
            raise ValueError(f"sample_ratio must be in [0, 1], got {self.sample_ratio!r}")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """A spec resolved against its system: which component, what, when, and why."""

    spec: FaultSpec
    system: System
    root: str  # the truth's root cause (may be prompt:/config:, outside the call graph)
    target: str  # the node of the call graph whose behaviour changes
    fault_start: float  # seconds after spec.start
    ramp: float  # seconds to full intensity (0: abrupt)
    mechanism: Mechanism
    change: ChangeEvent | None
    red_herrings: tuple[ChangeEvent, ...]
    remediation: Remediation

    @property
    def duration(self) -> float:
        return self.spec.minutes * 60.0

    def level(self, t: float) -> float:
        """The fault's intensity in [0, 1] at ``t`` seconds after the start."""
        if t < self.fault_start:
            return 0.0
        if self.ramp <= 0:
            return 1.0
        return min(1.0, (t - self.fault_start) / self.ramp)

    @property
    def changes(self) -> tuple[ChangeEvent, ...]:
        found = (*self.red_herrings, *((self.change,) if self.change else ()))
        return tuple(sorted(found, key=lambda c: (c.time, c.id)))


def candidates(sys_: System, fault: FaultKind) -> tuple[str, ...]:
    """The call-graph nodes ``fault`` can hit in ``sys_`` (its targets)."""
    services = tuple(
        k for k in sys_.of_type(ServiceNode) if not _service(sys_, k).external and sys_.callers(k)
    )
    match fault:
        case FaultKind.PROMPT_REGRESSION | FaultKind.AGENT_LOOP:
            return sys_.of_type(AgentNode)
        case FaultKind.MODEL_VERSION_CHANGE:
            return tuple(
                k
                for k in sys_.of_type(ModelNode)
                if _model(sys_, k).operation is GenAIOperation.CHAT
            )
        case FaultKind.MODEL_PROVIDER_LATENCY | FaultKind.MODEL_PROVIDER_ERRORS:
            return sys_.of_type(ModelNode)
        case (
            FaultKind.TOOL_RATE_LIMIT
            | FaultKind.TOOL_LATENCY
            | FaultKind.TOOL_ERRORS
            | FaultKind.TOOL_SCHEMA_CHANGE
        ):
            return sys_.of_type(ToolNode)
        case FaultKind.RETRIEVAL_DEGRADATION:
            return sys_.of_type(IndexNode)
        case FaultKind.CONFIG_CHANGE:
            return sys_.of_type(AgentNode) + services
        case FaultKind.SERVICE_LATENCY | FaultKind.SERVICE_ERRORS | FaultKind.RESOURCE_EXHAUSTION:
            return services


def fits(topology: Topology, fault: FaultKind) -> bool:
    """Whether ``fault`` can happen in ``topology``."""
    return bool(candidates(system(topology), fault))


def _service(sys_: System, k: str) -> ServiceNode:
    n = sys_.node(k)
    assert isinstance(n, ServiceNode)
    return n


def _model(sys_: System, k: str) -> ModelNode:
    n = sys_.node(k)
    assert isinstance(n, ModelNode)
    return n


_CHANGE_CAUSED = frozenset(
    {
        FaultKind.PROMPT_REGRESSION,
        FaultKind.MODEL_VERSION_CHANGE,
        FaultKind.TOOL_SCHEMA_CHANGE,
        FaultKind.CONFIG_CHANGE,
    }
)


def remediation_for(fault: FaultKind) -> Remediation:
    if fault in _CHANGE_CAUSED:
        return Remediation.GITOPS_ROLLBACK
    if fault is FaultKind.TOOL_RATE_LIMIT:
        return Remediation.THROTTLE
    if fault in (FaultKind.MODEL_PROVIDER_ERRORS, FaultKind.MODEL_PROVIDER_LATENCY):
        return Remediation.MODEL_FAILOVER
    return Remediation.ESCALATE


# A subtle error fault leaves at least this many failed calls, on average, in its first
# ten minutes at full intensity: on a tool called four times a minute, 7 % errors is
# one failure every three minutes, which no detector can tell from chance (see
# docs/performance.md, "How the suite is calibrated").
SUBTLE_MIN_ERRORS_PER_10_MIN = 15.0


def _mechanism(
    fault: FaultKind, target: str, strong: bool, rng: random.Random, calls_per_second: float
) -> Mechanism:
    """What the fault does. Subtle values are the weakest a detector on default settings
    is meant to catch: after the +-15 % jitter, at least the minimum effect of the SLI
    they move (``DetectionSettings``: latency x1.5, score -0.05, error rate +0.05 and
    x2), and an error rate that leaves ``SUBTLE_MIN_ERRORS_PER_10_MIN`` failures."""
    s = 1.0 if strong else 0.0  # picks the strong or the subtle value below

    def pick(hi: float, lo: float) -> float:
        return (hi if s else lo) * rng.uniform(0.85, 1.15)

    def errors_pick(hi: float, lo: float) -> float:
        value = pick(hi, lo)
        if s or calls_per_second <= 0:
            return value
        return min(hi, max(value, SUBTLE_MIN_ERRORS_PER_10_MIN / (calls_per_second * 600.0)))

    match fault:
        case FaultKind.PROMPT_REGRESSION:
            return Mechanism(
                Effect.QUALITY,
                score_drop=pick(0.28, 0.09),
                tokens_mult=pick(1.6, 1.2),
                error_rate=pick(0.03, 0.008),
                errors=(ErrorSpec("OutputParserException"), ErrorSpec("GuardrailTriggered")),
            )
        case FaultKind.MODEL_VERSION_CHANGE:
            return Mechanism(
                Effect.QUALITY,
                latency_mult=pick(1.8, 1.25),
                tokens_mult=pick(1.45, 1.15),
                score_drop=pick(0.16, 0.08),
            )
        case FaultKind.MODEL_PROVIDER_LATENCY:
            return Mechanism(Effect.LATENCY, latency_mult=pick(3.5, 2.0))
        case FaultKind.MODEL_PROVIDER_ERRORS:
            return Mechanism(Effect.ERRORS, error_rate=errors_pick(0.35, 0.08), errors=MODEL_ERRORS)
        case FaultKind.TOOL_RATE_LIMIT:
            return Mechanism(
                Effect.ERRORS, error_rate=pick(0.6, 0.3), errors=(RATE_LIMITED,), retries=True
            )
        case FaultKind.TOOL_LATENCY:
            return Mechanism(Effect.LATENCY, latency_add=pick(2.5, 0.7))
        case FaultKind.TOOL_ERRORS:
            return Mechanism(Effect.ERRORS, error_rate=errors_pick(0.3, 0.07), errors=TOOL_ERRORS)
        case FaultKind.TOOL_SCHEMA_CHANGE:
            return Mechanism(
                Effect.ERRORS, error_rate=errors_pick(0.4, 0.1), errors=(INVALID_TOOL_CALL,)
            )
        case FaultKind.RETRIEVAL_DEGRADATION:
            return Mechanism(Effect.QUALITY, rows_mult=pick(0.25, 0.6), score_drop=pick(0.35, 0.12))
        case FaultKind.AGENT_LOOP:
            return Mechanism(Effect.COST, extra_steps=pick(6.0, 2.5))
        case FaultKind.CONFIG_CHANGE:
            agent = target.startswith("agent:")
            if rng.random() < 0.5:
                errors = AGENT_ERRORS if agent else SERVICE_ERRORS
                return Mechanism(Effect.ERRORS, error_rate=errors_pick(0.3, 0.07), errors=errors)
            if agent:  # e.g. max_tokens raised: longer answers, slower runs
                return Mechanism(Effect.LATENCY, tokens_mult=pick(3.0, 1.6))
            return Mechanism(Effect.LATENCY, latency_mult=pick(8.0, 2.2))
        case FaultKind.SERVICE_LATENCY:
            return Mechanism(Effect.LATENCY, latency_mult=pick(8.0, 2.2))
        case FaultKind.SERVICE_ERRORS:
            return Mechanism(
                Effect.ERRORS, error_rate=errors_pick(0.3, 0.06), errors=SERVICE_ERRORS
            )
        case FaultKind.RESOURCE_EXHAUSTION:
            return Mechanism(
                Effect.SATURATION,
                leak=True,
                latency_mult=pick(5.0, 2.0),
                error_rate=pick(0.25, 0.06),
                errors=SERVICE_ERRORS,
            )


_AUTHORS = ("dana", "ken", "li", "sofia", "omar", "priya")


def _change_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(28):07x}"


def _at(spec: FaultSpec, seconds: float) -> datetime:
    return spec.start + timedelta(seconds=int(seconds))


def _root_change(
    plan_sys: System, spec: FaultSpec, root: str, target: str, when: float, rng: random.Random
) -> ChangeEvent | None:
    if spec.fault not in _CHANGE_CAUSED:
        return None
    name = name_of(target)
    users = tuple(plan_sys.callers(target))
    common = {"id": _change_id(rng), "time": _at(spec, when), "author": rng.choice(_AUTHORS)}
    match spec.fault:
        case FaultKind.PROMPT_REGRESSION:
            summary = rng.choice(
                ("add safety reminder", "tighten refund wording", "shorten system prompt")
            )
            return ChangeEvent(
                **common,
                component=root,
                affects=(target,),
                kind=ChangeKind.PROMPT,
                summary=summary,
                repo="agent-config",
                path=f"prompts/{name}/system.md",
            )
        case FaultKind.MODEL_VERSION_CHANGE:
            return ChangeEvent(
                **common,
                component=root,
                affects=(target, *users),
                kind=ChangeKind.MODEL,
                summary=f"pin {name} to the latest snapshot",
                repo="agent-config",
                path="models.yaml",
            )
        case FaultKind.TOOL_SCHEMA_CHANGE:
            return ChangeEvent(
                **common,
                component=root,
                affects=(target, *users),
                kind=ChangeKind.DEPLOY,
                summary=f"{name}: rename argument customer_id -> account_id",
                repo="agent-tools",
                path=f"tools/{name}/schema.json",
            )
        case _:
            kind_dir = "agents" if target.startswith("agent:") else "services"
            return ChangeEvent(
                **common,
                component=root,
                affects=(target,),
                kind=ChangeKind.CONFIG,
                summary=rng.choice(
                    ("update feature flag defaults", "tune timeouts", "raise max_tokens")
                ),
                repo="agent-config" if kind_dir == "agents" else "platform-config",
                path=f"{kind_dir}/{name}/config.yaml",
            )


def _red_herrings(
    sys_: System, spec: FaultSpec, root: str, target: str, when: float, rng: random.Random
) -> tuple[ChangeEvent, ...]:
    """1-3 harmless changes near the fault, on other components."""
    options: list[tuple[str, str]] = []  # (kind, component)
    for k, n in sys_.nodes.items():
        if k == target:
            continue
        if isinstance(n, ServiceNode) and not n.external:
            options += [("deploy", k), ("config", k)]
        elif isinstance(n, AgentNode):
            options += [("prompt", k), ("config", k)]
    out: list[ChangeEvent] = []
    duration = spec.minutes * 60.0
    for kind, comp in rng.sample(options, k=min(len(options), rng.randint(1, 3))):
        name = name_of(comp)
        t = min(duration - 30, max(30.0, when + rng.uniform(-720, 240)))
        if abs(t - when) < 20:
            t = when - 20 - rng.uniform(0, 60)
        common = {"id": _change_id(rng), "time": _at(spec, t), "author": rng.choice(_AUTHORS)}
        if kind == "deploy":
            svc = sys_.node(comp)
            assert isinstance(svc, ServiceNode)
            new = _bump(svc.version, rng)
            out.append(
                ChangeEvent(
                    **common,
                    component=comp,
                    affects=(comp,),
                    kind=ChangeKind.DEPLOY,
                    summary=f"deploy {name} {svc.version} -> {new}",
                    repo="platform-deploys",
                    path=f"apps/{name}/values.yaml",
                    version=new,
                )
            )
        elif kind == "prompt":
            out.append(
                ChangeEvent(
                    **common,
                    component=f"prompt:{name}",
                    affects=(comp,),
                    kind=ChangeKind.PROMPT,
                    summary=rng.choice(("fix typo in greeting", "reword escalation hint")),
                    repo="agent-config",
                    path=f"prompts/{name}/system.md",
                )
            )
        else:
            agent = comp.startswith("agent:")
            out.append(
                ChangeEvent(
                    **common,
                    component=f"config:{name}",
                    affects=(comp,),
                    kind=ChangeKind.CONFIG,
                    summary=rng.choice(("tune retry jitter", "update feature flag defaults")),
                    repo="agent-config" if agent else "platform-config",
                    path=f"{'agents' if agent else 'services'}/{name}/config.yaml",
                )
            )
    return tuple(c for c in out if c.component != root)


def _bump(version: str, rng: random.Random) -> str:
    parts = version.lstrip("v").split(".")
    if not all(p.isdigit() for p in parts):
        return version + "-1"
    nums = [int(p) for p in parts]
    nums[-1] += rng.randint(1, 3)
    return ".".join(str(n) for n in nums)


def plan_fault(spec: FaultSpec, rng: random.Random) -> FaultPlan:
    """Resolve ``spec``: pick the target (by ``rng``), its mechanism, onset and changes.

    Raises ``ValueError`` naming the topology and fault when the fault does not fit.
    """
    if spec.minutes < MIN_MINUTES:
        raise ValueError(f"minutes={spec.minutes!r}: a case needs at least {MIN_MINUTES}")
    if spec.start.tzinfo is None:
        raise ValueError(f"start {spec.start.isoformat()!r} has no timezone")
    sys_ = system(spec.topology)
    if spec.sample_ratio is not None:
        sys_ = replace(sys_, sample_ratio=spec.sample_ratio)
    options = candidates(sys_, spec.fault)
    if not options:
        raise ValueError(
            f"fault {spec.fault.value!r} does not fit topology {spec.topology.value!r}: "
            f"it has no component such a fault can hit"
        )
    target = rng.choice(options)
    root = target
    if spec.fault is FaultKind.PROMPT_REGRESSION:
        root = f"prompt:{name_of(target)}"
    elif spec.fault is FaultKind.CONFIG_CHANGE:
        root = f"config:{name_of(target)}"
    duration = spec.minutes * 60.0
    before_end = min(rng.uniform(15 * 60, 25 * 60), duration * 0.45)
    fault_start = float(int(duration - before_end))
    ramp = rng.uniform(180, 480) if spec.onset is Onset.RAMPED else 0.0
    mechanism = _mechanism(
        spec.fault,
        target,
        spec.magnitude is Magnitude.STRONG,
        rng,
        sys_.calls_per_second()[target],
    )
    change = _root_change(sys_, spec, root, target, fault_start - rng.uniform(10, 90), rng)
    herrings = _red_herrings(sys_, spec, root, target, fault_start, rng)
    return FaultPlan(
        spec=spec,
        system=sys_,
        root=root,
        target=target,
        fault_start=fault_start,
        ramp=ramp,
        mechanism=mechanism,
        change=change,
        red_herrings=herrings,
        remediation=remediation_for(spec.fault),
    )


def suite(n_cases: int, seed: int) -> Iterator[FaultSpec]:
    """``n_cases`` specs for a benchmark: every fault kind in turn (each on a topology it
    fits, rotating), difficulty cycling through strong/subtle and abrupt/ramped."""
    rng = random.Random(seed)  # noqa: S311  (simulation, not cryptography)
    fitting = {f: [t for t in Topology if fits(t, f)] for f in FaultKind}
    difficulties = [(m, o) for m in Magnitude for o in Onset]
    faults = list(FaultKind)
    for i in range(n_cases):
        fault = faults[i % len(faults)]
        if i % len(faults) == 0:
            rng.shuffle(faults)
            fault = faults[0]
        tops = fitting[fault]
        magnitude, onset = difficulties[(i // len(faults) + i) % len(difficulties)]
        yield FaultSpec(
            topology=tops[(i // len(faults) + rng.randrange(len(tops))) % len(tops)],
            fault=fault,
            seed=rng.randrange(2**31),
            magnitude=magnitude,
            onset=onset,
        )
