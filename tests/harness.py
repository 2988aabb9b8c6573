"""Running a real sentinel daemon inside the test process (its own thread and event
loop, a real socket on 127.0.0.1), and building settings for it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentinel.adapters.db import SqlStore
from sentinel.clock import Clock, SystemClock
from sentinel.daemon import Daemon
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


@dataclass
class RunningDaemon:
    daemon: Daemon
    url: str
    loop: asyncio.AbstractEventLoop

    @property
    def store(self) -> SqlStore:
        assert self.daemon.store is not None
        return self.daemon.store


@contextmanager
def running_daemon(
    settings: Settings,
    *,
    store: SqlStore | None = None,
    clock: Clock | None = None,
    start_timeout: float = 30.0,
) -> Iterator[RunningDaemon]:
    """``clock``: e.g. a ``ScaledClock`` shared with a live simulation."""
    daemon = Daemon(settings, clock or SystemClock(), store=store)
    loop_box: list[asyncio.AbstractEventLoop] = []
    errors: list[BaseException] = []

    async def main() -> None:
        loop_box.append(asyncio.get_running_loop())
        await daemon.serve()

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as e:  # noqa: BLE001  # re-raised in the test thread below
            errors.append(e)

    thread = threading.Thread(target=target, name="sentinel-daemon", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while daemon.port is None:
        if errors:
            raise errors[0]
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the daemon did not start")
        time.sleep(0.01)
    running = RunningDaemon(daemon, f"http://127.0.0.1:{daemon.port}", loop_box[0])
    try:
        yield running
    finally:
        running.loop.call_soon_threadsafe(daemon.request_stop)
        thread.join(60)
        assert not thread.is_alive(), "the daemon did not stop"
        if errors:
            raise errors[0]
