"""Running a real sentinel daemon inside the test process (its own thread and event
loop, a real socket on 127.0.0.1), and building settings for it."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sentinel.adapters.db import SqlStore
from sentinel.clock import Clock, SystemClock
from sentinel.daemon import RunningDaemon, daemon_thread
from sentinel.settings import Settings


def make_settings(
    tmp_path: Path, store_url: str | None = None, **sections: Mapping[str, Any]
) -> Settings:
    """Settings on port 0 (any free port) and a SQLite store in ``tmp_path``."""
    data: dict[str, Any] = {
        "server": {"port": 0},
        "store": {"url": store_url or f"sqlite:///{tmp_path / 'sentinel.db'}"},
        "base_dir": str(tmp_path),
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    # JSON mode, as load_settings validates a config file.
    return Settings.model_validate_json(json.dumps(data))


@contextmanager
def running_daemon(
    settings: Settings,
    *,
    store: SqlStore | None = None,
    clock: Clock | None = None,
    start_timeout: float = 30.0,
) -> Iterator[RunningDaemon]:
    """``clock``: e.g. a ``ScaledClock`` shared with a live simulation."""
    with daemon_thread(
        settings, clock or SystemClock(), store=store, start_timeout=start_timeout
    ) as running:
        yield running
