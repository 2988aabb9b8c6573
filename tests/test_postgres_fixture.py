"""The PostgreSQL test fixtures start a real server, survive a restart and isolate tests."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.fixtures.postgres import PostgresServer

pytestmark = pytest.mark.postgres


def _psycopg_conninfo(url: str) -> str:
    """The psycopg connection string for a SQLAlchemy ``postgresql+psycopg://`` URL."""
    parsed = make_url(url)
    assert parsed.drivername == "postgresql+psycopg"
    return psycopg.conninfo.make_conninfo(
        host=parsed.host, port=parsed.port, user=parsed.username, dbname=parsed.database
    )


def _table_names(url: str) -> list[str]:
    with psycopg.connect(_psycopg_conninfo(url)) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        ).fetchall()
    return [row[0] for row in rows]


def test_url_shape(postgres_server: PostgresServer, postgres_url: str) -> None:
    parsed = make_url(postgres_url)
    assert parsed.drivername == "postgresql+psycopg"
    assert parsed.host == "127.0.0.1"
    assert parsed.port == postgres_server.port
    assert parsed.username == "sentinel"
    assert parsed.password is None
    assert postgres_server.url("abc") == (
        f"postgresql+psycopg://sentinel@127.0.0.1:{postgres_server.port}/abc"
    )


def test_psycopg_create_insert_read_back(postgres_url: str) -> None:
    with psycopg.connect(_psycopg_conninfo(postgres_url)) as conn:
        conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO notes (body) VALUES (%s), (%s)", ("alpha", "beta"))
        conn.commit()
    with psycopg.connect(_psycopg_conninfo(postgres_url)) as conn:
        rows = conn.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
        server_addr = conn.execute("SELECT host(inet_server_addr())").fetchone()
    assert rows == [(1, "alpha"), (2, "beta")]
    assert server_addr == ("127.0.0.1",)  # served over TCP on loopback


def test_sqlalchemy_engine_works(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE kv (k text PRIMARY KEY, v int)"))
            conn.execute(text("INSERT INTO kv VALUES ('a', 1), ('b', 2)"))
        with engine.connect() as conn:
            total = conn.execute(text("SELECT sum(v) FROM kv")).scalar_one()
            version = conn.execute(text("SHOW server_version")).scalar_one()
    finally:
        engine.dispose()
    assert total == 3
    assert int(version.split(".")[0]) >= 13


def test_restart_keeps_data(postgres_server: PostgresServer, postgres_url: str) -> None:
    port_before = postgres_server.port
    with psycopg.connect(_psycopg_conninfo(postgres_url)) as conn:
        conn.execute("CREATE TABLE survivors (name text)")
        conn.execute("INSERT INTO survivors VALUES ('kept')")
        conn.commit()
        pid_before = conn.execute("SELECT pg_postmaster_start_time()").fetchone()

    postgres_server.restart()

    assert postgres_server.running
    assert postgres_server.port == port_before
    with psycopg.connect(_psycopg_conninfo(postgres_url)) as conn:
        assert conn.execute("SELECT name FROM survivors").fetchall() == [("kept",)]
        pid_after = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    assert pid_after != pid_before  # it really was a new postmaster


def test_restart_cuts_open_connections_then_serves_again(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    conn = psycopg.connect(_psycopg_conninfo(postgres_url), autocommit=True)
    try:
        conn.execute("SELECT 1")
        postgres_server.restart()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        conn.close()
    with psycopg.connect(_psycopg_conninfo(postgres_url)) as fresh:
        assert fresh.execute("SELECT 1").fetchone() == (1,)


def test_databases_are_fresh_and_distinct(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    # A database of our own, made the same way the fixture makes one.
    other = "t_manual_other_db"
    postgres_server.create_database(other)
    try:
        other_url = postgres_server.url(other)
        assert make_url(other_url).database != make_url(postgres_url).database
        assert _table_names(postgres_url) == []
        assert _table_names(other_url) == []
        with psycopg.connect(_psycopg_conninfo(postgres_url)) as conn:
            conn.execute("CREATE TABLE only_here (x int)")
            conn.commit()
        assert _table_names(postgres_url) == ["only_here"]
        assert _table_names(other_url) == []
    finally:
        postgres_server.drop_database(other)
    with psycopg.connect(postgres_server.conninfo("postgres")) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (other,)
        ).fetchone() == (0,)


_seen: dict[str, str] = {}


@pytest.mark.parametrize("run", ["first", "second"])
def test_each_test_gets_its_own_empty_database(postgres_url: str, run: str) -> None:
    # Both runs create the same table: this only works if each gets an empty database.
    assert _table_names(postgres_url) == []
    with psycopg.connect(_psycopg_conninfo(postgres_url)) as conn:
        conn.execute("CREATE TABLE leftover (x int)")
        conn.commit()
    _seen[run] = make_url(postgres_url).database or ""
    # xdist may run the two on different workers (each with a module of its own): the
    # names are compared where both ran, in either order.
    if len(_seen) == 2:
        assert _seen["first"] != _seen["second"]


def test_previous_test_databases_were_dropped(postgres_server: PostgresServer) -> None:
    names = set(_seen.values())
    assert names, "runs after test_each_test_gets_its_own_empty_database"
    with psycopg.connect(postgres_server.conninfo()) as conn:
        rows = conn.execute("SELECT datname FROM pg_database").fetchall()
    assert names.isdisjoint(row[0] for row in rows)


def test_drop_database_with_open_connection(postgres_server: PostgresServer) -> None:
    name = "t_dropped_while_open"
    postgres_server.create_database(name)
    conn = psycopg.connect(postgres_server.conninfo(name), autocommit=True)
    try:
        postgres_server.drop_database(name)  # FORCE: terminates the open session
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        conn.close()
    postgres_server.drop_database(name)  # idempotent
