"""Rules of how the code is laid out that a linter does not check (the import directions are
import-linter's, in `make lint`): read from the source files themselves."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("config", "controllers", "schedule", "engine", "migrations", "tests", "bench")
ISSUE_NUMBER = re.compile(r"\bissues? ?#?\d+", re.IGNORECASE)


def python_files(*packages: str) -> list[Path]:
    return sorted(p for name in packages for p in (ROOT / name).rglob("*.py"))


def test_no_issue_numbers_in_code_or_comments() -> None:
    """A reader of the code has no issue tracker: sections say what they hold instead."""
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in python_files(*PACKAGES)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if ISSUE_NUMBER.search(line)
    ]
    assert found == []


def test_handlers_neither_build_stores_nor_read_the_wall_clock() -> None:
    """A handler gets its stores and its clock from its `TaskContext` (built once at start-up,
    with the configured timeout and clock)."""
    builders = re.compile(
        r"\b(make_store|open_stores|BookStore|ImportStore|DataSourceStore|ScheduleStore"
        r"|TargetWriter|TaskStore)\(|datetime\.now|\butcnow\(|time\.time\(|ctx\.db\b"
    )
    handler_code = [*python_files("engine/handlers"), ROOT / "engine" / "sync.py"]
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in handler_code
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if builders.search(line)
    ]
    assert found == []


def test_tests_and_benchmarks_use_no_private_name() -> None:
    """Tests and benchmarks use what the code offers, not its underscore names: neither
    imported (`from engine.x import _y`) nor reached through what was imported (`x._y`)."""
    found = []
    for path in python_files("tests", "bench"):
        where = str(path.relative_to(ROOT))
        ours: set[str] = set()  # names bound to modules or classes of the code
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                if node.module.split(".")[0] not in PACKAGES:
                    continue
                for alias in node.names:
                    ours.add(alias.asname or alias.name)
                    if alias.name.startswith("_"):
                        found.append(f"{where}: {node.module}.{alias.name}")
            elif isinstance(node, ast.Import):
                ours.update(
                    (a.asname or a.name).split(".")[0]
                    for a in node.names
                    if a.name.split(".")[0] in PACKAGES
                )
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in ours
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{where}:{node.lineno}: {node.value.id}.{node.attr}")
    assert found == []
