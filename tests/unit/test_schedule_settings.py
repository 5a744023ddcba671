"""Settings of the periodic jobs: bad crons, time zones and keep counts stop start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from config.exceptions import SettingsError
from config.settings import load_settings
from engine.handlers.partnumber_book_retention import policy_of
from schedule.periodic import builtin_specs


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"snapshot_cron": "61 3 * * *"}, "SYNCD_SNAPSHOT_CRON"),
        ({"retention_cron": "every night"}, "SYNCD_RETENTION_CRON"),
        ({"task_retention_cron": "0 4 * *"}, "SYNCD_TASK_RETENTION_CRON"),
        ({"timezone": "Mars/Olympus_Mons"}, "SYNCD_TIMEZONE"),
        ({"keep_weekly": -1}, "SYNCD_KEEP_WEEKLY"),
        ({"task_retention_days": 0}, "SYNCD_TASK_RETENTION_DAYS"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(
    overrides: dict[str, Any], named: str, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(state_dir=tmp_path, **overrides)


def test_jobs_and_policy_follow_the_settings(tmp_path: Path) -> None:
    settings = load_settings(
        state_dir=tmp_path, snapshot_cron="15 2 * * 1-5", keep_daily=0, keep_yearly=3
    )
    jobs = {j.id: j for j in builtin_specs(settings)}
    assert jobs["partnumber_book_create"].trigger.cron == "15 2 * * 1-5"
    assert jobs["task_retention"].trigger.cron == settings.task_retention_cron
    policy = policy_of(settings)
    assert (policy.daily, policy.weekly, policy.monthly, policy.yearly) == (0, 5, 12, 3)


def test_schedules_are_declared_in_the_settings_file(tmp_path: Path) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text(
        "[[schedules]]\n"
        'id = "erp-parts-full"\n'
        'task_type = "full_sync"\n'
        'data_source_id = "erp-parts"\n'
        'trigger = { cron = "0 2 * * *" }\n'
        'timezone = "Europe/Moscow"\n'
        'overlap = "queue_one"\n'
    )
    settings = load_settings(config, state_dir=tmp_path)
    (entry,) = settings.schedules
    assert entry.trigger == {"cron": "0 2 * * *"} and entry.overlap == "queue_one"
    config.write_text('[[schedules]]\nid = "x"\ntask_type = "noop"\ntrigger = {}\ncolour = 1\n')
    with pytest.raises(SettingsError, match="SYNCD_SCHEDULES"):
        load_settings(config, state_dir=tmp_path)
