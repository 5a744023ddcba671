"""Workbooks built by hand: zip bombs, lying zip directories, parts in odd places.

`write_zip` writes an archive from members whose deflated bytes are already made, so a member
may declare any size and the 2 GB of a bomb are deflated once, streamed, without ever being held.
The session fixtures build the two bombs of the issue once: a ~2 MB workbook whose sheet unpacks
to 2 GB, and one whose workbook.xml unpacks to 1 GB.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

MB = 1024 * 1024
MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
SHEET_OPEN = f'<worksheet xmlns="{MAIN}"><sheetData>'.encode()
SHEET_CLOSE = b"</sheetData></worksheet>"
WORKBOOK_OPEN = (
    f'<workbook xmlns="{MAIN}" xmlns:r="{REL}">'
    '<sheets><sheet name="Stock" sheetId="1" r:id="rId1"/></sheets>'
).encode()
WORKBOOK_CLOSE = b"</workbook>"


@dataclass(frozen=True)
class Member:
    """One zip member: its name, deflated bytes, CRC and unpacked size (as declared)."""

    name: str
    data: bytes
    crc: int
    size: int


def deflated(name: str, chunks: Iterable[bytes], level: int = 6) -> Member:
    """A member made of `chunks`, deflated as a stream (never held whole)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    out: list[bytes] = []
    crc = size = 0
    for chunk in chunks:
        out.append(compressor.compress(chunk))
        crc = zlib.crc32(chunk, crc)
        size += len(chunk)
    out.append(compressor.flush())
    return Member(name, b"".join(out), crc, size)


def text_member(name: str, text: str | bytes) -> Member:
    """A small member from its text."""
    return deflated(name, [text.encode() if isinstance(text, str) else text])


def lying(member: Member, size: int) -> Member:
    """The member, declaring `size` unpacked bytes whatever its data holds."""
    return replace(member, size=size)


def write_zip(path: Path, members: Iterable[Member]) -> Path:
    """An archive of the members (deflated, no zip64: every size under 4 GB)."""
    local = bytearray()
    directory = bytearray()
    count = 0
    for member in members:
        name = member.name.encode()
        offset = len(local)
        sizes = (member.crc, len(member.data), member.size)
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, *sizes, len(name), 0)
        local += name + member.data
        directory += struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            20,
            20,
            0,
            8,
            0,
            0,
            *sizes,
            len(name),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        directory += name
        count += 1
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(directory), len(local), 0)
    path.write_bytes(bytes(local) + bytes(directory) + end)
    return path


def skeleton(
    sheet: Member | None = None,
    workbook: Member | None = None,
    workbook_part: str = "xl/workbook.xml",
    extra: Iterable[Member] = (),
) -> list[Member]:
    """The members of a minimal workbook: one sheet `Stock`, the given parts in it."""
    rels_dir = workbook_part.rpartition("/")[0]
    rels_name = workbook_part.rpartition("/")[2]
    return [
        text_member(
            "[Content_Types].xml",
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
            'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/{workbook_part}" ContentType="application/vnd.'
            'openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/></Types>',
        ),
        text_member(
            "_rels/.rels",
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Target="/{workbook_part}" Type="{REL}/officeDocument"/>'
            "</Relationships>",
        ),
        workbook or text_member(workbook_part, WORKBOOK_OPEN + WORKBOOK_CLOSE),
        text_member(
            f"{rels_dir}/_rels/{rels_name}.rels",
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Target="/xl/worksheets/sheet1.xml" Type="{REL}/worksheet"/>'
            "</Relationships>",
        ),
        sheet or sheet_member(rows_xml([["partnumber", "qty"], ["A-1", "3"]])),
        *extra,
    ]


def rows_xml(rows: list[list[str]]) -> bytes:
    """`<row>`s of inline strings."""
    out = []
    for number, row in enumerate(rows, 1):
        cells = "".join(f'<c t="inlineStr"><is><t>{value}</t></is></c>' for value in row)
        out.append(f'<row r="{number}">{cells}</row>')
    return "".join(out).encode()


def sheet_member(body: bytes | Iterable[bytes], name: str = "xl/worksheets/sheet1.xml") -> Member:
    """A worksheet part holding `body` inside its `<sheetData>`."""
    chunks = [body] if isinstance(body, bytes) else body
    return deflated(name, _framed(SHEET_OPEN, chunks, SHEET_CLOSE))


def _framed(head: bytes, body: Iterable[bytes], tail: bytes) -> Iterator[bytes]:
    yield head
    yield from body
    yield tail


def repeated(chunk: bytes, total: int) -> Iterator[bytes]:
    """`chunk` again and again, `total` bytes in all (a whole number of chunks)."""
    for _ in range(total // len(chunk)):
        yield chunk


def sheet_bomb(unpacked: int) -> Member:
    """A sheet whose one cell is a string of `unpacked` bytes: about 1,000:1 deflated."""
    head = rows_xml([["partnumber", "qty"]]) + b'<row r="2"><c t="inlineStr"><is><t>'
    body = _framed(head, repeated(b"A" * MB, unpacked), b"</t></is></c></row>")
    return sheet_member(body)


def workbook_bomb(unpacked: int) -> Member:
    """A workbook.xml padded with `unpacked` bytes of spaces before its end."""
    body = _framed(WORKBOOK_OPEN, repeated(b" " * MB, unpacked), WORKBOOK_CLOSE)
    return deflated("xl/workbook.xml", body)


@pytest.fixture(scope="session")
def sheet_bomb_xlsx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's first bomb: a ~2 MB .xlsx whose sheet unpacks to 2 GB."""
    path = tmp_path_factory.mktemp("bombs") / "sheet-bomb.xlsx"
    return write_zip(path, skeleton(sheet=sheet_bomb(2048 * MB)))


@pytest.fixture(scope="session")
def workbook_bomb_xlsx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's second: a workbook.xml of 1 GB (about 1 MB packed)."""
    path = tmp_path_factory.mktemp("bombs") / "workbook-bomb.xlsx"
    return write_zip(path, skeleton(workbook=workbook_bomb(1024 * MB)))
