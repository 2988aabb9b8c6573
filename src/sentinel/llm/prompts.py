"""Versioned prompt files, loaded by name: ``prompts/<name>.v<N>.md``. The newest version
is used unless config pins one (``[llm] prompt_versions``), and the version goes with every
output the prompt produced (``LlmRecord.prompt_version``), so a ticket written by an older
prompt can be told from one written by the current prompt.

What must not live here: the agents, rendering incidents into text (``llm.context``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sentinel.errors import ConfigError

__all__ = ["Prompt", "load_prompt"]

_FILE = re.compile(r"(?P<name>[a-z][a-z0-9_-]*)\.v(?P<n>[0-9]+)\.md")


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    version: str  # "v3"
    text: str
    path: Path


def load_prompt(folder: Path, name: str, version: str | None = None) -> Prompt:
    """The prompt ``name`` from ``folder``: version ``version`` ("v2"), else the newest.
    A missing folder, name or version, or an empty file, is a ``ConfigError`` naming
    the path and what is there."""
    if not folder.is_dir():
        raise ConfigError(f"llm.prompts_dir {str(folder)!r} is not a folder")
    found: dict[int, Path] = {}
    for p in folder.iterdir():
        m = _FILE.fullmatch(p.name)
        if m and m["name"] == name:
            found[int(m["n"])] = p
    if not found:
        raise ConfigError(
            f"no prompt {name!r} in {folder} (expected a file {name}.v1.md, {name}.v2.md, ...)"
        )
    if version is None:
        n = max(found)
    else:
        n = int(version.removeprefix("v"))
        if n not in found:
            have = ", ".join(f"v{k}" for k in sorted(found))
            raise ConfigError(f"prompt {name!r} has no version {version!r} in {folder} ({have})")
    path = found[n]
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"prompt {path}: cannot be read: {e}") from e
    if not text:
        raise ConfigError(f"prompt {path} is empty")
    return Prompt(name=name, version=f"v{n}", text=text, path=path)
