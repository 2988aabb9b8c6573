"""A free TCP port on 127.0.0.1, for the servers the tests start (the daemon, PostgreSQL,
Prometheus, fakes of Slack and LLM endpoints) and for addresses that must refuse."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now (the OS picks it; the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
