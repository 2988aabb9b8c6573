"""Tests of reading playbook files (``sentinel.playbooks.loader``), of the bundled
playbooks in ``playbooks/`` and of ``sentinel playbook schema | validate``: real files in
``tmp_path``, exact file:line in every message.

What must not live here: the schema's own rules (the model's tests), choosing or running
a playbook (``test_remediation.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from sentinel.cases import FaultKind
from sentinel.cli_playbook import playbook_app, playbook_json_schema
from sentinel.errors import PlaybookError
from sentinel.playbooks.loader import load_playbook, load_playbooks
from sentinel.playbooks.model import (
    GitopsRollback,
    ModelFailover,
    Notify,
    Playbook,
    ShadowMode,
    TemplateContext,
    Throttle,
    render_action,
)
from sentinel.settings import RemediationSettings

PLAYBOOKS = Path(__file__).resolve().parents[1] / "playbooks"
BUNDLED = {
    "model-failover",
    "rollback-bad-change",
    "shadow-model-version",
    "throttle-rate-limited-tool",
}
ENV = {"COLUMNS": "250", "NO_COLOR": "1", "SENTINEL_CONFIG": None, "SENTINEL_STORE_URL": None}
ACTIONS = "gitops_rollback, throttle, shadow_mode, model_failover, http, notify, escalate"

# A valid playbook; the broken ones below change one line of it (line numbers: 1-based).
VALID = """\
name: throttle-search
description: cap the search tool
match:
  faults: [tool_rate_limit]
  components: ["tool:*"]
steps:
  - id: throttle
    action: throttle
    requests_per_minute: 30
    git:
      path: limits.yaml
  - action: notify
    message: "{{ component }} throttled"
undo:
  throttle: revert
"""


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path, remediation: RemediationSettings | None = None) -> list[str]:
    """The lines of the PlaybookError that loading ``path`` raises."""
    with pytest.raises(PlaybookError) as info:
        load_playbook(path, remediation=remediation)
    return str(info.value).splitlines()


def cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(playbook_app)
    return app


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli(), ["playbook", *args], env=ENV)


# --- the bundled playbooks ---------------------------------------------------------------


def test_every_bundled_playbook_loads_against_the_default_config() -> None:
    found = load_playbooks([PLAYBOOKS], remediation=RemediationSettings())
    assert [str(e) for e in found.errors] == []
    assert {p.playbook.name for p in found.playbooks} == BUNDLED
    assert len(found.playbooks) == 4
    for loaded in found.playbooks:
        assert loaded.path.stem == loaded.playbook.name
        assert loaded.playbook.description
        # Stricter than or as strict as config.toml's defaults, never looser.
        assert loaded.playbook.gates.auto_above >= 0.9
        assert loaded.playbook.gates.approve_above >= 0.6


def test_bundled_playbooks_cover_the_faults_their_actions_fix() -> None:
    found = load_playbooks([PLAYBOOKS])
    faults = {f for p in found.playbooks for f in p.playbook.match.faults}
    assert faults == {
        FaultKind.PROMPT_REGRESSION,
        FaultKind.CONFIG_CHANGE,
        FaultKind.TOOL_SCHEMA_CHANGE,
        FaultKind.MODEL_VERSION_CHANGE,
        FaultKind.TOOL_RATE_LIMIT,
        FaultKind.MODEL_PROVIDER_ERRORS,
        FaultKind.MODEL_PROVIDER_LATENCY,
    }


def test_bundled_playbooks_point_editors_at_the_bundled_schema() -> None:
    for path in sorted(PLAYBOOKS.glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first == "# yaml-language-server: $schema=playbook.schema.json", path
    # The bundled schema is what `sentinel playbook schema` prints today.
    bundled = json.loads((PLAYBOOKS / "playbook.schema.json").read_text(encoding="utf-8"))
    assert bundled == playbook_json_schema(), (
        "regenerate: sentinel playbook schema --out playbooks/playbook.schema.json"
    )


def bundled(name: str) -> Playbook:
    return load_playbook(PLAYBOOKS / f"{name}.yaml")


def ctx(component: str, fault: str, **change: str) -> TemplateContext:
    return TemplateContext(incident_id="inc-42", component=component, fault=fault, **change)


def test_rollback_renders_the_change_and_its_repo() -> None:
    book = bundled("rollback-bad-change")
    c = ctx(
        "prompt:support-agent",
        "prompt_regression",
        change_id="abc1234",
        change_repo="agent-config",
        change_path="prompts/support-agent/system.md",
    )
    rollback, tell = (render_action(s, c) for s in book.steps)
    assert isinstance(rollback, GitopsRollback)
    assert (rollback.change, rollback.repo) == ("abc1234", "agent-config")
    assert isinstance(tell, Notify)
    assert tell.message == (
        "Reverted abc1234 in agent-config: it is the likely cause of prompt_regression on "
        "prompt:support-agent (incident inc-42)."
    )
    assert book.step_ids() == ["rollback", "tell"]
    assert book.undo_of("rollback") == "revert"
    assert book.verification.slis == ()  # all of the incident's SLIs


def test_rollback_without_a_linked_change_cannot_render() -> None:
    book = bundled("rollback-bad-change")
    with pytest.raises(PlaybookError, match="needs 'change_id'"):
        render_action(book.steps[0], ctx("prompt:support-agent", "prompt_regression"))


def test_throttle_renders_the_tool_and_its_limit_file() -> None:
    book = bundled("throttle-rate-limited-tool")
    throttle, tell = (render_action(s, ctx("tool:search", "tool_rate_limit")) for s in book.steps)
    assert isinstance(throttle, Throttle)
    assert throttle.target == "tool:search"
    assert throttle.requests_per_minute == 30
    assert throttle.git is not None
    assert (throttle.git.repo, throttle.git.path) == (None, "limits.yaml")
    assert throttle.http is None
    assert isinstance(tell, Notify)
    assert tell.message == (
        "tool:search is throttled (limits.yaml: rate_limits) after rate-limit errors "
        "(incident inc-42)."
    )
    assert book.guardrails.blast_radius.paths == ("limits.yaml",)


def test_shadow_mode_renders_the_model_version() -> None:
    book = bundled("shadow-model-version")
    c = ctx("model:gpt-4o", "model_version_change", change_id="abc1234")
    shadow, tell = (render_action(s, c) for s in book.steps)
    assert isinstance(shadow, ShadowMode)
    assert shadow.target == "model:gpt-4o"
    assert (shadow.git.repo, shadow.git.path) == (None, "routing.yaml")
    assert isinstance(tell, Notify)
    assert tell.message.startswith("model:gpt-4o is now in shadow mode (routing.yaml)")
    assert book.undo_of("shadow") == "revert"


def test_model_failover_renders_the_model_name_and_reads_the_fallback_from_the_file() -> None:
    book = bundled("model-failover")
    failover, tell = (
        render_action(s, ctx("model:gpt-4o", "model_provider_errors")) for s in book.steps
    )
    assert isinstance(failover, ModelFailover)
    assert (failover.model, failover.fallback, failover.agent) == ("gpt-4o", None, None)
    assert (failover.git.repo, failover.git.path) == (None, "agents.yaml")
    assert isinstance(tell, Notify)
    assert tell.message == (
        "Agents on gpt-4o were moved to its fallback (agents.yaml) after "
        "model_provider_errors (incident inc-42)."
    )


# --- sentinel playbook schema ------------------------------------------------------------


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def test_schema_command_prints_a_draft_7_json_schema_of_playbooks() -> None:
    result = invoke("schema")
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["title"] == "sentinel remediation playbook"
    assert set(schema["properties"]) == set(Playbook.model_fields)
    assert set(schema["required"]) == {"name", "match", "steps"}
    assert schema["additionalProperties"] is False
    # Every reference resolves inside the document (draft-07 keeps them in definitions).
    assert "$defs" not in schema
    for ref in refs(schema):
        assert ref.startswith("#/definitions/"), ref
        assert ref.removeprefix("#/definitions/") in schema["definitions"], ref
    steps = schema["properties"]["steps"]["items"]["oneOf"]
    actions = {
        schema["definitions"][s["$ref"].rsplit("/", 1)[1]]["properties"]["action"]["const"]
        for s in steps
    }
    assert ", ".join(sorted(actions)) == ", ".join(sorted(ACTIONS.split(", ")))


def test_schema_command_writes_the_file(tmp_path: Path) -> None:
    target = tmp_path / "playbook.schema.json"
    result = invoke("schema", "--out", str(target))
    assert result.exit_code == 0, result.output
    assert json.loads(target.read_text(encoding="utf-8")) == playbook_json_schema()
    assert str(target) in result.output


# --- broken playbooks: every problem with its file and line ------------------------------


def broken(tmp_path: Path, old: str, new: str) -> Path:
    assert old in VALID
    return write(tmp_path, "broken.yaml", VALID.replace(old, new, 1))


def test_the_valid_example_is_valid(tmp_path: Path) -> None:
    book = load_playbook(write(tmp_path, "ok.yaml", VALID))
    assert book.name == "throttle-search"
    assert book.step_ids() == ["throttle", "notify-2"]


def test_bad_yaml_syntax_names_the_line(tmp_path: Path) -> None:
    path = broken(tmp_path, "faults: [tool_rate_limit]", "faults: tool_rate_limit: x")
    assert errors_of(path) == [
        f"{path}:4: not valid YAML: mapping values are not allowed here",
    ]


def test_an_unclosed_bracket_names_where_it_was_opened(tmp_path: Path) -> None:
    path = write(tmp_path, "open.yaml", "name: x\nmatch:\n  faults: [tool_rate_limit\n")
    assert errors_of(path) == [
        f"{path}:4: not valid YAML: while parsing a flow sequence started on line 3: "
        "expected ',' or ']', but got '<stream end>'"
    ]


def test_unknown_action_lists_the_known_ones_as_plain_values(tmp_path: Path) -> None:
    path = broken(tmp_path, "action: throttle", "action: nope")
    assert errors_of(path) == [
        f"{path}:7: steps[0]: unknown action 'nope'; expected one of: {ACTIONS}",
    ]


def test_missing_action_lists_the_known_ones(tmp_path: Path) -> None:
    path = broken(tmp_path, "  - action: notify", "  - actoin: notify")
    assert errors_of(path) == [
        f"{path}:12: steps[1]: no 'action' key; expected one of: {ACTIONS}",
    ]


def test_unknown_template_variable_names_the_line_and_the_known_ones(tmp_path: Path) -> None:
    path = broken(tmp_path, "{{ component }} throttled", "{{ compnent }} throttled")
    assert errors_of(path) == [
        f"{path}:13: steps[1].message: unknown template variable 'compnent' (did you mean "
        "'component'?) in '{{ compnent }} throttled'; known: incident_id, component, "
        "component_kind, component_name, fault, change_id, change_repo, change_path",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ component throttled", "malformed template in '{{ component throttled': every "),
        ("component }} throttled", "malformed template in 'component }} throttled': every "),
        ("{component} throttled", "'{component}' in '{component} throttled' is not a template"),
    ],
)
def test_malformed_braces_are_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = broken(tmp_path, "{{ component }} throttled", text)
    [error] = errors_of(path)
    assert error.startswith(f"{path}:13: steps[1].message: {expected}")


def test_templates_in_a_literal_block_are_found_on_their_own_line(tmp_path: Path) -> None:
    path = broken(
        tmp_path,
        '    message: "{{ component }} throttled"\n',
        "    message: |\n      {{ component }} throttled\n      by {{ incident }}\n",
    )
    [error] = errors_of(path)
    assert error.startswith(f"{path}:15: steps[1].message: unknown template variable 'incident'")


def test_templates_in_undo_actions_are_checked(tmp_path: Path) -> None:
    path = broken(
        tmp_path,
        "  throttle: revert\n",
        "  throttle: revert\n  notify-2:\n    action: notify\n    message: '{{ fualt }}'\n",
    )
    [error] = errors_of(path)
    assert error.startswith(
        f"{path}:18: undo.notify-2.message: unknown template variable 'fualt' "
        "(did you mean 'fault'?)"
    )


def test_a_wrong_type_names_the_key_and_the_value(tmp_path: Path) -> None:
    path = broken(tmp_path, "requests_per_minute: 30", "requests_per_minute: lots")
    assert errors_of(path) == [
        f"{path}:9: steps[0].requests_per_minute: expected a valid number, unable to parse "
        "string as a number; got 'lots'",
    ]


def test_a_missing_required_field_names_its_parent_line(tmp_path: Path) -> None:
    path = broken(tmp_path, "    requests_per_minute: 30\n", "")
    assert errors_of(path) == [
        f"{path}:7: steps[0].requests_per_minute: required key is missing",
    ]


def test_a_missing_top_level_field(tmp_path: Path) -> None:
    path = write(tmp_path, "nomatch.yaml", "# a comment first\nname: x\nsteps: []\n")
    assert errors_of(path) == [
        f"{path}:2: match: required key is missing",
        f"{path}:3: steps: Tuple should have at least 1 item after validation, not 0",
    ]


def test_an_unknown_key_is_a_typo(tmp_path: Path) -> None:
    path = broken(tmp_path, "requests_per_minute: 30", "requests_per_minite: 30")
    assert errors_of(path) == [
        f"{path}:7: steps[0].requests_per_minute: required key is missing",
        f"{path}:9: steps[0].requests_per_minite: unknown key (a typo?)",
    ]


def test_an_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "typo.yaml", VALID + "verfication:\n  window_minutes: 5\n")
    assert errors_of(path) == [f"{path}:16: verfication: unknown key (a typo?)"]


def test_undo_naming_a_missing_step_names_the_undo_line(tmp_path: Path) -> None:
    path = broken(tmp_path, "  throttle: revert", "  thrtle: revert")
    assert errors_of(path) == [
        f"{path}:15: undo.thrtle: undo names step 'thrtle', which is not a step; "
        "steps: ['throttle', 'notify-2']",
    ]


def test_a_bad_undo_strategy(tmp_path: Path) -> None:
    path = broken(tmp_path, "  throttle: revert", "  throttle: revrt")
    assert errors_of(path) == [
        f"{path}:15: undo.throttle: expected 'revert' or 'none'; got 'revrt'",
    ]


def test_every_error_of_a_file_is_listed_in_line_order(tmp_path: Path) -> None:
    text = (
        VALID.replace("requests_per_minute: 30", "requests_per_minute: lots")
        .replace("{{ component }}", "{{ compnent }}")
        .replace("faults: [tool_rate_limit]", "faults: [tool_rate_limit, nope]")
    )
    path = write(tmp_path, "many.yaml", "typo: 1\n" + text)
    lines = errors_of(path)
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"{path}:1",
        f"{path}:5",
        f"{path}:10",
        f"{path}:14",
    ]
    assert lines[1].startswith(f"{path}:5: match.faults[1]: expected 'prompt_regression', ")
    assert lines[1].endswith("; got 'nope'")


LOOSE = VALID.replace("steps:\n", "gates:\n  auto_above: 0.8\n  approve_above: 0.5\nsteps:\n")


def test_gates_looser_than_the_config_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "loose.yaml", LOOSE)
    assert errors_of(path, RemediationSettings()) == [
        f"{path}:7: gates.auto_above: 0.8 is looser than the config's remediation.auto_above "
        "= 0.9: a playbook may only make gates stricter, unless "
        "remediation.allow_looser_gates = true",
        f"{path}:8: gates.approve_above: 0.5 is looser than the config's "
        "remediation.approve_above = 0.6: a playbook may only make gates stricter, unless "
        "remediation.allow_looser_gates = true",
    ]


def test_looser_gates_are_accepted_when_the_config_allows_them(tmp_path: Path) -> None:
    path = write(tmp_path, "loose.yaml", LOOSE)
    book = load_playbook(path, remediation=RemediationSettings(allow_looser_gates=True))
    assert (book.gates.auto_above, book.gates.approve_above) == (0.8, 0.5)
    # Without a config, there is nothing to be looser than.
    assert load_playbook(path).gates.auto_above == 0.8


def test_gates_a_playbook_omits_are_the_configs(tmp_path: Path) -> None:
    path = write(tmp_path, "ok.yaml", VALID)
    strict = RemediationSettings(auto_above=0.97, approve_above=0.75)
    book = load_playbook(path, remediation=strict)
    assert (book.gates.auto_above, book.gates.approve_above) == (0.97, 0.75)
    half = write(
        tmp_path, "half.yaml", VALID.replace("steps:\n", "gates:\n  auto_above: 0.99\nsteps:\n")
    )
    book = load_playbook(half, remediation=strict)
    assert (book.gates.auto_above, book.gates.approve_above) == (0.99, 0.75)


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.yaml", "# nothing yet\n")
    assert errors_of(path) == [
        f"{path}:1: the file is empty; a playbook is a mapping with at least name, match and steps"
    ]


def test_a_file_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "list.yaml", "# steps only\n- action: notify\n")
    assert errors_of(path) == [
        f"{path}:2: a playbook is a mapping (name: ..., match: ..., steps: ...), got a list: "
        "[{'action': 'notify'}]"
    ]


def test_a_duplicate_key_is_a_yaml_error(tmp_path: Path) -> None:
    path = write(tmp_path, "dup.yaml", VALID + "name: again\n")
    [error] = errors_of(path)
    assert error.startswith(f"{path}:16: not valid YAML: ")
    assert 'duplicate key "name"' in error


# --- many files --------------------------------------------------------------------------


def test_a_bad_file_is_reported_and_skipped_the_good_one_loads(tmp_path: Path) -> None:
    good = write(tmp_path, "a-good.yml", VALID)
    bad = write(tmp_path, "b-bad.yaml", VALID.replace("action: throttle", "action: nope"))
    write(tmp_path, "notes.txt", "not a playbook")
    write(tmp_path, ".#a-good.yaml", "an editor's lock file")
    found = load_playbooks([tmp_path])
    assert [(p.path, p.playbook.name) for p in found.playbooks] == [(good, "throttle-search")]
    assert [str(e).split(": ", 1)[0] for e in found.errors] == [f"{bad}:7"]


def test_duplicate_names_are_an_error_on_the_second_file(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", VALID)
    second = write(tmp_path, "b.yaml", "# again\n" + VALID)
    found = load_playbooks([tmp_path])
    assert [p.path for p in found.playbooks] == [first]
    assert [str(e) for e in found.errors] == [
        f"{second}:2: name: 'throttle-search' is already the name of the playbook in "
        f"{first}:1; names must be unique"
    ]


def test_a_missing_path_is_an_error_and_the_rest_still_loads(tmp_path: Path) -> None:
    good = write(tmp_path, "ok.yaml", VALID)
    found = load_playbooks([tmp_path / "nope", good, tmp_path])
    assert [p.path for p in found.playbooks] == [good]  # given twice, loaded once
    assert [str(e) for e in found.errors] == [f"{tmp_path / 'nope'}: no such file or folder"]


def test_an_empty_folder_holds_no_playbooks(tmp_path: Path) -> None:
    found = load_playbooks([tmp_path])
    assert (found.playbooks, found.errors) == ((), ())


# --- sentinel playbook validate ----------------------------------------------------------


def config(tmp_path: Path, body: str = "") -> Path:
    return write(tmp_path, "config.toml", body)


def test_validate_passes_on_the_bundled_folder(tmp_path: Path) -> None:
    result = invoke("validate", str(PLAYBOOKS), "--config", str(config(tmp_path)))
    assert result.exit_code == 0, result.output
    for name in BUNDLED:
        assert f"ok {name} ({PLAYBOOKS / name}.yaml): faults " in result.output
    assert "ok throttle-rate-limited-tool" in result.output
    assert "faults tool_rate_limit; components tool:*; gates auto >= 0.9, approve >= 0.6" in (
        result.output
    )
    assert "4 valid playbook(s), 0 failed" in result.output


def test_validate_defaults_to_the_configured_folder(tmp_path: Path) -> None:
    write(tmp_path / "books", "ok.yaml", VALID)
    cfg = config(tmp_path, '[remediation]\nplaybooks_dir = "books"\n')
    result = invoke("validate", "--config", str(cfg))
    assert result.exit_code == 0, result.output
    assert f"ok throttle-search ({tmp_path / 'books' / 'ok.yaml'})" in result.output


def test_validate_with_the_project_config_checks_the_bundled_playbooks() -> None:
    result = invoke("validate")
    assert result.exit_code == 0, result.output
    assert f"in {PLAYBOOKS}" in result.output


def test_validate_fails_with_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "books", "bad.yaml", VALID.replace("30", "lots"))
    result = invoke("validate", str(bad), "--config", str(config(tmp_path)))
    assert result.exit_code == 1, result.output
    assert f"{bad}:9: steps[0].requests_per_minute: expected a valid number" in result.output
    assert "0 valid playbook(s), 1 failed" in result.output


def test_validate_applies_the_configs_gates(tmp_path: Path) -> None:
    loose = write(tmp_path / "books", "loose.yaml", LOOSE)
    strict = invoke("validate", str(loose), "--config", str(config(tmp_path)))
    assert strict.exit_code == 1, strict.output
    assert f"{loose}:7: gates.auto_above: 0.8 is looser" in strict.output
    cfg = config(tmp_path, "[remediation]\nallow_looser_gates = true\n")
    allowed = invoke("validate", str(loose), "--config", str(cfg))
    assert allowed.exit_code == 0, allowed.output


def test_validate_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    cfg = config(tmp_path, "[remediation]\nauto_above = 'high'\n")
    result = invoke("validate", str(PLAYBOOKS), "--config", str(cfg))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")
    assert str(cfg) in result.stderr
    assert "Traceback" not in result.output
    missing = invoke("validate", "--config", str(tmp_path / "nope.toml"))
    assert missing.exit_code == 2
    assert f"{tmp_path / 'nope.toml'}: config file not found" in missing.stderr
