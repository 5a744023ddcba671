"""A loopback TCP server that accepts and never finishes talking: a source stuck in its driver.

Each connection gets the first bytes of a MySQL handshake packet header announcing a large
packet, then one more byte every `every_s` seconds, forever. A driver waiting for the handshake
(pymysql reads the whole packet before it returns) stays blocked in `recv`, and a per-read
timeout does not help: every read gets a byte before it times out. Closing the tarpit closes
the connections, which ends the driver's read with an error, so the test leaves no thread
behind.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class Tarpit:
    """`with Tarpit() as pit: ... pit.port ... pit.accepted.wait(...)`"""

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s = every_s
        self.accepted = threading.Event()
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.port: int = self._server.getsockname()[1]
        self._clients: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Tarpit:
        thread = threading.Thread(target=self._accept, name="tarpit-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def connections(self) -> int:
        """How many connections were accepted so far."""
        with self._lock:
            return len(self._clients)

    def close(self) -> None:
        """Stop accepting and drop every connection (the blocked reads then fail)."""
        self._stop.set()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._clients.append(client)
            self.accepted.set()
            thread = threading.Thread(target=self._trickle, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _trickle(self, client: socket.socket) -> None:
        # A packet header announcing 16 MB of payload (sequence id 0), then its bytes, slowly.
        payload = b"\xff\xff\xff\x00"
        try:
            client.sendall(payload)
            while not self._stop.wait(self.every_s):
                client.sendall(b"\x0a")
        except OSError:
            return
