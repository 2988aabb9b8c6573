"""``sentinel playbook ...``: the commands about remediation playbook files.

``schema`` exports the JSON Schema of a playbook for editors; ``validate`` loads playbook
files or folders the way the daemon does and reports every problem with its file:line.
``sentinel.cli`` mounts ``playbook_app``.

What must not live here: reading or checking playbooks (``sentinel.playbooks.loader``),
the schema itself (``sentinel.playbooks.model``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sentinel.cli_common import fail as _fail
from sentinel.cli_common import say as _say
from sentinel.errors import ConfigError, SentinelError
from sentinel.playbooks.loader import LoadedPlaybook, load_playbooks
from sentinel.playbooks.model import Playbook
from sentinel.settings import Settings, load_settings

__all__ = ["playbook_app", "playbook_json_schema"]

playbook_app = typer.Typer(
    name="playbook",
    help="Check remediation playbooks, try one on a case, export their JSON Schema.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Draft-07, not the 2020-12 pydantic targets: yaml-language-server (VS Code's YAML
# extension, and the editors built on it) validates draft-07 fully and only warns on
# later drafts. The schema uses nothing newer than draft-07 once its definitions sit
# under "definitions"; the OpenAPI "discriminator" pydantic adds is ignored by validators.
JSON_SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"


def playbook_json_schema() -> dict[str, Any]:
    """The JSON Schema of a playbook file (draft-07), for editors."""
    schema = Playbook.model_json_schema(ref_template="#/definitions/{model}")
    definitions = schema.pop("$defs", {})
    schema.pop("title", None)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "sentinel remediation playbook",
        "description": "A playbooks/*.yaml file: which incidents it fits, its gates and "
        "guardrails, the typed steps it runs, how success is verified and how each step "
        "is undone.",
        **schema,
        "definitions": definitions,
    }


@playbook_app.command()
def schema(
    out_file: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the schema to this file.", dir_okay=False),
    ] = None,
) -> None:
    """Print (or write) the JSON Schema of playbook files.

    Editors that use yaml-language-server (VS Code's YAML extension, ...) validate and
    complete a playbook whose first line is
    `# yaml-language-server: $schema=<path or URL of this schema>`.
    """
    text = json.dumps(playbook_json_schema(), indent=2) + "\n"
    if out_file is None:
        # Plain write: rich would wrap long lines of JSON.
        sys.stdout.write(text)
        return
    try:
        out_file.write_text(text, encoding="utf-8")
    except OSError as e:
        raise _fail(SentinelError(f"{out_file}: cannot write: {e.strerror or e}")) from e
    _say(f"wrote the playbook JSON Schema to {out_file}")


@playbook_app.command()
def validate(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Playbook files or folders (default: remediation.playbooks_dir of the config)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Config file (default: $SENTINEL_CONFIG, else config.toml).",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Check playbooks as the daemon loads them.

    Prints one line per valid playbook and every problem with its file:line. Exit status:
    1 if any problem, 2 for a bad config.
    """
    try:
        settings = load_settings(config, serving=False)
    except ConfigError as e:
        raise _fail(e) from e
    targets = paths or _default_paths(settings)
    found = load_playbooks(targets, remediation=settings.remediation)
    for loaded in found.playbooks:
        _say(_describe(loaded))
    for error in found.errors:
        # Already one `file:line: where: what` per line, as compilers print them.
        _say(str(error))
    _say(
        f"{len(found.playbooks)} valid playbook(s), {len(found.errors)} failed, "
        f"in {', '.join(map(str, targets)) or 'no path (remediation.playbooks_dir is empty)'}"
    )
    if found.errors:
        raise typer.Exit(1)


def _default_paths(settings: Settings) -> list[Path]:
    folder = settings.remediation.playbooks_dir
    # Empty means "no playbooks" (sentinel.settings), not the config's own folder.
    return [settings.resolve(folder)] if folder else []


def _describe(loaded: LoadedPlaybook) -> str:
    p = loaded.playbook
    gates = f"auto >= {p.gates.auto_above:g}" if p.gates.allow_auto else "never auto"
    return (
        f"ok {p.name} ({loaded.path}): faults {', '.join(f.value for f in p.match.faults)}; "
        f"components {', '.join(p.match.components)}; "
        f"gates {gates}, approve >= {p.gates.approve_above:g}"
    )
