"""The README and docs/ stay true to the code: every task type is in the README's table, and
every relative link points at a file of this repository."""

from __future__ import annotations

import re
from pathlib import Path

from engine.handlers import default_registry

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_task_type_table_lists_every_registered_type() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("Task types") :]
    table = table[: table.index("\n\n", table.index("| type |"))]
    listed = re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE)
    assert sorted(listed) == sorted(default_registry().names())


def test_relative_links_stay_inside_the_repository() -> None:
    outside, missing = [], []
    for doc in documents():
        for target in LINK.findall(doc.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue  # a URL (http:, mailto:) or an anchor of the same page
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to(ROOT):
                outside.append(f"{doc.name}: {target}")
            elif not path.exists():
                missing.append(f"{doc.name}: {target}")
    assert outside == []
    assert missing == []
