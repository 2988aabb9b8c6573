"""Tests of ``sentinel detect CASE_DIR [--json]``: the exact JSON shape, a readable summary,
and that the case's [truth] plays no part.

What must not live here: the detectors themselves (test_detection.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentinel.cases import FaultKind, write_case
from sentinel.cli import app
from sentinel.sim import FaultSpec, Topology, simulate_case

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cases") / "tool-latency"
    spec = FaultSpec(topology=Topology.SUPPORT, fault=FaultKind.TOOL_LATENCY, seed=255985076)
    write_case(simulate_case(spec), folder)
    return folder


def run(*args: str) -> str:
    result = CliRunner().invoke(app, ["detect", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_json_has_exactly_the_documented_shape(case_dir: Path) -> None:
    doc = json.loads(run(str(case_dir), "--json"))
    assert set(doc) == {"case", "incidents"}
    assert doc["case"] == "sim-support-tool_latency-255985076"
    assert len(doc["incidents"]) == 1
    for incident in doc["incidents"]:
        assert set(incident) == {"onset", "anomalies"}
        assert RFC3339.match(incident["onset"])
        assert incident["anomalies"]
        for a in incident["anomalies"]:
            assert set(a) == {"component", "sli", "onset", "baseline", "observed"}
            assert RFC3339.match(a["onset"])
            assert isinstance(a["baseline"], float) and isinstance(a["observed"], float)
    components = {a["component"] for a in doc["incidents"][0]["anomalies"]}
    assert "tool:order_status" in components


def test_the_truth_is_never_read(case_dir: Path, tmp_path: Path) -> None:
    toml = (case_dir / "case.toml").read_text(encoding="utf-8")
    assert "[truth]" in toml
    broken = tmp_path / "broken-truth"
    broken.mkdir()
    for f in case_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    # A truth table that would not even validate, and a misleading fault start.
    head = toml.split("[truth]")[0]
    (broken / "case.toml").write_text(
        head + '[truth]\nroot_cause = "not an id"\nfault_start = "never"\n', encoding="utf-8"
    )
    assert run(str(broken), "--json") == run(str(case_dir), "--json")


def test_without_json_a_readable_summary(case_dir: Path) -> None:
    text = run(str(case_dir))
    assert "1 incident(s)" in text
    assert "tool:order_status latency_p50" in text


def test_a_missing_case_is_one_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["detect", str(tmp_path / "nope"), "--json"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
