"""Every dashboard file is shipped in the package (pyproject's package-data covers it)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from controllers.dashboard import STATIC_DIR

ROOT = Path(__file__).resolve().parents[2]


def test_package_data_covers_every_static_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["controllers"]
    package = STATIC_DIR.parent
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    files = {p for p in STATIC_DIR.rglob("*") if p.is_file()}
    assert files, "no dashboard files found"
    assert files <= shipped, sorted(str(p.relative_to(package)) for p in files - shipped)


def test_no_external_resources() -> None:
    """Offline machines: no CDN scripts, stylesheets or fonts."""
    for path in STATIC_DIR.rglob("*"):
        if path.suffix in {".html", ".css", ".js"}:
            text = path.read_text().replace("http://www.w3.org/2000/svg", "")
            assert "http://" not in text and "https://" not in text and "//cdn" not in text, path
            assert "@import" not in text and "@font-face" not in text, path
