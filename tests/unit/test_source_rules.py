"""The pure rules of data sources: sync targets, the egress policy, source queries, settings."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from config.exceptions import SettingsError
from config.settings import is_own_table, load_settings
from engine.callbacks import egress_policy
from engine.policy import SourcePolicy
from engine.sources.egress import EgressPolicy, embedded_ipv4
from engine.sources.sql import statement_problem
from schedule.datasources import DOMAIN_TARGETS, sync_targets
from schedule.models import metadata

# ---- sync targets ---------------------------------------------------------------------------


def test_every_table_of_syncd_is_a_domain_target_or_its_own() -> None:
    """A new table must be classified: either data sources may fill it or it is syncd's."""
    for name in metadata.tables:
        assert (name in DOMAIN_TARGETS) != is_own_table(name), name
    assert is_own_table("alembic_version") and is_own_table("SQLITE_SEQUENCE")


def test_own_tables_never_become_targets() -> None:
    targets = sync_targets(["extra_parts", "Sync_Tasks", "stock_log"])
    assert targets == DOMAIN_TARGETS | {"extra_parts"}


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ("sync_tasks", "one of syncd's own tables"),
        ("SYNC_TASKS", "one of syncd's own tables"),
        ("qt_partnumber_book_items", "one of syncd's own tables"),
        ("stock_log", "one of syncd's own tables"),
        ("erp_parts", "not a sync target"),
    ],
)
def test_target_problem(table: str, says: str, tmp_path: Path) -> None:
    policy = SourcePolicy.from_settings(load_settings(state_dir=tmp_path))
    problem = policy.target_problem(table)
    assert problem is not None and says in problem
    assert policy.target_problem("lot_partnumbers") is None
    assert policy.target_problem("LOT") is None


# ---- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named", "says"),
    [
        ({"sync_target_tables": "lot,sync_tasks"}, "SYNCD_SYNC_TARGET_TABLES", "syncd's own"),
        ({"sync_target_tables": "alembic_version"}, "SYNCD_SYNC_TARGET_TABLES", "syncd's own"),
        ({"sync_target_tables": "bad name"}, "SYNCD_SYNC_TARGET_TABLES", "not a table name"),
        ({"egress_allowed_hosts": "10.0.0.0/8,no such"}, "SYNCD_EGRESS_ALLOWED_HOSTS", "not"),
        ({"callback_allowed_hosts": "10.0.0.0/8"}, "SYNCD_CALLBACK_ALLOWED_HOSTS", "not"),
        ({"source_connect_timeout_s": 0}, "SYNCD_SOURCE_CONNECT_TIMEOUT_S", "greater"),
        ({"source_read_timeout_s": -1}, "SYNCD_SOURCE_READ_TIMEOUT_S", "greater"),
    ],
)
def test_bad_source_settings_stop_start_up(
    overrides: dict[str, Any], named: str, says: str, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match=named) as caught:
        load_settings(state_dir=tmp_path, **overrides)
    assert says in str(caught.value)


def test_syncd_does_not_start_with_an_own_table_listed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from controllers.cli import main

    monkeypatch.setenv("SYNCD_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SYNCD_SYNC_TARGET_TABLES", "lot,sync_tasks")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err.startswith(
        "syncd: bad setting: SYNCD_SYNC_TARGET_TABLES: 'sync_tasks' is one of syncd's own tables"
    )


def test_source_dirs_default_and_refuse_the_state_directory(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path / "state")
    assert settings.source_dirs == [(tmp_path / "state" / "sources").absolute()]
    chosen = load_settings(state_dir=tmp_path / "state", source_dirs=f"{tmp_path}/a,{tmp_path}/b")
    assert chosen.source_dirs == [tmp_path / "a", tmp_path / "b"]
    for holder in (tmp_path, tmp_path / "state"):
        with pytest.raises(SettingsError, match=r"SYNCD_SOURCE_DIRS.*state directory"):
            load_settings(state_dir=tmp_path / "state", source_dirs=str(holder))


# ---- egress ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("169.254.169.254", "link-local"),
        ("10.0.0.5", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("100.64.0.1", "shared CGNAT"),
        ("100.100.100.200", "shared CGNAT"),  # Alibaba's metadata service
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "private"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "private"),  # AWS's IPv6 metadata address
        ("ff02::1", "multicast"),
        ("[::ffff:a9fe:a9fe]", "link-local (IPv4 169.254.169.254 inside IPv6)"),
        ("::ffff:10.0.0.5", "private (IPv4 10.0.0.5 inside IPv6)"),
        ("::a9fe:a9fe", "link-local (IPv4 169.254.169.254 inside IPv6)"),
        ("2002:a9fe:a9fe::1", "link-local (IPv4 169.254.169.254 inside IPv6)"),
        ("64:ff9b::a9fe:a9fe", "link-local (IPv4 169.254.169.254 inside IPv6)"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private (IPv4 10.0.0.1 inside IPv6)"),
    ],
)
def test_refused_addresses(host: str, kind: str) -> None:
    problem = EgressPolicy().host_problem(host)
    assert problem is not None and problem.endswith(f"is a {kind} address"), problem


@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("metadata.google.internal", "cloud metadata service"),
        ("METADATA.Google.Internal.", "cloud metadata service"),
        ("metadata", "cloud metadata service"),
        ("instance-data.ec2.internal", "cloud metadata service"),
        ("localhost", "loopback name"),
        ("db.localhost", "loopback name"),
        ("2130706433", "legacy numeric form"),
        ("127.1", "legacy numeric form"),
        ("0x7f000001", "legacy numeric form"),
        ("0177.0.0.1", "legacy numeric form"),
    ],
)
def test_refused_names(host: str, says: str) -> None:
    problem = EgressPolicy().host_problem(host)
    assert problem is not None and says in problem, problem


@pytest.mark.parametrize(
    "host",
    [
        "93.184.216.34",
        "2606:4700::1111",
        "64:ff9b::5db8:d822",  # 93.184.216.34 through NAT64, as DNS64 answers
        "::ffff:93.184.216.34",
        "api.example.com",
        "cafe",
    ],
)
def test_public_hosts_pass(host: str) -> None:
    assert EgressPolicy().host_problem(host) is None


def test_listed_hosts_are_allowed() -> None:
    policy = EgressPolicy.parse(["10.0.0.0/8", "169.254.169.254", "ERP.internal.", "[fd00::1]"])
    assert policy.host_problem("10.20.30.40") is None
    assert policy.host_problem("::ffff:10.20.30.40") is None  # the same address, mapped
    assert policy.host_problem("169.254.169.254") is None
    assert policy.host_problem("169.254.169.253") is not None
    assert policy.host_problem("erp.internal") is None
    assert policy.host_problem("fd00::1") is None
    assert policy.listed_name("erp.INTERNAL") and not policy.listed_name("10.20.30.40")


def test_callback_hosts_count_as_listed(tmp_path: Path) -> None:
    settings = load_settings(
        state_dir=tmp_path,
        callback_allowed_hosts="127.0.0.1,hooks.lan",
        egress_allowed_hosts="10.1.0.0/16",
    )
    policy = egress_policy(settings)
    assert policy.host_problem("127.0.0.1") is None
    assert policy.host_problem("10.1.2.3") is None
    assert policy.listed_name("hooks.lan")
    assert "SYNCD_CALLBACK_ALLOWED_HOSTS" in str(policy.refusal("10.9.9.9", "private"))
    # ... while sources keep to their own list.
    sources = SourcePolicy.from_settings(settings).egress
    assert sources.host_problem("127.0.0.1") is not None


def test_embedded_ipv4_forms() -> None:
    v4 = ipaddress.IPv4Address("169.254.169.254")
    for form in ("::ffff:a9fe:a9fe", "::a9fe:a9fe", "2002:a9fe:a9fe::", "64:ff9b::a9fe:a9fe"):
        assert embedded_ipv4(ipaddress.IPv6Address(form)) == v4, form
    assert embedded_ipv4(ipaddress.IPv6Address("2606:4700::1111")) is None
    assert embedded_ipv4(ipaddress.IPv6Address("::1")) is None


# ---- source queries -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM parts",
        "  -- why\n select pn FROM parts",
        "/* c */ WITH x AS (SELECT 1 AS a) SELECT a FROM x",
        "VALUES (1, 2)",
        "SELECT ';' AS s, 'it''s' AS t, \"a;b\" FROM parts",
        "SELECT 1;",
        "SELECT 1; -- trailing comment",
        "SELECT `weird;name` FROM parts",
        "SELECT 2--1",
    ],
)
def test_reading_queries_pass(query: str) -> None:
    assert statement_problem(query, sqlite=False) is None
    assert statement_problem(query.replace("`", '"'), sqlite=True) is None


@pytest.mark.parametrize(
    ("query", "sqlite", "says"),
    [
        ("DROP TABLE stock_log", True, "not 'DROP'"),
        ("VACUUM INTO '/tmp/copy.db'", True, "not 'VACUUM'"),
        ("ATTACH '/tmp/x.db' AS x", True, "not 'ATTACH'"),
        ("PRAGMA query_only = 0", True, "not 'PRAGMA'"),
        ("DELETE FROM parts", False, "not 'DELETE'"),
        ("SET SESSION TRANSACTION READ WRITE", False, "not 'SET'"),
        ("COMMIT", False, "not 'COMMIT'"),
        ("SELECT 1; DROP TABLE parts", False, "one statement only"),
        ("SELECT 1; DROP TABLE parts", True, "one statement only"),
        ("SELECT 1 /*! ; DROP TABLE parts */", False, "executable comments"),
        ("/*!50000 DROP TABLE parts */", False, "executable comments"),
        ("/*M!100000 DROP TABLE parts */ SELECT 1", False, "executable comments"),
        ("SELECT * FROM parts INTO OUTFILE '/tmp/x'", False, "OUTFILE"),
        ("SELECT 1 --1 INTO DUMPFILE '/tmp/x'", False, "DUMPFILE"),
        ("SELECT 'unterminated", False, "unterminated"),
        ("SELECT 1 /* open", True, "unterminated"),
        ("   -- only a comment", False, "empty"),
    ],
)
def test_writing_queries_are_refused(query: str, sqlite: bool, says: str) -> None:
    problem = statement_problem(query, sqlite=sqlite)
    assert problem is not None and says in problem, problem
