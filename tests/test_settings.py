"""Tests of the typed configuration (``sentinel.settings``) and of ``sentinel check-config``: the
shipped config.toml documents every default, bad files and variables are rejected with the
file, the key and the line, and secrets come from the environment only and are never
printed.

What must not live here: tests of what consumes the settings (daemon, adapters).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typer.testing import CliRunner

from sentinel.cli import app
from sentinel.errors import ConfigError
from sentinel.settings import (
    MASK,
    Settings,
    effective_config,
    load_settings,
    mask_url,
    to_toml,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "config.toml"
SENTINEL_BIN = Path(sys.executable).with_name("sentinel")

TOKEN = "tok-3f9a1c-do-not-print"
API_TOKEN = "api-77e2-do-not-print"
PROM_TOKEN = "prom-51b0-do-not-print"
DB_PASSWORD = "Tr0ub4dor-and-3"
DB_URL = f"postgresql+psycopg://sentinel:{DB_PASSWORD}@db.internal:5432/sentinel"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads os.environ: no SENTINEL_* of the machine running the tests, and
    rich's default width (what a pipe gets)."""
    for name in list(os.environ):
        if name.startswith("SENTINEL_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("COLUMNS", raising=False)


def write(folder: Path, text: str, name: str = "config.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env=env or {})
    return str(caught.value)


# --- the shipped file -------------------------------------------------------------------


def test_shipped_config_holds_exactly_the_defaults() -> None:
    shipped = load_settings(SHIPPED, env={})

    assert shipped.base_dir == ROOT
    assert shipped.model_dump(exclude={"base_dir"}) == Settings().model_dump(exclude={"base_dir"})


def _table_item(annotation: Any) -> type[BaseModel] | None:
    """The model of a ``tuple[Model, ...]`` field (an array of tables), else None."""
    if typing.get_origin(annotation) is tuple:
        (item, *_rest) = typing.get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item
    return None


def _documented(text: str) -> dict[str, set[str]]:
    """Keys assigned under each table header of the text, commented-out examples included."""
    header = re.compile(r"^\s*#?\s*\[\[?\s*([A-Za-z0-9_.]+)\s*\]\]?\s*(#.*)?$")
    assign = re.compile(r"^\s*#?\s*([A-Za-z0-9_]+)\s*=")
    out: dict[str, set[str]] = {"": set()}
    table = ""
    for line in text.splitlines():
        m = header.match(line)
        if m:
            table = m.group(1)
            out.setdefault(table, set())
            continue
        m = assign.match(line)
        if m:
            out[table].add(m.group(1))
    return out


def _missing(
    model: type[BaseModel], table: str, parsed: dict[str, Any] | None, doc: dict[str, set[str]]
) -> list[str]:
    missing = []
    for name, field in model.model_fields.items():
        key = f"{table}.{name}"
        item = _table_item(field.annotation)
        if item is not None:
            # An array of tables, empty by default: an example (commented out) documents it.
            if key not in doc:
                missing.append(key)
            missing += _missing(item, key, None, doc)
        elif parsed is not None:
            if name not in parsed:
                missing.append(key)
        elif name not in doc.get(table, set()):
            missing.append(key)
    return missing


def test_shipped_config_lists_every_key() -> None:
    text = SHIPPED.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    doc = _documented(text)
    missing: list[str] = []
    sections = [n for n in Settings.model_fields if n not in ("secrets", "base_dir")]
    for section in sections:
        model = Settings.model_fields[section].annotation
        item = _table_item(model)
        if item is not None:
            # A top-level array of tables ([[slo]]), empty by default: documented by example.
            if section not in doc:
                missing.append(f"[[{section}]]")
            missing += _missing(item, section, None, doc)
            continue
        assert isinstance(model, type) and issubclass(model, BaseModel)
        if section not in data:
            missing.append(f"[{section}]")
        missing += _missing(model, section, data.get(section, {}), doc)

    assert missing == []
    # Nothing in the file that the settings do not know (load_settings would reject it).
    assert set(data) <= set(sections)
    # Every secret variable is documented, in the comments, with its name.
    for name in (
        "SENTINEL_INGEST_TOKEN",
        "SENTINEL_API_TOKEN",
        "SENTINEL_PROMETHEUS_TOKEN",
        "SENTINEL_STORE_URL",
        "SENTINEL_CONFIG",
    ):
        assert name in text


# --- rejected files ---------------------------------------------------------------------


def test_unknown_top_level_key_names_file_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "# my config\n\nfrobnicate = true\n\n[server]\nport = 4318\n")

    message = config_error(path)

    assert str(path) in message
    assert "'frobnicate'" in message
    assert f"{path}:3" in message


def test_unknown_key_in_a_section_names_the_dotted_key_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[server]\nhost = "0.0.0.0"\n\n[ingest]\nmax_body_bytes = 2048\nqueue_max = 5\n',
    )

    message = config_error(path)

    assert "'ingest.queue_max'" in message
    assert f"{path}:6" in message


def test_unknown_key_in_an_array_of_tables_names_it_and_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[changes]\npoll_seconds = 5.0\n\n"
        '[[changes.repos]]\nname = "agent-config"\nurl = "/srv/git/agent-config"\n'
        'brnach = "main"\n',
    )

    message = config_error(path)

    assert "changes.repos" in message
    assert "brnach" in message
    assert f"{path}:7" in message


@pytest.mark.parametrize(
    ("text", "key", "expected", "got", "line"),
    [
        ('[server]\nport = "http"\n', "server.port", "integer", "'http'", 2),
        ("[server]\n\nhost = 8080\n", "server.host", "string", "8080", 3),
        ('[server]\ningest_auth = "maybe"\n', "server.ingest_auth", "boolean", "'maybe'", 2),
        ("[prometheus]\nretries = 1.5\n", "prometheus.retries", "integer", "1.5", 2),
        ('[logging]\nlevel = "verbose"\n', "logging.level", "'debug'", "'verbose'", 2),
        ('[store]\nurl = "mysql://db/x"\n', "store.url", "sqlite", "'mysql://db/x'", 2),
    ],
    ids=["port-str", "host-int", "bool-str", "retries-float", "level-enum", "store-url"],
)
def test_wrong_type_names_key_expected_type_and_value(
    tmp_path: Path, text: str, key: str, expected: str, got: str, line: int
) -> None:
    path = write(tmp_path, text)

    message = config_error(path)

    assert f"{path}:{line}: {key}:" in message
    assert expected in message
    assert f"(got {got})" in message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\nport = 4318\n")

    message = config_error(path)

    assert str(path) in message
    assert "not valid TOML" in message


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "config.toml"

    assert "not found" in config_error(missing)
    assert str(missing) in config_error(missing)
    # Named through SENTINEL_CONFIG: asked for by name too.
    with pytest.raises(ConfigError, match="not found"):
        load_settings(env={"SENTINEL_CONFIG": str(missing)})


def test_sentinel_config_variable_picks_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9999\n")

    s = load_settings(env={"SENTINEL_CONFIG": str(path)})

    assert s.server.port == 9999
    assert s.base_dir == tmp_path.resolve()


# --- secrets ----------------------------------------------------------------------------


def test_secrets_come_from_the_environment_and_are_masked(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\ningest_auth = true\napi_auth = true\n")
    env = {
        "SENTINEL_INGEST_TOKEN": TOKEN,
        "SENTINEL_API_TOKEN": API_TOKEN,
        "PATH": "/usr/bin",  # not ours: ignored
        "SENTINELS": "x",  # no underscore: not ours either
    }

    s = load_settings(path, env=env)

    assert s.secrets.ingest_token is not None
    assert s.secrets.ingest_token.get_secret_value() == TOKEN
    assert s.secrets.api_token is not None
    assert s.secrets.api_token.get_secret_value() == API_TOKEN
    assert s.secrets.prometheus_token is None
    shown = effective_config(s)
    assert shown["secrets (from environment)"] == {
        "SENTINEL_API_TOKEN": MASK,
        "SENTINEL_INGEST_TOKEN": MASK,
        "SENTINEL_PROMETHEUS_TOKEN": "(unset)",
        "SENTINEL_STORE_URL": "(unset)",
        "SENTINEL_SLACK_BOT_TOKEN": "(unset)",
        "SENTINEL_SLACK_APP_TOKEN": "(unset)",
        "SENTINEL_SLACK_SIGNING_SECRET": "(unset)",
        "SENTINEL_LLM_API_KEY": "(unset)",
    }
    for text in (to_toml(shown), repr(shown), repr(s), str(s)):
        assert TOKEN not in text
        assert API_TOKEN not in text


def test_store_url_with_a_password_from_the_environment_is_masked(tmp_path: Path) -> None:
    path = write(tmp_path, "")

    s = load_settings(path, env={"SENTINEL_STORE_URL": DB_URL})

    assert s.store_url == DB_URL  # used as given
    shown = effective_config(s)
    assert (
        shown["store"]["url"] == f"postgresql+psycopg://sentinel:{MASK}@db.internal:5432/sentinel"
    )
    assert shown["secrets (from environment)"]["SENTINEL_STORE_URL"] == MASK
    assert DB_PASSWORD not in to_toml(shown)
    assert DB_PASSWORD not in repr(s)


def test_mask_url_hides_only_the_password() -> None:
    assert mask_url(DB_URL) == f"postgresql+psycopg://sentinel:{MASK}@db.internal:5432/sentinel"
    assert mask_url("postgresql+psycopg://sentinel@db:5432/x") == (
        "postgresql+psycopg://sentinel@db:5432/x"
    )
    assert mask_url("sqlite:////var/lib/sentinel.db") == "sqlite:////var/lib/sentinel.db"


@pytest.mark.parametrize(
    "text",
    [
        '[secrets]\ningest_token = "in-the-file"\n',
        'secrets = { api_token = "in-the-file" }\n',
        'base_dir = "/"\n',
    ],
    ids=["secrets-table", "secrets-inline", "base_dir"],
)
def test_secrets_and_base_dir_in_the_file_are_rejected(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)

    message = config_error(path)

    assert str(path) in message
    assert "not allowed in the file" in message
    assert "SENTINEL_INGEST_TOKEN" in message  # says where secrets go instead
    assert "in-the-file" not in message


def test_unknown_sentinel_variable_is_rejected_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, "")

    message = config_error(path, env={"SENTINEL_FOO": "1", "SENTINEL_INGEST_TOKEN": TOKEN})

    assert "'SENTINEL_FOO'" in message
    assert "SENTINEL_INGEST_TOKEN" in message  # the known names are listed
    assert TOKEN not in message


@pytest.mark.parametrize(
    ("text", "env", "needed"),
    [
        ("[server]\ningest_auth = true\n", {}, "SENTINEL_INGEST_TOKEN"),
        ("[server]\ningest_auth = true\n", {"SENTINEL_INGEST_TOKEN": ""}, "SENTINEL_INGEST_TOKEN"),
        (
            "[server]\ningest_auth = true\n",
            {"SENTINEL_API_TOKEN": API_TOKEN},
            "SENTINEL_INGEST_TOKEN",
        ),
        ("[server]\napi_auth = true\n", {"SENTINEL_INGEST_TOKEN": TOKEN}, "SENTINEL_API_TOKEN"),
    ],
    ids=["ingest-unset", "ingest-empty", "ingest-other-token", "api-unset"],
)
def test_auth_without_its_token_is_rejected(
    tmp_path: Path, text: str, env: dict[str, str], needed: str
) -> None:
    path = write(tmp_path, text)

    message = config_error(path, env=env)

    assert str(path) in message
    assert needed in message


def test_auth_with_its_token_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\ningest_auth = true\n")

    s = load_settings(path, env={"SENTINEL_INGEST_TOKEN": TOKEN})

    assert s.server.ingest_auth is True


# --- paths ------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc" / "sentinel"
    path = write(
        folder,
        '[store]\nurl = "sqlite:///data/sentinel.db"\n\n[changes]\nworkdir = "repos"\n',
        name="sentinel.toml",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory plays no part

    s = load_settings(path, env={})

    assert s.store_url == "sqlite:///" + str(folder.resolve() / "data" / "sentinel.db")
    assert s.resolve(s.changes.workdir) == folder.resolve() / "repos"
    assert effective_config(s)["store"]["url"] == s.store_url


@pytest.mark.parametrize(
    "url", ["sqlite:////var/lib/sentinel/sentinel.db", "sqlite:///:memory:", DB_URL]
)
def test_absolute_and_non_file_store_urls_are_kept(tmp_path: Path, url: str) -> None:
    # An in-memory database cannot be shared with the span writer process.
    writer = "false" if url == "sqlite:///:memory:" else "true"
    path = write(tmp_path, f'[store]\nurl = "{url}"\n[ingest]\nwriter_process = {writer}\n')

    assert load_settings(path, env={}).store_url == url


def test_an_in_memory_store_with_the_writer_process_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[store]\nurl = "sqlite:///:memory:"\n')

    with pytest.raises(ConfigError, match="writer_process"):
        load_settings(path, env={})


def test_relative_sqlite_url_from_the_environment_resolves_too(tmp_path: Path) -> None:
    path = write(tmp_path, "")

    s = load_settings(path, env={"SENTINEL_STORE_URL": "sqlite:///state/s.db"})

    assert s.store_url == "sqlite:///" + str(tmp_path.resolve() / "state" / "s.db")


# --- printing the effective configuration -----------------------------------------------

FULL = """\
[server]
host = "0.0.0.0"
port = 14318
ingest_auth = true

[store]
url = "sqlite:////srv/sentinel/sentinel.db"

[prometheus]
url = "http://prometheus.internal:9090"
timeout_seconds = 2.5

[changes]
workdir = 'C:\\sentinel "repos" — été'

[[changes.repos]]
name = "agent-config"
url = "/srv/git/agent-config"

[[changes.repos.paths]]
glob = "prompts/support/**"
component = "prompt:support-agent"
affects = ["agent:support-agent", "tool:faq_search"]
kind = "prompt"

[[changes.repos.paths]]
glob = "config/*.yaml"
component = "config:support-agent"

[[changes.repos]]
name = "deploys"
url = "https://git.example.com/acme/deploys.git"
branch = "production"

[logging]
level = "debug"
format = "console"
"""


def test_effective_config_printed_as_toml_parses_back(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    s = load_settings(path, env={"SENTINEL_INGEST_TOKEN": TOKEN, "SENTINEL_API_TOKEN": TOKEN})
    shown = effective_config(s)

    parsed = tomllib.loads(to_toml(shown))

    assert parsed == shown
    assert parsed["changes"]["workdir"] == 'C:\\sentinel "repos" — été'
    assert [r["name"] for r in parsed["changes"]["repos"]] == ["agent-config", "deploys"]
    assert parsed["changes"]["repos"][0]["paths"][0]["affects"] == [
        "agent:support-agent",
        "tool:faq_search",
    ]
    assert parsed["server"]["port"] == 14318
    assert TOKEN not in to_toml(shown)


@settings(max_examples=60, database=None)
@given(host=st.text(max_size=20), workdir=st.text(max_size=20), path=st.text(max_size=20))
def test_any_string_setting_prints_as_toml_that_parses_back(
    host: str, workdir: str, path: str
) -> None:
    s = Settings.model_validate(
        {
            "server": {"host": host},
            "changes": {"workdir": workdir},
            "prometheus": {"url": "http://prom:9090/" + path},
        }
    )
    shown = effective_config(s)

    assert tomllib.loads(to_toml(shown)) == shown


# --- sentinel check-config --------------------------------------------------------------

runner = CliRunner()

SHORT = """\
[server]
port = 14318
ingest_auth = true

[store]
url = "sqlite:////srv/sentinel/sentinel.db"
"""


def test_check_config_prints_the_effective_config_as_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, SHORT)
    monkeypatch.chdir(tmp_path)  # a short path: long lines are another test's matter

    result = runner.invoke(
        app,
        ["check-config", "config.toml"],
        env={"SENTINEL_INGEST_TOKEN": TOKEN, "SENTINEL_STORE_URL": DB_URL},
    )

    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    printed = tomllib.loads(result.stdout)
    assert printed["server"]["port"] == 14318
    assert printed["server"]["ingest_auth"] is True
    assert printed["store"]["url"] == (
        f"postgresql+psycopg://sentinel:{MASK}@db.internal:5432/sentinel"
    )
    assert printed["secrets (from environment)"]["SENTINEL_INGEST_TOKEN"] == MASK
    assert TOKEN not in result.output
    assert DB_PASSWORD not in result.output


def test_check_config_output_is_toml_even_for_long_paths(tmp_path: Path) -> None:
    # A config under a long folder name: relative store paths resolve to long URLs.
    folder = tmp_path / ("a-rather-long-folder-name-for-the-sentinel-config-" * 2)
    path = write(folder, '[store]\nurl = "sqlite:///state/sentinel.db"\n')

    result = runner.invoke(app, ["check-config", str(path)])

    assert result.exit_code == 0, result.stderr
    printed = tomllib.loads(result.stdout)
    assert printed["store"]["url"] == "sqlite:///" + str(folder.resolve() / "state" / "sentinel.db")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server]\nport = 70000\n", "server.port"),
        ("[server]\nbogus = 1\n", "'server.bogus'"),
        ("[server\n", "not valid TOML"),
        ('[secrets]\napi_token = "x"\n', "not allowed in the file"),
    ],
    ids=["range", "unknown-key", "toml", "secrets"],
)
def test_check_config_rejects_an_invalid_file_with_exit_code_2(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)

    result = runner.invoke(app, ["check-config", str(path)])

    assert result.exit_code == 2
    assert expected in result.stderr
    assert "error:" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_check_config_rejects_a_missing_file_and_unknown_variables(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["check-config", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2
    assert "not found" in missing.stderr

    path = write(tmp_path, "")
    unknown = runner.invoke(app, ["check-config", str(path)], env={"SENTINEL_FOO": "1"})
    assert unknown.exit_code == 2
    assert "'SENTINEL_FOO'" in unknown.stderr


def test_check_config_as_a_real_command(tmp_path: Path) -> None:
    write(tmp_path, SHORT)
    write(tmp_path, "[server]\nport = -1\n", name="bad.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    env.pop("COLUMNS", None)
    env["SENTINEL_INGEST_TOKEN"] = TOKEN

    ok = subprocess.run(
        [str(SENTINEL_BIN), "check-config", "config.toml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    bad = subprocess.run(
        [str(SENTINEL_BIN), "check-config", "bad.toml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert ok.returncode == 0, ok.stderr
    assert tomllib.loads(ok.stdout)["server"]["port"] == 14318
    assert TOKEN not in ok.stdout + ok.stderr
    assert bad.returncode == 2
    assert "server.port" in bad.stderr
    assert bad.stdout == ""
    assert "Traceback" not in bad.stderr


# --- property: the port range -----------------------------------------------------------


@settings(max_examples=50, database=None)
@given(
    port=st.one_of(
        st.integers(min_value=-(2**63), max_value=-1),
        st.integers(min_value=65_536, max_value=2**63 - 1),
    )
)
def test_any_port_outside_the_tcp_range_is_rejected(
    tmp_path_factory: pytest.TempPathFactory, port: int
) -> None:
    path = write(tmp_path_factory.mktemp("port"), f"# port\n[server]\nport = {port}\n")

    message = config_error(path)

    assert f"{path}:3: server.port:" in message
    assert f"(got {port})" in message


def test_ports_at_the_edges_of_the_range_are_accepted(tmp_path: Path) -> None:
    for port in (0, 65_535):
        path = write(tmp_path, f"[server]\nport = {port}\n")
        assert load_settings(path, env={}).server.port == port


def test_an_sli_declared_twice_in_promql_is_refused_naming_both_entries(tmp_path: Path) -> None:
    decl = (
        '[[prometheus.slis]]\ncomponent = "service:api"\nsli = "latency_p95"\n'
        'query = "histogram_quantile(0.95, rate(x_bucket[1m]))"\n'
    )
    path = write(tmp_path, "[prometheus]\n" + decl + decl)
    message = config_error(path)
    assert "entries 0 and 1" in message and "'latency_p95'" in message


def test_an_slo_on_a_latency_needs_a_threshold(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[slo]]\nname = "fast"\ncomponent = "agent:a"\nsli = "latency_p95"\nobjective = 0.99\n',
    )
    assert "threshold is required" in config_error(path)


def test_a_slack_channel_needs_the_tokens_of_its_mode(tmp_path: Path) -> None:
    socket = write(tmp_path, '[slack]\nchannel = "C1"\n')
    with pytest.raises(ConfigError, match="SENTINEL_SLACK_APP_TOKEN, SENTINEL_SLACK_BOT_TOKEN"):
        load_settings(socket, env={})
    ok = load_settings(
        socket, env={"SENTINEL_SLACK_BOT_TOKEN": "xoxb-1", "SENTINEL_SLACK_APP_TOKEN": "xapp-1"}
    )
    assert ok.slack.channel == "C1"
    http = write(tmp_path, '[slack]\nchannel = "C1"\nmode = "http"\n')
    with pytest.raises(ConfigError, match="SENTINEL_SLACK_SIGNING_SECRET"):
        load_settings(http, env={"SENTINEL_SLACK_BOT_TOKEN": "xoxb-1"})
    assert load_settings(http, env={}, serving=False).slack.mode.value == "http"


def test_an_llm_needs_its_key_or_a_local_server(tmp_path: Path) -> None:
    hosted = write(tmp_path, '[llm]\nmodel = "openai:gpt-4o"\n')
    with pytest.raises(
        ConfigError, match=r"config.toml: llm.model = 'openai:gpt-4o' needs .*SENTINEL_LLM_API_KEY"
    ):
        load_settings(hosted, env={})
    keyed = load_settings(hosted, env={"SENTINEL_LLM_API_KEY": "sk-1"})
    assert keyed.secrets.llm_api_key is not None
    assert "sk-1" not in str(effective_config(keyed))
    local = write(
        tmp_path, '[llm]\nmodel = "openai:llama3.1"\nbase_url = "http://127.0.0.1:11434/v1"\n'
    )
    assert load_settings(local, env={}).llm.enabled
    bad = write(tmp_path, '[llm]\nmodel = "gpt-4o"\n')
    with pytest.raises(ConfigError, match=r"llm.model.*use \"none\" or \"openai:<model>\""):
        load_settings(bad, env={})


def test_approvers_must_name_where_they_approve_from(tmp_path: Path) -> None:
    bad = write(tmp_path, '[approvals]\nusers = ["U123"]\n')
    with pytest.raises(ConfigError, match="slack:<user id>"):
        load_settings(bad, env={})
    good = write(tmp_path, '[approvals]\nusers = ["slack:U123", "cli:dana"]\n')
    assert load_settings(good, env={}).approvals.users == ("slack:U123", "cli:dana")
