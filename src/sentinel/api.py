"""HTTP routes: the OTLP/HTTP trace receiver, the change webhook, the audit log and
remediation actions (``/api/audit``, ``/api/actions``), health and /metrics.

The receiver follows the OTLP/HTTP specification: 200 with an ExportTraceServiceResponse
(``partial_success`` for rejected spans); 400 with a google.rpc.Status for a malformed body
(nothing stored); 401 without the configured bearer token; 413 over the size limit; 415
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
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
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
from sentinel.ingest import IngestQueue, Refusal
from sentinel.observability import SelfMetrics
from sentinel.settings import Settings
from sentinel.telemetry import ChangeEvent

log = structlog.get_logger(__name__)

PROTOBUF = "application/x-protobuf"
# A Slack interaction payload is a few kilobytes; anything far larger is not Slack.
SLACK_MAX_BODY_BYTES = 1024 * 1024
JSON = "application/json"

_changes_adapter = TypeAdapter(ChangeEvent | list[ChangeEvent])


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


def _bearer_ok(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)


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
    ingest_token = s.secrets.ingest_token.get_secret_value() if s.secrets.ingest_token else None
    api_token = s.secrets.api_token.get_secret_value() if s.secrets.api_token else None

    @app.post("/v1/traces")
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

        if s.server.ingest_auth and (ingest_token is None or not _bearer_ok(request, ingest_token)):
            return status(401, GRPC_UNAUTHENTICATED, "missing or wrong bearer token")
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
            batch = decode_json(body) if as_json else decode_protobuf(body)
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

    def api_auth(request: Request) -> Response | None:
        if s.server.api_auth and (api_token is None or not _bearer_ok(request, api_token)):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        return None

    @app.post("/api/changes")
    async def post_changes(request: Request) -> Response:
        denied = api_auth(request)
        if denied is not None:
            return denied
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

    @app.get("/api/audit")
    async def get_audit(request: Request, incident: str | None = None) -> Response:
        """The audit log (every decision: who, what, why), of one incident when given."""
        denied = api_auth(request)
        if denied is not None:
            return denied
        return await _read_store(
            "read_audit",
            lambda: [e.model_dump(mode="json") for e in deps.store.audit(incident)],
        )

    @app.get("/api/actions")
    async def get_actions(request: Request, incident: str | None = None) -> Response:
        """Remediation actions with their state, steps and results."""
        denied = api_auth(request)
        if denied is not None:
            return denied
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

    @app.post("/slack/interactions")
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

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", **(deps.cluster() if deps.cluster is not None else {})}

    @app.get("/readyz")
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

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    return app
