"""GET /metrics: Prometheus text from a registry of the app's own, fed by real task runs."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from controllers.app import create_app
from controllers.keys import BUS, STORE
from engine.metrics import Metrics
from schedule.events import EventKind, FireEvent
from tests.helpers import Events

Client = TestClient[Any, Any]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: Client) -> Samples:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_follow_the_tasks(aiohttp_client: Any, settings: Settings) -> None:
    client: Client = await aiohttp_client(create_app(settings))
    events = Events(client.app[BUS])
    bodies = [
        {"task_type": "noop"},
        {"task_type": "noop", "parameters": {"fail_permanently": True}},
        {"task_type": "noop", "parameters": {"fail_times": 1}, "max_attempts": 2},
        {"task_type": "noop", "run_after": "2999-01-01T00:00:00Z"},
    ]
    ids = []
    for body in bodies:
        resp = await client.post("/api/sync/tasks", json=body)
        ids.append((await resp.json())["id"])
    await events.until(lambda: all(events.end_of(i) for i in ids[:3]), within=15)
    later = await client.post("/api/sync/tasks", json=bodies[3])
    assert (await client.post(f"/api/sync/tasks/{(await later.json())['id']}/cancel")).status == 200

    # A task leased to a node that died: the engine's rescue loop takes it back.
    lost = await (
        await client.post(
            "/api/sync/tasks", json={"task_type": "external", "parameters": {"service": "m"}}
        )
    ).json()
    store = client.app[STORE]
    assert await store.external.claim("gone-node", "m", None, lease_s=-1) is not None

    client.app[BUS].publish(FireEvent(EventKind.SCHEDULE_FIRED, "snapshot", "enqueued", 0.25))
    client.app[BUS].publish(FireEvent(EventKind.SCHEDULE_FIRED, "snapshot", "failed"))

    await events.wait(lost["id"], "rescued", within=15)
    samples = await scrape(client)
    assert lost["id"]
    assert samples[("syncd_tasks_created_total", (("task_type", "noop"),))] == 5
    assert samples[("syncd_tasks_created_total", (("task_type", "external"),))] == 1
    finished = "syncd_tasks_finished_total"
    assert samples[(finished, (("outcome", "completed"), ("task_type", "noop")))] == 2
    assert samples[(finished, (("outcome", "failed"), ("task_type", "noop")))] == 1
    assert samples[(finished, (("outcome", "cancelled"), ("task_type", "noop")))] == 1
    assert samples[("syncd_task_retries_total", (("task_type", "noop"),))] == 1
    assert samples[("syncd_task_duration_seconds_count", (("task_type", "noop"),))] == 4
    assert samples[("syncd_queue_depth", ())] >= 2  # the far-future noop and the rescued task
    fires = "syncd_scheduler_fires_total"
    assert samples[(fires, (("outcome", "enqueued"), ("schedule", "snapshot")))] == 1
    assert samples[(fires, (("outcome", "failed"), ("schedule", "snapshot")))] == 1
    assert samples[("syncd_scheduler_fire_lag_seconds_count", ())] == 1
    assert samples[("syncd_scheduler_fire_lag_seconds_bucket", (("le", "0.5"),))] == 1
    assert samples[("syncd_scheduler_fire_lag_seconds_bucket", (("le", "0.1"),))] == 0
    assert (
        samples[("syncd_scheduler_last_success_timestamp_seconds", (("schedule", "snapshot"),))] > 0
    )
    assert samples[("syncd_database_errors_total", ())] == 0


async def test_a_retry_counts_as_a_created_task(aiohttp_client: Any, settings: Settings) -> None:
    client: Client = await aiohttp_client(create_app(settings))
    events = Events(client.app[BUS])
    body = {"task_type": "noop", "parameters": {"fail_permanently": True}, "max_attempts": 1}
    failed = await (await client.post("/api/sync/tasks", json=body)).json()
    await events.ended(failed["id"])
    resp = await client.post(f"/api/sync/tasks/{failed['id']}/retry")
    assert resp.status == 201
    samples = await scrape(client)
    assert samples[("syncd_tasks_created_total", (("task_type", "noop"),))] == 2


def test_each_app_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.scheduler_fire("job", "enqueued")
    assert second.registry is not first.registry
    assert b'schedule="job"' not in second.render()
    labels = {"schedule": "job", "outcome": "enqueued"}
    assert REGISTRY.get_sample_value("syncd_scheduler_fires_total", labels) is None
