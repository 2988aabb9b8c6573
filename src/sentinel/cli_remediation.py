"""``sentinel pause | resume | audit | approve | reject`` and ``sentinel playbook test``:
the Remediation Agent's kill switch, its audit trail, people's decisions on proposed
actions, and dry runs of a playbook on a case. ``sentinel.cli`` mounts them.

What must not live here: decisions (``sentinel.remediation``), storage (adapters).
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from sentinel.cli_common import ByOption, ConfigOption, err, out
from sentinel.cli_common import cli_settings as _settings
from sentinel.cli_common import fail as _fail
from sentinel.cli_common import say as _say
from sentinel.cli_common import who as _who
from sentinel.clock import SystemClock
from sentinel.errors import SentinelError
from sentinel.incidents import AuditEntry


def set_paused(paused: bool, config: Path | None, by: str | None, reason: str) -> None:
    from sentinel.adapters.db import open_store

    s = _settings(config)
    try:
        store = open_store(s.store_url, SystemClock(), auto_migrate=s.store.auto_migrate)
        try:
            store.set_paused(paused, actor=_who(by), reason=reason)
        finally:
            store.close()
    except SentinelError as e:
        raise _fail(e) from e
    if paused:
        _say(
            "remediation paused: no action will run, automatic or approved, until `sentinel resume`"
        )
    else:
        _say("remediation resumed")
        if s.remediation.paused:
            _say("note: remediation.paused = true in the config still pauses it")


def pause(
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit log.")] = "",
    by: ByOption = None,
    config: ConfigOption = None,
) -> None:
    """Kill switch: stop every remediation action at once.

    The running daemon reads the switch before every step and every undo.
    """
    set_paused(True, config, by, reason)


def resume(
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit log.")] = "",
    by: ByOption = None,
    config: ConfigOption = None,
) -> None:
    """Turn the kill switch off again."""
    set_paused(False, config, by, reason)


def _decide(ident: str, approve: bool, reason: str, config: Path | None) -> None:
    from sentinel.adapters.db import open_store
    from sentinel.agents.approvals import decide_as
    from sentinel.agents.remediation import Decided

    s = _settings(config)
    actor = f"cli:{getpass.getuser()}"
    try:
        store = open_store(s.store_url, SystemClock(), auto_migrate=s.store.auto_migrate)
        try:
            outcome = decide_as(
                store,
                s.approvals,
                ident,
                approve=approve,
                actor=actor,
                now=store.clock.now(),
                reason=reason,
            )
        finally:
            store.close()
    except SentinelError as e:
        raise _fail(e) from e
    if outcome.decided in (Decided.DONE, Decided.ALREADY):
        _say(outcome.message)
        return
    err.print(Text.assemble(("error:", "bold red"), " ", outcome.message), soft_wrap=True)
    raise typer.Exit(1)


def approve(
    action: Annotated[
        str, typer.Argument(help="The action key, or an incident id with one proposed action.")
    ],
    config: ConfigOption = None,
) -> None:
    """Approve a proposed remediation action. The daemon runs it at its next run.

    You must be listed in the approvals users of the config, as cli:<your login>.
    """
    _decide(action, True, "", config)


def reject(
    action: Annotated[
        str, typer.Argument(help="The action key, or an incident id with one proposed action.")
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why (for the audit log).")],
    config: ConfigOption = None,
) -> None:
    """Reject a proposed remediation action: it never runs."""
    _decide(action, False, reason, config)


def audit_summary(e: AuditEntry) -> str:
    d: dict[str, Any] = e.detail
    parts: list[str] = []
    if "action" in d and isinstance(d["action"], str):
        parts.append(d["action"])
    h = d.get("hypothesis") or d.get("top")
    if isinstance(h, dict) and h.get("component"):
        parts.append(f"{h['component']} ({h.get('fault')}, {float(h.get('confidence', 0)):.2f})")
    for key in ("gate", "state", "step", "why", "error", "reason", "how"):
        if d.get(key):
            parts.append(f"{key}: {d[key]}")
    if isinstance(d.get("reasons"), list) and d["reasons"]:
        parts.append("reasons: " + "; ".join(map(str, d["reasons"])))
    return " · ".join(parts)


def audit(
    incident: Annotated[
        str | None, typer.Option("--incident", help="Only this incident's entries.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config: ConfigOption = None,
) -> None:
    """The audit log: every decision, who made it, when and why."""
    from sentinel.adapters.db import open_store

    s = _settings(config)
    try:
        store = open_store(s.store_url, SystemClock(), auto_migrate=s.store.auto_migrate)
        try:
            entries = store.audit(incident)
        finally:
            store.close()
    except SentinelError as e:
        raise _fail(e) from e
    if as_json:
        for entry in entries:
            sys.stdout.write(entry.model_dump_json() + "\n")
        return
    if not entries:
        _say("no audit entries" + (f" for incident {incident!r}" if incident else ""))
        return
    table = Table("time", "actor", "action", "incident", "detail", show_lines=False)
    for entry in entries:
        table.add_row(
            entry.time.strftime("%Y-%m-%d %H:%M:%S"),
            entry.actor,
            entry.action,
            entry.incident_id or "",
            Text(audit_summary(entry)),
        )
    out.print(table)


def playbook_test(
    playbook: Annotated[Path, typer.Argument(help="A playbook file.", dir_okay=False)],
    case_dir: Annotated[Path, typer.Argument(help="A case folder (CASE_FORMAT.md).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Show what a playbook would do on a case. Nothing is run.

    Prints the case's diagnosis, whether the playbook matches its top hypothesis, the
    gate it would pass and why, and its rendered steps, verification and undo.
    """
    from sentinel.cases import read_case
    from sentinel.playbooks.loader import load_playbook
    from sentinel.playbooks.model import TemplateContext
    from sentinel.rca.engine import diagnose
    from sentinel.remediation import matches, propose

    s = _settings(config)
    try:
        book = load_playbook(playbook, remediation=s.remediation)
        case = read_case(case_dir)
    except SentinelError as e:
        raise _fail(e) from e
    found = diagnose(case, s.detection, s.pricing, s.slo)
    doc: dict[str, Any] = {"case": found.case, "playbook": book.name}
    if not found.hypotheses:
        doc["outcome"] = "no incident or no hypothesis: the playbook would not be considered"
        _print_test(doc, as_json)
        return
    top = found.hypotheses[0]
    doc["hypothesis"] = {
        "component": top.component,
        "fault": top.fault,
        "confidence": round(top.confidence, 4),
        "change": top.change,
    }
    if not matches(book, top):
        m = book.match
        doc["outcome"] = (
            f"does not match: the playbook fits faults {[f.value for f in m.faults]}, "
            f"components {list(m.components)}, confidence >= {m.min_confidence}"
        )
        _print_test(doc, as_json)
        return
    change = next((c for c in case.changes if c.id == top.change), None)
    ctx = TemplateContext(
        incident_id=found.incident or found.case,
        component=top.component,
        fault=top.fault,
        change_id=top.change,
        change_repo=(change.repo or None) if change else None,
        change_path=(change.path or None) if change else None,
    )
    proposal, skipped = propose(
        [book],
        ctx.incident_id,
        top,
        ctx,
        history=[],
        paused=s.remediation.paused,
        policy=s.remediation,
        now=found.onset or case.meta.end,
    )
    if proposal is None:
        doc["outcome"] = "; ".join(skipped)
        _print_test(doc, as_json)
        return
    r = proposal.record
    doc["outcome"] = {
        "auto": "would run automatically",
        "approve": "would ask for approval",
        "suggest": "would only be suggested",
    }[r.gate.value]
    doc["gate"] = r.gate.value
    doc["reasons"] = list(r.reasons)
    doc["steps"] = [
        {"id": sid, **step.model_dump(mode="json", by_alias=True, exclude_defaults=False)}
        for sid, step in zip(r.step_ids, r.steps, strict=True)
    ]
    doc["verification"] = r.verification.model_dump(mode="json")
    doc["undo"] = [
        {"id": sid, "how": "revert its commit" if rev else ("action" if u else "none")}
        for sid, rev, u in zip(r.step_ids, r.revert, r.undo, strict=True)
    ]
    _print_test(doc, as_json)


def _print_test(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(doc) + "\n")
        return
    _say(f"case {doc['case']}, playbook {doc['playbook']}")
    if "hypothesis" in doc:
        h = doc["hypothesis"]
        change = f", change {h['change']}" if h.get("change") else ""
        _say(
            f"  top hypothesis: {h['component']} ({h['fault']}{change}), "
            f"confidence {h['confidence']:.2f}"
        )
    _say(f"  outcome: {doc['outcome']}")
    for why in doc.get("reasons", []):
        _say(f"    - {why}")
    for step in doc.get("steps", []):
        params = {
            k: v for k, v in step.items() if k not in ("id", "action") and v not in (None, "")
        }
        _say(f"  step {step['id']}: {step['action']} {json.dumps(params)}")
    if "verification" in doc:
        v = doc["verification"]
        _say(
            f"  verification: SLIs {v['slis'] or 'of the incident'} back within baseline for "
            f"{v['hold_minutes']:g} min, within {v['window_minutes']:g} min"
        )
    for u in doc.get("undo", []):
        _say(f"  undo {u['id']}: {u['how']}")
