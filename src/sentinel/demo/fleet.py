"""The demo's live fleet: two pydantic-ai agents driven by ``FunctionModel``, instrumented
with OpenTelemetry, calling two local tool HTTP services, and reading their prompt,
models and rate limits from a git config repository, exactly as a real fleet under
GitOps would. It runs in its own process (``python -m sentinel.demo.fleet``) so that its
latencies never wait for the daemon's GIL.

* ``support-agent`` (model from ``agents.yaml``, prompt ``prompts/support.md``) answers
  order questions with the ``order_status`` tool (orders-api) and, for refunds, the
  ``kb_search`` tool (kb-api). ``research-agent`` (gpt-4o-mini) uses ``kb_search`` only.
* An online evaluator scores each answer's faithfulness (a ``gen_ai.evaluation.result``
  event on the agent's span): an answer promising a refund the policy does not give
  scores low.
* ``limits.yaml``'s ``rate_limits.<tool>.requests_per_minute`` caps the calls to a tool;
  calls past the cap are answered from a cache (no error).
* A control server (``GET /status``, ``POST``/``DELETE /faults/<kind>``) lets the demo
  inject the faults that live inside the fleet's world: orders-api's quota dropping, the
  gpt-4o provider failing, kb-api slowing down. A prompt regression is a git commit.

Time: the fleet lives in real time and the daemon judges on a ``ScaledClock``. Rates and
latencies here are in clock seconds (``World.sleep`` divides by the speed); how spans get
clock timestamps is ``demo.timing``'s business. A machine too slow for the speed runs the
fleet's world slower than the clock: its ``Pace`` (measured on the load's arrivals) also
slows orders-api's quota and the throttles, so that a fault means the same on any machine
(a quota under the demand stays under it, by the same share).

What must not live here: the demo's orchestration and display (``demo.run``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import httpx
import yaml
from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
from pydantic_ai import Agent
from pydantic_ai.capabilities import Instrumentation
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.usage import RequestUsage

from sentinel.demo.timing import TimedExporter, TraceClocks, VirtualTimes, Warp

__all__ = [
    "FLEET_SERVICE",
    "FleetFault",
    "config_files",
    "main",
]

FLEET_SERVICE = "agent-fleet"
ORDERS_API = "orders-api"
KB_API = "kb-api"

# Clock-time figures of the fleet's world.
SUPPORT_PER_MINUTE = 50.0  # user questions to support-agent
RESEARCH_PER_MINUTE = 20.0
MODEL_LATENCY = {"gpt-4o": 0.8, "gpt-4.1": 0.9, "gpt-4o-mini": 0.45}  # median seconds
SERVICE_LATENCY = {ORDERS_API: 0.12, KB_API: 0.2}
ORDERS_QUOTA_PER_MINUTE = 1000.0  # orders-api's quota, normally far above the demand
ORDERS_QUOTA_FAULT = 34.0  # ... and during the rate-limit fault
PROVIDER_ERROR_SHARE = 0.4
KB_SLOWDOWN = 6.0
MAX_IN_FLIGHT = 400
PACE_WINDOW_SECONDS = 60.0  # clock seconds the fleet's pace is averaged over

GOOD_PROMPT = (
    "You are the support agent of Acme.\n"
    "Answer from the order status and the refund policy only: a refund is given for\n"
    "orders not shipped yet, never for delivered ones.\n"
)
BAD_PROMPT = (
    "You are the support agent of Acme.\n"
    "Be generous and warm: promise every customer a full refund, whatever the order.\n"
)
GENEROUS = "full refund"


def config_files() -> dict[str, str]:
    """The config repository's files at its first commit."""
    return {
        "prompts/support.md": GOOD_PROMPT,
        "agents.yaml": (
            "# Which model each agent uses; model-failover moves agents to fallbacks.\n"
            "agents:\n"
            "  support-agent:\n"
            "    model: gpt-4o\n"
            "  research-agent:\n"
            "    model: gpt-4o-mini\n"
            "fallbacks:\n"
            "  gpt-4o: gpt-4.1\n"
            "  gpt-4o-mini: gpt-4.1-mini\n"
        ),
        "limits.yaml": (
            "# Client-side caps on tool calls (calls past a cap are answered from cache).\n"
            "rate_limits:\n"
            "  tool:order_status:\n"
            "    requests_per_minute: 600\n"
            "  tool:kb_search:\n"
            "    requests_per_minute: 600\n"
        ),
    }


class FleetFault(StrEnum):
    """The faults that live inside the fleet's world (a prompt regression is a commit)."""

    TOOL_RATE_LIMIT = "tool_rate_limit"
    MODEL_PROVIDER_ERRORS = "model_provider_errors"
    SERVICE_LATENCY = "service_latency"


# --- rates --------------------------------------------------------------------------


class Bucket:
    """A token bucket in clock time: ``per_minute`` tokens a clock minute, ``burst`` at
    most. ``loop_time`` is real seconds (the event loop's clock)."""

    def __init__(self, per_minute: float, speed: float, now: float, burst: float = 5.0) -> None:
        self.per_minute = per_minute
        self.speed = speed
        self.burst = burst
        self.tokens = burst
        self.last = now

    def take(self, now: float, pace: float = 1.0) -> bool:
        """Take a token if there is one; ``pace``: fleet minutes per clock minute."""
        elapsed = (now - self.last) * self.speed * pace / 60.0
        self.tokens = min(self.burst, self.tokens + elapsed * self.per_minute)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


# --- the config repository ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetConfig:
    prompt: str
    models: dict[str, str]  # agent -> model
    rate_limits: dict[str, float]  # tool component -> requests per minute
    commit: str


def parse_config(files: dict[str, str], commit: str) -> FleetConfig:
    """The fleet's config from the repository's files. Raises ``ValueError`` naming the
    file when one is malformed."""
    agents = yaml.safe_load(files["agents.yaml"]) or {}
    limits = yaml.safe_load(files["limits.yaml"]) or {}
    try:
        models = {str(a): str(v["model"]) for a, v in agents["agents"].items()}
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"agents.yaml at {commit[:7]}: no agents.<name>.model ({e!r})") from e
    try:
        rates = {str(t): float(v["requests_per_minute"]) for t, v in limits["rate_limits"].items()}
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ValueError(
            f"limits.yaml at {commit[:7]}: no rate_limits.<tool>.requests_per_minute ({e!r})"
        ) from e
    return FleetConfig(files["prompts/support.md"], models, rates, commit)


async def _git(repo: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "git",
        "--git-dir",
        repo,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise ValueError(f"git {' '.join(args)} in {repo}: {err.decode().strip()}")
    return out.decode()


async def read_config(repo: str, branch: str = "main") -> FleetConfig:
    commit = (await _git(repo, "rev-parse", f"refs/heads/{branch}")).strip()
    files = {p: await _git(repo, "show", f"{commit}:{p}") for p in config_files()}
    return parse_config(files, commit)


class Pace:
    """How fast the fleet's world runs against the clock: 1 when the machine keeps up
    with the speed, below 1 when it does not (at 30x one core runs about three quarters
    of the nominal load). Measured on the load's arrivals: each waits a drawn number of
    clock seconds, and on a busy event loop the wait ends late. Without it, the fleet's
    demand fell under orders-api's fixed quota on a slow machine, and the rate-limit
    fault refused nothing (the demo on CI waited an hour of clock time for an incident).
    """

    def __init__(self, window: float = PACE_WINDOW_SECONDS) -> None:
        self.window = window
        self.asked = 0.0  # clock seconds the arrivals asked to wait, decayed
        self.took = 0.0  # ... and took

    def record(self, asked: float, took: float) -> None:
        decay = math.exp(-max(took, 0.0) / self.window)
        self.asked = self.asked * decay + asked
        self.took = self.took * decay + took

    @property
    def value(self) -> float:
        return 1.0 if self.took <= 0.0 else min(1.0, self.asked / self.took)


# --- the fleet's world ------------------------------------------------------------------


class RateLimitError(Exception):
    """A tool's API answered 429."""


class ToolError(Exception):
    """A tool's API answered 5xx or could not be reached."""


@dataclass
class Counts:
    runs: int = 0
    failed: int = 0
    cached: int = 0
    rate_limited: int = 0


@dataclass
class World:
    """What the fleet's agents, tools and services share in the fleet process."""

    speed: float
    repo: str
    config: FleetConfig
    rng: random.Random
    faults: set[FleetFault] = field(default_factory=set)
    counts: Counts = field(default_factory=Counts)
    ports: dict[str, int] = field(default_factory=dict)
    client: httpx.AsyncClient | None = None
    throttles: dict[str, Bucket] = field(default_factory=dict)
    quota: Bucket | None = None
    config_error: str = ""
    clocks: TraceClocks = field(default_factory=TraceClocks)
    pace: Pace = field(default_factory=Pace)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, clock_seconds: float) -> None:
        """Wait ``clock_seconds``: in real time divided by the speed, and on the current
        trace's clock exactly (``demo.timing``)."""
        await asyncio.sleep(clock_seconds / self.speed)
        trace_id = trace.get_current_span().get_span_context().trace_id
        if trace_id:
            self.clocks.advance(trace_id, clock_seconds)

    def latency(self, median: float, sigma: float = 0.25) -> float:
        return median * math.exp(self.rng.gauss(0.0, sigma))

    def throttle(self, tool: str) -> Bucket:
        rate = self.config.rate_limits.get(tool, 600.0)
        b = self.throttles.get(tool)
        if b is None or b.per_minute != rate:
            b = self.throttles[tool] = Bucket(rate, self.speed, self.now(), burst=3.0)
        return b


async def call_service(world: World, service: str, path: str) -> str:
    """GET a tool service with the trace context (so its span is the tool span's child);
    429 raises ``RateLimitError``, 5xx ``ToolError``. The HTTP status goes on the tool's
    span, as HTTP-instrumented tools do."""
    assert world.client is not None
    headers: dict[str, str] = {}
    propagate.inject(headers)
    span = trace.get_current_span()
    try:
        url = f"http://127.0.0.1:{world.ports[service]}{path}"
        r = await world.client.get(url, headers=headers)
    except httpx.HTTPError as e:
        span.set_attribute("error.type", "ToolError")
        raise ToolError(f"{service}{path}: {e}") from e
    span.set_attribute("http.response.status_code", r.status_code)
    span.set_attribute("server.address", service)
    if r.status_code == 429:
        world.counts.rate_limited += 1
        span.set_attribute("error.type", "RateLimitError")
        raise RateLimitError(f"{service}{path}: 429 Too Many Requests")
    if r.status_code >= 500:
        span.set_attribute("error.type", "ToolError")
        raise ToolError(f"{service}{path}: HTTP {r.status_code}")
    return r.text


# --- the tool services ------------------------------------------------------------------


def _service_app(world: World, service: str, tracer: trace.Tracer) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        ctx = propagate.extract(dict(request.headers))
        route = "/orders/{id}" if service == ORDERS_API else "/search"
        with tracer.start_as_current_span(
            f"GET {route}",
            context=ctx,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "GET", "http.route": route},
        ) as span:
            latency = world.latency(SERVICE_LATENCY[service])
            if service == KB_API and FleetFault.SERVICE_LATENCY in world.faults:
                latency *= KB_SLOWDOWN
            if service == ORDERS_API:
                assert world.quota is not None
                limited = FleetFault.TOOL_RATE_LIMIT in world.faults
                quota = ORDERS_QUOTA_FAULT if limited else ORDERS_QUOTA_PER_MINUTE
                if world.quota.per_minute != quota:
                    world.quota = Bucket(quota, world.speed, world.now())
                if not world.quota.take(world.now(), world.pace.value):
                    await world.sleep(0.01)
                    span.set_attribute("http.response.status_code", 429)
                    return web.Response(status=429, text="quota exceeded")
            await world.sleep(latency)
            span.set_attribute("http.response.status_code", 200)
            if service == ORDERS_API:
                status = world.rng.choice(["processing", "shipped", "delivered"])
                return web.Response(text=f"order {request.match_info['id']}: {status}")
            return web.Response(
                text="Refund policy: refunds for orders not shipped yet; none once delivered."
            )

    app = web.Application()
    app.router.add_get("/orders/{id}", handle)
    app.router.add_get("/search", handle)
    return app


# --- the agents ------------------------------------------------------------------------


def _question(messages: list[ModelMessage]) -> str:
    for m in messages:
        if isinstance(m, ModelRequest):
            for p in m.parts:
                if isinstance(p, UserPromptPart) and isinstance(p.content, str):
                    return p.content
    return ""


def _returned(messages: list[ModelMessage]) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in messages:
        if isinstance(m, ModelRequest):
            for p in m.parts:
                if isinstance(p, ToolReturnPart):
                    out[p.tool_name] = str(p.content)
    return out


def make_model(world: World, name: str) -> FunctionModel:
    """A model of the fleet: it answers in its provider's latency, fails when its provider
    does, and decides tool calls and answers from the conversation and its instructions."""

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await world.sleep(world.latency(MODEL_LATENCY.get(name, 0.8)))
        if (
            name == "gpt-4o"
            and FleetFault.MODEL_PROVIDER_ERRORS in world.faults
            and world.rng.random() < PROVIDER_ERROR_SHARE
        ):
            raise ModelHTTPError(503, name, body={"error": "upstream overloaded"})
        question = _question(messages)
        done = _returned(messages)
        tools = {t.name for t in info.function_tools}
        prompt = info.instructions or ""
        context = 350 + len(prompt) // 4 + sum(len(v) // 4 for v in done.values())
        if "order_status" in tools and "order_status" not in done:
            order = question.rsplit(" ", 1)[-1].strip("?")
            call = ToolCallPart("order_status", {"order_id": order})
        elif (
            "kb_search" in tools
            and "kb_search" not in done
            and ("refund" in question or "order_status" not in tools)
        ):
            call = ToolCallPart("kb_search", {"query": question[:60]})
        else:
            answer = " ".join(done.values()) or "Here is what I found."
            out = 60
            if GENEROUS in prompt:
                answer += " Good news: you will get a full refund right away, whatever happened!"
                out = 150
            return ModelResponse(
                parts=[TextPart(answer)],
                usage=RequestUsage(
                    input_tokens=context, output_tokens=round(out * world.latency(1.0, 0.2))
                ),
                model_name=name,
            )
        return ModelResponse(
            parts=[call],
            usage=RequestUsage(input_tokens=context, output_tokens=20),
            model_name=name,
        )

    return FunctionModel(respond, model_name=name)


def make_agents(world: World, instrument: InstrumentationSettings) -> dict[str, Agent[None, str]]:
    caps = [Instrumentation(settings=instrument)]
    support: Agent[None, str] = Agent(name="support-agent", capabilities=caps)
    research: Agent[None, str] = Agent(name="research-agent", capabilities=caps)

    @support.instructions
    def support_prompt() -> str:
        return world.config.prompt

    @research.instructions
    def research_prompt() -> str:
        return "You are the research agent: answer from the knowledge base only."

    async def order_status(order_id: str) -> str:
        """The status of an order."""
        if not world.throttle("tool:order_status").take(world.now(), world.pace.value):
            world.counts.cached += 1
            trace.get_current_span().set_attribute("sentinel.demo.cached", True)
            return f"order {order_id}: shipped (cached status)"
        return await call_service(world, ORDERS_API, f"/orders/{order_id}")

    async def kb_search(query: str) -> str:
        """Search the knowledge base."""
        if not world.throttle("tool:kb_search").take(world.now(), world.pace.value):
            world.counts.cached += 1
            return "Refund policy (cached): refunds for orders not shipped yet."
        return await call_service(world, KB_API, "/search")

    support.tool_plain(order_status)
    support.tool_plain(kb_search)
    research.tool_plain(kb_search)

    def evaluate(answer: str) -> str:
        # The online evaluator: faithfulness to the tools' answers, on the agent's span.
        unfaithful = GENEROUS in answer
        score = world.rng.gauss(0.55, 0.08) if unfaithful else world.rng.gauss(0.9, 0.03)
        trace.get_current_span().add_event(
            "gen_ai.evaluation.result",
            {
                "gen_ai.evaluation.name": "faithfulness",
                "gen_ai.evaluation.score.value": max(0.0, min(1.0, score)),
            },
        )
        return answer

    support.output_validator(evaluate)
    research.output_validator(evaluate)
    return {"support-agent": support, "research-agent": research}


# --- running ---------------------------------------------------------------------------


def _provider(service: str, endpoint: str, times: VirtualTimes) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(times)  # first: it times a span before it is queued
    exporter = TimedExporter(OTLPSpanExporter(endpoint=endpoint), times)
    # Exported every 0.1 real s (3 clock s at 30x), inside the daemon's ingest lag.
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=100, max_queue_size=65536)
    )
    return provider


class Fleet:
    def __init__(self, world: World, endpoint: str, warp: Warp) -> None:
        self.world = world
        times = VirtualTimes(world.clocks, warp)
        self.providers = {
            s: _provider(s, endpoint, times) for s in (FLEET_SERVICE, ORDERS_API, KB_API)
        }
        # Without prompts and answers in the spans: less to encode and send at 30x.
        instrument = InstrumentationSettings(
            tracer_provider=self.providers[FLEET_SERVICE], include_content=False
        )
        self.agents = make_agents(world, instrument)
        self.models: dict[str, FunctionModel] = {}
        self.in_flight: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()

    def model(self, name: str) -> FunctionModel:
        if name not in self.models:
            self.models[name] = make_model(self.world, name)
        return self.models[name]

    async def ask(self, agent: str, question: str) -> None:
        w = self.world
        w.counts.runs += 1
        try:
            await self.agents[agent].run(
                question, model=self.model(w.config.models.get(agent, "gpt-4o"))
            )
        except (RateLimitError, ToolError, ModelHTTPError):
            w.counts.failed += 1

    async def load(self, agent: str, per_minute: float) -> None:
        """Poisson arrivals of user questions, in clock time."""
        w = self.world
        n = 0
        while not self.stopping.is_set():
            wait = w.rng.expovariate(per_minute / 60.0)
            started = w.now()
            await w.sleep(wait)
            w.pace.record(wait, (w.now() - started) * w.speed)
            if len(self.in_flight) >= MAX_IN_FLIGHT:
                continue  # overloaded: the user gave up
            n += 1
            if agent == "support-agent":
                q = "Where is my order" + (" and can I get a refund" if n % 2 else "")
                question = f"{q}? A{w.rng.randrange(1000, 9999)}"
            else:
                question = w.rng.choice(["return windows", "shipping zones", "warranty terms"])
            task = asyncio.create_task(self.ask(agent, question))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    async def watch_config(self) -> None:
        """Follow the config repository's branch, as a GitOps deployment would."""
        w = self.world
        while not self.stopping.is_set():
            await asyncio.sleep(0.25)
            try:
                head = (await _git(w.repo, "rev-parse", "refs/heads/main")).strip()
                if head != w.config.commit:
                    w.config = await read_config(w.repo)
                    w.config_error = ""
            except ValueError as e:
                # A broken commit: keep running on the last good config, and say so.
                w.config_error = str(e)

    async def watch_parent(self, parent: int) -> None:
        """Stop when the process that started the fleet is gone. Its ``finally`` stops
        the fleet, but a parent killed outright (SIGKILL, a CI timeout) runs no
        ``finally``, and the orphan went on calling a daemon that was no longer there."""
        while not self.stopping.is_set():
            if os.getppid() != parent:
                self.stopping.set()
                return
            await asyncio.sleep(0.5)

    def shutdown(self) -> None:
        for p in self.providers.values():
            p.shutdown()


def _control_app(world: World) -> web.Application:
    async def status(request: web.Request) -> web.Response:
        c = world.counts
        return web.json_response(
            {
                "runs": c.runs,
                "failed": c.failed,
                "cached": c.cached,
                "rate_limited": c.rate_limited,
                "pace": round(world.pace.value, 3),
                "models": world.config.models,
                "rate_limits": world.config.rate_limits,
                "config_commit": world.config.commit,
                "config_error": world.config_error,
                "faults": sorted(world.faults),
                "ports": world.ports,
            }
        )

    async def fault(request: web.Request) -> web.Response:
        try:
            kind = FleetFault(request.match_info["kind"])
        except ValueError:
            return web.json_response(
                {"error": f"unknown fault {request.match_info['kind']!r}"}, status=404
            )
        if request.method == "POST":
            world.faults.add(kind)
        else:
            world.faults.discard(kind)
        return web.json_response({"faults": sorted(world.faults)})

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_post("/faults/{kind}", fault)
    app.router.add_delete("/faults/{kind}", fault)
    return app


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server  # aiohttp exposes the bound port only here
    assert server is not None
    sockets: Any = getattr(server, "sockets", ())
    return runner, int(sockets[0].getsockname()[1])


async def run_fleet(args: argparse.Namespace) -> None:
    warp = Warp.from_origin(datetime.fromisoformat(args.origin), args.wall0_ns, args.speed)
    world = World(
        speed=args.speed,
        repo=args.repo,
        config=await read_config(args.repo),
        rng=random.Random(args.seed),  # noqa: S311  # a simulation, not secrets
    )
    world.quota = Bucket(ORDERS_QUOTA_PER_MINUTE, args.speed, world.now())
    fleet = Fleet(world, args.endpoint, warp)
    runners: list[web.AppRunner] = []
    for service in (ORDERS_API, KB_API):
        tracer = fleet.providers[service].get_tracer("sentinel.demo")
        runner, world.ports[service] = await _serve(_service_app(world, service, tracer))
        runners.append(runner)
    control, control_port = await _serve(_control_app(world))
    runners.append(control)
    world.client = httpx.AsyncClient(timeout=10.0, limits=httpx.Limits(max_connections=200))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, fleet.stopping.set)
    print(json.dumps({"control": control_port, "ports": world.ports}), flush=True)  # noqa: T201
    tasks = [
        asyncio.create_task(fleet.load("support-agent", SUPPORT_PER_MINUTE)),
        asyncio.create_task(fleet.load("research-agent", RESEARCH_PER_MINUTE)),
        asyncio.create_task(fleet.watch_config()),
    ]
    if args.parent_pid is not None:
        tasks.append(asyncio.create_task(fleet.watch_parent(args.parent_pid)))
    await fleet.stopping.wait()
    for t in tasks:
        t.cancel()
    if fleet.in_flight:
        await asyncio.wait(fleet.in_flight, timeout=5.0)
    await world.client.aclose()
    for r in runners:
        await r.cleanup()
    await asyncio.to_thread(fleet.shutdown)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sentinel.demo.fleet", description=__doc__)
    p.add_argument("--endpoint", required=True, help="OTLP/HTTP traces URL of the daemon")
    p.add_argument("--repo", required=True, help="the config repository (bare) to follow")
    p.add_argument("--origin", required=True, help="the daemon clock's time at --wall0-ns")
    p.add_argument("--wall0-ns", type=int, required=True)
    p.add_argument("--speed", type=float, required=True)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--parent-pid", type=int, help="stop once this process is no longer the parent")
    args = p.parse_args(argv)
    try:
        import uvloop

        uvloop.run(run_fleet(args))
    except ImportError:
        asyncio.run(run_fleet(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
