"""Tests of the action executors (``adapters.executors``): GitOps on real git repositories
made in tmp_path (a bare "remote" and sentinel's own working clone), HTTP through
``httpx.MockTransport``, the notifiers, and the contract ``FakeExecutor`` must keep with
the real ``Executor``.

What must not live here: choosing or gating actions (``test_remediation``), rendering
templates (the playbook tests).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from sentinel.adapters.executors import (
    ACTION_TRAILER,
    INCIDENT_TRAILER,
    CallKind,
    ConsoleNotifier,
    Executor,
    FakeExecutor,
    GitOps,
    MemoryNotifier,
    mask_credentials,
    review_branch,
)
from sentinel.clock import FakeClock
from sentinel.errors import ActionRefused, RemediationError
from sentinel.playbooks.model import (
    ActionKind,
    BlastRadius,
    Escalate,
    GitFile,
    GitopsRollback,
    Http,
    HttpCall,
    ModelFailover,
    Notify,
    ShadowMode,
    Throttle,
)
from sentinel.ports import ActionExecutor, StepResult
from sentinel.settings import PushMode, RemediationSettings, RepoSettings
from tests.gitrepos import commit_files as _commit_files
from tests.gitrepos import git as _git

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
INCIDENT = "inc-42"
ANY = BlastRadius()

PROMPT_V1 = "You are the support agent.\nBe kind and brief.\nNever promise refunds.\n"
PROMPT_BAD = "You are the support agent.\nBe kind and brief.\nPromise refunds to everyone.\n"
LIMITS = """\
# Rate limits per tool; the platform team reviews them.
rate_limits:
  tool:crm_lookup:
    requests_per_minute: 120  # the vendor's quota
  tool:faq_search:
    requests_per_minute: 600
"""
AGENTS = """\
# Which model each agent uses.
agents:
  support-agent:
    model: gpt-4o  # the primary model
    temperature: 0.2
  billing-agent:
    model: gpt-4o
    tools:
      - crm_lookup
      - refunds
fallbacks:
  gpt-4o: gpt-4o-mini
"""
ROUTING = """\
# Traffic routing; shadow targets only get copies of traffic.
routes:
  support: prompt:support-v2
shadow:
  prompt:support-v1: true
"""
SEED = {
    "prompts/support.md": PROMPT_V1,
    "limits.yaml": LIMITS,
    "agents.yaml": AGENTS,
    "routing.yaml": ROUTING,
}


@dataclass(frozen=True)
class Template:
    remote: Path
    bad: str  # the commit that changed the prompt, to be rolled back


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """A bare remote with the seeded config tree and a bad prompt change, built once and
    copied per test (it keeps the suite's git process count down)."""
    root = tmp_path_factory.mktemp("template")
    remote = root / "remote.git"
    _git(root, "init", "-q", "--bare", "-b", "main", str(remote))
    seed = root / "seed"
    seed.mkdir()
    _git(seed, "init", "-q", "-b", "main")
    _commit_files(seed, SEED, "initial config")
    bad = _commit_files(
        seed,
        {"prompts/support.md": PROMPT_BAD},
        "tighten refund wording\n\nCustomers asked for clearer refund rules.",
    )
    _git(seed, "push", "-q", str(remote), "main")
    return Template(remote=remote, bad=bad)


class World:
    """One test's remote (a copy of the template), sentinel's workdir and helpers to
    look at the remote the way a person would."""

    def __init__(self, root: Path, template: Template) -> None:
        self.root = root
        self.remote = root / "remote.git"
        shutil.copytree(template.remote, self.remote)
        self.bad = template.bad
        self.workdir = root / "gitops"
        self.clock = FakeClock(NOW)

    def repos(self) -> tuple[RepoSettings, ...]:
        return (RepoSettings(name="config", url=str(self.remote), branch="main"),)

    def settings(self, push: PushMode = PushMode.BRANCH) -> RemediationSettings:
        return RemediationSettings(config_repo="config", push=push)

    def gitops(
        self,
        *,
        push: PushMode = PushMode.BRANCH,
        after_commit: Callable[[str], None] | None = None,
    ) -> GitOps:
        return GitOps(
            self.settings(push),
            self.repos(),
            self.workdir,
            self.clock,
            after_commit=after_commit,
        )

    @property
    def clone(self) -> Path:
        return self.workdir / "config"

    def show(self, path: str, ref: str = "main") -> str:
        return _git(self.remote, "show", f"{ref}:{path}") + "\n"

    def head(self, ref: str = "main") -> str:
        return _git(self.remote, "rev-parse", ref)

    def commits(self, ref: str = "main") -> list[str]:
        return _git(self.remote, "rev-list", ref).split()

    def message(self, sha: str) -> str:
        return _git(self.remote, "log", "-1", "--format=%B", sha)

    def with_key(self, key: str, ref: str = "main") -> list[str]:
        """The remote commits carrying ``key`` in their Action trailer."""
        return [
            sha
            for sha in self.commits(ref)
            if f"{ACTION_TRAILER}: {key}" in self.message(sha).splitlines()
        ]

    def branches(self) -> list[str]:
        return _git(self.remote, "for-each-ref", "--format=%(refname:short)", "refs/heads").split()

    def push_from_elsewhere(self, files: Mapping[str, str], message: str) -> str:
        """Another person's clone commits and pushes (the remote moves)."""
        other = self.root / f"other-{len(list(self.root.glob('other-*')))}"
        _git(self.root, "clone", "-q", str(self.remote), str(other))
        sha = _commit_files(other, files, message)
        _git(other, "push", "-q", "origin", "main")
        return sha

    def clone_status(self) -> str:
        return _git(self.clone, "status", "--porcelain", "--untracked-files=all")

    def clone_branches(self) -> list[str]:
        return _git(self.clone, "for-each-ref", "--format=%(refname:short)", "refs/heads").split()


@pytest.fixture
def world(tmp_path: Path, template: Template) -> World:
    return World(tmp_path, template)


class Crash(Exception):
    """Stands for the process dying between commit and push."""


def rollback(change: str, repo: str = "config") -> GitopsRollback:
    return GitopsRollback(
        action=ActionKind.GITOPS_ROLLBACK, id="rollback", change=change, repo=repo
    )


def throttle(
    rpm: float = 30, target: str = "tool:crm_lookup", path: str = "limits.yaml"
) -> Throttle:
    return Throttle(
        action=ActionKind.THROTTLE,
        id="throttle",
        target=target,
        requests_per_minute=rpm,
        git=GitFile(path=path),
    )


def _trailers(message: str) -> list[str]:
    return message.strip().split("\n\n")[-1].splitlines()


def _child_git_processes() -> list[str]:
    """Command lines of this process's git children (a leak if any remain)."""
    me = os.getpid()
    found: list[str] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me and "git" in cmdline:
            found.append(cmdline)
    return found


# --- every GitOps action against the real remote ------------------------------------------


def test_rollback_restores_the_file_on_the_remote_with_the_incident_and_trailers(
    world: World,
) -> None:
    before = world.head()
    # The change feed reports short ids: a rollback step gets one.
    result = world.gitops().apply(
        rollback(world.bad[:7]), key="inc-42:pb:rollback", incident_id=INCIDENT, allowed=ANY
    )

    assert world.show("prompts/support.md") == PROMPT_V1
    head = world.head()
    assert result == StepResult(detail=result.detail, repo="config", commit=head, branch="main")
    assert world.commits()[1] == before  # exactly one new commit, on top
    message = world.message(head)
    assert message.splitlines()[0] == (
        f'Revert "tighten refund wording" (sentinel, incident {INCIDENT})'
    )
    assert f"This reverts commit {world.bad}." in message
    assert f"incident {INCIDENT}" in message.split("\n\n", 1)[1]
    assert _trailers(message) == [
        f"{INCIDENT_TRAILER}: {INCIDENT}",
        f"{ACTION_TRAILER}: inc-42:pb:rollback",
    ]
    author = _git(world.remote, "log", "-1", "--format=%an <%ae> %at", head)
    assert author == f"sentinel <sentinel@localhost> {int(NOW.timestamp())}"
    assert world.clone_status() == ""
    assert world.clone_branches() == []  # nothing left pending
    assert _child_git_processes() == []


def test_throttle_sets_the_limit_and_keeps_comments(world: World) -> None:
    result = world.gitops().apply(throttle(30), key="k-throttle", incident_id=INCIDENT, allowed=ANY)

    assert world.show("limits.yaml") == LIMITS.replace(
        "requests_per_minute: 120  #", "requests_per_minute: 30   #"
    )
    assert result.commit == world.head()
    assert world.message(world.head()).splitlines()[0] == (
        f"Throttle tool:crm_lookup to 30 requests/minute (sentinel, incident {INCIDENT})"
    )


def test_throttle_creates_the_file_and_keys_when_missing(world: World) -> None:
    world.gitops().apply(
        throttle(12.5, target="agent:billing", path="limits/agents.yaml"),
        key="k-new",
        incident_id=INCIDENT,
        allowed=ANY,
    )

    assert world.show("limits/agents.yaml") == (
        "rate_limits:\n  agent:billing:\n    requests_per_minute: 12.5\n"
    )


def test_an_edit_that_changes_nothing_makes_no_commit(world: World) -> None:
    before = world.head()

    result = world.gitops().apply(throttle(120), key="k-same", incident_id=INCIDENT, allowed=ANY)

    assert result.commit is None
    assert "already says so" in result.detail
    assert world.head() == before
    assert world.clone_status() == ""


def test_shadow_mode_adds_the_target_and_keeps_comments(world: World) -> None:
    step = ShadowMode(
        action=ActionKind.SHADOW_MODE, target="prompt:support-v2", git=GitFile(path="routing.yaml")
    )

    world.gitops().apply(step, key="k-shadow", incident_id=INCIDENT, allowed=ANY)

    assert world.show("routing.yaml") == ROUTING + "  prompt:support-v2: true\n"


def test_model_failover_reads_the_fallback_from_the_file_and_keeps_comments(world: World) -> None:
    step = ModelFailover(
        action=ActionKind.MODEL_FAILOVER, model="gpt-4o", git=GitFile(path="agents.yaml")
    )

    result = world.gitops().apply(step, key="k-failover", incident_id=INCIDENT, allowed=ANY)

    # The comment keeps its column where the longer value leaves room: here one space.
    assert world.show("agents.yaml") == AGENTS.replace(
        "    model: gpt-4o  #", "    model: gpt-4o-mini #"
    ).replace("    model: gpt-4o\n", "    model: gpt-4o-mini\n")
    assert "Fail over gpt-4o to gpt-4o-mini" in world.message(result.commit or "")


def test_model_failover_of_one_agent_with_a_given_fallback(world: World) -> None:
    step = ModelFailover(
        action=ActionKind.MODEL_FAILOVER,
        model="gpt-4o",
        fallback="claude-haiku",
        agent="billing-agent",
        git=GitFile(path="agents.yaml"),
    )

    world.gitops().apply(step, key="k-one", incident_id=INCIDENT, allowed=ANY)

    text = world.show("agents.yaml")
    assert "    model: gpt-4o  # the primary model\n" in text  # support-agent untouched
    assert "  billing-agent:\n    model: claude-haiku\n" in text
    # Nothing else moved, the sequence's indentation included.
    assert text == AGENTS.replace(
        "  billing-agent:\n    model: gpt-4o\n", "  billing-agent:\n    model: claude-haiku\n"
    )


def test_model_failover_refuses_without_a_model_or_a_fallback(world: World) -> None:
    ops = world.gitops()
    before = world.head()
    no_model = ModelFailover(
        action=ActionKind.MODEL_FAILOVER,
        model="gpt-3",
        fallback="x",
        git=GitFile(path="agents.yaml"),
    )
    no_fallback = ModelFailover(
        action=ActionKind.MODEL_FAILOVER, model="gpt-4o", git=GitFile(path="routing.yaml")
    )

    with pytest.raises(ActionRefused, match="no 'model: gpt-3'"):
        ops.apply(no_model, key="k1", incident_id=INCIDENT, allowed=ANY)
    with pytest.raises(ActionRefused, match=r"fallbacks\.gpt-4o is not set"):
        ops.apply(no_fallback, key="k2", incident_id=INCIDENT, allowed=ANY)

    assert world.head() == before
    assert world.clone_status() == ""
    assert world.clone_branches() == []


def test_review_mode_pushes_a_new_branch_and_leaves_main_alone(world: World) -> None:
    before = world.head()
    key = f"{INCIDENT}:pb:throttle"

    result = world.gitops(push=PushMode.REVIEW).apply(
        throttle(30), key=key, incident_id=INCIDENT, allowed=ANY
    )

    assert result.branch == review_branch(INCIDENT, key) == "sentinel/inc-42-pb-throttle"
    assert world.head() == before
    assert sorted(world.branches()) == ["main", "sentinel/inc-42-pb-throttle"]
    assert world.head(result.branch) == result.commit
    assert "requests_per_minute: 30" in world.show("limits.yaml", result.branch)
    # Found again on its review branch, not made twice.
    again = world.gitops(push=PushMode.REVIEW).apply(
        throttle(30), key=key, incident_id=INCIDENT, allowed=ANY
    )
    assert (again.commit, again.branch) == (result.commit, result.branch)
    assert len(world.with_key(key, result.branch)) == 1


# --- idempotency ---------------------------------------------------------------------------


def test_apply_twice_with_one_key_makes_one_commit(world: World) -> None:
    ops = world.gitops()
    first = ops.apply(rollback(world.bad), key="k", incident_id=INCIDENT, allowed=ANY)
    count = len(world.commits())

    second = ops.apply(rollback(world.bad), key="k", incident_id=INCIDENT, allowed=ANY)

    assert (second.commit, second.branch, second.repo) == (first.commit, "main", "config")
    assert "already done" in second.detail
    assert len(world.commits()) == count
    assert world.with_key("k") == [first.commit]


def test_a_crash_between_commit_and_push_leaves_one_commit_after_restart(world: World) -> None:
    made: list[str] = []

    def crash(sha: str) -> None:
        made.append(sha)
        raise Crash

    before = world.head()
    with pytest.raises(Crash):
        world.gitops(after_commit=crash).apply(
            throttle(30), key="k", incident_id=INCIDENT, allowed=ANY
        )
    assert world.head() == before  # nothing pushed

    # A fresh process over the same working clone, a minute later (so a commit made
    # again would differ from the first).
    world.clock.advance(60)
    result = world.gitops().apply(throttle(30), key="k", incident_id=INCIDENT, allowed=ANY)

    assert result.commit == made[0]  # the commit of the first attempt, not a new one
    assert world.with_key("k") == made
    assert world.commits()[1] == before
    assert world.clone_branches() == []
    again = world.gitops().apply(throttle(30), key="k", incident_id=INCIDENT, allowed=ANY)
    assert again.commit == made[0]
    assert world.with_key("k") == made


def test_revert_is_idempotent_also_after_a_crash(world: World) -> None:
    applied = world.gitops().apply(throttle(30), key="k", incident_id=INCIDENT, allowed=ANY)
    made: list[str] = []

    def crash(sha: str) -> None:
        made.append(sha)
        raise Crash

    with pytest.raises(Crash):
        world.gitops(after_commit=crash).revert(
            throttle(30), applied, key="k:undo", incident_id=INCIDENT
        )
    assert world.head() == applied.commit

    world.clock.advance(60)
    undone = world.gitops().revert(throttle(30), applied, key="k:undo", incident_id=INCIDENT)
    again = world.gitops().revert(throttle(30), applied, key="k:undo", incident_id=INCIDENT)

    assert undone.commit == again.commit == made[0] == world.head()
    assert world.show("limits.yaml") == LIMITS
    assert world.with_key("k:undo") == made
    assert world.message(world.head()).startswith(
        f'Revert "Throttle tool:crm_lookup to 30 requests/minute (sentinel, incident {INCIDENT})"'
    )


def test_revert_of_a_result_without_a_commit_does_nothing(world: World) -> None:
    before = world.head()
    result = world.gitops().revert(
        throttle(30), StepResult(detail="unchanged", repo="config"), key="u", incident_id=INCIDENT
    )
    assert result.commit is None
    assert world.head() == before


# --- refusals ------------------------------------------------------------------------------


def test_a_dirty_working_clone_is_refused_and_left_alone(world: World) -> None:
    ops = world.gitops()
    ops.apply(throttle(30), key="k1", incident_id=INCIDENT, allowed=ANY)  # the clone exists
    before = world.head()
    (world.clone / "limits.yaml").write_text("someone was here\n")
    (world.clone / "notes.txt").write_text("and here\n")

    with pytest.raises(ActionRefused, match="uncommitted changes"):
        ops.apply(throttle(10), key="k2", incident_id=INCIDENT, allowed=ANY)

    assert world.head() == before
    assert (world.clone / "limits.yaml").read_text() == "someone was here\n"
    assert (world.clone / "notes.txt").read_text() == "and here\n"


def test_a_revert_conflict_is_refused_and_the_clone_left_clean(world: World) -> None:
    world.push_from_elsewhere(
        {"prompts/support.md": PROMPT_BAD.replace("everyone", "every customer")},
        "refine refund wording",
    )
    before = world.head()

    with pytest.raises(ActionRefused, match="conflicts"):
        world.gitops().apply(rollback(world.bad), key="k", incident_id=INCIDENT, allowed=ANY)

    assert world.head() == before
    assert world.clone_status() == ""
    assert world.clone_branches() == []
    assert not (world.clone / ".git" / "REVERT_HEAD").exists()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("--upload-pack=touch pwned", "not a commit id"),
        ("HEAD~1", "not a commit id"),
        ("main", "not a commit id"),
        ("deadbeef" * 5, "not a commit there"),
    ],
)
def test_a_bad_or_unknown_commit_id_is_refused(world: World, change: str, why: str) -> None:
    before = world.head()
    with pytest.raises(ActionRefused, match=why):
        world.gitops().apply(rollback(change), key="k", incident_id=INCIDENT, allowed=ANY)
    assert world.head() == before
    assert not (world.root / "pwned").exists()


def _refused_cases() -> list[Any]:
    yaml_only = BlastRadius(paths=("*.yaml",))
    return [
        pytest.param("rollback", yaml_only, "outside the blast radius", id="rollback-path"),
        pytest.param("throttle", BlastRadius(paths=("prompts/**",)), "outside", id="edit-path"),
        pytest.param("throttle", BlastRadius(repos=("other",)), "outside", id="repo"),
        pytest.param("unknown-repo", ANY, "not in \\[\\[changes.repos\\]\\]", id="unknown-repo"),
        pytest.param("dotdot", ANY, "inside the repository", id="dotdot"),
        pytest.param("absolute", ANY, "relative", id="absolute"),
        # A line break in a rendered value must not forge a trailer in the message.
        pytest.param("forged", ANY, "one line", id="forged-trailer"),
    ]


@pytest.mark.parametrize(("case", "allowed", "why"), _refused_cases())
def test_steps_outside_their_bounds_are_refused(
    world: World, case: str, allowed: BlastRadius, why: str
) -> None:
    steps = {
        "rollback": rollback(world.bad),
        "throttle": throttle(30),
        "unknown-repo": rollback(world.bad, repo="nope"),
        "dotdot": throttle(30, path="../outside.yaml"),
        "absolute": throttle(30, path="/etc/limits.yaml"),
        "forged": throttle(30, target="x\n\nSentinel-Action: other"),
    }
    before = world.head()

    with pytest.raises(ActionRefused, match=why):
        world.gitops().apply(steps[case], key="k", incident_id=INCIDENT, allowed=allowed)

    assert world.head() == before
    assert not (world.root / "outside.yaml").exists()
    if world.clone.exists():
        assert world.clone_status() == ""
        assert world.clone_branches() == []


# --- pushing -------------------------------------------------------------------------------


def test_a_push_rejected_because_the_remote_moved_is_retried_after_a_rebase(world: World) -> None:
    theirs: list[str] = []

    def someone_pushes(_sha: str) -> None:
        theirs.append(world.push_from_elsewhere({"routing.yaml": ROUTING + "# moved\n"}, "moved"))

    result = world.gitops(after_commit=someone_pushes).apply(
        throttle(30), key="k", incident_id=INCIDENT, allowed=ANY
    )

    assert world.head() == result.commit
    assert world.commits()[1] == theirs[0]  # ours rebased on top of theirs
    assert world.show("routing.yaml").endswith("# moved\n")
    assert "requests_per_minute: 30" in world.show("limits.yaml")
    assert world.with_key("k") == [result.commit]
    assert world.clone_branches() == []


def test_a_push_whose_rebase_conflicts_is_refused_and_redone_by_the_next_apply(
    world: World,
) -> None:
    def someone_edits_the_same_line(_sha: str) -> None:
        world.push_from_elsewhere(
            {"limits.yaml": LIMITS.replace("requests_per_minute: 120", "requests_per_minute: 60")},
            "lower crm limit",
        )

    with pytest.raises(ActionRefused, match="no longer applies"):
        world.gitops(after_commit=someone_edits_the_same_line).apply(
            throttle(30), key="k", incident_id=INCIDENT, allowed=ANY
        )
    assert "requests_per_minute: 60" in world.show("limits.yaml")
    assert world.with_key("k") == []
    assert world.clone_status() == ""
    assert world.clone_branches() == []

    # The next apply with the key does the work afresh on the new tip.
    result = world.gitops().apply(throttle(30), key="k", incident_id=INCIDENT, allowed=ANY)
    assert world.with_key("k") == [result.commit]
    assert "requests_per_minute: 30" in world.show("limits.yaml")


def test_a_fresh_clone_finds_the_commit_on_the_remote(world: World, tmp_path: Path) -> None:
    first = world.gitops().apply(throttle(30), key="k", incident_id=INCIDENT, allowed=ANY)
    elsewhere = GitOps(world.settings(), world.repos(), tmp_path / "elsewhere", world.clock)

    again = elsewhere.apply(throttle(30), key="k", incident_id=INCIDENT, allowed=ANY)

    assert (again.commit, again.branch) == (first.commit, "main")
    assert world.with_key("k") == [first.commit]


def test_an_unreachable_remote_fails_the_push_and_a_later_apply_pushes_once(
    world: World,
) -> None:
    away = world.root / "away.git"
    made: list[str] = []

    def remote_goes_away(sha: str) -> None:
        made.append(sha)
        world.remote.rename(away)

    with pytest.raises(RemediationError, match="push of") as failure:
        world.gitops(after_commit=remote_goes_away).apply(
            throttle(30), key="k", incident_id=INCIDENT, allowed=ANY
        )
    assert not isinstance(failure.value, ActionRefused)
    away.rename(world.remote)
    assert world.with_key("k") == []
    world.clock.advance(60)

    result = world.gitops().apply(throttle(30), key="k", incident_id=INCIDENT, allowed=ANY)

    assert result.commit == made[0]
    assert world.with_key("k") == made
    assert "requests_per_minute: 30" in world.show("limits.yaml")


# --- HTTP ----------------------------------------------------------------------------------


class Recorder:
    """An ``httpx.MockTransport`` handler that records requests and answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, json={"ok": self.status < 400})


@pytest.fixture
def http_executor(world: World) -> Iterator[tuple[Executor, Recorder, MemoryNotifier]]:
    recorder = Recorder()
    notifier = MemoryNotifier()
    with httpx.Client(transport=httpx.MockTransport(recorder)) as client:
        yield Executor(world.gitops(), notifier, http=client), recorder, notifier


def test_an_http_step_sends_the_typed_call_with_the_idempotency_key(
    http_executor: tuple[Executor, Recorder, MemoryNotifier],
) -> None:
    executor, recorder, _ = http_executor
    step = Http(
        action=ActionKind.HTTP,
        call=HttpCall(
            method="PUT",
            url="https://flags.example/api/flags/refunds",
            headers={"X-Team": "support", "idempotency-key": "theirs"},
            json={"enabled": False},
        ),
    )

    result = executor.apply(step, key="inc-42:pb:http", incident_id=INCIDENT, allowed=ANY)

    [request] = recorder.requests
    assert (request.method, str(request.url)) == ("PUT", "https://flags.example/api/flags/refunds")
    assert request.headers["X-Team"] == "support"
    assert request.headers.get_list("Idempotency-Key") == ["inc-42:pb:http"]
    assert json.loads(request.content) == {"enabled": False}
    assert result.status == 200
    # Within one executor, a repeated key is answered from the first result.
    assert executor.apply(step, key="inc-42:pb:http", incident_id=INCIDENT, allowed=ANY) == result
    assert len(recorder.requests) == 1


def test_an_http_throttle_sends_target_and_limit_by_default(
    http_executor: tuple[Executor, Recorder, MemoryNotifier],
) -> None:
    executor, recorder, _ = http_executor
    step = Throttle(
        action=ActionKind.THROTTLE,
        target="tool:crm_lookup",
        requests_per_minute=30,
        http=HttpCall(url="http://gateway.local/limits"),
    )

    executor.apply(step, key="k-http", incident_id=INCIDENT, allowed=ANY)

    [request] = recorder.requests
    assert request.method == "POST"
    assert json.loads(request.content) == {"target": "tool:crm_lookup", "requests_per_minute": 30}


def test_an_unexpected_status_names_method_masked_url_and_status(
    http_executor: tuple[Executor, Recorder, MemoryNotifier],
) -> None:
    executor, recorder, _ = http_executor
    recorder.status = 503
    step = Http(
        action=ActionKind.HTTP,
        call=HttpCall(url="https://bot:hunter2@hooks.example/x?token=s3cret&team=a"),
    )

    with pytest.raises(RemediationError) as failure:
        executor.apply(step, key="k", incident_id=INCIDENT, allowed=ANY)

    text = str(failure.value)
    assert "POST https://bot:********@hooks.example/x?token=********&team=a" in text
    assert "503" in text
    assert "hunter2" not in text and "s3cret" not in text


def test_a_transport_error_is_a_remediation_error(world: World) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    step = Http(action=ActionKind.HTTP, call=HttpCall(method="DELETE", url="http://x.local/a"))
    with httpx.Client(transport=httpx.MockTransport(refuse)) as client:
        executor = Executor(world.gitops(), MemoryNotifier(), http=client)
        with pytest.raises(
            RemediationError, match=r"DELETE http://x\.local/a failed: ConnectError"
        ):
            executor.apply(step, key="k", incident_id=INCIDENT, allowed=ANY)


def test_mask_credentials() -> None:
    assert mask_credentials("https://ghp_abc@github.com/o/r") == "https://********@github.com/o/r"
    assert mask_credentials("see http://u:p@h/x?api_key=1&a=2") == (
        "see http://u:********@h/x?api_key=********&a=2"
    )


# --- notifiers -----------------------------------------------------------------------------


def test_console_notifier_writes_one_clear_line_per_notice() -> None:
    out = io.StringIO()
    notifier = ConsoleNotifier(out)
    notifier.notify("inc-1", "throttled tool:crm_lookup")
    notifier.notify("inc-1", "rollback failed", escalate=True)
    assert out.getvalue().splitlines() == [
        "[sentinel] notice for incident inc-1: throttled tool:crm_lookup",
        "[sentinel] ESCALATION for incident inc-1: rollback failed",
    ]


def test_console_notifier_writes_to_a_rich_console() -> None:
    out = io.StringIO()
    ConsoleNotifier(Console(file=out, width=200, color_system=None)).notify(
        "inc-1", "look at [this]", escalate=True
    )
    assert out.getvalue() == "[sentinel] ESCALATION for incident inc-1: look at [this]\n"


def test_notify_and_escalate_reach_the_notifier(
    http_executor: tuple[Executor, Recorder, MemoryNotifier],
) -> None:
    executor, _, notifier = http_executor
    executor.apply(
        Notify(action=ActionKind.NOTIFY, message="throttled"), key="n", incident_id="i", allowed=ANY
    )
    executor.apply(
        Escalate(action=ActionKind.ESCALATE, message="help"), key="e", incident_id="i", allowed=ANY
    )
    assert notifier.sent == [("i", "throttled", False), ("i", "help", True)]


# --- the fake ------------------------------------------------------------------------------


def test_fake_records_applies_and_reverts_in_order_once_per_key() -> None:
    fake = FakeExecutor()
    step = throttle(30)
    applied = fake.apply(step, key="a", incident_id=INCIDENT, allowed=ANY)
    assert fake.apply(step, key="a", incident_id=INCIDENT, allowed=ANY) == applied
    undone = fake.revert(step, applied, key="a:undo", incident_id=INCIDENT)
    fake.revert(step, applied, key="a:undo", incident_id=INCIDENT)

    assert [(c.kind, c.key, c.result) for c in fake.calls] == [
        (CallKind.APPLY, "a", applied),
        (CallKind.REVERT, "a:undo", undone),
    ]
    assert applied.commit is not None and undone.commit not in (None, applied.commit)
    assert fake.live() == []


def test_fake_raises_what_it_is_told_to() -> None:
    fake = FakeExecutor()
    fake.fail("throttle", ActionRefused("told to refuse"))
    with pytest.raises(ActionRefused, match="told to refuse"):
        fake.apply(throttle(30), key="a", incident_id=INCIDENT, allowed=ANY)

    fake.fail_next(2)
    note = Notify(action=ActionKind.NOTIFY, message="m")
    for _ in range(2):
        with pytest.raises(RemediationError):
            fake.apply(note, key="n", incident_id=INCIDENT, allowed=ANY)
    fake.apply(note, key="n", incident_id=INCIDENT, allowed=ANY)
    assert [c.key for c in fake.calls] == ["n"]


def test_fake_checks_rollbacks_against_the_commits_it_knows() -> None:
    fake = FakeExecutor(touched={"abc1234" + "0" * 33: ["prompts/support.md"]})
    with pytest.raises(ActionRefused, match="outside the blast radius"):
        fake.apply(
            rollback("abc1234"),
            key="a",
            incident_id=INCIDENT,
            allowed=BlastRadius(paths=("*.yaml",)),
        )
    with pytest.raises(ActionRefused, match="not a commit there"):
        fake.apply(rollback("fff0000"), key="b", incident_id=INCIDENT, allowed=ANY)
    assert fake.apply(rollback("abc1234"), key="c", incident_id=INCIDENT, allowed=ANY).commit


# --- the contract ---------------------------------------------------------------------------


@dataclass
class Subject:
    """An executor under the contract, and how to look at what it did."""

    executor: ActionExecutor
    notifier: MemoryNotifier
    is_live: Callable[[str], bool]  # the effect of the step applied with this key is in place
    state: Callable[[], object]  # changes whenever anything was changed


@pytest.fixture(params=["fake", "real"])
def subject(request: pytest.FixtureRequest, world: World) -> Iterator[Subject]:
    notifier = MemoryNotifier()
    if request.param == "fake":
        fake = FakeExecutor(notifier=notifier)
        yield Subject(fake, notifier, lambda key: key in fake.live(), lambda: len(fake.calls))
        return

    def is_live(key: str) -> bool:
        return len(world.with_key(key)) == 1 and "requests_per_minute: 30" in world.show(
            "limits.yaml"
        )

    with httpx.Client(transport=httpx.MockTransport(Recorder())) as client:
        executor = Executor(world.gitops(), notifier, http=client)
        yield Subject(executor, notifier, is_live, world.head)


def test_contract(subject: Subject) -> None:
    ex = subject.executor
    step = throttle(30)
    key = f"{INCIDENT}:pb:throttle"

    # apply is idempotent by key
    first = ex.apply(step, key=key, incident_id=INCIDENT, allowed=ANY)
    state = subject.state()
    second = ex.apply(step, key=key, incident_id=INCIDENT, allowed=ANY)
    assert first.commit is not None
    assert (second.commit, second.repo, second.branch) == (first.commit, "config", "main")
    assert subject.state() == state
    assert subject.is_live(key)

    # revert reverses, idempotent by its own key
    undone = ex.revert(step, first, key=f"{key}:undo", incident_id=INCIDENT)
    state = subject.state()
    assert undone.commit not in (None, first.commit)
    assert not subject.is_live(key)
    assert ex.revert(step, first, key=f"{key}:undo", incident_id=INCIDENT).commit == undone.commit
    assert subject.state() == state

    # a path outside the blast radius is refused, changing nothing
    with pytest.raises(ActionRefused):
        ex.apply(
            throttle(5), key="other", incident_id=INCIDENT, allowed=BlastRadius(paths=("x/**",))
        )
    with pytest.raises(ActionRefused):
        ex.apply(throttle(5), key="other2", incident_id=INCIDENT, allowed=BlastRadius(repos=("x",)))
    assert subject.state() == state

    # notify reaches the notifier
    ex.apply(
        Notify(action=ActionKind.NOTIFY, message="hello"), key="n", incident_id="i", allowed=ANY
    )
    ex.apply(
        Escalate(action=ActionKind.ESCALATE, message="help"), key="e", incident_id="i", allowed=ANY
    )
    assert subject.notifier.sent == [("i", "hello", False), ("i", "help", True)]
