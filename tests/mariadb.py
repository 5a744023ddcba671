"""The pytest fixtures that hand out the suite's private MariaDB server (`bench.mariadb`).

The suite never relies on a MariaDB someone else runs: it starts its own on 127.0.0.1 and gives
each test a fresh empty database on it. Register it with ``pytest_plugins = ["tests.mariadb"]``
(or ``-p tests.mariadb`` on the command line).

Set ``SYNCD_TEST_MARIADB=0`` to skip the tests that need it; otherwise a missing server binary
is an error, not a skip, so CI cannot go green without having run them.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Iterator

import pytest

from bench.mariadb import SKIP_ENV, MariaDBServer

logger = logging.getLogger(__name__)


def _database_name(node_name: str) -> str:
    """A unique database name that still says which test it belongs to."""
    readable = re.sub(r"[^A-Za-z0-9]+", "_", node_name).strip("_").lower()[:40]
    return f"t_{readable}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    """The session's private MariaDB server, started once and removed at the end."""
    if os.environ.get(SKIP_ENV) == "0":
        pytest.skip(f"MariaDB tests disabled by {SKIP_ENV}=0")
    started = time.monotonic()
    server = MariaDBServer()
    try:
        server.start()
        logger.info(
            "mariadb %s ready on port %d in %.2f s",
            server.version,
            server.port,
            time.monotonic() - started,
        )
        yield server
    finally:
        server.close()


@pytest.fixture
def mariadb_url(mariadb_server: MariaDBServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a fresh, empty database on the session's server, dropped after the test."""
    if not mariadb_server.running:  # an earlier test stopped or killed it and failed
        mariadb_server.start()
    name = _database_name(request.node.name)
    url = mariadb_server.create_database(name)
    yield url
    if mariadb_server.running:
        mariadb_server.drop_database(name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the server `mariadb`, so `-m "not mariadb"` selects the rest."""
    for item in items:
        if "mariadb_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.mariadb)
