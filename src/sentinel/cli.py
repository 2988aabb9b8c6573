"""The ``sentinel`` command line. Each command parses its arguments, loads the settings
once, calls into the stages and adapters, and prints; errors of the ``SentinelError``
tree become one clear line on stderr and a non-zero exit status, never a traceback.

What must not live here: logic another entry point (the daemon, the API) also needs.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from sentinel.cli_common import ConfigOption, cli_settings, err, out
from sentinel.cli_common import fail as _fail
from sentinel.clock import ScaledClock, SystemClock
from sentinel.errors import SentinelError
from sentinel.settings import Settings, effective_config, mask_url, to_toml

if TYPE_CHECKING:
    from sentinel.sim import FaultSpec

_E = TypeVar("_E", bound=StrEnum)

app = typer.Typer(
    name="sentinel",
    help="Keeps production AI agents healthy: detects, diagnoses and fixes what goes wrong.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _settings(path: Path | None, *, serving: bool = True) -> Settings:
    return cli_settings(path, serving=serving)


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run the daemon: OTLP/HTTP receiver, change webhook and git change feed."""
    from sentinel import daemon

    settings = _settings(config)
    try:
        daemon.run(settings, SystemClock())
    except SentinelError as e:
        raise _fail(e) from e


@app.command("check-config")
def check_config(
    path: Annotated[Path | None, typer.Argument(help="Config file to check.")] = None,
) -> None:
    """Validate a config file and print the effective configuration, secrets masked."""
    settings = _settings(path)
    # Plain writes: the output is TOML, and rich would wrap long lines.
    sys.stdout.write(f"# {path or 'default configuration'}: valid\n")
    sys.stdout.write(to_toml(effective_config(settings)))


@app.command()
def ingest(
    case_dir: Annotated[Path, typer.Argument(help="A case folder (CASE_FORMAT.md).")],
    config: ConfigOption = None,
) -> None:
    """Load a case's spans, metric samples and changes into the store."""
    from sentinel.adapters.db import open_store
    from sentinel.cases import ingest_case, read_case

    settings = _settings(config, serving=False)
    try:
        case = read_case(case_dir)
        store = open_store(
            settings.store_url, SystemClock(), auto_migrate=settings.store.auto_migrate
        )
        try:
            with Progress(
                TextColumn("{task.description:<8}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            ) as progress:
                tasks: dict[str, TaskID] = {}

                def show(stage: str, done: int, total: int) -> None:
                    if stage not in tasks:
                        tasks[stage] = progress.add_task(stage, total=total)
                    progress.update(tasks[stage], completed=done, total=total)

                report = ingest_case(store, case, progress=show)
        finally:
            store.close()
    except SentinelError as e:
        raise _fail(e) from e
    out.print(
        f"ingested {case.meta.id!r} into {store.url}: "
        f"{report.spans_new} new spans (of {report.spans_seen}), "
        f"{report.samples_new} new samples, {report.changes_new} new changes"
        + (f", {report.rejected_spans} spans rejected" if report.rejected_spans else ""),
        highlight=False,
        markup=False,
    )


@app.command()
def migrate(config: ConfigOption = None) -> None:
    """Apply the store's pending schema migrations (for store.auto_migrate = false)."""
    from sentinel.adapters.db import create_engine_for
    from sentinel.adapters.db import migrate as run_migrations

    settings = _settings(config, serving=False)
    try:
        engine = create_engine_for(settings.store_url)
        try:
            run_migrations(engine)
        finally:
            engine.dispose()
    except SentinelError as e:
        raise _fail(e) from e
    out.print(
        f"store {mask_url(settings.store_url)} is at the latest schema",
        highlight=False,
        markup=False,
    )


@app.command()
def components(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """List the components the store knows, with span and error counts and time range."""
    from sentinel.adapters.db import open_store

    settings = _settings(config)
    try:
        store = open_store(
            settings.store_url, SystemClock(), auto_migrate=settings.store.auto_migrate
        )
        try:
            rows = store.components()
        finally:
            store.close()
    except SentinelError as e:
        raise _fail(e) from e
    if as_json:
        doc = [
            {
                "component": c.component,
                "spans": c.spans,
                "errors": c.errors,
                "called_by_client_spans": c.as_peer,
                "samples": c.samples,
                "first": c.first.isoformat() if c.first else None,
                "last": c.last.isoformat() if c.last else None,
            }
            for c in rows
        ]
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    if not rows:
        out.print(
            "No components yet. Point an OpenTelemetry exporter at this daemon "
            "(OTLP/HTTP, /v1/traces) or load a case with `sentinel ingest CASE_DIR`."
        )
        return
    table = Table(
        title=Text(f"components in {store.url}"),
        caption="client calls: CLIENT spans of other services calling it "
        "(all an uninstrumented service has); times UTC",
    )
    table.add_column("component", no_wrap=True, min_width=max(len(c.component) for c in rows))
    for col in ("spans", "errors", "error %", "client calls", "samples"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("first seen", no_wrap=True)
    table.add_column("last seen", no_wrap=True)
    for c in rows:
        rate = f"{100 * c.errors / c.spans:.1f}" if c.spans else "-"
        table.add_row(
            Text(c.component),
            str(c.spans),
            str(c.errors),
            rate,
            str(c.as_peer) if c.as_peer else "-",
            str(c.samples) if c.samples else "-",
            c.first.strftime("%Y-%m-%d %H:%M") if c.first else "-",
            c.last.strftime("%Y-%m-%d %H:%M") if c.last else "-",
        )
    out.print(table)


@app.command()
def simulate(
    topology: Annotated[str, typer.Option(help="support, multi_agent, rag or microservices.")],
    fault: Annotated[str, typer.Option(help="A fault kind of CASE_FORMAT.md.")],
    seed: Annotated[int, typer.Option(help="Seed: the same inputs give the same case.")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Case folder to write (case mode).")
    ] = None,
    minutes: Annotated[int, typer.Option(help="Length of the telemetry window.")] = 50,
    subtle: Annotated[bool, typer.Option(help="A subtle fault rather than a strong one.")] = False,
    ramped: Annotated[bool, typer.Option(help="Ramp the fault in over minutes.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing case folder.")] = False,
    sample_ratio: Annotated[
        float | None,
        typer.Option(
            help="Share of traces kept, 0-1 (default: the topology's own head sampling; "
            "1.0 gives a daemon without metrics every request).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    live: Annotated[
        bool, typer.Option(help="Play the case now against a running daemon instead.")
    ] = False,
    endpoint: Annotated[
        str, typer.Option(help="Live: the daemon's OTLP/HTTP base URL (spans go to /v1/traces).")
    ] = "http://127.0.0.1:4318",
    speed: Annotated[
        float, typer.Option(help="Live: simulated seconds per real second.", min=0.001)
    ] = 1.0,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Live: serve /metrics on this port (0: any free one).", min=0),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Live: address to serve /metrics on.")] = (
        "127.0.0.1"
    ),
    token: Annotated[
        str | None,
        typer.Option(envvar="SENTINEL_INGEST_TOKEN", help="Live: bearer token for the daemon."),
    ] = None,
) -> None:
    """Simulate an incident case (CASE_FORMAT.md) and print its truth; with --live, play it
    in real (or --speed times faster) time against a running daemon."""
    from sentinel.cases import FaultKind, write_case
    from sentinel.sim import FaultSpec, Magnitude, Onset, Topology, simulate_case

    def usage(message: str) -> typer.Exit:
        err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)
        return typer.Exit(2)

    def choice(kind: type[_E], value: str, option: str) -> _E:
        try:
            return kind(value)
        except ValueError:
            names = ", ".join(m.value for m in kind)
            raise usage(f"{option} {value!r} is not one of: {names}") from None

    if live and out_dir is not None:
        raise usage("--out writes a case folder; --live plays the case instead: give one")
    if not live and out_dir is None:
        raise usage("simulate needs --out DIR (the case folder to write), or --live")
    try:
        spec = FaultSpec(
            topology=choice(Topology, topology, "--topology"),
            fault=choice(FaultKind, fault, "--fault"),
            seed=seed,
            magnitude=Magnitude.SUBTLE if subtle else Magnitude.STRONG,
            onset=Onset.RAMPED if ramped else Onset.ABRUPT,
            minutes=minutes,
            sample_ratio=sample_ratio,
        )
        if live:
            _simulate_live(spec, endpoint, speed, metrics_host, metrics_port, token)
            return
        case = simulate_case(spec)
    except ValueError as e:
        raise usage(str(e)) from e
    assert out_dir is not None
    try:
        write_case(case, out_dir, overwrite=overwrite)
    except SentinelError as e:
        raise _fail(e) from e
    assert case.truth is not None
    doc = case.truth.model_dump(mode="json", exclude_none=True)
    sys.stdout.write(json.dumps({"case": case.meta.id, "path": str(out_dir), **doc}) + "\n")


def _simulate_live(
    spec: FaultSpec,
    endpoint: str,
    speed: float,
    metrics_host: str,
    metrics_port: int | None,
    token: str | None,
) -> None:
    """``simulate --live``: the run in a worker thread, so Ctrl-C stops it cleanly (what
    has ended is sent) and the summary is still printed. Raises ``ValueError`` for bad
    arguments, before anything is printed."""
    import threading

    from sentinel.sim import LiveReport, LiveRun

    clock = ScaledClock(SystemClock().now(), speed)
    run = LiveRun(
        spec, clock, endpoint, token=token, metrics_port=metrics_port, metrics_host=metrics_host
    )
    truth = {
        "case": run.case_id,
        "endpoint": run.url,
        "metrics": run.metrics_port and f"http://{metrics_host}:{run.metrics_port}/metrics",
        "speed": speed,
        "start": _rfc3339(run.start),
        "end": _rfc3339(run.end),
        "fault_start": _rfc3339(run.truth.fault_start),
        "target": run.target,
        **run.truth.model_dump(mode="json", exclude_none=True, exclude={"fault_start"}),
    }
    sys.stdout.write(json.dumps(truth) + "\n")
    sys.stdout.flush()
    if speed != 1:
        err.print(
            f"note: times are simulated ({speed:g}x); Prometheus stamps scrapes with real time, "
            "and a daemon on its own clock sees spans from the simulated future",
            highlight=False,
            markup=False,
        )
    last_minute: list[int] = [-1]
    fault_told: list[bool] = [False]

    def progress(r: LiveReport) -> None:
        minute = int((r.at - r.start).total_seconds() // 60)
        if r.fault_started and not fault_told[0]:
            fault_told[0] = True
            err.print(
                f"{_rfc3339(r.at)}  fault started on {r.target}", highlight=False, markup=False
            )
        if minute != last_minute[0]:
            last_minute[0] = minute
            err.print(
                f"{_rfc3339(r.at)}  minute {minute}/{spec.minutes}: "
                f"{r.spans_sent}/{r.spans_total} spans sent, {r.retries} retries",
                highlight=False,
                markup=False,
            )

    box: list[LiveReport | BaseException] = []
    done = threading.Event()

    def work() -> None:
        try:
            box.append(run.run(on_progress=progress))
        except BaseException as e:  # noqa: BLE001  # re-raised (or reported) below
            box.append(e)
        finally:
            done.set()

    worker = threading.Thread(target=work, name="sim-live")
    worker.start()
    interrupted = False
    try:
        # An Event, not Thread.join: a join interrupted by Ctrl-C can wrongly end (3.11).
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt:
        interrupted = True
        run.stop()
        done.wait()
    worker.join()
    result = box[0]
    if isinstance(result, BaseException) and not isinstance(result, SentinelError):
        raise result
    if isinstance(result, SentinelError):
        raise _fail(result)
    out.print(
        f"live run {'stopped' if result.stopped else 'done'} at {_rfc3339(result.at)}: "
        f"{result.spans_sent}/{result.spans_total} spans sent in {result.batches} batches "
        f"({result.retries} retries, {result.spans_rejected} rejected by the daemon); "
        f"fault {result.root_cause} from {_rfc3339(result.fault_start)}",
        highlight=False,
        markup=False,
    )
    if interrupted:
        raise typer.Exit(130)


@app.command()
def detect(
    case_dir: Annotated[Path, typer.Argument(help="A case folder (CASE_FORMAT.md).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Replay a case's telemetry through detection as if live and print its incidents.

    The case's [truth] is never read: onsets come from the telemetry alone. A
    metrics-only case without a topology.jsonl gets its call structure inferred from its
    metrics, as `sentinel rca` does, so that one problem is one incident.
    """

    from sentinel.cases import read_case
    from sentinel.incidents import case_slis, replay_case
    from sentinel.rca.engine import with_inferred_topology

    settings = _settings(config, serving=False)
    try:
        case = read_case(case_dir)
    except SentinelError as e:
        raise _fail(e) from e
    step = timedelta(seconds=settings.detection.step_seconds)
    slis = case_slis(case, step, settings.pricing)
    case = with_inferred_topology(case, slis)
    incidents = replay_case(case, settings.detection, settings.pricing, slis=slis)

    if as_json:
        doc = {
            "case": case.meta.id,
            "incidents": [
                {
                    "onset": _rfc3339(i.onset),
                    "anomalies": [
                        {
                            "component": a.component,
                            "sli": a.sli.value,
                            "onset": _rfc3339(a.onset),
                            "baseline": a.baseline,
                            "observed": a.observed,
                        }
                        for a in i.anomalies
                    ],
                }
                for i in incidents
            ],
        }
        sys.stdout.write(json.dumps(doc) + "\n")
        return
    out.print(
        f"{case.meta.id}: {len(incidents)} incident(s) in "
        f"{_rfc3339(case.meta.start)} .. {_rfc3339(case.meta.end)}",
        highlight=False,
        markup=False,
    )
    for i in incidents:
        out.print(
            f"  incident {i.id}: onset {_rfc3339(i.onset)}, opened "
            f"{_rfc3339(i.incident.opened_at)}, {i.incident.status.value}",
            highlight=False,
            markup=False,
        )
        for a in i.anomalies:
            what = a.sli.value + (f"[{a.qualifier}]" if a.qualifier else "")
            out.print(
                f"    {a.component} {what}: {a.baseline:.4g} -> {a.observed:.4g} "
                f"since {_rfc3339(a.onset)} ({a.detector.value}, score {a.score:g})",
                highlight=False,
                markup=False,
            )


@app.command()
def rca(
    case_dir: Annotated[Path, typer.Argument(help="A case folder (CASE_FORMAT.md).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    top: Annotated[int, typer.Option(help="Hypotheses to print (JSON: all).", min=1)] = 5,
    config: ConfigOption = None,
) -> None:
    """Find a case's incident and rank its root-cause hypotheses.

    The case's [truth] is never read: the onset and the causes come from the telemetry
    alone. JSON is CASE_FORMAT.md's "What an engine returns".
    """

    from sentinel.cases import read_case
    from sentinel.rca.engine import diagnose

    settings = _settings(config, serving=False)
    try:
        case = read_case(case_dir)
    except SentinelError as e:
        raise _fail(e) from e
    found = diagnose(case, settings.detection, settings.pricing, settings.slo)
    if as_json:
        doc = {
            "case": found.case,
            "onset": _rfc3339(found.onset) if found.onset else None,
            "hypotheses": [
                {
                    "component": h.component,
                    "fault": h.fault,
                    "confidence": h.confidence,
                    **({"change": h.change} if h.change else {}),
                    "evidence": list(h.evidence),
                }
                for h in found.hypotheses
            ],
        }
        sys.stdout.write(json.dumps(doc) + "\n")
        return
    if found.onset is None:
        out.print(f"{found.case}: no incident found; nothing to diagnose", markup=False)
        return
    out.print(
        f"{found.case}: incident {found.incident}, onset {_rfc3339(found.onset)}",
        highlight=False,
        markup=False,
    )
    for n, h in enumerate(found.hypotheses[:top], 1):
        change = f", change {h.change}" if h.change else ""
        out.print(
            f"  {n}. {h.component} ({h.fault}{change}): confidence {h.confidence:.0%}",
            highlight=False,
            markup=False,
        )
        for line in h.evidence:
            out.print(f"       - {line}", highlight=False, markup=False)


def _mount_remediation() -> None:
    # The remediation commands live beside this module; mounted here so that
    # `sentinel --help` lists them with the others.
    from sentinel import cli_remediation as rem
    from sentinel.cli_playbook import playbook_app

    playbook_app.command("test")(rem.playbook_test)
    app.add_typer(playbook_app)
    app.command()(rem.pause)
    app.command()(rem.resume)
    app.command()(rem.audit)
    app.command()(rem.approve)
    app.command()(rem.reject)
    from sentinel import cli_incidents as inc

    app.command()(inc.incidents)
    app.command()(inc.incident)
    from sentinel import cli_confirm, cli_demo, cli_eval, cli_learn

    app.command("eval")(cli_eval.eval_archive)
    app.command()(cli_confirm.confirm)
    app.command()(cli_demo.demo)
    app.command()(cli_learn.learn)
    app.command("export-evals")(cli_learn.export_evals)


_mount_remediation()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
