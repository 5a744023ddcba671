"""Daemon settings: `SYNCD_*` environment variables over an optional TOML file.

Settings are built once in `main()` (see `load_settings`) and passed down; nothing here reads
the environment at import time.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from config.exceptions import SettingsError

Role = Literal["admin", "operator", "read", "worker"]
ROLES: tuple[Role, ...] = ("admin", "operator", "read", "worker")


def _split_csv(value: object) -> object:
    """Accept a comma-separated string where a list is expected (env vars are strings)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _parse_tokens(value: object) -> object:
    """`token:role,token:role` (env) or a `{token: role}` table (TOML) into a dict."""
    if isinstance(value, str):
        tokens: dict[str, str] = {}
        for pair in (p.strip() for p in value.split(",") if p.strip()):
            token, sep, role = pair.rpartition(":")
            if not sep or not token:
                raise ValueError("each entry must be TOKEN:ROLE")
            tokens[token] = role
        return tokens
    return value


OWN_TABLES = frozenset(
    {"alembic_version", "qt_partnumber_books", "qt_partnumber_book_items", "stock_log"}
)
"""syncd's own tables that do not start with an own prefix (`OWN_TABLE_PREFIXES`): the schema
version, the partnumber books and the stock import log."""
OWN_TABLE_PREFIXES = ("sync_", "syncd_", "sqlite_")
"""The queue, its records, schedules, locks, data sources and watermarks (`sync_`), the
temporary tables of syncs (`syncd_`) and SQLite's own tables."""
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,63}$")
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_-]+)*$")


def is_own_table(name: str) -> bool:
    """Whether a table is one of syncd's own, which no data source may write to (case-blind:
    SQLite's table names are)."""
    lowered = name.lower()
    return lowered in OWN_TABLES or lowered.startswith(OWN_TABLE_PREFIXES)


def normalize_host(host: str) -> str:
    """A host as lists compare it: lower case, no brackets, no trailing dot."""
    return host.strip().strip("[]").rstrip(".").lower()


def parse_host_entry(
    entry: str, *, networks: bool = True
) -> str | ipaddress.IPv4Network | ipaddress.IPv6Network:
    """One entry of an allowed-hosts list: a network (an address is a /32 or /128; only with
    `networks`, else only an address) or a host name; ValueError saying what is wrong."""
    text = normalize_host(entry)
    if not text:
        raise ValueError("empty entry")
    try:
        if not networks:
            return ipaddress.ip_network(ipaddress.ip_address(text))
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    if "/" in text or not _HOST_NAME.match(text):
        kinds = "a host name, an IP address or a network" if networks else "a host or address"
        raise ValueError(f"{entry!r} is not {kinds}")
    return text


def default_state_dir() -> Path:
    """`$STATE_DIRECTORY` (set by systemd's StateDirectory=) or `./var`, made absolute."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return (Path(state) if state else Path("var")).absolute()


#: `SYNCD_*` variables read by something other than the daemon's settings (the CLI client).
CLIENT_VARIABLES = frozenset({"SYNCD_URL", "SYNCD_TOKEN"})


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each `SYNCD_*` variable that is no setting, naming the nearest one
    (`SYNCD_CONCURENCY` is not a setting; did you mean `SYNCD_CONCURRENCY`?). Such a variable
    is otherwise ignored without a word."""
    known = {f"SYNCD_{name.upper()}" for name in Settings.model_fields} | CLIENT_VARIABLES
    warnings = []
    for name in sorted(environ):
        if not name.startswith("SYNCD_") or name in known:
            continue
        # Compared without the prefix, which every name shares.
        near = difflib.get_close_matches(name[6:], sorted(k[6:] for k in known), n=1, cutoff=0.7)
        hint = f"; did you mean SYNCD_{near[0]}?" if near else ""
        warnings.append(f"{name} is not a setting and is ignored{hint}")
    return warnings


class ScheduleEntry(BaseModel):
    """One `[[schedules]]` table of the settings file: a schedule declared there (see
    docs/schedules.md); checked like one made over the API when the daemon starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    name: str | None = Field(None, max_length=255)
    task_type: str = Field(min_length=1, max_length=64)
    trigger: dict[str, Any]
    parameters: dict[str, Any] = Field(default_factory=dict)
    priority: int | None = Field(None, ge=-100, le=100)
    data_source_id: str | None = Field(None, max_length=64)
    interface_id: str | None = Field(None, max_length=64)
    max_attempts: int | None = Field(None, ge=1, le=20)
    timeout_s: float | None = Field(None, gt=0)
    timezone: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    jitter_s: float = Field(0.0, ge=0, le=86400)
    overlap: Literal["skip", "queue_one", "cancel_previous", "allow"] = "skip"
    catch_up: Literal["none", "latest", "all"] = "latest"
    catch_up_window_s: float | None = Field(None, gt=0)
    paused: bool = False
    pause_note: str | None = Field(None, max_length=2000)


class Settings(BaseSettings):
    """Every setting of the daemon; see the README's settings table."""

    model_config = SettingsConfigDict(
        env_prefix="SYNCD_", extra="forbid", validate_default=True, frozen=True
    )

    config: Path | None = None
    state_dir: Path = Field(default_factory=default_state_dir)
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    node_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")

    concurrency: int = Field(4, ge=1, le=256)
    poll_interval_s: float = Field(0.5, gt=0, le=60)
    lease_s: float = Field(30.0, ge=1, le=3600)
    rescue_interval_s: float = Field(10.0, gt=0, le=3600)
    progress_flush_s: float = Field(1.0, gt=0, le=60)
    cancel_grace_s: float = Field(5.0, ge=0, le=3600)
    shutdown_grace_s: float = Field(20.0, ge=0, le=3600)
    db_timeout_s: float = Field(5.0, gt=0, le=300)
    default_max_attempts: int = Field(3, ge=1, le=20)
    retry_backoff_s: float = Field(1.0, ge=0, le=3600)
    retry_backoff_max_s: float = Field(300.0, ge=0, le=86400)

    snapshot_cron: str = "0 3 * * *"
    retention_cron: str = "30 3 * * *"
    task_retention_cron: str = "0 4 * * *"
    timezone: str = "UTC"
    schedules: list[ScheduleEntry] = Field(default_factory=list)
    schedule_poll_s: float = Field(1.0, gt=0, le=60)
    task_retention_days: int = Field(30, ge=1)
    keep_daily: int = Field(7, ge=0)
    keep_weekly: int = Field(5, ge=0)
    keep_monthly: int = Field(12, ge=0)
    keep_yearly: int = Field(10, ge=0)

    max_upload_mb: int = Field(200, ge=1)
    max_parameters_kb: int = Field(64, ge=1, le=1024 * 1024)
    http_header_timeout_s: float = Field(10.0, gt=0, le=3600)
    http_body_timeout_s: float = Field(60.0, gt=0, le=3600)
    http_idle_timeout_s: float = Field(75.0, gt=0, le=86400)
    http_max_connections: int = Field(1024, ge=1, le=1_000_000)
    xlsx_max_unpacked_mb: int = Field(1024, ge=1)
    xlsx_max_part_mb: int = Field(64, ge=1)
    xlsx_max_ratio: float = Field(100.0, ge=1)
    xlsx_max_members: int = Field(10_000, ge=1)
    api_tokens: Annotated[dict[str, Role], NoDecode, BeforeValidator(_parse_tokens)] = Field(
        default_factory=dict
    )
    callback_secret: str = ""
    callback_allowed_hosts: Annotated[list[str], NoDecode, BeforeValidator(_split_csv)] = Field(
        default_factory=list
    )
    egress_allowed_hosts: Annotated[list[str], NoDecode, BeforeValidator(_split_csv)] = Field(
        default_factory=list
    )
    sync_target_tables: Annotated[list[str], NoDecode, BeforeValidator(_split_csv)] = Field(
        default_factory=list
    )
    source_dirs: Annotated[list[Path], NoDecode, BeforeValidator(_split_csv)] = Field(
        default_factory=list
    )
    source_connect_timeout_s: float = Field(10.0, gt=0, le=3600)
    source_read_timeout_s: float = Field(300.0, gt=0, le=86400)
    callback_timeout_s: float = Field(10.0, gt=0, le=300)
    callback_max_attempts: int = Field(8, ge=1, le=50)
    callback_backoff_s: float = Field(2.0, ge=0, le=3600)
    external_lease_s: float = Field(300.0, ge=1, le=86400)
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Explicit arguments, then the environment, then the TOML file (environment wins)."""
        toml_path = _toml_path(init_settings)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("snapshot_cron", "retention_cron", "task_retention_cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f"bad cron expression {value!r}: {exc}") from exc
        return value

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value:
            return value
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL: {value!r}") from exc
        if url.get_backend_name() not in ("sqlite", "mysql", "mariadb"):
            raise ValueError("only sqlite:/// and mysql+pymysql:// URLs are supported")
        return value

    @field_validator("egress_allowed_hosts")
    @classmethod
    def _check_egress_hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_host_entry(entry)
        return value

    @field_validator("callback_allowed_hosts")
    @classmethod
    def _check_callback_hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_host_entry(entry, networks=False)
        return value

    @field_validator("sync_target_tables")
    @classmethod
    def _check_sync_targets(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _IDENTIFIER.match(name):
                raise ValueError(f"{name!r} is not a table name")
            if is_own_table(name):
                raise ValueError(
                    f"{name!r} is one of syncd's own tables; no data source may write to it"
                )
        return value

    @field_validator("source_dirs")
    @classmethod
    def _check_source_dirs(cls, value: list[Path], info: ValidationInfo) -> list[Path]:
        state = Path(info.data.get("state_dir") or default_state_dir()).absolute()
        dirs = [d.absolute() for d in value] or [state / "sources"]
        for folder in dirs:
            if state.is_relative_to(folder):
                raise ValueError(
                    f"{str(folder)!r} holds the state directory (syncd's database and uploads);"
                    " give file sources a directory of their own"
                )
        return dirs

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        return value.absolute()

    @field_validator("node_id")
    @classmethod
    def _check_node_id(cls, value: str) -> str:
        if not value.strip() or len(value) > 120:
            raise ValueError("must be 1..120 characters")
        return value

    @model_validator(mode="after")
    def _fill_database_url(self) -> Settings:
        if not self.database_url:
            url = f"sqlite:///{(self.state_dir / 'syncd.db').absolute()}"
            object.__setattr__(self, "database_url", url)
        return self

    @property
    def tz(self) -> ZoneInfo:
        """The configured time zone for cron jobs and retention buckets."""
        return ZoneInfo(self.timezone)


def _toml_path(init_settings: PydanticBaseSettingsSource) -> Path | None:
    explicit: Any = init_settings().get("config")
    value = explicit or os.environ.get("SYNCD_CONFIG")
    return Path(value) if value else None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings once; a bad value raises `SettingsError` with one line naming it."""
    if config_file is not None:
        overrides["config"] = config_file
    path = overrides.get("config") or os.environ.get("SYNCD_CONFIG")
    if path and not Path(path).is_file():
        raise SettingsError(f"SYNCD_CONFIG: no such file {path}")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except ValueError as exc:  # a TOML file that does not parse
        raise SettingsError(f"SYNCD_CONFIG: {exc}") from None
    except OSError as exc:  # say, a file the service's user may not read
        reason = exc.strerror or str(exc)
        raise SettingsError(f"SYNCD_CONFIG: cannot read {path}: {reason}") from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        name = "SYNCD_" + "_".join(str(p) for p in error["loc"][:1]).upper()
        message = error["msg"].removeprefix("Value error, ")
        given = error.get("input")
        if name == "SYNCD_CONFIG" or error["type"] == "extra_forbidden":
            parts.append(f"{name}: unknown setting")
            continue
        shown = "" if "token" in name.lower() or "secret" in name.lower() else f" (got {given!r})"
        parts.append(f"{name}: {message}{shown}")
    return "; ".join(parts)
