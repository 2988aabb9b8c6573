"""The YAML edits of the git steps ``throttle``, ``shadow_mode`` and ``model_failover``:
each step becomes an ``_Edit`` that changes one parsed file, read and written with
ruamel.yaml round-trip (comments, key order, quotes and the file's own indentation kept).

What must not live here: git (reading, writing, staging and committing the file is
``gitops``), choosing the file or checking its path (``gitops``, ``contract``), and
deciding whether a step may run (``sentinel.remediation``).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import ScalarString

from sentinel.adapters.executors.contract import _line, _number
from sentinel.errors import ActionRefused

if TYPE_CHECKING:
    from sentinel.playbooks.model import ModelFailover, ShadowMode, Throttle


def _guess_indent(text: str) -> tuple[int, int, int]:
    """(mapping indent, sequence indent, dash offset) the file already uses, so a one-key
    edit does not re-indent the whole file (ruamel.yaml's own guess mixes the two)."""
    mapping: int | None = None
    sequence: int | None = None
    offset: int | None = None
    prev_col = -1
    prev_opens = False
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        col = len(line) - len(stripped)
        if prev_opens and stripped.startswith("- ") and col >= prev_col and offset is None:
            offset = col - prev_col
            content = col + 1 + (len(stripped) - 1 - len(stripped[1:].lstrip(" ")))
            sequence = content - prev_col
        elif prev_opens and col > prev_col and mapping is None and not stripped.startswith("-"):
            mapping = col - prev_col
        code = re.sub(r"\s+#.*$", "", stripped)
        prev_opens = code.endswith(":")
        prev_col = col
    mapping = mapping or 2
    offset = offset or 0
    sequence = max(sequence or mapping, offset + 2)
    return mapping, sequence, offset


def _yaml(text: str) -> YAML:
    yaml = YAML()  # round-trip: comments, key order and quotes survive
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long lines
    mapping, sequence, offset = _guess_indent(text)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


def _load_yaml(text: str, where: str) -> tuple[YAML, CommentedMap]:
    yaml = _yaml(text)
    try:
        data = yaml.load(text) if text.strip() else None
    except YAMLError as e:
        raise ActionRefused(f"{where}: not valid YAML: {e}") from e
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise ActionRefused(f"{where}: the document must be a mapping, not {type(data).__name__}")
    return yaml, data


def _dump_yaml(yaml: YAML, data: CommentedMap) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _child(parent: CommentedMap, key: str, where: str) -> CommentedMap:
    """``parent[key]``, a mapping, created when missing."""
    if key not in parent or parent[key] is None:
        parent[key] = CommentedMap()
    child = parent[key]
    if not isinstance(child, CommentedMap):
        raise ActionRefused(f"{where}: {key!r} must be a mapping, not {type(child).__name__}")
    return child


def _replace_models(node: Any, model: str, fallback: str) -> int:
    """Set every ``model: <model>`` under ``node`` to ``fallback`` (keeping quotes);
    how many were set."""
    count = 0
    if isinstance(node, CommentedMap):
        for k in list(node):
            value = node[k]
            if k == "model" and isinstance(value, str) and str(value) == model:
                node[k] = type(value)(fallback) if isinstance(value, ScalarString) else fallback
                count += 1
            else:
                count += _replace_models(value, model, fallback)
    elif isinstance(node, CommentedSeq):
        for item in node:
            count += _replace_models(item, model, fallback)
    return count


def _has_model(node: Any, model: str) -> bool:
    if isinstance(node, CommentedMap):
        return any(
            (k == "model" and isinstance(v, str) and str(v) == model) or _has_model(v, model)
            for k, v in node.items()
        )
    if isinstance(node, CommentedSeq):
        return any(_has_model(item, model) for item in node)
    return False


@dataclass(frozen=True, slots=True)
class _Edit:
    """A change to one YAML file. ``change`` makes it on the parsed file and returns the
    commit subject, or None when the file already says so."""

    body: str
    change: Callable[[CommentedMap, str], str | None]


def _throttle_edit(step: Throttle, path: str) -> _Edit:
    target = _line("throttle target", step.target)
    rpm = _number(step.requests_per_minute)

    def change(data: CommentedMap, where: str) -> str | None:
        entry = _child(_child(data, "rate_limits", where), target, f"{where}: rate_limits")
        if entry.get("requests_per_minute") == rpm:
            return None
        entry["requests_per_minute"] = rpm
        return f"Throttle {target} to {rpm} requests/minute"

    return _Edit(f"Sets rate_limits.{target}.requests_per_minute to {rpm} in {path}.", change)


def _shadow_edit(step: ShadowMode, path: str) -> _Edit:
    target = _line("shadow target", step.target)

    def change(data: CommentedMap, where: str) -> str | None:
        shadow = _child(data, "shadow", where)
        if shadow.get(target) is True:
            return None
        shadow[target] = True
        return f"Shadow mode for {target}"

    return _Edit(
        f"Sets shadow.{target} to true in {path}: it keeps receiving copies of traffic and "
        "its answers are not used.",
        change,
    )


def _failover_edit(step: ModelFailover, path: str) -> _Edit:
    model = _line("model", step.model)
    agent = _line("agent", step.agent) if step.agent is not None else None
    given = _line("fallback", step.fallback) if step.fallback is not None else None
    scope_name = f"agents.{agent}" if agent is not None else "the file"

    def change(data: CommentedMap, where: str) -> str | None:
        scope: Any = data
        if agent is not None:
            agents = data.get("agents")
            scope = agents.get(agent) if isinstance(agents, CommentedMap) else None
            if not isinstance(scope, CommentedMap):
                raise ActionRefused(f"{where}: there is no mapping agents.{agent} to fail over")
        fallback = given
        if fallback is None:
            fallbacks = data.get("fallbacks")
            found = fallbacks.get(model) if isinstance(fallbacks, CommentedMap) else None
            if not isinstance(found, str) or not found:
                raise ActionRefused(
                    f"{where}: the step names no fallback and fallbacks.{model} is not set"
                )
            fallback = _line(f"{where}: fallbacks.{model}", str(found))
        if _replace_models(scope, model, fallback):
            return f"Fail over {model} to {fallback}"
        if _has_model(scope, fallback):
            return None  # failed over already
        raise ActionRefused(f"{where}: no 'model: {model}' in {scope_name} to fail over")

    return _Edit(f"Replaces every 'model: {model}' in {scope_name} of {path}.", change)
