"""CSV/Excel imports, zip archives and the import folder: encodings, headers, zip slip, bombs, symlinks."""
from __future__ import annotations

import datetime as dt
import io
import os
import stat
import zipfile

import openpyxl
import pytest

from helpers_timing import cpu_seconds
from keel.connectors.files import (
    ArchiveRefused,
    ImportPathRefused,
    TableFileError,
    csv_safe_cell,
    decode_text,
    extract_zip,
    read_import_file,
    read_table_file,
    safe_import_path,
)
from keel.connectors.mapping import map_items

CSV_TEXT = "工号,姓名,部门\r\nE001,张三,销售一部\r\nE002,李四,\r\n,,\r\nE003,\"王五, 小\",财务部\r\n"
COLUMNS = ["工号", "姓名", "部门"]
EXPECTED_ROWS = [{"工号": "E001", "姓名": "张三", "部门": "销售一部"},
                 {"工号": "E002", "姓名": "李四", "部门": None},
                 {"工号": "E003", "姓名": "王五, 小", "部门": "财务部"}]


@pytest.mark.parametrize("encoded, encoding", [
    (CSV_TEXT.encode("utf-8"), "utf-8"),
    (CSV_TEXT.encode("utf-8-sig"), "utf-8-sig"),
    (CSV_TEXT.encode("gbk"), "gb18030"),
    (CSV_TEXT.encode("utf-16"), "utf-16"),
])
def test_csv_encodings_with_chinese_headers(encoded, encoding):
    rows = read_table_file("员工.csv", encoded, expected_columns=COLUMNS)
    assert rows.columns == COLUMNS and rows.encoding == encoding
    assert list(rows) == EXPECTED_ROWS


def test_declared_encoding_is_used_strictly():
    data = CSV_TEXT.encode("gbk")
    assert list(read_table_file("a.csv", data, encoding="gbk")) == EXPECTED_ROWS
    with pytest.raises(TableFileError, match="not UTF-8 text: undecodable byte 0x"):
        read_table_file("a.csv", data, encoding="utf-8")
    with pytest.raises(TableFileError, match="unknown encoding 'klingon'"):
        read_table_file("a.csv", data, encoding="klingon")
    for codec in ("rot13", "base64", "undefined"):  # known to Python, but not text: no LookupError escapes
        with pytest.raises(TableFileError, match=f"'{codec}' is not a character encoding"):
            read_table_file("a.csv", data, encoding=codec)


def test_undecodable_bytes_are_a_clear_error():
    data = "工号,姓名\nE001,ok\n".encode() + b"E002,\xff\xfe\x80\n"
    with pytest.raises(TableFileError, match=r"not UTF-8 nor GBK/GB18030 text: undecodable byte 0x\w\w at byte "
                                              r"\d+ \(line 3\); save it as UTF-8 CSV"):
        read_table_file("bad.csv", data)


def test_wrong_header_lists_missing_and_unknown_columns():
    data = "工号,名字,部门\nE001,张三,销售\n".encode()
    with pytest.raises(TableFileError) as err:
        read_table_file("员工.csv", data, expected_columns=COLUMNS)
    assert str(err.value) == ("员工.csv, row 1: wrong header: missing columns: 姓名; unknown columns: 名字 "
                              "(expected: 工号, 姓名, 部门)")
    extra = "工号,姓名,部门,备注\nE001,张三,销售,x\n".encode()
    assert next(read_table_file("a.csv", extra, expected_columns=COLUMNS))["备注"] == "x"
    with pytest.raises(TableFileError, match="unknown columns: 备注"):
        read_table_file("a.csv", extra, expected_columns=COLUMNS, allow_unknown_columns=False)


@pytest.mark.parametrize("data, message", [
    (b"", "the file is empty"),
    ("工号,,部门\n".encode(), "column 2 has no name"),
    ("工号,工号\n".encode(), "duplicate columns: 工号"),
])
def test_bad_headers(data, message):
    with pytest.raises(TableFileError, match=message):
        read_table_file("a.csv", data)


def test_row_longer_than_header_names_the_row():
    rows = read_table_file("a.csv", b"a,b\n1,2\n3,4,5\n")
    assert next(rows) == {"a": "1", "b": "2"}
    with pytest.raises(TableFileError, match="a.csv, row 3: the row has 3 cells but the header only 2"):
        next(rows)


def test_unsupported_type_refused():
    with pytest.raises(TableFileError, match="unsupported file type '.xls'"):
        read_table_file("old.xls", b"\xd0\xcf\x11\xe0")


def test_xlsx_round_trip_and_mapping():
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["工号", "姓名", "入职日期", "目标"])
    ws.append(["E001", "张三", dt.datetime(2024, 3, 1), 120000])
    ws.append([None, None, None, None])
    ws.append(["E002", "=1+1", None, 99.5])  # a formula: values only, so its cached value (none yet)
    buf = io.BytesIO()
    wb.save(buf)
    rows = read_table_file("目标.xlsx", buf.getvalue(), expected_columns=["工号", "姓名"])
    assert rows.columns == ["工号", "姓名", "入职日期", "目标"]
    records = list(rows)
    assert records == [{"工号": "E001", "姓名": "张三", "入职日期": dt.datetime(2024, 3, 1), "目标": 120000},
                       {"工号": "E002", "姓名": None, "入职日期": None, "目标": 99.5}]
    good, problems = map_items({"code": "工号", "hired": "入职日期", "target": "/目标"}, records)
    assert good == [{"code": "E001", "hired": dt.datetime(2024, 3, 1), "target": 120000}]
    assert [str(p) for p in problems] == ["item 1: field 'hired' (path '入职日期'): value is empty (null)"]
    assert all("=" not in str(v) for r in records for v in r.values())  # no formula text comes in


def test_xlsx_named_sheet_and_damaged_file():
    wb = openpyxl.Workbook()
    wb.active.title = "说明"
    wb.create_sheet("数据").append(["a"])
    buf = io.BytesIO()
    wb.save(buf)
    assert read_table_file("x.xlsx", buf.getvalue(), sheet="数据").columns == ["a"]
    with pytest.raises(TableFileError, match="no sheet '缺失'; sheets: 说明, 数据"):
        read_table_file("x.xlsx", buf.getvalue(), sheet="缺失")
    with pytest.raises(TableFileError, match="not a readable .xlsx file"):
        read_table_file("x.xlsx", b"PK\x03\x04 not really a zip")


@pytest.mark.parametrize("value, safe", [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"), ("+1", "'+1"), ("-2", "'-2"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("plain", "plain"), ("a=b", "a=b"), (-2, -2), (None, None),
])
def test_csv_safe_cell(value, safe):
    assert csv_safe_cell(value) == safe


# -- archives ----------------------------------------------------------------------------------------------

def make_zip(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def test_extract_zip_in_memory():
    data = make_zip({"a.csv": b"x,y\n", "dir/b.txt": b"hello", "dir/": b"", "./c.txt": b"c"})
    assert extract_zip(data) == {"a.csv": b"x,y\n", "dir/b.txt": b"hello", "c.txt": b"c"}


@pytest.mark.parametrize("name, reason", [
    ("../x", "leaves the target folder"), ("a/../../x", "leaves the target folder"),
    ("..\\x", "leaves the target folder"), ("/etc/cron.d/x", "absolute path"), ("C:/x", "absolute path"),
])
def test_zip_slip_members_refuse_the_archive(tmp_path, name, reason):
    before = set(tmp_path.parent.iterdir())
    with pytest.raises(ArchiveRefused, match=reason):
        extract_zip(make_zip({"ok.txt": b"ok", name: b"evil"}))
    assert set(tmp_path.parent.iterdir()) == before  # nothing written anywhere


def test_zip_symlink_member_refused():
    with pytest.raises(ArchiveRefused, match="symbolic link"):
        extract_zip(make_zip({"ok.txt": b"ok"}, symlink="link"))


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """200 MB of zeros in a zip of under 1 MB, written streaming (no 200 MB buffer)."""
    buf = io.BytesIO()
    with (zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf,
          zf.open("zeros.bin", "w", force_zip64=True) as member):
        chunk = bytes(1 << 20)
        for _ in range(200):
            member.write(chunk)
    return buf.getvalue()


def test_zip_bomb_refused_by_ratio_and_size_before_decompressing(bomb):
    assert len(bomb) < 2_000_000
    with cpu_seconds() as spent:  # refused from the headers: inflating 200 MB would take seconds of CPU
        with pytest.raises(ArchiveRefused, match="compression ratio .* exceeds 100:1"):
            extract_zip(bomb)
        with pytest.raises(ArchiveRefused, match="uncompressed size exceeds the limit of 10485760 bytes"):
            extract_zip(bomb, max_total_bytes=10 * 1024 * 1024, max_ratio=10_000)
    assert spent.seconds < 0.5


def test_xlsx_bomb_refused(bomb):
    with pytest.raises(TableFileError, match="refused: .*compression ratio"):
        read_table_file("bomb.xlsx", bomb)


def test_zip_member_count_and_bad_zip():
    with pytest.raises(ArchiveRefused, match="3 members; the limit is 2"):
        extract_zip(make_zip({"a": b"", "b": b"", "c": b""}), max_members=2)
    with pytest.raises(ArchiveRefused, match="not a readable zip file"):
        extract_zip(b"not a zip")


# -- the import folder -------------------------------------------------------------------------------------

@pytest.fixture
def import_root(tmp_path):
    root = tmp_path / "imports"
    (root / "hr").mkdir(parents=True)
    (root / "hr" / "people.csv").write_bytes(b"a\n1\n")
    (tmp_path / "secret.txt").write_text("outside")
    return root


def test_safe_import_path_accepts_files_inside(import_root):
    assert safe_import_path(import_root, "hr/people.csv") == (import_root / "hr" / "people.csv").resolve()
    assert read_import_file(import_root, "hr/people.csv") == b"a\n1\n"


@pytest.mark.parametrize("name, message", [
    ("../secret.txt", "leaves the import folder"), ("hr/../../secret.txt", "leaves the import folder"),
    ("/etc/passwd", "is absolute"), ("C:/Windows/win.ini", "is absolute"), ("..\\secret.txt", "not a plain"),
    ("", "not a plain"), ("hr/missing.csv", "no file"), ("hr", "no file"),
])
def test_safe_import_path_refuses(import_root, name, message):
    with pytest.raises(ImportPathRefused, match=message):
        safe_import_path(import_root, name)


def test_symlink_escaping_the_import_folder_is_refused(import_root, tmp_path):
    os.symlink(tmp_path / "secret.txt", import_root / "link.csv")
    os.symlink(tmp_path, import_root / "up")
    os.symlink(import_root / "hr" / "people.csv", import_root / "inside.csv")
    for name in ("link.csv", "up/secret.txt"):
        with pytest.raises(ImportPathRefused, match="outside the import folder"):
            safe_import_path(import_root, name)
    assert read_import_file(import_root, "inside.csv") == b"a\n1\n"


def test_import_file_size_cap(import_root):
    with pytest.raises(ImportPathRefused, match="exceeds the limit of 2 bytes"):
        read_import_file(import_root, "hr/people.csv", max_bytes=2)


def test_decode_text_reports_encoding():
    assert decode_text("a.csv", "中文".encode("gb18030")) == ("中文", "gb18030")
