"""Opening an .xlsx workbook with bounded memory, whatever the file holds.

An .xlsx is a zip archive of XML parts, and its packed size says little: a 2 MB file may unpack
to 2 GB (DEFLATE reaches about 1,000:1). Three layers keep a workbook, an upload or a `file`
source alike, from taking the daemon's memory:

1. `check_package`, before anything is parsed, reads only the zip's end record and central
   directory (the declared sizes of every member) and refuses a workbook with too many
   members, more unpacked bytes in all than `UnpackLimits.unpacked_bytes`, an XML part other
   than a worksheet bigger than `part_bytes` (openpyxl loads those whole: workbook.xml,
   sharedStrings.xml, styles.xml...), or a member compressed more than `ratio` to one. The
   declared sizes bind: `zipfile` stops a member at its declared size and fails its CRC if the
   data would go on.
2. `load` opens the workbook through openpyxl with three changes: its archive refuses to load
   whole any member past `part_bytes` or holding more than `MAX_WHOLE_XML_TAGS` tags, whatever
   its name (`check_package` judges by name; a workbook part disguised as a worksheet is caught
   here); the shared strings are streamed into a plain list (openpyxl kept an empty element
   per string, and everything else the part held); and the worksheets are not parsed when the
   workbook is opened (openpyxl parses each one looking for `<dimension>`, the whole sheet when
   there is none, keeping an element per row).
3. `stream_elements` is the XML walker of the sheet reader and of the shared strings: it drops
   every element from the tree as soon as it is handled, and refuses a document that runs more
   than `MAX_ELEMENT_BYTES` of XML without completing a row (a string), so a sheet of any
   length is read one row at a time.

Entity expansion ("billion laughs") is stopped by expat itself (2.4 and later limit the
amplification).
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal
from xml.etree.ElementTree import Element, XMLPullParser

from openpyxl.cell.text import Text
from openpyxl.reader.excel import ExcelReader
from openpyxl.workbook.workbook import Workbook
from openpyxl.worksheet._read_only import ReadOnlyWorksheet
from openpyxl.xml.constants import SHARED_STRINGS, SHEET_MAIN_NS

from engine.sources.exceptions import SheetError, UnpackLimitError

if TYPE_CHECKING:
    from config.settings import Settings

MB = 1024 * 1024
RATIO_GRACE_BYTES = 1 * MB
"""Members smaller than this unpacked are not held to the ratio (tiny parts compress oddly)."""
MAX_CENTRAL_DIRECTORY_BYTES = 16 * MB
"""A central directory this big is refused before it is read (about 100 bytes per member)."""
MAX_WHOLE_XML_TAGS = 2_000_000
"""Tags (`<`) a part loaded whole may hold: about 200 MB of element tree at most, where a large
legitimate styles.xml holds a few hundred thousand."""
MAX_ELEMENT_BYTES = 16 * MB
"""XML bytes a streamed document may run without completing a row (a shared string), and one
element or stretch of text before the rows may take. A row of Excel's 16,384 columns of long
text is a few MB."""
MAX_COLUMNS = 16_384
"""Excel's column limit (XFD); a row with more cells is refused."""
CHUNK = 64 * 1024
WORKSHEETS = "xl/worksheets/"
_SHARED_STRING = f"{{{SHEET_MAIN_NS}}}si"

_END = struct.Struct("<4s4H2LH")
_END_SIGNATURE = b"PK\x05\x06"
_LOCATOR = struct.Struct("<4sLQL")
_LOCATOR_SIGNATURE = b"PK\x06\x07"
_END64 = struct.Struct("<4sQ2H2L4Q")
_END64_SIGNATURE = b"PK\x06\x06"
_HEADER_SIZE = 46
_HEADER_SIGNATURE = b"PK\x01\x02"
_NAME_LENGTHS = struct.Struct("<3H")  # name, extra field and comment lengths, at offset 28


@dataclass(frozen=True)
class UnpackLimits:
    """How far an .xlsx may unpack (the `SYNCD_XLSX_*` settings)."""

    unpacked_bytes: int = 1024 * MB
    part_bytes: int = 64 * MB
    ratio: float = 100.0
    members: int = 10_000

    @classmethod
    def from_settings(cls, settings: Settings) -> UnpackLimits:
        """The limits the daemon's settings give."""
        return cls(
            unpacked_bytes=settings.xlsx_max_unpacked_mb * MB,
            part_bytes=settings.xlsx_max_part_mb * MB,
            ratio=settings.xlsx_max_ratio,
            members=settings.xlsx_max_members,
        )


@dataclass(frozen=True)
class PackageSize:
    """What `check_package` found: members and bytes, packed and unpacked."""

    members: int
    packed_bytes: int
    unpacked_bytes: int


# ---- 1. the central directory ---------------------------------------------------------------


def check_package(stream: IO[bytes], limits: UnpackLimits, label: str) -> PackageSize:
    """Check a workbook's zip against `limits` from its central directory alone.

    Raises `UnpackLimitError` naming every problem (`too_large` when a size limit is passed)
    and `SheetError` for a file that is not a readable zip archive. `label` names the file in
    messages. Blocking: call it in a worker thread.
    """
    start, size = _central_directory(stream, label)
    if size > MAX_CENTRAL_DIRECTORY_BYTES:
        raise UnpackLimitError(
            label, [f"its zip directory is {_mb(size)}, above {_mb(MAX_CENTRAL_DIRECTORY_BYTES)}"]
        )
    stream.seek(start)
    count = _count_members(stream.read(size), label)
    if count > limits.members:
        raise UnpackLimitError(
            label, [f"{count:,} zip members, above SYNCD_XLSX_MAX_MEMBERS={limits.members:,}"]
        )
    stream.seek(0)
    try:
        with zipfile.ZipFile(stream) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise SheetError(f"{label}: not a readable .xlsx workbook ({exc})") from exc
    problems, too_large = _problems(members, limits)
    if problems:
        raise UnpackLimitError(label, problems, too_large=too_large)
    return PackageSize(
        members=len(members),
        packed_bytes=sum(m.compress_size for m in members),
        unpacked_bytes=sum(m.file_size for m in members),
    )


def check_file(path: Path, limits: UnpackLimits, label: str) -> PackageSize:
    """`check_package` of a file (blocking); `SheetError` also when it cannot be opened."""
    try:
        with path.open("rb") as stream:
            return check_package(stream, limits, label)
    except OSError as exc:
        raise SheetError(f"{label}: cannot be opened ({exc.strerror or exc})") from exc


def is_worksheet(name: str) -> bool:
    """True for the parts a workbook keeps its worksheets in (streamed, never loaded whole)."""
    rest = name.removeprefix(WORKSHEETS)
    return rest != name and "/" not in rest and rest.endswith(".xml")


def _problems(members: Sequence[zipfile.ZipInfo], limits: UnpackLimits) -> tuple[list[str], bool]:
    problems: list[str] = []
    too_large = False
    total = sum(m.file_size for m in members)
    for member in members:
        name, size = member.filename, member.file_size
        loaded_whole = name.endswith((".xml", ".rels")) and not is_worksheet(name)
        if loaded_whole and size > limits.part_bytes:
            too_large = True
            problems.append(
                f"{name} unpacks to {_mb(size)}, above SYNCD_XLSX_MAX_PART_MB="
                f"{limits.part_bytes // MB:,} (parts other than worksheets are loaded whole)"
            )
        ratio = size / member.compress_size if member.compress_size else float("inf")
        if size > RATIO_GRACE_BYTES and ratio > limits.ratio:
            problems.append(
                f"{name} unpacks to {_mb(size)} from {_mb(member.compress_size)},"
                f" {_ratio(ratio)}:1, above SYNCD_XLSX_MAX_RATIO={limits.ratio:g}"
            )
    if total > limits.unpacked_bytes:
        too_large = True
        problems.append(
            f"it unpacks to {_mb(total)} in all, above SYNCD_XLSX_MAX_UNPACKED_MB="
            f"{limits.unpacked_bytes // MB:,}"
        )
    return problems, too_large


def _central_directory(stream: IO[bytes], label: str) -> tuple[int, int]:
    """Where the central directory starts and how long it is, from the end record(s)."""
    end = stream.seek(0, 2)
    tail_size = min(end, _END.size + 0xFFFF)
    stream.seek(end - tail_size)
    tail = stream.read(tail_size)
    at = tail.rfind(_END_SIGNATURE)
    if at < 0 or tail_size - at < _END.size:
        raise SheetError(f"{label}: not a readable .xlsx workbook (no zip directory)")
    record_at = end - tail_size + at
    fields = _END.unpack_from(tail, at)
    size, offset = fields[5], fields[6]
    if 0xFFFFFFFF in (size, offset) or fields[4] == 0xFFFF:
        record_at, size = _zip64_directory(stream, record_at, label)
    start = record_at - size
    if start < 0:
        raise SheetError(f"{label}: not a readable .xlsx workbook (damaged zip directory)")
    return start, size


def _zip64_directory(stream: IO[bytes], end_at: int, label: str) -> tuple[int, int]:
    """The position of the zip64 end record and the directory size it gives."""
    damaged = SheetError(f"{label}: not a readable .xlsx workbook (damaged zip64 directory)")
    locator_at = end_at - _LOCATOR.size
    record_at = locator_at - _END64.size
    if record_at < 0:
        raise damaged
    stream.seek(record_at)
    head = stream.read(_END64.size + _LOCATOR.size)
    if len(head) < _END64.size + _LOCATOR.size:
        raise damaged
    record = _END64.unpack_from(head, 0)
    locator = _LOCATOR.unpack_from(head, _END64.size)
    if record[0] != _END64_SIGNATURE or locator[0] != _LOCATOR_SIGNATURE:
        raise damaged
    return record_at, int(record[8])


def _count_members(directory: bytes, label: str) -> int:
    """How many file headers the central directory holds (walked, not parsed)."""
    count = position = 0
    while position < len(directory):
        header_end = position + _HEADER_SIZE
        if directory[position : position + 4] != _HEADER_SIGNATURE or header_end > len(directory):
            raise SheetError(f"{label}: not a readable .xlsx workbook (damaged zip directory)")
        name, extra, comment = _NAME_LENGTHS.unpack_from(directory, position + 28)
        position = header_end + name + extra + comment
        count += 1
    return count


def _mb(size: int) -> str:
    return f"{size / MB:,.1f} MB"


def _ratio(ratio: float) -> str:
    return "∞" if ratio == float("inf") else f"{ratio:,.0f}"


# ---- 2. loading -----------------------------------------------------------------------------


class _Archive(zipfile.ZipFile):
    """The workbook's zip, refusing to load a member whole past the limits while `loading`.

    openpyxl reads whole (`read`) or streams into a list (`open`, the shared strings) every
    part it loads; only the worksheet the import reads is opened after loading, and that one is
    streamed row by row.
    """

    def __init__(self, stream: IO[bytes], limits: UnpackLimits, label: str) -> None:
        super().__init__(stream)
        self.limits = limits
        self.label = label
        self.loading = True

    def open(
        self,
        name: str | zipfile.ZipInfo,
        mode: Literal["r", "w"] = "r",
        pwd: bytes | None = None,
        *,
        force_zip64: bool = False,
    ) -> IO[bytes]:
        """`ZipFile.open`, refusing a member too big to load whole while loading."""
        if mode == "r" and self.loading:
            info = name if isinstance(name, zipfile.ZipInfo) else self.getinfo(name)
            if info.file_size > self.limits.part_bytes:
                raise UnpackLimitError(
                    self.label,
                    [
                        f"{info.filename}, which is loaded whole, unpacks to"
                        f" {_mb(info.file_size)}, above SYNCD_XLSX_MAX_PART_MB="
                        f"{self.limits.part_bytes // MB:,}"
                    ],
                    too_large=True,
                )
        return super().open(name, mode, pwd, force_zip64=force_zip64)

    def read(self, name: str | zipfile.ZipInfo, pwd: bytes | None = None) -> bytes:
        """`ZipFile.read`, refusing a part of more than `MAX_WHOLE_XML_TAGS` tags while
        loading (its element tree would take about 100 bytes a tag)."""
        data = super().read(name, pwd)
        if self.loading and data.count(b"<") > MAX_WHOLE_XML_TAGS:
            shown = name.filename if isinstance(name, zipfile.ZipInfo) else name
            raise UnpackLimitError(
                self.label,
                [f"{shown} holds more than {MAX_WHOLE_XML_TAGS:,} XML tags (it is loaded whole)"],
            )
        return data


class _LazySheet(ReadOnlyWorksheet):
    """A read-only worksheet that is not parsed when the workbook is opened (the readers reset
    its dimensions and stream it)."""

    def _get_size(self) -> None:
        return None


class _Reader(ExcelReader):
    """openpyxl's workbook reader in read-only, values-only mode, on a guarded archive."""

    archive: _Archive

    def __init__(self, stream: IO[bytes], limits: UnpackLimits, label: str) -> None:
        super().__init__(stream, read_only=True, data_only=True, keep_links=False)
        self.archive.close()  # openpyxl's own, unguarded; the stream stays open
        self.archive = _Archive(stream, limits, label)
        self.valid_files = self.archive.namelist()

    def read_strings(self) -> None:
        """The shared strings, streamed into a list."""
        package: Any = self.package
        part = package.find(SHARED_STRINGS)
        if part is not None:
            with self.archive.open(part.PartName[1:]) as source:
                self.shared_strings = read_shared_strings(source)

    def read_worksheets(self) -> None:
        """openpyxl's read-only branch, without parsing each sheet or reading its relations."""
        for sheet, rel in self.parser.find_sheets():
            if rel.target not in self.valid_files:
                continue
            child: Any = sheet  # a chartsheet here (openpyxl's stubs know only ChildSheet)
            if "chartsheet" in rel.Type:
                self.read_chartsheet(child, rel)
                continue
            worksheet = _LazySheet(self.wb, sheet.name, rel.target, self.shared_strings)
            worksheet.sheet_state = child.state
            workbook: Any = self.wb
            workbook._sheets.append(worksheet)


def load(stream: IO[bytes], limits: UnpackLimits, label: str) -> Workbook:
    """The workbook in `stream` (checked with `check_package` first), read-only and values-only;
    close it when done. Raises `UnpackLimitError` for a part too big to load whole, and what
    openpyxl raises for a damaged file."""
    reader = _Reader(stream, limits, label)
    reader.read()
    reader.archive.loading = False
    return reader.wb


def read_shared_strings(source: IO[bytes]) -> list[str]:
    """The shared-strings table as openpyxl's `read_string_table` reads it, streamed."""
    return [
        _text(node).replace("x005F_", "")
        for node in stream_elements(source, (_SHARED_STRING,), "the shared strings")
    ]


def _text(node: Any) -> str:
    text: Any = Text.from_tree(node)
    return str(text.content)


# ---- 3. streaming XML -----------------------------------------------------------------------


def stream_elements(source: IO[bytes], path: Sequence[str], label: str) -> Iterator[Element]:
    """Each element at `path` below the root (tags, outermost first), once it is complete.

    The document is parsed in chunks and nothing stays in the tree once handled: the wanted
    elements (the last tag of `path`, inside the elements the other tags name) are dropped
    after they are yielded (use one before asking for the next), everything else as soon as it
    ends. Memory holds one wanted element at a time however long the document is. The walk
    stops where the innermost container ends (nothing wanted can follow).

    Raises `SheetError` when the document runs more than `MAX_ELEMENT_BYTES` of XML without
    completing a wanted element once inside the innermost container, or, before it, when an
    element or a stretch of text is that long; malformed XML raises expat's `ParseError` (a
    `SyntaxError`), for the caller to say where it was.
    """
    parser: XMLPullParser[Element] = XMLPullParser(events=("start", "end"))
    walker = _Walker(path, label)
    while not walker.finished:
        chunk = source.read(CHUNK)
        if chunk:
            parser.feed(chunk)
        else:
            parser.close()
        walker.fed += len(chunk)
        yield from walker.take(parser.read_events())
        if not chunk:
            return
        if walker.container is not None and not walker.ends_only:
            walker.ends_only = report_ends_only(parser)


def report_ends_only(parser: XMLPullParser[Element]) -> bool:
    """Stop `parser` reporting start events; False when it cannot be done.

    Inside the innermost container only end events are needed, and start events are half of
    them: each costs a turn of `read_events`, a Python generator, which made reading a sheet
    about a third slower. This is the call `XMLPullParser` makes itself to choose its events
    (CPython 3.8 to 3.13 at least); where it is missing the walk stays correct, only slower
    (`tests/unit/test_unpack.py` checks it is taken here).
    """
    hook: Any = getattr(getattr(parser, "_parser", None), "_setevents", None)
    queue = getattr(parser, "_events_queue", None)
    if hook is None or queue is None:
        return False
    hook(queue, ("end",))
    return True


class _Walker:
    """The state of `stream_elements`.

    Until the innermost container starts, every element is tracked with its depth and removed
    from its parent when it ends, and an element built whole (anything not on `path`) may take
    at most `MAX_ELEMENT_BYTES`. Inside the container, end events are enough: the wanted
    elements are yielded, and the container's children are dropped after every chunk (the one
    being built included: the parser still holds it and completes it).
    """

    def __init__(self, path: Sequence[str], label: str) -> None:
        self.path = tuple(path)
        self.label = label
        self.wanted = self.path[-1]
        self.parents: list[Element] = []  # the open elements, until the container starts
        self.on_path = 0  # how many of them, from the root, follow `path`
        self.container: Element | None = None
        self.ends_only = False
        self.finished = False
        self.fed = 0  # bytes fed to the parser so far
        self.mark = 0  # bytes fed when what is guarded now began
        self.guarded_depth = 0  # depth of the open element built whole (0: none)

    def take(self, events: Iterator[Any]) -> Iterator[Element]:
        """Handle one chunk's events, yielding the wanted elements that ended."""
        if self.container is None:
            self._until_container(events)
        if self.container is not None:
            yield from self._inside(events)
        self._check()

    def _until_container(self, events: Iterator[Any]) -> None:
        seen = False
        for event, element in events:
            seen = True
            if event == "start":
                self._start(element)
                if self.container is not None:
                    return
            else:
                self._end(element)
        if seen and not self.guarded_depth:
            self.mark = self.fed  # from here on, only text is being built

    def _start(self, element: Element) -> None:
        depth = len(self.parents) + 1
        follows = self.on_path == depth - 1 and (depth == 1 or element.tag == self.path[depth - 2])
        self.parents.append(element)
        if follows:
            self.on_path = depth
            if depth == len(self.path):  # the root itself when `path` is one tag
                self.container = element
                self.mark = self.fed
        elif not self.guarded_depth:
            self.guarded_depth, self.mark = depth, self.fed

    def _end(self, element: Element) -> None:
        depth = len(self.parents)
        self.parents.pop()
        if self.parents:
            self.parents[-1].remove(element)
        if self.on_path == depth:
            self.on_path = depth - 1
        if self.guarded_depth == depth:
            self.guarded_depth = 0

    def _inside(self, events: Iterator[Any]) -> Iterator[Element]:
        container, wanted = self.container, self.wanted
        for event, element in events:
            if event != "end":  # queued before start events were turned off, or no hook
                continue
            if element.tag == wanted:
                self.mark = self.fed
                yield element
            elif element is container:
                self.finished = True
                return
        assert container is not None
        del container[:]

    def _check(self) -> None:
        if self.finished or self.fed - self.mark <= MAX_ELEMENT_BYTES:
            return
        if self.container is not None:
            what = f"without a complete {_local(self.wanted)} element"
        elif self.guarded_depth:
            what = "in one element"
        else:
            what = "without a tag"
        raise SheetError(f"{self.label}: more than {_mb(MAX_ELEMENT_BYTES)} of XML {what}")


def _local(tag: str) -> str:
    """`row` for `{namespace}row`."""
    return tag.rpartition("}")[2]
