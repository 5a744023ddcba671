"""Files an import task works from: uploaded workbooks and record payloads.

They live under `<state_dir>/uploads` with random names, from the request that created the task
until the task ends (completed, failed or cancelled; not while a retry is pending). The bus
subscriber `ImportFiles.on_finished` removes them then; `sweep` at start-up removes the files of
tasks that ended while the daemon was down, and files no task refers to (a crash between the
upload and the task's creation). The files are node-local: on a cluster sharing one MariaDB,
give the nodes a shared state directory, or run imports on one node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from schedule.events import EventBus, EventKind, TaskEvent

log = logging.getLogger(__name__)

UPLOAD_DIR = "uploads"
FILE_NAME = re.compile(r"^[0-9a-f]{32}\.(xlsx|json)$")
IMPORT_TYPES = frozenset({"stock_import", "records_import"})
ORPHAN_AGE_S = 60.0
"""A file no unfinished task refers to is removed at start-up once it is this old (an upload
streaming in on another node sharing the directory, its task not created yet, is younger)."""

HANDOFF_BYTES = 64 * 1024 * 1024
"""At most this much (as sent) of parsed record payloads waits in memory for its task. Parsed
records take several times their JSON size, and a payload whose task another node runs waits
here until newer ones push it out, so the bound is kept modest; a bigger payload is simply
read from its file by the task."""

LiveFiles = Callable[[], Awaitable[set[str]]]


class ParsedPayloads:
    """Record payloads the API has parsed, handed in memory to the import task of this daemon.

    `POST /api/tools/import` must parse its body to answer 400 or 422, and the task needs the
    same records: parsing 100,000 records twice cost as much as validating them. The stored
    file stays the durable copy: the task takes the parsed records once (its first attempt on
    this daemon) and reads the file whenever they are not here (a retry, a restart, another
    node, a payload evicted to keep the held total under `limit_bytes`).
    """

    def __init__(self, limit_bytes: int = HANDOFF_BYTES) -> None:
        self.limit_bytes = limit_bytes
        self._items: OrderedDict[str, tuple[list[Any], int]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def keep(self, name: str, records: list[Any], size: int) -> None:
        """Hold the parsed `data` of the payload stored as `name` (`size` bytes as sent),
        evicting the oldest ones beyond the limit."""
        if size > self.limit_bytes:
            return
        with self._lock:
            self._items[name] = (records, size)
            self._held += size
            while self._held > self.limit_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._held -= dropped

    def take(self, name: str) -> list[Any] | None:
        """The parsed records of `name`, no longer held; None when they are not here."""
        with self._lock:
            item = self._items.pop(name, None)
            if item is None:
                return None
            self._held -= item[1]
            return item[0]

    def drop(self, name: str) -> None:
        """Forget `name` (its task ended, or was never created)."""
        self.take(name)


PARSED = ParsedPayloads()
"""This process's hand-off (file names are random, so every app in the process can share it)."""


def is_file_name(name: str) -> bool:
    """True for a name `ImportFiles.new_name` could have made (no paths, no other suffixes)."""
    return bool(FILE_NAME.fullmatch(name))


def file_of(parameters: dict[str, Any]) -> str | None:
    """The import file a task's parameters name, if any."""
    name = parameters.get("file")
    return name if isinstance(name, str) and is_file_name(name) else None


class ImportFiles:
    """The upload directory of this daemon."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / UPLOAD_DIR
        self._pending: set[asyncio.Task[None]] = set()

    @staticmethod
    def new_name(suffix: str) -> str:
        """A fresh random file name with `suffix` ("xlsx" or "json")."""
        return f"{secrets.token_hex(16)}.{suffix}"

    def path(self, name: str) -> Path:
        """The path of a file name made by `new_name`; ValueError for anything else."""
        if not is_file_name(name):
            raise ValueError(f"not an import file name: {name!r}")
        return self.root / name

    def ensure_root(self) -> None:
        """Create the directory (blocking; call in a thread)."""
        self.root.mkdir(parents=True, exist_ok=True)

    async def write(self, name: str, data: bytes) -> Path:
        """Write a whole file (a record payload) in a worker thread."""
        path = self.path(name)

        def write() -> None:
            self.ensure_root()
            path.write_bytes(data)

        await asyncio.to_thread(write)
        return path

    async def remove(self, name: str) -> None:
        """Delete a file (and any parsed copy of it held for its task); a file already gone
        is fine."""
        path = self.path(name)
        PARSED.drop(name)
        await asyncio.to_thread(path.unlink, True)

    def subscribe(self, bus: EventBus) -> None:
        """Remove the files of import tasks as they end."""
        bus.subscribe(TaskEvent, [EventKind.FINISHED], self.on_finished)

    def on_finished(self, event: TaskEvent) -> None:
        """An import task ended for good: remove its file."""
        if event.task.task_type not in IMPORT_TYPES:
            return
        if event.outcome is not None and not event.outcome.status.finished:
            return  # a retry is pending: it needs the file
        name = file_of(event.task.parameters)
        if name is None:
            return
        task = asyncio.get_running_loop().create_task(self.remove(name))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for removals in flight (at shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def sweep(self, live_files: LiveFiles) -> int:
        """Remove the files no pending or running task needs; how many went."""
        names = await asyncio.to_thread(self._listing)
        if not names:
            return 0
        keep = await live_files()
        removed = 0
        now = time.time()
        for name, mtime in names.items():
            if name not in keep and now - mtime > ORPHAN_AGE_S:
                with contextlib.suppress(OSError):
                    await self.remove(name)
                    removed += 1
        if removed:
            log.info("removed %d import file(s) of ended tasks", removed, extra={"action": "sweep"})
        return removed

    def _listing(self) -> dict[str, float]:
        if not self.root.is_dir():
            return {}
        return {p.name: p.stat().st_mtime for p in self.root.iterdir() if is_file_name(p.name)}
