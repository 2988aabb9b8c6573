"""Span emission for the simulator: the OTLP/JSON spans of head-sampled traces, shaped like
the GenAI semantic conventions and the usual OTel instrumentations (scope names per
language; HTTP server and client, database, vector search, model, tool and agent spans).

What lives here: ``Trace`` (one sampled trace: its id and its spans by host and scope) and
``SpanEmitter`` (span ids, timestamps and one builder per kind of span the walk makes).
The random draws here (span ids, response, tool-call and conversation ids, URL path ids)
come from the walk's own ``random.Random`` at the point where the walk calls in, so their
order is part of the simulator's output: do not reorder them.

What must not live here: the request walk, its latencies, errors, fault effects and metric
tallies (``sim/engine.py``); grouping the spans by resource and decoding them into a case
(``sim/output.py``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from sentinel.sim.faults import ErrorSpec
from sentinel.sim.topology import (
    AgentNode,
    Call,
    IndexNode,
    Language,
    ModelNode,
    ServiceNode,
    System,
    ToolNode,
    name_of,
)
from sentinel.telemetry import GenAIOperation

_SERVER_SCOPES = {
    Language.PYTHON: "opentelemetry.instrumentation.fastapi",
    Language.GO: "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp",
    Language.JAVA: "io.opentelemetry.spring-webmvc-6.0",
    Language.RUST: "tracing-opentelemetry",
    Language.NODE: "@opentelemetry/instrumentation-http",
}
_CLIENT_SCOPES = {
    Language.PYTHON: "opentelemetry.instrumentation.httpx",
    Language.GO: "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp",
    Language.JAVA: "io.opentelemetry.java-http-client",
    Language.RUST: "tracing-opentelemetry",
    Language.NODE: "@opentelemetry/instrumentation-undici",
}
_DB_SCOPE = "opentelemetry.instrumentation.dbapi"
_VECTOR_SCOPE = "opentelemetry.instrumentation.vectordb"
_PROVIDER_HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}


@dataclass(slots=True)
class Trace:
    trace_id: str
    spans: list[tuple[str, str, dict[str, Any]]]  # (host, scope, OTLP/JSON span)


def _kv(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    if isinstance(value, list):
        return {
            "key": key,
            "value": {"arrayValue": {"values": [{"stringValue": str(v)} for v in value]}},
        }
    return {"key": key, "value": {"stringValue": str(value)}}


class SpanEmitter:
    """Builds the spans of ``sys`` into the sampled traces; times are seconds from
    ``start_ns``."""

    def __init__(self, sys: System, rng: random.Random, start_ns: int) -> None:
        self.sys = sys
        self.rng = rng
        self.start_ns = start_ns

    def new_id(self) -> str:
        return f"{self.rng.getrandbits(64) | 1:016x}"

    def _ns(self, t: float) -> str:
        return str(self.start_ns + int(t * 1e9))

    def _emit(
        self,
        trace: Trace,
        host: str,
        scope: str,
        span_id: str,
        parent: str | None,
        name: str,
        kind: int,
        t: float,
        duration: float,
        attrs: dict[str, Any],
        error: ErrorSpec | None,
        events: list[dict[str, Any]] | None = None,
        message: str = "",
    ) -> None:
        if error is not None:
            attrs["error.type"] = error.type
            if error.http is not None:
                attrs["http.response.status_code"] = error.http
        span: dict[str, Any] = {
            "traceId": trace.trace_id,
            "spanId": span_id,
            "name": name,
            "kind": kind,
            "startTimeUnixNano": self._ns(t),
            "endTimeUnixNano": self._ns(t + duration),
            "attributes": [_kv(k, v) for k, v in attrs.items()],
            "status": {"code": 2, **({"message": message} if message else {})}
            if error is not None
            else {},
        }
        if parent is not None:
            span["parentSpanId"] = parent
        if events:
            span["events"] = events
        trace.spans.append((host, scope, span))

    # --- services ----------------------------------------------------------------------

    def client(
        self,
        trace: Trace,
        node: ServiceNode,
        host: str,
        cid: str,
        parent: str | None,
        t: float,
        dur: float,
        err: ErrorSpec | None,
    ) -> None:
        """The client span of a call from ``host`` to ``node``: a database query or HTTP."""
        name = name_of(node.id)
        lang = self._language(host)
        if node.db_system is not None:
            op = "GET" if node.db_system == "redis" else "SELECT"
            attrs: dict[str, Any] = {
                "db.system": node.db_system,
                "db.system.name": node.db_system,
                "db.operation.name": op,
                "db.collection.name": node.table,
                "db.query.summary": f"{op} {node.table}",
                "server.address": name,
                "peer.service": name,
            }
            self._emit(
                trace, host, _DB_SCOPE, cid, parent, f"{op} {node.table}", 3, t, dur, attrs, err
            )
        else:
            method, _, path = node.route.partition(" ")
            attrs = {
                "http.request.method": method,
                "server.address": name,
                "server.port": 443 if node.external else 8080,
                "url.full": f"{'https' if node.external else 'http'}://{name}{path}",
            }
            if node.external:
                attrs["peer.service"] = name
            if err is None:
                attrs["http.response.status_code"] = 200
            self._emit(
                trace,
                host,
                _CLIENT_SCOPES[lang],
                cid,
                parent,
                method,
                3,
                t,
                dur,
                attrs,
                err
                if err is not None and err.http
                else (ErrorSpec("500", 500) if err is not None else None),
            )

    def _language(self, host: str) -> Language:
        node = self.sys.nodes.get(f"service:{host}")
        return node.language if isinstance(node, ServiceNode) else Language.PYTHON

    def server(
        self,
        trace: Trace,
        node: ServiceNode,
        calls: tuple[Call, ...],
        sid: str,
        parent: str | None,
        t: float,
        dur: float,
        err: ErrorSpec | None,
        *,
        client: bool,
    ) -> None:
        """The server span of ``node`` serving a request (``calls``: what it called)."""
        rng = self.rng
        method, _, route = node.route.partition(" ")
        path = route.replace("{id}", str(rng.randint(1000, 99999)))
        if calls and isinstance(self.sys.node(calls[0].callee), AgentNode):
            path = path.replace("{agent}", name_of(calls[0].callee))
        attrs: dict[str, Any] = {
            "http.request.method": method,
            "http.route": route,
            "url.path": path,
            "url.scheme": "http" if client else "https",
            "server.address": name_of(node.id),
            "server.port": 8080,
        }
        if err is None:
            attrs["http.response.status_code"] = 200
        http_err = err if err is None or err.http else ErrorSpec("500", 500)
        self._emit(
            trace,
            name_of(node.id),
            _SERVER_SCOPES[node.language],
            sid,
            parent,
            node.route,
            2,
            t,
            dur,
            attrs,
            http_err,
        )

    # --- GenAI -------------------------------------------------------------------------

    def model(
        self,
        trace: Trace,
        node: ModelNode,
        version: str,
        host: str,
        parent: str,
        t: float,
        dur: float,
        err: ErrorSpec | None,
        tokens_in: int,
        tokens_out: int,
        finish: str,
    ) -> None:
        """The client span of a model call; ``version`` is the snapshot that answered."""
        rng = self.rng
        model = name_of(node.id)
        op = node.operation.value
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": op,
            "gen_ai.provider.name": node.provider,
            "gen_ai.request.model": model,
            "server.address": _PROVIDER_HOSTS.get(node.provider, node.provider),
            "server.port": 443,
        }
        if err is None:
            attrs["gen_ai.response.model"] = f"{model}-{version}"
            attrs["gen_ai.usage.input_tokens"] = tokens_in
            if node.operation is GenAIOperation.CHAT:
                attrs["gen_ai.usage.output_tokens"] = tokens_out
                attrs["gen_ai.response.finish_reasons"] = [finish]
                attrs["gen_ai.response.id"] = f"resp_{rng.getrandbits(48):012x}"
        self._emit(
            trace,
            host,
            f"opentelemetry.instrumentation.{node.provider}",
            self.new_id(),
            parent,
            f"{op} {model}",
            3,
            t,
            dur,
            attrs,
            err,
            message=f"{err.http} from {node.provider}" if err and err.http else "",
        )

    def rate_limited(
        self, trace: Trace, node: ToolNode, host: str, sid: str, cur: float, d: float
    ) -> None:
        """One HTTP 429 from the API in front of the tool's backend."""
        callee = name_of(node.calls[0].callee)
        self._emit(
            trace,
            host,
            _CLIENT_SCOPES[Language.PYTHON],
            self.new_id(),
            sid,
            "GET",
            3,
            cur,
            d,
            {
                "http.request.method": "GET",
                "server.address": callee,
                "peer.service": callee,
            },
            ErrorSpec("429", 429),
        )

    def tool(
        self,
        trace: Trace,
        node: ToolNode,
        agent_id: str,
        host: str,
        sid: str,
        parent: str,
        t: float,
        dur: float,
        err: ErrorSpec | None,
    ) -> None:
        """The span of a tool call, in the scope of the framework of agent ``agent_id``."""
        rng = self.rng
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name_of(node.id),
            "gen_ai.tool.type": node.tool_type,
            "gen_ai.tool.call.id": f"call_{rng.getrandbits(40):010x}",
        }
        agent = self.sys.nodes.get(agent_id)
        scope = agent.framework if isinstance(agent, AgentNode) else "sentinel.sim"
        self._emit(
            trace,
            host,
            scope,
            sid,
            parent,
            f"execute_tool {name_of(node.id)}",
            1,
            t,
            dur,
            attrs,
            err,
        )

    def index(
        self,
        trace: Trace,
        node: IndexNode,
        rows: int,
        host: str,
        sid: str,
        parent: str,
        t: float,
        dur: float,
        err: ErrorSpec | None,
    ) -> None:
        """The span of a vector search that returned ``rows``."""
        collection = name_of(node.id)
        attrs: dict[str, Any] = {
            "db.system": node.db_system,
            "db.system.name": node.db_system,
            "db.operation.name": "search",
            "db.collection.name": collection,
            "server.address": name_of(node.store),
            "server.port": 6333,
        }
        if err is None:
            attrs["db.response.returned_rows"] = rows
        self._emit(
            trace, host, _VECTOR_SCOPE, sid, parent, f"search {collection}", 3, t, dur, attrs, err
        )

    def evaluation(self, name: str, score: float, t: float) -> dict[str, Any]:
        """The span event of one evaluator score at ``t``."""
        return {
            "name": "gen_ai.evaluation.result",
            "timeUnixNano": self._ns(t),
            "attributes": [
                _kv("gen_ai.evaluation.name", name),
                _kv("gen_ai.evaluation.score.value", score),
                _kv(
                    "gen_ai.evaluation.score.label",
                    "pass" if score >= 0.7 else "fail",
                ),
            ],
        }

    def agent(
        self,
        trace: Trace,
        node: AgentNode,
        sid: str,
        parent: str | None,
        t: float,
        dur: float,
        failure: ErrorSpec | None,
        events: list[dict[str, Any]],
    ) -> None:
        """The span of one agent run, with its evaluation events."""
        rng = self.rng
        host = node.host
        main = node.models[0].callee
        model = self.sys.node(main)
        assert isinstance(model, ModelNode)
        name = name_of(node.id)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": name,
            "gen_ai.agent.id": f"agt_{name.replace('-', '')[:10]}",
            "gen_ai.request.model": name_of(main),
            "gen_ai.provider.name": model.provider,
            "gen_ai.conversation.id": f"conv_{rng.getrandbits(40):010x}",
        }
        self._emit(
            trace,
            host,
            node.framework,
            sid,
            parent,
            f"invoke_agent {name}",
            1,
            t,
            dur,
            attrs,
            failure,
            events,
        )
