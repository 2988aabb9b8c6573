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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sentinel.errors import ConfigError

if TYPE_CHECKING:
    from sentinel.settings import RedactionSettings

PLACEHOLDER = "[REDACTED:{kind}]"
_MAX_CACHED_KEYS = 4096

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

_LOCAL_CHAR = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?"


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: str
    rx: re.Pattern[str]
    # Literal strings one of which every match contains: when none is in the text, the
    # regex is not run (a substring test is ~100 times cheaper than a regex scan).
    triggers: tuple[str, ...] = ()
    # > 0: every match lies within this many characters of an occurrence of the (one)
    # trigger, and the regex is run only around them.
    window: int = 0


# Applied in this order (a JWT inside "Bearer <jwt>" is named a JWT). Each regex starts
# with its literal, the word-boundary check after it as a look-behind: a leading \b or
# look-behind would make the regex engine try every position instead of jumping to the
# literal (measured ~30 times slower on a prompt).
_RULES: tuple[_Rule, ...] = (
    _Rule(
        "jwt",
        re.compile(r"eyJ(?<!\weyJ)[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
        ("eyJ",),
    ),
    _Rule(
        "bearer",
        re.compile(r"[Bb](?<!\w[Bb])(?:earer|EARER)[ \t]+[A-Za-z0-9._~+/-]{16,}=*"),
        ("Bearer", "bearer", "BEARER"),
    ),
    _Rule("api_key", re.compile(r"sk-(?<!\wsk-)[A-Za-z0-9_-]{16,}"), ("sk-",)),
    _Rule("slack_token", re.compile(r"xox(?<!\wxox)[abposr]-[A-Za-z0-9-]{10,}"), ("xox",)),
    _Rule("aws_key", re.compile(r"A(?<!\wA)(?:KIA|SIA)[A-Z0-9]{16}\b"), ("AKIA", "ASIA")),
    _Rule(
        "github_token",
        re.compile(r"gh(?<!\wgh)(?:[pousr]_[A-Za-z0-9]{36,}|ithub_pat_[A-Za-z0-9_]{22,})"),
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    # The look-behind makes a match start only where a local part can start, so a long
    # run of local-part characters without "@" is scanned once, not once per position.
    _Rule(
        "email",
        re.compile(rf"{_LOCAL_CHAR}(?<!{_LOCAL_CHAR}{_LOCAL_CHAR}){_LOCAL_CHAR}*@{_DOMAIN}"),
        ("@",),
        # 64 (local part) and 253 (domain) characters at most, by RFC 5321; with room.
        window=320,
    ),
    # International (+ then 7 to 15 digits, optional separators) or the 3-3-4 grouping
    # ((415) 555-0132, 415-555-0132, 415.555.0132). A bare run of digits is not taken for
    # a phone number (ids, counts, timestamps), nor is a date (2026-11-22). Written to
    # start with a character class (then the context checks), so that the regex engine
    # skips ahead to candidate characters instead of trying every position.
    _Rule(
        "phone",
        re.compile(
            r"[+(0-9](?<![\w+][+(0-9])"
            r"(?:(?<=\+)[0-9](?:\)?[ .-]?\(?[0-9]){6,14}"
            r"|(?<=\()[0-9]{3}\)?[ .-]?[0-9]{3}[ .-][0-9]{4}"
            r"|(?<=[0-9])[0-9]{2}\)?[ .-]?[0-9]{3}[ .-][0-9]{4})"
            r"(?![0-9])"
        ),
        tuple("0123456789"),
    ),
)
BUILTIN_KINDS: tuple[str, ...] = tuple(r.kind for r in _RULES)


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

    rules: tuple[_Rule, ...]
    content_prefixes: tuple[str, ...]
    # key -> covers(key): attribute keys repeat from span to span, and a dict lookup costs
    # a fifth of startswith over the prefixes. Bounded: keys come from clients.
    covered: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(
        cls,
        extra: Sequence[tuple[str, str]] = (),
        content_prefixes: Sequence[str] = DEFAULT_CONTENT_PREFIXES,
    ) -> Redactor:
        """The built-in rules, then each ``(name, regex)`` of ``extra`` (always run: they
        have no trigger). Raises ``ConfigError`` for a bad pattern (settings validate
        them first, with the file and key)."""
        rules = list(_RULES)
        for name, regex in extra:
            why = check_pattern(name, regex)
            if why is not None:
                raise ConfigError(f"redaction pattern {name!r} = {regex!r}: {why}")
            rules.append(_Rule(name, re.compile(regex)))
        return cls(tuple(rules), tuple(content_prefixes))

    def text(self, s: str) -> str:
        """``s`` with every match replaced by its placeholder (``s`` itself when none).

        Rules run one after another; when one changed something, the rules run again
        until nothing changes (a removal could join text into a new match), so the
        result is a fixed point: redacting it again changes nothing. Each changing pass
        removes matched text, so this ends; the bound is a guard."""
        out = s
        for _ in range(8):
            new = self._once(out)
            if new is out:
                break
            out = new
        return out

    def _once(self, s: str) -> str:
        out = s
        for rule in self.rules:
            if rule.triggers and not any(t in out for t in rule.triggers):
                continue
            if rule.window:
                out = _windowed_sub(rule, out)
                continue
            if rule.rx.search(out) is None:
                continue
            out = rule.rx.sub(placeholder(rule.kind), out)
        return out

    def covers(self, key: str) -> bool:
        """Whether the attribute ``key`` holds content to redact."""
        hit = self.covered.get(key)
        if hit is None:
            hit = key.startswith(self.content_prefixes)
            if len(self.covered) < _MAX_CACHED_KEYS:
                self.covered[key] = hit
        return hit

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


_LOCAL_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~.-"
)


def _windowed_sub(rule: _Rule, s: str) -> str:
    """``rule.rx.sub`` for e-mails, matched only where they can start: for each "@", the
    run of local-part characters before it (at most ``window``) is walked back and the
    regex anchored there. A regex scanning a whole prompt costs ~100 ns a character;
    this costs a few microseconds an "@"."""
    (trigger,) = rule.triggers
    parts: list[str] = []
    pos = 0
    at = s.find(trigger)
    while at != -1:
        start, floor = at, max(pos, at - rule.window)
        while start > floor and s[start - 1] in _LOCAL_CHARS:
            start -= 1
        m = rule.rx.match(s, start, min(len(s), at + rule.window))
        if m is None:
            at = s.find(trigger, at + 1)
            continue
        parts += (s[pos : m.start()], placeholder(rule.kind))
        pos = m.end()
        at = s.find(trigger, pos)
    if not parts:
        return s
    parts.append(s[pos:])
    return "".join(parts)


def redactor_for(settings: RedactionSettings) -> Redactor | None:
    """The redactor ``[redaction]`` configures; None when redaction is off."""
    if not settings.enabled:
        return None
    return Redactor.build([(p.name, p.regex) for p in settings.patterns], settings.content_prefixes)
