"""Prometheus metrics of one daemon, in a registry of its own (never the global one).

`Metrics` is fed by the event bus (`subscribe`): tasks created, finished (retried among them) and
rescued, periodic job fires and callback delivery attempts. Gauges that describe the database
(queue depth) are refreshed on scrape (`refresh`), so they are exact when read and cost nothing
between scrapes. `render` gives the text exposition format.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from schedule.events import CallbackEvent, EventBus, EventKind, FireEvent, TaskEvent
from schedule.task import TaskRecord

CONTENT_TYPE = CONTENT_TYPE_LATEST
DURATION_BUCKETS = (0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 14400)
#: Labelled children kept per metric by `_Children` (forgotten, not removed, when full).
CHILDREN = 100_000

M = TypeVar("M", Counter, Gauge)


class _Children(Generic[M]):
    """The children of a labelled metric, by label values, kept after their first use.

    `labels()` checks, converts and locks on every call; a schedule burst calls it for every
    fire and every created task. The children are the metric's own (`labels` makes each once
    and keeps it): this only remembers them, so forgetting them (when full) changes nothing
    but the time of the next call. Only for metrics whose children are never removed."""

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._known: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._known.get(values)
        if child is None:
            if len(self._known) >= CHILDREN:
                self._known.clear()
            child = self._known[values] = self._metric.labels(*values)
        return child


class _Reading(Collector):
    """A counter whose value is read from a callable at scrape time (the engine's tally)."""

    def __init__(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self._name, self._doc, self._read = name, documentation, read

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._doc, value=self._read())


class Metrics:
    """Every metric syncd exposes at `GET /metrics`."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        r = self.registry
        self.created = Counter(
            "syncd_tasks_created", "Tasks created, by type.", ["task_type"], registry=r
        )
        self.finished = Counter(
            "syncd_tasks_finished",
            "Tasks that ended, by type and outcome (completed, failed, cancelled, timeout).",
            ["task_type", "outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "syncd_task_duration_seconds",
            "Run time of finished attempts (claim to end), by type.",
            ["task_type"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "syncd_task_retries",
            "Attempts that failed and were scheduled again.",
            ["task_type"],
            registry=r,
        )
        self.rescues = Counter(
            "syncd_lease_rescues",
            "Tasks taken back after their lease expired (a node or worker went silent).",
            ["task_type"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "syncd_queue_depth", "Pending tasks in the database (all nodes).", registry=r
        )
        self.running = Gauge(
            "syncd_tasks_running",
            "Tasks this node is running, by type.",
            ["task_type"],
            registry=r,
        )
        self.scheduler_fires = Counter(
            "syncd_scheduler_fires",
            "Schedule fires, by schedule and outcome (enqueued, caught_up, skipped_overlap, "
            "queued, missed, failed).",
            ["schedule", "outcome"],
            registry=r,
        )
        self.scheduler_fire_lag = Histogram(
            "syncd_scheduler_fire_lag_seconds",
            "Fire lag: a scheduled task's creation minus its scheduled time.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 15, 60, 300, 3600),
            registry=r,
        )
        self.scheduler_last_success = Gauge(
            "syncd_scheduler_last_success_timestamp_seconds",
            "When each schedule last fired without failing (Unix time).",
            ["schedule"],
            registry=r,
        )
        self.callbacks = Counter(
            "syncd_callbacks",
            "Completion callback delivery attempts, by result (delivered, retry, failed).",
            ["result"],
            registry=r,
        )
        self.db_errors_api = Counter(
            "syncd_api_database_errors",
            "Database errors met while answering API requests or scrapes.",
            registry=r,
        )
        self._created: _Children[Counter] = _Children(self.created)
        self._fires: _Children[Counter] = _Children(self.scheduler_fires)
        self._last_success: _Children[Gauge] = _Children(self.scheduler_last_success)

    def watch_engine_db_errors(self, read: Callable[[], float]) -> None:
        """Expose the engine's own count of database errors as `syncd_database_errors_total`."""
        self.registry.register(
            _Reading(
                "syncd_database_errors",
                "Database errors met by the engine (claims, heartbeats, writes).",
                read,
            )
        )

    def watch_scheduler_cpu(self, read: Callable[[], float]) -> None:
        """Expose the CPU time of the scheduler's turns as `syncd_scheduler_cpu_seconds_total`."""
        self.registry.register(
            _Reading(
                "syncd_scheduler_cpu_seconds",
                "CPU time of the scheduler's claims (event loop and SQLite writer threads).",
                read,
            )
        )

    # ---- subscribers -----------------------------------------------------------------------

    def subscribe(self, bus: EventBus) -> None:
        """Count what the bus reports from now on."""
        bus.subscribe(TaskEvent, [EventKind.CREATED], self.on_created)
        bus.subscribe(TaskEvent, [EventKind.FINISHED, EventKind.RESCUED], self.observe)
        bus.subscribe(FireEvent, [EventKind.SCHEDULE_FIRED], self.on_fire)
        bus.subscribe(CallbackEvent, [EventKind.CALLBACK_ATTEMPTED], self.on_callback)

    def on_created(self, event: TaskEvent) -> None:
        """A task was created."""
        self.task_created(event.task)

    def task_created(self, task: TaskRecord) -> None:
        """Count a created task."""
        self._created(task.task_type).inc()

    def observe(self, event: TaskEvent) -> None:
        """Count outcomes, retries, rescues and durations."""
        task = event.task
        if event.kind is EventKind.RESCUED:
            self.rescues.labels(task.task_type).inc()
            return
        if event.outcome is None:
            return
        outcome = event.outcome.outcome
        if task.started_at is not None:
            elapsed = max(0.0, self._clock() - task.started_at.timestamp())
            self.duration.labels(task.task_type).observe(elapsed)
        if outcome == "retry":
            self.retries.labels(task.task_type).inc()
        else:
            self.finished.labels(task.task_type, outcome).inc()

    def on_fire(self, event: FireEvent) -> None:
        """A schedule fired."""
        self.scheduler_fire(event.job_id, event.outcome, event.lag_s)

    def on_callback(self, event: CallbackEvent) -> None:
        """A callback delivery attempt ended."""
        self.callback_attempt(event.result)

    def scheduler_fire(self, job_id: str, outcome: str, lag_s: float | None = None) -> None:
        """For the scheduler: a schedule's fire had `outcome` (and a task `lag_s` late)."""
        self._fires(job_id, outcome).inc()
        if lag_s is not None:
            self.scheduler_fire_lag.observe(lag_s)
        if outcome != "failed":
            self._last_success(job_id).set(self._clock())

    def callback_attempt(self, result: str) -> None:
        """The callback sender finished one delivery attempt: delivered, retry or failed."""
        self.callbacks.labels(result).inc()

    def refresh(self, queue_depth: int | None, running_by_type: dict[str, int]) -> None:
        """Set the gauges just before a scrape; `queue_depth` None when the database failed."""
        if queue_depth is not None:
            self.queue_depth.set(queue_depth)
        else:
            self.db_errors_api.inc()
        self.running.clear()
        for task_type, count in running_by_type.items():
            self.running.labels(task_type).set(count)

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)
