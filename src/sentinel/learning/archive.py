"""Resolved incidents as eval cases (CASE_FORMAT.md): the telemetry of their window, the
changes, and a ``[truth]`` built from what people confirmed or what a verified fix shows.

- ``Confirmation`` and ``confirmations``: a person's word on the root cause (the audit
  entry ``root_cause_confirmed``), the latest one winning.
- ``truth_for``: the ``[truth]`` of an incident. Confirmed by a person: ``basis =
  "confirmed"`` with the component they named. Else a fix verified automatically: ``basis
  = "weak"``, the hypothesis the fix acted on. Else none: the case still documents the
  incident, and scorers skip it.
- ``case_for_incident``: the case of an incident from the store (spans, samples, changes)
  and, when a metric source is given, the series of the ``[[prometheus.slis]]``
  declarations over the window.
- ``archive_incident``: the case written with ``cases.write_case`` under the archive
  folder (an incident archived before: only its ``case.toml`` renewed with the new truth,
  the telemetry kept) and, when that folder is inside a git work tree, committed with
  gitpython (only the case's paths; a failing git is logged, never fatal: the files stay,
  and the next archive of the case commits them).

Everything here is blocking (store, files, git); the agent runs it from a worker thread.

The window of a case is ``[onset - lookback, resolved_at]`` (``now`` for an incident still
open). Changes are taken from ``rca.rank.CHANGE_WINDOW`` before the onset when that is
earlier, as the live diagnosis reads them, so a replay links the same change.

Metrics from Prometheus: each declared SLI's query (and its count query) is run as a
range query over the window at the detection step, the query instants as
``sentinel.agents.promql`` uses them. Each answer series becomes samples of the gauge
``sentinel_sli_value`` (the count query's: ``sentinel_sli_observations``) with the
series' own labels plus ``component``, ``sli`` and, when set, ``qualifier`` of the
declaration: so a reader (or a later ``metric_slis``) knows which SLI the points are.
``sentinel rca`` does not read these two families yet; the store's samples and the spans
are what it replays. The store keeps no metric types: the store's families are written as
``unknown`` (OpenMetrics and promtool read them; SLIs are computed from sample names).

What must not live here: the case format's files (``sentinel.cases``), scoring and
calibration (``learning.scoring``, ``learning.calibration``), scheduling, SQL, Slack.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import threading
import tomllib
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sentinel.cases import (
    CASE_TOML,
    METRICS,
    TRACES,
    Case,
    CaseMeta,
    CaseTruth,
    TruthBasis,
    case_toml,
    write_case,
)
from sentinel.errors import (
    CaseFormatError,
    ConfirmationError,
    IllegalTransition,
    MetricSourceError,
    UnknownIncident,
)
from sentinel.incidents import (
    AuditEntry,
    Incident,
    TrackedIncident,
    fold,
    lifecycle_events,
)
from sentinel.playbooks.model import ActionKind, AnyAction
from sentinel.ports import IncidentStore, MetricSource, TelemetryStore
from sentinel.rca import Hypothesis, percent
from sentinel.rca.rank import CHANGE_WINDOW
from sentinel.remediation import ActionRecord, ActionState
from sentinel.settings import PromQLSli
from sentinel.sli import whole_steps
from sentinel.telemetry import AwareDatetime, ComponentId, Sample, Series

__all__ = [
    "ARCHIVED",
    "DEFAULT_AUTHOR",
    "DEFAULT_STEP",
    "MAX_SPANS",
    "OBSERVATIONS_FAMILY",
    "ROOT_CAUSE_CONFIRMED",
    "UNKNOWN_FAULT",
    "VALUE_FAMILY",
    "ArchiveStore",
    "Archived",
    "Confirmation",
    "ConfirmationError",
    "GitAuthor",
    "PrometheusSeries",
    "Runner",
    "archive_incident",
    "case_folder_name",
    "case_for_incident",
    "commit_case",
    "commit_message",
    "confirmations",
    "incident_state",
    "prometheus_samples",
    "truth_for",
    "truth_label",
    "truth_record",
]

log = structlog.get_logger(__name__)

# The audit action of a person's confirmation (or correction) of the root cause.
ROOT_CAUSE_CONFIRMED = "root_cause_confirmed"
# The audit action of an archived case (detail: path, truth, committed).
ARCHIVED = "incident_archived"
# The gauges Prometheus' answers are archived as (see the module docstring).
VALUE_FAMILY = "sentinel_sli_value"
OBSERVATIONS_FAMILY = "sentinel_sli_observations"
# At most this many spans per archived case, the oldest of the window (around the onset,
# where the cause shows): an incident open for days must not exhaust memory.
MAX_SPANS = 200_000
DEFAULT_STEP = timedelta(seconds=30)
# The fault of a confirmation that named none, of an incident without hypotheses (the
# Learning Agent asks for one; an audit entry written by another tool may lack it).
UNKNOWN_FAULT = "unknown"
# Steps that make the main action of a fix: notify and escalate only tell people.
_TELLING = frozenset({ActionKind.NOTIFY, ActionKind.ESCALATE})
_SAFE_NAME_RE = re.compile(r"[^A-Za-z0-9._-]")
# One git operation at a time in this process (ARCHITECTURE.md: a serialized worker).
_GIT_LOCK = threading.Lock()


class ArchiveStore(TelemetryStore, IncidentStore, Protocol):
    """What archiving reads (``adapters.db.SqlStore``)."""

    @property
    def url(self) -> str: ...

    def actions(
        self, incident_id: str | None = None, *, states: Sequence[ActionState] = ()
    ) -> list[ActionRecord]: ...


# --- confirmations and truth ------------------------------------------------------------


class Confirmation(BaseModel):
    """A person's word on an incident's root cause: the component, and the fault when
    they said it (None: the hypothesis' fault for that component, else the top one's)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    component: ComponentId
    fault: str | None = Field(default=None, min_length=1)
    by: str = Field(min_length=1)
    at: AwareDatetime


def confirmations(entries: Iterable[AuditEntry]) -> Confirmation | None:
    """The latest confirmation among audit entries (in their order), or None. An entry
    whose detail does not make a confirmation is skipped with a warning."""
    latest: Confirmation | None = None
    for e in entries:
        if e.action != ROOT_CAUSE_CONFIRMED:
            continue
        try:
            latest = Confirmation(
                component=e.detail.get("component"),
                fault=e.detail.get("fault") or None,
                by=e.actor,
                at=e.time,
            )
        except ValidationError as err:
            log.warning("unreadable confirmation skipped", incident=e.incident_id, error=str(err))
    return latest


def _main_step(steps: Sequence[AnyAction]) -> ActionKind | None:
    """The kind of the step that fixes: the first that is not only telling people."""
    for step in steps:
        if step.action not in _TELLING:
            return step.action
    return steps[0].action if steps else None


def truth_for(
    incident: TrackedIncident,
    hypotheses: Sequence[Hypothesis],
    actions: Sequence[ActionRecord],
    confirmation: Confirmation | None,
) -> CaseTruth | None:
    """The ``[truth]`` of an incident, or None when nothing is known.

    Confirmed: the component named, its fault (given, else the hypothesis' for that
    component, else the top one's), the change of the hypothesis for it. Not confirmed
    but a fix verified: weak truth, the hypothesis that fix acted on. ``fault_start`` is
    the incident's onset; ``remediation`` the kind of the verified fix's main step (the
    latest verified fix when there are several)."""
    verified = sorted(
        (a for a in actions if a.state is ActionState.VERIFIED), key=lambda a: a.updated_at
    )
    fix = verified[-1] if verified else None
    remediation = _main_step(fix.steps) if fix is not None else None
    if confirmation is not None:
        named = next((h for h in hypotheses if h.component == confirmation.component), None)
        top = hypotheses[0] if hypotheses else None
        known = named or top
        fault = confirmation.fault or (known.fault if known is not None else UNKNOWN_FAULT)
        return CaseTruth(
            root_cause=confirmation.component,
            fault=fault,
            fault_start=incident.onset,
            change=named.change if named is not None else None,
            remediation=remediation.value if remediation is not None else None,
            basis=TruthBasis.CONFIRMED,
        )
    if fix is not None:
        h = fix.hypothesis
        return CaseTruth(
            root_cause=h.component,
            fault=h.fault,
            fault_start=incident.onset,
            change=h.change,
            remediation=remediation.value if remediation is not None else None,
            basis=TruthBasis.WEAK,
        )
    return None


def truth_label(truth: CaseTruth | None) -> str:
    """How logs, commits and people see a truth: ``confirmed tool:x (tool_latency)``."""
    if truth is None:
        return "no truth"
    return f"{truth.basis.value} {truth.root_cause} ({truth.fault})"


def truth_record(truth: CaseTruth | None) -> dict[str, Any] | None:
    """The truth as JSON, for the ``incident_archived`` audit entry (what was archived)."""
    return None if truth is None else truth.model_dump(mode="json")


# --- the incident -------------------------------------------------------------------------


def incident_state(store: ArchiveStore, incident_id: str) -> TrackedIncident:
    """The incident as its lifecycle events rebuild it (onset, anomalies). An incident
    stored without them (written by another tool) gets its opening time as onset. Raises
    ``UnknownIncident``."""
    incident = store.get_incident(incident_id)
    if incident is None:
        raise UnknownIncident(
            f"no incident {incident_id!r} in store {store.url}; `sentinel incidents` lists them"
        )
    try:
        state = fold(lifecycle_events(store.audit(incident_id)))
    except (IllegalTransition, ValueError) as e:
        log.warning(
            "incident trail unreadable; onset = opening", incident=incident_id, error=str(e)
        )
        state = None
    if state is None:
        return TrackedIncident(incident=incident, onset=incident.opened_at, anomalies=())
    # The stored record is the truth about status (e.g. resolved by a newer writer).
    return state.model_copy(update={"incident": incident})


def case_folder_name(incident_id: str) -> str:
    """A folder name (and case id) for an incident: its id when that is safe as one path
    segment on every file system, else the id with unsafe characters as ``_`` and a short
    hash of the id (two ids never share a folder)."""
    safe = _SAFE_NAME_RE.sub("_", incident_id).lstrip(".")
    if safe == incident_id and safe:
        return safe
    digest = hashlib.sha256(incident_id.encode()).hexdigest()[:8]
    return f"{safe[:100] or 'incident'}-{digest}"


# --- Prometheus -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrometheusSeries:
    """The samples of the declared SLIs over a window, and what failed (one line per
    declaration that could not be read)."""

    samples: tuple[Sample, ...] = ()
    failures: tuple[str, ...] = ()


# Runs a coroutine to its end from blocking code: ``asyncio.run`` in a thread of its own;
# in the daemon, a function that hands it to the event loop the metric source lives on.
Runner = Callable[[Coroutine[Any, Any, PrometheusSeries]], PrometheusSeries]


def _labels(series: Series, decl: PromQLSli) -> tuple[tuple[str, str], ...]:
    labels = dict(series.labels)
    labels.pop("__name__", None)
    labels["component"] = decl.component
    labels["sli"] = decl.sli.value
    if decl.qualifier:
        labels["qualifier"] = decl.qualifier
    else:
        labels.pop("qualifier", None)
    return tuple(sorted(labels.items()))


async def prometheus_samples(
    source: MetricSource,
    decls: Sequence[PromQLSli],
    start: datetime,
    end: datetime,
    step: timedelta,
) -> PrometheusSeries:
    """Every declaration's query (and count query) over ``[start, end]`` at ``step``, as
    samples (see the module docstring). A query that fails is one line of ``failures``
    naming the declaration; the others are kept."""
    steps = whole_steps(start, end, step)
    if steps == 0 or not decls:
        return PrometheusSeries()
    first, last = start + step, start + steps * step
    samples: list[Sample] = []
    failures: list[str] = []
    for decl in decls:
        queries = [(VALUE_FAMILY, decl.query)]
        if decl.count_query:
            queries.append((OBSERVATIONS_FAMILY, decl.count_query))
        for family, query in queries:
            try:
                answer = await source.range(query, first, last, step)
            except MetricSourceError as e:
                failures.append(f"{decl.component} {decl.sli.value}: {e}")
                continue
            for series in answer:
                labels = _labels(series, decl)
                samples.extend(
                    Sample(family, labels, decl.component, t, v) for t, v in series.points
                )
    return PrometheusSeries(tuple(samples), tuple(failures))


# --- the case ----------------------------------------------------------------------------------


def _description(incident: Incident, hypotheses: Sequence[Hypothesis], notes: Sequence[str]) -> str:
    parts = [f"Incident {incident.id}: {incident.title}."]
    if hypotheses:
        h = hypotheses[0]
        parts.append(f"Top hypothesis: {h.component} ({h.fault}, {percent(h.confidence)}).")
    else:
        parts.append("Not diagnosed.")
    parts.append("Archived by sentinel.")
    parts.extend(notes)
    return " ".join(parts)


def case_for_incident(
    store: ArchiveStore,
    incident_id: str,
    *,
    lookback: timedelta,
    now: datetime,
    source: MetricSource | None = None,
    slis: Sequence[PromQLSli] = (),
    step: timedelta = DEFAULT_STEP,
    runner: Runner = asyncio.run,
    max_spans: int = MAX_SPANS,
) -> Case:
    """The case of incident ``incident_id``: the window ``[onset - lookback, resolved_at
    or now]``, its spans (the oldest ``max_spans``), samples and changes from the store,
    the ``slis`` series from ``source`` when given (run through ``runner``), and its
    truth (``truth_for``). A failing source is logged and noted in the description; the
    case is made without its series. Raises ``UnknownIncident``, ``StoreError``."""
    state = incident_state(store, incident_id)
    incident = state.incident
    start = state.onset - lookback
    end = incident.resolved_at or now
    if end <= start:
        # Never for a real incident (it resolves after its onset); a damaged record must
        # not make an invalid window.
        end = start + step
    audit = store.audit(incident_id)
    hypotheses = store.hypotheses(incident_id)
    truth = truth_for(state, hypotheses, store.actions(incident_id), confirmations(audit))
    notes: list[str] = []

    spans = store.spans(start, end, limit=max_spans)
    if len(spans) >= max_spans:
        log.warning("archive holds only the first spans", incident=incident_id, spans=len(spans))
        notes.append(f"Only the first {len(spans)} spans of the window are archived.")
    samples = list(store.samples(start, end))
    changes = store.changes(min(start, state.onset - CHANGE_WINDOW), end)

    types: tuple[tuple[str, str], ...] = ()
    if source is not None and slis:
        fetched = runner(prometheus_samples(source, slis, start, end, step))
        for failure in fetched.failures:
            log.error("prometheus series not archived", incident=incident_id, error=failure)
        if fetched.failures:
            notes.append(f"{len(fetched.failures)} Prometheus SLI queries failed.")
        samples.extend(fetched.samples)
        families = {s.metric for s in fetched.samples}
        types = tuple(sorted((f, "gauge") for f in families))

    name = case_folder_name(incident_id)
    return Case(
        meta=CaseMeta(
            id=name,
            description=_description(incident, hypotheses, notes),
            start=start,
            end=end,
        ),
        truth=truth,
        spans=tuple(spans),
        samples=tuple(samples),
        changes=tuple(changes),
        metric_types=types,
    )


# --- archiving ---------------------------------------------------------------------------------


class GitAuthor(NamedTuple):
    name: str
    email: str


DEFAULT_AUTHOR = GitAuthor("sentinel", "sentinel@localhost")


@dataclass(frozen=True, slots=True)
class Archived:
    """Where an incident's case went: its folder, its truth, and whether (and as which
    commit) it was committed. ``note`` says why not, when it was not."""

    incident_id: str
    path: Path
    truth: CaseTruth | None
    committed: bool = False
    commit: str | None = None
    note: str = ""


def commit_message(incident_id: str, truth: CaseTruth | None) -> str:
    return f"archive incident {incident_id}: {truth_label(truth)}"


def archive_incident(
    store: ArchiveStore,
    incident_id: str,
    folder: Path,
    *,
    lookback: timedelta,
    now: datetime,
    source: MetricSource | None = None,
    slis: Sequence[PromQLSli] = (),
    step: timedelta = DEFAULT_STEP,
    runner: Runner = asyncio.run,
    author: GitAuthor = DEFAULT_AUTHOR,
    keep_telemetry: bool = True,
    max_spans: int = MAX_SPANS,
) -> Archived:
    """Write the case of ``incident_id`` to ``folder/<case_folder_name>`` (replacing an
    earlier archive of it) and commit it when ``folder`` is in a git work tree.

    ``keep_telemetry``: when the case folder already holds a case, only its truth is
    renewed (``case.toml`` rewritten atomically) and its telemetry kept as first archived:
    a confirmation after the fact needs no new queries nor seconds of re-encoding, the
    archive stays what was seen when the incident resolved, and its commit is one file.
    Raises ``UnknownIncident``, ``StoreError``, ``CaseFormatError`` (e.g. a window
    without any telemetry); git failures are logged and returned, never raised."""
    path = folder / case_folder_name(incident_id)
    truth: CaseTruth | None
    if keep_telemetry and (meta := _archived_meta(path)) is not None:
        state = incident_state(store, incident_id)
        truth = truth_for(
            state,
            store.hypotheses(incident_id),
            store.actions(incident_id),
            confirmations(store.audit(incident_id)),
        )
        _write_truth(path, meta, truth)
    else:
        case = case_for_incident(
            store,
            incident_id,
            lookback=lookback,
            now=now,
            source=source,
            slis=slis,
            step=step,
            runner=runner,
            max_spans=max_spans,
        )
        truth = case.truth
        write_case(case, path, overwrite=True)
    sha, note = commit_case(path, commit_message(incident_id, truth), author, now)
    log.info(
        "incident archived",
        incident=incident_id,
        path=str(path),
        truth=truth_label(truth),
        commit=sha,
        note=note,
    )
    return Archived(incident_id, path, truth, sha is not None, sha, note)


def _archived_meta(path: Path) -> CaseMeta | None:
    """The ``[case]`` of the case archived at ``path``, or None when there is none to
    keep (no readable case.toml, or no traces and no metrics beside it)."""
    names = (TRACES, TRACES + ".gz", METRICS, METRICS + ".gz")
    if not any((path / n).is_file() for n in names):
        return None
    try:
        doc = tomllib.loads((path / CASE_TOML).read_text(encoding="utf-8"))
        return CaseMeta.model_validate(doc["case"])
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, ValidationError) as e:
        log.warning("archived case unreadable; archived anew", path=str(path), error=str(e))
        return None


def _write_truth(path: Path, meta: CaseMeta, truth: CaseTruth | None) -> None:
    """Replace the case's ``case.toml`` (its ``[case]`` kept, the new ``[truth]``)
    atomically, every data file untouched: a renewed truth costs no re-encoding of the
    telemetry, and a reader sees the old file or the new one."""
    target = path / CASE_TOML
    tmp = path / f".{CASE_TOML}.tmp-{secrets.token_hex(4)}"
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(case_toml(meta, truth))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CaseFormatError(f"cannot write {target}: {e}") from e


def commit_case(
    path: Path, message: str, author: GitAuthor, now: datetime
) -> tuple[str | None, str]:
    """Commit the case folder ``path`` (its paths only: whatever else is staged or changed
    in the work tree stays as it was) if it lies in a git work tree. Returns the commit
    id, or None and why not. Never raises for git: failures are logged."""
    try:
        import git  # gitpython refuses to import on a machine without the git program
    except ImportError as e:
        log.error("archive not committed: gitpython unusable", path=str(path), error=str(e))
        return None, f"gitpython unusable: {e}"
    with _GIT_LOCK:
        try:
            repo = git.Repo(path, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            return None, "the archive folder is not in a git repository"
        try:
            if repo.bare or repo.working_tree_dir is None:
                return None, "the archive folder's repository is bare"
            rel = path.resolve().relative_to(Path(repo.working_tree_dir).resolve()).as_posix()
            if _ignored(repo, rel):
                # e.g. the default .sentinel/archive inside a project that ignores .sentinel/
                return None, "git ignores the archive folder (a repository of its own commits)"
            when = f"@{int(now.timestamp())} +0000"
            repo.git.update_environment(
                GIT_TERMINAL_PROMPT="0",
                GIT_AUTHOR_NAME=author.name,
                GIT_AUTHOR_EMAIL=author.email,
                GIT_COMMITTER_NAME=author.name,
                GIT_COMMITTER_EMAIL=author.email,
                GIT_AUTHOR_DATE=when,
                GIT_COMMITTER_DATE=when,
            )
            # "--all": files an earlier archive of the case had and this one has not are
            # removed too. A commit naming paths takes only those paths (git's --only).
            repo.git.add("--all", "--", rel)
            if not str(repo.git.diff("--cached", "--name-only", "--", rel)).strip():
                return None, "unchanged since its last commit"
            repo.git.commit("--quiet", "-m", message, "--", rel)
            return str(repo.head.commit.hexsha), ""
        except (git.GitError, OSError, ValueError) as e:
            # GitCommandError's text is git's stderr: the archive folder is local, no
            # credentials in it.
            log.error("archive not committed", path=str(path), error=f"{type(e).__name__}: {e}")
            return None, f"git failed: {type(e).__name__}: {str(e).strip()[:300]}"
        finally:
            repo.close()


def _ignored(repo: Any, rel: str) -> bool:
    """Whether git ignores ``rel`` in ``repo`` (``git check-ignore`` exits 1 when not)."""
    import git

    try:
        repo.git.check_ignore("-q", "--", rel)
    except git.GitCommandError as e:
        if e.status == 1:
            return False
        raise
    return True
