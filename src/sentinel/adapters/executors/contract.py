"""What the real and the fake executors share, so the fake refuses what the real one
refuses and names what it names: the checks every value that came from a template passes
before it reaches git, a commit message or a request (a commit id against a hex regex, a
path against ``..`` and absolute paths, text against line breaks, the idempotency key, the
blast radius), ``review_branch``, and ``_number`` (a rate as a YAML edit and an HTTP
throttle both write it).

What must not live here: any I/O (git, HTTP, notifying), and anything only one executor
uses (that lives beside it: ``gitops``, ``http``, ``executor``, ``fake``). This module
imports no other module of the package, so all of them can import it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from sentinel.adapters.git import glob_regex
from sentinel.errors import ActionRefused

if TYPE_CHECKING:
    from sentinel.playbooks.model import BlastRadius

__all__ = ["review_branch"]

_REVIEW_PREFIX = "sentinel/"
# A commit id as a playbook may give it (a change event's short id up to a SHA-256 id).
# Checked before it reaches git, so it can never be read as an option or a rev expression.
_COMMIT_RE = re.compile(r"[0-9a-fA-F]{4,64}")
# One line of text: what goes into a commit message or a trailer must not forge another.
_LINE_RE = re.compile(r"[^\x00-\x1f\x7f]+")


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


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value
