"""HTTP routes: the OTLP/HTTP trace receiver, the change webhook, the audit log and
remediation actions (``/api/audit``, ``/api/actions``), health and /metrics.

The receiver follows the OTLP/HTTP specification: 200 with an ExportTraceServiceResponse
(``partial_success`` for rejected spans); 400 with a google.rpc.Status for a malformed body
(nothing stored); 401 with ``WWW-Authenticate`` without one of the bearer tokens
``server.auth.traces`` names; 413 over the size limit; 415
for other content types or encodings; 429 (queue full) and 503 (store failing, shutting
down) with Retry-After. A 200 is only sent once the spans are committed.

What must not live here: decoding (``adapters/otlp.py``), queueing (``ingest.py``),
storage, or anything a CLI command also needs.
"""

from __future__ import annotations

import asyncio
import hmac
import zlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Request, Security
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import TypeAdapter, ValidationError

from sentinel.adapters.db import SqlStore
from sentinel.adapters.otlp import (
    GRPC_INVALID_ARGUMENT,
    GRPC_RESOURCE_EXHAUSTED,
    GRPC_UNAUTHENTICATED,
    GRPC_UNAVAILABLE,
    decode_json,
    decode_protobuf,
    export_response,
    status_body,
)
from sentinel.adapters.slack import Click, SlackSignatureError, click_from_form, verify_request
from sentinel.clock import Clock
from sentinel.errors import OTLPDecodeError, StoreError
from sentinel.incidents import AuditEntry
from sentinel.ingest import IngestQueue, Refusal
from sentinel.observability import SelfMetrics
from sentinel.redact import redactor_for
from sentinel.remediation import ActionRecord
from sentinel.settings import RouteGroup, Settings
from sentinel.telemetry import ChangeEvent

log = structlog.get_logger(__name__)

PROTOBUF = "application/x-protobuf"
# A Slack interaction payload is a few kilobytes; anything far larger is not Slack.
SLACK_MAX_BODY_BYTES = 1024 * 1024
JSON = "application/json"

_changes_adapter = TypeAdapter(ChangeEvent | list[ChangeEvent])
# The body is read raw (to answer 422 in our own format), so its schema is declared here.
_CHANGES_SCHEMA = _changes_adapter.json_schema(ref_template="#/components/schemas/{model}")
_CHANGES_DEFS = _CHANGES_SCHEMA.pop("$defs", {})
_CHANGES_BODY = {"required": True, "content": {JSON: {"schema": _CHANGES_SCHEMA}}}
_OTLP_BODY = {
    "required": True,
    "content": {
        PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
        JSON: {"schema": {"type": "object", "description": "OTLP/JSON ExportTraceServiceRequest"}},
    },
}
_BEARER = HTTPBearer(auto_error=False, description="the tokens server.auth names")
_UNAUTHORIZED = {"description": "missing or wrong bearer token (WWW-Authenticate says which)"}
_STORE_DOWN = {"description": "the store is unavailable; retry after Retry-After seconds"}


@dataclass
class AppDeps:
    settings: Settings
    store: SqlStore
    queue: IngestQueue
    metrics: SelfMetrics
    # Extra readiness conditions (name -> ok?) added by the daemon.
    ready_checks: dict[str, Callable[[], bool]]
    shutting_down: Callable[[], bool]
    # This replica's name and role in the cluster (``sentinel.cluster``), for /healthz.
    cluster: Callable[[], dict[str, str]] | None = None
    # Slack's interactivity over HTTP (slack.mode = "http"): the signing secret, the
    # clock its timestamps are judged by, and what a verified click does (run as a
    # background task: Slack wants its answer within 3 s).
    slack_signing_secret: str | None = None
    slack_clock: Clock | None = None
    on_slack_click: Callable[[Click], Coroutine[Any, Any, None]] | None = None


class _TooLarge(Exception):
    pass


class _Unauthorized(Exception):
    """A route guard's refusal, answered 401 like the API's other errors."""


def route_tokens(s: Settings) -> dict[RouteGroup, tuple[bytes, ...]]:
    """The bearer tokens each route group accepts; () leaves the group open. A group
    whose named tokens are all unset is open: settings refuse that on a non-loopback
    host, so it only happens on 127.0.0.1."""
    out: dict[RouteGroup, tuple[bytes, ...]] = {}
    for group in RouteGroup:
        values = (s.secrets.token(n) for n in s.server.auth.tokens(group))
        out[group] = tuple(v.get_secret_value().encode() for v in values if v is not None)
    return out


def auth_failure(authorization: str | None, tokens: tuple[bytes, ...]) -> str | None:
    """Why a request with this ``Authorization`` header is refused, None when it may pass.
    Every accepted token is compared, in constant time, whatever the first gave."""
    if not tokens:
        return None
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return "missing bearer token"
    # Starlette decodes headers as latin-1, so this gives back the bytes that were sent.
    given = value.strip().encode("latin-1")
    ok = False
    for token in tokens:
        ok |= hmac.compare_digest(given, token)
    return None if ok else "wrong bearer token"


def www_authenticate(failure: str) -> dict[str, str]:
    """The 401's challenge (RFC 6750): ``invalid_token`` when a token was sent."""
    error = ', error="invalid_token"' if failure.startswith("wrong") else ""
    return {"WWW-Authenticate": f'Bearer realm="sentinel"{error}'}


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(f"Content-Length {declared} exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _gunzip(body: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise OTLPDecodeError(f"Content-Encoding gzip but the body is not gzip: {e}") from e
    if len(out) > limit or d.unconsumed_tail:
        raise _TooLarge(f"decompressed body exceeds the limit of {limit} bytes")
    if not d.eof:
        raise OTLPDecodeError("gzip body is truncated")
    return out


def create_app(deps: AppDeps) -> FastAPI:
    app = FastAPI(title="sentinel", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    s = deps.settings
    m = deps.metrics
    retry_after = str(s.ingest.retry_after_seconds)
    tokens = route_tokens(s)
    redactor = redactor_for(s.redaction)
    log.info(
        "http auth",
        protected=sorted(g.value for g, t in tokens.items() if t),
        open=sorted(g.value for g, t in tokens.items() if not t),
        redaction=redactor is not None,
    )

    def guard(group: RouteGroup) -> list[Any]:
        """The dependency that refuses a request to ``group`` without one of its tokens
        (none for an open group, so the OpenAPI spec says which routes need a token)."""
        accepted = tokens[group]
        if not accepted:
            return []

        def check(request: Request, _: Annotated[Any, Security(_BEARER)] = None) -> None:
            failure = auth_failure(request.headers.get("authorization"), accepted)
            if failure is not None:
                raise _Unauthorized(failure)

        return [Depends(check)]

    def answers(group: RouteGroup, **more: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
        """The documented non-200 answers of a route of ``group``: 401 when it is
        protected, and ``more`` (status code as ``_NNN``)."""
        out: dict[int | str, dict[str, Any]] = {int(k[1:]): v for k, v in more.items()}
        if tokens[group]:
            out[401] = _UNAUTHORIZED
        return out

    @app.exception_handler(_Unauthorized)
    async def unauthorized(_request: Request, e: _Unauthorized) -> Response:
        return JSONResponse({"error": str(e)}, 401, headers=www_authenticate(str(e)))

    @app.post(
        "/v1/traces",
        openapi_extra={"requestBody": _OTLP_BODY},
        responses={
            400: {"description": "malformed request (google.rpc.Status)"},
            401: {"description": "missing or wrong bearer token"},
            413: {"description": "body over ingest.max_body_bytes"},
            415: {"description": "unsupported Content-Type or Content-Encoding"},
            429: {"description": "queue full; retry after Retry-After seconds"},
            503: {"description": "store unavailable or shutting down; retry"},
        },
    )
    async def otlp_traces(request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        as_json = ctype == JSON

        def status(
            code: int, grpc: int, message: str, headers: dict[str, str] | None = None
        ) -> Response:
            m.requests.labels(code=str(code)).inc()
            return Response(
                status_body(grpc, message, as_json=as_json),
                status_code=code,
                media_type=JSON if as_json else PROTOBUF,
                headers=headers,
            )

        failure = auth_failure(request.headers.get("authorization"), tokens[RouteGroup.TRACES])
        if failure is not None:
            return status(401, GRPC_UNAUTHENTICATED, failure, www_authenticate(failure))
        if ctype not in (PROTOBUF, JSON):
            return status(
                415,
                GRPC_INVALID_ARGUMENT,
                f"unsupported Content-Type {ctype!r}: use {PROTOBUF} or {JSON}",
            )
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", ""):
            return status(
                415, GRPC_INVALID_ARGUMENT, f"unsupported Content-Encoding {encoding!r}: use gzip"
            )
        limit = s.ingest.max_body_bytes
        try:
            body = await _read_body(request, limit)
            if encoding == "gzip":
                body = _gunzip(body, limit)
            batch = decode_json(body, redactor) if as_json else decode_protobuf(body, redactor)
        except _TooLarge as e:
            return status(413, GRPC_INVALID_ARGUMENT, str(e))
        except OTLPDecodeError as e:
            # Requests refused whole are counted by sentinel_ingest_requests{code}.
            log.warning(
                "malformed OTLP request",
                error=str(e),
                client=request.client.host if request.client else None,
                content_type=ctype,
            )
            return status(400, GRPC_INVALID_ARGUMENT, str(e))

        if batch.rejected:
            m.spans_rejected.labels(reason="invalid").inc(batch.rejected)
        if batch.spans:
            outcome = deps.queue.offer(batch.spans)
            if isinstance(outcome, Refusal):
                m.spans_rejected.labels(reason=outcome.value).inc(len(batch.spans))
                if outcome is Refusal.FULL:
                    return status(
                        429,
                        GRPC_RESOURCE_EXHAUSTED,
                        f"ingest queue full ({deps.queue.depth} spans waiting); retry later",
                        {"Retry-After": retry_after},
                    )
                why = "shutting down" if outcome is Refusal.CLOSED else "store unavailable"
                return status(503, GRPC_UNAVAILABLE, why, {"Retry-After": retry_after})
            m.spans_received.inc(len(batch.spans))
            try:
                await asyncio.wait_for(asyncio.shield(outcome), s.ingest.ack_timeout_seconds)
            except TimeoutError:
                return status(
                    503,
                    GRPC_UNAVAILABLE,
                    "spans queued but not yet stored (store slow or unavailable); retry",
                    {"Retry-After": retry_after},
                )
        m.requests.labels(code="200").inc()
        return Response(
            export_response(batch, as_json=as_json),
            status_code=200,
            media_type=JSON if as_json else PROTOBUF,
        )

    @app.post(
        "/api/changes",
        dependencies=guard(RouteGroup.CHANGES),
        openapi_extra={"requestBody": _CHANGES_BODY},
        responses=answers(
            RouteGroup.CHANGES, _422={"description": "not a change event"}, _503=_STORE_DOWN
        ),
    )
    async def post_changes(request: Request) -> Response:
        """Change events (deploys, prompt and config changes), one or a list."""
        body = await request.body()
        try:
            parsed = _changes_adapter.validate_json(body)
        except ValidationError as e:
            errors = [
                {"where": ".".join(str(p) for p in err["loc"]), "error": err["msg"]}
                for err in e.errors(include_url=False)
            ]
            return JSONResponse(
                {"error": "invalid change event", "details": errors}, status_code=422
            )
        changes = parsed if isinstance(parsed, list) else [parsed]
        try:
            new = await asyncio.to_thread(deps.store.add_changes, changes)
        except StoreError as e:
            m.store_errors.labels(op="write_changes").inc()
            log.error("storing change events failed", error=str(e))
            return JSONResponse(
                {"error": "store unavailable"},
                status_code=503,
                headers={"Retry-After": retry_after},
            )
        m.changes_received.labels(source="webhook").inc(new)
        return JSONResponse({"received": len(changes), "stored": new})

    async def _read_store(what: str, fn: Callable[[], Any]) -> Response:
        try:
            return JSONResponse(await asyncio.to_thread(fn))
        except StoreError as e:
            m.store_errors.labels(op=what).inc()
            log.error("reading the store failed", what=what, error=str(e))
            return JSONResponse(
                {"error": "store unavailable"},
                status_code=503,
                headers={"Retry-After": retry_after},
            )

    @app.get(
        "/api/audit",
        dependencies=guard(RouteGroup.READ),
        response_model=list[AuditEntry],
        responses=answers(RouteGroup.READ, _503=_STORE_DOWN),
    )
    async def get_audit(incident: str | None = None) -> Response:
        """The audit log (every decision: who, what, why), of one incident when given."""
        return await _read_store(
            "read_audit",
            lambda: [e.model_dump(mode="json") for e in deps.store.audit(incident)],
        )

    @app.get(
        "/api/actions",
        dependencies=guard(RouteGroup.READ),
        response_model=list[ActionRecord],
        responses=answers(RouteGroup.READ, _503=_STORE_DOWN),
    )
    async def get_actions(incident: str | None = None) -> Response:
        """Remediation actions with their state, steps and results."""
        return await _read_store(
            "read_actions",
            lambda: [r.model_dump(mode="json") for r in deps.store.actions(incident)],
        )

    background: set[asyncio.Task[None]] = set()

    def _click_done(task: asyncio.Task[None]) -> None:
        background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            e = task.exception()
            log.error("slack click failed", error=f"{type(e).__name__}: {e}")

    @app.post(
        "/slack/interactions",
        responses={
            401: {"description": "missing, wrong or old Slack signature"},
            404: {"description": "Slack interactivity over HTTP is off"},
            413: {"description": "body over 1 MiB"},
        },
    )
    async def slack_interactions(request: Request) -> Response:
        """Slack's interactivity request URL: signature and timestamp checked on the raw
        body, answered at once, the click handled in the background."""
        secret, on_click = deps.slack_signing_secret, deps.on_slack_click
        if secret is None or on_click is None or deps.slack_clock is None:
            return JSONResponse({"error": "Slack interactivity over HTTP is off"}, 404)
        try:
            body = await _read_body(request, SLACK_MAX_BODY_BYTES)
        except _TooLarge:
            return JSONResponse({"error": "request body too large"}, status_code=413)
        try:
            verify_request(body, request.headers, secret, deps.slack_clock.now().timestamp())
        except SlackSignatureError as e:
            m.slack_requests_refused.inc()
            log.warning("slack request refused", error=str(e))
            return JSONResponse({"error": str(e)}, status_code=401)
        click = click_from_form(body)
        if click is not None:
            task = asyncio.create_task(on_click(click))
            background.add(task)
            task.add_done_callback(_click_done)
        return Response(status_code=200)

    @app.get(
        "/healthz", dependencies=guard(RouteGroup.HEALTH), responses=answers(RouteGroup.HEALTH)
    )
    async def healthz() -> dict[str, str]:
        return {"status": "ok", **(deps.cluster() if deps.cluster is not None else {})}

    @app.get(
        "/readyz",
        dependencies=guard(RouteGroup.HEALTH),
        responses=answers(RouteGroup.HEALTH, _503={"description": "not ready (checks say why)"}),
    )
    async def readyz() -> Response:
        checks: dict[str, Any] = {
            "accepting": not deps.shutting_down(),
            "store": deps.queue.healthy,
        }
        for name, check in deps.ready_checks.items():
            checks[name] = check()
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "checks": checks},
            status_code=200 if ok else 503,
        )

    @app.get(
        "/metrics",
        dependencies=guard(RouteGroup.METRICS),
        response_class=PlainTextResponse,
        responses=answers(RouteGroup.METRICS),
    )
    async def metrics() -> Response:
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        # The change event's models, referenced by the raw-read body of /api/changes.
        if app.openapi_schema is None:
            spec = FastAPI.openapi(app)  # cached in app.openapi_schema
            spec.setdefault("components", {}).setdefault("schemas", {}).update(_CHANGES_DEFS)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
