"""Completion callbacks: one signed POST of the task JSON to its `callback_url` once it ends.

Deliveries are kept in the database (`sync_tasks.callback_*`), not in memory: the sender claims
due ones (`TaskStore.callbacks`, whose claim also keeps other nodes off them for a while), sends
each from a background asyncio task, and records the result; a failure is retried with
tenacity's exponential backoff with jitter up to `callback_max_attempts`. So a delivery survives
a restart, a receiver that hangs or answers 500 costs only its own retries (never the task's
result or a worker slot), and a task that ended anywhere (engine, cancel, rescue, external worker)
is delivered. The bus's `finished` events only wake the sender early; it also polls. Each
delivery attempt is published on the bus (`callback_attempted`: delivered, retry or failed).

Callbacks go out under the egress policy of HTTP sources (`engine.sources.egress`): the hosts of
`SYNCD_CALLBACK_ALLOWED_HOSTS` (their only destinations) count as listed there, and so do those of
`SYNCD_EGRESS_ALLOWED_HOSTS`; redirects are not followed.

The body is the task JSON; `X-Syncd-Signature: sha256=<hex>` is the HMAC-SHA256 of the exact body
bytes with `SYNCD_CALLBACK_SECRET`, so a receiver can check it came from syncd, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from tenacity import RetryCallState, wait_exponential, wait_random

from config.settings import Settings, normalize_host
from engine.engine import DB_ERRORS, reraise_if_cancelling
from engine.sources.egress import EgressPolicy, client_session, refusal_of
from schedule.clock import utcnow
from schedule.events import CallbackEvent, EventBus, EventKind, TaskEvent
from schedule.records import CallbackDelivery
from schedule.store import TaskStore
from schedule.task import TaskRecord

log = logging.getLogger(__name__)
Render = Callable[[TaskRecord], dict[str, Any]]
SIGNATURE_HEADER = "X-Syncd-Signature"
BATCH = 20
MAX_IN_FLIGHT = 16
MAX_BACKOFF_S = 600.0


def sign(secret: str, body: bytes) -> str:
    """The `X-Syncd-Signature` value for `body`: `sha256=` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def egress_policy(settings: Settings) -> EgressPolicy:
    """The egress policy of callbacks: their allowed hosts count as listed."""
    hosts = [*settings.egress_allowed_hosts, *settings.callback_allowed_hosts]
    return EgressPolicy.parse(hosts, setting="SYNCD_CALLBACK_ALLOWED_HOSTS")


class CallbackSender:
    """Delivers completion callbacks in the background; see the module docstring."""

    def __init__(
        self,
        store: TaskStore,
        settings: Settings,
        render: Render,
        bus: EventBus | None = None,
        poll_s: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.settings = settings
        self.render = render
        self.bus = bus if bus is not None else EventBus()
        self.poll_s = poll_s
        self.clock = clock
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP client and start polling for due deliveries."""
        timeout = aiohttp.ClientTimeout(total=self.settings.callback_timeout_s)
        self._session = client_session(egress_policy(self.settings), timeout=timeout)
        self._loop_task = asyncio.create_task(self._run(), name="syncd-callbacks")

    async def stop(self) -> None:
        """Stop sending; deliveries cut short are sent again after their claim runs out."""
        tasks = [t for t in (self._loop_task, *self._in_flight) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def subscribe(self, bus: EventBus) -> None:
        """Send a finished task's callback at once instead of at the next poll."""
        bus.subscribe(TaskEvent, [EventKind.FINISHED], self.on_finished)

    def on_finished(self, event: TaskEvent) -> None:
        """A task ended: when it has a callback, send it now."""
        if event.task.callback_url:
            self._wake.set()

    def wake(self) -> None:
        """Look for due deliveries now instead of at the next poll."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            claimed = 0
            if len(self._in_flight) < MAX_IN_FLIGHT:
                claimed = await self._claim_and_send()
            if claimed >= BATCH:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()

    async def _claim_and_send(self) -> int:
        hold = self.settings.callback_timeout_s + 30
        try:
            batch = await self.store.callbacks.claim(BATCH, hold)
        except DB_ERRORS as exc:
            reraise_if_cancelling()
            log.warning("cannot read due callbacks: %s", exc, extra={"action": "callback"})
            return 0
        for delivery in batch:
            job = asyncio.create_task(self._deliver(delivery))
            self._in_flight.add(job)
            job.add_done_callback(self._in_flight.discard)
        return len(batch)

    async def _deliver(self, delivery: CallbackDelivery) -> None:
        try:
            async with self._slots:
                error = await self._send(delivery.task)
            await self._settle(delivery, error)
        except Exception:  # a bug here must not vanish silently; the claim runs out, retried
            log.exception(
                "callback delivery crashed",
                extra={"task_id": delivery.task.id, "action": "callback"},
            )

    async def _send(self, task: TaskRecord) -> str | None:
        """POST once; None when the receiver answered 2xx, else why not."""
        url = task.callback_url or ""
        host = normalize_host(urlsplit(url).hostname or "")
        allowed = {normalize_host(h) for h in self.settings.callback_allowed_hosts}
        if not self.settings.callback_secret or host not in allowed:
            return "refused: host not allowed or SYNCD_CALLBACK_SECRET unset"
        body = json.dumps(self.render(task), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.settings.callback_secret, body),
            "User-Agent": "syncd-callback",
        }
        assert self._session is not None
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                if 200 <= response.status < 300:
                    return None
                return f"receiver answered HTTP {response.status}"
        except TimeoutError:
            return f"no answer within {self.settings.callback_timeout_s:g} s"
        except aiohttp.ClientError as exc:
            refused = refusal_of(exc)
            if refused is not None:
                return f"refused: {refused}"[:500]
            return f"{type(exc).__name__}: {exc}"[:500]

    async def _settle(self, delivery: CallbackDelivery, error: str | None) -> None:
        task, attempt = delivery.task, delivery.attempt
        final = error is not None and (
            attempt >= self.settings.callback_max_attempts or error.startswith("refused")
        )
        retry_at = None if error is None or final else self._retry_at(attempt)
        result = "delivered" if error is None else ("failed" if final else "retry")
        extra = {"task_id": task.id, "task_type": task.task_type, "action": "callback"}
        if error is None:
            log.info("callback delivered", extra=extra)
        else:
            log.warning("callback attempt %d %s: %s", attempt, result, error, extra=extra)
        try:
            await self.store.callbacks.settle(task.id, attempt, error, retry_at)
        except DB_ERRORS as exc:  # the claim runs out and the delivery is tried again
            reraise_if_cancelling()
            log.warning("cannot record a callback result: %s", exc, extra=extra)
            return
        self.bus.publish(CallbackEvent(EventKind.CALLBACK_ATTEMPTED, task, result))
        if retry_at is not None:
            delay = max(0.0, (retry_at - self.clock()).total_seconds())
            asyncio.get_running_loop().call_later(delay, self._wake.set)

    def _retry_at(self, attempt: int) -> datetime:
        base = self.settings.callback_backoff_s
        # exponential (base * 2**(n-1), capped) plus up to `base` of jitter; spelled with the
        # waits that every supported tenacity has (`wait_exponential_jitter(initial=)` is
        # deprecated in tenacity 9.2).
        wait = wait_exponential(multiplier=base, max=MAX_BACKOFF_S) + wait_random(0, base)
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = attempt
        return self.clock() + timedelta(seconds=float(wait(state)))
