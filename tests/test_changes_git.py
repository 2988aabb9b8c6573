"""Tests of the git change feed (on real git repositories made in tmp_path), its glob
matcher, and the contract its fake must keep.

What must not live here: tests of what consumes change events (root cause, store).
"""

from __future__ import annotations

import fnmatch
import os
import socket
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from sentinel.adapters.git import (
    FakeChangeFeed,
    GitChangeFeed,
    MemoryCursorStore,
    PathMatch,
    glob_regex,
    match_paths,
)
from sentinel.clock import FakeClock
from sentinel.errors import ChangeFeedError, ConfigError, StoreError
from sentinel.ports import ChangeFeed, ChangePoll
from sentinel.settings import PathMapping, RepoSettings, load_settings
from sentinel.telemetry import ChangeEvent, ChangeKind

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LOOKBACK = timedelta(hours=24)

MAPPINGS = (
    PathMapping(
        glob="prompts/support/**",
        component="prompt:support-agent",
        affects=("agent:support-agent",),
        kind=ChangeKind.PROMPT,
    ),
    PathMapping(
        glob="config/agents/*.yaml",
        component="config:support-agent",
        affects=("agent:support-agent",),
        kind=ChangeKind.CONFIG,
    ),
    PathMapping(
        glob="indexes/faq/**",
        component="index:faq",
        affects=("tool:faq_search",),
        kind=ChangeKind.INDEX,
    ),
)


# --- real git repositories -------------------------------------------------------------

# The helper's own git runs see no user or system config (signing, hooks, default branch).
_GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def _git(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**_GIT_ENV, **(env or {})},
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


class Upstream:
    """A repository people push to: a bare "remote" and a working clone (``bare=True``),
    or just a plain working repository watched by its local path (``bare=False``)."""

    def __init__(self, root: Path, *, bare: bool = True) -> None:
        self.work = root / "work"
        self.work.mkdir(parents=True)
        _git(self.work, "init", "-q", "-b", "main")
        self.remote: Path | None = None
        if bare:
            self.remote = root / "remote.git"
            _git(root, "init", "-q", "--bare", "-b", "main", str(self.remote))
            _git(self.work, "remote", "add", "origin", str(self.remote))

    @property
    def url(self) -> str:
        return str(self.remote if self.remote is not None else self.work)

    def commit(
        self,
        files: Mapping[str, str | None],
        message: str,
        at: datetime,
        author: str = "dana",
        *,
        push: bool = True,
    ) -> str:
        """Write (or delete, for None) files, commit them at ``at``, push (unless told
        not to); the full sha."""
        for rel, text in files.items():
            path = self.work / rel
            if text is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        _git(self.work, "add", "-A")
        stamp = at.isoformat()
        _git(
            self.work,
            "commit",
            "-q",
            "-m",
            message,
            env={
                "GIT_AUTHOR_NAME": author,
                "GIT_AUTHOR_EMAIL": f"{author}@example.com",
                "GIT_COMMITTER_NAME": "ci",
                "GIT_COMMITTER_EMAIL": "ci@example.com",
                "GIT_AUTHOR_DATE": stamp,
                "GIT_COMMITTER_DATE": stamp,
            },
        )
        if push:
            self.push()
        return _git(self.work, "rev-parse", "HEAD")

    def push(self, *, force: bool = False) -> None:
        if self.remote is not None:
            _git(self.work, "push", "-q", *(["--force"] if force else []), "origin", "main")

    def reset_hard(self, rev: str) -> None:
        _git(self.work, "reset", "-q", "--hard", rev)


def _repo(name: str, url: str, branch: str = "main") -> RepoSettings:
    return RepoSettings(name=name, url=url, branch=branch, paths=MAPPINGS)


def _feed(
    repos: list[RepoSettings], workdir: Path, cursors: MemoryCursorStore, clock: FakeClock
) -> GitChangeFeed:
    return GitChangeFeed(repos, workdir, cursors, clock, LOOKBACK)


def _ok(poll: ChangePoll) -> tuple[ChangeEvent, ...]:
    assert poll.failures == ()
    return poll.events


def _ids(events: tuple[ChangeEvent, ...]) -> list[str]:
    return [e.id for e in events]


def _child_git_processes() -> list[str]:
    """Command lines of this process's children that are git (a leak if any remain)."""
    me = os.getpid()
    found: list[str] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # the process ended while we looked
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and "git" in cmdline:
            found.append(cmdline)
    return found


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path / "upstream")


@pytest.fixture
def history(upstream: Upstream) -> dict[str, str]:
    """A root commit outside the lookback window, then three inside it."""
    return {
        "old": upstream.commit(
            {"prompts/support/system.md": "v1"}, "first prompt", NOW - timedelta(hours=30)
        ),
        "prompt": upstream.commit(
            {"prompts/support/system.md": "v2"},
            "tighten refund wording\n\nCustomers were promised refunds we do not give.",
            NOW - timedelta(hours=3),
            author="Dana Scully",
        ),
        "readme": upstream.commit({"README.md": "hello"}, "docs", NOW - timedelta(hours=2)),
        "two": upstream.commit(
            {
                "docs/notes.md": "n",
                "config/agents/support.yaml": "temperature: 0.2",
                "indexes/faq/manifest.json": "{}",
            },
            "raise temperature, rebuild faq",
            NOW - timedelta(hours=1),
            author="sam",
        ),
    }


# --- the git feed ----------------------------------------------------------------------


def test_first_poll_reports_the_lookback_window_oldest_first(
    tmp_path: Path, upstream: Upstream, history: dict[str, str], clock: FakeClock
) -> None:
    feed = _feed([_repo("agent-config", upstream.url)], tmp_path / "wd", MemoryCursorStore(), clock)

    events = _ok(feed.poll())

    assert events == (
        ChangeEvent(
            id=history["prompt"][:7],
            time=NOW - timedelta(hours=3),
            component="prompt:support-agent",
            affects=("agent:support-agent",),
            kind=ChangeKind.PROMPT,
            author="Dana Scully",
            summary="tighten refund wording",
            repo="agent-config",
            path="prompts/support/system.md",
        ),
        # One commit touching two mapped components: one event each, same id.
        ChangeEvent(
            id=history["two"][:7],
            time=NOW - timedelta(hours=1),
            component="config:support-agent",
            affects=("agent:support-agent",),
            kind=ChangeKind.CONFIG,
            author="sam",
            summary="raise temperature, rebuild faq",
            repo="agent-config",
            path="config/agents/support.yaml",
        ),
        ChangeEvent(
            id=history["two"][:7],
            time=NOW - timedelta(hours=1),
            component="index:faq",
            affects=("tool:faq_search",),
            kind=ChangeKind.INDEX,
            author="sam",
            summary="raise temperature, rebuild faq",
            repo="agent-config",
            path="indexes/faq/manifest.json",
        ),
    )
    assert all(e.time.tzinfo == UTC for e in events)


def test_root_commit_inside_the_window_reports_all_its_files(
    tmp_path: Path, upstream: Upstream, clock: FakeClock
) -> None:
    root = upstream.commit(
        {"prompts/support/a.md": "a", "indexes/faq/x.json": "{}"}, "init", NOW - timedelta(1)
    )
    feed = _feed([_repo("cfg", upstream.url)], tmp_path / "wd", MemoryCursorStore(), clock)

    events = _ok(feed.poll())

    assert [(e.id, e.component) for e in events] == [
        (root[:7], "prompt:support-agent"),
        (root[:7], "index:faq"),
    ]


def test_events_the_sink_fails_to_take_are_reported_again(
    tmp_path: Path, upstream: Upstream, history: dict[str, str], clock: FakeClock
) -> None:
    # At-least-once: the cursor moves only after the sink (the store) took the events.
    feed = _feed([_repo("cfg", upstream.url)], tmp_path / "wd", MemoryCursorStore(), clock)
    _ok(feed.poll())
    clock.advance(60)
    sha = upstream.commit({"prompts/support/greeting.md": "hi"}, "add greeting", clock.now())

    def broken(events: Sequence[ChangeEvent]) -> None:
        raise StoreError("database is locked")

    failed = feed.poll(broken)
    assert failed.events == ()
    assert len(failed.failures) == 1
    assert failed.failures[0].repo == "cfg"
    assert "reported again" in str(failed.failures[0])

    taken: list[ChangeEvent] = []
    again = feed.poll(taken.extend)
    assert _ids(_ok(again)) == [sha[:7]]
    assert _ids(tuple(taken)) == [sha[:7]]
    assert _ok(feed.poll(taken.extend)) == ()


def test_later_polls_report_only_new_commits(
    tmp_path: Path, upstream: Upstream, history: dict[str, str], clock: FakeClock
) -> None:
    feed = _feed([_repo("cfg", upstream.url)], tmp_path / "wd", MemoryCursorStore(), clock)
    _ok(feed.poll())

    clock.advance(3600)
    new = upstream.commit({"prompts/support/greeting.md": "hi"}, "add greeting", clock.now())
    # `*` stays in one folder: config/agents/old/ is not config/agents/*.yaml.
    upstream.commit({"config/agents/old/legacy.yaml": "x"}, "archive", clock.now())
    deleted = upstream.commit(
        {"config/agents/support.yaml": None}, "drop support config", clock.now()
    )

    events = _ok(feed.poll())

    assert [(e.id, e.component, e.summary) for e in events] == [
        (new[:7], "prompt:support-agent", "add greeting"),
        (deleted[:7], "config:support-agent", "drop support config"),
    ]
    assert _ok(feed.poll()) == ()


def test_commits_older_than_the_window_are_reported_once_they_are_new(
    tmp_path: Path, upstream: Upstream, history: dict[str, str], clock: FakeClock
) -> None:
    """The lookback only applies without a usable cursor: a commit pushed late with an old
    commit time is still a new change."""
    feed = _feed([_repo("cfg", upstream.url)], tmp_path / "wd", MemoryCursorStore(), clock)
    _ok(feed.poll())

    late = upstream.commit({"indexes/faq/a.json": "1"}, "late push", NOW - timedelta(days=9))

    assert _ids(_ok(feed.poll())) == [late[:7]]


def test_a_restart_with_the_same_cursor_store_reports_nothing_twice(
    tmp_path: Path, upstream: Upstream, history: dict[str, str], clock: FakeClock
) -> None:
    cursors = MemoryCursorStore()
    repos = [_repo("cfg", upstream.url)]
    first = _ok(_feed(repos, tmp_path / "wd", cursors, clock).poll())
    assert len(first) == 3

    # Same workdir, and a fresh workdir (the clone was lost): the cursor alone is enough.
    assert _ok(_feed(repos, tmp_path / "wd", cursors, clock).poll()) == ()
    fresh = _feed(repos, tmp_path / "other-wd", cursors, clock)
    assert _ok(fresh.poll()) == ()

    clock.advance(60)
    new = upstream.commit({"prompts/support/x.md": "x"}, "new prompt", clock.now())
    assert _ids(_ok(fresh.poll())) == [new[:7]]
    assert cursors.get_cursor(GitChangeFeed.cursor_key("cfg")) == new


def test_force_push_falls_back_to_the_window_without_repeating_kept_history(
    tmp_path: Path, upstream: Upstream, history: dict[str, str], clock: FakeClock
) -> None:
    feed = _feed([_repo("cfg", upstream.url)], tmp_path / "wd", MemoryCursorStore(), clock)
    _ok(feed.poll())
    clock.advance(60)
    dropped = upstream.commit({"prompts/support/bad.md": "x"}, "bad prompt", clock.now())
    assert _ids(_ok(feed.poll())) == [dropped[:7]]

    # Rewrite: drop the last commit, land another one instead, force-push.
    upstream.reset_hard(history["two"])
    clock.advance(60)
    replacement = upstream.commit(
        {"prompts/support/good.md": "y"}, "good prompt", clock.now(), push=False
    )
    upstream.push(force=True)

    with capture_logs() as logs:
        events = _ok(feed.poll())

    # "prompt" and "two" are still in the window and on the branch, but were reported.
    assert _ids(events) == [replacement[:7]]
    assert len(set(_ids(events))) == len(events)
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == [
        "changes.git.cursor_not_ancestor"
    ]
    assert _ok(feed.poll()) == ()


def test_an_unknown_cursor_falls_back_to_the_window(
    tmp_path: Path, upstream: Upstream, history: dict[str, str], clock: FakeClock
) -> None:
    cursors = MemoryCursorStore({GitChangeFeed.cursor_key("cfg"): "0" * 40})
    feed = _feed([_repo("cfg", upstream.url)], tmp_path / "wd", cursors, clock)

    with capture_logs() as logs:
        events = _ok(feed.poll())

    assert _ids(events) == [history["prompt"][:7], history["two"][:7], history["two"][:7]]
    assert any(entry["event"] == "changes.git.cursor_not_ancestor" for entry in logs)


def test_a_plain_local_repository_is_watched_by_its_path(tmp_path: Path, clock: FakeClock) -> None:
    local = Upstream(tmp_path / "local", bare=False)
    sha = local.commit({"config/agents/a.yaml": "a"}, "local change", NOW - timedelta(hours=1))
    feed = _feed([_repo("local", local.url)], tmp_path / "wd", MemoryCursorStore(), clock)

    assert [(e.id, e.component, e.repo) for e in _ok(feed.poll())] == [
        (sha[:7], "config:support-agent", "local")
    ]


def _refused_url() -> str:
    """An http URL on loopback where nothing listens (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://deploy:s3cret@127.0.0.1:{port}/agent-config.git"


def test_failing_repos_are_reported_and_do_not_stop_the_others(
    tmp_path: Path, upstream: Upstream, history: dict[str, str], clock: FakeClock
) -> None:
    offline_url = _refused_url()
    repos = [
        _repo("offline", offline_url),
        _repo("missing-path", str(tmp_path / "nowhere")),
        _repo("cfg", upstream.url),
        _repo("no-branch", upstream.url, branch="release"),
    ]
    feed = _feed(repos, tmp_path / "wd", MemoryCursorStore(), clock)

    poll = feed.poll()

    assert _ids(poll.events) == [history["prompt"][:7], history["two"][:7], history["two"][:7]]
    assert all(isinstance(f, ChangeFeedError) for f in poll.failures)
    messages = [str(f) for f in poll.failures]
    assert len(messages) == 3
    assert "'offline'" in messages[0]
    assert offline_url.replace("s3cret", "********") in messages[0]
    assert not any("s3cret" in m for m in messages)
    assert "'missing-path'" in messages[1]
    assert str(tmp_path / "nowhere") in messages[1]
    assert "'no-branch'" in messages[2]
    assert "'release'" in messages[2]

    # The healthy repo keeps going while the others still fail.
    clock.advance(60)
    new = upstream.commit({"indexes/faq/b.json": "2"}, "faq", clock.now())
    again = feed.poll()
    assert _ids(again.events) == [new[:7]]
    assert len(again.failures) == 3


def test_polls_leave_no_git_process_behind(
    tmp_path: Path, upstream: Upstream, history: dict[str, str], clock: FakeClock
) -> None:
    feed = _feed([_repo("cfg", upstream.url)], tmp_path / "wd", MemoryCursorStore(), clock)
    _ok(feed.poll())
    clock.advance(60)
    upstream.commit({"prompts/support/z.md": "z"}, "z", clock.now())
    _ok(feed.poll())

    assert _child_git_processes() == []


def test_repo_names_must_be_one_plain_path_segment(tmp_path: Path) -> None:
    # The name becomes a folder under the workdir: rejected when the config is loaded.
    cfg = tmp_path / "config.toml"
    cfg.write_text('[[changes.repos]]\nname = "../escape"\nurl = "/srv/git/x"\n')
    with pytest.raises(ConfigError, match=r"changes\.repos\.0\.name.*'\.\./escape'"):
        load_settings(cfg, env={})


# --- the contract: the same body against the fake and the real feed --------------------


class World(Protocol):
    """Where changes land, and how a feed over them is started (or restarted)."""

    def land(self, path: str, summary: str, at: datetime) -> None: ...

    def feed(self, cursors: MemoryCursorStore) -> ChangeFeed: ...


class GitWorld:
    def __init__(self, root: Path, clock: FakeClock) -> None:
        self._upstream = Upstream(root / "upstream")
        self._workdir = root / "wd"
        self._clock = clock
        self._n = 0

    def land(self, path: str, summary: str, at: datetime) -> None:
        self._n += 1
        self._upstream.commit({path: str(self._n)}, summary, at)

    def feed(self, cursors: MemoryCursorStore) -> ChangeFeed:
        return _feed([_repo("cfg", self._upstream.url)], self._workdir, cursors, self._clock)


class FakeWorld:
    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._history: list[ChangeEvent] = []
        self._feeds: list[FakeChangeFeed] = []

    def land(self, path: str, summary: str, at: datetime) -> None:
        commit_id = f"{len(self._history) + 1:07x}"
        events = [
            ChangeEvent(
                id=commit_id,
                time=at,
                component=m.component,
                affects=m.affects,
                kind=m.kind,
                author="dana",
                summary=summary,
                repo="cfg",
                path=m.path,
            )
            for m in match_paths([path], MAPPINGS)
        ]
        self._history.extend(events)
        for feed in self._feeds:
            feed.append(*events)

    def feed(self, cursors: MemoryCursorStore) -> ChangeFeed:
        feed = FakeChangeFeed(
            self._history,
            cursors=cursors,
            clock=self._clock,
            initial_lookback=LOOKBACK,
            key=GitChangeFeed.cursor_key("cfg"),
        )
        self._feeds.append(feed)
        return feed


@pytest.fixture(params=["fake", "git"])
def world(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[World]:
    if request.param == "git":
        yield GitWorld(tmp_path, clock)
    else:
        yield FakeWorld(clock)


def _seen(poll: ChangePoll) -> list[tuple[str, str]]:
    return [(e.component, e.summary) for e in _ok(poll)]


def test_contract_change_feed(world: World, clock: FakeClock) -> None:
    world.land("prompts/support/a.md", "too old", NOW - timedelta(hours=48))
    world.land("prompts/support/a.md", "tighten wording", NOW - timedelta(hours=2))
    world.land("README.md", "unmapped", NOW - timedelta(hours=1))
    cursors = MemoryCursorStore()
    feed = world.feed(cursors)

    assert _seen(feed.poll()) == [("prompt:support-agent", "tighten wording")]
    assert _seen(feed.poll()) == []

    clock.advance(600)
    world.land("config/agents/support.yaml", "raise temperature", clock.now())
    clock.advance(1)
    world.land("indexes/faq/m.json", "rebuild faq", clock.now())
    assert _seen(feed.poll()) == [
        ("config:support-agent", "raise temperature"),
        ("index:faq", "rebuild faq"),
    ]

    restarted = world.feed(cursors)
    assert restarted.poll() == ChangePoll()
    clock.advance(1)
    world.land("prompts/support/b.md", "add greeting", clock.now())
    assert _seen(restarted.poll()) == [("prompt:support-agent", "add greeting")]


def test_fake_reports_the_failures_it_is_given(clock: FakeClock) -> None:
    feed = FakeChangeFeed()
    error = ChangeFeedError("repo 'x' (/srv/x): unreachable")
    feed.set_failures(error)
    assert feed.poll() == ChangePoll(failures=(error,))
    feed.set_failures()
    assert feed.poll() == ChangePoll()


# --- the glob matcher ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("prompts/support/**", "prompts/support/system.md", True),
        ("prompts/support/**", "prompts/support/deep/er/x.md", True),
        ("prompts/support/**", "prompts/support", False),
        ("prompts/support/**", "prompts/supportive/x.md", False),
        ("prompts/support/**", "x/prompts/support/a.md", False),
        ("config/*.yaml", "config/a.yaml", True),
        ("config/*.yaml", "config/sub/a.yaml", False),
        ("config/*", "config/sub/a.yaml", False),
        ("**/models.toml", "models.toml", True),
        ("**/models.toml", "a/b/models.toml", True),
        ("a/**/b.md", "a/b.md", True),
        ("a/**/b.md", "a/x/y/b.md", True),
        ("a/**/b.md", "ab.md", False),
        ("*.md", "docs/deep/readme.md", True),  # no slash: any folder, as in .gitignore
        ("/README.md", "README.md", True),
        ("/README.md", "docs/README.md", False),
        ("prompts/", "prompts/a/b.md", True),
        ("prompt?.md", "prompts.md", True),
        ("prompt?.md", "prompt/.md", False),
        ("v[0-9].yaml", "v7.yaml", True),
        ("v[!0-9].yaml", "v7.yaml", False),
        ("v[!0-9].yaml", "vx.yaml", True),
        ("a[+-0]b", "a/b", False),  # a set never matches the separator
        ("a\\*b", "a*b", True),
        ("a\\*b", "axb", False),
        ("a[b", "a[b", True),  # an unclosed bracket is literal
        ("a**b", "axxb", True),  # ** inside a segment is a plain *
        ("a**b", "ax/xb", False),
    ],
)
def test_glob_regex(glob: str, path: str, matches: bool) -> None:
    assert (glob_regex(glob).fullmatch(path) is not None) is matches


def test_match_paths_one_match_per_component_in_mapping_order() -> None:
    mappings = [
        PathMapping(glob="indexes/faq/**", component="index:faq", kind=ChangeKind.INDEX),
        PathMapping(glob="prompts/**", component="prompt:support-agent", affects=("agent:a",)),
        PathMapping(
            glob="shared/*.md",
            component="prompt:support-agent",
            affects=("agent:b", "agent:a"),
            kind=ChangeKind.OTHER,
        ),
    ]
    paths = ["README.md", "shared/tone.md", "prompts/x.md", "indexes/faq/a.json"]

    assert match_paths(paths, mappings) == (
        PathMatch(
            component="index:faq", affects=(), kind=ChangeKind.INDEX, path="indexes/faq/a.json"
        ),
        PathMatch(
            component="prompt:support-agent",
            affects=("agent:a", "agent:b"),
            kind=ChangeKind.CONFIG,  # the first matching mapping's kind (the default)
            path="shared/tone.md",  # the first touched path of the component
        ),
    )
    assert match_paths(["README.md"], mappings) == ()
    assert match_paths([], mappings) == ()


_SEGMENT = st.text(alphabet="abcxyz019._-", min_size=1, max_size=8)
_SPECIAL_SEGMENT = st.text(alphabet="ab*?[]!\\.-", min_size=1, max_size=8)


@given(st.text(max_size=30), st.text(max_size=30))
def test_any_glob_compiles_without_error_or_warning(glob: str, path: str) -> None:
    glob_regex(glob).fullmatch(path)


@given(st.text(alphabet="ab.*?", max_size=8), st.text(alphabet="ab.", min_size=1, max_size=8))
def test_a_one_segment_glob_agrees_with_fnmatch_on_file_names(pattern: str, name: str) -> None:
    expected = fnmatch.fnmatchcase(name, pattern)
    assert (glob_regex(pattern).fullmatch(name) is not None) is expected


@given(_SEGMENT, _SEGMENT, _SEGMENT)
def test_star_stays_within_one_segment(a: str, b: str, c: str) -> None:
    assert glob_regex(f"{a}/*").fullmatch(f"{a}/{b}")
    assert not glob_regex(f"{a}/*").fullmatch(f"{a}/{b}/{c}")


@given(_SEGMENT, st.lists(_SEGMENT, max_size=4), _SEGMENT)
def test_double_star_spans_any_number_of_segments(a: str, dirs: list[str], c: str) -> None:
    inner = "/".join([*dirs, c])
    assert glob_regex(f"{a}/**").fullmatch(f"{a}/{inner}")
    assert glob_regex(f"**/{c}").fullmatch(inner)
    assert glob_regex(f"{a}/**/{c}").fullmatch(f"{a}/{inner}")
    assert not glob_regex(f"{a}/**").fullmatch(a)


@given(st.lists(_SPECIAL_SEGMENT, min_size=1, max_size=4))
def test_an_escaped_path_matches_exactly_itself(segments: list[str]) -> None:
    path = "/".join(segments)
    escaped = "/" + "/".join(
        "".join("\\" + ch if ch in "*?[\\" else ch for ch in seg) for seg in segments
    )
    assert glob_regex(escaped).fullmatch(path)
    assert not glob_regex(escaped).fullmatch(path + "x")


@given(st.permutations(["prompts/a.md", "README.md", "indexes/faq/x", "config/agents/b.yaml"]))
def test_which_components_match_does_not_depend_on_path_order(paths: list[str]) -> None:
    matched = match_paths(paths, MAPPINGS)
    assert [m.component for m in matched] == ["config:support-agent", "index:faq"]
    assert all(m.path in paths for m in matched)
