"""File imports: CSV and Excel tables, zip archives, and the import folder.

Users never name a server path (docs/security.md, "path traversal / archives"): callers pass the bytes of
an upload, or a name inside the configured import folder, checked by `safe_import_path`. Archives are
read in memory with caps on members, total size and compression ratio, and members that would land
outside the target (`../x`, absolute names, symlinks) are refused rather than skipped.
"""
from __future__ import annotations

import codecs
import csv
import io
import os
import re
import stat
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from keel.errors import KeelError

MAX_XLSX_UNCOMPRESSED = 200 * 1024 * 1024
MAX_XLSX_RATIO = 100  # 100,000 near-identical rows measured 14:1; deflated zeros reach ~1000:1
_RATIO_MIN_BYTES = 1024 * 1024  # below this a member cannot be a bomb, whatever its ratio
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class TableFileError(KeelError):
    """A table file that cannot be read; `row` is the 1-based row (the header is row 1)."""

    def __init__(self, file: str, message: str, row: int | None = None):
        super().__init__(message)
        self.file, self.message, self.row = file, message, row

    def __str__(self) -> str:
        return f"{self.file}, row {self.row}: {self.message}" if self.row else f"{self.file}: {self.message}"


class ArchiveRefused(KeelError):
    pass


class ImportPathRefused(KeelError):
    pass


# -- tables ----------------------------------------------------------------------------------------------

class TableRows(Iterator[dict[str, Any]]):
    """The data rows of a table file as {column: value}; empty cells are None. The header has
    already been read and checked when this object exists."""

    def __init__(self, columns: list[str], rows: Iterator[dict[str, Any]], encoding: str | None):
        self.columns, self.encoding, self._rows = columns, encoding, rows

    def __next__(self) -> dict[str, Any]:
        return next(self._rows)


def read_table_file(name: str, data: bytes, *, expected_columns: Iterable[str] | None = None,
                    encoding: str | None = None, sheet: str | None = None,
                    allow_unknown_columns: bool = True) -> TableRows:
    """Read a .csv/.tsv (UTF-8 with or without BOM, UTF-16 with BOM, GBK/GB18030) or .xlsx file given as
    bytes. With `expected_columns`, a header missing any of them is refused, listing what is missing
    and what is unknown."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        text, used = decode_text(name, data, encoding)
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        cells: Iterator[list[Any]] = _csv_rows(name, reader)
    elif suffix == ".xlsx":
        cells, used = _xlsx_rows(name, data, sheet), None
    else:
        raise TableFileError(name, f"unsupported file type {suffix or '(none)'!r}; use .csv or .xlsx")
    header = next(cells, None)
    if header is None:
        raise TableFileError(name, "the file is empty")
    columns = _check_header(name, header, expected_columns, allow_unknown_columns)
    return TableRows(columns, _records(name, columns, cells), used)


def encoding_problem(encoding: str) -> str | None:
    """Why a declared `encoding` cannot decode a table file (None: it can). Python's codec registry also
    holds bytes-to-bytes codecs (base64, rot13, zlib) and `undefined`: they look up fine and fail on the
    first byte, so one byte is decoded to tell them from character encodings."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        return f"unknown encoding {encoding!r}"
    try:
        b"a".decode(encoding)
    except UnicodeDecodeError:
        pass  # a character encoding that needs more than one byte (UTF-16)
    except (LookupError, UnicodeError):
        return f"{encoding!r} is not a character encoding"
    return None


def decode_text(name: str, data: bytes, encoding: str | None = None) -> tuple[str, str]:
    """(text, encoding used). Declared encodings are used strictly; otherwise a BOM decides, then UTF-8,
    then GB18030 (a superset of GBK, what Excel on a Chinese Windows saves as 'CSV')."""
    if encoding:
        problem = encoding_problem(encoding)
        if problem:
            raise TableFileError(name, problem)
        candidates = [encoding]
    elif data.startswith(codecs.BOM_UTF8):
        candidates = ["utf-8-sig"]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ["utf-16"]
    else:
        candidates = ["utf-8", "gb18030"]
    first: UnicodeDecodeError | None = None
    for candidate in candidates:
        try:
            return data.decode(candidate).removeprefix("\ufeff"), candidate
        except UnicodeDecodeError as exc:
            first = first or exc
    assert first is not None
    line = data[:first.start].count(b"\n") + 1
    tried = " nor ".join("GBK/GB18030" if c == "gb18030" else c.upper() for c in candidates)
    raise TableFileError(name, f"the file is not {tried} text: undecodable byte 0x{data[first.start]:02x} "
                               f"at byte {first.start} (line {line}); save it as UTF-8 CSV")


def _csv_rows(name: str, reader: Any) -> Iterator[list[Any]]:
    row_number = 0
    try:
        for row in reader:
            row_number += 1
            yield [cell if cell != "" else None for cell in row]
    except csv.Error as exc:
        raise TableFileError(name, f"not a readable CSV file: {exc}", row_number + 1) from None


def _xlsx_rows(name: str, data: bytes, sheet: str | None) -> Iterator[list[Any]]:
    import openpyxl  # only needed for Excel imports
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            _check_members(zf.infolist(), 10_000, MAX_XLSX_UNCOMPRESSED, MAX_XLSX_RATIO)
        workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except ArchiveRefused as exc:
        raise TableFileError(name, f"refused: {exc}") from None
    except (zipfile.BadZipFile, InvalidFileException, KeyError, ValueError, OSError, SyntaxError):
        raise TableFileError(name, "not a readable .xlsx file") from None
    if sheet is not None and sheet not in workbook.sheetnames:
        workbook.close()
        raise TableFileError(name, f"no sheet {sheet!r}; sheets: {', '.join(workbook.sheetnames)}")
    worksheet = workbook[sheet] if sheet is not None else workbook.worksheets[0]

    def rows() -> Iterator[list[Any]]:
        try:
            for row in worksheet.iter_rows(values_only=True):
                yield [None if cell == "" else cell for cell in row]
        except (SyntaxError, ValueError, KeyError) as exc:  # ElementTree's ParseError is a SyntaxError
            raise TableFileError(name, f"damaged sheet: {type(exc).__name__}") from None
        finally:
            workbook.close()

    return rows()


def _check_header(name: str, header: list[Any], expected: Iterable[str] | None, allow_unknown: bool) -> list[str]:
    while header and header[-1] is None:  # Excel's used range often runs past the last named column
        header = header[:-1]
    columns = [str(c).strip().removeprefix("\ufeff").strip() if c is not None else "" for c in header]
    problems = [f"column {i + 1} has no name" for i, c in enumerate(columns) if not c]
    duplicates = sorted({c for c in columns if c and columns.count(c) > 1})
    if duplicates:
        problems.append(f"duplicate columns: {', '.join(duplicates)}")
    if expected is not None:
        wanted = list(expected)
        missing = [c for c in wanted if c not in columns]
        unknown = [c for c in columns if c and c not in wanted]
        if missing or (unknown and not allow_unknown):
            text = "wrong header"
            if missing:
                text += f": missing columns: {', '.join(missing)}"
            if unknown:
                text += f"; unknown columns: {', '.join(unknown)}"
            problems.append(f"{text} (expected: {', '.join(wanted)})")
    if problems:
        raise TableFileError(name, "; ".join(problems), row=1)
    return columns


def _records(name: str, columns: list[str], cells: Iterator[list[Any]]) -> Iterator[dict[str, Any]]:
    width = len(columns)
    for number, row in enumerate(cells, start=2):
        if all(c is None for c in row):
            continue
        if any(c is not None for c in row[width:]):
            raise TableFileError(name, f"the row has {len(row)} cells but the header only {width}", number)
        yield {col: (row[i] if i < len(row) else None) for i, col in enumerate(columns)}


def csv_safe_cell(value: Any) -> Any:
    """A cell value safe to put in an exported CSV/XLSX: text a spreadsheet would run as a formula
    (docs/security.md, "CSV/formula injection") gets a leading apostrophe."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


# -- archives --------------------------------------------------------------------------------------------

def _member_name(info: zipfile.ZipInfo) -> str | None:
    """The member's safe relative name, None for a directory; raises ArchiveRefused otherwise."""
    raw = info.filename
    if "\x00" in raw:
        raise ArchiveRefused(f"member {raw!r}: NUL in the name")
    name = raw.replace("\\", "/")  # zips made on Windows may use backslashes
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ArchiveRefused(f"member {raw!r}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveRefused(f"member {raw!r}: path leaves the target folder")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveRefused(f"member {raw!r}: symbolic link")
    if info.flag_bits & 0x1:
        raise ArchiveRefused(f"member {raw!r}: encrypted")
    if info.is_dir() or not parts:
        return None
    return "/".join(parts)


def _check_members(infos: list[zipfile.ZipInfo], max_members: int, max_total_bytes: int,
                   max_ratio: float) -> None:
    """Refuse on the declared sizes before decompressing anything."""
    if len(infos) > max_members:
        raise ArchiveRefused(f"{len(infos)} members; the limit is {max_members}")
    total = 0
    for info in infos:
        if info.file_size > _RATIO_MIN_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
            raise ArchiveRefused(f"member {info.filename!r}: compression ratio "
                                 f"{info.file_size // max(info.compress_size, 1)}:1 exceeds {max_ratio:g}:1")
        total += info.file_size
        if total > max_total_bytes:
            raise ArchiveRefused(f"uncompressed size exceeds the limit of {max_total_bytes} bytes")


def extract_zip(data: bytes, max_members: int = 1000, max_total_bytes: int = 100 * 1024 * 1024,
                max_ratio: float = 100) -> dict[str, bytes]:
    """{relative name: content} of every file in a zip, in memory; directories are implied. Refuses the
    whole archive on any unsafe member, so nothing of a hostile archive is used."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ArchiveRefused("not a readable zip file") from None
    with zf:
        infos = zf.infolist()
        _check_members(infos, max_members, max_total_bytes, max_ratio)
        names = {info.filename: _member_name(info) for info in infos}
        out: dict[str, bytes] = {}
        total = 0
        for info in infos:
            name = names[info.filename]
            if name is None:
                continue
            if name in out:
                raise ArchiveRefused(f"member {name!r} appears twice")
            chunks = []
            try:
                with zf.open(info) as member:
                    # Count what really comes out: declared sizes can lie.
                    while chunk := member.read(1 << 20):
                        total += len(chunk)
                        if total > max_total_bytes:
                            raise ArchiveRefused(f"uncompressed size exceeds the limit of {max_total_bytes} bytes")
                        chunks.append(chunk)
            except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError, OSError) as exc:
                raise ArchiveRefused(f"member {name!r} is damaged or unsupported: {exc}") from None
            out[name] = b"".join(chunks)
    return out


# -- the import folder -----------------------------------------------------------------------------------

def safe_import_path(root: str | os.PathLike[str], name: str) -> Path:
    """The file `name` inside the import folder `root`. Refuses absolute names, '..', and anything whose
    real path (after symlinks) is outside root."""
    if not name or "\x00" in name or "\\" in name:
        raise ImportPathRefused(f"import name {name!r} is not a plain relative name")
    if PurePosixPath(name).is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise ImportPathRefused(f"import name {name!r} is absolute; name a file inside the import folder")
    if ".." in PurePosixPath(name).parts:
        raise ImportPathRefused(f"import name {name!r} leaves the import folder")
    base = os.path.realpath(root)
    target = os.path.realpath(os.path.join(base, name))
    if os.path.commonpath([base, target]) != base:
        raise ImportPathRefused(f"import name {name!r} resolves outside the import folder (symbolic link)")
    if not os.path.isfile(target):
        raise ImportPathRefused(f"no file {name!r} in the import folder")
    return Path(target)


def read_import_file(root: str | os.PathLike[str], name: str, max_bytes: int = 100 * 1024 * 1024) -> bytes:
    """The bytes of a checked import-folder file, refusing files over `max_bytes`."""
    path = safe_import_path(root, name)
    if path.stat().st_size > max_bytes:
        raise ImportPathRefused(f"import file {name!r} exceeds the limit of {max_bytes} bytes")
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew after the check
        raise ImportPathRefused(f"import file {name!r} exceeds the limit of {max_bytes} bytes")
    return data
