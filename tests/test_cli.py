"""Tests of the ``sentinel`` command line: ``ingest`` and ``components`` against a real
SQLite store, their error paths and exit codes, in process (typer's ``CliRunner``) and
once as the installed console script.

What must not live here: tests of the stages the commands call (cases, store, settings
have their own suites); here only what a user of the command sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from sentinel.adapters.db import open_store
from sentinel.adapters.otlp import decode_json_object
from sentinel.cases import Case, read_case
from sentinel.cli import app
from sentinel.clock import SystemClock

CASE_DIR = Path("/work/shared/cases/public-01-prompt-regression")
SENTINEL = Path(sys.executable).parent / "sentinel"
# Wide enough that rich neither wraps the messages nor folds table cells.
ENV = {"COLUMNS": "250", "NO_COLOR": "1", "SENTINEL_CONFIG": None, "SENTINEL_STORE_URL": None}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=ENV)


def flat(text: str) -> str:
    """The text with every run of whitespace as one space (rich may wrap lines)."""
    return " ".join(text.split())


def assert_failed_cleanly(result: Result, code: int) -> None:
    """The command failed with ``code`` through its own error path: a SystemExit, not an
    exception escaping to the runner (which a real process would print as a traceback)."""
    assert result.exit_code == code, (result.output, result.exception)
    assert result.exc_info is None or result.exc_info[0] is SystemExit, result.exc_info
    assert "Traceback" not in result.output


def write_config(folder: Path, body: str = '[store]\nurl = "sqlite:///s.db"\n') -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "config.toml"
    cfg.write_text(body)
    return cfg


@dataclass(frozen=True)
class Ingested:
    cfg: Path
    first: Result
    case: Case


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Ingested:
    """The public case ingested once, by the in-process CLI, into a fresh store."""
    cfg = write_config(tmp_path_factory.mktemp("cli-store"))
    first = invoke("ingest", str(CASE_DIR), "--config", str(cfg))
    return Ingested(cfg=cfg, first=first, case=read_case(CASE_DIR))


# --- ingest ---------------------------------------------------------------------------------


def test_ingest_prints_what_it_stored(ingested: Ingested) -> None:
    result, case = ingested.first, ingested.case
    assert result.exit_code == 0, result.output + result.stderr
    text = flat(result.stdout)
    assert "public-01-prompt-regression" in text
    assert f"{len(case.spans)} new spans (of {len(case.spans)})" in text
    assert f"{len(case.samples)} new samples" in text
    assert f"{len(case.changes)} new changes" in text
    assert "rejected" not in text  # the case has no unusable spans


def test_a_relative_sqlite_url_is_resolved_against_the_config_folder(ingested: Ingested) -> None:
    assert (ingested.cfg.parent / "s.db").is_file()
    assert str(ingested.cfg.parent / "s.db") in flat(ingested.first.stdout).replace(" ", "")


def test_ingest_again_as_the_installed_script_stores_nothing_new(ingested: Ingested) -> None:
    n_spans = len(ingested.case.spans)
    done = subprocess.run(
        [str(SENTINEL), "ingest", str(CASE_DIR), "--config", str(ingested.cfg)],
        capture_output=True,
        text=True,
        env={**_clean_env(), "COLUMNS": "250"},
        cwd=ingested.cfg.parent.parent,  # not the config's folder: paths come from the file
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = flat(done.stdout)
    assert f"0 new spans (of {n_spans})" in text
    assert "0 new samples" in text
    assert "0 new changes" in text
    assert "Traceback" not in done.stderr


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}


# --- components -----------------------------------------------------------------------------


def _components_json(cfg: Path) -> list[dict[str, Any]]:
    result = invoke("components", "--json", "--config", str(cfg))
    assert result.exit_code == 0, result.output + result.stderr
    doc = json.loads(result.stdout)
    assert isinstance(doc, list)
    return doc


def test_components_json_counts_what_the_case_holds(ingested: Ingested) -> None:
    case = ingested.case
    spans = Counter(s.component for s in case.spans)
    errors = Counter(s.component for s in case.spans if s.error_type is not None)
    peers = Counter(s.peer for s in case.spans if s.peer is not None)
    samples = Counter(s.component for s in case.samples if s.component is not None)
    expected = sorted(set(spans) | set(peers) | set(samples))

    rows = _components_json(ingested.cfg)
    by_name = {r["component"]: r for r in rows}
    assert [r["component"] for r in rows] == expected  # sorted, each once
    for name, row in by_name.items():
        counted = (spans[name], errors[name], peers[name], samples[name])
        shown = (row["spans"], row["errors"], row["called_by_client_spans"], row["samples"])
        assert shown == counted, name


def test_components_json_time_range_covers_spans_peers_and_samples(ingested: Ingested) -> None:
    case = ingested.case
    times: dict[str, list[datetime]] = {}
    for s in case.spans:
        times.setdefault(s.component, []).append(s.start)
        if s.peer is not None:
            times.setdefault(s.peer, []).append(s.start)
    for m in case.samples:
        if m.component is not None:
            times.setdefault(m.component, []).append(m.time)
    for row in _components_json(ingested.cfg):
        seen = times[row["component"]]
        first, last = datetime.fromisoformat(row["first"]), datetime.fromisoformat(row["last"])
        assert abs((first - min(seen)).total_seconds()) < 1e-3, row
        assert abs((last - max(seen)).total_seconds()) < 1e-3, row
        assert first.utcoffset() is not None


def test_components_of_the_case_include_agents_tools_peers_and_metric_only_ones(
    ingested: Ingested,
) -> None:
    by_name = {r["component"]: r for r in _components_json(ingested.cfg)}
    assert by_name["agent:customer-care-agent"]["spans"] > 0
    assert by_name["tool:crm_lookup"]["spans"] > 0
    # crm-db is not instrumented: it is known from the client spans that call it.
    crm_db = by_name["service:crm-db"]
    assert crm_db["called_by_client_spans"] > 0
    assert crm_db["spans"] == 0
    metric_only = [r for r in by_name.values() if r["spans"] == 0 and r["samples"] > 0]
    assert metric_only, "the case has components seen only in metrics"
    assert {"service:crm-db", "service:orders-db"} <= {r["component"] for r in metric_only}


def test_components_table_lists_every_component(ingested: Ingested) -> None:
    result = invoke("components", "--config", str(ingested.cfg))
    assert result.exit_code == 0, result.output + result.stderr
    names = [r["component"] for r in _components_json(ingested.cfg)]
    for name in names:
        assert name in result.stdout
    row = next(line for line in result.stdout.splitlines() if "agent:customer-care-agent" in line)
    agent = next(
        r for r in _components_json(ingested.cfg) if r["component"] == "agent:customer-care-agent"
    )
    assert str(agent["spans"]) in row.split()  # the span count is on the component's row


def test_an_empty_store_prints_a_hint_to_point_an_exporter_at_sentinel(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    result = invoke("components", "--config", str(cfg))
    assert result.exit_code == 0, result.output + result.stderr
    text = flat(result.stdout)
    assert "No components yet" in text
    assert "OpenTelemetry exporter" in text
    assert "sentinel ingest" in text


def test_an_empty_store_as_json_is_an_empty_list(tmp_path: Path) -> None:
    assert _components_json(write_config(tmp_path)) == []


# --- errors ---------------------------------------------------------------------------------


def test_ingest_of_a_folder_without_case_toml_fails_with_one_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg")
    broken = tmp_path / "broken-case"
    broken.mkdir()
    (broken / "traces.jsonl").write_text("")
    result = invoke("ingest", str(broken), "--config", str(cfg))
    assert_failed_cleanly(result, 1)
    err = flat(result.stderr)
    assert err.startswith("error:")
    assert str(broken / "case.toml") in err
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_ingest_of_a_missing_folder_fails(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg")
    missing = tmp_path / "no-such-case"
    result = invoke("ingest", str(missing), "--config", str(cfg))
    assert_failed_cleanly(result, 1)
    assert "error:" in result.stderr
    assert str(missing) in flat(result.stderr)
    assert "Traceback" not in result.output


def test_broken_case_as_the_installed_script_prints_no_traceback(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg")
    broken = tmp_path / "broken-case"
    broken.mkdir()
    done = subprocess.run(
        [str(SENTINEL), "ingest", str(broken), "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "error:" in done.stderr
    assert str(broken / "case.toml") in flat(done.stderr)
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "body",
    [
        '[store]\nurl = "mysql://db/sentinel"\n',  # an unsupported backend
        '[store]\nurll = "sqlite:///s.db"\n',  # an unknown key
        "[store\nurl = 1\n",  # not TOML
        '[server]\nport = "4318"\n',  # a quoted number
    ],
)
@pytest.mark.parametrize("command", ["components", "ingest"])
def test_an_invalid_config_exits_2(tmp_path: Path, body: str, command: str) -> None:
    cfg = write_config(tmp_path, body)
    args = ["ingest", str(CASE_DIR)] if command == "ingest" else ["components"]
    result = invoke(*args, "--config", str(cfg))
    assert_failed_cleanly(result, 2)
    assert "error:" in result.stderr
    assert str(cfg) in flat(result.stderr)
    assert "Traceback" not in result.output
    assert not (tmp_path / "s.db").exists()


def test_a_config_file_that_does_not_exist_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = invoke("components", "--config", str(missing))
    assert_failed_cleanly(result, 2)
    assert "error:" in result.stderr
    assert str(missing) in flat(result.stderr)


def _case_toml_with_an_unknown_table(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "case.toml").write_text(
        '[case]\nid = "x"\nstart = 2026-01-01T00:00:00Z\nend = 2026-01-01T01:00:00Z\n'
        "\n[extra]\na = 1\n"
    )
    (folder / "traces.jsonl").write_text("")
    return folder


def test_error_messages_are_printed_as_they_are_not_as_markup(tmp_path: Path) -> None:
    # The case format's own message names the tables "[case] and [truth]": rich must not
    # read them as style tags (and drop them).
    cfg = write_config(tmp_path / "cfg")
    case = _case_toml_with_an_unknown_table(tmp_path / "extra-table")
    result = invoke("ingest", str(case), "--config", str(cfg))
    assert_failed_cleanly(result, 1)
    err = flat(result.stderr)
    assert "unknown top-level table 'extra'" in err
    assert "[case] and [truth]" in err


def test_a_path_that_looks_like_markup_fails_cleanly(tmp_path: Path) -> None:
    # Folders named "notes[" and "draft]": the path holds "[/draft]", which is text, not
    # a closing tag.
    cfg = write_config(tmp_path / "cfg")
    odd = tmp_path / "notes[" / "draft]"
    odd.mkdir(parents=True)
    result = invoke("ingest", str(odd), "--config", str(cfg))
    assert_failed_cleanly(result, 1)
    assert str(odd / "case.toml") in flat(result.stderr)


def test_component_names_with_brackets_are_listed_verbatim(tmp_path: Path) -> None:
    # Names come from telemetry (here gen_ai.request.model): the table shows them as
    # text, never as rich markup.
    models = ["llama3[q4]", "mistral[/v2]"]
    cfg = write_config(tmp_path)

    def kv(key: str, value: str) -> dict[str, Any]:
        return {"key": key, "value": {"stringValue": value}}

    spans = [
        {
            "traceId": "a" * 32,
            "spanId": f"{i + 1:016x}",
            "name": "chat",
            "startTimeUnixNano": "1796000000000000000",
            "endTimeUnixNano": "1796000000000001000",
            "attributes": [kv("gen_ai.operation.name", "chat"), kv("gen_ai.request.model", m)],
        }
        for i, m in enumerate(models)
    ]
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [kv("service.name", "s")]},
                "scopeSpans": [{"spans": spans}],
            }
        ]
    }
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", SystemClock())
    try:
        assert store.add_spans(decode_json_object(doc).spans) == 2
    finally:
        store.close()

    assert [r["component"] for r in _components_json(cfg)] == [f"model:{m}" for m in models]
    result = invoke("components", "--config", str(cfg))
    assert result.exc_info is None or result.exc_info[0] is SystemExit, result.exc_info
    assert result.exit_code == 0
    for m in models:
        assert f"model:{m}" in result.stdout
