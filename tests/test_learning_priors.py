"""What sentinel learns from outcomes (``learning.priors``): playbook success as Beta
posteriors and the playbook order they give, bounded component priors, the versioned
learned state in the store (SQLite and PostgreSQL), and ``sentinel learn`` (fit, --show,
--reset) in process on a small archive written with ``cases.write_case``.

What must not live here: fitting the calibration itself (``test_learning_eval``), the
export of failing runs (``test_export_evals``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from click.testing import Result
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from sentinel.adapters.db import LearnedAction, SqlStore, open_store
from sentinel.cases import Case, CaseMeta, CaseTruth, TruthBasis, write_case
from sentinel.cli_learn import learn
from sentinel.clock import FakeClock
from sentinel.incidents import Incident
from sentinel.learning.priors import (
    DEFAULT,
    PRIOR,
    Beta,
    LearnedState,
    component_priors,
    order_playbooks,
    playbook_success,
    success_of,
)
from sentinel.playbooks.model import Playbook, TemplateContext
from sentinel.rca import Hypothesis
from sentinel.rca.rank import DEFAULT_CALIBRATION, Calibration
from sentinel.remediation import ActionRecord, ActionState, Gate, propose
from sentinel.settings import RemediationSettings
from sentinel.sim import simulate_case, suite
from sentinel.telemetry import Sample
from tests.test_cli import ENV, assert_failed_cleanly, flat, write_config

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
FAULT = "prompt_regression"


# --- playbook success -----------------------------------------------------------------------


def action(
    n: int,
    state: ActionState,
    *,
    playbook: str = "rollback",
    fault: str = FAULT,
    started: bool = True,
) -> ActionRecord:
    return ActionRecord.model_validate(
        {
            "key": f"inc-{n}/{playbook}",
            "incident_id": f"inc-{n}",
            "playbook": playbook,
            "hypothesis": Hypothesis(component="prompt:x", fault=fault, confidence=0.9),
            "gate": Gate.APPROVE,
            "state": state,
            "step_ids": ("notify-1",),
            "steps": ({"action": "notify", "message": "m"},),
            "created_at": NOW,
            "updated_at": NOW,
            "started_at": NOW if started else None,
        }
    )


def test_success_counts_only_actions_that_started_and_finished() -> None:
    history = [
        action(1, ActionState.VERIFIED),
        action(2, ActionState.VERIFIED),
        action(3, ActionState.VERIFIED),
        action(4, ActionState.UNDONE),
        action(5, ActionState.FAILED),
        # No outcome: never started (refused, rejected, expired), or not finished yet.
        action(6, ActionState.FAILED, started=False),
        action(7, ActionState.REJECTED, started=False),
        action(8, ActionState.EXPIRED, started=False),
        action(9, ActionState.VERIFYING),
        action(10, ActionState.RUNNING),
        # Another fault of the same playbook is another posterior.
        action(11, ActionState.FAILED, fault="tool_errors"),
    ]

    found = playbook_success(history)

    assert found == {
        ("rollback", FAULT): Beta(alpha=4, beta=3),
        ("rollback", "tool_errors"): Beta(alpha=1, beta=2),
    }
    rollback = found[("rollback", FAULT)]
    assert rollback.text == "3 of 5 worked"
    assert rollback.mean == pytest.approx(4 / 7)
    assert found[("rollback", "tool_errors")].text == "0 of 1 worked"
    assert success_of(found, "rollback", "agent_loop") == PRIOR
    assert PRIOR.text == "never tried" and PRIOR.mean == 0.5
    assert playbook_success([]) == {}


def playbook(name: str) -> Playbook:
    return Playbook.model_validate(
        {
            "name": name,
            "match": {"faults": [FAULT, "tool_errors"], "components": ["*"]},
            "steps": [{"action": "notify", "message": "{{ component }}"}],
        }
    )


def test_a_playbook_that_never_worked_goes_after_one_that_always_did_for_that_fault_only() -> None:
    never, always, untried = playbook("never"), playbook("always"), playbook("untried")
    history = [
        *(action(n, ActionState.UNDONE, playbook="never") for n in range(3)),
        *(action(n, ActionState.VERIFIED, playbook="always") for n in range(3, 6)),
    ]
    success = playbook_success(history)
    assert success_of(success, "never", FAULT).text == "0 of 3 worked"
    assert success_of(success, "always", FAULT).text == "3 of 3 worked"
    given_order = [never, untried, always]

    assert order_playbooks(given_order, FAULT, success) == [always, untried, never]
    # Another fault has no history: the given order stays (the sort is stable).
    assert order_playbooks(given_order, "tool_errors", success) == given_order
    assert order_playbooks(given_order, FAULT, {}) == given_order

    # propose() takes the first playbook that fits, so the order is the choice.
    hypothesis = Hypothesis(component="prompt:x", fault=FAULT, confidence=0.9)
    found, _ = propose(
        order_playbooks(given_order, FAULT, success),
        "inc-1",
        hypothesis,
        TemplateContext(incident_id="inc-1", component="prompt:x", fault=FAULT),
        history=[],
        paused=False,
        policy=RemediationSettings(),
        now=NOW,
    )
    assert found is not None and found.playbook.name == "always"


# --- component priors -----------------------------------------------------------------------


def truth(component: str, *, weak: bool = False) -> CaseTruth:
    return CaseTruth(
        root_cause=component,
        fault=FAULT,
        fault_start=NOW,
        basis=TruthBasis.WEAK if weak else TruthBasis.CONFIRMED,
    )


def test_component_priors_follow_the_documented_formula_and_are_bounded() -> None:
    truths = [truth("tool:a")] * 4 + [truth("tool:b"), truth("tool:c")]
    # Counts 4, 1, 1: mean 2. Only tool:a reaches min_count (2) and the mean.
    assert component_priors(truths, weight=0.3) == {
        "tool:a": pytest.approx(0.3 * math.log(5 / 3), abs=1e-6)
    }
    # A component that is the cause of almost everything: the bonus stops at the weight.
    lopsided = [truth("tool:a")] * 200 + [truth(f"tool:x{i}") for i in range(20)]
    assert component_priors(lopsided, weight=0.3) == {"tool:a": 0.3}
    # An archive of one cause teaches nothing about ranking between causes.
    assert component_priors([truth("tool:a")] * 10) == {}
    assert component_priors([]) == {}
    with pytest.raises(ValueError, match="weight"):
        component_priors(truths, weight=-1)


def test_weak_truths_weigh_half() -> None:
    others = [truth(f"tool:o{i}") for i in range(6)]
    weak = component_priors([*[truth("tool:w", weak=True)] * 6, *[truth("tool:c")] * 3, *others])
    assert weak["tool:w"] == pytest.approx(weak["tool:c"])
    # Below min_count once halved: 3 weak truths count 1.5 < 2.
    assert "tool:w" not in component_priors([*[truth("tool:w", weak=True)] * 3, *others])


@given(
    st.lists(
        st.tuples(st.sampled_from(["tool:a", "tool:b", "service:c", "prompt:d"]), st.booleans()),
        max_size=60,
    ),
    st.floats(min_value=0.0, max_value=2.0),
)
def test_component_priors_stay_within_zero_and_the_weight(
    found: list[tuple[str, bool]], weight: float
) -> None:
    priors = component_priors([truth(c, weak=w) for c, w in found], weight=weight)
    assert set(priors) <= {c for c, _ in found}
    assert all(0.0 < v <= weight + 1e-9 for v in priors.values())


# --- the learned state ------------------------------------------------------------------------


def test_the_default_state_learned_nothing_and_uses_the_engine_calibration() -> None:
    assert DEFAULT.version == 0
    assert DEFAULT.calibration() == DEFAULT_CALIBRATION
    assert not DEFAULT.calibrated
    assert DEFAULT.component_priors == {} and DEFAULT.success() == {}
    fitted = LearnedState(temperature=0.7, other=-1.5)
    assert fitted.calibration() == Calibration(temperature=0.7, other=-1.5)
    with pytest.raises(ValidationError, match="together"):
        LearnedState(temperature=0.7)
    success = {("rollback", FAULT): Beta(alpha=2, beta=1)}
    state = LearnedState(playbook_success=LearnedState.success_entries(success))
    assert state.success() == success
    assert LearnedState.model_validate_json(state.model_dump_json()) == state


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    s = open_store(store_url, FakeClock(NOW))
    try:
        yield s
    finally:
        s.close()


def test_learned_state_versions_latest_wins_and_reset_keeps_the_history(store: SqlStore) -> None:
    assert store.learned() == DEFAULT
    assert store.learned_versions() == []

    first = LearnedState(
        fitted_at=NOW,
        n_cases=3,
        temperature=0.5,
        other=-2.0,
        ece_before=0.2,
        ece_after=0.1,
        component_priors={"tool:a": 0.25},
        playbook_success=LearnedState.success_entries({("rollback", FAULT): Beta(alpha=3)}),
        note="first fit",
        version=99,  # ignored: the store numbers versions
    )
    assert store.put_learned(first) == 1
    second = first.model_copy(update={"component_priors": {"tool:b": 0.1}, "note": "second"})
    assert store.put_learned(second, actor="cli:alice") == 2

    latest = store.learned()
    assert latest == second.model_copy(update={"version": 2})
    assert latest.calibration() == Calibration(temperature=0.5, other=-2.0)
    assert store.learned_version(1) == first.model_copy(update={"version": 1})
    assert store.learned_version(7) is None

    assert store.reset_learned("cli:bob") == 3
    now = store.learned()
    assert now.version == 3
    assert now.note == "reset by cli:bob"
    assert now.model_copy(update={"version": 0, "note": ""}) == DEFAULT
    # History stays: every version is still there, readable.
    assert [(v.version, v.note) for v in store.learned_versions()] == [
        (1, "first fit"),
        (2, "second"),
        (3, "reset by cli:bob"),
    ]
    assert all(v.created_at == NOW for v in store.learned_versions())
    assert store.learned_version(2) == latest
    trail = [(e.actor, e.action, e.detail["version"]) for e in store.audit()]
    assert trail == [
        ("learning-agent", LearnedAction.WRITTEN.value, 1),
        ("cli:alice", LearnedAction.WRITTEN.value, 2),
        ("cli:bob", LearnedAction.RESET.value, 3),
    ]


# --- sentinel learn ---------------------------------------------------------------------------

app = typer.Typer()
app.command()(learn)


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=ENV)


def small_case(ident: str, component: str, truth_of: CaseTruth | None) -> Case:
    """A case of a few metric samples of ``component``: enough to hold a truth."""
    samples = tuple(
        Sample(
            metric="requests_total",
            labels=(("component", component),),
            component=component,
            time=NOW + timedelta(minutes=i),
            value=float(i),
        )
        for i in range(3)
    )
    meta = CaseMeta(id=ident, start=NOW, end=NOW + timedelta(minutes=5))
    return Case(meta=meta, truth=truth_of, samples=samples)


def archive(folder: Path, causes: Sequence[tuple[str, bool]]) -> Path:
    """An archive: a case per (root cause, weak), one without truth, one broken."""
    for n, (component, weak) in enumerate(causes):
        write_case(
            small_case(f"case-{n}", component, truth(component, weak=weak)), folder / f"c{n}"
        )
    write_case(small_case("no-truth", "tool:a", None), folder / "no-truth")
    broken = folder / "broken"
    broken.mkdir()
    (broken / "case.toml").write_text("[case]\nid = \n")
    return folder


def config(folder: Path, min_cases: int) -> Path:
    return write_config(
        folder,
        '[store]\nurl = "sqlite:///s.db"\n\n'
        f'[learning]\narchive_dir = "archive"\nmin_cases = {min_cases}\n',
    )


def finished_actions(db: Path) -> None:
    store = open_store(f"sqlite:///{db}", FakeClock(NOW))
    try:
        for n, state in enumerate([ActionState.VERIFIED, ActionState.VERIFIED, ActionState.UNDONE]):
            store.put_incident(Incident(id=f"inc-{n}", title="t", opened_at=NOW, updated_at=NOW))
            assert store.put_action(action(n, state))
    finally:
        store.close()


def stored(db: Path) -> tuple[LearnedState, list[Any]]:
    store = open_store(f"sqlite:///{db}", FakeClock(NOW))
    try:
        return store.learned(), store.learned_versions()
    finally:
        store.close()


CAUSES = [("tool:a", False)] * 4 + [("tool:b", False), ("tool:c", True), ("tool:d", False)]


def test_learn_fits_priors_and_success_keeps_the_calibration_then_shows_and_resets(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path, min_cases=100)
    archive(tmp_path / "archive", CAUSES)
    finished_actions(tmp_path / "s.db")

    shown = run("--show", "-c", str(cfg))
    assert shown.exit_code == 0, shown.output
    assert "nothing learned yet (version 0)" in flat(shown.output)

    fitted = run("-c", str(cfg))
    assert fitted.exit_code == 0, fitted.output
    text = flat(fitted.output)
    assert "learned state version 1 written" in text
    assert "7 case(s) with truth (1 weak), 1 without, 1 skipped" in text
    assert "skipped broken: does not load:" in text
    assert "tool:a" in text and "2 of 3 worked" in text
    assert (
        "calibration: kept the engine's default calibration (temperature 0.4, other -3): "
        "6 case(s) with confirmed truth, a refit needs learning.min_cases = 100"
    ) in text
    state, versions = stored(tmp_path / "s.db")
    assert state.version == 1 and len(versions) == 1
    assert state.n_cases == 7
    assert set(state.component_priors) == {"tool:a"}
    assert state.success() == {("rollback", FAULT): Beta(alpha=3, beta=2)}
    assert not state.calibrated

    shown = run("--show", "-c", str(cfg))
    assert shown.exit_code == 0, shown.output
    text = flat(shown.output)
    assert "learned state version 1, fitted" in text
    assert "engine's default calibration" in text
    assert "tool:a" in text and "2 of 3 worked" in text

    reset = run("--reset", "--by", "alice", "-c", str(cfg))
    assert reset.exit_code == 0, reset.output
    assert "learned state reset: version 2" in flat(reset.output)
    state, versions = stored(tmp_path / "s.db")
    assert state.version == 2 and state.note == "reset by alice"
    assert state.component_priors == {} and state.playbook_success == ()
    assert [v.version for v in versions] == [1, 2]
    shown = run("--show", "-c", str(cfg))
    text = flat(shown.output)
    assert "learned state version 2: reset by alice" in text
    assert "component priors: none" in text and "playbook success: none" in text


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An archive of 5 simulated cases (30-minute windows, spans only where they have
    spans: the suite stays fast) that the engine diagnoses."""
    root = tmp_path_factory.mktemp("simulated")
    for spec in suite(5, 5):
        case = simulate_case(dataclasses.replace(spec, minutes=30))
        if case.spans:
            case = dataclasses.replace(case, samples=())
        write_case(case, root / case.meta.id, gzip=False)
    return root


def test_learn_refits_an_underconfident_calibration_with_enough_cases(
    tmp_path: Path, simulated: Path
) -> None:
    cfg = config(tmp_path, min_cases=3)
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", FakeClock(NOW))
    try:  # in use: far too unsure (a top confidence of some 0.2 where the engine is right)
        store.put_learned(LearnedState(temperature=3.0, other=3.0, note="underconfident"))
    finally:
        store.close()

    fitted = run("--archive", str(simulated), "-c", str(cfg))

    assert fitted.exit_code == 0, fitted.output
    text = flat(fitted.output)
    assert "learned state version 2 written" in text
    assert "calibration fitted on 3 case(s), checked on 2 held out" in text
    assert "calibration: refitted" in text
    state, _ = stored(tmp_path / "s.db")
    assert state.calibrated and state.calibration() != Calibration(temperature=3.0, other=3.0)
    assert state.ece_before is not None and state.ece_after is not None
    assert state.ece_after < state.ece_before
    assert f"held-out ECE {state.ece_before:.3f} before, {state.ece_after:.3f} after" in text
    assert state.n_cases == 5


def test_learn_keeps_the_calibration_when_a_refit_does_not_lower_the_ece(tmp_path: Path) -> None:
    # Enough cases, but none the engine can diagnose (a few samples each): every
    # calibration explains them equally, and nothing shows that a refit is better.
    cfg = config(tmp_path, min_cases=3)
    archive(tmp_path / "archive", CAUSES)

    fitted = run("-c", str(cfg))

    assert fitted.exit_code == 0, fitted.output
    text = flat(fitted.output)
    assert "calibration fitted on 4 case(s), checked on 2 held out, 1 with weak truth" in text
    assert (
        "calibration: kept the engine's default calibration (temperature 0.4, other -3): the "
        "refit does not lower the held-out ECE (0.000 before, 0.000 after)"
    ) in text
    state, _ = stored(tmp_path / "s.db")
    assert not state.calibrated


def test_learn_refuses_show_with_reset_and_a_missing_archive(tmp_path: Path) -> None:
    cfg = config(tmp_path, min_cases=3)
    both = run("--show", "--reset", "-c", str(cfg))
    assert_failed_cleanly(both, 2)
    assert "--show and --reset" in flat(both.output)
    missing = run("--archive", str(tmp_path / "nowhere"), "-c", str(cfg))
    assert_failed_cleanly(missing, 2)
    assert "nowhere: no such folder" in flat(missing.output)
    # The default archive folder missing is no error: nothing to learn priors from.
    fitted = run("-c", str(cfg))
    assert fitted.exit_code == 0, fitted.output
    assert "no such folder, so no component priors" in flat(fitted.output)
    # An empty learning.archive_dir: nothing is archived, so there is no archive.
    cfg = write_config(
        tmp_path, '[store]\nurl = "sqlite:///s.db"\n\n[learning]\narchive_dir = ""\n'
    )
    fitted = run("-c", str(cfg))
    assert fitted.exit_code == 0, fitted.output
    assert "no archive (learning.archive_dir is empty)" in flat(fitted.output)
