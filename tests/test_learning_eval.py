"""``sentinel eval`` and the Learning Agent's scoring and calibration, on a simulated
archive: 12 simulated cases (30-minute windows, to keep the suite fast) beside a corrupt
case folder, a case whose truth names a component it never mentions, and a case without
truth. The command runs in process (typer's
``CliRunner``, mounted on a local app) against baselines written by itself.

What must not live here: the engine's accuracy on the benchmark (``bench/rca.py``),
ranking itself (``test_rca_rank``), the case format (``test_cases``).
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from sentinel.cases import Case, write_case
from sentinel.cli_eval import eval_archive
from sentinel.learning.calibration import (
    GRID,
    fit_calibration,
    heldout_calibration,
    heldout_split,
    recalibrated,
)
from sentinel.learning.scoring import (
    EvalReport,
    Outcome,
    Scores,
    evaluate_archive,
    known_components,
    regressions,
    report_of,
    score,
)
from sentinel.rca.rank import DEFAULT_CALIBRATION, Calibration, softmax_confidences
from sentinel.settings import Settings
from sentinel.sim import simulate_case, suite

N_CASES = 12
SEED = 5
MINUTES = 30
BAD = {"corrupt", "unknown-component", "no-truth"}
# Far too unsure: a top confidence of some 0.2 where the engine is right four times in five.
UNDERCONFIDENT = Calibration(temperature=3.0, other=3.0)
# Wide enough that rich neither wraps the messages nor folds table cells.
ENV = {"COLUMNS": "250", "NO_COLOR": "1", "SENTINEL_CONFIG": None, "SENTINEL_STORE_URL": None}

app = typer.Typer()
app.command("eval")(eval_archive)


@app.callback()
def _group() -> None:
    """Keeps ``eval`` a sub-command (typer runs a lone command as the app itself)."""


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["eval", *args], env=ENV)


def assert_exit(result: Result, code: int) -> None:
    """The command ended with ``code`` through its own path, never a traceback."""
    assert result.exit_code == code, (result.output, result.exception)
    assert result.exc_info is None or result.exc_info[0] is SystemExit, result.exc_info
    assert "Traceback" not in result.output


@dataclass(frozen=True)
class Archive:
    root: Path
    cases: tuple[Case, ...]  # the good ones, as simulated


@dataclass(frozen=True)
class Evaluated:
    report: EvalReport
    progress: tuple[tuple[int, int, str], ...]


def _renamed(case: Case, new_id: str, *, tiny: bool = False, **truth: object) -> Case:
    """The case under another id, with its truth changed (none if no change is given);
    ``tiny``: with a sliver of its metrics only, for a case that is never diagnosed."""
    assert case.truth is not None
    return dataclasses.replace(
        case,
        meta=case.meta.model_copy(update={"id": new_id}),
        truth=case.truth.model_copy(update=truth) if truth else None,
        **({"spans": (), "samples": case.samples[:200]} if tiny else {}),
    )


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    root = tmp_path_factory.mktemp("archive")
    cases = [
        simulate_case(dataclasses.replace(spec, minutes=MINUTES)) for spec in suite(N_CASES, SEED)
    ]
    for case in cases:
        write_case(case, root / case.meta.id, gzip=False)
    corrupt = root / "corrupt"
    corrupt.mkdir()
    (corrupt / "case.toml").write_text('[case\nid = "corrupt"\n')
    write_case(
        _renamed(cases[1], "unknown-component", tiny=True, root_cause="tool:no-such-tool"),
        root / "unknown-component",
        gzip=False,
    )
    write_case(_renamed(cases[2], "no-truth", tiny=True), root / "no-truth", gzip=False)
    (root / ".git").mkdir()  # an archive that is a git repository
    return Archive(root, tuple(cases))


@pytest.fixture(scope="module")
def evaluated(archive: Archive) -> Evaluated:
    calls: list[tuple[int, int, str]] = []
    report = evaluate_archive(
        archive.root,
        Settings(),
        progress=lambda done, total, name: calls.append((done, total, name)),
    )
    return Evaluated(report, tuple(calls))


# --- scoring ----------------------------------------------------------------------------


def test_the_good_cases_are_scored_and_the_bad_ones_listed_with_the_reason(
    archive: Archive, evaluated: Evaluated
) -> None:
    report = evaluated.report
    reasons = {s.case: s.reason for s in report.skipped}
    assert set(reasons) == BAD
    assert "not valid TOML" in reasons["corrupt"] and "case.toml" in reasons["corrupt"]
    assert "unknown component" in reasons["unknown-component"]
    assert "'tool:no-such-tool'" in reasons["unknown-component"]
    assert "no [truth]" in reasons["no-truth"]

    assert report.overall.n == N_CASES
    assert report.weak == 0 and not any(o.weak for o in report.outcomes)
    truths = {c.meta.id: c.truth for c in archive.cases}
    for o in report.outcomes:
        truth = truths[o.case]
        assert truth is not None and (o.truth, o.fault) == (truth.root_cause, truth.fault)
        assert [c for c, _ in o.scores] == list(o.ranked)
        assert (o.top_confidence is None) == (not o.ranked)
    assert set(report.by_fault) == {t.fault for t in truths.values() if t is not None}
    assert sum(s.n for s in report.by_fault.values()) == N_CASES
    assert report.overall == score(report.outcomes)
    assert report.calibration == DEFAULT_CALIBRATION
    # Simulated faults are clear: the engine finds most of them first.
    assert report.overall.ac1 >= 0.6 and report.overall.ac3 >= report.overall.ac1


def test_progress_is_reported_for_every_case_folder(evaluated: Evaluated) -> None:
    total = N_CASES + len(BAD)
    calls = evaluated.progress
    assert calls[0] == (0, total, "")
    assert [c[:2] for c in calls[1:]] == [(i, total) for i in range(1, total + 1)]
    assert {c[2] for c in calls[1:]} >= BAD


def test_a_single_case_folder_is_an_archive_of_one(archive: Archive, evaluated: Evaluated) -> None:
    case = archive.cases[3]
    report = evaluate_archive(archive.root / case.meta.id, Settings())
    assert report.overall.n == 1 and not report.skipped
    assert report.outcomes == tuple(o for o in evaluated.report.outcomes if o.case == case.meta.id)


def test_known_components_include_what_the_truth_may_name(archive: Archive) -> None:
    for case in archive.cases:
        assert case.truth is not None
        assert case.truth.root_cause in known_components(case)


def _o(
    case: str, truth: str, ranked: Sequence[str], top: float | None, fault: str = "f"
) -> Outcome:
    return Outcome(
        case=case,
        fault=fault,
        truth=truth,
        ranked=tuple(ranked),
        top_confidence=top,
        scores=tuple((c, float(len(ranked) - i)) for i, c in enumerate(ranked)),
    )


def test_scores_by_hand() -> None:
    outcomes = [
        _o("a", "x", ["x", "y"], 0.9),  # right, bin 9: off by 0.1
        _o("b", "x", ["y", "x"], 0.8),  # second, bin 8: off by 0.8
        _o("c", "x", ["y", "z", "w", "v"], 0.6),  # absent, bin 6: off by 0.6
        _o("d", "x", [], None),  # nothing found: a wrong top of confidence 0
    ]
    s = score(outcomes)
    assert (s.n, s.ac1, s.ac3) == (4, 0.25, 0.5)
    assert s.avg5 == pytest.approx((0.25 + 0.5 * 4) / 5)
    assert s.ece == pytest.approx((0.1 + 0.8 + 0.6 + 0.0) / 4)
    assert score([]) == Scores(n=0, ac1=0.0, ac3=0.0, avg5=0.0, ece=0.0)


def _report(overall: tuple[float, int], **kinds: tuple[float, int]) -> EvalReport:
    def s(ac1: float, n: int) -> Scores:
        return Scores(n=n, ac1=ac1, ac3=1.0, avg5=1.0, ece=0.0)

    return EvalReport(
        archive="a", overall=s(*overall), by_fault={k: s(*v) for k, v in kinds.items()}
    )


def test_regressions_are_drops_beyond_the_tolerance_said_in_words() -> None:
    base = _report((0.9, 10), tool_latency=(1.0, 4), agent_loop=(1.0, 2), gone=(1.0, 5))
    now = _report((0.8, 10), tool_latency=(0.5, 4), agent_loop=(0.0, 2), new=(0.0, 5))
    found = regressions(now, base, 0.05)
    assert found == [
        "AC@1 overall fell from 0.900 (baseline, 10 cases) to 0.800 (10 cases): down "
        "0.100, more than the tolerance 0.050",
        "AC@1 of tool_latency fell from 1.000 (baseline, 4 cases) to 0.500 (4 cases): down "
        "0.500, more than the tolerance 0.050",
    ]  # agent_loop: too few cases to judge; gone, new: not in both
    # A drop of exactly the tolerance is within it.
    assert [r.split(" fell")[0] for r in regressions(now, base, 0.1)] == ["AC@1 of tool_latency"]
    assert regressions(now, base, 0.5) == []
    assert regressions(base, base, 0.0) == []
    assert regressions(now, _report((0.0, 0)), 0.0) == []  # an empty baseline gates nothing


def test_a_report_is_its_own_baseline_file(evaluated: Evaluated) -> None:
    report = evaluated.report
    assert EvalReport.from_json(report.to_json()) == report
    with pytest.raises(ValueError, match=r"^base\.json: not an evaluation report"):
        EvalReport.from_json("{not json", "base.json")
    with pytest.raises(ValueError, match="overall"):
        EvalReport.from_json('{"archive": "a", "by_fault": {}}', "base.json")


# --- calibration ------------------------------------------------------------------------


def test_a_refit_lowers_the_heldout_ece_of_a_miscalibrated_archive(
    archive: Archive, evaluated: Evaluated
) -> None:
    unsure = evaluate_archive(archive.root, Settings(), calibration=UNDERCONFIDENT)
    assert unsure.calibration == UNDERCONFIDENT
    # A calibration changes confidences, never the ranking; and ``recalibrated`` gives
    # the confidences the engine gives.
    assert [o.ranked for o in unsure.outcomes] == [o.ranked for o in evaluated.report.outcomes]
    for sure, o in zip(evaluated.report.outcomes, unsure.outcomes, strict=True):
        if o.scores:
            assert o.top_confidence is not None
            assert recalibrated(sure, UNDERCONFIDENT).top_confidence == pytest.approx(
                o.top_confidence, abs=1e-3
            )
    assert unsure.overall.ece > 0.3  # it is miscalibrated indeed

    # One truth only weakly known: left out, since it is the engine's own top hypothesis.
    outcomes = [unsure.outcomes[0].model_copy(update={"weak": True}), *unsure.outcomes[1:]]
    check = heldout_calibration(outcomes, seed=1)
    assert check.n_weak_left_out == 1
    assert check.n_train + check.n_heldout == N_CASES - 1
    assert check.n_heldout == round((N_CASES - 1) * 0.3)
    assert check.fitted != UNDERCONFIDENT and check.fitted in GRID
    # A real improvement, not a tie.
    assert check.ece_after < check.ece_before - 0.2, check
    # Deterministic: the same outcomes, in any order, give the same fit and split.
    shuffled = list(outcomes)
    random.Random(3).shuffle(shuffled)
    assert heldout_calibration(shuffled, seed=1) == check
    assert fit_calibration(unsure.outcomes) == fit_calibration(unsure.outcomes)
    train, held = heldout_split(shuffled, holdout_share=0.3, seed=1)
    again = heldout_split(list(unsure.outcomes), holdout_share=0.3, seed=1)
    assert ({o.case for o in train}, {o.case for o in held}) == (
        {o.case for o in again[0]},
        {o.case for o in again[1]},
    )


def test_the_fit_finds_the_calibration_the_truths_were_drawn_with() -> None:
    # Each truth drawn from the softmax of its case's scores at temperature 0.5, next to
    # "none of these" at -1: the likeliest calibration of the grid is that one, or near.
    rng = random.Random(11)
    drawn_with = Calibration(temperature=0.5, other=-1.0)
    outcomes = []
    for i in range(400):
        scores = sorted((rng.uniform(-1.5, 1.0) for _ in range(4)), reverse=True)
        names = [f"service:s{j}" for j in range(4)]
        weights = [*softmax_confidences(scores, drawn_with)]
        truth = rng.choices([*names, "service:none"], [*weights, 1 - sum(weights)])[0]
        outcomes.append(
            Outcome(
                case=f"c{i}",
                fault="f",
                truth=truth,
                ranked=tuple(names),
                top_confidence=weights[0],
                scores=tuple(zip(names, scores, strict=True)),
            )
        )
    fitted = fit_calibration(outcomes)
    assert abs(fitted.temperature - 0.5) <= 0.15 and abs(fitted.other + 1.0) <= 0.75, fitted


def test_too_few_cases_for_a_split_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        heldout_calibration([_o("a", "x", ["x"], 0.9)])


# --- the command ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(archive: Archive, evaluated: Evaluated, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An archive of 3 scored cases, one of them labelled with a component the engine
    does not rank first (so AC@1 is at most 2/3), beside the corrupt and unknown ones:
    every run of the command diagnoses only 3 cases."""
    root = tmp_path_factory.mktemp("small")
    for case in archive.cases[1:3]:
        (root / case.meta.id).symlink_to(archive.root / case.meta.id, target_is_directory=True)
    for name in ("corrupt", "unknown-component"):
        (root / name).symlink_to(archive.root / name, target_is_directory=True)
    case = archive.cases[4]
    found = next(o for o in evaluated.report.outcomes if o.case == case.meta.id)
    other = sorted(known_components(case) - set(found.ranked[:1]))[0]
    write_case(_renamed(case, "mislabelled", root_cause=other), root / "mislabelled", gzip=False)
    return root


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_text("[learning]\nmin_cases = 3\neval_tolerance = 0.05\n")
    return path


@pytest.fixture(scope="module")
def written(
    small: Path, cfg: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Result, Path]:
    """``eval --write-baseline --calibrate`` on the small archive, printed as text."""
    baseline = tmp_path_factory.mktemp("baseline") / "baseline.json"
    result = run(str(small), "--write-baseline", str(baseline), "--calibrate", "--config", str(cfg))
    return result, baseline


def test_eval_prints_a_table_per_fault_kind_and_the_skipped_cases(
    written: tuple[Result, Path],
) -> None:
    result, baseline = written
    assert_exit(result, 0)
    text = result.stdout
    assert "3 scored, 2 skipped" in text
    for column in ("fault", "cases", "AC@1", "AC@3", "Avg@5", "ECE"):
        assert column in text
    assert "│ all " in text
    assert "skipped 2 case(s):" in text
    assert "corrupt: does not load:" in text and "unknown-component: unknown component" in text
    assert "calibration fitted on 2 case(s), checked on 1 held out" in text
    assert baseline.exists()
    report = EvalReport.from_json(baseline.read_text())
    assert report.overall.n == 3 and report.overall.ac1 < 0.7
    for kind in report.by_fault:
        assert f"│ {kind} " in text


def test_eval_passes_against_a_baseline_of_the_same_archive(
    small: Path, cfg: Path, written: tuple[Result, Path]
) -> None:
    _, baseline = written
    result = run(str(small), "--baseline", str(baseline), "--json", "--config", str(cfg))
    assert_exit(result, 0)
    assert "regression" not in result.stderr
    doc = json.loads(result.stdout)
    assert {"format", "archive", "overall", "by_fault", "skipped", "weak", "outcomes"} <= set(doc)
    assert set(doc["overall"]) == {"n", "ac1", "ac3", "avg5", "ece"}
    assert {s["case"] for s in doc["skipped"]} == {"corrupt", "unknown-component"}
    assert doc["verdict"] == {
        "baseline": str(baseline),
        "tolerance": 0.05,
        "regressions": [],
        "passed": True,
    }
    # The --json document is a baseline too, and the same as the one written.
    assert EvalReport.from_json(result.stdout) == EvalReport.from_json(baseline.read_text())


def test_eval_fails_when_ac1_falls_below_the_baseline(
    small: Path, cfg: Path, written: tuple[Result, Path], tmp_path: Path
) -> None:
    _, baseline = written
    real = EvalReport.from_json(baseline.read_text())
    better = real.model_copy(update={"overall": real.overall.model_copy(update={"ac1": 1.0})})
    doctored = tmp_path / "better.json"
    doctored.write_text(better.to_json())
    result = run(
        str(small), "--baseline", str(doctored), "--tolerance", "0.1", "--config", str(cfg)
    )
    assert_exit(result, 1)
    assert result.stderr.strip() == (
        f"regression: AC@1 overall fell from 1.000 (baseline, 3 cases) to "
        f"{real.overall.ac1:.3f} (3 cases): down {1 - real.overall.ac1:.3f}, more than the "
        "tolerance 0.100"
    )
    assert f"baseline {doctored}" in result.stdout and "1 regression(s)" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "baseline file not found"),
        ("not json", "not an evaluation report"),
        ('{"archive": "a"}', "not an evaluation report"),
    ],
)
def test_an_unusable_baseline_is_exit_2_before_any_case_is_diagnosed(
    small: Path, cfg: Path, tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "base.json"
    if content is not None:
        path.write_text(content)
    result = run(str(small), "--baseline", str(path), "--config", str(cfg))
    assert_exit(result, 2)
    assert message in result.stderr and str(path) in result.stderr


def test_a_missing_archive_is_exit_2(cfg: Path, tmp_path: Path) -> None:
    result = run(str(tmp_path / "nowhere"), "--config", str(cfg))
    assert_exit(result, 2)
    assert "no such folder" in result.stderr


def test_an_empty_archive_scores_nothing_and_fails_a_baseline(
    cfg: Path, tmp_path: Path, written: tuple[Result, Path]
) -> None:
    _, baseline = written
    (tmp_path / "empty").mkdir()
    result = run(str(tmp_path / "empty"), "--config", str(cfg))
    assert_exit(result, 0)
    assert "no case could be scored" in result.stdout
    failed = run(str(tmp_path / "empty"), "--baseline", str(baseline), "--config", str(cfg))
    assert_exit(failed, 1)
    assert "AC@1 overall fell from" in failed.stderr


def test_report_of_groups_by_fault_sorted_and_counts_weak_truths() -> None:
    weak = _o("2", "x", ["y"], 0.9, "a").model_copy(update={"weak": True})
    r = report_of("a", [_o("1", "x", ["x"], 0.9, "b"), weak])
    assert list(r.by_fault) == ["a", "b"]
    assert (r.by_fault["a"].ac1, r.by_fault["b"].ac1, r.overall.n, r.weak) == (0.0, 1.0, 2, 1)
