"""Where `file` sources may read: only under the configured source directories.

A path is judged by its real path (every symlink resolved), when a definition is validated and
again when a sync opens it, so a symlink placed or changed later cannot lead outside. syncd's own
SQLite database (and its journal files) are refused wherever they are.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from engine.sources.exceptions import SourceError

_JOURNALS = ("", "-wal", "-shm", "-journal")


class SourcePathError(SourceError):
    """The file source is outside the source directories."""

    code = "source_path"


def confine(path: str, dirs: Sequence[Path], own_database: str | None) -> Path:
    """The real path of a file source, or `SourcePathError` saying why it may not be read
    (blocking: call it in a thread). The file need not exist."""
    real = Path(os.path.realpath(path))
    roots = [Path(os.path.realpath(d)) for d in dirs]
    if not any(real.is_relative_to(root) for root in roots):
        shown = ", ".join(str(d) for d in dirs)
        raise SourcePathError(
            f"{path} is not under the source directories ({shown}; SYNCD_SOURCE_DIRS)"
        )
    if own_database and _is_own_database(real, own_database):
        raise SourcePathError(f"{path} is syncd's own database")
    if real.exists() and not real.is_file():
        raise SourcePathError(f"{path} is not a regular file")
    return real


def _is_own_database(real: Path, own_database: str) -> bool:
    own = os.path.realpath(own_database)
    if any(str(real) == own + suffix for suffix in _JOURNALS):
        return True
    try:
        return os.path.samefile(real, own)
    except OSError:
        return False
