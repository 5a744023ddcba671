"""A private MariaDB server: `mariadbd` from Debian's mariadb-server package on 127.0.0.1, on a
free port, with a throw-away data directory and its own unix socket.

The test suite starts one (tests/mariadb.py hands out a fresh database on it per test) and so
does `python -m bench.queue_throughput --mariadb auto`; it lives here so that the benchmarks
need not import the tests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import pymysql

logger = logging.getLogger(__name__)

USER = "syncd"
PASSWORD = "syncd"
HOST = "127.0.0.1"
SKIP_ENV = "SYNCD_TEST_MARIADB"
"""Set to 0 to skip the tests that need the server (read by tests/mariadb.py)."""

_INSTALL_HINT = (
    "run `make test` or `scripts/install-test-deps.sh` to install mariadb-server, "
    f"or set {SKIP_ENV}=0 to skip the MariaDB tests"
)
# Each binary: the name looked up on PATH, then where Debian puts it (sbin may not be on PATH).
BINARIES = (
    ("mariadbd", "/usr/sbin/mariadbd"),
    ("mariadb-install-db", "/usr/bin/mariadb-install-db"),
)
_DB_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 60.0
_POLL_INTERVAL_S = 0.05
_LOG_TAIL_LINES = 30

# Small and fast: these are throw-away servers. The InnoDB settings must be the same for
# mariadb-install-db and every start so that the redo log is not resized on each start.
_SERVER_OPTIONS = (
    "--skip-name-resolve",
    "--innodb-buffer-pool-size=64M",
    "--innodb-log-file-size=16M",
    "--innodb-log-buffer-size=4M",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=0",
    "--innodb-use-native-aio=0",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_unicode_ci",
    "--loose-feedback=OFF",
)
_RUN_OPTIONS = (
    "--max-connections=300",
    "--default-time-zone=+00:00",
    "--performance-schema=OFF",
)
_BOOTSTRAP_SQL = f"""\
FLUSH PRIVILEGES;
CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';
CREATE USER '{USER}'@'localhost' IDENTIFIED BY '{PASSWORD}';
GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'localhost' WITH GRANT OPTION;
"""


class MariaDBUnavailable(RuntimeError):
    """The MariaDB server binaries are not installed, so the MariaDB tests cannot run."""


class MariaDBStartError(RuntimeError):
    """The private MariaDB server did not initialise, start or stop in time."""


def find_binaries() -> tuple[str, str]:
    """Return the paths of `mariadbd` and `mariadb-install-db`, or raise MariaDBUnavailable."""
    found: list[str] = []
    for name, fallback in BINARIES:
        path = shutil.which(name) or (fallback if os.access(fallback, os.X_OK) else None)
        if path is None:
            raise MariaDBUnavailable(f"{name} not found; {_INSTALL_HINT}")
        found.append(path)
    return found[0], found[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class MariaDBServer:
    """One private `mariadbd` on 127.0.0.1 with its own data directory, socket and port.

    `stop()` keeps the data directory and the port, so `start()` brings the same server back
    where clients expect it (tests of a database outage rely on that). `close()` stops it and
    removes everything it wrote.
    """

    def __init__(self, base_dir: Path | None = None) -> None:
        self._mariadbd, self._install_db = find_binaries()
        self._owns_base_dir = base_dir is None
        self.base_dir = base_dir if base_dir is not None else _make_base_dir()
        self.datadir = self.base_dir / "data"
        self.socket_path = self.base_dir / "mysqld.sock"
        self.error_log = self.datadir / "error.log"
        if len(str(self.socket_path)) > _SOCKET_PATH_MAX:
            raise MariaDBStartError(f"socket path too long for a unix socket: {self.socket_path}")
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._version: str | None = None

    def __enter__(self) -> MariaDBServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The TCP port the server listens on; fixed at the first start."""
        if self._port is None:
            raise MariaDBStartError("the server has not been started yet")
        return self._port

    @property
    def version(self) -> str:
        """The server's version string, as `SELECT VERSION()` reports it."""
        if self._version is None:
            raise MariaDBStartError("the server has not been started yet")
        return self._version

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (initialising the data directory the first time); wait until ready."""
        if self.running:
            return
        if not (self.datadir / "mysql").is_dir():
            self._install()
        started = time.monotonic()
        if self._port is not None:
            self._launch(self._port)
        else:
            self._start_on_free_port()
        seconds = round(time.monotonic() - started, 3)
        logger.info(
            "mariadbd started on port %d in %.2f s",
            self.port,
            seconds,
            extra={"action": "mariadb_start", "port": self.port, "seconds": seconds},
        )

    def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM), keeping its data directory and port."""
        process = self._process
        if process is None or process.poll() is not None:
            self._process = None
            return
        self.resume()  # a frozen server would never act on SIGTERM
        process.terminate()
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=_STOP_TIMEOUT_S)
            raise MariaDBStartError(
                f"mariadbd did not shut down in {_STOP_TIMEOUT_S:.0f} s; killed it\n"
                + self.error_log_tail()
            ) from None
        finally:
            self._process = None

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would; `start()` recovers it."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait(timeout=_STOP_TIMEOUT_S)
        self._process = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing answers, as in a
        network partition; `resume()` thaws it."""
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a server frozen by `pause()`."""
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop the server and remove its files (when it created its own directory)."""
        try:
            self.stop()
        finally:
            if self._owns_base_dir:
                shutil.rmtree(self.base_dir, ignore_errors=True)

    def url(self, name: str) -> str:
        """The SQLAlchemy URL of database `name` for the `syncd` user over TCP."""
        return f"mysql+pymysql://{USER}:{PASSWORD}@{HOST}:{self.port}/{_checked(name)}"

    def create_database(self, name: str) -> str:
        """Create the empty database `name` (utf8mb4) and return its URL."""
        self.execute(
            f"CREATE DATABASE `{_checked(name)}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        )
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name` if it exists, first ending every session still using it.

        A session left behind by a test (say, a connection whose query was cut off by a
        timeout while it held row locks) keeps a metadata lock that `DROP DATABASE` would wait
        for without end; killing it is the teardown's business, not a reason to hang."""
        name = _checked(name)
        with self.connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM information_schema.processlist "
                "WHERE db = %s AND id <> CONNECTION_ID()",
                (name,),
            )
            for (session,) in cursor.fetchall():
                with contextlib.suppress(pymysql.err.MySQLError):  # it may have just ended
                    cursor.execute(f"KILL {int(session)}")
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")

    def execute(self, statement: str) -> None:
        """Run one administrative statement as the `syncd` user over the unix socket."""
        with self.connect() as conn, conn.cursor() as cursor:
            cursor.execute(statement)

    def connect(
        self, database: str | None = None
    ) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
        """A new autocommit PyMySQL connection as `syncd` over the server's unix socket."""
        return pymysql.connect(
            unix_socket=str(self.socket_path),
            user=USER,
            password=PASSWORD,
            database=database,
            autocommit=True,
            connect_timeout=5,
        )

    def error_log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last `lines` lines of the server's error log, for failure messages."""
        try:
            text = self.error_log.read_text(errors="replace")
        except OSError as exc:
            return f"(no error log at {self.error_log}: {exc})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last lines of {self.error_log} ---\n{tail}"

    def _install(self) -> None:
        """Create the system tables, the socket-only root and the `syncd` user."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        bootstrap = self.base_dir / "bootstrap.sql"
        bootstrap.write_text(_BOOTSTRAP_SQL)
        command = [
            self._install_db,
            "--no-defaults",
            f"--datadir={self.datadir}",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
            f"--extra-file={bootstrap}",
            *_user_option(),
            # Its own temporary files too: a mariadbd starting with the tmpdir in common (/tmp)
            # removes every `#sql*` file there, another bootstrap's temporary tables included.
            f"--tmpdir={self.base_dir}",
            *_SERVER_OPTIONS,
        ]
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_START_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(self.datadir, ignore_errors=True)
            raise MariaDBStartError(f"mariadb-install-db took over {exc.timeout} s") from None
        if result.returncode != 0:
            shutil.rmtree(self.datadir, ignore_errors=True)  # so a later start() retries cleanly
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise MariaDBStartError(
                f"mariadb-install-db failed with exit code {result.returncode}:\n{output}"
            )

    def _start_on_free_port(self, attempts: int = 3) -> None:
        """Launch on a fresh free port, trying again if another process took it meanwhile."""
        for attempt in range(1, attempts + 1):
            port = free_port()
            try:
                self._launch(port)
            except MariaDBStartError:
                if attempt == attempts or "Address already in use" not in self.error_log_tail():
                    raise
                logger.warning("port %d was taken; trying another", port)
            else:
                self._port = port
                return

    def _launch(self, port: int) -> None:
        """Start mariadbd on `port` and wait until it accepts connections."""
        self.socket_path.unlink(missing_ok=True)
        command = [
            self._mariadbd,
            "--no-defaults",
            *_user_option(),
            f"--datadir={self.datadir}",
            f"--socket={self.socket_path}",
            f"--port={port}",
            f"--bind-address={HOST}",
            f"--pid-file={self.base_dir / 'mysqld.pid'}",
            f"--log-error={self.error_log}",
            f"--tmpdir={self.base_dir}",
            *_SERVER_OPTIONS,
            *_RUN_OPTIONS,
        ]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a ^C in the terminal must not reach it; stop() does
        )
        try:
            self._version = self._wait_ready(self._process)
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> str:
        """Poll the socket until the server answers, it exits, or the deadline passes."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise MariaDBStartError(
                    f"mariadbd exited with code {process.returncode} while starting\n"
                    + self.error_log_tail()
                )
            if self.socket_path.exists():
                try:
                    with self.connect() as conn, conn.cursor() as cursor:
                        cursor.execute("SELECT VERSION()")
                        row = cursor.fetchone()
                        assert row is not None
                        return str(row[0])
                except pymysql.err.OperationalError as exc:
                    last_error = exc
            time.sleep(_POLL_INTERVAL_S)
        raise MariaDBStartError(
            f"mariadbd was not ready within {_START_TIMEOUT_S:.0f} s (last error: {last_error})\n"
            + self.error_log_tail()
        )


def _make_base_dir() -> Path:
    """A new private directory, short enough for the unix socket path."""
    base = Path(tempfile.mkdtemp(prefix="syncd-mariadb-"))
    if len(str(base / "mysqld.sock")) > _SOCKET_PATH_MAX:
        base.rmdir()
        base = Path(tempfile.mkdtemp(prefix="syncd-mariadb-", dir="/tmp"))
    return base


def _user_option() -> list[str]:
    """mariadbd refuses to run as root unless told to; as anyone else it must not be told."""
    return ["--user=root"] if os.geteuid() == 0 else []


def _checked(name: str) -> str:
    """`name` if it is a plain database name (so it is safe to quote with backticks)."""
    if not _DB_NAME.match(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name
