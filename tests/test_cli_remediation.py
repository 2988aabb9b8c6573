"""``sentinel pause | resume | audit`` and ``sentinel playbook test``, in process
(typer's ``CliRunner``) on a real SQLite store and real case folders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sentinel.adapters.db import open_store
from sentinel.cases import FaultKind, write_case
from sentinel.clock import SystemClock
from sentinel.ports import AuditAction
from sentinel.sim import FaultSpec, Topology, simulate_case
from tests.test_cli import assert_failed_cleanly, flat, invoke, write_config

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOKS = ROOT / "playbooks"


@pytest.fixture(scope="module")
def prompt_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = FaultSpec(topology=Topology.SUPPORT, fault=FaultKind.PROMPT_REGRESSION, seed=3)
    folder = tmp_path_factory.mktemp("case") / "case"
    write_case(simulate_case(spec), folder)
    return folder


def test_pause_and_resume_flip_the_store_switch_with_who_and_why(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    paused = invoke("pause", "--reason", "db migration", "--by", "dana", "--config", str(cfg))
    assert paused.exit_code == 0, paused.output
    assert "remediation paused" in paused.output
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", SystemClock())
    try:
        assert store.paused() is True
    finally:
        store.close()
    resumed = invoke("resume", "--by", "dana", "--config", str(cfg))
    assert resumed.exit_code == 0 and "remediation resumed" in resumed.output

    audit = invoke("audit", "--json", "--config", str(cfg))
    entries = [json.loads(line) for line in audit.output.splitlines()]
    assert [(e["actor"], e["action"]) for e in entries] == [
        ("dana", AuditAction.PAUSED.value),
        ("dana", AuditAction.RESUMED.value),
    ]
    assert entries[0]["detail"] == {"reason": "db migration"}
    table = flat(invoke("audit", "--config", str(cfg)).output)
    assert "│ dana │ remediation_paused │" in table and "reason: db migration" in table
    none = invoke("audit", "--incident", "inc-x", "--config", str(cfg))
    assert "no audit entries for incident 'inc-x'" in none.output


def test_resume_says_when_the_config_still_pauses(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, '[store]\nurl = "sqlite:///s.db"\n[remediation]\npaused = true\n')
    out = invoke("resume", "--config", str(cfg)).output
    assert "remediation.paused = true in the config still pauses it" in out


def test_playbook_test_shows_the_gate_and_the_rendered_steps(
    prompt_case: Path, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path)
    r = invoke(
        "playbook",
        "test",
        str(PLAYBOOKS / "rollback-bad-change.yaml"),
        str(prompt_case),
        "--json",
        "--config",
        str(cfg),
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    truth_change = json.loads(json.dumps(doc["hypothesis"]))["change"]
    assert doc["hypothesis"]["component"] == "prompt:support-agent"
    assert doc["gate"] == "auto" and doc["reasons"] == []
    assert doc["steps"][0] == {
        "id": "rollback",
        "action": "gitops_rollback",
        "change": truth_change,
        "repo": "agent-config",
    }
    assert truth_change in doc["steps"][1]["message"]
    assert doc["undo"] == [
        {"id": "rollback", "how": "revert its commit"},
        {"id": "tell", "how": "none"},
    ]
    text = flat(
        invoke(
            "playbook",
            "test",
            str(PLAYBOOKS / "rollback-bad-change.yaml"),
            str(prompt_case),
            "--config",
            str(cfg),
        ).output
    )
    assert "outcome: would run automatically" in text
    assert "step rollback: gitops_rollback" in text


def test_playbook_test_says_why_a_playbook_does_not_fit(prompt_case: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    r = invoke(
        "playbook",
        "test",
        str(PLAYBOOKS / "throttle-rate-limited-tool.yaml"),
        str(prompt_case),
        "--config",
        str(cfg),
    )
    assert r.exit_code == 0
    assert "does not match: the playbook fits faults ['tool_rate_limit']" in flat(r.output)
    # A config stricter than the playbook's explicit gates rejects it, naming both.
    strict = write_config(
        tmp_path / "strict",
        '[store]\nurl = "sqlite:///s.db"\n[remediation]\nauto_above = 0.99\napprove_above = 0.95\n',
    )
    rollback = PLAYBOOKS / "rollback-bad-change.yaml"
    r = invoke("playbook", "test", str(rollback), str(prompt_case), "--config", str(strict))
    assert_failed_cleanly(r, 1)
    assert f"{rollback}:19: gates.auto_above: 0.9 is looser than" in flat(r.output)
    # A playbook stricter than the diagnosis is sure: a suggestion only, and why.
    shy = tmp_path / "shy.yaml"
    shy.write_text(
        rollback.read_text()
        .replace("auto_above: 0.9", "auto_above: 0.99999")
        .replace("approve_above: 0.6", "approve_above: 0.99998")
    )
    doc = json.loads(
        invoke(
            "playbook", "test", str(shy), str(prompt_case), "--json", "--config", str(cfg)
        ).output
    )
    assert doc["gate"] == "suggest"
    # The diagnosis is right and sure (above 0.99): only a near-impossible bar refuses
    # it, and the reasons show as many decimals as tell the two apart.
    below = r"confidence (0\.99\d) is below the (auto|approval) threshold 1\.000"
    found = sorted((m[2], m[1]) for r in doc["reasons"] if (m := re.fullmatch(below, r)))
    assert [gate for gate, _ in found] == ["approval", "auto"], doc["reasons"]
    assert found[0][1] == found[1][1]  # the same confidence, shown the same way


def test_playbook_test_rejects_a_broken_playbook_with_its_line(
    prompt_case: Path, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nmatch:\n  faults: [prompt_regression]\nsteps:\n"
        "  - action: notify\n    message: '{{ compnent }}'\n"
    )
    r = invoke("playbook", "test", str(bad), str(prompt_case), "--config", str(cfg))
    assert_failed_cleanly(r, 1)
    assert f"{bad}:6" in flat(r.output) and "compnent" in r.output


def _proposed(tmp_path: Path) -> tuple[Path, str]:
    """A store with one incident whose rollback waits for an approval."""
    from datetime import timedelta

    from sentinel.adapters.executors import FakeExecutor
    from tests.test_remediation_agent import T0, THROTTLE, _fake_agent, _tool_incident

    agent, store, _ = _fake_agent(tmp_path, [THROTTLE], FakeExecutor())
    try:
        inc = _tool_incident(store, "inc-cli", T0, 0.75)
        agent.run_once([inc], {}, T0 + timedelta(minutes=1))
        (record,) = store.actions("inc-cli")
        assert record.state.value == "proposed"
    finally:
        store.close()
    return tmp_path / "fake.db", record.key


def test_approve_from_the_cli_needs_an_approver_and_is_audited(tmp_path: Path) -> None:
    import getpass

    db, key = _proposed(tmp_path)
    me = f"cli:{getpass.getuser()}"
    nobody = write_config(tmp_path / "a", f'[store]\nurl = "sqlite:///{db}"\n')
    refused = invoke("approve", "inc-cli", "--config", str(nobody))
    assert_failed_cleanly(refused, 1)
    assert f"You may not approve remediation actions ({me}" in flat(refused.output)
    allowed = write_config(
        tmp_path / "b", f'[store]\nurl = "sqlite:///{db}"\n[approvals]\nusers = ["{me}"]\n'
    )
    ok = invoke("approve", "inc-cli", "--config", str(allowed))  # an incident id names it
    assert ok.exit_code == 0, ok.output
    assert f"{key} approved" in ok.output
    again = invoke("approve", key, "--config", str(allowed))
    assert again.exit_code == 0 and "already approved" in again.output
    late = invoke("reject", key, "--reason", "changed my mind", "--config", str(allowed))
    assert_failed_cleanly(late, 1)
    assert "Too late to reject" in flat(late.output)
    entries = [
        json.loads(x)
        for x in invoke(
            "audit", "--json", "--incident", "inc-cli", "--config", str(allowed)
        ).output.splitlines()
    ]
    decisions = [(e["actor"], e["action"]) for e in entries if "approv" in e["action"]]
    assert decisions == [
        (me, "approval_refused"),
        (me, "action_approved"),
    ]


def test_reject_from_the_cli_needs_a_reason_and_keeps_it(tmp_path: Path) -> None:
    import getpass

    db, key = _proposed(tmp_path)
    me = f"cli:{getpass.getuser()}"
    cfg = write_config(
        tmp_path / "c", f'[store]\nurl = "sqlite:///{db}"\n[approvals]\nusers = ["{me}"]\n'
    )
    assert invoke("reject", key, "--config", str(cfg)).exit_code == 2  # --reason is required
    r = invoke("reject", key, "--reason", "wrong tool", "--config", str(cfg))
    assert r.exit_code == 0 and f"{key} rejected" in r.output
    unknown = invoke("approve", "inc-nope", "--config", str(cfg))
    assert_failed_cleanly(unknown, 1)
    assert "no proposed action for 'inc-nope'" in unknown.output
    store = open_store(f"sqlite:///{db}", SystemClock())
    try:
        record = store.get_action(key)
        assert record is not None and record.state.value == "rejected" and record.decided_by == me
        (entry,) = [e for e in store.audit("inc-cli") if e.action == "action_rejected"]
        assert entry.detail["why"] == "wrong tool"
    finally:
        store.close()
