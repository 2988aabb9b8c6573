"""An incident's failing agent runs as a pydantic-evals ``Dataset``: a regression suite
to replay against the agent once it is fixed (``sentinel export-evals``).

A *run* is the span tree of one ``invoke_agent`` span. The runs judged are those of
the incident's agents (its anomalies' ``agent:`` components; every agent when none is
one) that started between the incident's onset and its end. A run is *failing* when it
errored (its span has an ``error.type``), or when one of its evaluator scores
(``gen_ai.evaluation.result`` events) is below the evaluator's minimum:

- the evaluator's baseline is its scores on the same agent's runs in the ``lookback``
  before the onset: ``median``, and ``minimum = median - max(3 * sigma, 5% of |median|)``
  with ``sigma`` the robust standard deviation (1.4826 x MAD). A healthy run falls below
  it about once in a few hundred: what is below it is worse than the agent's normal,
  not its ordinary spread;
- with fewer than ``MIN_BASELINE_SCORES`` scores before the onset, an evaluator whose
  score the incident found anomalous gets the anomaly's baseline as ``median`` and the
  point halfway to what the incident observed as ``minimum``; any other is not judged.

Each failing run becomes one ``Case``:

- ``inputs`` (``RunInputs``): the agent's name, the trace id, the prompt (the user's
  message or the model's input) when the spans record content (``gen_ai.input.messages``,
  ``gen_ai.prompt`` and its indexed form, ``input.value``, a ``gen_ai.user.message``
  event: instrumentations record content only when told to), else None; and the request
  attributes of the run's span (``gen_ai.request.*``, ``gen_ai.agent.*``,
  ``gen_ai.conversation.id``, the provider) and of the trace's entry span (HTTP method,
  route and path; RPC method). The simulator records no content: its cases carry the
  agent, the trace id and those attributes;
- ``metadata`` (``RunMetadata``): the trace, span, agent, service and time, the bad
  output (``RunOutput``: error, status message, evaluator scores, the answer when
  recorded), the baselines, why the run was picked, the errors in its span tree, and the
  incident's anomalies of that agent;
- the expectation, as evaluators: ``RunSucceeded`` (every case: no error) and one
  ``ScoreAtLeast(evaluator, minimum)`` per evaluator that scored the run and has a
  baseline. ``expected_output`` is left empty: what a good answer says is not known,
  only that it must not fail and must score as the agent normally does.

The two evaluators are dataclasses importable by name, so a dataset written here loads
with ``Dataset.from_file(path, custom_evaluator_types=EVALUATORS)`` (``load_dataset``).
They read the task's output as a ``RunOutput`` (or a dict of its fields).

What must not live here: reading the store or files other than the dataset written
(``sentinel.cli_learn``), detection, the span mapping (``sentinel.telemetry``).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_evals import Case, Dataset
from pydantic_evals.evaluators import EvaluationReason, Evaluator, EvaluatorContext

from sentinel.detection import Anomaly
from sentinel.incidents import TrackedIncident
from sentinel.telemetry import (
    MODEL_OPERATIONS,
    AwareDatetime,
    GenAIOperation,
    SliKind,
    Span,
    SpanEvent,
)

__all__ = [
    "EVALUATORS",
    "MAX_CASES",
    "MIN_BASELINE_SCORES",
    "BaselineSource",
    "EvaluatorBaseline",
    "Export",
    "RunDataset",
    "RunInputs",
    "RunMetadata",
    "RunOutput",
    "RunSucceeded",
    "ScoreAtLeast",
    "as_run_output",
    "evaluator_baselines",
    "export_incident",
    "load_dataset",
    "write_dataset",
]

# At most this many cases per export, the earliest runs first.
MAX_CASES = 500
# Scores before the onset needed for a baseline of their own.
MIN_BASELINE_SCORES = 10
# How far below the median a score must fall to fail: in robust standard deviations,
# and at least this share of the median (a near-constant evaluator has a tiny spread).
SIGMAS = 3.0
MIN_DROP_SHARE = 0.05
_MAD_TO_SIGMA = 1.4826
_DIGITS = 4  # of a baseline: evaluators report scores to a few decimals

_AGENT = "agent:"
# Attributes that hold content, newest convention first: GenAI semantic conventions
# (gen_ai.input.messages; gen_ai.prompt before), OpenInference (input.value), and
# pydantic-ai's agent run span (final_result).
_PROMPT_KEYS = ("gen_ai.input.messages", "gen_ai.prompt", "input.value")
_ANSWER_KEYS = ("gen_ai.output.messages", "gen_ai.completion", "final_result", "output.value")
# OpenLLMetry's indexed form: gen_ai.prompt.0.content, gen_ai.completion.0.content.
_PROMPT_INDEXED = "gen_ai.prompt"
_ANSWER_INDEXED = "gen_ai.completion"
# Span events of the older GenAI conventions.
_PROMPT_EVENTS = ("gen_ai.user.message",)
_ANSWER_EVENTS = ("gen_ai.choice",)
_EVENT_CONTENT_KEYS = ("content", "message")
# Request attributes of the run's span, and of the trace's entry span.
_REQUEST_PREFIXES = (
    "gen_ai.request.",
    "gen_ai.agent.",
    "gen_ai.conversation.",
    "gen_ai.provider.",
    "gen_ai.system",
)
_ENTRY_KEYS = (
    "http.request.method",
    "http.route",
    "url.path",
    "rpc.service",
    "rpc.method",
    "messaging.destination.name",
)
_CLIP = 4_000  # characters of prompt or answer kept per case

AttrScalar = str | bool | int | float
_FROZEN = ConfigDict(frozen=True, extra="forbid")


class RunInputs(BaseModel):
    """What a failing run was asked (see the module docstring for what spans give)."""

    model_config = _FROZEN

    agent: str  # gen_ai.agent.name (the component's name when absent)
    trace_id: str
    prompt: str | None = None  # None: the spans record no content
    request: dict[str, AttrScalar | list[AttrScalar]] = Field(default_factory=dict)


class RunOutput(BaseModel):
    """What a run gave: its error (None: it succeeded), status message, evaluator scores
    and answer (None when not recorded). A task replaying the agent returns one (or a
    dict of these fields); unknown fields are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    error: str | None = None
    message: str = ""
    scores: dict[str, float] = Field(default_factory=dict)
    answer: str | None = None


class BaselineSource(StrEnum):
    BEFORE_ONSET = "before_onset"  # the agent's scores before the incident
    ANOMALY = "anomaly"  # the incident's anomaly of the evaluator (too few scores)


class EvaluatorBaseline(BaseModel):
    """An evaluator's normal on one agent: ``median``, the ``minimum`` a healthy run
    scores, and the ``n`` scores it rests on (0 from an anomaly)."""

    model_config = _FROZEN

    median: float
    minimum: float
    n: Annotated[int, Field(ge=0)]
    source: BaselineSource


class RunMetadata(BaseModel):
    """Where a failing run is in the telemetry, what it gave, and why it was picked."""

    model_config = _FROZEN

    incident: str
    trace_id: str
    span_id: str
    agent: str  # the component id, agent:NAME
    service: str
    time: AwareDatetime  # when the run started
    duration_ms: float
    steps: int  # model and tool calls in its span tree
    input_tokens: int | None = None
    output_tokens: int | None = None
    bad_output: RunOutput
    baselines: dict[str, EvaluatorBaseline] = Field(default_factory=dict)
    why: tuple[str, ...]  # "error 'timeout'", "goal_completion 0.41 < minimum 0.7"
    errors: tuple[str, ...] = ()  # failed spans of its tree, first first
    incident_slis: tuple[str, ...] = ()  # the incident's anomalies of this agent


def as_run_output(value: object) -> RunOutput | None:
    """A task's output as a ``RunOutput``: itself, a mapping of its fields, else None."""
    if isinstance(value, RunOutput):
        return value
    if isinstance(value, Mapping):
        try:
            return RunOutput.model_validate(dict(value))
        except ValidationError:
            return None
    return None


@dataclass(repr=False)
class RunSucceeded(Evaluator[object, object, object]):
    """Passes when the task's output is a ``RunOutput`` without an error."""

    def evaluate(self, ctx: EvaluatorContext[object, object, object]) -> EvaluationReason:
        out = as_run_output(ctx.output)
        if out is None:
            return EvaluationReason(
                value=False, reason=f"not a run output: {_short(repr(ctx.output), 120)}"
            )
        if out.error is None:
            return EvaluationReason(value=True)
        said = f": {out.message}" if out.message else ""
        return EvaluationReason(value=False, reason=f"the run failed with {out.error!r}{said}")

    def get_default_evaluation_name(self) -> str:
        return "no_error"


@dataclass(repr=False)
class ScoreAtLeast(Evaluator[object, object, object]):
    """Passes when the output's score of ``evaluator`` is at least ``minimum``; an
    output without that score fails (the case asks for it)."""

    evaluator: str
    minimum: float

    def evaluate(self, ctx: EvaluatorContext[object, object, object]) -> EvaluationReason:
        out = as_run_output(ctx.output)
        if out is None:
            return EvaluationReason(
                value=False, reason=f"not a run output: {_short(repr(ctx.output), 120)}"
            )
        score = out.scores.get(self.evaluator)
        if score is None:
            return EvaluationReason(value=False, reason=f"no {self.evaluator!r} score")
        if score >= self.minimum:
            return EvaluationReason(value=True)
        return EvaluationReason(
            value=False, reason=f"{self.evaluator} {score:g} < minimum {self.minimum:g}"
        )

    def get_default_evaluation_name(self) -> str:
        return f"{self.evaluator} >= {self.minimum:g}"


EVALUATORS: tuple[type[Evaluator[Any, Any, Any]], ...] = (RunSucceeded, ScoreAtLeast)
RunDataset = Dataset[RunInputs, RunOutput, RunMetadata]


@dataclass(frozen=True, slots=True)
class Export:
    """An export: the dataset, how many runs were judged and failed, how many failing
    runs were left out (beyond ``max_cases``), the agents judged, and whether any case
    has a recorded prompt."""

    dataset: RunDataset
    judged: int
    failing: int
    left_out: int
    agents: tuple[str, ...]
    with_prompt: int


# --- baselines ------------------------------------------------------------------------------


def evaluator_baselines(
    runs_before: Iterable[Span], anomalies: Iterable[Anomaly] = ()
) -> dict[tuple[str, str], EvaluatorBaseline]:
    """Per (agent component, evaluator): its baseline from the scores of ``runs_before``
    (agent-run spans before the onset), or from an ``eval_score`` anomaly of
    ``anomalies`` when those scores are too few (see the module docstring)."""
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for s in runs_before:
        for ev in s.evaluations:
            if ev.score is not None:
                scores[(s.component, ev.name)].append(ev.score)
    out: dict[tuple[str, str], EvaluatorBaseline] = {}
    for key, values in sorted(scores.items()):
        if len(values) < MIN_BASELINE_SCORES:
            continue
        median = statistics.median(values)
        sigma = _MAD_TO_SIGMA * statistics.median(abs(v - median) for v in values)
        drop = max(SIGMAS * sigma, MIN_DROP_SHARE * abs(median))
        out[key] = EvaluatorBaseline(
            median=round(median, _DIGITS),
            minimum=round(median - drop, _DIGITS),
            n=len(values),
            source=BaselineSource.BEFORE_ONSET,
        )
    for a in anomalies:
        key = (a.component, a.qualifier)
        if a.sli is not SliKind.EVAL_SCORE or key in out or a.observed >= a.baseline:
            continue
        out[key] = EvaluatorBaseline(
            median=round(a.baseline, _DIGITS),
            minimum=round((a.baseline + a.observed) / 2, _DIGITS),
            n=0,
            source=BaselineSource.ANOMALY,
        )
    return out


# --- runs -----------------------------------------------------------------------------------


class _Traces:
    """The spans of each trace, and each span's children."""

    def __init__(self, spans: Iterable[Span]) -> None:
        self.by_id: dict[tuple[str, str], Span] = {}
        self.children: dict[tuple[str, str], list[Span]] = defaultdict(list)
        for s in spans:
            self.by_id[(s.trace_id, s.span_id)] = s
        for s in self.by_id.values():
            if s.parent_span_id is not None:
                self.children[(s.trace_id, s.parent_span_id)].append(s)
        for kids in self.children.values():
            kids.sort(key=lambda s: (s.start_ns, s.span_id))

    def subtree(self, root: Span) -> list[Span]:
        """``root``'s descendants (not itself), by start time."""
        out: list[Span] = []
        todo = [root]
        while todo:
            s = todo.pop()
            kids = self.children.get((s.trace_id, s.span_id), [])
            out.extend(kids)
            todo.extend(kids)
        out.sort(key=lambda s: (s.start_ns, s.span_id))
        return out

    def entry(self, span: Span) -> Span:
        """The outermost span of ``span``'s trace that the store holds, up its parents."""
        seen = {span.span_id}
        while span.parent_span_id is not None:
            parent = self.by_id.get((span.trace_id, span.parent_span_id))
            if parent is None or parent.span_id in seen:
                break
            seen.add(parent.span_id)
            span = parent
        return span


def _is_run(s: Span) -> bool:
    return s.operation is GenAIOperation.INVOKE_AGENT and s.component.startswith(_AGENT)


def export_incident(
    incident: TrackedIncident,
    spans: Sequence[Span],
    end: datetime,
    *,
    lookback: timedelta,
    max_cases: int = MAX_CASES,
) -> Export:
    """The failing runs of ``incident`` among ``spans`` (which should cover ``lookback``
    before its onset up to ``end``), as a dataset named after the incident. A dataset
    without cases is returned as is: the caller says there was nothing to export."""
    onset = incident.onset
    start_ns, end_ns = _ns(onset), _ns(end)
    begin_ns = _ns(onset - lookback)
    runs = [s for s in spans if _is_run(s)]
    scoped = sorted({a.component for a in incident.anomalies if a.component.startswith(_AGENT)})
    agents = set(scoped) if scoped else {s.component for s in runs}
    before = [s for s in runs if s.component in agents and begin_ns <= s.start_ns < start_ns]
    baselines = evaluator_baselines(before, incident.anomalies)
    judged = sorted(
        (s for s in runs if s.component in agents and start_ns <= s.start_ns <= end_ns),
        key=lambda s: (s.start_ns, s.trace_id, s.span_id),
    )
    traces = _Traces(spans)
    slis = _incident_slis(incident.anomalies)
    cases: list[Case[RunInputs, RunOutput, RunMetadata]] = []
    failing = with_prompt = 0
    names: set[str] = set()
    for run in judged:
        mine = {ev: b for (agent, ev), b in baselines.items() if agent == run.component}
        why = _why(run, mine)
        if not why:
            continue
        failing += 1
        if len(cases) >= max_cases:
            continue
        case = _case(incident.id, run, traces, mine, why, slis.get(run.component, ()), names)
        with_prompt += case.inputs.prompt is not None
        cases.append(case)
    dataset = RunDataset(
        name=f"incident-{incident.id}",
        cases=cases,
        evaluators=[RunSucceeded()],
    )
    return Export(
        dataset=dataset,
        judged=len(judged),
        failing=failing,
        left_out=failing - len(cases),
        agents=tuple(sorted(agents)),
        with_prompt=with_prompt,
    )


def _why(run: Span, baselines: Mapping[str, EvaluatorBaseline]) -> tuple[str, ...]:
    out: list[str] = []
    if run.is_error:
        out.append(f"error {run.error_type!r}")
    for ev in run.evaluations:
        b = baselines.get(ev.name)
        if b is not None and ev.score is not None and ev.score < b.minimum:
            out.append(f"{ev.name} {ev.score:g} < minimum {b.minimum:g} (median {b.median:g})")
    return tuple(out)


def _case(
    incident_id: str,
    run: Span,
    traces: _Traces,
    baselines: Mapping[str, EvaluatorBaseline],
    why: tuple[str, ...],
    slis: tuple[str, ...],
    names: set[str],
) -> Case[RunInputs, RunOutput, RunMetadata]:
    tree = traces.subtree(run)
    entry = traces.entry(run)
    models = [s for s in tree if s.operation in MODEL_OPERATIONS]
    tools = [s for s in tree if s.operation is GenAIOperation.EXECUTE_TOOL]
    agent = str(run.attributes.get("gen_ai.agent.name") or run.component.removeprefix(_AGENT))
    request = _request(entry) if entry is not run else {}
    request.update(_request(run))
    scores = {ev.name: ev.score for ev in run.evaluations if ev.score is not None}
    bad = RunOutput(
        error=run.error_type,
        message=run.status_message,
        scores=scores,
        answer=_content([run, *reversed(models)], _ANSWER_KEYS, _ANSWER_INDEXED, _ANSWER_EVENTS),
    )
    inputs = RunInputs(
        agent=agent,
        trace_id=run.trace_id,
        prompt=_content([run, *models], _PROMPT_KEYS, _PROMPT_INDEXED, _PROMPT_EVENTS),
        request=request,
    )
    scored = {name: b for name, b in sorted(baselines.items()) if name in scores}
    metadata = RunMetadata(
        incident=incident_id,
        trace_id=run.trace_id,
        span_id=run.span_id,
        agent=run.component,
        service=run.service,
        time=run.start,
        duration_ms=round(run.duration_ms, 3),
        steps=len(models) + len(tools),
        input_tokens=_total(s.input_tokens for s in models),
        output_tokens=_total(s.output_tokens for s in models),
        bad_output=bad,
        baselines=scored,
        why=why,
        errors=tuple(
            dict.fromkeys(
                f"{s.component}: {s.error_type}"
                + (f" ({s.status_message})" if s.status_message else "")
                for s in tree
                if s.is_error
            )
        ),
        incident_slis=slis,
    )
    name = f"{agent} {run.trace_id[:12]}/{run.span_id[:8]}"
    if name in names:  # two runs of one agent in one trace, ids alike: rare
        name = f"{agent} {run.trace_id}/{run.span_id}"
    names.add(name)
    return Case(
        name=name,
        inputs=inputs,
        metadata=metadata,
        evaluators=[ScoreAtLeast(evaluator=n, minimum=b.minimum) for n, b in scored.items()],
    )


def _request(span: Span) -> dict[str, AttrScalar | list[AttrScalar]]:
    out: dict[str, AttrScalar | list[AttrScalar]] = {}
    for k, v in sorted(span.attributes.items()):
        if not (k.startswith(_REQUEST_PREFIXES) or k in _ENTRY_KEYS):
            continue
        value = _plain(v)
        if value is not None:
            out[k] = value
    return out


def _plain(v: object) -> AttrScalar | list[AttrScalar] | None:
    if isinstance(v, str | bool | int | float):
        return v
    if isinstance(v, list | tuple) and all(isinstance(x, str | bool | int | float) for x in v):
        return list(v)
    return None  # bytes, nested values: not worth a test case's inputs


def _content(
    spans: Sequence[Span], keys: Sequence[str], indexed: str, events: Sequence[str]
) -> str | None:
    """The first content found on ``spans``, in order: an attribute of ``keys``, the
    indexed form (``indexed.N.content``), or an event of ``events``."""
    for s in spans:
        for k in keys:
            text = _text(s.attributes.get(k))
            if text:
                return text
        parts = _indexed(s.attributes, indexed)
        if parts:
            return _short("\n".join(parts), _CLIP)
        for e in s.events:
            text = _event_text(e, events)
            if text:
                return text
    return None


def _indexed(attrs: Mapping[str, Any], prefix: str) -> list[str]:
    found: list[tuple[int, str]] = []
    for k, v in attrs.items():
        head, _, rest = k.partition(f"{prefix}.")
        if head or not rest.endswith(".content"):
            continue
        index = rest.removesuffix(".content")
        if index.isdigit() and isinstance(v, str) and v:
            found.append((int(index), v))
    return [v for _, v in sorted(found)]


def _event_text(e: SpanEvent, names: Sequence[str]) -> str | None:
    if e.name not in names:
        return None
    for k in _EVENT_CONTENT_KEYS:
        text = _text(e.attributes.get(k))
        if text:
            return text
    return None


def _text(v: object) -> str | None:
    if v is None or v == "":
        return None
    if isinstance(v, str):
        return _short(v, _CLIP)
    if isinstance(v, list | tuple | dict):
        try:
            return _short(json.dumps(v, ensure_ascii=False, default=str), _CLIP)
        except (TypeError, ValueError):
            return None
    return None


def _total(tokens: Iterable[int | None]) -> int | None:
    known = [t for t in tokens if t is not None]
    return sum(known) if known else None


def _incident_slis(anomalies: Iterable[Anomaly]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = defaultdict(list)
    for a in sorted(anomalies, key=lambda a: (a.onset, a.sli, a.qualifier)):
        what = a.sli.value + (f" {a.qualifier}" if a.qualifier else "")
        out[a.component].append(
            f"{what}: {a.baseline:.4g} -> {a.observed:.4g} from {a.onset:%Y-%m-%dT%H:%M:%SZ}"
        )
    return {c: tuple(lines) for c, lines in out.items()}


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


# --- files ----------------------------------------------------------------------------------


def write_dataset(dataset: RunDataset, path: Path) -> Path:
    """Write ``dataset`` to ``path`` (YAML for .yaml/.yml, JSON for .json) with its JSON
    schema beside it (``<stem>_schema.json``, which the YAML's first line names for
    editors); returns the schema's path. Raises ``ValueError`` for another suffix and
    ``OSError`` when a file cannot be written."""
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ValueError(f"{path}: the dataset file must end in .yaml, .yml or .json")
    name = f"{path.stem}_schema.json"  # relative: the YAML names it relative to itself
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.to_file(path, schema_path=name, custom_evaluator_types=EVALUATORS)
    return path.parent / name


def load_dataset(path: Path) -> RunDataset:
    """A dataset ``write_dataset`` wrote, with its evaluators."""
    return RunDataset.from_file(path, custom_evaluator_types=EVALUATORS)
