"""Real git repositories for tests: a git runner that ignores the user's and the
system's git config, and a helper that commits files."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

# These git runs see no user or system config (signing, hooks, default branch).
GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "dana",
    "GIT_AUTHOR_EMAIL": "dana@example.com",
    "GIT_COMMITTER_NAME": "dana",
    "GIT_COMMITTER_EMAIL": "dana@example.com",
}


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd``; its stdout, stripped. Fails the test on a non-zero exit."""
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def commit_files(work: Path, files: Mapping[str, str], message: str) -> str:
    """Write ``files`` (relative path -> text) in the work tree ``work``, commit them all,
    and return the commit id."""
    for rel, text in files.items():
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message)
    return git(work, "rev-parse", "HEAD")
