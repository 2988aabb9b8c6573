"""Shared fixtures. Real backends (PostgreSQL, Prometheus) live in tests/fixtures/ and are
started on loopback by the tests themselves."""

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.prometheus", "tests.fixtures.slack"]
