"""Redaction of PII and secrets in text before it is stored: e-mail addresses, phone
numbers, API keys and tokens (OpenAI/Anthropic ``sk-...``, Slack ``xox?-...``, AWS
``AKIA...``, GitHub ``ghp_...``/``github_pat_...``, ``Bearer ...``, JWTs) and the
patterns an operator adds (``[[redaction.patterns]]``).

Each match becomes ``[REDACTED:<kind>]``. The placeholder matches none of the patterns, so
redacting twice changes nothing (idempotent), and text without a match is returned as the
same object (no copy on the hot path of ingest).

Pure: no I/O, no settings reading. ``Redactor.from_settings`` is the one constructor the
composition root calls; ingest (``adapters/otlp.py``) and the store (LLM outputs) call
``text`` and ``value``. What must not live here: where text is stored, protobuf, HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentinel.settings import RedactionSettings

PLACEHOLDER = "[REDACTED:{kind}]"

# Attribute keys (prefixes) whose values are prompts, messages or tool payloads: the
# GenAI semantic conventions (current and the older gen_ai.prompt.N.content form),
# OpenInference's, pydantic-ai/logfire's, and exception messages (providers echo prompts
# in their errors).
DEFAULT_CONTENT_PREFIXES: tuple[str, ...] = (
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "llm.input_messages",
    "llm.output_messages",
    "llm.prompts",
    "input.value",
    "output.value",
    "all_messages_events",
    "final_result",
    "tool_arguments",
    "tool_response",
    "exception.message",
)

_EMAIL_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?"

# Order matters where two could start at the same place: the most specific first.
_BUILTIN: tuple[tuple[str, str], ...] = (
    ("jwt", r"\beyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
    ("bearer", r"\b[Bb][Ee][Aa][Rr][Ee][Rr][ \t]+[A-Za-z0-9._~+/-]{16,}=*"),
    ("api_key", r"\bsk-[A-Za-z0-9_-]{16,}"),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    ("aws_key", r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    # The look-behind makes a match start only where a local part can start, so a long
    # run of local-part characters without "@" is scanned once, not once per position.
    ("email", rf"(?<![A-Za-z0-9!#$%&'*+/=?^_`{{|}}~.-]){_EMAIL_LOCAL}@{_DOMAIN}"),
    # International (+ then 7 to 15 digits, optional separators) or the 3-3-4 grouping
    # ((415) 555-0132, 415-555-0132, 415.555.0132). A bare run of digits is not taken for
    # a phone number (ids, counts, timestamps), nor is a date (2026-11-22).
    (
        "phone",
        r"(?<![\w+])(?:\+[0-9](?:[ .-]?\(?[0-9]\)?){6,14}"
        r"|\(?[0-9]{3}\)?[ .-]?[0-9]{3}[ .-][0-9]{4})(?![0-9])",
    ),
)
BUILTIN_KINDS: tuple[str, ...] = tuple(kind for kind, _ in _BUILTIN)


def placeholder(kind: str) -> str:
    return PLACEHOLDER.format(kind=kind)


def check_pattern(name: str, regex: str) -> str | None:
    """Why ``regex`` cannot be a redaction pattern named ``name``, or None when it can:
    it must compile, match no empty string and no placeholder (redaction would not be
    idempotent)."""
    try:
        compiled = re.compile(regex)
    except re.error as e:
        return f"not a valid regular expression: {e}"
    if compiled.fullmatch(""):
        return "it matches the empty string"
    for kind in (*BUILTIN_KINDS, name):
        if compiled.search(placeholder(kind)):
            return f"it matches the placeholder {placeholder(kind)!r}"
    return None


@dataclass(frozen=True)
class Redactor:
    """Redacts text, and the string values of attributes whose key starts with one of
    ``content_prefixes`` (``""`` covers every attribute)."""

    patterns: tuple[tuple[str, re.Pattern[str]], ...]
    content_prefixes: tuple[str, ...]

    @classmethod
    def build(
        cls,
        extra: Sequence[tuple[str, str]] = (),
        content_prefixes: Sequence[str] = DEFAULT_CONTENT_PREFIXES,
    ) -> Redactor:
        """The built-in patterns as one alternation (one pass over the text), then each
        ``(name, regex)`` of ``extra``. Raises ``ValueError`` for a bad pattern (settings
        validate them first, with the file and key)."""
        builtin = "|".join(f"(?P<{kind}>{rx})" for kind, rx in _BUILTIN)
        compiled: list[tuple[str, re.Pattern[str]]] = [("", re.compile(builtin))]
        for name, regex in extra:
            why = check_pattern(name, regex)
            if why is not None:
                raise ValueError(f"redaction pattern {name!r} = {regex!r}: {why}")
            compiled.append((name, re.compile(regex)))
        return cls(tuple(compiled), tuple(content_prefixes))

    def text(self, s: str) -> str:
        """``s`` with every match replaced by its placeholder (``s`` itself when none)."""
        out = s
        for name, rx in self.patterns:
            if rx.search(out) is None:  # the common case: no copy, no callback
                continue
            out = rx.sub(_builtin_sub if not name else _const(placeholder(name)), out)
        return out

    def covers(self, key: str) -> bool:
        """Whether the attribute ``key`` holds content to redact."""
        return key.startswith(self.content_prefixes)

    def value(self, v: Any) -> Any:
        """A JSON-like value (str, list, dict, scalars) with every string redacted."""
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, list | tuple):
            return [self.value(x) for x in v]
        if isinstance(v, Mapping):
            return {k: self.value(x) for k, x in v.items()}
        return v

    def attributes(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """``attrs`` with the values of content keys redacted."""
        return {k: self.value(v) if self.covers(k) else v for k, v in attrs.items()}


def _const(repl: str) -> Callable[[re.Match[str]], str]:
    return lambda _m: repl


def _builtin_sub(m: re.Match[str]) -> str:
    kind = m.lastgroup
    assert kind is not None
    if kind == "phone":
        digits = sum(c.isdigit() for c in m.group(0))
        if not 7 <= digits <= 15:
            return m.group(0)
    return placeholder(kind)


def redactor_for(settings: RedactionSettings) -> Redactor | None:
    """The redactor ``[redaction]`` configures; None when redaction is off."""
    if not settings.enabled:
        return None
    return Redactor.build([(p.name, p.regex) for p in settings.patterns], settings.content_prefixes)
