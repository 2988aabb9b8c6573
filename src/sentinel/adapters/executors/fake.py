"""``FakeExecutor``: the fake ``ports.ActionExecutor``, held to the same contract as
``Executor`` by ``tests/test_executors.py`` (the same checks, from ``contract``), and the
record of what it did (``ExecutedCall``, ``CallKind``).

What must not live here: any git, HTTP or real notifying (the fake touches nothing
outside itself), and deciding whether a step may run (``sentinel.remediation``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, assert_never

from sentinel.adapters.executors.contract import (
    _COMMIT_RE,
    _check_allowed_paths,
    _check_allowed_repo,
    _check_key,
    _repo_path,
    review_branch,
)
from sentinel.adapters.executors.notify import MemoryNotifier
from sentinel.errors import ActionRefused, RemediationError
from sentinel.playbooks.model import (
    Escalate,
    GitopsRollback,
    Http,
    ModelFailover,
    Notify,
    ShadowMode,
    Throttle,
)
from sentinel.ports import StepResult
from sentinel.settings import PushMode

if TYPE_CHECKING:
    from sentinel.playbooks.model import AnyAction, BlastRadius
    from sentinel.ports import ActionExecutor, Notifier

__all__ = ["CallKind", "ExecutedCall", "FakeExecutor"]


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
    # mypy proves the fake satisfies its port.
    def _conforms(fake: FakeExecutor) -> ActionExecutor:
        return fake
