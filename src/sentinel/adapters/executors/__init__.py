"""Carrying out rendered remediation steps, and the fakes that stand in for it.

What lives where:

- ``gitops``: ``GitOps``, the git steps (``gitops_rollback``, and ``throttle`` /
  ``shadow_mode`` / ``model_failover`` editing a YAML file), in sentinel's own working
  clone of each configured repository (``workdir/<name>``), each change one commit pushed
  to the repository's branch or to a review branch; the commit trailers
  (``INCIDENT_TRAILER``, ``ACTION_TRAILER``) that make a git step idempotent by key
  across a crash (its module docstring tells how).
- ``yaml_edits``: the edits of those YAML files with ruamel.yaml round-trip, comments kept.
- ``http``: the ``http`` step (and ``throttle`` through an endpoint) with httpx, and
  ``mask_credentials``.
- ``notify``: ``ConsoleNotifier`` and ``MemoryNotifier``, a ``ports.Notifier`` that writes
  to a stream or a rich Console, and the fake that records.
- ``executor``: ``Executor``, the real ``ports.ActionExecutor``; dispatches git steps to
  ``GitOps``, HTTP to httpx, ``notify`` / ``escalate`` to a ``ports.Notifier``.
- ``fake``: ``FakeExecutor`` (with ``ExecutedCall``, ``CallKind``), the fake
  ``ports.ActionExecutor``, held to the same contract as ``Executor`` by
  ``tests/test_executors.py``.
- ``contract``: what the real and the fake executors share: the checks every value that
  came from a template passes (a commit id against a hex regex, a path against ``..`` and
  absolute paths, text against line breaks, the blast radius) and ``review_branch``.

Import from ``sentinel.adapters.executors``, not from the modules.

What must not live here: deciding whether a step may run (gates, kill switch, cooldowns,
the global policy of ``[remediation]``: ``sentinel.remediation``), rendering templates
(``playbooks.model``), persisting action records (the store), and any shell; in this
file, anything but re-exports.
"""

from sentinel.adapters.executors.contract import review_branch
from sentinel.adapters.executors.executor import Executor
from sentinel.adapters.executors.fake import CallKind, ExecutedCall, FakeExecutor
from sentinel.adapters.executors.gitops import ACTION_TRAILER, INCIDENT_TRAILER, GitOps, GitStep
from sentinel.adapters.executors.http import mask_credentials
from sentinel.adapters.executors.notify import ConsoleNotifier, MemoryNotifier

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
