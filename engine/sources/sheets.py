"""Streaming readers for .xlsx and .csv files, header resolution and stock-row parsing.

Everything here is plain synchronous code meant to run in a worker thread (the handlers call it
through `asyncio.to_thread`), never on the event loop. The readers hold one row at a time, so a
sheet of any length is read with bounded memory: an .xlsx is checked against `UnpackLimits`
from its zip directory before anything is parsed, opened through openpyxl in read-only mode
with its whole-loaded parts bounded, and its sheet's XML is parsed as a stream that keeps
nothing once a row is read (see `engine.sources.workbook`; only the shared-strings table is held
whole).
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import re
import unicodedata
import zipfile
import zlib
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar

from openpyxl import Workbook
from openpyxl.utils.cell import coordinate_to_tuple
from openpyxl.utils.exceptions import InvalidFileException
from openpyxl.worksheet._read_only import ReadOnlyWorksheet
from openpyxl.worksheet._reader import DATA_TAG, INLINE_STRING, ROW_TAG, WorkSheetParser
from openpyxl.xml.constants import SHEET_MAIN_NS

from engine.sources.exceptions import (
    MissingColumnsError,
    RowError,
    SheetError,
    UnsupportedFormatError,
)
from engine.sources.workbook import (
    MAX_COLUMNS,
    UnpackLimits,
    check_package,
    load,
    stream_elements,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
Row = tuple[object, ...]
NumberedRow = tuple[int, Row]
RowReader = Generator[NumberedRow, None, None]
Record = tuple[int, dict[str, object]]
RecordReader = Generator[Record, None, None]

XLSX_MAGIC = b"PK\x03\x04"
"""Every .xlsx is a zip archive, whose first local file header starts with these bytes."""
OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
"""Legacy Excel 97-2003 .xls (and other OLE2 compound documents) start with these bytes."""
CSV_DELIMITERS = ",;\t"
CSV_SNIFF_BYTES = 16 * 1024

# Errors openpyxl and the zip/XML layers beneath it raise for a damaged or foreign file (XML
# parse errors are SyntaxErrors; openpyxl's descriptors raise TypeError/ValueError on bad values).
_READ_ERRORS = (
    zipfile.BadZipFile,
    InvalidFileException,
    KeyError,
    OSError,
    EOFError,
    zlib.error,
    SyntaxError,
    ValueError,
    TypeError,
    IndexError,
)


# --- header resolution -------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A column wanted from a sheet: its canonical name, the other header texts that mean it,
    and whether a sheet without it is refused."""

    name: str
    aliases: tuple[str, ...] = ()
    required: bool = False


STOCK_COLUMNS: tuple[Column, ...] = (
    Column("partnumber", ("артикул", "part number", "part_number", "part no", "p/n", "pn"), True),
    Column("vendor", ("производитель", "бренд", "brand", "manufacturer", "вендор")),
    Column("description", ("наименование", "описание", "name", "название")),
    Column("qty", ("количество", "кол-во", "quantity", "остаток"), True),
    Column("price", ("цена", "unit price")),
    Column("warehouse", ("склад", "location")),
)
"""Columns of a stock file (seed 000). Headers match case-insensitively, ignoring every space
and surrounding punctuation, so "Part Number*", "PART_NUMBER" and " Артикул: " all name
`partnumber`. Required: partnumber and qty."""


def normalize_header(value: object) -> str:
    """Reduce a header cell to the form compared with column names and aliases.

    Case-folded, NFKC-normalised, `ё` read as `е`, all whitespace (also non-breaking and
    zero-width spaces) removed, and punctuation or symbols at either end (`*`, `:`, `"`,
    `(`...) stripped; inner punctuation such as the `/` of "p/n" is kept.
    """
    if value is None:
        return ""
    text = unicodedata.normalize("NFKC", str(value)).casefold().replace("ё", "е")
    text = "".join(ch for ch in text if not ch.isspace() and unicodedata.category(ch) != "Cf")
    start, end = 0, len(text)
    while start < end and not text[start].isalnum():
        start += 1
    while end > start and not text[end - 1].isalnum():
        end -= 1
    return text[start:end]


def resolve_headers(header_row: Sequence[object], columns: Sequence[Column]) -> dict[str, int]:
    """Map each wanted column's canonical name to its 0-based index in `header_row`.

    A column that appears twice is taken from its first (leftmost) occurrence. Optional columns
    that are absent are left out of the result. Raises `MissingColumnsError` naming every
    missing required column and the headers that were found.
    """
    positions: dict[str, int] = {}
    for index, cell in enumerate(header_row):
        key = normalize_header(cell)
        if key and key not in positions:
            positions[key] = index
    resolved: dict[str, int] = {}
    missing: list[str] = []
    for column in columns:
        candidates = [normalize_header(n) for n in (column.name, *column.aliases)]
        found = [positions[c] for c in candidates if c in positions]
        if found:
            resolved[column.name] = min(found)
        elif column.required:
            missing.append(column.name)
    if missing:
        headers = [str(c).strip() for c in header_row if c is not None and str(c).strip()]
        raise MissingColumnsError(missing, headers)
    return resolved


# --- streaming readers -------------------------------------------------------------------------


def is_blank(row: Row) -> bool:
    """True when every cell is empty: None or a string of only whitespace."""
    for value in row:
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        return False
    return True


DEFAULT_LIMITS = UnpackLimits()


def iter_xlsx_rows(
    path: Path, sheet: str | None = None, limits: UnpackLimits = DEFAULT_LIMITS
) -> RowReader:
    """Yield `(sheet row number, values)` for each non-blank row of an .xlsx sheet, header first.

    Row numbers are 1-based and are the ones Excel shows, blank rows included in the count. The
    sheet is `sheet` by name, else the first worksheet. Formulas give their cached values. Rows
    may differ in length (trailing empty cells are not padded). Raises `SheetError` for a
    damaged file, a file that is not an .xlsx or an unknown sheet name, and its subclass
    `UnpackLimitError` (before anything is parsed) for a file past `limits`.
    """
    try:
        # A file object, not the path: openpyxl refuses paths whose suffix is not .xlsx, and
        # stored uploads or `file` sources need not be named so.
        stream = path.open("rb")
    except FileNotFoundError as exc:
        raise SheetError(f"{path.name}: no such file") from exc
    except OSError as exc:
        raise SheetError(f"{path.name}: cannot be opened ({_describe(exc)})") from exc
    try:
        check_package(stream, limits, path.name)
        workbook = load(stream, limits, path.name)
    except _READ_ERRORS as exc:
        stream.close()
        raise SheetError(f"{path.name}: not a readable .xlsx workbook ({_describe(exc)})") from exc
    except BaseException:
        stream.close()
        raise
    try:
        try:
            worksheet = _pick_sheet(workbook, sheet, path)
            rows = numbered_rows(worksheet, f"{path.name}, sheet {worksheet.title!r}")
        except _READ_ERRORS as exc:
            raise SheetError(f"{path.name}: damaged workbook ({_describe(exc)})") from exc
        number = 0
        while True:
            try:
                row = next(rows, None)
            except _READ_ERRORS as exc:
                raise SheetError(
                    f"{path.name}: damaged sheet after row {number} ({_describe(exc)})"
                ) from exc
            if row is None:
                return
            number, values = row
            if not is_blank(values):
                yield number, values
    finally:
        workbook.close()
        stream.close()


_INLINE_TEXT = f"{{{SHEET_MAIN_NS}}}t"


class _SheetParser(WorkSheetParser):
    """openpyxl's sheet parser, streaming rows with bounded memory and reading plain inline
    strings more cheaply.

    `parse` walks the sheet with `stream_elements`: a row is dropped from the tree once read
    (openpyxl's kept an empty element per row, and everything it did not know whole), a sheet
    running more than `MAX_ELEMENT_BYTES` of XML without completing a row is refused, and so is
    a row of more than `MAX_COLUMNS` cells. Only rows are read: the sheet's other parts (column
    widths, merged cells, print settings) do not change values.

    openpyxl reads every inline-string cell (`<c t="inlineStr"><is><t>text</t></is></c>`, the
    form openpyxl itself and many exporters write) through its generic rich-text object model,
    which costs more than the rest of the cell's parsing together. When the `<is>` element is
    just one `<t>` without attributes the value is that text ("" when empty), exactly what
    openpyxl's `Text.content` gives; every other cell (rich text runs, phonetic runs, shared
    strings, numbers, dates, formulas) goes through openpyxl's own `parse_cell` unchanged.
    """

    label = "the sheet"

    def parse(self) -> Generator[tuple[int, list[dict[str, Any]]], None, None]:
        """`(row number, cells)` of each row, as openpyxl's `parse` yields them."""
        source: Any = self.source
        element: Any
        for element in stream_elements(source, (DATA_TAG, ROW_TAG), self.label):
            if len(element) > MAX_COLUMNS:
                raise SheetError(
                    f"{self.label}: the row after row {self.row_counter} has"
                    f" {len(element):,} cells, more than Excel's {MAX_COLUMNS:,} columns"
                )
            row: tuple[int, list[dict[str, Any]]] = self.parse_row(element)
            self.row_dimensions.clear()  # openpyxl keeps every row's height and style here
            yield row

    def parse_cell(self, element: Any) -> dict[str, Any]:
        """The cell as openpyxl's `parse_cell` returns it."""
        if element.get("t") != "inlineStr" or not self.data_only:
            return super().parse_cell(element)
        inline = element.find(INLINE_STRING)
        if inline is None or len(inline) != 1 or inline.attrib or inline[0].tag != _INLINE_TEXT:
            return super().parse_cell(element)
        style_id = element.get("s", 0)
        if style_id:
            style_id = int(style_id)
        coordinate = element.get("r")
        if coordinate:
            row, column = coordinate_to_tuple(coordinate)
            self.col_counter = column
        else:
            self.col_counter += 1
            row, column = self.row_counter, self.col_counter
        text = inline[0].text or ""
        return {"row": row, "column": column, "value": text, "data_type": "s", "style_id": style_id}


def numbered_rows(worksheet: ReadOnlyWorksheet, label: str = "the sheet") -> Iterator[NumberedRow]:
    """`(row number, values)` of each row a read-only worksheet holds, parsed with
    `_SheetParser` (`label` names the sheet in its errors).

    The rows of `sheet_values` without the empty ones it puts in the gaps, so a row number
    that jumps far ahead costs nothing.
    """
    sheet: Any = worksheet
    workbook: Any = worksheet.parent
    expected = 1
    with sheet._get_source() as source:
        parser = _SheetParser(
            source,
            sheet._shared_strings,
            data_only=workbook.data_only,
            epoch=workbook.epoch,
            date_formats=workbook._date_formats,
            timedelta_formats=workbook._timedelta_formats,
        )
        parser.label = label
        for number, cells in parser.parse():
            if number >= expected:  # a row number going backwards is skipped
                expected = number + 1
                yield number, _row_values(cells)


def sheet_values(worksheet: ReadOnlyWorksheet) -> Iterator[Row]:
    """The rows of a read-only worksheet whose dimensions were reset, as value tuples.

    The same rows, in the same places, as openpyxl's `worksheet.values` (its
    `_cells_by_row(values_only=True)` without a declared width: a missing row reads as `()`, a
    row as wide as its last cell, a row number that goes backwards skipped). The tests compare
    both on workbooks of every cell kind.
    """
    counter = 1
    for number, values in numbered_rows(worksheet):
        while counter < number:
            counter += 1
            yield ()
        counter += 1
        yield values


def _row_values(cells: list[dict[str, Any]]) -> Row:
    """openpyxl's `_get_row(values_only=True)`: values by column, up to the last cell's."""
    if not cells:
        return ()
    width = cells[-1]["column"]
    values: list[object] = [None] * width
    for cell in cells:
        column = cell["column"]
        if 1 <= column <= width:
            values[column - 1] = cell["value"]
    return tuple(values)


def _pick_sheet(workbook: Workbook, name: str | None, path: Path) -> ReadOnlyWorksheet:
    """The worksheet called `name`, else the first one (chart sheets are not worksheets)."""
    worksheets = [w for w in workbook.worksheets if isinstance(w, ReadOnlyWorksheet)]
    if not worksheets:
        raise SheetError(f"{path.name}: the workbook has no worksheet")
    if name is None:
        return worksheets[0]
    for worksheet in worksheets:
        if worksheet.title == name:
            return worksheet
    titles = ", ".join(repr(w.title) for w in worksheets)
    raise SheetError(f"{path.name}: no sheet named {name!r}; sheets: {titles}")


def iter_csv_rows(
    path: Path, delimiter: str | None = None, encoding: str = "utf-8-sig"
) -> RowReader:
    """Yield `(row number, values)` for each non-blank record of a CSV file, header first.

    The row number counts records from 1 (as a spreadsheet application opening the file shows
    them; a quoted field spanning lines stays one row). Empty fields read as None, the others
    as strings. When `delimiter` is None it is guessed among `,`, `;` and tab. Raises
    `SheetError` for a file that cannot be opened or decoded.
    """
    try:
        with path.open(newline="", encoding=encoding) as stream:
            if delimiter is None:
                delimiter = sniff_delimiter(stream.read(CSV_SNIFF_BYTES))
                stream.seek(0)
            reader = csv.reader(stream, delimiter=delimiter)
            number = 0
            while True:
                try:
                    fields = next(reader, None)
                except csv.Error as exc:
                    raise SheetError(f"{path.name}: bad CSV after row {number}: {exc}") from exc
                except UnicodeDecodeError as exc:
                    raise SheetError(
                        f"{path.name}: not {encoding} text after row {number};"
                        " give the file's encoding"
                    ) from exc
                if fields is None:
                    return
                number += 1
                # Empty fields as None; a row without one (most) as it is, in C.
                values = tuple(fields) if "" not in fields else tuple([f or None for f in fields])
                if not is_blank(values):
                    yield number, values
    except FileNotFoundError as exc:
        raise SheetError(f"{path.name}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise SheetError(f"{path.name}: not {encoding} text; give the file's encoding") from exc
    except LookupError as exc:
        raise SheetError(f"{path.name}: unknown encoding {encoding!r}") from exc
    except OSError as exc:
        raise SheetError(f"{path.name}: cannot be read ({_describe(exc)})") from exc


def sniff_delimiter(sample: str) -> str:
    """Guess the delimiter of a CSV sample among `,`, `;` and tab.

    `csv.Sniffer` first; when it cannot decide, the candidate seen most often in the first
    non-blank line (the header); `,` when there is none.
    """
    try:
        return csv.Sniffer().sniff(sample, delimiters=CSV_DELIMITERS).delimiter
    except csv.Error:
        pass
    first = next((line for line in sample.splitlines() if line.strip()), "")
    counts = {d: first.count(d) for d in CSV_DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def detect_format(path: Path) -> Literal["xlsx", "csv"]:
    """Tell an .xlsx from a CSV file by its first bytes, not its name.

    Raises `UnsupportedFormatError` for a legacy .xls (OLE2) file and `SheetError` when the
    file cannot be opened.
    """
    try:
        with path.open("rb") as stream:
            head = stream.read(len(OLE2_MAGIC))
    except OSError as exc:
        raise SheetError(f"{path.name}: cannot be opened ({_describe(exc)})") from exc
    if head.startswith(XLSX_MAGIC):
        return "xlsx"
    if head.startswith(OLE2_MAGIC):
        raise UnsupportedFormatError(f"{path.name}: legacy Excel 97-2003 (.xls) workbook")
    return "csv"


def iter_rows(
    path: Path,
    *,
    sheet: str | None = None,
    delimiter: str | None = None,
    encoding: str = "utf-8-sig",
    limits: UnpackLimits = DEFAULT_LIMITS,
) -> RowReader:
    """The non-blank rows of an .xlsx or CSV file (chosen by content), header first."""
    if detect_format(path) == "xlsx":
        return iter_xlsx_rows(path, sheet, limits)
    return iter_csv_rows(path, delimiter, encoding)


def iter_records(
    path: Path,
    columns: Sequence[Column],
    *,
    sheet: str | None = None,
    delimiter: str | None = None,
    encoding: str = "utf-8-sig",
    limits: UnpackLimits = DEFAULT_LIMITS,
) -> RecordReader:
    """Yield `(row number, {column name: value})` for each data row of an .xlsx or CSV file.

    The header is the first non-blank row. Every column of `columns` is a key of each record;
    an optional column absent from the sheet, or a cell past the end of a short row, reads as
    None. Raises (from the first `next()`, as it is a generator) `SheetError` when there is no
    header row and `MissingColumnsError` when a required column is missing.
    """
    rows = iter_rows(path, sheet=sheet, delimiter=delimiter, encoding=encoding, limits=limits)
    try:
        first = next(rows, None)
        if first is None:
            raise SheetError(f"{path.name}: the sheet is empty (no header row)")
        header_number, header = first
        positions = resolve_headers(header, columns)
        logger.debug(
            "resolved headers",
            extra={
                "action": "resolve_headers",
                "file": path.name,
                "row": header_number,
                "columns": positions,
            },
        )
        layout = [(c.name, positions.get(c.name)) for c in columns]
        for number, values in rows:
            width = len(values)
            yield (
                number,
                {name: values[i] if i is not None and i < width else None for name, i in layout},
            )
    finally:
        rows.close()


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Yield lists of `size` items (the last may be shorter); nothing for an empty input."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def batched_records(
    path: Path,
    columns: Sequence[Column],
    size: int,
    *,
    sheet: str | None = None,
    delimiter: str | None = None,
    encoding: str = "utf-8-sig",
    limits: UnpackLimits = DEFAULT_LIMITS,
) -> Generator[list[Record], None, None]:
    """`iter_records` in lists of `size` records, so a handler can hop to its thread per batch.

    Typical use from a handler: `batches = batched_records(...)`, then
    `await asyncio.to_thread(next, batches, None)` until None, and
    `await asyncio.to_thread(batches.close)` when stopping early (closes the file).
    """
    records = iter_records(
        path, columns, sheet=sheet, delimiter=delimiter, encoding=encoding, limits=limits
    )
    try:
        yield from batched(records, size)
    finally:
        records.close()


# --- upload check ------------------------------------------------------------------------------


def sniff_upload(first_bytes: bytes, filename: str) -> Literal["xlsx"]:
    """Check that an upload is an .xlsx workbook, by its name and its first bytes.

    Refuses 1C:Enterprise .mxl and legacy .xls files, any other file extension, and any content
    that is not a zip archive, with `UnsupportedFormatError` (the API answers 415). A name
    without an extension is judged by its bytes alone.
    """
    suffix = PurePath(filename).suffix.lower() if filename else ""
    name = filename or "the upload"
    if suffix == ".mxl":
        raise UnsupportedFormatError(f"{name}: 1C:Enterprise .mxl spreadsheets are not supported")
    if suffix == ".xls" or first_bytes.startswith(OLE2_MAGIC):
        raise UnsupportedFormatError(
            f"{name}: legacy Excel 97-2003 (.xls) workbooks are not supported; save it as .xlsx"
        )
    if suffix not in ("", ".xlsx"):
        raise UnsupportedFormatError(f"{name}: {suffix} files are not supported")
    if not first_bytes.startswith(XLSX_MAGIC):
        raise UnsupportedFormatError(f"{name}: the content is not an .xlsx workbook")
    return "xlsx"


# --- stock rows --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StockRow:
    """One valid row of a stock file."""

    partnumber: str
    vendor: str
    description: str | None
    qty: Decimal
    price: Decimal | None
    warehouse: str | None


_SPACES = re.compile(r"[\s\u00a0\u2007\u202f\u2009\u200b']+")
_GROUPED = re.compile(r"[+-]?\d{1,3}(?:[.,]\d{3})+")


def parse_decimal(value: object) -> Decimal | None:
    """Read a number from a cell: int, float, Decimal or text; None for an empty cell.

    Text may use spaces, non-breaking spaces or `'` between thousands and `,` or `.` as the
    decimal separator ("1 234,50", "1,234.50", "1.234,50"). When only one kind of separator
    appears it is the decimal separator, unless it appears more than once in groups of three
    digits ("1,234,567"). Raises `ValueError` saying why for anything else (text, NaN,
    infinity, booleans, dates).
    """
    # Numeric cells first: this runs for every cell of a million rows.
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        return Decimal(repr(value))
    if isinstance(value, int):
        if isinstance(value, bool):
            raise ValueError(f"not a number: {value!r}")
        return Decimal(value)
    if value is None:
        return None
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a finite number: {value!r}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"not a number: {type(value).__name__} {value!s}")
    text = _SPACES.sub("", value)
    if not text:
        return None
    number = _normalize_separators(text)
    try:
        result = Decimal(number)
    except InvalidOperation:
        raise ValueError(f"not a number: {value.strip()!r}") from None
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value.strip()!r}")
    return result


def _normalize_separators(text: str) -> str:
    """Rewrite thousands and decimal separators so `Decimal` can read the text."""
    has_comma, has_dot = "," in text, "." in text
    if has_comma and has_dot:
        decimal_sep = "," if text.rfind(",") > text.rfind(".") else "."
        group_sep = "." if decimal_sep == "," else ","
        return text.replace(group_sep, "").replace(decimal_sep, ".")
    separator = "," if has_comma else "." if has_dot else ""
    if not separator:
        return text
    if text.count(separator) > 1:
        if _GROUPED.fullmatch(text):
            return text.replace(separator, "")
        return "x"  # several separators that are not thousands groups: not a number
    return text.replace(",", ".")


def cell_text(value: object) -> str:
    """A cell as stripped text: '' for None, integral floats without '.0' (Excel stores
    numeric part numbers as floats)."""
    if type(value) is str:
        return value.strip()
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def parse_stock_row(row: dict[str, object]) -> StockRow:
    """Validate one record of `STOCK_COLUMNS` into a `StockRow`.

    Raises `RowError` for an empty partnumber, an empty or non-numeric qty, or a non-numeric
    price; the reason names the column and the value.
    """
    partnumber = cell_text(row.get("partnumber"))
    if not partnumber:
        raise RowError("partnumber is empty")
    raw_qty = row.get("qty")
    try:
        qty = parse_decimal(raw_qty)
    except ValueError as exc:
        raise RowError(f"qty: {exc}") from None
    if qty is None:
        raise RowError("qty is empty")
    try:
        price = parse_decimal(row.get("price"))
    except ValueError as exc:
        raise RowError(f"price: {exc}") from None
    return StockRow(
        partnumber=partnumber,
        vendor=cell_text(row.get("vendor")),
        description=cell_text(row.get("description")) or None,
        qty=qty,
        price=price,
        warehouse=cell_text(row.get("warehouse")) or None,
    )


def _describe(exc: BaseException) -> str:
    """`ExceptionName: message`, on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
