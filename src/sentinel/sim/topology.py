"""The simulated systems: call graphs of agents, models, tools, indexes and services.

What lives here: the node records (one frozen record per component kind, with its base
latency, error rate and calls), the four ``Topology`` values and the ``System`` each one
names, and graph questions about them (callers, topology edges).

What must not live here: faults (``sim/faults.py``), random draws or telemetry output
(``sim/engine.py``, ``sim/output.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from sentinel.telemetry import GenAIOperation, TopologyEdge


class Topology(StrEnum):
    """The systems the simulator knows."""

    SUPPORT = "support"
    MULTI_AGENT = "multi_agent"
    RAG = "rag"
    MICROSERVICES = "microservices"


class Language(StrEnum):
    PYTHON = "python"
    GO = "go"
    JAVA = "java"
    RUST = "rust"
    NODE = "nodejs"


@dataclass(frozen=True, slots=True)
class Call:
    """An edge of the call graph. ``p`` is the probability of the call per invocation
    (services, tools, an agent's prelude) or its weight when one callee is chosen (an
    agent's tools, a routing service)."""

    callee: str
    p: float = 1.0


@dataclass(frozen=True, slots=True)
class ModelNode:
    id: str
    provider: str
    operation: GenAIOperation  # CHAT or EMBEDDINGS
    ttft: float  # median seconds before the first output token
    per_token: float  # seconds per output token
    usd_in: float  # per 1k input tokens
    usd_out: float  # per 1k output tokens
    version: str  # the dated snapshot in gen_ai.response.model
    error_rate: float = 0.004


@dataclass(frozen=True, slots=True)
class ToolNode:
    id: str
    latency: float  # median seconds of the tool's own work
    calls: tuple[Call, ...] = ()
    tool_type: str = "function"
    error_rate: float = 0.004


@dataclass(frozen=True, slots=True)
class IndexNode:
    id: str
    db_system: str  # a vector store (telemetry.VECTOR_DB_SYSTEMS)
    store: str  # the service id of the store
    latency: float  # median client-side overhead, seconds
    rows: int = 10
    error_rate: float = 0.002


@dataclass(frozen=True, slots=True)
class ServiceNode:
    id: str
    latency: float  # median seconds of the service's own work
    version: str
    route: str = "GET /"
    calls: tuple[Call, ...] = ()
    choice: bool = False  # call exactly one callee, chosen by weight
    language: Language = Language.GO
    db_system: str | None = None  # an uninstrumented database: only client spans show it
    table: str = ""
    external: bool = False  # not ours: no server spans, no metrics, no container
    error_rate: float = 0.003
    memory_mb: int = 400


@dataclass(frozen=True, slots=True)
class AgentNode:
    id: str
    host: str  # service.name of the runtime that runs the agent
    models: tuple[Call, ...]  # chat models by weight
    evals: tuple[tuple[str, float], ...]  # evaluator name, base score
    tools: tuple[Call, ...] = ()  # callees (tools, sub-agents) chosen per step by weight
    prelude: tuple[Call, ...] = ()  # calls before the first model call (retrieval)
    steps: float = 2.0  # mean tool steps per run
    framework: str = "opentelemetry.instrumentation.openai_agents"
    context_limit: int = 32_000
    error_rate: float = 0.003


Node = ModelNode | ToolNode | IndexNode | ServiceNode | AgentNode


@dataclass(frozen=True, slots=True)
class System:
    """One simulated system: its nodes by component id, its entry service, its root
    request rate and the head-sampling ratio of its traces (0: metrics only)."""

    topology: Topology
    title: str
    nodes: Mapping[str, Node]
    entry: str
    rate: float  # root requests per second
    sample_ratio: float
    namespace: str

    def node(self, component: str) -> Node:
        return self.nodes[component]

    def of_type(self, kind: type[Node]) -> tuple[str, ...]:
        return tuple(k for k, n in self.nodes.items() if isinstance(n, kind))

    def calls_of(self, component: str) -> tuple[Call, ...]:
        n = self.nodes[component]
        if isinstance(n, AgentNode):
            return n.prelude + n.models + n.tools
        if isinstance(n, IndexNode):
            return (Call(n.store),)
        if isinstance(n, ToolNode | ServiceNode):
            return n.calls
        return ()

    def callers(self, component: str) -> tuple[str, ...]:
        """The components that call ``component``, in node order."""
        return tuple(k for k in self.nodes if any(c.callee == component for c in self.calls_of(k)))

    def calls_per_second(self) -> dict[str, float]:
        """The mean calls each component receives per second, from the root rate and
        the call probabilities (retries and failed runs' missing steps ignored): how much
        evidence a fault at that component leaves per minute."""
        rates: dict[str, float] = {k: 0.0 for k in self.nodes}

        def visit(component: str, rate: float, depth: int = 0) -> None:
            if depth > 8:  # call graphs are acyclic; this only guards a bad topology
                return
            rates[component] += rate
            n = self.nodes[component]
            if isinstance(n, AgentNode):
                share_calls(n.prelude, rate, depth, choice=False)
                # ``steps`` tool steps, each followed by a model call, plus the final one.
                share_calls(n.models, rate * (n.steps + 1), depth, choice=True)
                if n.tools:
                    share_calls(n.tools, rate * n.steps, depth, choice=True)
                else:  # re-queries: the first two calls of the prelude, once per step
                    share_calls(n.prelude[:2], rate * n.steps, depth, choice=False)
            elif isinstance(n, ServiceNode):
                share_calls(n.calls, rate, depth, choice=n.choice)
            elif isinstance(n, ToolNode):
                share_calls(n.calls, rate, depth, choice=False)
            elif isinstance(n, IndexNode):
                visit(n.store, rate, depth + 1)

        def share_calls(calls: tuple[Call, ...], rate: float, depth: int, *, choice: bool) -> None:
            total = sum(c.p for c in calls) if choice else 1.0
            for c in calls:
                visit(c.callee, rate * c.p / total, depth + 1)

        visit(self.entry, self.rate)
        return rates

    def hosts(self) -> tuple[str, ...]:
        """Service names that run as containers of ours: owned services and agent runtimes."""
        names: list[str] = []
        for n in self.nodes.values():
            if isinstance(n, ServiceNode) and not n.external:
                names.append(_name(n.id))
            elif isinstance(n, AgentNode):
                names.append(n.host)
        return tuple(dict.fromkeys(names))

    def edges(self) -> tuple[TopologyEdge, ...]:
        """Call edges a service catalog would know: everything below the agents."""
        out: list[TopologyEdge] = []
        for k, n in self.nodes.items():
            if isinstance(n, AgentNode | ModelNode):
                continue
            for c in self.calls_of(k):
                callee = self.nodes[c.callee]
                if isinstance(callee, ServiceNode) and not callee.external:
                    out.append(TopologyEdge(caller=k, callee=c.callee))
        return tuple(sorted(set(out), key=lambda e: (e.caller, e.callee)))


def _name(component: str) -> str:
    return component.split(":", 1)[1]


def name_of(component: str) -> str:
    """The name part of a component id."""
    return _name(component)


def _nodes(*nodes: Node) -> dict[str, Node]:
    return {n.id: n for n in nodes}


_GPT4O = ModelNode(
    "model:gpt-4o", "openai", GenAIOperation.CHAT, 0.45, 0.011, 0.0025, 0.01, "2025-08-06"
)
_GPT4O_MINI = ModelNode(
    "model:gpt-4o-mini", "openai", GenAIOperation.CHAT, 0.3, 0.006, 0.00015, 0.0006, "2025-07-18"
)
_EMBED_SMALL = ModelNode(
    "model:text-embedding-3-small",
    "openai",
    GenAIOperation.EMBEDDINGS,
    0.06,
    0.0,
    0.00002,
    0.0,
    "2025-07-01",
)
_SONNET = ModelNode(
    "model:claude-3-7-sonnet",
    "anthropic",
    GenAIOperation.CHAT,
    0.7,
    0.013,
    0.003,
    0.015,
    "2025-02-19",
)
_FAITH = ("faithfulness", 0.88)
_GOAL = ("goal_completion", 0.84)
_POLICY = ("policy_adherence", 0.93)
_RELEVANCE = ("answer_relevance", 0.86)


def _support() -> System:
    gw = "service:support-gateway"
    return System(
        topology=Topology.SUPPORT,
        title="Customer-support agent system: 2 agents, 4 tools, 3 models, 8 services, 2 indexes",
        nodes=_nodes(
            ServiceNode(
                gw,
                0.004,
                "1.12.0",
                route="POST /v1/agents/{agent}/runs",
                calls=(Call("agent:support-agent", 0.65), Call("agent:billing-agent", 0.35)),
                choice=True,
                language=Language.PYTHON,
                memory_mb=600,
            ),
            AgentNode(
                "agent:support-agent",
                "support-gateway",
                models=(Call(_GPT4O.id, 0.75), Call(_GPT4O_MINI.id, 0.25)),
                tools=(
                    Call("tool:crm_lookup", 3),
                    Call("tool:kb_search", 3),
                    Call("tool:order_status", 2),
                ),
                evals=(_FAITH, _GOAL, _POLICY),
                steps=2.0,
            ),
            AgentNode(
                "agent:billing-agent",
                "support-gateway",
                models=(Call(_GPT4O.id, 1.0),),
                tools=(
                    Call("tool:refund_api", 3),
                    Call("tool:crm_lookup", 2),
                    Call("tool:kb_search", 1),
                ),
                evals=(_GOAL, _POLICY),
                steps=1.8,
            ),
            _GPT4O,
            _GPT4O_MINI,
            _EMBED_SMALL,
            ToolNode("tool:crm_lookup", 0.006, (Call("service:crm-api"),)),
            ToolNode("tool:order_status", 0.006, (Call("service:orders-api"),)),
            ToolNode("tool:refund_api", 0.008, (Call("service:payments"),)),
            ToolNode(
                "tool:kb_search",
                0.004,
                (
                    Call(_EMBED_SMALL.id),
                    Call("index:help-center", 0.7),
                    Call("index:policy-docs", 0.4),
                ),
                tool_type="datastore",
            ),
            IndexNode("index:help-center", "qdrant", "service:vector-db", 0.003),
            IndexNode("index:policy-docs", "qdrant", "service:vector-db", 0.003, rows=5),
            ServiceNode(
                "service:crm-api",
                0.035,
                "2.26.5",
                route="GET /v1/customers/{id}",
                calls=(Call("service:crm-db"),),
            ),
            ServiceNode(
                "service:orders-api",
                0.04,
                "1.19.12",
                route="GET /orders/{id}",
                calls=(Call("service:orders-db"),),
            ),
            ServiceNode(
                "service:payments",
                0.06,
                "3.18.1",
                route="POST /v2/refunds",
                calls=(Call("service:ledger"),),
                memory_mb=800,
            ),
            ServiceNode(
                "service:ledger",
                0.02,
                "1.7.0",
                route="POST /entries",
                language=Language.JAVA,
                memory_mb=900,
            ),
            ServiceNode(
                "service:vector-db",
                0.025,
                "1.12.4",
                route="POST /collections/{name}/points/search",
                language=Language.RUST,
                memory_mb=1200,
            ),
            ServiceNode(
                "service:crm-db",
                0.012,
                "16.4",
                db_system="postgresql",
                table="customers",
                memory_mb=700,
            ),
            ServiceNode(
                "service:orders-db",
                0.01,
                "8.4.2",
                db_system="mysql",
                table="orders",
                memory_mb=500,
            ),
        ),
        entry=gw,
        rate=0.8,
        sample_ratio=0.1,
        namespace="support",
    )


def _multi_agent() -> System:
    rt = "service:research-runtime"
    return System(
        topology=Topology.MULTI_AGENT,
        title="Multi-agent research system: 4 agents, 5 tools, 4 models, 6 services, 1 index",
        nodes=_nodes(
            ServiceNode(
                rt,
                0.004,
                "0.9.3",
                route="POST /v1/agents/{agent}/runs",
                calls=(Call("agent:research-lead"),),
                language=Language.PYTHON,
                memory_mb=700,
            ),
            AgentNode(
                "agent:research-lead",
                "research-runtime",
                models=(Call(_SONNET.id),),
                tools=(
                    Call("agent:web-researcher", 3),
                    Call("agent:paper-analyst", 2),
                    Call("agent:report-writer", 1.5),
                ),
                evals=(_FAITH, _GOAL),
                steps=2.2,
                framework="opentelemetry.instrumentation.autogen",
            ),
            AgentNode(
                "agent:web-researcher",
                "web-researcher-svc",
                models=(Call(_GPT4O_MINI.id),),
                tools=(Call("tool:web_search", 3), Call("tool:fetch_page", 2)),
                evals=(_RELEVANCE,),
                steps=1.6,
                framework="opentelemetry.instrumentation.autogen",
            ),
            AgentNode(
                "agent:paper-analyst",
                "paper-analyst-svc",
                models=(Call(_GPT4O.id),),
                tools=(Call("tool:paper_search", 3), Call("tool:citation_lookup", 2)),
                evals=(_FAITH,),
                steps=1.5,
                framework="opentelemetry.instrumentation.autogen",
            ),
            AgentNode(
                "agent:report-writer",
                "report-writer-svc",
                models=(Call(_SONNET.id),),
                tools=(Call("tool:style_check", 1),),
                evals=(_GOAL, _POLICY),
                steps=0.8,
                framework="opentelemetry.instrumentation.autogen",
            ),
            _SONNET,
            _GPT4O,
            _GPT4O_MINI,
            _EMBED_SMALL,
            ToolNode("tool:web_search", 0.005, (Call("service:search-api"),)),
            ToolNode("tool:fetch_page", 0.005, (Call("service:scraper"),)),
            ToolNode(
                "tool:paper_search",
                0.004,
                (Call(_EMBED_SMALL.id), Call("index:papers")),
                tool_type="datastore",
            ),
            ToolNode("tool:citation_lookup", 0.005, (Call("service:citations-api"),)),
            ToolNode("tool:style_check", 0.07),
            IndexNode("index:papers", "qdrant", "service:vector-db", 0.003),
            ServiceNode("service:search-api", 0.35, "v1", route="GET /search", external=True),
            ServiceNode(
                "service:scraper",
                0.6,
                "4.2.0",
                route="POST /render",
                language=Language.NODE,
                memory_mb=900,
            ),
            ServiceNode(
                "service:citations-api",
                0.03,
                "1.4.2",
                route="GET /citations",
                calls=(Call("service:citations-db"),),
                language=Language.PYTHON,
            ),
            ServiceNode(
                "service:citations-db",
                0.01,
                "16.4",
                db_system="postgresql",
                table="citations",
                memory_mb=600,
            ),
            ServiceNode(
                "service:vector-db",
                0.025,
                "1.12.4",
                route="POST /collections/{name}/points/search",
                language=Language.RUST,
                memory_mb=1200,
            ),
        ),
        entry=rt,
        rate=0.22,
        sample_ratio=0.15,
        namespace="research",
    )


def _rag() -> System:
    gw = "service:docs-gateway"
    embed = ModelNode(
        "model:text-embedding-3-large",
        "openai",
        GenAIOperation.EMBEDDINGS,
        0.08,
        0.0,
        0.00013,
        0.0,
        "2025-07-01",
    )
    haiku = ModelNode(
        "model:claude-3-5-haiku",
        "anthropic",
        GenAIOperation.CHAT,
        0.35,
        0.007,
        0.0008,
        0.004,
        "2024-10-22",
    )
    return System(
        topology=Topology.RAG,
        title="RAG assistant: 1 agent, 2 models, 2 indexes, a reranker, 3 services",
        nodes=_nodes(
            ServiceNode(
                gw,
                0.004,
                "2.3.1",
                route="POST /v1/answers",
                calls=(Call("agent:docs-assistant"),),
                language=Language.PYTHON,
                memory_mb=600,
            ),
            AgentNode(
                "agent:docs-assistant",
                "docs-gateway",
                models=(Call(haiku.id),),
                prelude=(
                    Call(embed.id),
                    Call("index:product-docs", 1.0),
                    Call("index:faq", 0.4),
                    Call("service:reranker"),
                ),
                evals=(_FAITH, _RELEVANCE),
                steps=0.0,
                framework="opentelemetry.instrumentation.langchain",
            ),
            embed,
            haiku,
            IndexNode("index:product-docs", "weaviate", "service:vector-db", 0.003, rows=20),
            IndexNode("index:faq", "weaviate", "service:vector-db", 0.003, rows=8),
            ServiceNode(
                "service:reranker",
                0.09,
                "0.4.0",
                route="POST /rerank",
                language=Language.PYTHON,
                memory_mb=2000,
            ),
            ServiceNode(
                "service:vector-db",
                0.03,
                "1.27.0",
                route="POST /v1/graphql",
                language=Language.GO,
                memory_mb=1500,
            ),
        ),
        entry=gw,
        rate=1.0,
        sample_ratio=0.07,
        namespace="docs",
    )


def _microservices() -> System:
    fe = "service:frontend"
    return System(
        topology=Topology.MICROSERVICES,
        title="Microservice system (6 services, entry frontend), metrics only: cpu, memory, "
        "latency p50/p95, request and error counters per service at 15 s",
        nodes=_nodes(
            ServiceNode(
                fe,
                0.01,
                "1.8.0",
                route="GET /",
                calls=(
                    Call("service:cartservice", 0.6),
                    Call("service:checkoutservice", 0.25),
                    Call("service:currencyservice", 0.8),
                ),
            ),
            ServiceNode(
                "service:cartservice",
                0.008,
                "1.8.0",
                calls=(Call("service:redis-cart"),),
                language=Language.JAVA,
            ),
            ServiceNode(
                "service:checkoutservice",
                0.02,
                "1.8.0",
                calls=(
                    Call("service:cartservice"),
                    Call("service:currencyservice"),
                    Call("service:orders-db"),
                ),
            ),
            ServiceNode("service:currencyservice", 0.004, "1.8.0", language=Language.NODE),
            ServiceNode("service:redis-cart", 0.002, "7.2", db_system="redis", table="carts"),
            ServiceNode("service:orders-db", 0.008, "16.4", db_system="postgresql", table="orders"),
        ),
        entry=fe,
        rate=3.0,
        sample_ratio=0.0,
        namespace="prod",
    )


def system(topology: Topology) -> System:
    """The system a topology names."""
    match topology:
        case Topology.SUPPORT:
            return _support()
        case Topology.MULTI_AGENT:
            return _multi_agent()
        case Topology.RAG:
            return _rag()
        case Topology.MICROSERVICES:
            return _microservices()
