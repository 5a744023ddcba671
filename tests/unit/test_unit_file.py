"""The systemd unit and the env example: required directives, consistency, systemd-analyze."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD_DIR / "syncd.service"
ENV_EXAMPLE = SYSTEMD_DIR / "syncd.env.example"

Unit = dict[str, dict[str, list[str]]]

REQUIRED: list[tuple[str, str, str]] = [
    ("Service", "Type", "notify"),
    ("Service", "NotifyAccess", "main"),
    ("Service", "EnvironmentFile", "-/etc/syncd/syncd.env"),
    ("Service", "DynamicUser", "yes"),
    ("Service", "StateDirectory", "syncd"),
    ("Service", "Restart", "on-failure"),
    ("Service", "RestartSec", "2"),
    ("Service", "WatchdogSec", "30"),
    ("Service", "TimeoutStopSec", "40"),
    ("Service", "LimitNOFILE", "65536"),
    ("Service", "KillSignal", "SIGTERM"),
    ("Service", "NoNewPrivileges", "yes"),
    ("Service", "ProtectSystem", "strict"),
    ("Service", "ProtectHome", "yes"),
    ("Service", "PrivateTmp", "yes"),
    ("Service", "PrivateDevices", "yes"),
    ("Service", "ProtectKernelTunables", "yes"),
    ("Service", "ProtectKernelModules", "yes"),
    ("Service", "ProtectControlGroups", "yes"),
    ("Service", "RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ("Service", "LockPersonality", "yes"),
    ("Service", "RestrictRealtime", "yes"),
    ("Service", "SystemCallArchitectures", "native"),
    ("Install", "WantedBy", "multi-user.target"),
]

# Every SYNCD_* setting the issue names; the Settings model is checked too when importable.
SETTINGS = [
    "DATABASE_URL",
    "HOST",
    "PORT",
    "CONCURRENCY",
    "POLL_INTERVAL_S",
    "LEASE_S",
    "CANCEL_GRACE_S",
    "SHUTDOWN_GRACE_S",
    "DEFAULT_MAX_ATTEMPTS",
    "PROGRESS_FLUSH_S",
    "RESCUE_INTERVAL_S",
    "DB_TIMEOUT_S",
    "NODE_ID",
    "SNAPSHOT_CRON",
    "RETENTION_CRON",
    "TASK_RETENTION_CRON",
    "TIMEZONE",
    "TASK_RETENTION_DAYS",
    "KEEP_DAILY",
    "KEEP_WEEKLY",
    "KEEP_MONTHLY",
    "KEEP_YEARLY",
    "MAX_UPLOAD_MB",
    "MAX_PARAMETERS_KB",
    "HTTP_HEADER_TIMEOUT_S",
    "HTTP_BODY_TIMEOUT_S",
    "HTTP_IDLE_TIMEOUT_S",
    "HTTP_MAX_CONNECTIONS",
    "API_TOKENS",
    "CALLBACK_SECRET",
    "CALLBACK_ALLOWED_HOSTS",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "CONFIG",
]


def parse_unit(text: str) -> Unit:
    """Sections of a unit file, each key with all its values in order (keys may repeat)."""
    sections: Unit = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"directive outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a directive: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def parse_env(text: str) -> dict[str, str]:
    """`SYNCD_*` names in the env example (commented or not) with their example values."""
    found: dict[str, str] = {}
    for match in re.finditer(r"^#?(SYNCD_[A-Z0-9_]+)=(.*)$", text, re.MULTILINE):
        found[match[1]] = match[2].strip().strip('"')
    return found


def seconds(value: str) -> float:
    """A systemd time span of the simple forms this unit uses: `40`, `40s`, `2min`."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min)?", value)
    assert match, f"unsupported time span {value!r}"
    return float(match[1]) * (60 if match[2] == "min" else 1)


@pytest.fixture(scope="module")
def unit() -> Unit:
    return parse_unit(UNIT.read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return parse_env(ENV_EXAMPLE.read_text())


@pytest.mark.parametrize(("section", "key", "value"), REQUIRED)
def test_required_directive(unit: Unit, section: str, key: str, value: str) -> None:
    assert unit[section].get(key) == [value]


def test_exec_start_runs_syncd_serve_directly(unit: Unit) -> None:
    (exec_start,) = unit["Service"]["ExecStart"]
    binary, *args = exec_start.split()
    assert binary.startswith("/") and binary.endswith("/syncd")
    assert args == ["serve"]
    assert "ExecStartPre" not in unit["Service"], "migrate is an explicit upgrade step"


def test_nothing_extra_is_writable(unit: Unit) -> None:
    assert "ReadWritePaths" not in unit["Service"]


def test_stop_timeout_exceeds_the_shutdown_grace(unit: Unit, env_example: dict[str, str]) -> None:
    (timeout,) = unit["Service"]["TimeoutStopSec"]
    assert seconds(timeout) > float(env_example["SYNCD_SHUTDOWN_GRACE_S"])


def test_open_file_limit_fits_the_connection_cap(unit: Unit, env_example: dict[str, str]) -> None:
    from controllers.server import HttpLimits

    (limit,) = unit["Service"]["LimitNOFILE"]
    cap = int(env_example["SYNCD_HTTP_MAX_CONNECTIONS"])
    assert int(limit) >= HttpLimits(1, 1, 1, cap).open_files


def test_env_example_lists_every_setting(env_example: dict[str, str]) -> None:
    missing = [name for name in SETTINGS if f"SYNCD_{name}" not in env_example]
    assert not missing


def test_env_example_matches_the_settings_model(env_example: dict[str, str]) -> None:
    settings = pytest.importorskip("config.settings")
    fields = settings.Settings.model_fields
    assert sorted(env_example) == sorted(f"SYNCD_{name.upper()}" for name in fields)
    for name, field in fields.items():
        example = env_example[f"SYNCD_{name.upper()}"]
        default = field.default
        if not example or isinstance(default, bool) or not isinstance(default, int | float | str):
            continue
        if isinstance(default, str):
            if default:
                assert example == default, name
        else:
            assert float(example) == default, name
    shutdown_grace = fields["shutdown_grace_s"].default
    assert float(env_example["SYNCD_SHUTDOWN_GRACE_S"]) == shutdown_grace


def _existing_binary() -> str:
    venv_syncd = Path(sys.executable).with_name("syncd")
    if venv_syncd.is_file():
        return str(venv_syncd)
    true = shutil.which("true")
    assert true is not None
    return true


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # `verify` fails when ExecStart's binary does not exist, and /usr/local/bin/syncd is not
    # installed here: verify a copy (same file name, which verify also checks) whose ExecStart
    # points at a binary that exists, the venv's `syncd` or else /bin/true.
    copy = tmp_path / UNIT.name
    text = re.sub(
        r"^ExecStart=\S+", f"ExecStart={_existing_binary()}", UNIT.read_text(), flags=re.M
    )
    copy.write_text(text)
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None
    result = subprocess.run(
        [analyze, "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    ours = [line for line in result.stderr.splitlines() if UNIT.name in line]
    assert result.returncode == 0, result.stderr
    assert not ours, "warnings about the unit (unknown keys are only warnings): " + "\n".join(ours)


def test_readme_settings_table_lists_every_setting() -> None:
    settings = pytest.importorskip("config.settings")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = set(re.findall(r"^\| `(SYNCD_[A-Z_]+)` \|", readme, flags=re.M))
    fields = {f"SYNCD_{name.upper()}" for name in settings.Settings.model_fields}
    assert table == fields
