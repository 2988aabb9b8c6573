"""Security: redaction of PII and secrets before prompts and messages are stored
(``sentinel.redact``, property-tested, then end to end through a real daemon fed by the
OTel SDK's exporter), bearer tokens per route group (``server.auth``), and playbook
template parameters reaching git and HTTP as literal typed arguments, never a shell.

Slack's signed interactivity endpoint is tested in test_slack_flow.py (a wrong signature,
a replay and a missing signature are each refused with 401, and nothing is decided).
"""

from __future__ import annotations

import ast
import base64
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode
from pydantic import SecretStr

from sentinel.adapters.executors import Executor, MemoryNotifier
from sentinel.adapters.otlp import span_to_raw
from sentinel.errors import ActionRefused, ConfigError
from sentinel.playbooks.model import (
    ActionKind,
    BlastRadius,
    GitFile,
    GitopsRollback,
    Http,
    HttpCall,
    ShadowMode,
    TemplateContext,
    render_action,
)
from sentinel.redact import Redactor
from sentinel.settings import MASK, Settings, effective_config, load_settings, to_toml
from tests.harness import make_settings, running_daemon
from tests.test_executors import INCIDENT, World, template, world  # noqa: F401  # fixtures

SRC = Path(__file__).resolve().parents[1] / "src" / "sentinel"
REDACTOR = Redactor.build()
# Spans written by the daemon's own process: no writer child to spawn per test.
IN_PROCESS = {"writer_process": False}

# --- redaction, as a pure function -------------------------------------------------------

_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_DIGITS = "0123456789"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@st.composite
def phones(draw: st.DrawFn) -> str:
    if draw(st.booleans()):  # international: + and 7 to 15 digits in groups
        digits = draw(st.text(_DIGITS, min_size=7, max_size=15).filter(lambda d: d[0] != "0"))
        out, i = "+", 0
        while i < len(digits):
            n = draw(st.integers(1, 4))
            out += digits[i : i + n] + draw(st.sampled_from(["", " ", "-", "."]))
            i += n
        return out.rstrip(" -.")
    a, b, c = (draw(st.text(_DIGITS, min_size=n, max_size=n)) for n in (3, 3, 4))
    style = draw(st.sampled_from(["({}) {}-{}", "{}-{}-{}", "{}.{}.{}", "({}){}-{}"]))
    return style.format(a, b, c)


@st.composite
def jwts(draw: st.DrawFn) -> str:
    claims = st.dictionaries(st.text(_ALNUM, min_size=1, max_size=8), st.text(max_size=20))
    header = json.dumps({"alg": "HS256", **draw(claims)}).encode()
    payload = json.dumps({"sub": "x", **draw(claims)}).encode()
    signature = draw(st.binary(min_size=0, max_size=64))
    return f"{_b64url(header)}.{_b64url(payload)}.{_b64url(signature)}"


SECRETS: dict[str, st.SearchStrategy[str]] = {
    "email": st.emails(),
    "phone": phones(),
    "api_key": st.builds(
        lambda p, b: "sk-" + p + b,
        st.sampled_from(["", "proj-", "ant-api03-"]),
        st.text(_B64URL, min_size=16, max_size=80),
    ),
    "slack_token": st.builds(
        lambda k, b: f"xox{k}-{b}", st.sampled_from("bpa"), st.text(_ALNUM + "-", min_size=10)
    ),
    "aws_key": st.builds(
        lambda p, b: p + b,
        st.sampled_from(["AKIA", "ASIA"]),
        st.text(_ALNUM[:26] + _DIGITS, min_size=16, max_size=16),
    ),
    "github_token": st.builds(
        lambda p, b: p + b,
        st.sampled_from(["ghp_", "gho_", "ghs_"]),
        st.text(_ALNUM, min_size=36, max_size=40),
    ),
    "bearer": st.builds(
        lambda w, b, pad: f"{w} {b}{pad}",
        st.sampled_from(["Bearer", "bearer", "BEARER"]),
        st.text(_ALNUM + "._~+/-", min_size=16, max_size=80),
        st.sampled_from(["", "=", "=="]),
    ),
    "jwt": jwts(),
}
_SPACE = st.sampled_from([" ", "\n", "\t", " \n "])


@settings(max_examples=60, deadline=None, database=None)
@pytest.mark.parametrize("kind", sorted(SECRETS))
@given(data=st.data(), left=st.text(max_size=40), right=st.text(max_size=40))
def test_a_secret_embedded_in_random_text_never_survives(
    kind: str, data: st.DataObject, left: str, right: str
) -> None:
    secret = data.draw(SECRETS[kind], label="secret")
    text = left + data.draw(_SPACE) + secret + data.draw(_SPACE) + right

    out = REDACTOR.text(text)

    assert secret not in out
    assert "[REDACTED:" in out
    assert REDACTOR.text(out) == out  # idempotent


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(st.characters(exclude_characters="@0123456789"), max_size=300))
def test_text_without_digits_or_at_signs_is_unchanged(text: str) -> None:
    assert REDACTOR.text(text) is text


@pytest.mark.parametrize(
    "text",
    [
        "Refund of $1,234.56 approved on 2026-11-22T10:00:00Z (order 88231047), HTTP 503",
        "gpt-4o-2025-07-27 took 2.5 s; 1732270000000 ms epoch; port 4318; v1.2.3; 10.0.0.12",
        "trace 4bf92f3577b34da6a3ce929d0e0e4736, pod support-7d9f8b6c5d-x2x9q, 12:30:05",
        "Ask about task-1234567 or ticket #4521; skip-the-line for sk-short; Bearer of news",
    ],
)
def test_ordinary_operational_text_is_unchanged(text: str) -> None:
    assert REDACTOR.text(text) == text


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=200))
def test_redaction_is_idempotent_on_any_text(text: str) -> None:
    once = REDACTOR.text(text)
    assert REDACTOR.text(once) == once


def test_json_values_are_redacted_keeping_their_shape() -> None:
    value = {"summary": "mail ops@acme.io", "steps": ["call +1 415 555 0132", 3], "ok": True}
    assert REDACTOR.value(value) == {
        "summary": "mail [REDACTED:email]",
        "steps": ["call [REDACTED:phone]", 3],
        "ok": True,
    }


@settings(max_examples=100, deadline=None, database=None)
@given(
    st.lists(
        st.sampled_from(["gen_ai.prompt", "gen_ai.usage", "input.value", "x"]).flatmap(
            lambda p: st.text(max_size=8).map(lambda t: p + t)
        ),
        max_size=30,
    )
)
def test_which_keys_are_content_is_the_prefix_rule_cached_or_not(keys: list[str]) -> None:
    redactor = Redactor.build()
    for key in keys + keys:  # the second time from the cache
        assert redactor.covers(key) == key.startswith(redactor.content_prefixes)


def test_the_content_key_cache_is_bounded() -> None:
    redactor = Redactor.build()
    for i in range(5000):
        redactor.covers(f"k{i}")
    assert len(redactor.covered) == 4096
    assert redactor.covers("gen_ai.prompt.9999.content")


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_an_extra_pattern_is_redacted_under_its_name(tmp_path: Path) -> None:
    path = _config(tmp_path, '[[redaction.patterns]]\nname = "customer"\nregex = "CUST-[0-9]{8}"\n')
    s = load_settings(path, env={})
    redactor = Redactor.build([(p.name, p.regex) for p in s.redaction.patterns])
    assert redactor.text("for CUST-00012345 only") == "for [REDACTED:customer] only"


@pytest.mark.parametrize(
    ("regex", "why"),
    [
        ("CUST-[0-9", "not a valid regular expression"),
        ("x*", "matches the empty string"),
        ("REDACTED", "matches the placeholder"),
    ],
)
def test_a_bad_extra_pattern_is_refused_at_load_naming_it(
    tmp_path: Path, regex: str, why: str
) -> None:
    text = f'[[redaction.patterns]]\nname = "customer"\nregex = {json.dumps(regex)}\n'
    with pytest.raises(ConfigError) as caught:
        load_settings(_config(tmp_path, text), env={})
    message = str(caught.value)
    assert str(tmp_path / "config.toml") in message
    assert "redaction.patterns" in message and repr(regex) in message and why in message


# --- redaction end to end: OTel SDK -> receiver -> store ---------------------------------

EMAIL, KEY, PHONE, AWS = (
    "jane.doe@example.com",
    "sk-proj-" + "a1B2" * 8,
    "+44 20 7946 0958",
    "AKIAIOSFODNN7EXAMPLE",
)


def _export_one_chat_span(url: str) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "support"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=url + "/v1/traces")))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("chat gpt-4o") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.request.model", "gpt-4o")
        span.set_attribute(
            "gen_ai.input.messages",
            json.dumps([{"role": "user", "content": f"I am {EMAIL}, my key is {KEY}"}]),
        )
        span.set_attribute("gen_ai.prompt.0.content", f"call me on {PHONE}")
        span.set_attribute("http.url", "https://api.example/v1?owner=ops@example.org")
        span.add_event("exception", {"exception.type": "AuthError", "exception.message": KEY})
        span.set_status(Status(StatusCode.ERROR, f"denied for {AWS}"))
    provider.shutdown()


def _stored(d: Any) -> list[Any]:
    return d.store.spans(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def test_prompts_and_messages_are_redacted_before_they_are_stored(tmp_path: Path) -> None:
    with running_daemon(make_settings(tmp_path, ingest=IN_PROCESS)) as d:
        _export_one_chat_span(d.url)
        [span] = _stored(d)
    raw = span_to_raw(span)
    for secret in (EMAIL, KEY, PHONE, AWS):
        assert secret.encode() not in raw
    assert "[REDACTED:email]" in span.attributes["gen_ai.input.messages"]
    assert span.attributes["gen_ai.prompt.0.content"] == "call me on [REDACTED:phone]"
    assert span.events[0].attributes["exception.message"] == "[REDACTED:api_key]"
    assert span.status_message == "denied for [REDACTED:aws_key]"
    # What the conventions read is intact; attributes that are not content are kept.
    assert (span.component, span.error_type) == ("model:gpt-4o", "AuthError")
    assert span.attributes["http.url"] == "https://api.example/v1?owner=ops@example.org"


def test_otlp_json_is_redacted_too(tmp_path: Path) -> None:
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": os.urandom(16).hex(),
                                "spanId": os.urandom(8).hex(),
                                "name": "chat",
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000050000000",
                                "attributes": [
                                    {
                                        "key": "gen_ai.output.messages",
                                        "value": {
                                            "arrayValue": {"values": [{"stringValue": EMAIL}]}
                                        },
                                    }
                                ],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    with running_daemon(make_settings(tmp_path, ingest=IN_PROCESS)) as d:
        r = httpx.post(d.url + "/v1/traces", json=doc, timeout=30)
        assert r.status_code == 200
        [span] = _stored(d)
    assert span.attributes["gen_ai.output.messages"] == ["[REDACTED:email]"]
    assert EMAIL.encode() not in span_to_raw(span)


def test_with_redaction_off_the_span_is_stored_as_sent(tmp_path: Path) -> None:
    with running_daemon(
        make_settings(tmp_path, ingest=IN_PROCESS, redaction={"enabled": False})
    ) as d:
        _export_one_chat_span(d.url)
        [span] = _stored(d)
    assert EMAIL in span.attributes["gen_ai.input.messages"]
    assert span.status_message == f"denied for {AWS}"


# --- bearer tokens per route group -------------------------------------------------------


def _with_tokens(s: Settings, **tokens: str) -> Settings:
    builtin = {k: SecretStr(v) for k, v in tokens.items() if k in ("ingest_token", "api_token")}
    named = {k: SecretStr(v) for k, v in tokens.items() if k not in builtin}
    secrets = s.secrets.model_copy(update={**builtin, "tokens": named})
    return s.model_copy(update={"secrets": secrets})


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[str]:
    s = make_settings(
        tmp_path,
        ingest=IN_PROCESS,
        server={
            "port": 0,
            "auth": {"traces": ["ingest", "collector"], "read": ["api"], "metrics": ["scrape"]},
        },
    )
    s = _with_tokens(s, ingest_token="in-1", api_token="api-1", collector="col-1", scrape="scr-1")
    with running_daemon(s) as d:
        yield d.url


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_each_route_group_takes_only_its_own_tokens(guarded: str) -> None:
    url = guarded
    pb = {"Content-Type": "application/x-protobuf"}
    assert httpx.post(url + "/v1/traces", content=b"", headers=pb).status_code == 401
    for token in ("in-1", "col-1"):
        ok = httpx.post(url + "/v1/traces", content=b"", headers={**pb, **_bearer(token)})
        assert ok.status_code == 200, token
    assert (
        httpx.post(url + "/v1/traces", content=b"", headers={**pb, **_bearer("api-1")}).status_code
        == 401
    )

    assert httpx.get(url + "/api/audit", headers=_bearer("in-1")).status_code == 401
    assert httpx.get(url + "/api/audit", headers=_bearer("api-1")).status_code == 200
    assert httpx.get(url + "/metrics").status_code == 401
    assert httpx.get(url + "/metrics", headers=_bearer("scr-1")).status_code == 200
    assert httpx.get(url + "/healthz").status_code == 200  # open: probes carry no token
    # changes keeps its default, the "api" token.
    assert httpx.post(url + "/api/changes", json=[]).status_code == 401
    assert httpx.post(url + "/api/changes", json=[], headers=_bearer("api-1")).status_code == 200


def test_a_refusal_is_401_with_a_bearer_challenge(guarded: str) -> None:
    missing = httpx.get(guarded + "/api/actions")
    wrong = httpx.get(guarded + "/api/actions", headers=_bearer("api-2"))
    odd = httpx.get(guarded + "/api/actions", headers={"Authorization": b"Bearer \xe9t\xe9"})
    traces = httpx.post(guarded + "/v1/traces", content=b"", headers=_bearer("nope"))

    assert [r.status_code for r in (missing, wrong, odd, traces)] == [401] * 4
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="sentinel"'
    assert (missing.json(), wrong.json()) == (
        {"error": "missing bearer token"},
        {"error": "wrong bearer token"},
    )
    for r in (wrong, odd, traces):
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="sentinel", error="invalid_token"'


def test_off_loopback_a_group_without_its_token_is_refused_at_load(tmp_path: Path) -> None:
    path = _config(tmp_path, '[server]\nhost = "0.0.0.0"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={"SENTINEL_INGEST_TOKEN": "t"})
    assert "server.auth.changes" in str(caught.value) and "SENTINEL_API_TOKEN" in str(caught.value)

    opened = _config(
        tmp_path, '[server]\nhost = "0.0.0.0"\n\n[server.auth]\nchanges = []\nread = []\n'
    )
    s = load_settings(opened, env={"SENTINEL_INGEST_TOKEN": "t", "SENTINEL_TOKEN_SCRAPE": "x"})
    assert s.server.auth.changes == () and s.secrets.token("scrape") == SecretStr("x")
    shown = effective_config(s)["secrets (from environment)"]
    assert shown["SENTINEL_TOKEN_SCRAPE"] == MASK and "x" not in to_toml(shown)
    assert load_settings(opened, env={"SENTINEL_INGEST_TOKEN": "t"}, serving=True)


def test_a_token_name_must_be_a_plain_name(tmp_path: Path) -> None:
    path = _config(tmp_path, '[server.auth]\nread = ["Api Token"]\n')
    with pytest.raises(ConfigError, match=r"server\.auth\.read"):
        load_settings(path, env={})


# --- template parameters never reach a shell ---------------------------------------------

HOSTILE = [
    "x; rm -rf /; touch pwned",
    "$(touch pwned)",
    "`touch pwned`",
    "x\ntouch pwned",
    "x|touch pwned &",
]


def _ctx(value: str) -> TemplateContext:
    return TemplateContext(
        incident_id=INCIDENT, component=f"prompt:{value}", fault="bad_change", change_id=value
    )


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_change_id_reaches_git_as_one_literal_argument(
    world: World,  # noqa: F811
    value: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(world.root)
    step = GitopsRollback(
        action=ActionKind.GITOPS_ROLLBACK, id="rollback", change="{{ change_id }}", repo="config"
    )
    rendered = render_action(step, _ctx(value))
    assert rendered.change == value
    before = world.head()
    with pytest.raises(ActionRefused, match="not a commit id"):
        world.gitops().apply(rendered, key="k", incident_id=INCIDENT, allowed=BlastRadius())
    assert world.head() == before
    assert not list(world.root.rglob("pwned"))


@pytest.mark.parametrize("value", [v for v in HOSTILE if "\n" not in v])
def test_a_hostile_target_is_written_to_the_file_as_text(
    world: World,  # noqa: F811
    value: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(world.root)
    step = ShadowMode(
        action=ActionKind.SHADOW_MODE,
        id="shadow",
        target="{{ component }}",
        git=GitFile(path="routing.yaml"),
    )
    rendered = render_action(step, _ctx(value))
    world.gitops().apply(rendered, key="k", incident_id=INCIDENT, allowed=BlastRadius())
    assert f"prompt:{value}" in world.show("routing.yaml")
    assert not list(world.root.rglob("pwned"))


def test_hostile_values_reach_http_as_literal_url_and_json(world: World) -> None:  # noqa: F811
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    step = Http(
        action=ActionKind.HTTP,
        call=HttpCall(
            method="POST",
            url="https://flags.example/api/flags/{{ component_name }}",
            json={"reason": "{{ change_id }}"},
        ),
    )
    value = "$(touch pwned);`id`"
    rendered = render_action(step, _ctx(value))
    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        Executor(world.gitops(), MemoryNotifier(), http=client).apply(
            rendered, key="k", incident_id=INCIDENT, allowed=BlastRadius()
        )
    [request] = sent
    assert request.url.path == f"/api/flags/{value}"
    assert json.loads(request.content) == {"reason": value}


def _calls(tree: ast.AST) -> Iterator[ast.Call]:
    return (n for n in ast.walk(tree) if isinstance(n, ast.Call))


def _name(func: ast.expr) -> str:
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


SHELLS = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"}
# subprocess's calls given one string are a command line; asyncio's create_subprocess_exec
# takes the program and its arguments apart, so a string first argument is fine there.
SPAWNS = {"run", "call", "check_call", "check_output", "Popen"}


def _shell_uses(source: str, where: str) -> list[str]:
    """Calls in ``source`` that run a shell or a command given as one string."""
    found: list[str] = []
    for call in _calls(ast.parse(source, where)):
        name, at = _name(call.func), f"{where}:{call.lineno}"
        if name in SHELLS or name.endswith("create_subprocess_shell"):
            found.append(f"{at}: {name}")
        for kw in call.keywords:
            literal_false = isinstance(kw.value, ast.Constant) and kw.value.value is False
            if kw.arg == "shell" and not literal_false:
                found.append(f"{at}: {name}(shell=...)")
        head, _, last = name.rpartition(".")
        if last in SPAWNS and head == "subprocess":
            first = call.args[0] if call.args else None
            if isinstance(first, ast.Constant | ast.JoinedStr | ast.BinOp):
                found.append(f"{at}: {name} with a string command")
    return found


def test_no_source_file_runs_a_shell() -> None:
    found: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        found += _shell_uses(path.read_text(encoding="utf-8"), str(path.relative_to(SRC)))
    assert found == []


def test_the_shell_check_finds_each_form() -> None:
    bad = (
        "import os, subprocess, asyncio\n"
        "os.system('x')\n"
        "subprocess.run(['ls'], shell=True)\n"
        "subprocess.check_output(f'git log {ref}')\n"
        "asyncio.create_subprocess_shell(cmd)\n"
        "subprocess.run(['git', 'log', ref])\n"
    )
    assert [f.split(": ")[0] for f in _shell_uses(bad, "bad.py")] == [
        "bad.py:2",
        "bad.py:3",
        "bad.py:4",
        "bad.py:5",
    ]
