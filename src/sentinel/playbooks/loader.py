"""Reading playbook files: YAML in, validated ``Playbook`` out, every mistake of a file
reported at once with its ``file:line``.

``load_playbook`` reads one file and raises ``PlaybookError`` listing every problem, one
line each (``path:line: steps[0].requests_per_minute: expected ...; got 'lots'``).
``load_playbooks`` reads files and folders for the daemon and ``sentinel playbook
validate``: a bad file is reported in ``PlaybookSet.errors`` and skipped, never fatal.

Beyond the schema (``playbooks.model``) the loader checks what only a file can tell:
template variables and braces in step strings, gates looser than ``[remediation]``, and
names used twice across files. Lines come from ruamel.yaml's round-trip loader.

What must not live here: the schema and the template rules themselves (``model``),
choosing a playbook or a gate for an incident (``sentinel.remediation``), and running
anything.
"""

from __future__ import annotations

import difflib
import re
import reprlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString

from sentinel.errors import PlaybookError
from sentinel.playbooks.model import (
    TEMPLATE_VARIABLES,
    ActionKind,
    Gates,
    Playbook,
    template_variables,
)
from sentinel.settings import RemediationSettings

__all__ = ["PLAYBOOK_SUFFIXES", "LoadedPlaybook", "PlaybookSet", "load_playbook", "load_playbooks"]

PLAYBOOK_SUFFIXES = (".yaml", ".yml")

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class LoadedPlaybook:
    """A valid playbook and the file it came from."""

    path: Path
    playbook: Playbook


@dataclass(frozen=True, slots=True)
class PlaybookSet:
    """What ``load_playbooks`` found: the valid playbooks, in file order, and one error
    per file (or path) that could not be used."""

    playbooks: tuple[LoadedPlaybook, ...] = ()
    errors: tuple[PlaybookError, ...] = ()


@dataclass(frozen=True, slots=True)
class _Problem:
    line: int  # 1-based
    where: Loc  # the key path in the file; () for the file as a whole
    what: str

    def format(self, path: Path) -> str:
        where = _dotted(self.where)
        return f"{path}:{self.line}: {where + ': ' if where else ''}{self.what}"


# --- one file ----------------------------------------------------------------------------


def load_playbook(path: Path, *, remediation: RemediationSettings | None = None) -> Playbook:
    """Read and validate one playbook file. Raises ``PlaybookError`` listing every problem
    of the file, one ``path:line: where: what`` per line.

    With ``remediation`` (the config's ``[remediation]``), gates the file sets looser than
    the config's are errors unless ``allow_looser_gates``, and gates it omits take the
    config's values rather than the schema's defaults.
    """
    return _load(path, remediation)[0]


def _load(path: Path, remediation: RemediationSettings | None) -> tuple[Playbook, int]:
    """The playbook and the line of its ``name`` (for duplicate-name errors)."""
    doc = _read(path)
    problems = [*_template_problems(doc), *_gate_problems(doc, remediation)]
    try:
        playbook = Playbook.model_validate(_plain(doc))
    except ValidationError as e:
        problems = _schema_problems(doc, e) + problems
        raise _error(path, problems) from e
    if remediation is not None and not problems:
        playbook, problems = _with_config_gates(doc, playbook, remediation)
    if problems:
        raise _error(path, problems)
    return playbook, doc.lc.key("name")[0] + 1


def _error(path: Path, problems: list[_Problem]) -> PlaybookError:
    ordered = sorted(problems, key=lambda p: p.line)
    return PlaybookError("\n".join(p.format(path) for p in ordered))


def _read(path: Path) -> CommentedMap:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise PlaybookError(f"{path}: not UTF-8 text: {e}") from e
    except OSError as e:
        raise PlaybookError(f"{path}: cannot read: {e.strerror or e}") from e
    try:
        doc = YAML(typ="rt").load(text)
    except MarkedYAMLError as e:
        raise PlaybookError(_yaml_syntax_message(path, e)) from e
    except YAMLError as e:
        raise PlaybookError(f"{path}: not valid YAML: {e}") from e
    if doc is None:
        raise PlaybookError(
            f"{path}:1: the file is empty; a playbook is a mapping with at least "
            "name, match and steps"
        )
    if not isinstance(doc, CommentedMap):
        line = doc.lc.line + 1 if isinstance(doc, CommentedSeq) else 1
        raise PlaybookError(
            f"{path}:{line}: a playbook is a mapping (name: ..., match: ..., steps: ...), "
            f"got a {type(_plain(doc)).__name__}: {reprlib.repr(_plain(doc))}"
        )
    return doc


def _yaml_syntax_message(path: Path, e: MarkedYAMLError) -> str:
    # The problem mark is where the parser gave up; the context mark, where the construct
    # it was reading began (an unclosed '[' is found at the end of the file, opened above).
    mark = e.problem_mark or e.context_mark
    line = f":{mark.line + 1}" if mark is not None else ""
    context = e.context or ""
    if context and e.context_mark is not None and e.context_mark is not mark:
        context += f" started on line {e.context_mark.line + 1}"
    what = ": ".join(x for x in (context, e.problem) if x)
    return f"{path}{line}: not valid YAML: {what or e}"


def _plain(node: Any) -> Any:
    """The YAML data as plain Python: ruamel's scalar subclasses (ScalarFloat,
    ScalarBoolean, LiteralScalarString, ...) would otherwise leak into the playbook and
    into error messages' reprs."""
    if isinstance(node, Mapping):
        return {(str(k) if isinstance(k, str) else k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, ScalarBoolean):
        return bool(node)
    if isinstance(node, bool):
        return node
    for kind in (int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return node


# --- schema errors, located --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Spot:
    """Where a pydantic error lands in the YAML: the deepest node its loc reaches."""

    error: ErrorDetails
    where: Loc
    line: int
    node: Any


def _locate(doc: CommentedMap, loc: Loc, error: ErrorDetails) -> _Spot:
    # A loc mixes keys of the data with names pydantic adds: the tag of a discriminated
    # union ('throttle' in ('steps', 0, 'throttle', 'requests_per_minute')) or a member
    # of a plain union ('str-enum[UndoStrategy]'). Those are skipped; the line is the
    # deepest part of the loc that is in the file.
    node: Any = doc
    where: list[str | int] = []
    line = doc.lc.line + 1
    for part in loc:
        if isinstance(node, CommentedMap) and node.get("action") == part:
            continue
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line = node.lc.item(part)[0] + 1
        else:
            continue
        node = node[part]
        where.append(part)
    return _Spot(error, tuple(where), line, node)


def _schema_problems(doc: CommentedMap, err: ValidationError) -> list[_Problem]:
    spots = [_locate(doc, tuple(e["loc"]), e) for e in err.errors()]
    return [_schema_problem(s) for s in spots if not _redundant(s, spots)]


def _kind_mismatch(e: ErrorDetails) -> bool:
    """The value is of the wrong kind altogether (a mapping where a string goes, ...)."""
    return e["type"].endswith("_type") or (e["type"] == "enum" and not isinstance(e["input"], str))


def _under(inner: Loc, outer: Loc) -> bool:
    return len(inner) >= len(outer) and inner[: len(outer)] == outer


def _redundant(spot: _Spot, spots: list[_Spot]) -> bool:
    others = [s for s in spots if s is not spot and _under(s.where, spot.where)]
    # pydantic adds "should have at least 1 item after validation" to a list whose items
    # all failed: noise beside the items' own errors.
    if spot.error["type"] == "too_short":
        return any(len(s.where) > len(spot.where) for s in others)
    # A union (undo: 'revert' | an action) reports every member; a member of the wrong
    # kind for the value says nothing the other member's error does not.
    if _kind_mismatch(spot.error):
        return any(not _kind_mismatch(s.error) for s in others)
    return False


def _schema_problem(spot: _Spot) -> _Problem:
    e = spot.error
    kind = e["type"]
    ctx = e.get("ctx") or {}
    actions = ", ".join(k.value for k in ActionKind)
    if kind == "union_tag_invalid":
        return _Problem(
            spot.line,
            spot.where,
            f"unknown action {ctx.get('tag')!r}; expected one of: {actions}",
        )
    if kind == "union_tag_not_found":
        return _Problem(spot.line, spot.where, f"no 'action' key; expected one of: {actions}")
    if kind == "missing":
        return _Problem(spot.line, (*spot.where, e["loc"][-1]), "required key is missing")
    if kind == "extra_forbidden":
        return _Problem(spot.line, spot.where, "unknown key (a typo?)")
    if kind == "value_error" and isinstance(spot.node, CommentedMap):
        return _model_rule_problem(spot, str(ctx.get("error", e["msg"])))
    return _Problem(spot.line, spot.where, _expected(e))


def _expected(e: ErrorDetails) -> str:
    msg = e["msg"].removeprefix("Value error, ")
    msg = re.sub(r"^Input should be ", "expected ", msg)
    value = e["input"]
    if isinstance(value, Mapping | list):
        return msg
    return f"{msg}; got {value!r}"


def _model_rule_problem(spot: _Spot, message: str) -> _Problem:
    # A rule over a whole mapping (undo names a missing step, ids repeated, gates out of
    # order) has the mapping as its loc; its message quotes the culprit ('zz'), so the
    # key or value quoted is looked up below the mapping for a closer line.
    for quoted in re.findall(r"'([^']+)'", message):
        found = _find(spot.node, quoted)
        if found is not None:
            line, where = found
            return _Problem(line, (*spot.where, *where), message)
    return _Problem(spot.line, spot.where, message)


def _find(node: CommentedMap, text: str) -> tuple[int, Loc] | None:
    """The line and path of a key equal to ``text`` below ``node`` (breadth first), else of
    the last scalar value equal to it (a repeated id: the repetition)."""
    keys: list[tuple[int, Loc]] = []
    values: list[tuple[int, Loc]] = []
    queue: list[tuple[Any, Loc]] = [(node, ())]
    while queue:
        current, path = queue.pop(0)
        for key, line, child in _children(current):
            if key == text:
                keys.append((line, (*path, key)))
            if child == text:
                values.append((line, (*path, key)))
            queue.append((child, (*path, key)))
    if keys:
        return keys[0]
    return values[-1] if values else None


def _children(node: Any) -> Iterator[tuple[str | int, int, Any]]:
    if isinstance(node, CommentedMap):
        for k, v in node.items():
            yield k, node.lc.key(k)[0] + 1, v
    elif isinstance(node, CommentedSeq):
        for i, v in enumerate(node):
            yield i, node.lc.item(i)[0] + 1, v


# --- templates ---------------------------------------------------------------------------

# `{component}` with single braces: a template written as Python or shell would write it,
# which would otherwise reach git or HTTP as literal text.
_SINGLE_BRACES = re.compile(r"(?<!\{)\{\s*([a-z_]+)\s*\}(?!\})")


def _template_problems(doc: CommentedMap) -> Iterator[_Problem]:
    """Template mistakes in every string of ``steps`` and of undo actions."""
    roots: list[tuple[Loc, Any, int]] = []
    steps = doc.get("steps")
    if isinstance(steps, CommentedSeq):
        roots.append((("steps",), steps, doc.lc.key("steps")[0] + 1))
    undo = doc.get("undo")
    if isinstance(undo, CommentedMap):
        for key, line, entry in _children(undo):
            if isinstance(entry, CommentedMap):
                roots.append((("undo", key), entry, line))
    for where, node, line in roots:
        for string_line, string_where, text in _strings(node, where, line):
            for offset, what in _template_mistakes(text):
                yield _Problem(string_line + offset, string_where, what)


def _strings(node: Any, where: Loc, line: int) -> Iterator[tuple[int, Loc, Any]]:
    """Every string below ``node``: the line its text starts on, its path, the string."""
    if isinstance(node, str):
        # A block scalar's text starts on the line after its `|` or `>`.
        yield line + isinstance(node, LiteralScalarString | FoldedScalarString), where, node
        return
    if isinstance(node, CommentedMap):
        for k in node:
            yield from _strings(node[k], (*where, k), node.lc.value(k)[0] + 1)
    elif isinstance(node, CommentedSeq):
        for i, v in enumerate(node):
            yield from _strings(v, (*where, i), node.lc.item(i)[0] + 1)


def _template_mistakes(text: str) -> Iterator[tuple[int, str]]:
    """(line offset within ``text``, what is wrong). Only a literal block (``|``) keeps
    its line breaks, so only there does the offset say more than 0."""
    lines = text.split("\n") if isinstance(text, LiteralScalarString) else [text]
    for offset, line in enumerate(lines):
        for message in _line_mistakes(line):
            yield offset, message


def _line_mistakes(text: str) -> Iterator[str]:
    names = template_variables(text)
    for name in names:
        if name not in TEMPLATE_VARIABLES:
            close = difflib.get_close_matches(name, TEMPLATE_VARIABLES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            yield (
                f"unknown template variable {name!r}{hint} in {text!r}; "
                f"known: {', '.join(TEMPLATE_VARIABLES)}"
            )
    if text.count("{{") != len(names) or text.count("}}") != len(names):
        yield f"malformed template in {text!r}: every '{{{{' needs a matching '}}}}'"
    for m in _SINGLE_BRACES.finditer(text):
        if m.group(1) in TEMPLATE_VARIABLES:
            yield (f"{m.group(0)!r} in {text!r} is not a template: write '{{{{ {m.group(1)} }}}}'")


# --- gates against the config ------------------------------------------------------------


def _gate_problems(doc: CommentedMap, remediation: RemediationSettings | None) -> list[_Problem]:
    if remediation is None or remediation.allow_looser_gates:
        return []
    gates = doc.get("gates")
    if not isinstance(gates, CommentedMap):
        return []
    problems = []
    for key, floor in (
        ("auto_above", remediation.auto_above),
        ("approve_above", remediation.approve_above),
    ):
        value = gates.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < floor:
            problems.append(
                _Problem(
                    gates.lc.key(key)[0] + 1,
                    ("gates", key),
                    f"{_plain(value)!r} is looser than the config's remediation.{key} = "
                    f"{floor!r}: a playbook may only make gates stricter, unless "
                    "remediation.allow_looser_gates = true",
                )
            )
    return problems


def _with_config_gates(
    doc: CommentedMap, playbook: Playbook, remediation: RemediationSettings
) -> tuple[Playbook, list[_Problem]]:
    """The playbook with the gates it omits set to the config's: the config's gates are
    the defaults (config.toml says so), the schema's only stand in without a config."""
    given = playbook.gates.model_dump(include=playbook.gates.model_fields_set)
    defaults = {"auto_above": remediation.auto_above, "approve_above": remediation.approve_above}
    try:
        gates = Gates.model_validate(
            {**playbook.gates.model_dump(), **defaults, **given},
        )
    except ValidationError as e:
        line = doc.lc.key("gates")[0] + 1 if "gates" in doc else doc.lc.line + 1
        what = "; ".join(str((x.get("ctx") or {}).get("error", x["msg"])) for x in e.errors())
        return playbook, [_Problem(line, ("gates",), f"with the config's gates: {what}")]
    return playbook.model_copy(update={"gates": gates}), []


# --- many files --------------------------------------------------------------------------


def load_playbooks(
    paths: Sequence[Path], *, remediation: RemediationSettings | None = None
) -> PlaybookSet:
    """Read playbook files and folders (a folder: its ``*.yaml`` and ``*.yml`` files,
    sorted, not its subfolders). A file that fails is in ``errors`` and skipped; so is a
    playbook whose ``name`` an earlier file already has. Never raises ``PlaybookError``."""
    errors: list[PlaybookError] = []
    loaded: list[LoadedPlaybook] = []
    first: dict[str, tuple[Path, int]] = {}
    for path in _files(paths, errors):
        try:
            playbook, line = _load(path, remediation)
        except PlaybookError as e:
            errors.append(e)
            continue
        if playbook.name in first:
            other, other_line = first[playbook.name]
            errors.append(
                PlaybookError(
                    f"{path}:{line}: name: {playbook.name!r} is already the name of the "
                    f"playbook in {other}:{other_line}; names must be unique"
                )
            )
            continue
        first[playbook.name] = (path, line)
        loaded.append(LoadedPlaybook(path, playbook))
    return PlaybookSet(tuple(loaded), tuple(errors))


def _files(paths: Sequence[Path], errors: list[PlaybookError]) -> list[Path]:
    """The files to read, each once, in the order given (a folder's sorted by name)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            try:
                files.extend(sorted(p for p in path.iterdir() if _is_playbook_file(p)))
            except OSError as e:
                errors.append(PlaybookError(f"{path}: cannot list the folder: {e.strerror}"))
        elif path.exists():
            files.append(path)
        else:
            errors.append(PlaybookError(f"{path}: no such file or folder"))
    seen: set[Path] = set()
    unique = []
    for f in files:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique


def _is_playbook_file(p: Path) -> bool:
    # Hidden files are editors' (.#x.yaml locks, .x.yaml.swp): never playbooks.
    return p.suffix in PLAYBOOK_SUFFIXES and not p.name.startswith(".") and p.is_file()


def _dotted(where: Loc) -> str:
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
