"""/api/schedules over HTTP: define, read, change, delete, run, pause, resume, backfill and
preview; bad input is a 4xx naming the field; roles; the settings file's schedules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from config.settings import Role, ScheduleEntry, Settings
from controllers.app import create_app
from tests.conftest import make_settings

Client = TestClient[Any, Any]
TOKENS: dict[str, Role] = {"adm": "admin", "ops": "operator", "rd": "read"}
ERP = {
    "id": "erp-parts-incremental",
    "name": "ERP parts, incremental",
    "task_type": "noop",
    "trigger": {"cron": "*/15 * * * *"},
    "timezone": "Europe/Moscow",
    "parameters": {"steps": 2},
}


@pytest.fixture
def file_settings(sqlite_url: str, tmp_path: Path) -> Settings:
    config = tmp_path / "syncd.toml"
    config.write_text("")
    nightly = ScheduleEntry(id="nightly-report", task_type="noop", trigger={"cron": "0 2 * * *"})
    return make_settings(
        sqlite_url, tmp_path, api_tokens=TOKENS, schedules=[nightly], config=config
    )


@pytest.fixture
async def client(aiohttp_client: Any, file_settings: Settings) -> Client:
    c: Client = await aiohttp_client(create_app(file_settings))
    return c


async def call(c: Client, method: str, path: str, body: Any = None, token: str = "adm") -> Any:
    resp = await c.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
    return resp.status, (await resp.json() if resp.status != 204 else None)


def fields_of(answer: Any) -> list[str]:
    status, body = answer
    assert status == 422, answer
    return [d["field"] for d in body["error"]["details"]]


async def test_define_read_change_and_delete(client: Client) -> None:
    status, made = await call(client, "POST", "/api/schedules", ERP)
    assert status == 201, made
    assert made["description"] == "Every 15 minutes" and made["origin"] == "api"
    assert made["managed_by"] is None and made["overlap"] == "skip" and made["catch_up"] == "latest"
    status, listed = await call(client, "GET", "/api/schedules", token="rd")
    ids = {s["id"] for s in listed["schedules"]}
    assert {"erp-parts-incremental", "nightly-report", "task_retention"} <= ids
    status, one = await call(client, "GET", "/api/schedules/erp-parts-incremental", token="rd")
    assert status == 200 and len(one["next_fires"]) == 5 and one["runs"] == []
    first = one["next_fires"][0]
    assert first["utc"].endswith("Z") and first["local"].endswith("+03:00")
    changed = {**ERP, "trigger": {"every_s": 900}, "overlap": "queue_one"}
    del changed["id"]
    status, put = await call(client, "PUT", "/api/schedules/erp-parts-incremental", changed)
    assert status == 200 and put["trigger"] == {"every_s": 900.0} and put["overlap"] == "queue_one"
    assert put["description"] == "Every 15 minutes"
    assert (await call(client, "DELETE", "/api/schedules/erp-parts-incremental"))[0] == 204
    assert (await call(client, "GET", "/api/schedules/erp-parts-incremental"))[0] == 404
    assert (await call(client, "DELETE", "/api/schedules/erp-parts-incremental"))[0] == 404


async def test_bad_definitions_are_422_naming_the_field(client: Client) -> None:
    async def post(**change: Any) -> Any:
        return await call(client, "POST", "/api/schedules", {**ERP, **change})

    status, body = await post(trigger={"cron": "61 * * * *"})
    assert fields_of((status, body)) == ["trigger.cron"]
    assert "61" in body["error"]["message"]  # the parser's own words name the bad value
    assert fields_of(await post(trigger={"cron": "* * * *"})) == ["trigger.cron"]
    assert fields_of(await post(trigger={"every_s": 0.5})) == ["trigger.every_s"]
    assert fields_of(await post(trigger={"cron": "* * * * *", "every_s": 60})) == ["trigger"]
    assert fields_of(await post(timezone="Mars/Olympus")) == ["timezone"]
    assert fields_of(await post(task_type="nope")) == ["task_type"]
    assert fields_of(await post(data_source_id="gone")) == ["data_source_id"]
    assert fields_of(await post(parameters={"sleep_s": "long"})) == ["parameters.sleep_s"]
    assert fields_of(
        await post(start_at="2026-05-01T00:00:00Z", end_at="2026-04-01T00:00:00Z")
    ) == ["end_at"]
    assert fields_of(await post(colour="blue")) == ["colour"]
    assert fields_of(await post(id="Bad Id")) == ["id"]
    status, listed = await call(client, "GET", "/api/schedules")
    assert "erp-parts-incremental" not in {s["id"] for s in listed["schedules"]}


async def test_declared_schedules_are_409_naming_where_they_are_kept(client: Client) -> None:
    for path in ("/api/schedules/task_retention", "/api/schedules/nightly-report"):
        status, body = await call(client, "DELETE", path)
        assert status == 409 and body["error"]["code"] == "invalid_state", body
    status, body = await call(client, "DELETE", "/api/schedules/nightly-report")
    assert "syncd.toml" in body["error"]["message"]
    body = {k: v for k, v in ERP.items() if k != "id"}
    status, answer = await call(client, "PUT", "/api/schedules/nightly-report", body)
    assert status == 409 and "settings file" in answer["error"]["message"]
    status, nightly = await call(client, "GET", "/api/schedules/nightly-report")
    assert nightly["origin"] == "file" and "syncd.toml" in nightly["managed_by"]
    assert (await call(client, "POST", "/api/schedules", ERP))[0] == 201
    assert (await call(client, "POST", "/api/schedules", ERP))[0] == 409


async def test_run_pause_resume_backfill_and_the_task_filter(client: Client) -> None:
    await call(client, "POST", "/api/schedules", {**ERP, "overlap": "allow"})
    path = "/api/schedules/erp-parts-incremental"
    status, task = await call(client, "POST", path + "/run", token="ops")
    assert status == 201 and task["schedule_id"] == "erp-parts-incremental"
    assert task["scheduled_for"] is not None
    status, paused = await call(client, "POST", path + "/pause", {"note": "ERP upgrade"}, "ops")
    assert status == 200 and paused["paused"] and paused["pause_note"] == "ERP upgrade"
    assert paused["next_fires"] == []
    status, resumed = await call(client, "POST", path + "/resume", token="ops")
    assert status == 200 and not resumed["paused"] and len(resumed["next_fires"]) == 5
    rng = {"start": "2026-01-05T09:00:00Z", "end": "2026-01-05T10:00:00Z"}
    status, filled = await call(client, "POST", path + "/backfill", rng, "ops")
    assert status == 201 and len(filled["tasks"]) == 5
    assert (await call(client, "POST", path + "/backfill", rng, "ops"))[1]["tasks"] == []
    late = {"start": "2026-01-05T10:00:00Z", "end": "2026-01-05T09:00:00Z"}
    assert fields_of(await call(client, "POST", path + "/backfill", late, "ops")) == ["end"]
    status, page = await call(
        client, "GET", "/api/sync/tasks?schedule_id=erp-parts-incremental&size=50", token="rd"
    )
    assert page["pagination"]["total"] == 6
    status, one = await call(client, "GET", path, token="rd")
    assert len(one["runs"]) == 6 and one["last_run"]["task_id"] == one["runs"][0]["task_id"]


async def test_preview_and_roles(client: Client) -> None:
    status, preview = await call(
        client,
        "POST",
        "/api/schedule-preview",
        {"trigger": {"cron": "0 2 * * 1"}, "timezone": "Europe/Moscow"},
        "ops",
    )
    assert status == 200 and preview["description"] == "At 02:00 AM, only on Monday"
    assert [f["local"][11:16] for f in preview["next_fires"]] == ["02:00"] * 5
    bad = await call(client, "POST", "/api/schedule-preview", {"trigger": {"cron": "x"}})
    assert fields_of(bad) == ["trigger.cron"]
    assert (await call(client, "POST", "/api/schedules", ERP, "ops"))[0] == 403
    assert (await call(client, "POST", "/api/schedules", ERP, "rd"))[0] == 403
    assert (await call(client, "POST", "/api/schedules", ERP))[0] == 201
    path = "/api/schedules/erp-parts-incremental"
    assert (await call(client, "DELETE", path, token="ops"))[0] == 403
    assert (await call(client, "POST", path + "/run", token="rd"))[0] == 403
    rng = {"start": "2026-01-05T00:00:00Z", "end": "2026-01-06T00:00:00Z"}
    status, refused = await call(
        client, "POST", "/api/schedules/task_retention/backfill", rng, "ops"
    )
    assert status == 403 and "maintenance" in refused["error"]["message"]


async def test_the_list_comes_a_page_at_a_time_by_id(client: Client) -> None:
    for i in range(5):
        body = {**ERP, "id": f"page-{i}", "trigger": {"cron": f"{i} * * * *"}}
        assert (await call(client, "POST", "/api/schedules", body))[0] == 201
    status, everything = await call(client, "GET", "/api/schedules?size=500", token="rd")
    assert status == 200
    ids = [s["id"] for s in everything["schedules"]]
    assert ids == sorted(ids) and {f"page-{i}" for i in range(5)} <= set(ids)
    total = everything["pagination"]["total"]
    assert total == len(ids)
    walked: list[str] = []
    for page in range(1, -(-total // 3) + 1):
        status, part = await call(client, "GET", f"/api/schedules?page={page}&size=3", token="rd")
        assert status == 200 and part["pagination"] == {
            "page": page,
            "size": 3,
            "total": total,
            "total_pages": -(-total // 3),
        }
        walked.extend(s["id"] for s in part["schedules"])
    assert walked == ids
    assert fields_of(await call(client, "GET", "/api/schedules?size=501")) == ["size"]
    assert fields_of(await call(client, "GET", "/api/schedules?page=0")) == ["page"]
