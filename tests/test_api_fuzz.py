"""The HTTP API fuzzed with schemathesis from its own OpenAPI spec (/api/openapi.json),
against a real daemon on loopback, with the bearer tokens on and off: whatever it is
sent, no route answers 5xx (a 503 with Retry-After, the store's "try later", would be
legitimate, but the store is up here, so it counts as a failure too), and every answer
is one the spec documents: its status code, content type and body schema (so the spec
that clients and the fuzzer read stays true).

Cases come from both of schemathesis's generation modes: positive (valid by the spec:
reaches the handlers' logic) and negative (violates it: reaches the validation).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.harness import make_settings, running_daemon

TOKEN = "fuzz-token"
EXAMPLES = 150
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(params=["auth-on", "auth-off"])
def daemon_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    s = make_settings(tmp_path, ingest={"writer_process": False})
    if request.param == "auth-on":
        secrets = s.secrets.model_copy(
            update={"ingest_token": SecretStr(TOKEN), "api_token": SecretStr(TOKEN)}
        )
        auth = {"traces": ("ingest",), "changes": ("api",), "read": ("api",), "metrics": ("api",)}
        server = s.server.model_copy(update={"auth": s.server.auth.model_copy(update=auth)})
        s = s.model_copy(update={"secrets": secrets, "server": server})
    with running_daemon(s) as d:
        yield d.url


def test_no_input_gets_a_5xx_or_an_answer_the_spec_does_not_document(daemon_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{daemon_url}/api/openapi.json", timeout=30)
    operations = {op.ok().label for op in schema.get_all_operations()}
    # The spec describes every route, so the fuzzer reaches them all.
    assert {"POST /v1/traces", "POST /api/changes", "GET /api/audit", "GET /metrics"} <= operations
    cases = st.one_of(
        schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE)
    )
    server_errors: list[str] = []
    off_spec: list[str] = []
    seen: set[str] = set()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, with_token=st.booleans())
    def fuzz(case: Case, with_token: bool) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"} if with_token else None
        response = case.call(base_url=daemon_url, headers=headers, timeout=30)
        seen.add(case.operation.label)
        answer = f"{case.operation.label} -> {response.status_code}: {response.text[:200]!r}"
        if response.status_code >= 500:
            server_errors.append(answer)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as e:
            off_spec.append(f"{answer}: {'; '.join(f.title for f in e.exceptions)}")

    fuzz()
    assert server_errors == []
    assert off_spec == []
    assert len(seen) >= 5  # bounded, but broad: most routes were called
