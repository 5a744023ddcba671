"""The private MariaDB server fixture: URLs work, databases are isolated, restarts keep data."""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import pymysql
import pytest

from bench import mariadb
from bench.mariadb import MariaDBServer, MariaDBUnavailable


def _connect(
    url: str, password: str | None = None
) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    """A PyMySQL connection to the database a `mysql+pymysql://` URL names."""
    parts = urlsplit(url)
    assert parts.scheme == "mysql+pymysql"
    assert parts.hostname is not None
    assert parts.port is not None
    return pymysql.connect(
        host=parts.hostname,
        port=parts.port,
        user=parts.username,
        password=(parts.password or "") if password is None else password,
        database=parts.path.lstrip("/"),
        connect_timeout=5,
        read_timeout=30,
    )


def test_url_round_trips_a_row(mariadb_url: str, mariadb_server: MariaDBServer) -> None:
    assert mariadb_url.startswith(f"mysql+pymysql://syncd:syncd@127.0.0.1:{mariadb_server.port}/")
    with _connect(mariadb_url) as conn:
        with conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE item (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL) ENGINE=InnoDB"
            )
            cur.execute("INSERT INTO item VALUES (%s, %s)", (1, "Grüße ✓"))
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("SELECT id, name FROM item")
            assert cur.fetchall() == ((1, "Grüße ✓"),)


def test_each_test_gets_a_fresh_empty_database(mariadb_url: str) -> None:
    with _connect(mariadb_url) as conn, conn.cursor() as cur:
        cur.execute("SHOW TABLES")
        assert cur.fetchall() == ()


def test_databases_are_distinct(mariadb_server: MariaDBServer) -> None:
    first = mariadb_server.create_database("t_fixture_distinct_a")
    second = mariadb_server.create_database("t_fixture_distinct_b")
    try:
        assert first != second
        with _connect(first) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE only_here (id INT)")
        with _connect(second) as conn, conn.cursor() as cur:
            cur.execute("SHOW TABLES")
            assert cur.fetchall() == ()
    finally:
        mariadb_server.drop_database("t_fixture_distinct_a")
        mariadb_server.drop_database("t_fixture_distinct_b")
    with mariadb_server.connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE 't\\_fixture\\_distinct\\_%'")
        assert cur.fetchall() == ()


def test_drop_ends_sessions_that_still_hold_locks(mariadb_server: MariaDBServer) -> None:
    """A leftover session in an open transaction holds a metadata lock that `DROP DATABASE`
    would wait for indefinitely; the fixture's drop ends it first."""
    url = mariadb_server.create_database("t_fixture_held")
    holder = _connect(url)
    try:
        with holder.cursor() as cur:
            cur.execute("CREATE TABLE held (id INT PRIMARY KEY) ENGINE=InnoDB")
            cur.execute("INSERT INTO held VALUES (1)")
            holder.commit()
            cur.execute("BEGIN")
            cur.execute("SELECT id FROM held FOR UPDATE")
        done = threading.Event()

        def drop() -> None:
            mariadb_server.drop_database("t_fixture_held")
            done.set()

        dropper = threading.Thread(target=drop)
        dropper.start()
        dropper.join(timeout=30)
        assert done.is_set(), "DROP DATABASE still waits for the leftover session"
    finally:
        holder.close()
    with mariadb_server.connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE 't\\_fixture\\_held'")
        assert cur.fetchall() == ()


def test_skip_locked_skips_rows_another_transaction_holds(mariadb_url: str) -> None:
    with _connect(mariadb_url) as setup, setup.cursor() as cur:
        cur.execute("CREATE TABLE job (id INT PRIMARY KEY, state VARCHAR(10)) ENGINE=InnoDB")
        cur.execute("INSERT INTO job VALUES (1, 'pending'), (2, 'pending')")
        setup.commit()
    with _connect(mariadb_url) as holder, _connect(mariadb_url) as claimer:
        with holder.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT id FROM job ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED")
            assert cur.fetchall() == ((1,),)
        with claimer.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT id FROM job ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED")
            assert cur.fetchall() == ((2,),)
        holder.rollback()
        claimer.rollback()


def test_stop_and_start_keep_port_and_data(mariadb_server: MariaDBServer, mariadb_url: str) -> None:
    port = mariadb_server.port
    with _connect(mariadb_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE kept (v INT)")
        cur.execute("INSERT INTO kept VALUES (42)")
        conn.commit()

    mariadb_server.stop()
    assert not mariadb_server.running
    with pytest.raises(pymysql.err.OperationalError) as refused:
        _connect(mariadb_url)
    assert refused.value.args[0] == 2003  # can't connect

    mariadb_server.start()
    assert mariadb_server.port == port
    with _connect(mariadb_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT v FROM kept")
        assert cur.fetchall() == ((42,),)


def test_kill_then_start_recovers_committed_data(
    mariadb_server: MariaDBServer, mariadb_url: str
) -> None:
    with _connect(mariadb_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE kept (v INT) ENGINE=InnoDB")
        cur.execute("INSERT INTO kept VALUES (7)")
        conn.commit()
    mariadb_server.kill()
    assert not mariadb_server.running
    mariadb_server.start()
    with _connect(mariadb_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT v FROM kept")
        assert cur.fetchall() == ((7,),)


def test_wrong_password_is_access_denied(mariadb_url: str) -> None:
    with pytest.raises(pymysql.err.OperationalError) as denied:
        _connect(mariadb_url, password="not-the-password")
    assert denied.value.args[0] == 1045


def test_server_accepts_many_connections(mariadb_server: MariaDBServer) -> None:
    with mariadb_server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT @@max_connections, @@character_set_server, @@time_zone")
        assert cur.fetchone() == (300, "utf8mb4", "+00:00")
    assert "MariaDB" in mariadb_server.version


def test_stop_from_another_thread_while_clients_wait(
    mariadb_server: MariaDBServer, mariadb_url: str
) -> None:
    """Stopping under a connected client (as the outage tests do under daemons) breaks its
    connection."""
    conn = _connect(mariadb_url)
    try:
        stopper = threading.Thread(target=mariadb_server.stop)
        stopper.start()
        stopper.join(timeout=60)
        assert not stopper.is_alive()
        with pytest.raises(pymysql.err.OperationalError), conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        conn.close()
        mariadb_server.start()


def test_missing_server_binary_is_an_error_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = (("mariadbd-not-installed", "/nonexistent/mariadbd"),)
    monkeypatch.setattr(mariadb, "BINARIES", missing)
    with pytest.raises(MariaDBUnavailable, match=r"install-test-deps\.sh"):
        mariadb.find_binaries()
