"""Settings read from the environment: misspelt names are pointed out, paths are absolute."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.exceptions import SettingsError
from config.settings import default_state_dir, load_settings, unknown_variables


def test_unknown_variables_name_the_nearest_setting() -> None:
    environ = {
        "SYNCD_CONCURENCY": "8",
        "SYNCD_DATABSE_URL": "sqlite:///x.db",
        "SYNCD_PORT": "8080",
        "SYNCD_URL": "http://127.0.0.1:8080",
        "SYNCD_TOKEN": "t",
        "SYNCD_NOTHING_LIKE_IT": "1",
        "HOME": "/root",
    }
    assert unknown_variables(environ) == [
        "SYNCD_CONCURENCY is not a setting and is ignored; did you mean SYNCD_CONCURRENCY?",
        "SYNCD_DATABSE_URL is not a setting and is ignored; did you mean SYNCD_DATABASE_URL?",
        "SYNCD_NOTHING_LIKE_IT is not a setting and is ignored",
    ]


def test_state_directory_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert default_state_dir() == tmp_path / "var"
    settings = load_settings(state_dir=Path("relative/state"))
    assert settings.state_dir == tmp_path / "relative" / "state"
    assert settings.database_url == f"sqlite:///{tmp_path}/relative/state/syncd.db"
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/syncd")
    assert default_state_dir() == Path("/var/lib/syncd")


def test_a_config_file_that_cannot_be_read_is_one_line() -> None:
    # /proc/self/mem is a regular file whose read fails (EIO) even for root: the same path
    # through the code as a 0600 file the service's dynamic user may not read (EACCES).
    with pytest.raises(SettingsError) as caught:
        load_settings(Path("/proc/self/mem"))
    assert str(caught.value) == "SYNCD_CONFIG: cannot read /proc/self/mem: Input/output error"
