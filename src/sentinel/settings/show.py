"""Settings shown back to people (``sentinel check-config``): the effective configuration as
TOML, secrets masked, credentials in URLs masked.

What must not live here: reading or validating settings (``settings.load``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sentinel.settings.load import Settings
from sentinel.settings.sections import SECRET_ENV, token_env

MASK = "********"


def effective_config(s: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, secrets masked."""
    data = s.model_dump(mode="json", exclude={"secrets", "base_dir"})
    data["store"]["url"] = mask_url(s.store_url)
    data["secrets (from environment)"] = {
        env: (MASK if getattr(s.secrets, field) is not None else "(unset)")
        for env, field in sorted(SECRET_ENV.items())
    } | {token_env(name): MASK for name in sorted(s.secrets.tokens)}
    return data


def mask_url(url: str) -> str:
    """Hide the password of a URL (``scheme://user:pass@host`` -> ``user:********@``)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", rf"\g<1>{MASK}@", url)


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """A minimal TOML writer for the effective config (scalars, lists, tables)."""
    scalars: list[str] = []
    tables: list[str] = []
    for key, value in data.items():
        name = _toml_key(key)
        full = f"{prefix}.{name}" if prefix else name
        if isinstance(value, Mapping):
            tables.append(f"\n[{full}]\n" + to_toml(value, full))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for item in value:
                tables.append(f"\n[[{full}]]\n" + to_toml(item, full))
        else:
            scalars.append(f"{name} = {_toml_value(value)}")
    body = "\n".join(scalars)
    return body + ("\n" if body else "") + "".join(tables)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return _toml_string(str(v))


def _toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
