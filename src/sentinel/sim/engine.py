"""The request simulation: every root request of a system walks its call graph, drawing
latencies, errors and tokens from the nodes and the fault plan; every call is counted into
15 s buckets (metrics come from all requests), and the calls of head-sampled traces are
handed to ``sim/spans.py`` as they happen.

What lives here: ``Recorder`` (per-bucket tallies), ``Leak`` and ``plan_leak`` (the course
of a memory leak) and ``Simulator`` (the walk: plan to recorder and sampled traces). Only
the ``random.Random`` passed in is drawn from (and two generators seeded from it, for
trace ids and span contents).

What must not live here: span shapes, attributes and OTLP/JSON (``sim/spans.py``), fault
choice (``sim/faults.py``), metric families and case assembly (``sim/output.py``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from sentinel.sim.faults import (
    AGENT_ERRORS,
    CONTEXT_WINDOW,
    DB_ERRORS,
    HTTP_STATUS_ERROR,
    INDEX_ERRORS,
    MAX_TURNS,
    MODEL_ERRORS,
    SERVICE_ERRORS,
    TOOL_ERRORS,
    UNAVAILABLE,
    ErrorSpec,
    FaultPlan,
    ToolStatus,
)
from sentinel.sim.spans import SpanEmitter, Trace
from sentinel.sim.topology import (
    AgentNode,
    Call,
    IndexNode,
    ModelNode,
    ServiceNode,
    ToolNode,
    name_of,
)

STEP = 15.0  # seconds per metric bucket
EVAL_RATE = 0.4  # share of agent runs an evaluator scores
MAX_TURNS_PER_RUN = 12
_LOW_64 = 2**64 - 1  # the bits of a trace id a ratio sampler compares


@dataclass(slots=True)
class Tally:
    """One component's calls per bucket."""

    n: list[int]
    errors: list[int]
    durations: list[list[float]]


@dataclass(slots=True)
class Recorder:
    """Per-bucket tallies of every simulated call, the input of the metric families."""

    buckets: int
    calls: dict[str, Tally] = field(default_factory=dict)
    tokens: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)
    tool_calls: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    scores: dict[tuple[str, str], list[list[float]]] = field(default_factory=dict)
    cost: dict[str, list[float]] = field(default_factory=dict)
    host_load: dict[str, list[int]] = field(default_factory=dict)

    def _zeros(self) -> list[int]:
        return [0] * self.buckets

    def call(self, component: str, b: int, duration: float, failed: bool) -> None:
        t = self.calls.get(component)
        if t is None:
            t = Tally(self._zeros(), self._zeros(), [[] for _ in range(self.buckets)])
            self.calls[component] = t
        t.n[b] += 1
        t.errors[b] += failed
        t.durations[b].append(duration)

    def add(self, table: dict[Any, list[int]], key: Any, b: int, value: int) -> None:
        row = table.get(key)
        if row is None:
            row = table[key] = self._zeros()
        row[b] += value

    def add_cost(self, agent: str, b: int, usd: float) -> None:
        row = self.cost.get(agent)
        if row is None:
            row = self.cost[agent] = [0.0] * self.buckets
        row[b] += usd

    def score(self, key: tuple[str, str], b: int, value: float) -> None:
        row = self.scores.get(key)
        if row is None:
            row = self.scores[key] = [[] for _ in range(self.buckets)]
        row[b].append(value)


@dataclass(slots=True)
class Leak:
    """A memory leak's course per bucket: share of the limit used, whether the process is
    down (restarting after an OOM kill), and restarts."""

    fraction: list[float]
    down: list[bool]
    restarts: list[int]

    def pressure(self, b: int) -> float:
        return min(1.0, max(0.0, (self.fraction[b] - 0.8) / 0.2))


def plan_leak(plan: FaultPlan, buckets: int, base_fraction: float, rng: random.Random) -> Leak:
    """Memory of the target service: flat until the fault, then growing to the limit (in
    about 6 minutes when strong, 20 when subtle); at the limit the pod is OOM-killed,
    down for 30 s, and starts again from its base."""
    strong = plan.mechanism.latency_mult >= 3.0
    fill = (6 * 60 if strong else 20 * 60) * rng.uniform(0.8, 1.2) + plan.ramp
    fraction: list[float] = []
    down = [False] * buckets
    restarts = [0] * buckets
    since = plan.fault_start
    for b in range(buckets):
        t = b * STEP
        f = base_fraction
        if plan.mechanism.leak and t >= plan.fault_start:
            f = base_fraction + (1 - base_fraction) * (t - since) / fill
            if f >= 1.0:
                restarts[b] = 1
                down[b] = True
                if b + 1 < buckets:
                    down[b + 1] = True
                since = t + STEP
                fill *= 0.75  # a leaking process fills up faster after each restart
                f = base_fraction * 0.6
        fraction.append(min(f, 1.0) * rng.uniform(0.985, 1.015))
    return Leak(fraction, down, restarts)


@dataclass(slots=True)
class _Run:
    trace: Trace | None
    agent: str = ""
    penalty: float = 0.0  # evaluator score lost by this run


class Simulator:
    """Walks every root request of ``plan.system`` over the window."""

    def __init__(self, plan: FaultPlan, rng: random.Random, start_ns: int) -> None:
        self.plan = plan
        self.sys = plan.system
        self.rng = rng
        self.start_ns = start_ns
        self.buckets = int(plan.duration // STEP)
        self.rec = Recorder(self.buckets)
        self.mech = plan.mechanism
        self.target = plan.target
        self.leak: Leak | None = None
        if self.mech.leak:
            self.leak = plan_leak(plan, self.buckets, rng.uniform(0.35, 0.55), rng)
        self.traces: list[Trace] = []
        # Trace ids and span contents draw from generators of their own, seeded once from
        # the walk's: a seed's traffic (and so its metrics) is the same whatever the
        # sample ratio, and so are its trace ids, so a lower ratio samples a subset of the
        # same traces. Drawn from the walk's generator, they made every ratio another
        # realisation of the spec (a spans-only case was not the case with its metrics).
        self.trace_ids = random.Random(rng.getrandbits(64))  # noqa: S311  (simulation)
        self.spans = SpanEmitter(
            plan.system,
            random.Random(rng.getrandbits(64)),  # noqa: S311  (simulation)
            start_ns,
        )

    # --- driving -----------------------------------------------------------------------

    def run(self) -> None:
        rng = self.rng
        rate = self.sys.rate
        peak = rate * 1.2
        phase = rng.uniform(0, 2 * math.pi)
        entry = self.sys.node(self.sys.entry)
        assert isinstance(entry, ServiceNode)
        t = 0.0
        end = self.plan.duration
        # Head sampling by trace id, as OpenTelemetry's TraceIdRatioBased sampler does:
        # sampled when the id's low 64 bits fall under the ratio's share of them.
        bound = round(self.sys.sample_ratio * 2**64)
        while True:
            t += rng.expovariate(peak)
            if t >= end:
                break
            # Thinning: a slow swell of traffic, so rates are not flat lines.
            if rng.random() * peak > rate * (1 + 0.15 * math.sin(t / 1500 + phase)):
                continue
            trace = None
            trace_id = self.trace_ids.getrandbits(128) | 1
            if trace_id & _LOW_64 < bound:
                trace = Trace(f"{trace_id:032x}", [])
                self.traces.append(trace)
            self._serve(entry, t, None, _Run(trace))

    # --- helpers -----------------------------------------------------------------------

    def _level(self, component: str, t: float) -> float:
        if component != self.target:
            return 0.0
        if self.leak is not None:
            return self.leak.pressure(self._bucket(t))
        return self.plan.level(t)

    def _bucket(self, t: float) -> int:
        return min(self.buckets - 1, int(t / STEP))

    def _lat(self, median: float, sigma: float = 0.35) -> float:
        return median * math.exp(self.rng.gauss(0.0, sigma))

    def _fail(self, base: float, errors: tuple[ErrorSpec, ...], level: float) -> ErrorSpec | None:
        rng = self.rng
        if level and self.mech.errors and rng.random() < self.mech.error_rate * level:
            return rng.choice(self.mech.errors)
        if rng.random() < base:
            return rng.choice(errors)
        return None

    def _count(self, mean: float) -> int:
        """A small count with the given mean (geometric-ish, cheap)."""
        if mean <= 0:
            return 0
        n = int(mean)
        return (
            n
            + (1 if self.rng.random() < mean - n else 0)
            + self.rng.choice((-1, 0, 0, 1)) * (n > 0)
        )

    def _call(
        self, call: Call, t: float, parent: str, run: _Run, host: str
    ) -> tuple[float, ErrorSpec | None]:
        node = self.sys.node(call.callee)
        if isinstance(node, ModelNode):
            return self._model(node, t, parent, run, host, self.rng.randint(12, 80), 0, "")
        if isinstance(node, ToolNode):
            return self._tool(node, t, parent, run, host)
        if isinstance(node, IndexNode):
            return self._index(node, t, parent, run, host)
        if isinstance(node, AgentNode):
            return self._agent(node, t, parent, run)
        return self._remote(node, t, parent, run, host)

    # --- services ----------------------------------------------------------------------

    def _remote(
        self, node: ServiceNode, t: float, parent: str | None, run: _Run, host: str
    ) -> tuple[float, ErrorSpec | None]:
        """A call from ``host`` to another service: a client span, then the server side."""
        net = self.rng.uniform(0.0005, 0.002)
        cid = self.spans.new_id() if run.trace is not None else ""
        dur, err = self._serve(node, t + net, cid or None, run, client=True)
        dur += 2 * net
        if run.trace is not None:
            self.spans.client(run.trace, node, host, cid, parent, t, dur, err)
        return dur, err

    def _serve(
        self, node: ServiceNode, t: float, parent: str | None, run: _Run, *, client: bool = False
    ) -> tuple[float, ErrorSpec | None]:
        rng = self.rng
        b = self._bucket(t)
        level = self._level(node.id, t)
        if self.leak is not None and node.id == self.target and self.leak.down[b]:
            # Restarting after an OOM kill: connections are refused at once.
            dur = rng.uniform(0.001, 0.004)
            self.rec.call(node.id, b, dur, True)
            return dur, UNAVAILABLE
        own = self._lat(node.latency) * (1 + (self.mech.latency_mult - 1) * level)
        sid = self.spans.new_id() if run.trace is not None and node.db_system is None else ""
        cur = t + own * 0.3
        err: ErrorSpec | None = None
        calls = node.calls
        if node.choice:
            calls = (rng.choices(calls, weights=[c.p for c in calls])[0],)
        for c in calls:
            if not node.choice and c.p < 1 and rng.random() >= c.p:
                continue
            d, e = self._call(c, cur, sid, run, name_of(node.id))
            cur += d
            if e is not None and err is None and rng.random() < 0.8:
                err = e if e.http and e.http >= 500 else ErrorSpec("500", 500)
        cur += own * 0.7
        own_err = self._fail(
            node.error_rate, DB_ERRORS if node.db_system else SERVICE_ERRORS, level
        )
        err = own_err or err
        dur = cur - t
        self.rec.call(node.id, b, dur, err is not None)
        self.rec.add(self.rec.host_load, name_of(node.id), b, 1)
        if sid and not node.external:
            assert run.trace is not None
            self.spans.server(run.trace, node, calls, sid, parent, t, dur, err, client=client)
        return dur, err

    # --- GenAI -------------------------------------------------------------------------

    def _model(
        self,
        node: ModelNode,
        t: float,
        parent: str,
        run: _Run,
        host: str,
        tokens_in: int,
        tokens_out: int,
        finish: str,
    ) -> tuple[float, ErrorSpec | None]:
        rng = self.rng
        level = self._level(node.id, t)
        mult = 1 + (self.mech.latency_mult - 1) * level
        if level and self.mech.tokens_mult != 1:
            tokens_out = int(tokens_out * (1 + (self.mech.tokens_mult - 1) * level))
        if level and self.mech.score_drop:
            run.penalty = max(run.penalty, self.mech.score_drop * level)
        err = self._fail(node.error_rate, MODEL_ERRORS, level)
        b = self._bucket(t)
        if err is None:
            dur = self._lat(node.ttft) + tokens_out * node.per_token * rng.uniform(0.8, 1.2)
            dur *= mult
        else:
            dur = self._lat(0.25) * mult
        self.rec.call(node.id, b, dur, err is not None)
        agent = run.agent or "agent:unknown"
        model = name_of(node.id)
        if err is None:
            self.rec.add(self.rec.tokens, (agent, model, "input"), b, tokens_in)
            self.rec.add(self.rec.tokens, (agent, model, "output"), b, tokens_out)
            usd = tokens_in / 1000 * node.usd_in + tokens_out / 1000 * node.usd_out
            self.rec.add_cost(agent, b, usd)
        if run.trace is not None:
            version = node.version
            if self.mech.tokens_mult != 1 and self.mech.score_drop and level >= 0.5:
                version = "2026-11-20"  # the new snapshot of a model version change
            self.spans.model(
                run.trace, node, version, host, parent, t, dur, err, tokens_in, tokens_out, finish
            )
        return dur, err

    def _tool(
        self, node: ToolNode, t: float, parent: str, run: _Run, host: str
    ) -> tuple[float, ErrorSpec | None]:
        rng = self.rng
        level = self._level(node.id, t)
        sid = self.spans.new_id() if run.trace is not None else ""
        own = self._lat(node.latency) + (
            self._lat(self.mech.latency_add, 0.3) * level
            if level and self.mech.latency_add
            else 0.0
        )
        cur = t + own / 2
        err: ErrorSpec | None = None
        if level and self.mech.retries:
            # Rate limited at the API in front of the tool's backend: retry with backoff.
            for attempt in range(3):
                if rng.random() >= self.mech.error_rate * level:
                    break
                d = rng.uniform(0.02, 0.08)
                if run.trace is not None and node.calls:
                    self.spans.rate_limited(run.trace, node, host, sid, cur, d)
                cur += d
                if attempt == 2:
                    err = self.mech.errors[0]
                    break
                cur += rng.uniform(0.4, 0.6) * (attempt + 1)
        else:
            err = self._fail(node.error_rate, TOOL_ERRORS, level)
            if err is not None and err.tool_status is ToolStatus.TIMEOUT:
                cur += rng.uniform(3.0, 8.0)
        if err is None:
            for c in node.calls:
                if c.p < 1 and rng.random() >= c.p:
                    continue
                d, e = self._call(c, cur, sid, run, host)
                cur += d
                if e is not None and err is None and rng.random() < 0.9:
                    err = HTTP_STATUS_ERROR
        cur += own / 2
        dur = cur - t
        b = self._bucket(t)
        self.rec.call(node.id, b, dur, err is not None)
        status = ToolStatus.OK if err is None else err.tool_status
        self.rec.add(self.rec.tool_calls, (node.id, status.value), b, 1)
        if run.trace is not None:
            self.spans.tool(run.trace, node, run.agent, host, sid, parent, t, dur, err)
        return dur, err

    def _index(
        self, node: IndexNode, t: float, parent: str, run: _Run, host: str
    ) -> tuple[float, ErrorSpec | None]:
        rng = self.rng
        level = self._level(node.id, t)
        sid = self.spans.new_id() if run.trace is not None else ""
        own = self._lat(node.latency)
        store = self.sys.node(node.store)
        assert isinstance(store, ServiceNode)
        d, e = self._serve(store, t + own / 2, sid or None, run, client=True)
        dur = own + d
        err = self._fail(node.error_rate, INDEX_ERRORS, level)
        if err is None and e is not None and rng.random() < 0.85:
            err = INDEX_ERRORS[0]  # else the client's one retry went through
        rows = node.rows
        if level and self.mech.rows_mult != 1:
            rows = max(0, int(rows * (1 - (1 - self.mech.rows_mult) * level) + rng.uniform(-1, 1)))
            run.penalty = max(run.penalty, self.mech.score_drop * level)
        self.rec.call(node.id, self._bucket(t), dur, err is not None)
        if run.trace is not None:
            self.spans.index(run.trace, node, rows, host, sid, parent, t, dur, err)
        return dur, err

    def _prelude(
        self, node: AgentNode, t: float, parent: str, run: _Run, *, requery: bool = False
    ) -> tuple[float, ErrorSpec | None]:
        """The calls an agent makes before asking its model (retrieval), in order; a
        re-query makes only the first two (embed the rewritten query, search again)."""
        cur = t
        err: ErrorSpec | None = None
        for c in node.prelude[:2] if requery else node.prelude:
            if c.p < 1 and self.rng.random() >= c.p:
                continue
            d, e = self._call(c, cur, parent, run, node.host)
            cur += d
            err = err or e
        return cur - t, err

    def _agent(
        self, node: AgentNode, t: float, parent: str | None, run: _Run
    ) -> tuple[float, ErrorSpec | None]:
        rng = self.rng
        mech = self.mech
        level = self._level(node.id, t)
        sid = self.spans.new_id() if run.trace is not None else ""
        outer_agent = run.agent
        run.agent = node.id
        host = node.host
        cur = t + rng.uniform(0.002, 0.01)
        failure: ErrorSpec | None = None
        if node.prelude:
            d, e = self._prelude(node, cur, sid, run)
            cur += d
            if e is not None and rng.random() < 0.5:
                failure = e
        steps = self._count(node.steps)
        if level and mech.extra_steps:
            steps += self._count(mech.extra_steps * level)
        tokens_in = rng.randint(900, 1500)
        out_mult = 1 + (mech.tokens_mult - 1) * level if level else 1.0
        if level and mech.score_drop:
            run.penalty = max(run.penalty, mech.score_drop * level)
        weights = [c.p for c in node.tools]
        model_weights = [c.p for c in node.models]
        i = 0
        while failure is None:
            final = i >= steps
            model = self.sys.node(rng.choices(node.models, weights=model_weights)[0].callee)
            assert isinstance(model, ModelNode)
            out = int(self._lat(280 if final else 60, 0.5) * out_mult)
            finish = "stop" if final else "tool_calls"
            d, e = self._model(model, cur, sid, run, host, tokens_in, out, finish)
            cur += d
            if e is not None:  # the SDK retries once after a backoff
                cur += rng.uniform(0.5, 1.5)
                d, e = self._model(model, cur, sid, run, host, tokens_in, out, finish)
                cur += d
                if e is not None and rng.random() < 0.7:
                    failure = e
                    break
            tokens_in += out
            if final:
                break
            if tokens_in > node.context_limit:
                failure = CONTEXT_WINDOW
                break
            if i >= MAX_TURNS_PER_RUN:
                failure = MAX_TURNS
                break
            if node.tools:
                tool = rng.choices(node.tools, weights=weights)[0]
                d, e = self._call(tool, cur, sid, run, host)
            else:  # an agent without tools loops by retrieving again (query rewriting)
                d, e = self._prelude(node, cur, sid, run, requery=True)
            cur += d
            if e is not None and rng.random() < (
                0.5 if e.tool_status is ToolStatus.INVALID else 0.35
            ):
                failure = e
            tokens_in += rng.randint(150, 600)
            i += 1
        if failure is None:
            failure = self._fail(node.error_rate, AGENT_ERRORS, level)
        cur += rng.uniform(0.002, 0.02)
        dur = cur - t
        b = self._bucket(t)
        self.rec.call(node.id, b, dur, failure is not None)
        self.rec.add(self.rec.host_load, host, b, 1)
        events: list[dict[str, Any]] = []
        if rng.random() < EVAL_RATE:
            for name, base in node.evals:
                score = base + rng.gauss(0, 0.05) - run.penalty * rng.uniform(0.6, 1.4)
                if failure is not None and name == "goal_completion":
                    score -= 0.3
                score = round(min(1.0, max(0.0, score)), 4)
                self.rec.score((node.id, name), b, score)
                if run.trace is not None:
                    events.append(self.spans.evaluation(name, score, cur + 0.5))
        if run.trace is not None:
            self.spans.agent(run.trace, node, sid, parent, t, dur, failure, events)
        run.agent = outer_agent
        return dur, failure
