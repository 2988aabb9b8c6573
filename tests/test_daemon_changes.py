"""End-to-end tests of the daemon's change feed: a real daemon (its own thread, event loop
and socket) polling real git repositories made in tmp_path, storing the change events of
mapped paths, and reporting what it does on /metrics while staying ready when a repo
cannot be reached.

What must not live here: the git feed's own cursor and glob semantics
(tests/test_changes_git.py), or the daemon's ingest path (tests/test_daemon.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sentinel.telemetry import ChangeEvent, ChangeKind
from tests.harness import RunningDaemon, make_settings, running_daemon
from tests.test_changes_git import Upstream

T = TypeVar("T")

WAIT_SECONDS = 60.0  # bound of every wait loop; a poll runs every 0.2 s
PROMPT_MAPPING = {
    "glob": "prompts/support/**",
    "component": "prompt:support-agent",
    "affects": ["agent:support-agent"],
    "kind": "prompt",
}


class Repo(Upstream):
    """A plain working repository, watched by its local path, committing at the current
    time (the daemon's lookback window is measured from now)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, bare=False)

    @property
    def path(self) -> Path:
        return self.work

    def commit(  # type: ignore[override]
        self, files: Mapping[str, str | None], message: str, author: str = "dana"
    ) -> str:
        return super().commit(files, message, datetime.now(UTC), author, push=False)


def _repo_settings(name: str, url: str) -> dict[str, object]:
    # As a config file holds it: make_settings validates it the way config.toml is.
    return {"name": name, "url": url, "branch": "main", "paths": [PROMPT_MAPPING]}


def _eventually(probe: Callable[[], T | None], what: str) -> T:
    """``probe()``'s first truthy value, polled until ``WAIT_SECONDS`` have passed."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.05)


def _changes(d: RunningDaemon) -> list[ChangeEvent]:
    now = datetime.now(UTC)
    return d.store.changes(now - timedelta(days=1), now + timedelta(days=1))


def _change_with_id(d: RunningDaemon, sha: str) -> ChangeEvent | None:
    return next((c for c in _changes(d) if c.id == sha[:7]), None)


def _metrics(d: RunningDaemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on /metrics, keyed by (name, sorted labels)."""
    response = httpx.get(d.url + "/metrics", timeout=10)
    assert response.status_code == 200
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _metric(d: RunningDaemon, name: str, **labels: str) -> float | None:
    return _metrics(d).get((name, tuple(sorted(labels.items()))))


def test_commits_to_mapped_paths_become_change_events(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "cfg-repo")
    first = repo.commit(
        {"prompts/support/system.md": "Be kind.\n"}, "tighten refund wording", author="dana"
    )
    unmapped_before = repo.commit({"README.md": "docs\n"}, "docs only")
    settings = make_settings(
        tmp_path,
        changes={"poll_seconds": 0.2, "repos": (_repo_settings("cfg", str(repo.path)),)},
        ingest={"writer_process": False},
    )
    with running_daemon(settings) as d:
        event = _eventually(lambda: _change_with_id(d, first), "the first commit's change")
        assert event.component == "prompt:support-agent"
        assert event.affects == ("agent:support-agent",)
        assert event.kind is ChangeKind.PROMPT
        assert event.repo == "cfg"
        assert event.path == "prompts/support/system.md"
        assert event.author == "dana"
        assert event.summary == "tighten refund wording"
        assert abs(event.time - datetime.now(UTC)) < timedelta(hours=1)

        # A new commit while the daemon runs, after another unmapped one.
        unmapped_after = repo.commit({"src/app.py": "print('hi')\n"}, "code only")
        second = repo.commit(
            {"prompts/support/tools/refund.md": "Refunds need a reason.\n"}, "refund tool prompt"
        )
        later = _eventually(lambda: _change_with_id(d, second), "the new commit's change")
        assert later.path == "prompts/support/tools/refund.md"

        # The poll that found the second mapped commit passed both unmapped ones.
        ids = sorted(c.id for c in _changes(d))
        assert ids == sorted([first[:7], second[:7]])
        assert unmapped_before[:7] not in ids
        assert unmapped_after[:7] not in ids

        received = _eventually(
            lambda: _metric(d, "sentinel_changes_received_total", source="git") == 2.0 or None,
            "sentinel_changes_received_total to count both changes",
        )
        assert received
        polls = _metric(d, "sentinel_job_duration_seconds_count", job="poll_changes")
        assert polls is not None and polls >= 2
        assert _metric(d, "sentinel_job_duration_seconds_sum", job="poll_changes") is not None
        # Nothing failed: no failure series at all.
        assert not any(
            name == "sentinel_change_feed_failures_total" for name, _labels in _metrics(d)
        )
        assert (_metric(d, "sentinel_job_failures_total", job="poll_changes") or 0.0) == 0.0


def test_an_unreachable_repo_is_counted_while_the_good_one_delivers(tmp_path: Path) -> None:
    good = Repo(tmp_path / "good-repo")
    sha = good.commit({"prompts/support/system.md": "v1\n"}, "first prompt")
    missing = tmp_path / "no-such-repo"
    settings = make_settings(
        tmp_path,
        changes={
            "poll_seconds": 0.2,
            # The bad repo first: its failure must not keep the good one from being polled.
            "repos": (_repo_settings("bad", str(missing)), _repo_settings("cfg", str(good.path))),
        },
        ingest={"writer_process": False},
    )
    with running_daemon(settings) as d:
        _eventually(lambda: _change_with_id(d, sha), "the good repo's change")
        failures = _eventually(
            lambda: _metric(d, "sentinel_change_feed_failures_total", repo="bad"),
            "the bad repo's failures to be counted",
        )
        assert failures >= 1
        assert _metric(d, "sentinel_change_feed_failures_total", repo="cfg") is None

        # Still failing on every poll, and the good repo still delivers.
        sha2 = good.commit({"prompts/support/system.md": "v2\n"}, "second prompt")
        _eventually(lambda: _change_with_id(d, sha2), "the good repo's next change")
        more = _metric(d, "sentinel_change_feed_failures_total", repo="bad")
        assert more is not None and more > failures

        ready = httpx.get(d.url + "/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        assert httpx.get(d.url + "/healthz", timeout=10).status_code == 200
        assert {c.repo for c in _changes(d)} == {"cfg"}
        assert not missing.exists()  # the feed never creates the remote it reads
