"""Change events from watched git repositories, and the fakes that stand in for them.

What lives here:

- ``GitChangeFeed``: the real ``ports.ChangeFeed``. It keeps a bare copy of each
  configured repository under ``workdir/<name>``, fetches the configured branch on every
  poll and turns each new commit into one ``ChangeEvent`` per component whose path globs
  the commit touched. Where it stopped is kept in a ``ports.CursorStore``.
- ``match_paths`` and ``glob_regex``: the pure path-glob -> component mapping.
- ``FakeChangeFeed`` and ``MemoryCursorStore``: the fakes, with the same cursor semantics,
  checked against the real feed by the contract test in ``tests/test_changes_git.py``.

What must not live here: what a change means for an incident (that is the root-cause
stage's business), storage of events, scheduling of polls, or any shell command: git is
called through gitpython with one argument per token.

Cursor semantics, shared by both feeds: the cursor of a source is the last commit (event
id) it reported. A poll reports what came after it, oldest first, then moves it. With no
cursor (first sight), or a cursor the branch no longer contains (force push), it reports
the commits of the last ``initial_lookback`` instead. Given a ``sink`` (the daemon passes
the store), ``poll`` hands each source's new events to it before moving that source's
cursor, so delivery is at least once: a crash or a failing sink means the events are
reported again, and the store skips the ones it already has. Without a sink the cursor
moves when ``poll`` returns.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import git
import structlog
from git.exc import ODBError

from sentinel.errors import ChangeFeedError, ConfigError, SentinelError
from sentinel.ports import ChangePoll, ChangeSink, CursorStore
from sentinel.settings import PathMapping, RepoSettings, mask_url
from sentinel.telemetry import ChangeEvent, ChangeKind

if TYPE_CHECKING:
    from sentinel.clock import Clock
    from sentinel.ports import ChangeFeed

__all__ = [
    "FakeChangeFeed",
    "GitChangeFeed",
    "MemoryCursorStore",
    "PathMatch",
    "glob_regex",
    "match_paths",
]

log = structlog.get_logger(__name__)

SHORT_ID_LENGTH = 7

# The name becomes a folder under workdir: one plain path segment, so a name such as
# "../x" can never point the clone somewhere else.
_REPO_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# A full object id (SHA-1 or SHA-256). A cursor is checked against it before it is given
# to git, so a corrupted cursor can never be read as an option or a revision expression.
_FULL_SHA_RE = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_REMOTE = "origin"


# --- path globs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PathMatch:
    """One component a set of touched paths changes: the mapping's ``kind`` and
    ``affects`` (the union over its mappings that matched) and the first path that
    matched."""

    component: str
    affects: tuple[str, ...]
    kind: ChangeKind
    path: str


@lru_cache(maxsize=1024)
def glob_regex(glob: str) -> re.Pattern[str]:
    """The regex of a gitignore-style path glob, matched against whole repo-relative paths
    (``/``-separated, no leading slash).

    - ``*`` matches within one path segment, ``?`` one character of a segment, ``[a-z]`` /
      ``[!a-z]`` one character of a set; ``\\`` makes the next character literal.
    - ``**`` as a whole segment spans any number of segments: ``a/**`` is everything
      under ``a``, ``**/b`` is ``b`` in any folder, ``a/**/b`` is ``b`` anywhere under
      ``a`` (``a/b`` included). Elsewhere ``**`` is a plain ``*``.
    - A trailing ``/`` means the folder's contents: ``prompts/`` is ``prompts/**``.
    - As in ``.gitignore``, a glob without a ``/`` (other than a trailing one) matches in
      any folder (``*.md``), and a leading ``/`` only anchors (``/README.md``).

    ``fnmatch`` is not enough: its ``*`` crosses ``/`` and it has no ``**``.
    """
    # Anchoring is decided on the glob as written: only a trailing "/" does not anchor.
    anchored = "/" in glob.removesuffix("/")
    pattern = glob.removeprefix("/")
    if pattern.endswith("/"):
        pattern += "**"
    if not anchored:
        pattern = "**/" + pattern
    segments = pattern.split("/")
    parts: list[str] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            # Inside: zero or more whole folders, each with its slash. Last: at least one
            # more segment (``a/**`` does not match ``a`` itself, as in git).
            parts.append("[^/]+(?:/[^/]+)*" if last else "(?:[^/]+/)*")
        else:
            parts.append(_segment_regex(segment) + ("" if last else "/"))
    return re.compile("".join(parts))


def _segment_regex(segment: str) -> str:
    out: list[str] = []
    i, n = 0, len(segment)
    while i < n:
        c = segment[i]
        if c == "*":
            while i < n and segment[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(segment[i]))
        elif c == "[":
            parsed = _bracket_regex(segment, i)
            if parsed is None:
                out.append(re.escape(c))
            else:
                regex, i = parsed
                out.append(regex)
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _bracket_regex(segment: str, start: int) -> tuple[str, int] | None:
    """The regex of the ``[...]`` set at ``start`` and the index after it, or None when the
    bracket is not closed (then it is a literal ``[``)."""
    i = start + 1
    negate = i < len(segment) and segment[i] in "!^"
    if negate:
        i += 1
    chars: list[str] = []
    first = True
    while i < len(segment):
        c = segment[i]
        if c == "]" and not first:
            break
        if c == "\\" and i + 1 < len(segment):
            i += 1
            c = segment[i]
        chars.append(c)
        first = False
        i += 1
    else:
        return None
    items: list[str] = []
    j = 0
    while j < len(chars):
        if j + 2 < len(chars) and chars[j + 1] == "-":
            lo, hi = chars[j], chars[j + 2]
            if lo <= hi:  # an inverted range matches nothing, as in fnmatch
                items.append(f"{re.escape(lo)}-{re.escape(hi)}")
            j += 3
        else:
            # Every single character is escaped: an unescaped "[" or "--" inside a set
            # makes re raise a FutureWarning, and warnings are errors in our tests.
            items.append(re.escape(chars[j]))
            j += 1
    body = "".join(items)
    # The look-ahead keeps a set such as [+-0] (which holds "/") inside one segment.
    if negate:
        return f"(?!/)[^{body}]" if body else "[^/]", i + 1
    return (f"(?!/)[{body}]" if body else "(?!)"), i + 1


def match_paths(paths: Sequence[str], mappings: Sequence[PathMapping]) -> tuple[PathMatch, ...]:
    """The components that a commit touching ``paths`` changes, in the order of their
    first mapping; a component listed by several mappings appears once. ``path`` of each
    match is the first of ``paths`` that one of its globs matches."""
    found: dict[str, PathMatch] = {}
    for mapping in mappings:
        regex = glob_regex(mapping.glob)
        hit = next((p for p in paths if regex.fullmatch(p)), None)
        if hit is None:
            continue
        prior = found.get(mapping.component)
        if prior is None:
            found[mapping.component] = PathMatch(
                component=mapping.component,
                affects=tuple(dict.fromkeys(mapping.affects)),
                kind=mapping.kind,
                path=hit,
            )
            continue
        first_path = hit if paths.index(hit) < paths.index(prior.path) else prior.path
        found[mapping.component] = PathMatch(
            component=prior.component,
            affects=tuple(dict.fromkeys((*prior.affects, *mapping.affects))),
            kind=prior.kind,
            path=first_path,
        )
    return tuple(found.values())


def _events(
    *,
    repo: str,
    sha: str,
    time: datetime,
    author: str,
    summary: str,
    matches: Iterable[PathMatch],
) -> list[ChangeEvent]:
    return [
        ChangeEvent(
            id=sha[:SHORT_ID_LENGTH],
            time=time.astimezone(UTC),
            component=m.component,
            affects=m.affects,
            kind=m.kind,
            author=author,
            summary=summary,
            repo=repo,
            path=m.path,
        )
        for m in matches
    ]


# --- the real feed ---------------------------------------------------------------------


class GitChangeFeed:
    """``ports.ChangeFeed`` over git repositories (local paths or remote URLs).

    Each repository is fetched into a bare repository ``workdir/<name>`` (only the
    configured branch, into ``refs/remotes/origin/<branch>``). All git work runs under one
    lock, one repository at a time, and every ``git.Repo`` is closed after use: gitpython
    otherwise keeps ``git cat-file`` children alive.
    """

    def __init__(
        self,
        repos: Sequence[RepoSettings],
        workdir: Path,
        cursors: CursorStore,
        clock: Clock,
        initial_lookback: timedelta,
        *,
        fetch_timeout_seconds: float = 300.0,
    ) -> None:
        for spec in repos:
            if not _REPO_NAME_RE.fullmatch(spec.name):
                raise ConfigError(
                    f"changes.repos: repo name {spec.name!r} must be letters, digits, '.', "
                    "'_' or '-' (it names the clone's folder)"
                )
        names = [spec.name for spec in repos]
        if len(set(names)) != len(names):
            raise ConfigError(f"changes.repos: repo names must be unique, got {names!r}")
        if initial_lookback < timedelta(0):
            raise ValueError(f"initial_lookback must not be negative, got {initial_lookback!r}")
        self._repos = tuple(repos)
        self._workdir = workdir
        self._cursors = cursors
        self._clock = clock
        self._lookback = initial_lookback
        # A hung remote must not block the one git worker forever.
        self._fetch_timeout = fetch_timeout_seconds
        self._lock = threading.Lock()

    @staticmethod
    def cursor_key(name: str) -> str:
        """The ``CursorStore`` key of the repository called ``name``."""
        return f"git:{name}"

    def poll(self, sink: ChangeSink | None = None) -> ChangePoll:
        """Fetch every repository and return its new change events; a repository that
        fails is reported in ``failures`` and the others are still polled.

        ``sink`` receives each repository's new events before its cursor moves, so a
        crash or a failing sink means they are reported again, never lost."""
        events: list[ChangeEvent] = []
        failures: list[ChangeFeedError] = []
        with self._lock:
            for spec in self._repos:
                try:
                    events.extend(self._poll_repo(spec, sink))
                except ChangeFeedError as e:
                    log.warning("changes.git.repo_failed", repo=spec.name, error=str(e))
                    failures.append(e)
        return ChangePoll(events=tuple(events), failures=tuple(failures))

    def _poll_repo(self, spec: RepoSettings, sink: ChangeSink | None) -> list[ChangeEvent]:
        url = mask_url(spec.url)
        try:
            with self._open(spec) as repo:
                return self._new_events(repo, spec, sink)
        except (git.GitError, ODBError, OSError) as e:
            # git's stderr may quote the URL, password included: mask it as well.
            detail = mask_url(str(e).strip())
            raise ChangeFeedError(
                f"repo {spec.name!r} ({url}) branch {spec.branch!r}: {type(e).__name__}: {detail}",
                repo=spec.name,
                url=url,
            ) from e
        except SentinelError as e:
            raise ChangeFeedError(
                f"repo {spec.name!r} ({url}): storing its change events failed, they will be "
                f"reported again: {e}",
                repo=spec.name,
                url=url,
            ) from e

    def _open(self, spec: RepoSettings) -> git.Repo:
        """The bare copy of ``spec``, created on first use, with ``origin`` set to its URL."""
        path = self._workdir / spec.name
        if path.exists() and any(path.iterdir()):
            repo = git.Repo(path)
        else:
            path.mkdir(parents=True, exist_ok=True)
            repo = git.Repo.init(path, bare=True)
        try:
            origin = next((r for r in repo.remotes if r.name == _REMOTE), None)
            if origin is None:
                repo.create_remote(_REMOTE, spec.url)
            elif origin.url != spec.url:
                origin.set_url(spec.url)
        except BaseException:
            repo.close()
            raise
        return repo

    def _new_events(
        self, repo: git.Repo, spec: RepoSettings, sink: ChangeSink | None
    ) -> list[ChangeEvent]:
        tracking = f"refs/remotes/{_REMOTE}/{spec.branch}"
        # git's own rules for branch names; an invalid one fails here with a clear error
        # instead of turning into a surprising refspec.
        repo.git.check_ref_format(f"refs/heads/{spec.branch}")
        # A credential prompt would hang the worker; fail instead.
        repo.git.update_environment(GIT_TERMINAL_PROMPT="0")
        # "+": a force-pushed branch must still update the tracking ref.
        repo.git.fetch(
            "--no-tags",
            "--quiet",
            _REMOTE,
            f"+refs/heads/{spec.branch}:{tracking}",
            kill_after_timeout=self._fetch_timeout,
        )
        head = str(repo.git.rev_parse("--verify", f"{tracking}^{{commit}}")).strip()
        key = self.cursor_key(spec.name)
        cursor = self._cursors.get_cursor(key)
        if cursor == head:
            return []

        # The old cursor, when it is still a commit here (after a force push it usually
        # is: fetch keeps unreachable objects until gc prunes them, weeks later).
        base = cursor if cursor is not None and _has_commit(repo, cursor) else None
        if base is not None and repo.is_ancestor(repo.commit(base), repo.commit(head)):
            shas = [sha for sha, _ in _rev_list(repo, head, exclude=base)]
        else:
            cutoff = self._clock.now() - self._lookback
            if cursor is None:
                log.info("changes.git.first_sight", repo=spec.name, since=cutoff.isoformat())
            else:
                log.warning(
                    "changes.git.cursor_not_ancestor",
                    repo=spec.name,
                    cursor=cursor,
                    head=head,
                    fallback_since=cutoff.isoformat(),
                )
            # Commits the old cursor still reaches (the history a force push kept) were
            # reported before; excluding them keeps a force push from repeating them.
            shas = [
                sha for sha, committed in _rev_list(repo, head, exclude=base) if committed >= cutoff
            ]

        events: list[ChangeEvent] = []
        for sha in shas:  # rev-list lists each commit once, so no id repeats in a poll
            events.extend(self._commit_events(repo, spec, sha))
        if sink is not None and events:
            sink(events)
        self._cursors.set_cursor(key, head)
        return events

    def _commit_events(self, repo: git.Repo, spec: RepoSettings, sha: str) -> list[ChangeEvent]:
        commit = repo.commit(sha)
        diff_args = ["-r", "-z", "--name-only", "--no-renames", "--no-commit-id"]
        if commit.parents:
            # First parent: a merge is the change it brought to the branch.
            out = repo.git.diff_tree(*diff_args, commit.parents[0].hexsha, sha)
        else:
            out = repo.git.diff_tree(*diff_args, "--root", sha)
        # -z: names are NUL-separated and never quoted, whatever characters they hold.
        paths = [p for p in str(out).split("\0") if p]
        matches = match_paths(paths, spec.paths)
        if not matches:
            log.debug("changes.git.unmapped_commit", repo=spec.name, commit=sha, paths=len(paths))
            return []
        message = commit.message if isinstance(commit.message, str) else commit.message.decode()
        return _events(
            repo=spec.name,
            sha=sha,
            time=commit.committed_datetime,
            author=commit.author.name or "",
            summary=message.split("\n", 1)[0].strip(),
            matches=matches,
        )


def _has_commit(repo: git.Repo, sha: str) -> bool:
    if _FULL_SHA_RE.fullmatch(sha) is None:
        return False
    try:
        repo.git.cat_file("-e", f"{sha}^{{commit}}")
    except git.GitCommandError:
        return False
    return True


def _rev_list(repo: git.Repo, head: str, *, exclude: str | None) -> list[tuple[str, datetime]]:
    """Commits reachable from ``head`` and not from ``exclude``, oldest first (parents
    before children), with their commit times."""
    args = ["--date-order", "--reverse", "--format=%ct", head]
    if exclude is not None:
        args.append(f"^{exclude}")
    # rev-list --format prints "commit <sha>" then the formatted line for each commit.
    lines = str(repo.git.rev_list(*args, "--")).splitlines()
    out: list[tuple[str, datetime]] = []
    for header, stamp in zip(lines[0::2], lines[1::2], strict=True):
        sha = header.removeprefix("commit ").strip()
        out.append((sha, datetime.fromtimestamp(int(stamp), tz=UTC)))
    return out


# --- the fakes -------------------------------------------------------------------------


class MemoryCursorStore:
    """A dict-backed ``ports.CursorStore``; share one instance to simulate a restart."""

    def __init__(self, initial: dict[str, str] | None = None) -> None:
        self._values: dict[str, str] = dict(initial or {})

    def get_cursor(self, key: str) -> str | None:
        return self._values.get(key)

    def set_cursor(self, key: str, value: str) -> None:
        self._values[key] = value


class FakeChangeFeed:
    """A ``ports.ChangeFeed`` over an in-memory, append-only history of events.

    Same cursor semantics as ``GitChangeFeed``: the cursor (under ``key`` in ``cursors``)
    is the id of the last event reported; a poll reports the events appended after it.
    With no cursor, or one the history does not hold, it reports the events of the last
    ``initial_lookback`` by the ``clock`` (all of them when either is None). Events of one
    commit share an id and are appended together.
    """

    def __init__(
        self,
        events: Sequence[ChangeEvent] = (),
        *,
        cursors: CursorStore | None = None,
        clock: Clock | None = None,
        initial_lookback: timedelta | None = None,
        key: str = "fake",
    ) -> None:
        self._events: list[ChangeEvent] = list(events)
        self._cursors: CursorStore = cursors if cursors is not None else MemoryCursorStore()
        self._clock = clock
        self._lookback = initial_lookback
        self._key = key
        self._failures: tuple[ChangeFeedError, ...] = ()

    def append(self, *events: ChangeEvent) -> None:
        """New changes land (as a push does)."""
        self._events.extend(events)

    def set_failures(self, *failures: ChangeFeedError) -> None:
        """Make every following poll report these failures (none: healthy again)."""
        self._failures = failures

    def poll(self, sink: ChangeSink | None = None) -> ChangePoll:
        if not self._events:
            return ChangePoll(failures=self._failures)
        cursor = self._cursors.get_cursor(self._key)
        ids = [e.id for e in self._events]
        if cursor is not None and cursor in ids:
            after = len(ids) - ids[::-1].index(cursor)
            new = self._events[after:]
        else:
            if cursor is not None:
                log.warning("changes.fake.cursor_unknown", key=self._key, cursor=cursor)
            new = list(self._events)
            if self._clock is not None and self._lookback is not None:
                cutoff = self._clock.now() - self._lookback
                new = [e for e in new if e.time >= cutoff]
        if sink is not None and new:
            sink(new)
        self._cursors.set_cursor(self._key, self._events[-1].id)
        return ChangePoll(events=tuple(new), failures=self._failures)


if TYPE_CHECKING:
    # mypy proves the adapters satisfy their ports.
    def _conforms(
        real: GitChangeFeed, fake: FakeChangeFeed, store: MemoryCursorStore
    ) -> tuple[ChangeFeed, ChangeFeed, CursorStore]:
        return real, fake, store
