"""The row count an .xlsx sheet declares, read cheaply for progress totals.

Reading `<dimension ref="A1:F1000001"/>` from the head of the first worksheet's XML costs a few
kilobytes of decompression, where asking openpyxl would load the shared strings a second time.
The count is only a hint for progress (a writer may omit or misstate it); None when unknown.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

_FIRST_SHEET = re.compile(rb"<(?:\w+:)?sheet\b[^>]*?\br:id=\"([^\"]+)\"")
_REL = re.compile(rb"<Relationship\b[^>]*>")
_DIMENSION = re.compile(rb"<(?:\w+:)?dimension\s+ref=\"(?:[A-Z]+\d+:)?[A-Z]+(\d+)\"")
HEAD_BYTES = 8192
PART_HEAD_BYTES = 256 * 1024
"""At most this much of workbook.xml and its relations is read (the first sheet and its
relation come early); a workbook past its limits is refused elsewhere, but this hint never
loads a part whole."""


def declared_rows(path: Path) -> int | None:
    """The last row number the first worksheet declares, or None when it cannot be told."""
    try:
        with zipfile.ZipFile(path) as archive:
            part = _first_sheet_part(archive)
            if part is None:
                return None
            with archive.open(part) as stream:
                head = stream.read(HEAD_BYTES)
    except (OSError, zipfile.BadZipFile, KeyError, RuntimeError, ValueError):
        return None
    match = _DIMENSION.search(head)
    if match is None:
        return None
    rows = int(match.group(1))
    # openpyxl's write-only mode and some tools declare "A1:A1" for any size: not a count.
    return rows if rows > 1 else None


def _first_sheet_part(archive: zipfile.ZipFile) -> str | None:
    workbook = _head(archive, "xl/workbook.xml")
    first = _FIRST_SHEET.search(workbook)
    if first is None:
        return None
    rel_id = first.group(1)
    for rel in _REL.findall(_head(archive, "xl/_rels/workbook.xml.rels")):
        if re.search(rb'\bId="' + re.escape(rel_id) + rb'"', rel):
            target = re.search(rb'\bTarget="([^"]+)"', rel)
            if target is None:
                return None
            name = target.group(1).decode()
            return name.lstrip("/") if name.startswith("/") else f"xl/{name}"
    return None


def _head(archive: zipfile.ZipFile, name: str) -> bytes:
    with archive.open(name) as stream:
        return stream.read(PART_HEAD_BYTES)
