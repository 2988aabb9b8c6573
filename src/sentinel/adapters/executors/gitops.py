"""``GitOps``: the git steps (``gitops_rollback``, and ``throttle`` / ``shadow_mode`` /
``model_failover`` editing a YAML file, see ``yaml_edits``), in sentinel's own working
clone of each configured repository (``workdir/<name>``), each change one commit pushed
to the repository's branch or to a review branch.

What must not live here: deciding whether a step may run (gates, kill switch, cooldowns,
the global policy of ``[remediation]``: ``sentinel.remediation``), rendering templates
(``playbooks.model``), the YAML edits themselves (``yaml_edits``), HTTP and notifying
(``http``, ``notify``), persisting action records (the store), and any shell. Git runs
through gitpython with one argument per token; every value that came from a template is
checked (``contract``) before it reaches git or a commit message.

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
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, assert_never

import git
import structlog
from git.exc import ODBError

from sentinel.adapters.executors.contract import (
    _COMMIT_RE,
    _REVIEW_PREFIX,
    _check_allowed_paths,
    _check_allowed_repo,
    _check_key,
    _repo_path,
    review_branch,
)
from sentinel.adapters.executors.http import mask_credentials
from sentinel.adapters.executors.yaml_edits import (
    _dump_yaml,
    _Edit,
    _failover_edit,
    _load_yaml,
    _shadow_edit,
    _throttle_edit,
)
from sentinel.errors import ActionRefused, ConfigError, RemediationError
from sentinel.playbooks.model import GitopsRollback, ModelFailover, ShadowMode, Throttle
from sentinel.ports import StepResult
from sentinel.settings import PushMode

if TYPE_CHECKING:
    from sentinel.clock import Clock
    from sentinel.playbooks.model import AnyAction, BlastRadius
    from sentinel.settings import RemediationSettings, RepoSettings

__all__ = ["ACTION_TRAILER", "INCIDENT_TRAILER", "GitOps", "GitStep"]

log = structlog.get_logger(__name__)

GitStep = GitopsRollback | Throttle | ShadowMode | ModelFailover

INCIDENT_TRAILER = "Sentinel-Incident"
ACTION_TRAILER = "Sentinel-Action"
_REMOTE = "origin"
_PENDING_PREFIX = "sentinel-pending/"
# git states a clone must not be left in, checked beside the working tree.
_IN_PROGRESS = ("MERGE_HEAD", "REVERT_HEAD", "CHERRY_PICK_HEAD", "rebase-merge", "rebase-apply")


def _pending_branch(key: str) -> str:
    # A digest: any key becomes a valid, collision-free ref name. Not a security use.
    return _PENDING_PREFIX + hashlib.sha1(key.encode()).hexdigest()[:24]  # noqa: S324


def _message(subject: str, body: str, *, incident_id: str, key: str) -> str:
    return f"{subject}\n\n{body}\n\n{INCIDENT_TRAILER}: {incident_id}\n{ACTION_TRAILER}: {key}\n"


def _carries_key(message: str, key: str) -> bool:
    trailers = message.rstrip("\n").rsplit("\n\n", 1)[-1].splitlines()
    return f"{ACTION_TRAILER}: {key}" in trailers


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
