"""systemd integration: the sd_notify protocol and the watchdog, without a C dependency.

systemd hands a `Type=notify` service the address of a unix datagram socket in `NOTIFY_SOCKET`
and, with `WatchdogSec=`, the watchdog period in `WATCHDOG_USEC`. The service reports its state by
sending newline-separated `KEY=value` datagrams there (`READY=1`, `STATUS=...`, `STOPPING=1`,
`WATCHDOG=1`); see sd_notify(3). That is all libsystemd does for this, so a plain socket is enough.

Nothing here reads `os.environ`: the caller passes the environment mapping in (settings and
environment are read once in `main()`), which also keeps the tests free of global state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


def _socket_address(value: str) -> str | None:
    """The `NOTIFY_SOCKET` value as a `sendto` address; `@name` is the abstract namespace."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def _line(key: str, value: str | int) -> str:
    """One `KEY=value` line; the protocol is line-based, so newlines in a value become spaces."""
    return f"{key.upper()}={str(value).replace(chr(10), ' ')}"


class Notifier:
    """Sends sd_notify messages to the socket named by `NOTIFY_SOCKET`, when there is one.

    Without `NOTIFY_SOCKET` (not started by systemd, or not `Type=notify`) every call is a no-op,
    so the daemon calls it unconditionally. Sending never raises into the caller and never blocks
    the event loop: the socket is non-blocking and a message that does not fit is dropped with a
    log line, because a status update is never worth stalling the daemon for. When the socket is
    gone (systemd restarted, a test's receiver closed) a warning is logged once, not per message.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(raw) if raw else None
        self._sock: socket.socket | None = None
        self._gone_warned = False
        self._dropping = False
        if raw and self._address is None:
            logger.warning(
                "NOTIFY_SOCKET %r is not a unix socket path or @abstract name; "
                "systemd notifications are disabled",
                raw,
                extra={"action": "sd_notify"},
            )

    @property
    def enabled(self) -> bool:
        """True when a notification socket was given, so messages are actually sent."""
        return self._address is not None

    def ready(self) -> bool:
        """Tell systemd that start-up finished (migrated, listening, engine running)."""
        return self.send(READY=1)

    def stopping(self) -> bool:
        """Tell systemd that a graceful shutdown has begun."""
        return self.send(STOPPING=1)

    def status(self, text: str) -> bool:
        """Set the one-line status shown by `systemctl status`."""
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        """Reset the systemd watchdog timer: the daemon is alive and healthy."""
        return self.send(WATCHDOG=1)

    def send(self, **fields: str | int) -> bool:
        """Send one message made of `KEY=value` lines; True if it was handed to the socket.

        Keys are upper-cased (`status=` is `STATUS=`); newlines in values are replaced by spaces
        because the protocol is line-based. Errors are logged, never raised.
        """
        if self._address is None or not fields:
            return False
        lines = [_line(key, value) for key, value in fields.items()]
        payload = "\n".join(lines).encode(errors="replace")
        try:
            sock = self._socket()
            sock.sendto(payload, self._address)
        except BlockingIOError:
            self._log_dropped(lines)
            return False
        except OSError as exc:
            self._log_gone(exc)
            return False
        self._gone_warned = False
        self._dropping = False
        return True

    def close(self) -> None:
        """Close the socket; a later `send` opens a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.setblocking(False)
            self._sock = sock
        return self._sock

    def _log_dropped(self, lines: list[str]) -> None:
        level = logging.DEBUG if self._dropping else logging.WARNING
        self._dropping = True
        logger.log(
            level,
            "systemd notification socket is full; dropped %s",
            ", ".join(line.partition("=")[0] for line in lines),
            extra={"action": "sd_notify"},
        )

    def _log_gone(self, exc: OSError) -> None:
        if self._gone_warned:
            return
        self._gone_warned = True
        logger.warning(
            "cannot send to the systemd notification socket: %s; "
            "further failures are not logged until a send succeeds",
            exc,
            extra={"action": "sd_notify"},
        )


def watchdog_interval(env: Mapping[str, str], *, pid: int | None = None) -> float | None:
    """The watchdog period in seconds from `WATCHDOG_USEC`, or None when there is no watchdog.

    `WATCHDOG_PID`, when set, names the process the watchdog is meant for; in any other process
    (a child that inherited the environment) the answer is None, as in sd_watchdog_enabled(3).
    `pid` defaults to the current process id.
    """
    usec_text = env.get("WATCHDOG_USEC", "")
    if not usec_text:
        return None
    pid_text = env.get("WATCHDOG_PID", "")
    if pid_text:
        try:
            meant_for = int(pid_text)
        except ValueError:
            logger.warning("ignoring malformed WATCHDOG_PID %r", pid_text)
            return None
        if meant_for != (os.getpid() if pid is None else pid):
            return None
    try:
        usec = int(usec_text)
    except ValueError:
        logger.warning("ignoring malformed WATCHDOG_USEC %r", usec_text)
        return None
    if usec <= 0:
        return None
    return usec / 1_000_000


async def watchdog_loop(
    notifier: Notifier,
    interval_s: float,
    healthy: Callable[[], bool],
    *,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Send `WATCHDOG=1` every `interval_s / 2` while `healthy()` is true; runs until cancelled.

    Running on the event loop is the point: a blocked or starved loop stops the pings, and so
    does an unhealthy engine (`healthy` returns False or raises), and systemd then restarts the
    service after `WatchdogSec`. `sleep` is injectable so tests can step the loop.
    """
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    period = interval_s / 2
    was_healthy = True
    while True:
        is_healthy = _check(healthy)
        if is_healthy:
            notifier.watchdog()
        if is_healthy != was_healthy:
            _log_health_change(is_healthy)
            was_healthy = is_healthy
        await sleep(period)


def _check(healthy: Callable[[], bool]) -> bool:
    try:
        return bool(healthy())
    except Exception:
        logger.exception("watchdog health check raised; treating as unhealthy")
        return False


def _log_health_change(is_healthy: bool) -> None:
    if is_healthy:
        logger.info("daemon healthy again; watchdog pings resumed", extra={"action": "watchdog"})
    else:
        logger.error(
            "daemon unhealthy; watchdog pings paused (systemd restarts it after WatchdogSec)",
            extra={"action": "watchdog"},
        )


async def status_loop(
    notifier: Notifier,
    describe: Callable[[], Awaitable[str]],
    interval_s: float,
    *,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Send `STATUS=<describe()>` now and then every `interval_s`; runs until cancelled.

    `describe` may fail (the database is down): the status then says so instead of going stale.
    """
    while True:
        try:
            text = await describe()
        except Exception as exc:
            text = f"status unavailable: {type(exc).__name__}"
        notifier.status(text)
        await sleep(interval_s)
