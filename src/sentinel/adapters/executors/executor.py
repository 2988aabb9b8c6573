"""``Executor``: the real ``ports.ActionExecutor``; dispatches git steps to ``GitOps``,
``http`` steps (and ``throttle`` through an endpoint) to httpx, ``notify`` / ``escalate``
to a ``ports.Notifier``.

What must not live here: how a step is carried out (``gitops``, ``http``, the
notifier), deciding whether a step may run (``sentinel.remediation``), and persisting
action records (the store). It dispatches, and remembers non-git results by key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, assert_never

import httpx

from sentinel.adapters.executors.contract import _check_key, _number
from sentinel.adapters.executors.http import _send
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

if TYPE_CHECKING:
    from sentinel.adapters.executors.gitops import GitOps
    from sentinel.playbooks.model import AnyAction, BlastRadius
    from sentinel.ports import ActionExecutor, Notifier

__all__ = ["Executor"]


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


if TYPE_CHECKING:
    # mypy proves the adapter satisfies its port.
    def _conforms(real: Executor) -> ActionExecutor:
        return real
