"""Carrying out rendered remediation steps, and the fakes that stand in for it.

What lives here:

- ``GitOps``: the git steps (``gitops_rollback``, and ``throttle`` / ``shadow_mode`` /
  ``model_failover`` editing a YAML file with ruamel.yaml round-trip, comments kept), in
  sentinel's own working clone of each configured repository (``workdir/<name>``), each
  change one commit pushed to the repository's branch or to a review branch.
- ``Executor``: the real ``ports.ActionExecutor``; dispatches git steps to ``GitOps``,
  ``http`` steps (and ``throttle`` through an endpoint) to httpx, ``notify`` / ``escalate``
  to a ``ports.Notifier``.
- ``ConsoleNotifier`` and ``MemoryNotifier``: a ``ports.Notifier`` that writes to a
  stream or a rich Console, and the fake that records.
- ``FakeExecutor``: the fake ``ports.ActionExecutor``, held to the same contract as
  ``Executor`` by ``tests/test_executors.py``.

What must not live here: deciding whether a step may run (gates, kill switch, cooldowns,
the global policy of ``[remediation]``: ``sentinel.remediation``), rendering templates
(``playbooks.model``), persisting action records (the store), and any shell. Git runs
through gitpython with one argument per token; every value that came from a template is
checked (a commit id against a hex regex, a path against ``..`` and absolute paths, text
against line breaks) before it reaches git or a commit message.

Idempotency of a git step, shared by ``GitOps`` and ``FakeExecutor``: every commit
sentinel makes carries the trailers ``Sentinel-Incident: <id>`` and ``Sentinel-Action:
<key>``. ``apply`` first fetches and looks for a commit with the key's trailer on the
remote branch (and on sentinel's review branches): found, it is the result and nothing
is done. Else it looks in the clone, where each unpushed commit is kept on its own local
branch ``sentinel-pending/<digest of key>`` until it is pushed: found (a crash or a
failed push between commit and push), it is pushed. Only then is the work done. So
``apply`` twice, or again after a crash, leaves exactly one commit on the remote.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TextIO, assert_never

import git
import httpx
import structlog
from git.exc import ODBError
from rich.console import Console
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import ScalarString

from sentinel.adapters.git import glob_regex
from sentinel.errors import ActionRefused, ConfigError, RemediationError
from sentinel.playbooks.model import (
    Escalate,
    GitopsRollback,
    Http,
    HttpCall,
    ModelFailover,
    Notify,
    ShadowMode,
    Throttle,
)
from sentinel.ports import StepResult
from sentinel.settings import PushMode

if TYPE_CHECKING:
    from sentinel.clock import Clock
    from sentinel.playbooks.model import AnyAction, BlastRadius
    from sentinel.ports import ActionExecutor, Notifier
    from sentinel.settings import RemediationSettings, RepoSettings

__all__ = [
    "ACTION_TRAILER",
    "INCIDENT_TRAILER",
    "CallKind",
    "ConsoleNotifier",
    "ExecutedCall",
    "Executor",
    "FakeExecutor",
    "GitOps",
    "GitStep",
    "MemoryNotifier",
    "mask_credentials",
    "review_branch",
]

log = structlog.get_logger(__name__)

GitStep = GitopsRollback | Throttle | ShadowMode | ModelFailover

INCIDENT_TRAILER = "Sentinel-Incident"
ACTION_TRAILER = "Sentinel-Action"
_REMOTE = "origin"
_REVIEW_PREFIX = "sentinel/"
_PENDING_PREFIX = "sentinel-pending/"
# A commit id as a playbook may give it (a change event's short id up to a SHA-256 id).
# Checked before it reaches git, so it can never be read as an option or a rev expression.
_COMMIT_RE = re.compile(r"[0-9a-fA-F]{4,64}")
# One line of text: what goes into a commit message or a trailer must not forge another.
_LINE_RE = re.compile(r"[^\x00-\x1f\x7f]+")
# git states a clone must not be left in, checked beside the working tree.
_IN_PROGRESS = ("MERGE_HEAD", "REVERT_HEAD", "CHERRY_PICK_HEAD", "rebase-merge", "rebase-apply")
MASK = "********"


def _line(what: str, value: str) -> str:
    """``value`` when it is one line of printable text, else ``ActionRefused``."""
    if not _LINE_RE.fullmatch(value) or value != value.strip():
        raise ActionRefused(f"{what} {value!r} must be one line of text without control characters")
    return value


def _check_key(key: str, incident_id: str) -> None:
    # The caller builds these; a line break here would forge a trailer.
    for what, value in (("idempotency key", key), ("incident id", incident_id)):
        if not _LINE_RE.fullmatch(value) or value != value.strip():
            raise ValueError(f"{what} must be one line of printable text, got {value!r}")


def review_branch(incident_id: str, key: str) -> str:
    """The branch a step's commit goes to in ``PushMode.REVIEW``:
    ``sentinel/<incident>-<key without the incident>``, cut to characters a ref name
    may hold."""
    suffix = key.removeprefix(incident_id).lstrip(":/-_. ") or key
    raw = f"{incident_id}-{suffix}"
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", raw).strip("-")[:100].strip("-")
    return _REVIEW_PREFIX + (name or hashlib.sha1(key.encode()).hexdigest()[:16])  # noqa: S324


def _pending_branch(key: str) -> str:
    # A digest: any key becomes a valid, collision-free ref name. Not a security use.
    return _PENDING_PREFIX + hashlib.sha1(key.encode()).hexdigest()[:24]  # noqa: S324


def _repo_path(path: str) -> str:
    """``path`` as a clean repo-relative POSIX path, else ``ActionRefused``."""
    _line("path", path)
    if path.startswith("/") or "\\" in path:
        raise ActionRefused(f"path {path!r} must be relative to the repository root")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or any(p.lower() == ".git" for p in parts):
        raise ActionRefused(
            f"path {path!r} must stay inside the repository (no '..', '.', '//' or .git)"
        )
    return str(PurePosixPath(*parts))


def _check_allowed_paths(repo: str, paths: Sequence[str], allowed: BlastRadius) -> None:
    outside = [p for p in paths if not any(glob_regex(g).fullmatch(p) for g in allowed.paths)]
    if outside:
        raise ActionRefused(
            f"repo {repo!r}: path(s) {outside!r} are outside the blast radius "
            f"(allowed paths: {list(allowed.paths)!r})"
        )


def _check_allowed_repo(repo: str, allowed: BlastRadius) -> None:
    if allowed.repos and repo not in allowed.repos:
        raise ActionRefused(
            f"repo {repo!r} is outside the blast radius (allowed repos: {list(allowed.repos)!r})"
        )


def _message(subject: str, body: str, *, incident_id: str, key: str) -> str:
    return f"{subject}\n\n{body}\n\n{INCIDENT_TRAILER}: {incident_id}\n{ACTION_TRAILER}: {key}\n"


def _carries_key(message: str, key: str) -> bool:
    trailers = message.rstrip("\n").rsplit("\n\n", 1)[-1].splitlines()
    return f"{ACTION_TRAILER}: {key}" in trailers


# --- YAML edits ---------------------------------------------------------------------------


def _guess_indent(text: str) -> tuple[int, int, int]:
    """(mapping indent, sequence indent, dash offset) the file already uses, so a one-key
    edit does not re-indent the whole file (ruamel.yaml's own guess mixes the two)."""
    mapping: int | None = None
    sequence: int | None = None
    offset: int | None = None
    prev_col = -1
    prev_opens = False
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        col = len(line) - len(stripped)
        if prev_opens and stripped.startswith("- ") and col >= prev_col and offset is None:
            offset = col - prev_col
            content = col + 1 + (len(stripped) - 1 - len(stripped[1:].lstrip(" ")))
            sequence = content - prev_col
        elif prev_opens and col > prev_col and mapping is None and not stripped.startswith("-"):
            mapping = col - prev_col
        code = re.sub(r"\s+#.*$", "", stripped)
        prev_opens = code.endswith(":")
        prev_col = col
    mapping = mapping or 2
    offset = offset or 0
    sequence = max(sequence or mapping, offset + 2)
    return mapping, sequence, offset


def _yaml(text: str) -> YAML:
    yaml = YAML()  # round-trip: comments, key order and quotes survive
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long lines
    mapping, sequence, offset = _guess_indent(text)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


def _load_yaml(text: str, where: str) -> tuple[YAML, CommentedMap]:
    yaml = _yaml(text)
    try:
        data = yaml.load(text) if text.strip() else None
    except YAMLError as e:
        raise ActionRefused(f"{where}: not valid YAML: {e}") from e
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise ActionRefused(f"{where}: the document must be a mapping, not {type(data).__name__}")
    return yaml, data


def _dump_yaml(yaml: YAML, data: CommentedMap) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _child(parent: CommentedMap, key: str, where: str) -> CommentedMap:
    """``parent[key]``, a mapping, created when missing."""
    if key not in parent or parent[key] is None:
        parent[key] = CommentedMap()
    child = parent[key]
    if not isinstance(child, CommentedMap):
        raise ActionRefused(f"{where}: {key!r} must be a mapping, not {type(child).__name__}")
    return child


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _replace_models(node: Any, model: str, fallback: str) -> int:
    """Set every ``model: <model>`` under ``node`` to ``fallback`` (keeping quotes);
    how many were set."""
    count = 0
    if isinstance(node, CommentedMap):
        for k in list(node):
            value = node[k]
            if k == "model" and isinstance(value, str) and str(value) == model:
                node[k] = type(value)(fallback) if isinstance(value, ScalarString) else fallback
                count += 1
            else:
                count += _replace_models(value, model, fallback)
    elif isinstance(node, CommentedSeq):
        for item in node:
            count += _replace_models(item, model, fallback)
    return count


def _has_model(node: Any, model: str) -> bool:
    if isinstance(node, CommentedMap):
        return any(
            (k == "model" and isinstance(v, str) and str(v) == model) or _has_model(v, model)
            for k, v in node.items()
        )
    if isinstance(node, CommentedSeq):
        return any(_has_model(item, model) for item in node)
    return False


@dataclass(frozen=True, slots=True)
class _Edit:
    """A change to one YAML file. ``change`` makes it on the parsed file and returns the
    commit subject, or None when the file already says so."""

    body: str
    change: Callable[[CommentedMap, str], str | None]


def _throttle_edit(step: Throttle, path: str) -> _Edit:
    target = _line("throttle target", step.target)
    rpm = _number(step.requests_per_minute)

    def change(data: CommentedMap, where: str) -> str | None:
        entry = _child(_child(data, "rate_limits", where), target, f"{where}: rate_limits")
        if entry.get("requests_per_minute") == rpm:
            return None
        entry["requests_per_minute"] = rpm
        return f"Throttle {target} to {rpm} requests/minute"

    return _Edit(f"Sets rate_limits.{target}.requests_per_minute to {rpm} in {path}.", change)


def _shadow_edit(step: ShadowMode, path: str) -> _Edit:
    target = _line("shadow target", step.target)

    def change(data: CommentedMap, where: str) -> str | None:
        shadow = _child(data, "shadow", where)
        if shadow.get(target) is True:
            return None
        shadow[target] = True
        return f"Shadow mode for {target}"

    return _Edit(
        f"Sets shadow.{target} to true in {path}: it keeps receiving copies of traffic and "
        "its answers are not used.",
        change,
    )


def _failover_edit(step: ModelFailover, path: str) -> _Edit:
    model = _line("model", step.model)
    agent = _line("agent", step.agent) if step.agent is not None else None
    given = _line("fallback", step.fallback) if step.fallback is not None else None
    scope_name = f"agents.{agent}" if agent is not None else "the file"

    def change(data: CommentedMap, where: str) -> str | None:
        scope: Any = data
        if agent is not None:
            agents = data.get("agents")
            scope = agents.get(agent) if isinstance(agents, CommentedMap) else None
            if not isinstance(scope, CommentedMap):
                raise ActionRefused(f"{where}: there is no mapping agents.{agent} to fail over")
        fallback = given
        if fallback is None:
            fallbacks = data.get("fallbacks")
            found = fallbacks.get(model) if isinstance(fallbacks, CommentedMap) else None
            if not isinstance(found, str) or not found:
                raise ActionRefused(
                    f"{where}: the step names no fallback and fallbacks.{model} is not set"
                )
            fallback = _line(f"{where}: fallbacks.{model}", str(found))
        if _replace_models(scope, model, fallback):
            return f"Fail over {model} to {fallback}"
        if _has_model(scope, fallback):
            return None  # failed over already
        raise ActionRefused(f"{where}: no 'model: {model}' in {scope_name} to fail over")

    return _Edit(f"Replaces every 'model: {model}' in {scope_name} of {path}.", change)


# --- GitOps -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Commit:
    """The work is staged: commit it with this subject and body."""

    subject: str
    body: str


@dataclass(frozen=True, slots=True)
class _Nothing:
    """Nothing to commit (the tree already says so); ``detail`` says why."""

    detail: str


# Does a step's work in the clone (checked out on its pending branch at the remote tip):
# stages the change and says what to commit, or says there is nothing to do.
_Work = Callable[[git.Repo, Path], "_Commit | _Nothing"]


class GitOps:
    """The git steps, carried out in sentinel's own working clone of each repository.

    ``workdir/<name>`` is a non-bare clone (made on first use, ``origin`` = the repo's
    URL). Each operation checks the clone is clean (refusing otherwise, touching nothing),
    fetches, looks for the step's commit by its key (module docstring), then checks out a
    branch at ``origin/<branch>`` (the clean tree makes this the hard reset), does the
    work, commits, calls ``after_commit`` (a test seam for a crash there) and pushes. A
    refusal or an error before the commit leaves the clone as it was; after the commit,
    the commit stays on its pending branch until a push succeeds.

    A push the remote rejects because it moved is retried once after a fetch and a
    rebase; a rebase conflict refuses (and drops the commit, so the next ``apply`` with
    the key does the work afresh on the new tip).

    All work runs under one lock; every ``git.Repo`` is opened per operation and closed.

    ``repos`` are the ``[[changes.repos]]`` it may change, ``workdir`` the resolved
    folder of its clones, ``clock`` dates its commits (so a simulated fleet's change feed
    sees them at simulated time). ``after_commit`` is called with the id of each new
    commit before it is pushed: a test seam (raise to simulate a crash there).
    """

    def __init__(
        self,
        settings: RemediationSettings,
        repos: Sequence[RepoSettings],
        workdir: Path,
        clock: Clock,
        *,
        after_commit: Callable[[str], None] | None = None,
        timeout_seconds: float = 300.0,
    ) -> None:
        names = [r.name for r in repos]
        if len(set(names)) != len(names):
            raise ConfigError(f"changes.repos: repo names must be unique, got {names!r}")
        if settings.config_repo and settings.config_repo not in names:
            raise ConfigError(
                f"remediation.config_repo = {settings.config_repo!r} is not in "
                f"[[changes.repos]] ({sorted(names)!r})"
            )
        self._settings = settings
        self._repos = {r.name: r for r in repos}
        self._workdir = workdir
        self._clock = clock
        self._after_commit = after_commit
        # A hung remote must not block the one git worker forever.
        self._timeout = timeout_seconds
        self._lock = threading.Lock()

    # --- the steps --------------------------------------------------------------------

    def apply(
        self, step: GitStep, *, key: str, incident_id: str, allowed: BlastRadius
    ) -> StepResult:
        """Carry out one git step (see the class docstring). Raises ``ActionRefused``
        (nothing changed) or ``RemediationError``."""
        _check_key(key, incident_id)
        spec = self._spec(self.repo_of(step))
        _check_allowed_repo(spec.name, allowed)
        why = f"Sentinel made this change to remediate incident {incident_id}."
        work: _Work
        match step:
            case GitopsRollback():
                sha = step.change
                if not _COMMIT_RE.fullmatch(sha):
                    raise ActionRefused(f"gitops_rollback: {sha!r} is not a commit id (hex)")
                work = self._revert_work(spec, sha.lower(), why=why, allowed=allowed)
            case Throttle() | ShadowMode() | ModelFailover():
                if step.git is None:  # a throttle through HTTP is not a git step
                    raise RemediationError(f"step {step.id!r}: throttle without 'git' in GitOps")
                path = _repo_path(step.git.path)
                _check_allowed_paths(spec.name, [path], allowed)
                if isinstance(step, Throttle):
                    edit = _throttle_edit(step, path)
                elif isinstance(step, ShadowMode):
                    edit = _shadow_edit(step, path)
                else:
                    edit = _failover_edit(step, path)
                work = self._edit_work(spec, path, edit, why=why)
            case _:
                assert_never(step)
        return self._run(spec, key=key, incident_id=incident_id, work=work)

    def revert(
        self, step: AnyAction, result: StepResult, *, key: str, incident_id: str
    ) -> StepResult:
        """Revert the commit ``result`` names, idempotent by ``key`` as ``apply`` is.
        Nothing to do when it made no commit, or when that commit is not on the branch
        (a review branch never merged)."""
        _check_key(key, incident_id)
        if result.commit is None:
            return StepResult(detail="nothing to undo: the step made no commit", repo=result.repo)
        if not _COMMIT_RE.fullmatch(result.commit):
            raise ActionRefused(f"undo: {result.commit!r} is not a commit id (hex)")
        name = result.repo
        if name is None:
            if not isinstance(step, GitStep):
                raise RemediationError(f"undo of {result.commit!r}: the result names no repo")
            name = self.repo_of(step)
        spec = self._spec(name)
        why = f"Sentinel undid its own change for incident {incident_id}: it did not help."
        work = self._revert_work(spec, result.commit.lower(), why=why, allowed=None)
        return self._run(spec, key=key, incident_id=incident_id, work=work)

    def repo_of(self, step: GitStep) -> str:
        """The repository a git step changes (``remediation.config_repo`` by default)."""
        if isinstance(step, GitopsRollback):
            return step.repo
        name = step.git.repo if step.git is not None else None
        if name is None:
            if not self._settings.config_repo:
                raise ActionRefused(
                    f"step {step.id or step.action.value!r} names no repo and "
                    "remediation.config_repo is not set"
                )
            return self._settings.config_repo
        return name

    def _spec(self, name: str) -> RepoSettings:
        spec = self._repos.get(name)
        if spec is None:
            raise ActionRefused(
                f"repo {name!r} is not in [[changes.repos]] ({sorted(self._repos)!r})"
            )
        return spec

    # --- the work of each step ----------------------------------------------------------

    def _revert_work(
        self, spec: RepoSettings, sha: str, *, why: str, allowed: BlastRadius | None
    ) -> _Work:
        base = _tracking(spec.branch)

        def work(repo: git.Repo, root: Path) -> _Commit | _Nothing:
            try:
                full = str(repo.git.rev_parse("--verify", "--quiet", f"{sha}^{{commit}}")).strip()
            except git.GitCommandError as e:
                raise ActionRefused(
                    f"repo {spec.name!r}: {sha!r} is not a commit there (unknown or ambiguous)"
                ) from e
            commit = repo.commit(full)
            if not _is_ancestor(repo, full, base):
                if allowed is None:  # an undo of a commit that never went live
                    return _Nothing(
                        f"commit {full[:12]} is not on {spec.branch} (never merged): "
                        "nothing to undo"
                    )
                raise ActionRefused(
                    f"repo {spec.name!r}: commit {full[:12]} is not on branch {spec.branch!r}"
                )
            if allowed is not None:
                _check_allowed_paths(spec.name, _touched(repo, commit), allowed)
            args = ["--no-commit"]
            if len(commit.parents) > 1:
                args += ["--mainline", "1"]  # a merge: revert what it brought to the branch
            try:
                repo.git.revert(*args, full)
            except git.GitCommandError as e:
                with contextlib.suppress(git.GitCommandError):
                    repo.git.revert("--abort")  # and _run resets the tree in any case
                raise ActionRefused(
                    f"repo {spec.name!r}: reverting {full[:12]} conflicts with later changes "
                    f"on {spec.branch!r}; a person must resolve it"
                ) from e
            subject = commit.summary if isinstance(commit.summary, str) else commit.summary.decode()
            return _Commit(
                subject=f'Revert "{subject}"',
                body=f"This reverts commit {full}.\n\n{why}",
            )

        return work

    def _edit_work(self, spec: RepoSettings, path: str, edit: _Edit, *, why: str) -> _Work:
        def work(repo: git.Repo, root: Path) -> _Commit | _Nothing:
            file = root / path
            # A symlink in the tree must not lead the edit out of the clone.
            if not file.resolve().is_relative_to(root.resolve()):
                raise ActionRefused(f"repo {spec.name!r}: {path!r} leads outside the repo")
            where = f"{spec.name}:{path}"
            try:
                text = file.read_text(encoding="utf-8") if file.exists() else ""
            except (OSError, UnicodeDecodeError) as e:
                raise ActionRefused(f"{where}: cannot read: {e}") from e
            yaml, data = _load_yaml(text, where)
            subject = edit.change(data, where)
            if subject is None:
                return _Nothing(f"{where} already says so: nothing to change")
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(_dump_yaml(yaml, data), encoding="utf-8")
            repo.git.add("--", path)
            return _Commit(subject=subject, body=f"{edit.body}\n\n{why}")

        return work

    # --- the common run: find by key, work, commit, push ----------------------------------

    def _run(self, spec: RepoSettings, *, key: str, incident_id: str, work: _Work) -> StepResult:
        target = (
            review_branch(incident_id, key)
            if self._settings.push is PushMode.REVIEW
            else spec.branch
        )
        with self._lock:
            try:
                repo = self._open(spec)
            except (git.GitError, ODBError, OSError) as e:
                raise self._error(spec, "cannot open the working clone", e) from e
            try:
                return self._run_in(
                    repo, spec, key=key, incident_id=incident_id, work=work, target=target
                )
            except (git.GitError, ODBError, OSError) as e:
                raise self._error(spec, "git failed", e) from e
            finally:
                repo.close()

    def _run_in(
        self,
        repo: git.Repo,
        spec: RepoSettings,
        *,
        key: str,
        incident_id: str,
        work: _Work,
        target: str,
    ) -> StepResult:
        self._refuse_unclean(repo, spec)
        self._fetch(repo, spec)
        base = _tracking(spec.branch)
        pending = _pending_branch(key)

        found = self._find_on_remote(repo, spec, key)
        if found is not None:
            done, branch = found
            self._drop_pending(repo, pending)  # a push whose cleanup did not happen
            log.info("executor.git.already_applied", repo=spec.name, key=key, commit=done)
            return StepResult(
                detail=f"already done: commit {done[:12]} on {branch} carries key {key!r}",
                repo=spec.name,
                commit=done,
                branch=branch,
            )

        left = self._find_pending(repo, pending, key)
        if left is not None:
            sha = left
            log.warning("executor.git.pushing_pending", repo=spec.name, key=key, commit=sha)
            repo.git.checkout("-q", pending, "--")
            summary = f"pushed the commit an earlier attempt left ({_subject(repo, sha)!r})"
        else:
            repo.git.checkout("-q", "-B", pending, base, "--")
            try:
                outcome = work(repo, Path(str(repo.working_tree_dir)))
                if isinstance(outcome, _Commit) and not _staged(repo):
                    outcome = _Nothing("the change is already in the tree: nothing to commit")
                if isinstance(outcome, _Nothing):
                    self._discard(repo, pending, base)
                    return StepResult(detail=outcome.detail, repo=spec.name)
                subject = f"{outcome.subject} (sentinel, incident {incident_id})"
                message = _message(subject, outcome.body, incident_id=incident_id, key=key)
                repo.git.commit("-q", "--no-verify", f"--message={message}")
            except BaseException:
                self._discard(repo, pending, base)
                raise
            sha = repo.head.commit.hexsha
            summary = subject
            if self._after_commit is not None:
                self._after_commit(sha)
        sha = self._push(repo, spec, sha, pending=pending, target=target)
        self._drop_pending(repo, pending)
        log.info("executor.git.pushed", repo=spec.name, key=key, commit=sha, branch=target)
        return StepResult(
            detail=f"{summary}; pushed as {sha[:12]} to {spec.name}:{target}",
            repo=spec.name,
            commit=sha,
            branch=target,
        )

    def _open(self, spec: RepoSettings) -> git.Repo:
        path = self._workdir / spec.name
        if path.exists() and any(path.iterdir()):
            repo = git.Repo(path)
        else:
            path.mkdir(parents=True, exist_ok=True)
            repo = git.Repo.init(path)
        try:
            if repo.bare:
                raise RemediationError(f"repo {spec.name!r}: {path} is a bare repository")
            origin = next((r for r in repo.remotes if r.name == _REMOTE), None)
            if origin is None:
                repo.create_remote(_REMOTE, spec.url)
            elif origin.url != spec.url:
                origin.set_url(spec.url)
            # git's rules for branch names: an invalid one fails here, clearly.
            repo.git.check_ref_format(f"refs/heads/{spec.branch}")
            when = f"@{int(self._clock.now().timestamp())} +0000"
            repo.git.update_environment(
                GIT_TERMINAL_PROMPT="0",  # a credential prompt would hang the worker
                GIT_AUTHOR_NAME=self._settings.author_name,
                GIT_AUTHOR_EMAIL=self._settings.author_email,
                GIT_COMMITTER_NAME=self._settings.author_name,
                GIT_COMMITTER_EMAIL=self._settings.author_email,
                GIT_AUTHOR_DATE=when,
                GIT_COMMITTER_DATE=when,
            )
        except BaseException:
            repo.close()
            raise
        return repo

    def _refuse_unclean(self, repo: git.Repo, spec: RepoSettings) -> None:
        busy = [n for n in _IN_PROGRESS if (Path(repo.git_dir) / n).exists()]
        if busy:
            raise ActionRefused(
                f"repo {spec.name!r}: the working clone {repo.working_tree_dir} is in the "
                f"middle of a git operation ({', '.join(busy)}); a person must finish it"
            )
        status = str(repo.git.status("--porcelain=v1", "-z", "--untracked-files=all"))
        changed = [entry[3:] for entry in status.split("\0") if len(entry) > 3]
        if changed:
            raise ActionRefused(
                f"repo {spec.name!r}: the working clone {repo.working_tree_dir} has "
                f"uncommitted changes ({changed[:5]!r}); a person must clean it"
            )

    def _fetch(self, repo: git.Repo, spec: RepoSettings) -> None:
        repo.git.fetch(
            "--no-tags",
            "--quiet",
            "--prune",
            _REMOTE,
            f"+refs/heads/{spec.branch}:{_tracking(spec.branch)}",
            f"+refs/heads/{_REVIEW_PREFIX}*:{_tracking(_REVIEW_PREFIX)}*",
            kill_after_timeout=self._timeout,
        )
        try:
            repo.git.rev_parse("--verify", "--quiet", f"{_tracking(spec.branch)}^{{commit}}")
        except git.GitCommandError as e:
            raise RemediationError(
                f"repo {spec.name!r}: branch {spec.branch!r} not found on the remote"
            ) from e

    def _find_on_remote(
        self, repo: git.Repo, spec: RepoSettings, key: str
    ) -> tuple[str, str] | None:
        """The commit carrying ``key`` on the branch or a review branch, and which."""
        base = _tracking(spec.branch)
        out = repo.git.rev_list(
            "--fixed-strings",
            f"--grep={ACTION_TRAILER}: {key}",
            base,
            f"--glob={_tracking(_REVIEW_PREFIX)}*",
            "--",
        )
        for sha in str(out).split():
            if not _carries_key(_full_message(repo, sha), key):
                continue
            if _is_ancestor(repo, sha, base):
                return sha, spec.branch
            refs = repo.git.for_each_ref(
                "--contains", sha, "--format=%(refname)", _tracking(_REVIEW_PREFIX)
            )
            first = str(refs).split()[0]
            return sha, first.removeprefix(_tracking(""))
        return None

    def _find_pending(self, repo: git.Repo, pending: str, key: str) -> str | None:
        try:
            sha = str(repo.git.rev_parse("--verify", "--quiet", f"refs/heads/{pending}")).strip()
        except git.GitCommandError:
            return None
        return sha if _carries_key(_full_message(repo, sha), key) else None

    def _push(
        self, repo: git.Repo, spec: RepoSettings, sha: str, *, pending: str, target: str
    ) -> str:
        """Push ``sha`` to ``target``; on a rejection because the remote branch moved,
        fetch, rebase once and push again. The commit pushed."""
        for attempt in (1, 2):
            try:
                repo.git.push(
                    "--quiet",
                    _REMOTE,
                    f"{sha}:refs/heads/{target}",
                    kill_after_timeout=self._timeout,
                )
                return sha
            except git.GitCommandError as e:
                keep = "the commit is kept and a later apply with the same key pushes it"
                try:
                    self._fetch(repo, spec)
                except (git.GitError, RemediationError) as fetch_error:
                    raise self._error(
                        spec, f"push of {sha[:12]} to {target!r} failed ({keep})", e
                    ) from fetch_error
                remote = _tracking(target)
                moved = target == spec.branch and not _is_ancestor(repo, remote, sha)
                if attempt == 2 or not moved:
                    raise self._error(
                        spec, f"push of {sha[:12]} to {target!r} failed ({keep})", e
                    ) from e
                log.info("executor.git.push_rejected_rebasing", repo=spec.name, commit=sha)
                try:
                    repo.git.rebase("--quiet", _tracking(spec.branch))
                except git.GitCommandError as rebase_error:
                    with contextlib.suppress(git.GitCommandError):
                        repo.git.rebase("--abort")
                    self._discard(repo, pending, _tracking(spec.branch))
                    raise ActionRefused(
                        f"repo {spec.name!r}: {spec.branch!r} moved while pushing and the "
                        "change no longer applies on it; nothing was pushed"
                    ) from rebase_error
                sha = repo.head.commit.hexsha
        raise AssertionError("unreachable")  # pragma: no cover

    def _discard(self, repo: git.Repo, pending: str, base: str) -> None:
        """Back to a clean tree at ``base``, without the pending branch: the tree was clean
        before the work, so everything reset or removed here was ours."""
        repo.git.reset("-q", "--hard")
        repo.git.clean("-q", "-f", "-d")
        repo.git.checkout("-q", "--detach", base, "--")
        self._drop_pending(repo, pending)

    @staticmethod
    def _drop_pending(repo: git.Repo, pending: str) -> None:
        if not repo.head.is_detached and repo.active_branch.name == pending:
            repo.git.checkout("-q", "--detach")
        with contextlib.suppress(git.GitCommandError):  # there may be none
            repo.git.branch("-q", "-D", pending)

    @staticmethod
    def _error(spec: RepoSettings, what: str, e: BaseException) -> RemediationError:
        # git's stderr may quote the URL, password included.
        detail = mask_credentials(str(e).strip())
        return RemediationError(
            f"repo {spec.name!r} ({mask_credentials(spec.url)}): {what}: "
            f"{type(e).__name__}: {detail}"
        )


def _tracking(branch: str) -> str:
    return f"refs/remotes/{_REMOTE}/{branch}"


def _full_message(repo: git.Repo, sha: str) -> str:
    message = repo.commit(sha).message
    return message if isinstance(message, str) else message.decode()


def _subject(repo: git.Repo, sha: str) -> str:
    return _full_message(repo, sha).split("\n", 1)[0]


def _is_ancestor(repo: git.Repo, ancestor: str, rev: str) -> bool:
    try:
        repo.git.merge_base("--is-ancestor", ancestor, rev)
    except git.GitCommandError as e:
        if e.status == 1:
            return False
        raise
    return True


def _staged(repo: git.Repo) -> bool:
    return bool(str(repo.git.diff("--cached", "--name-only", "-z")))


def _touched(repo: git.Repo, commit: Any) -> list[str]:
    """Every path ``commit`` changed (against its first parent)."""
    args = ["-r", "-z", "--name-only", "--no-renames", "--no-commit-id"]
    if commit.parents:
        out = repo.git.diff_tree(*args, commit.parents[0].hexsha, commit.hexsha)
    else:
        out = repo.git.diff_tree(*args, "--root", commit.hexsha)
    return [p for p in str(out).split("\0") if p]


# --- HTTP ---------------------------------------------------------------------------------

_USERINFO_RE = re.compile(r"(?<=://)([^/?#@\s]*)@")
_SECRET_PARAM_RE = re.compile(
    r"([?&][^=&#]*(?:token|key|secret|password|passwd|auth|sig|signature)[^=&#]*=)[^&#\s]*",
    re.IGNORECASE,
)


def mask_credentials(text: str) -> str:
    """``text`` with the credentials of the URLs in it hidden: the password of
    ``user:pass@`` (a lone ``token@`` whole) and secret-looking query parameters."""

    def userinfo(m: re.Match[str]) -> str:
        user, sep, _ = m.group(1).partition(":")
        return f"{user}:{MASK}@" if sep else f"{MASK}@"

    return _SECRET_PARAM_RE.sub(rf"\g<1>{MASK}", _USERINFO_RE.sub(userinfo, text))


def _send(
    client: httpx.Client, call: HttpCall, *, key: str, default_body: Mapping[str, Any] | None
) -> StepResult:
    method = call.method.value
    url = mask_credentials(call.url)
    headers = {k: v for k, v in call.headers.items() if k.lower() != "idempotency-key"}
    headers["Idempotency-Key"] = key
    body = call.json_body if call.json_body is not None else default_body
    try:
        response = client.request(
            method,
            call.url,
            headers=headers,
            json=dict(body) if body is not None else None,
            timeout=call.timeout_seconds,
        )
    except (httpx.HTTPError, httpx.InvalidURL) as e:
        raise RemediationError(
            f"{method} {url} failed: {type(e).__name__}: {mask_credentials(str(e))}"
        ) from e
    status = response.status_code
    if status not in call.expect_status:
        raise RemediationError(
            f"{method} {url} answered {status} {response.reason_phrase}, expected one of "
            f"{list(call.expect_status)}"
        )
    log.info("executor.http.sent", method=method, url=url, status=status)
    return StepResult(detail=f"{method} {url} answered {status}", status=status)


# --- notifiers ----------------------------------------------------------------------------


class ConsoleNotifier:
    """A ``ports.Notifier`` that writes one clear line (escalations marked) to a text
    stream or a rich Console, and logs it."""

    def __init__(self, out: TextIO | Console) -> None:
        self._out = out

    def notify(self, incident_id: str, message: str, *, escalate: bool = False) -> None:
        head = "ESCALATION" if escalate else "notice"
        # Continuation lines indented: a multi-line message still reads as one notice.
        text = f"[sentinel] {head} for incident {incident_id}: " + message.replace("\n", "\n    ")
        if isinstance(self._out, Console):
            self._out.print(
                text, markup=False, highlight=False, style="bold red" if escalate else None
            )
        else:
            self._out.write(text + "\n")
            self._out.flush()
        log.info("notifier.sent", incident=incident_id, escalate=escalate, message=message)


class MemoryNotifier:
    """The fake ``ports.Notifier``: ``sent`` holds (incident_id, message, escalate)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bool]] = []

    def notify(self, incident_id: str, message: str, *, escalate: bool = False) -> None:
        self.sent.append((incident_id, message, escalate))


# --- the executor -------------------------------------------------------------------------


class Executor:
    """The real ``ports.ActionExecutor``: git steps to ``GitOps``, HTTP with httpx (an
    injected ``httpx.Client``, else one of its own that ``close`` closes), notifications
    to the ``Notifier``.

    Git steps are idempotent by key across restarts (their commits carry it). HTTP and
    notification steps cannot be found again: a repeated key returns the first result
    only within this instance (the Remediation Agent never repeats one whose outcome it
    does not know)."""

    def __init__(
        self, gitops: GitOps, notifier: Notifier, *, http: httpx.Client | None = None
    ) -> None:
        self._gitops = gitops
        self._notifier = notifier
        self._own_client = http is None
        self._http = http if http is not None else httpx.Client()
        self._done: dict[str, StepResult] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._own_client:
            self._http.close()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def apply(
        self, step: AnyAction, *, key: str, incident_id: str, allowed: BlastRadius
    ) -> StepResult:
        _check_key(key, incident_id)
        match step:
            case GitopsRollback() | ShadowMode() | ModelFailover():
                return self._gitops.apply(step, key=key, incident_id=incident_id, allowed=allowed)
            case Throttle():
                if step.git is not None:
                    return self._gitops.apply(
                        step, key=key, incident_id=incident_id, allowed=allowed
                    )
                assert step.http is not None  # the model requires exactly one
                body = {
                    "target": step.target,
                    "requests_per_minute": _number(step.requests_per_minute),
                }
                call = step.http
                return self._once(key, lambda: _send(self._http, call, key=key, default_body=body))
            case Http():
                call = step.call
                return self._once(key, lambda: _send(self._http, call, key=key, default_body=None))
            case Notify() | Escalate():
                escalate = isinstance(step, Escalate)
                message = step.message

                def tell() -> StepResult:
                    self._notifier.notify(incident_id, message, escalate=escalate)
                    return StepResult(
                        detail=f"{'escalated' if escalate else 'notified'}: {message}"
                    )

                return self._once(key, tell)
            case _:
                assert_never(step)

    def revert(
        self, step: AnyAction, result: StepResult, *, key: str, incident_id: str
    ) -> StepResult:
        _check_key(key, incident_id)
        if result.commit is None:
            return StepResult(detail="nothing to undo: the step made no commit", repo=result.repo)
        return self._gitops.revert(step, result, key=key, incident_id=incident_id)

    def _once(self, key: str, do: Callable[[], StepResult]) -> StepResult:
        with self._lock:
            if key in self._done:
                return self._done[key]
        result = do()
        with self._lock:
            return self._done.setdefault(key, result)


# --- the fake -----------------------------------------------------------------------------


class CallKind(StrEnum):
    APPLY = "apply"
    REVERT = "revert"


@dataclass(frozen=True, slots=True)
class ExecutedCall:
    """One apply or revert the fake carried out (repeats by key are not recorded)."""

    kind: CallKind
    step: AnyAction
    key: str
    incident_id: str
    result: StepResult


class FakeExecutor:
    """The fake ``ports.ActionExecutor``, with the real one's semantics by key: a second
    call with a key returns the first result and is not recorded again.

    ``calls`` holds the applies and reverts in order; ``live()`` the keys whose commits
    are applied and not reverted. ``repos`` are the known repositories (unknown ones are
    refused), ``config_repo`` the default for GitFile steps, ``touched`` what each commit
    a rollback may name touched (when given, other commits are unknown, and a rollback
    is checked against ``allowed.paths``).

    Failures: ``fail(on, error)`` raises ``error`` for every call whose step id or key is
    ``on``; ``fail_next(n)`` makes the next ``n`` calls raise. Injected failures come
    before the key lookup (a failing remote fails a repeat too) and are not recorded.
    """

    def __init__(
        self,
        *,
        repos: Sequence[str] = ("config",),
        config_repo: str | None = "config",
        branch: str = "main",
        push: PushMode = PushMode.BRANCH,
        notifier: Notifier | None = None,
        touched: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.repos = tuple(repos)
        self.config_repo = config_repo
        self.branch = branch
        self.push = push
        self.notifier: Notifier = notifier if notifier is not None else MemoryNotifier()
        self.touched = dict(touched) if touched is not None else None
        self.calls: list[ExecutedCall] = []
        self._results: dict[str, StepResult] = {}
        self._live: dict[str, str] = {}  # commit -> apply key
        self._fail_on: dict[str, RemediationError] = {}
        self._fail_next: list[RemediationError] = []

    def fail(self, on: str, error: RemediationError) -> None:
        """Raise ``error`` on every call for the step id or key ``on``."""
        self._fail_on[on] = error

    def fail_next(self, n: int, error: RemediationError | None = None) -> None:
        """Make the next ``n`` calls raise ``error`` (a RemediationError by default)."""
        err = error if error is not None else RemediationError("fake: injected failure")
        self._fail_next.extend([err] * n)

    def live(self) -> list[str]:
        """The keys of applied git steps whose commits have not been reverted."""
        return list(self._live.values())

    def apply(
        self, step: AnyAction, *, key: str, incident_id: str, allowed: BlastRadius
    ) -> StepResult:
        _check_key(key, incident_id)
        self._inject(step, key)
        if key in self._results:
            return self._results[key]
        result = self._apply(step, key=key, incident_id=incident_id, allowed=allowed)
        self._results[key] = result
        if result.commit is not None:
            self._live[result.commit] = key
        self.calls.append(ExecutedCall(CallKind.APPLY, step, key, incident_id, result))
        return result

    def revert(
        self, step: AnyAction, result: StepResult, *, key: str, incident_id: str
    ) -> StepResult:
        _check_key(key, incident_id)
        self._inject(step, key)
        if key in self._results:
            return self._results[key]
        if result.commit is None:
            out = StepResult(detail="nothing to undo: the step made no commit", repo=result.repo)
        else:
            if not _COMMIT_RE.fullmatch(result.commit):
                raise ActionRefused(f"undo: {result.commit!r} is not a commit id (hex)")
            self._live.pop(result.commit, None)
            out = self._commit_result(
                f"reverted {result.commit[:12]}", result.repo, key=key, incident_id=incident_id
            )
        self._results[key] = out
        self.calls.append(ExecutedCall(CallKind.REVERT, step, key, incident_id, out))
        return out

    def _inject(self, step: AnyAction, key: str) -> None:
        if self._fail_next:
            raise self._fail_next.pop(0)
        for on in (step.id, key):
            if on and on in self._fail_on:
                raise self._fail_on[on]

    def _apply(
        self, step: AnyAction, *, key: str, incident_id: str, allowed: BlastRadius
    ) -> StepResult:
        match step:
            case GitopsRollback():
                repo = self._repo(step.repo, allowed)
                if not _COMMIT_RE.fullmatch(step.change):
                    raise ActionRefused(f"gitops_rollback: {step.change!r} is not a commit id")
                if self.touched is not None:
                    hits = [c for c in self.touched if c.startswith(step.change.lower())]
                    if len(hits) != 1:
                        raise ActionRefused(f"repo {repo!r}: {step.change!r} is not a commit there")
                    _check_allowed_paths(repo, list(self.touched[hits[0]]), allowed)
                what = f"reverted {step.change}"
            case Throttle() | ShadowMode() | ModelFailover():
                if isinstance(step, Throttle) and step.git is None:
                    return StepResult(detail="fake: HTTP throttle sent", status=200)
                assert step.git is not None
                name = step.git.repo or self.config_repo
                if name is None:
                    raise ActionRefused("the step names no repo and there is no config_repo")
                repo = self._repo(name, allowed)
                path = _repo_path(step.git.path)
                _check_allowed_paths(repo, [path], allowed)
                what = f"{step.action.value} in {path}"
            case Http():
                return StepResult(detail=f"fake: {step.call.method.value} sent", status=200)
            case Notify() | Escalate():
                escalate = isinstance(step, Escalate)
                self.notifier.notify(incident_id, step.message, escalate=escalate)
                return StepResult(
                    detail=f"{'escalated' if escalate else 'notified'}: {step.message}"
                )
            case _:
                assert_never(step)
        return self._commit_result(what, repo, key=key, incident_id=incident_id)

    def _repo(self, name: str, allowed: BlastRadius) -> str:
        if name not in self.repos:
            raise ActionRefused(f"repo {name!r} is not in [[changes.repos]] ({list(self.repos)!r})")
        _check_allowed_repo(name, allowed)
        return name

    def _commit_result(
        self, what: str, repo: str | None, *, key: str, incident_id: str
    ) -> StepResult:
        commit = hashlib.sha1(f"fake:{key}".encode()).hexdigest()  # noqa: S324
        branch = review_branch(incident_id, key) if self.push is PushMode.REVIEW else self.branch
        return StepResult(
            detail=f"fake: {what}; pushed as {commit[:12]} to {repo}:{branch}",
            repo=repo,
            commit=commit,
            branch=branch,
        )


if TYPE_CHECKING:
    # mypy proves the adapters satisfy their ports.
    def _conforms(
        real: Executor, fake: FakeExecutor, console: ConsoleNotifier, memory: MemoryNotifier
    ) -> tuple[ActionExecutor, ActionExecutor, Notifier, Notifier]:
        return real, fake, console, memory
