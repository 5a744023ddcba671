"""Workbooks that unpack too far are refused before they are read, and reading one holds one row.

The bombs are real archives (`tests.zips`): a ~2 MB workbook whose sheet unpacks to 2 GB, one
whose workbook.xml unpacks to 1 GB, zip directories that lie about sizes, a workbook part
disguised as a worksheet, sheets full of elements a naive reader keeps.
"""

from __future__ import annotations

import io
import itertools
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from openpyxl import load_workbook

from engine.sources import workbook as unpack
from engine.sources.exceptions import SheetError, UnpackLimitError
from engine.sources.sheets import STOCK_COLUMNS, iter_records, iter_xlsx_rows, sheet_values
from engine.sources.workbook import (
    MB,
    UnpackLimits,
    check_file,
    is_worksheet,
    read_shared_strings,
    stream_elements,
)
from tests.unit.test_sheets import odd_workbook, write_xlsx
from tests.zips import (
    MAIN,
    deflated,
    lying,
    repeated,
    rows_xml,
    sheet_member,
    skeleton,
    text_member,
    write_zip,
)

LOOSE = UnpackLimits(unpacked_bytes=4096 * MB, part_bytes=4096 * MB, ratio=1e9, members=10**6)
"""Limits that let everything through to the reader (to test the reader's own bounds)."""


# ---- the zip directory ------------------------------------------------------------------------


def test_the_sheet_bomb_is_refused_from_its_directory(sheet_bomb_xlsx: Path) -> None:
    assert sheet_bomb_xlsx.stat().st_size < 3 * MB
    with pytest.raises(UnpackLimitError) as caught:
        check_file(sheet_bomb_xlsx, UnpackLimits(), "stock.xlsx")
    error = caught.value
    assert error.too_large
    assert str(error).startswith("stock.xlsx: refused before reading: ")
    assert error.problems == [
        "xl/worksheets/sheet1.xml unpacks to 2,048.0 MB from 2.0 MB, 1,029:1,"
        " above SYNCD_XLSX_MAX_RATIO=100",
        "it unpacks to 2,048.0 MB in all, above SYNCD_XLSX_MAX_UNPACKED_MB=1,024",
    ]
    # Each limit binds on its own.
    with pytest.raises(UnpackLimitError) as caught:
        check_file(sheet_bomb_xlsx, UnpackLimits(unpacked_bytes=4096 * MB), "stock.xlsx")
    assert [p.split(",")[0] for p in caught.value.problems] == [
        "xl/worksheets/sheet1.xml unpacks to 2"
    ]
    assert not caught.value.too_large  # the ratio alone: a 422, not a 413
    with pytest.raises(UnpackLimitError) as caught:
        check_file(sheet_bomb_xlsx, UnpackLimits(ratio=2000), "stock.xlsx")
    assert len(caught.value.problems) == 1 and "in all" in caught.value.problems[0]


def test_the_workbook_xml_bomb_is_refused_from_its_directory(workbook_bomb_xlsx: Path) -> None:
    with pytest.raises(UnpackLimitError) as caught:
        check_file(workbook_bomb_xlsx, UnpackLimits(), "book.xlsx")
    assert caught.value.too_large
    assert caught.value.problems[0] == (
        "xl/workbook.xml unpacks to 1,024.0 MB, above SYNCD_XLSX_MAX_PART_MB=64"
        " (parts other than worksheets are loaded whole)"
    )
    assert "xl/workbook.xml unpacks to 1,024.0 MB from 1.0 MB" in caught.value.problems[1]


def test_a_big_part_that_compresses_badly_is_refused_by_its_size(tmp_path: Path) -> None:
    # Not a bomb: no ratio to catch it, only the part limit. (Shared strings made of digits.)
    strings = "".join(f"<si><t>{i * 7919 % 1000003:07d}</t></si>" for i in range(150_000))
    sst = text_member("xl/sharedStrings.xml", f"<sst>{strings}</sst>")
    path = write_zip(tmp_path / "strings.xlsx", skeleton(extra=[sst]))
    assert check_file(path, UnpackLimits(), "s.xlsx").members == 6
    with pytest.raises(UnpackLimitError, match=r"xl/sharedStrings.xml unpacks to 3.3 MB, above"):
        check_file(path, UnpackLimits(part_bytes=2 * MB), "s.xlsx")


def test_worksheets_are_only_held_to_the_total_and_the_ratio(tmp_path: Path) -> None:
    digits = "".join(f"{i * 7919 % 1000003:07d}" for i in range(400_000)).encode()
    path = write_zip(tmp_path / "wide.xlsx", skeleton(sheet=sheet_member(digits)))
    assert check_file(path, UnpackLimits(part_bytes=1 * MB), "w.xlsx").unpacked_bytes > 2 * MB
    assert is_worksheet("xl/worksheets/sheet1.xml")
    assert not is_worksheet("xl/worksheets/_rels/sheet1.xml.rels")
    assert not is_worksheet("xl/sharedStrings.xml")


def test_too_many_members_are_refused_before_the_directory_is_parsed(tmp_path: Path) -> None:
    extra = [text_member(f"xl/media/m{i}.bin", b"x") for i in range(40)]
    path = write_zip(tmp_path / "many.xlsx", skeleton(extra=extra))
    with pytest.raises(UnpackLimitError, match=r"45 zip members, above SYNCD_XLSX_MAX_MEMBERS=20"):
        check_file(path, UnpackLimits(members=20), "m.xlsx")
    assert check_file(path, UnpackLimits(), "m.xlsx").members == 45


def test_a_file_that_is_not_a_zip_or_lost_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "x.xlsx"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(SheetError, match=r"x.xlsx: not a readable .xlsx workbook \(no zip"):
        check_file(path, UnpackLimits(), "x.xlsx")
    good = write_zip(tmp_path / "good.xlsx", skeleton()).read_bytes()
    at = good.rfind(b"PK\x05\x06")
    path.write_bytes(good[: at - 10] + good[at:])  # the directory cut short
    with pytest.raises(SheetError, match=r"damaged zip directory"):
        check_file(path, UnpackLimits(), "x.xlsx")


def test_zipfile_holds_a_member_to_its_declared_size(tmp_path: Path) -> None:
    # The directory says 1 KB; the data inflates to 64 MB. Reading stops at the declared size
    # and fails the CRC: the declared sizes that check_package judged are the ones that bind.
    data = deflated("xl/worksheets/sheet1.xml", repeated(b"<row/>" * 1000, 64 * MB))
    path = write_zip(tmp_path / "liar.xlsx", skeleton(sheet=lying(data, 1024)))
    with (
        zipfile.ZipFile(path) as archive,
        archive.open("xl/worksheets/sheet1.xml") as member,
        pytest.raises(zipfile.BadZipFile, match="Bad CRC-32"),
    ):
        while member.read(100):  # the CRC is checked once the declared end is reached
            assert member.tell() <= 1024
    assert check_file(path, UnpackLimits(), "liar.xlsx").unpacked_bytes < 8 * 1024
    with pytest.raises(SheetError, match=r"liar\.xlsx"):
        list(iter_xlsx_rows(path))


# ---- loading ----------------------------------------------------------------------------------


def test_a_workbook_part_disguised_as_a_worksheet_is_refused_when_loaded(tmp_path: Path) -> None:
    # The content types name xl/worksheets/book.xml as the workbook: by name it is a worksheet
    # (held to the total only), but openpyxl loads it whole.
    padding = "".join(f"<!-- {i * 7919 % 1000003:07d} -->" for i in range(200_000))
    book = text_member(
        "xl/worksheets/book.xml",
        f'<workbook xmlns="{MAIN}" xmlns:r="http://schemas.openxmlformats.org/'
        'officeDocument/2006/relationships"><sheets><sheet name="Stock" sheetId="1"'
        f' r:id="rId1"/></sheets>{padding}</workbook>',
    )
    members = skeleton(workbook=book, workbook_part="xl/worksheets/book.xml")
    path = write_zip(tmp_path / "disguised.xlsx", members)
    limits = UnpackLimits(part_bytes=2 * MB)
    check_file(path, limits, "d.xlsx")  # by name, nothing to refuse
    with pytest.raises(UnpackLimitError, match=r"xl/worksheets/book.xml, which is loaded whole"):
        list(iter_xlsx_rows(path, limits=limits))
    assert [row for _, row in iter_xlsx_rows(path)] == [("partnumber", "qty"), ("A-1", "3")]


def test_a_part_of_too_many_tags_is_refused_when_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unpack, "MAX_WHOLE_XML_TAGS", 10_000)
    styles = text_member("xl/styles.xml", "<styleSheet>" + "<x/>" * 20_000 + "</styleSheet>")
    path = write_zip(tmp_path / "styles.xlsx", skeleton(extra=[styles]))
    with pytest.raises(UnpackLimitError, match=r"xl/styles.xml holds more than 10,000 XML tags"):
        list(iter_xlsx_rows(path))


def test_sheets_are_not_parsed_when_the_workbook_is_opened(tmp_path: Path) -> None:
    # A second sheet that is not even XML: openpyxl parses every sheet when it opens the
    # workbook (looking for <dimension>) and fails; the first sheet reads fine here.
    members = skeleton()
    members[3] = text_member(
        "xl/_rels/workbook.xml.rels",
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Target="/xl/worksheets/sheet1.xml" Type="{unpack_rel()}"/>'
        f'<Relationship Id="rId2" Target="/xl/worksheets/sheet2.xml" Type="{unpack_rel()}"/>'
        "</Relationships>",
    )
    members[2] = text_member(
        "xl/workbook.xml",
        f'<workbook xmlns="{MAIN}" xmlns:r="http://schemas.openxmlformats.org/'
        'officeDocument/2006/relationships"><sheets><sheet name="Stock" sheetId="1"'
        ' r:id="rId1"/><sheet name="Junk" sheetId="2" r:id="rId2"/></sheets></workbook>',
    )
    members.append(text_member("xl/worksheets/sheet2.xml", "<worksheet><not xml"))
    path = write_zip(tmp_path / "two.xlsx", members)
    with pytest.raises(SyntaxError):
        load_workbook(path, read_only=True)
    assert [row for _, row in iter_xlsx_rows(path)] == [("partnumber", "qty"), ("A-1", "3")]
    with pytest.raises(SheetError, match=r"damaged sheet after row 0 \(ParseError"):
        list(iter_xlsx_rows(path, sheet="Junk"))


def unpack_rel() -> str:
    return "http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet"


def test_the_loader_reads_what_openpyxl_reads(tmp_path: Path) -> None:
    # Every kind of cell, shared strings (plain, rich, padded) included.
    path = odd_workbook(tmp_path / "odd.xlsx")
    workbook = load_workbook(path, read_only=True, data_only=True)
    sheet = workbook.worksheets[0]
    sheet.reset_dimensions()
    expected = [(n, tuple(v)) for n, v in enumerate(sheet_values(sheet), 1) if any(v)]
    workbook.close()
    assert list(iter_xlsx_rows(path)) == expected
    rows: list[list[object]] = [["Артикул", "Кол-во"], *([f"PN-{i}", i] for i in range(300))]
    written = write_xlsx(tmp_path / "stock.xlsx", rows)
    assert [list(v) for _, v in iter_xlsx_rows(written)] == rows


def test_shared_strings_are_read_as_openpyxl_reads_them() -> None:
    sst = (
        '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        "<si><t>plain</t></si><junk><si><t>not a string of the table</t></si></junk>"
        '<si><r><t>ri</t></r><r><rPr><b/></rPr><t>ch</t></r></si><si><t xml:space="preserve">'
        " pad </t></si><si><t>a_x005F_b</t></si><si/></sst>"
    )
    from openpyxl.reader.strings import read_string_table

    expected = read_string_table(io.BytesIO(sst.encode()))
    assert read_shared_strings(io.BytesIO(sst.encode())) == expected
    # openpyxl takes an <si> at any depth, and so does the stream once inside the table
    assert expected[:3] == ["plain", "not a string of the table", "rich"]


# ---- streaming --------------------------------------------------------------------------------

SHEET_PATH = (f"{{{MAIN}}}sheetData", f"{{{MAIN}}}row")


def sheet_xml(body: bytes) -> io.BytesIO:
    return io.BytesIO(
        f'<worksheet xmlns="{MAIN}"><sheetData>'.encode()
        + body
        + b"</sheetData><mergeCells/></worksheet>"
    )


def test_stream_elements_yields_the_rows() -> None:
    body = rows_xml([["a", "b"], ["c"]]) + b"<junk><row/></junk>" + rows_xml([["d"]])
    rows = []
    for element in stream_elements(sheet_xml(body), SHEET_PATH, "s"):
        rows.append([c[0][0].text for c in element])
    # A row nested in something else is taken too, as openpyxl takes it.
    assert rows == [["a", "b"], ["c"], [], ["d"]]
    # Before <sheetData>, only the path counts: a <row> elsewhere is not taken.
    xml = sheet_xml(body).getvalue().replace(b"<sheetData>", b"<cols><row/></cols><sheetData>")
    assert len(list(stream_elements(io.BytesIO(xml), SHEET_PATH, "s"))) == 4


def test_the_fast_path_is_taken_on_this_python() -> None:
    from xml.etree.ElementTree import XMLPullParser

    assert unpack.report_ends_only(XMLPullParser(events=("start", "end")))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (rows_xml([["x" * (3 * MB)]]), "more than 1.0 MB of XML without a complete row element"),
        (b"<row>" + b"<c/>" * 300_000 + b"</row>", "without a complete row element"),
        (b" " * (3 * MB) + rows_xml([["a"]]), "without a complete row element"),
        (b"<row>" + b"<c/>" * 20_000 + b"</row>", "has 20,000 cells, more than Excel's 16,384"),
    ],
)
def test_a_row_too_big_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, body: bytes, message: str
) -> None:
    monkeypatch.setattr(unpack, "MAX_ELEMENT_BYTES", 1 * MB)
    path = write_zip(tmp_path / "big.xlsx", skeleton(sheet=sheet_member(body)))
    with pytest.raises(SheetError, match=message):
        list(iter_xlsx_rows(path, limits=LOOSE))


def test_a_long_element_before_the_sheet_data_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unpack, "MAX_ELEMENT_BYTES", 1 * MB)
    xml = (
        f'<worksheet xmlns="{MAIN}"><cols>'.encode()
        + b'<col min="1" max="1"/>' * 100_000
        + b"</cols><sheetData/></worksheet>"
    )
    with pytest.raises(SheetError, match=r"more than 1\.0 MB of XML in one element"):
        list(stream_elements(io.BytesIO(xml), SHEET_PATH, "s"))


def test_entity_expansion_is_stopped_by_expat(tmp_path: Path) -> None:
    entities = (
        '<!ENTITY a0 "'
        + "x" * 1000
        + '">'
        + "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 9))
    )
    sheet = text_member(
        "xl/worksheets/sheet1.xml",
        f'<!DOCTYPE worksheet [{entities}]><worksheet xmlns="{MAIN}">'
        '<sheetData><row><c t="inlineStr"><is><t>&a8;</t></is></c></row></sheetData></worksheet>',
    )
    path = write_zip(tmp_path / "laughs.xlsx", skeleton(sheet=sheet))
    with pytest.raises(SheetError, match="amplification"):
        list(iter_records(path, STOCK_COLUMNS, limits=LOOSE))


MEMORY_SCRIPT = """
import re, sys
from pathlib import Path
path = Path(sys.argv[2])
if sys.argv[1] == "openpyxl":
    from openpyxl import load_workbook
    rows = sum(1 for _ in load_workbook(path, read_only=True).worksheets[0].values)
else:
    from engine.sources.sheets import iter_xlsx_rows
    from engine.sources.workbook import UnpackLimits
    rows = sum(1 for _ in iter_xlsx_rows(path, limits=UnpackLimits(ratio=1e9)))
# VmHWM: the peak of this process's memory (ru_maxrss would count the parent's before exec)
status = Path("/proc/self/status").read_text()
print(rows, int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) // 1024)
"""


def peak_rss_mb(reader: str, path: Path) -> tuple[int, int]:
    """Rows read and the peak RSS (MB) of a fresh process reading `path` with `reader`."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MEMORY_SCRIPT), reader, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows, rss = done.stdout.split()
    return int(rows), int(rss)


def test_reading_a_sheet_holds_one_row_whatever_the_sheet_holds(tmp_path: Path) -> None:
    # A million empty rows and a million unknown elements (13 MB of XML, ratio far above the
    # limit, so LOOSE limits): openpyxl keeps an element for each; this reader keeps none.
    head = rows_xml([["partnumber", "qty"], ["A-1", "3"]])
    body = itertools.chain([head], repeated(b"<row/><junk/>" * 1000, 13 * 1_000_000))
    path = write_zip(tmp_path / "junk.xlsx", skeleton(sheet=sheet_member(body)))
    rows, ours = peak_rss_mb("ours", path)
    assert rows == 2
    rows, theirs = peak_rss_mb("openpyxl", path)
    assert rows == 1_000_002
    assert theirs > ours + 120, (ours, theirs)
    assert ours < 60, ours
