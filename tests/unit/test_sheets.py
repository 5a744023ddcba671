"""Tests of the .xlsx/.csv readers, header resolution and stock-row parsing, on real files."""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook

from engine.sources.exceptions import (
    MissingColumnsError,
    RowError,
    SheetError,
    UnsupportedFormatError,
)
from engine.sources.sheets import (
    STOCK_COLUMNS,
    Column,
    StockRow,
    batched,
    batched_records,
    detect_format,
    iter_csv_rows,
    iter_records,
    iter_xlsx_rows,
    normalize_header,
    parse_decimal,
    parse_stock_row,
    resolve_headers,
    sheet_values,
    sniff_upload,
)

NBSP = "\u00a0"


def write_xlsx(path: Path, rows: Sequence[Sequence[object]], title: str = "Stock") -> Path:
    """Write `rows` to a one-sheet workbook with openpyxl's write-only mode."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title)
    for row in rows:
        sheet.append(list(row))
    workbook.save(path)
    return path


# --- headers -----------------------------------------------------------------------------------


def test_resolve_english_headers_with_odd_case_spacing_and_punctuation() -> None:
    header = [" Part Number* ", "VENDOR", "Description", f"Q{NBSP}t y", "price:", "Warehouse"]
    assert resolve_headers(header, STOCK_COLUMNS) == {
        "partnumber": 0,
        "vendor": 1,
        "description": 2,
        "qty": 3,
        "price": 4,
        "warehouse": 5,
    }


def test_resolve_russian_headers_in_another_order() -> None:
    header = ["Склад", "  ЦЕНА ", "Кол-во", "Наименование", "Бренд", f"Артикул{NBSP}*"]
    assert resolve_headers(header, STOCK_COLUMNS) == {
        "warehouse": 0,
        "price": 1,
        "qty": 2,
        "description": 3,
        "vendor": 4,
        "partnumber": 5,
    }


def test_optional_columns_may_be_absent_and_blank_headers_are_ignored() -> None:
    header = [None, "P/N", "", "Количество"]
    assert resolve_headers(header, STOCK_COLUMNS) == {"partnumber": 1, "qty": 3}


def test_first_matching_header_wins() -> None:
    assert resolve_headers(["qty", "Количество", "pn"], STOCK_COLUMNS)["qty"] == 0


def test_missing_required_columns_are_all_named_with_the_headers_found() -> None:
    with pytest.raises(MissingColumnsError) as caught:
        resolve_headers(["Vendor", "Цена"], STOCK_COLUMNS)
    assert caught.value.missing == ["partnumber", "qty"]
    assert caught.value.found == ["Vendor", "Цена"]
    message = str(caught.value)
    assert "partnumber" in message
    assert "qty" in message
    assert "'Vendor'" in message


def test_stock_aliases_do_not_overlap() -> None:
    keys = [{normalize_header(n) for n in (c.name, *c.aliases)} for c in STOCK_COLUMNS]
    assert len(set.union(*keys)) == sum(len(k) for k in keys)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Part\u00a0Number *", "partnumber"),
        ("«Артикул»", "артикул"),
        ("p/n", "p/n"),
        ("Кол-во:", "кол-во"),
        ("ЁМКОСТЬ", "емкость"),
        ("zero\u200bwidth", "zerowidth"),
        (None, ""),
        (12, "12"),
    ],
)
def test_normalize_header(raw: object, expected: str) -> None:
    assert normalize_header(raw) == expected


# --- xlsx --------------------------------------------------------------------------------------


def test_xlsx_records_with_row_numbers_across_blank_rows(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "stock.xlsx",
        [
            [],
            ["Артикул", "Производитель", "Количество", "Цена"],
            ["A-1", "HPE", 5, 10.5],
            [],
            [None, None, None],
            ["B-2", None, "1 234,50"],
            ["   ", None],
            ["C-3", "Dell", 0, None],
        ],
    )
    records = list(iter_records(path, STOCK_COLUMNS))
    assert [n for n, _ in records] == [3, 6, 8]
    assert records[0][1] == {
        "partnumber": "A-1",
        "vendor": "HPE",
        "description": None,
        "qty": 5,
        "price": 10.5,
        "warehouse": None,
    }
    # a short row reads the missing cells as None
    assert records[1][1]["price"] is None
    assert parse_stock_row(records[1][1]).qty == Decimal("1234.50")


def test_xlsx_rows_include_the_header_and_skip_blank_rows(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "s.xlsx", [["pn", "qty"], [], ["x", 1]])
    assert list(iter_xlsx_rows(path)) == [(1, ("pn", "qty")), (3, ("x", 1))]


def test_xlsx_sheet_by_name(tmp_path: Path) -> None:
    workbook = Workbook(write_only=True)
    workbook.create_sheet("First").append(["other"])
    workbook.create_sheet("Остатки").append(["pn", "qty"])
    path = tmp_path / "two.xlsx"
    workbook.save(path)
    assert list(iter_xlsx_rows(path, "Остатки")) == [(1, ("pn", "qty"))]
    assert list(iter_xlsx_rows(path)) == [(1, ("other",))]
    with pytest.raises(SheetError, match=r"no sheet named 'Nope'; sheets: 'First', 'Остатки'"):
        list(iter_xlsx_rows(path, "Nope"))


def test_xlsx_missing_required_column_names_it(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "s.xlsx", [["Артикул", "Цена"], ["A", 1]])
    with pytest.raises(MissingColumnsError, match="qty") as caught:
        list(iter_records(path, STOCK_COLUMNS))
    assert caught.value.missing == ["qty"]


def test_empty_workbook_has_no_header_row(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "empty.xlsx", [])
    with pytest.raises(SheetError, match=r"empty.xlsx: the sheet is empty \(no header row\)"):
        list(iter_records(path, STOCK_COLUMNS))


def test_workbook_of_blank_rows_has_no_header_row(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "blank.xlsx", [[], [None, "  "], []])
    with pytest.raises(SheetError, match="no header row"):
        list(iter_records(path, STOCK_COLUMNS))


def test_corrupt_zip_is_a_sheet_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.xlsx"
    path.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    # The zip directory is looked for first (see engine.sources.workbook.check_package).
    with pytest.raises(SheetError, match=r"corrupt.xlsx: not a readable .xlsx workbook \(no zip"):
        list(iter_records(path, STOCK_COLUMNS))


def test_truncated_xlsx_is_a_sheet_error(tmp_path: Path) -> None:
    good = write_xlsx(tmp_path / "good.xlsx", [["pn", "qty"], *([f"P{i}", i] for i in range(50))])
    data = good.read_bytes()
    path = tmp_path / "truncated.xlsx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SheetError, match=r"truncated\.xlsx"):
        list(iter_records(path, STOCK_COLUMNS))


def test_xlsx_with_damaged_sheet_xml_is_a_sheet_error(tmp_path: Path) -> None:
    good = write_xlsx(tmp_path / "good.xlsx", [["pn", "qty"], *([f"P{i}", i] for i in range(50))])
    path = tmp_path / "damaged.xlsx"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.startswith("xl/worksheets/"):
                data = data[: len(data) * 2 // 3]
            target.writestr(info, data)
    with pytest.raises(SheetError, match=r"damaged.xlsx: .*ParseError"):
        list(iter_records(path, STOCK_COLUMNS))


SHARED_STRINGS = (
    '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="3"'
    ' uniqueCount="3"><si><t>shared</t></si><si><r><t>rich </t></r><r><t>shared</t></r></si>'
    '<si><t xml:space="preserve">  padded  </t></si></sst>'
)
ODD_ROWS = (
    # plain, empty, padded, attribute-carrying and rich inline strings, shared strings
    '<row r="1"><c r="A1" t="inlineStr"><is><t>plain</t></is></c>'
    '<c r="B1" t="inlineStr"><is><t/></is></c><c r="C1" t="inlineStr"><is></is></c>'
    '<c r="D1" t="inlineStr"><is><t xml:space="preserve"> sp  ace </t></is></c>'
    '<c r="E1" t="inlineStr"><is><r><t>ri</t></r><r><rPr><b/></rPr><t>ch</t></r></is></c>'
    '<c r="F1" t="inlineStr"><is><t>base</t><rPh sb="0" eb="1"><t>ph</t></rPh></is></c>'
    '<c r="G1" t="s"><v>0</v></c><c r="H1" t="s"><v>1</v></c><c r="I1" t="s"><v>2</v></c>'
    '<c r="J1" t="inlineStr"/><c r="K1" s="1" t="inlineStr"><is><t>styled</t></is></c></row>'
    # numbers, booleans, errors, formulas with cached values, dates by style
    '<row r="2"><c r="A2"><v>42</v></c><c r="B2" t="n"><v>1.5E3</v></c><c r="C2" t="b">'
    '<v>1</v></c><c r="D2" t="e"><v>#DIV/0!</v></c><c r="E2" t="str"><f>A1</f><v>plain</v></c>'
    '<c r="F2"><f>1+1</f><v>2</v></c><c r="G2" s="1"><v>45293.5</v></c><c r="H2" s="2">'
    '<v>45293</v></c><c r="I2" t="n"/><c r="J2" t="inlineStr"><is><t>12.5</t></is></c></row>'
    # a gap, cells without coordinates, cells out of order, rows without a number
    '<row r="5"><c t="inlineStr"><is><t>x</t></is></c><c><v>7</v></c>'
    '<c r="E5" t="inlineStr"><is><t>e</t></is></c><c r="C5" t="inlineStr"><is><t>c</t></is></c>'
    "</row>"
    '<row><c t="inlineStr"><is><t>no number</t></is></c></row>'
    # a row number going backwards, then an empty row, then one with an inline string only
    '<row r="3"><c r="A3" t="inlineStr"><is><t>back</t></is></c></row>'
    '<row r="8"/><row r="9" spans="1:2"><c r="B9" t="inlineStr"><is><t>last</t></is></c></row>'
)


def odd_workbook(path: Path) -> Path:
    """A workbook whose one sheet holds every kind of cell `sheet_values` must read alike."""
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append([dt.datetime(2024, 1, 2, 3, 4, 5), dt.date(2024, 1, 2)])  # date styles 1, 2
    plain = path.with_suffix(".plain.xlsx")
    workbook.save(plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            data = source.read(info).decode()
            if info.filename == "xl/worksheets/sheet1.xml":
                data = re.sub(
                    "<sheetData>.*</sheetData>", f"<sheetData>{ODD_ROWS}</sheetData>", data
                )
            elif info.filename == "xl/_rels/workbook.xml.rels":
                data = data.replace(
                    "</Relationships>",
                    '<Relationship Id="rIdStrings" Target="sharedStrings.xml" Type="http://schemas'
                    '.openxmlformats.org/officeDocument/2006/relationships/sharedStrings"/>'
                    "</Relationships>",
                )
            elif info.filename == "[Content_Types].xml":
                data = data.replace(
                    "</Types>",
                    '<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.'
                    'openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>',
                )
            target.writestr(info, data)
        target.writestr("xl/sharedStrings.xml", SHARED_STRINGS)
    return path


@pytest.mark.parametrize("data_only", [True, False])
def test_sheet_values_reads_every_kind_of_cell_as_openpyxl_does(
    tmp_path: Path, data_only: bool
) -> None:
    path = odd_workbook(tmp_path / "odd.xlsx")
    workbook = load_workbook(path, read_only=True, data_only=data_only)
    sheet = workbook.worksheets[0]
    sheet.reset_dimensions()
    expected = [tuple(row) for row in sheet.values]  # openpyxl gives a missing row as []
    assert list(sheet_values(sheet)) == expected
    workbook.close()
    assert expected[0][:11] == (
        *("plain", "", "", " sp  ace ", "rich", "base"),
        *("shared", "rich shared", "  padded  ", None, "styled"),
    )
    assert expected[1][6:8] == (dt.datetime(2024, 1, 2, 12, 0), dt.datetime(2024, 1, 2, 0, 0))
    # rows 3-4 missing, E5 past C5 (the row's last cell) dropped, the backwards row 3 skipped
    assert expected[2:8] == [(), (), ("x", 7, "c"), ("no number",), (), ()]
    assert expected[8] == (None, "last")


def test_sheet_values_match_openpyxl_on_a_written_stock_file(tmp_path: Path) -> None:
    rows: list[list[object]] = [["Артикул", "Кол-во", "Цена"]]
    rows += ([f"PN-{i}", i, f"{i},50"] for i in range(300))
    path = write_xlsx(tmp_path / "stock.xlsx", [*rows, [], [" ", None, "tail"]])
    workbook = load_workbook(path, read_only=True, data_only=True)
    sheet = workbook.worksheets[0]
    sheet.reset_dimensions()
    assert list(sheet_values(sheet)) == [tuple(row) for row in sheet.values]
    workbook.close()


def test_zip_that_is_not_a_workbook_is_a_sheet_error(tmp_path: Path) -> None:
    path = tmp_path / "archive.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(SheetError, match=r"archive.xlsx: not a readable .xlsx workbook"):
        list(iter_xlsx_rows(path))


def test_missing_file_is_a_sheet_error(tmp_path: Path) -> None:
    with pytest.raises(SheetError, match=r"nothing\.xlsx"):
        list(iter_xlsx_rows(tmp_path / "nothing.xlsx"))
    with pytest.raises(SheetError, match=r"nothing\.csv"):
        list(iter_records(tmp_path / "nothing.csv", STOCK_COLUMNS))


def test_batched_records(tmp_path: Path) -> None:
    rows: list[list[object]] = [["pn", "qty"], *([f"P{i}", i] for i in range(7))]
    path = write_xlsx(tmp_path / "s.xlsx", rows)
    batches = list(batched_records(path, STOCK_COLUMNS, 3))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert batches[2][0] == (
        8,
        {
            "partnumber": "P6",
            "vendor": None,
            "description": None,
            "qty": 6,
            "price": None,
            "warehouse": None,
        },
    )


def test_batched_records_closed_early_stops_reading(tmp_path: Path) -> None:
    rows: list[list[object]] = [["pn", "qty"], *([f"P{i}", i] for i in range(10))]
    path = write_xlsx(tmp_path / "s.xlsx", rows)
    batches = batched_records(path, STOCK_COLUMNS, 2)
    assert len(next(batches)) == 2
    batches.close()
    assert next(batches, None) is None


def test_batched() -> None:
    assert list(batched(range(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(batched([], 2)) == []
    with pytest.raises(ValueError, match="at least 1"):
        list(batched([1], 0))


# --- csv ---------------------------------------------------------------------------------------


def test_csv_with_semicolons_and_decimal_commas(tmp_path: Path) -> None:
    path = tmp_path / "stock.csv"
    path.write_text(
        '\ufeffАртикул;Кол-во;Цена;Описание\nA-1;1 234,50;10,5;Server, 2U\n\nB-2;3;"1.234,00";\n',
        encoding="utf-8",
    )
    records = list(iter_records(path, STOCK_COLUMNS))
    assert [n for n, _ in records] == [2, 4]
    first = parse_stock_row(records[0][1])
    assert (first.partnumber, first.qty, first.price) == (
        "A-1",
        Decimal("1234.50"),
        Decimal("10.5"),
    )
    assert first.description == "Server, 2U"
    second = parse_stock_row(records[1][1])
    assert (second.price, second.description) == (Decimal("1234.00"), None)


def test_csv_with_commas_and_a_multiline_field(tmp_path: Path) -> None:
    path = tmp_path / "stock.csv"
    path.write_text(
        'part number,qty,description\nA-1,2,"two\nlines"\nB-2,3,plain\n', encoding="utf-8"
    )
    rows = list(iter_csv_rows(path))
    assert rows == [
        (1, ("part number", "qty", "description")),
        (2, ("A-1", "2", "two\nlines")),
        (3, ("B-2", "3", "plain")),
    ]


def test_csv_empty_fields_read_as_none_and_blank_rows_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('pn,qty,note\nA-1,,x\n,,\n , ,\nB-2,3,""\nC-3,4, \n', encoding="utf-8")
    assert list(iter_csv_rows(path)) == [
        (1, ("pn", "qty", "note")),
        (2, ("A-1", None, "x")),
        (5, ("B-2", "3", None)),
        (6, ("C-3", "4", " ")),
    ]


def test_csv_with_tabs_and_an_explicit_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("pn\tqty\nA;1\t2\n", encoding="utf-8")
    assert list(iter_csv_rows(path))[1] == (2, ("A;1", "2"))
    assert list(iter_csv_rows(path, delimiter=";"))[1] == (2, ("A", "1\t2"))


def test_csv_single_column_falls_back_to_comma(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("pn\nA\nB\n", encoding="utf-8")
    assert list(iter_csv_rows(path)) == [(1, ("pn",)), (2, ("A",)), (3, ("B",))]


def test_csv_in_the_wrong_encoding_is_a_sheet_error(tmp_path: Path) -> None:
    path = tmp_path / "cp1251.csv"
    path.write_bytes("Артикул;Количество\nА-1;2\n".encode("cp1251"))
    with pytest.raises(SheetError, match="not utf-8-sig text"):
        list(iter_records(path, STOCK_COLUMNS))
    records = list(iter_records(path, STOCK_COLUMNS, encoding="cp1251"))
    assert records[0][1]["partnumber"] == "А-1"


def test_empty_csv_has_no_header_row(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(SheetError, match="no header row"):
        list(iter_records(path, STOCK_COLUMNS))


def test_format_is_detected_by_content(tmp_path: Path) -> None:
    xlsx = write_xlsx(tmp_path / "really-an-xlsx.csv", [["pn", "qty"], ["A", 1]])
    assert detect_format(xlsx) == "xlsx"
    assert next(iter_records(xlsx, STOCK_COLUMNS))[1]["qty"] == 1
    legacy = tmp_path / "old.xls"
    legacy.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100)
    with pytest.raises(UnsupportedFormatError, match=r"\.xls"):
        detect_format(legacy)


def test_generic_columns(tmp_path: Path) -> None:
    path = tmp_path / "tools.csv"
    path.write_text("ID,Name\n1,hammer\n", encoding="utf-8")
    columns = [Column("id", required=True), Column("name"), Column("price")]
    assert list(iter_records(path, columns)) == [(2, {"id": "1", "name": "hammer", "price": None})]


# --- uploads -----------------------------------------------------------------------------------


def test_sniff_upload_accepts_an_xlsx(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "s.xlsx", [["pn"]])
    head = path.read_bytes()[:8]
    assert sniff_upload(head, "Stock.XLSX") == "xlsx"
    assert sniff_upload(head, "") == "xlsx"


@pytest.mark.parametrize(
    ("first_bytes", "filename", "reason"),
    [
        (b"MOXCEL\0\0", "stock.mxl", ".mxl"),
        (b"PK\x03\x04", "stock.mxl", ".mxl"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "stock.xls", ".xls"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "stock.xlsx", ".xls"),
        (b"pn;qty\n", "stock.xlsx", "not an .xlsx workbook"),
        (b"", "stock.xlsx", "not an .xlsx workbook"),
        (b"PK\x03\x04", "stock.ods", ".ods files are not supported"),
    ],
)
def test_sniff_upload_refuses_other_formats(first_bytes: bytes, filename: str, reason: str) -> None:
    with pytest.raises(UnsupportedFormatError) as caught:
        sniff_upload(first_bytes, filename)
    message = str(caught.value)
    assert reason in message
    assert message.endswith("accepted formats: .xlsx (Excel 2007+ workbook)")


# --- numbers and stock rows --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        (5, Decimal(5)),
        (10.5, Decimal("10.5")),
        (0.1, Decimal("0.1")),
        (Decimal("3.25"), Decimal("3.25")),
        ("42", Decimal(42)),
        (" -7 ", Decimal(-7)),
        ("1 234,50", Decimal("1234.50")),
        (f"1{NBSP}234{NBSP}567,5", Decimal("1234567.5")),
        ("1\u202f234", Decimal(1234)),
        ("12,5", Decimal("12.5")),
        ("12.5", Decimal("12.5")),
        ("1,234.50", Decimal("1234.50")),
        ("1.234,50", Decimal("1234.50")),
        ("1,234,567", Decimal(1234567)),
        ("1.234.567", Decimal(1234567)),
        ("1'234", Decimal(1234)),
        ("1e3", Decimal("1e3")),
    ],
)
def test_parse_decimal(value: object, expected: Decimal | None) -> None:
    assert parse_decimal(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("abc", "not a number: 'abc'"),
        ("12 шт", "not a number: '12 шт'"),
        ("1,2,3", "not a number"),
        ("1.2.3", "not a number"),
        ("NaN", "not a finite number"),
        ("Infinity", "not a finite number"),
        (float("nan"), "not a finite number"),
        (float("inf"), "not a finite number"),
        (Decimal("NaN"), "not a finite number"),
        (True, "not a number: True"),
        ([1], "not a number: list"),
    ],
)
def test_parse_decimal_refuses(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_decimal(value)


def test_parse_stock_row() -> None:
    row = parse_stock_row(
        {
            "partnumber": "  P-1 ",
            "vendor": None,
            "description": "  ",
            "qty": "3",
            "price": "",
            "warehouse": " Main ",
        }
    )
    assert row == StockRow("P-1", "", None, Decimal(3), None, "Main")


def test_parse_stock_row_numeric_partnumber_from_excel() -> None:
    row = parse_stock_row({"partnumber": 12345.0, "qty": 1})
    assert (row.partnumber, row.vendor, row.price) == ("12345", "", None)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"partnumber": "  ", "qty": 1}, "partnumber is empty"),
        ({"partnumber": None, "qty": 1}, "partnumber is empty"),
        ({"partnumber": "P", "qty": "много"}, "qty: not a number: 'много'"),
        ({"partnumber": "P", "qty": None}, "qty is empty"),
        ({"partnumber": "P", "qty": 1, "price": "дорого"}, "price: not a number: 'дорого'"),
    ],
)
def test_parse_stock_row_refuses(row: dict[str, object], reason: str) -> None:
    with pytest.raises(RowError) as caught:
        parse_stock_row(row)
    assert caught.value.reason == reason
