"""``sentinel incidents`` and ``sentinel incident ID``: the incidents in the store, and
one incident in full (its ticket, every hypothesis with its evidence, its actions with
their steps and results, its audit trail, and its causal graph as a picture).
``sentinel.cli`` mounts them.

``--json`` prints one JSON document, whose shape is stable:

- ``incidents --json``: ``{"incidents": [INCIDENT + {"top_hypothesis": {"component",
  "fault", "confidence", "change"} | null, "action": {"key", "playbook", "gate",
  "state"} | null}]}``, newest first, where INCIDENT is ``{"id", "title", "status",
  "opened_at", "updated_at", "resolved_at", "components"}`` (times RFC 3339, UTC);
- ``incident ID --json``: ``{"incident": INCIDENT, "status_line": str, "anomalies":
  [{"component", "sli", "qualifier", "detector", "slo", "onset", "baseline",
  "observed", "score", "text"}], "hypotheses": [{"rank", "component", "fault",
  "confidence", "change", "score", "evidence": [str]}], "actions": [ACTION],
  "audit": [ENTRY], "graph": path | null}``, where ACTION is an action record and
  ENTRY an audit entry as ``/api/actions`` and ``/api/audit`` return them.

What must not live here: what a ticket says (``sentinel.tickets``), drawing the graph
(``sentinel.rca.picture``), storage (adapters).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from sentinel.cli_common import ConfigOption, err, out
from sentinel.cli_common import cli_settings as _settings
from sentinel.cli_common import fail as _fail
from sentinel.cli_common import say as _say
from sentinel.cli_remediation import audit_summary as _summary
from sentinel.clock import SystemClock
from sentinel.errors import IllegalTransition, SentinelError, UnknownIncident
from sentinel.incidents import (
    AuditEntry,
    EventAction,
    Incident,
    TrackedIncident,
    fold,
    lifecycle_events,
)
from sentinel.rca import Hypothesis
from sentinel.remediation import ActionRecord
from sentinel.tickets import (
    build_ticket,
    percent,
    result_text,
    sli_line,
    step_summary,
    ticket_text,
)

__all__ = ["incident", "incidents"]

# Piped output gets a wide console: rich would otherwise fold the table's cells.

GraphOption = Annotated[
    Path | None,
    typer.Option(
        "--graph",
        help="Write the incident's causal graph as a PNG picture to this file.",
        dir_okay=False,
        metavar="FILE.png",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def _when(incident: Incident) -> str:
    return incident.opened_at.strftime("%Y-%m-%d %H:%M")


def _incident_doc(i: Incident) -> dict[str, Any]:
    return i.model_dump(mode="json")


def incidents(
    open_only: Annotated[bool, typer.Option("--open", help="Only incidents not resolved.")] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """List the incidents, newest first: status, title, top hypothesis, action."""
    from sentinel.adapters.db import open_store

    s = _settings(config)
    rows: list[tuple[Incident, Hypothesis | None, ActionRecord | None]] = []
    try:
        store = open_store(s.store_url, SystemClock(), auto_migrate=s.store.auto_migrate)
        try:
            latest: dict[str, ActionRecord] = {}
            for record in store.actions():  # oldest first: the last one per incident wins
                latest[record.incident_id] = record
            for i in store.incidents(open_only=open_only):
                hypotheses = store.hypotheses(i.id)
                rows.append((i, hypotheses[0] if hypotheses else None, latest.get(i.id)))
        finally:
            store.close()
    except SentinelError as e:
        raise _fail(e) from e
    if as_json:
        doc = {
            "incidents": [
                {
                    **_incident_doc(i),
                    "top_hypothesis": None
                    if top is None
                    else {
                        "component": top.component,
                        "fault": top.fault,
                        "confidence": top.confidence,
                        "change": top.change,
                    },
                    "action": None
                    if action is None
                    else {
                        "key": action.key,
                        "playbook": action.playbook,
                        "gate": action.gate.value,
                        "state": action.state.value,
                    },
                }
                for i, top, action in rows
            ]
        }
        sys.stdout.write(json.dumps(doc) + "\n")
        return
    if not rows:
        _say("no open incidents" if open_only else "no incidents")
        return
    table = Table("id", "status", "opened (UTC)", "title", "top hypothesis", "action")
    for i, top, action in rows:
        table.add_row(
            Text(i.id),
            i.status.value,
            _when(i),
            Text(i.title),
            Text("" if top is None else f"{top.component} ({top.fault}) {percent(top.confidence)}"),
            Text("" if action is None else f"{action.playbook}: {action.state.value}"),
        )
    out.print(table)


def incident(
    incident_id: Annotated[str, typer.Argument(help="The incident's id (`sentinel incidents`).")],
    graph: GraphOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Show one incident in full: its ticket, every hypothesis with its evidence, its
    actions with their steps and results, and its audit trail.

    With --graph FILE.png, also draw its causal graph: callers above callees, anomalous
    components coloured, the candidates ranked, the path from the top one to the
    symptoms in bold.
    """
    from sentinel.adapters.db import open_store

    s = _settings(config)
    png: bytes | None = None
    try:
        store = open_store(s.store_url, SystemClock(), auto_migrate=s.store.auto_migrate)
        try:
            record = store.get_incident(incident_id)
            if record is None:
                raise UnknownIncident(
                    f"no incident {incident_id!r} in store {store.url}; "
                    "`sentinel incidents` lists them"
                )
            trail = store.audit(incident_id)
            state = _state(record, trail)
            hypotheses = store.hypotheses(incident_id)
            actions = store.actions(incident_id)
            llm = store.llm_outputs(incident_id)
            if graph is not None:
                from sentinel.rca.picture import incident_graph_png

                end = record.resolved_at or store.clock.now()
                png = incident_graph_png(store, state, hypotheses, end)
        finally:
            store.close()
    except SentinelError as e:
        raise _fail(e) from e
    if graph is not None and png is not None:
        try:
            graph.write_bytes(png)
        except OSError as e:
            err.print(
                Text.assemble(
                    ("error:", "bold red"), " ", f"cannot write the graph to {str(graph)!r}: {e}"
                ),
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from e

    from sentinel.llm.story import story_view

    story = story_view(llm, hypotheses, s.llm.max_confidence_shift)
    view = build_ticket(
        record, state.anomalies, hypotheses, actions[-1] if actions else None, story=story
    )
    if as_json:
        doc = {
            "incident": _incident_doc(record),
            "status_line": view.status_line,
            "anomalies": [
                {
                    **a.model_dump(mode="json"),
                    "text": sli_line(a).text,
                }
                for a in sorted(state.anomalies, key=lambda a: (a.onset, a.component, a.sli))
            ],
            "hypotheses": [
                {"rank": n, **h.model_dump(mode="json")} for n, h in enumerate(hypotheses, start=1)
            ],
            "actions": [r.model_dump(mode="json") for r in actions],
            "llm": [r.model_dump(mode="json") for r in llm],
            "audit": [e.model_dump(mode="json") for e in trail],
            "graph": str(graph) if graph is not None else None,
        }
        sys.stdout.write(json.dumps(doc) + "\n")
        return

    _say(ticket_text(view, max_slis=None))
    _say()
    _say(f"Hypotheses ({len(hypotheses)}):" if hypotheses else "Hypotheses: none yet")
    for n, h in enumerate(hypotheses, start=1):
        change = f", change {h.change}" if h.change else ""
        _say(
            f"  {n}. {h.component}: {h.fault}, confidence {percent(h.confidence)}"
            f"{change} (score {h.score:.3g})"
        )
        for line in h.evidence:
            _say(f"       - {line}")
    _say()
    _say(f"Actions ({len(actions)}):" if actions else "Actions: none")
    for r in actions:
        _print_action(r)
    _say()
    _say(f"Audit trail ({len(trail)}):")
    for entry in trail:
        summary = _audit_summary(entry)
        _say(
            f"  {entry.time.strftime('%Y-%m-%d %H:%M:%S')}  {entry.actor}  {entry.action}"
            + (f"  {summary}" if summary else "")
        )
    if graph is not None:
        _say()
        _say(f"causal graph written to {graph}")


def _state(record: Incident, trail: list[AuditEntry]) -> TrackedIncident:
    """The incident's anomalies, from the lifecycle events of its audit trail. A trail
    that cannot be replayed is reported, and the incident shown without them."""
    try:
        state = fold(lifecycle_events(trail))
    except (IllegalTransition, ValueError) as e:
        err.print(
            Text.assemble(
                ("warning:", "bold yellow"),
                " ",
                f"the lifecycle events of incident {record.id!r} do not replay ({e}); "
                "shown without its anomalies",
            ),
            highlight=False,
            soft_wrap=True,
        )
        state = None
    if state is None:
        return TrackedIncident(incident=record, onset=record.opened_at, anomalies=())
    return state.model_copy(update={"incident": record})


def _print_action(r: ActionRecord) -> None:
    by = f", decided by {r.decided_by}" if r.decided_by else ""
    _say(f"  {r.key}: playbook {r.playbook}, gate {r.gate.value}, state {r.state.value}{by}")
    h = r.hypothesis
    _say(f"    for {h.component} ({h.fault}, {percent(h.confidence)})")
    times = [f"proposed {r.created_at.strftime('%Y-%m-%d %H:%M:%S')}"]
    if r.started_at is not None:
        times.append(f"started {r.started_at.strftime('%H:%M:%S')}")
    if r.applied_at is not None:
        times.append(f"applied {r.applied_at.strftime('%H:%M:%S')}")
    times.append(f"updated {r.updated_at.strftime('%Y-%m-%d %H:%M:%S')}")
    _say("    " + " · ".join(times))
    for why in r.reasons:
        _say(f"    why not automatic: {why}")
    for sid, step in zip(r.step_ids, r.steps, strict=True):
        _say(f"    step {sid}: {step_summary(step)}")
        result = r.results.get(sid)
        if result is not None:
            _say(f"      result: {result_text(result)}")
        undone = r.undo_results.get(sid)
        if undone is not None:
            _say(f"      undone: {result_text(undone)}")
    if r.note:
        _say(f"    note: {r.note}")


def _audit_summary(e: AuditEntry) -> str:
    """One line about an audit entry: a lifecycle event's anomalies, else what
    ``sentinel audit`` says of it."""
    d = e.detail
    if e.action == EventAction.INCIDENT_OPENED.value and isinstance(d.get("anomalies"), list):
        n = len(d["anomalies"])
        return f"{n} anomal{'y' if n == 1 else 'ies'} from {d.get('onset', '?')}"
    if e.action == EventAction.ANOMALY_MERGED.value and isinstance(d.get("anomaly"), dict):
        a = d["anomaly"]
        what = a.get("sli", "?") + (f"[{a['qualifier']}]" if a.get("qualifier") else "")
        return f"{what} of {a.get('component', '?')}"
    if e.action == EventAction.ONSET_REFIT.value and isinstance(d.get("how"), str):
        return f"onset {d.get('onset', '?')} ({d['how']})"
    return _summary(e)
