"""Shared fixtures. Real backends (PostgreSQL, Prometheus) live in tests/fixtures/ and are
started on loopback by the tests themselves. ``store_url``: an empty database on each
store backend in turn (a test using it runs on SQLite and on PostgreSQL)."""

from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.prometheus", "tests.fixtures.slack"]


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database on the backend under test."""
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "sentinel.db")
    return str(request.getfixturevalue("postgres_url"))
