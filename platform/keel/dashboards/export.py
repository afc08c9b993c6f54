"""Exporting a list or table widget as CSV or xlsx: the rows the viewer sees on the dashboard (same filters,
same sort, same permissions, every page), cells as shown. A cell starting with `=`, `+`, `-`, `@`, tab or CR
gets a leading `'` so no spreadsheet runs it as a formula (`keel.storage.export.safe_cell`); numbers of
numeric columns stay numbers."""
from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from keel.dashboards.context import MAX_ROWS, WidgetContext
from keel.errors import FieldErrors
from keel.storage.export import safe_cell
from keel.storage.query import NUMERIC_TYPES

FORMATS = {"csv": "text/csv; charset=utf-8",
           "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


def export_table(ctx: WidgetContext, widget_type: Any, widget: Mapping[str, Any]) -> tuple[list[str], list[list]]:
    """(headers, rows) of a widget that can export: a table (every matching row), a list widget with
    `export_rows` (progress, tree), or a plugin widget whose `data` returns {"columns": [{"id", "label"}],
    "rows": [[...]]}."""
    if hasattr(widget_type, "columns") and widget_type.name == "table":
        data = widget_type.data(ctx, widget, everything=True)
        if data.get("capped"):  # never a file that silently stops short
            errors = FieldErrors()
            errors.add("_record", "The export would have %(total)s rows; at most %(n)s. Narrow it with filters.",
                       total=f"{MAX_ROWS:,}+", n=f"{MAX_ROWS:,}")
            raise errors
        numeric = [c["type"] in NUMERIC_TYPES for c in data["columns"]]
        rows = [[_raw_or_text(v, text, num) for v, text, num in zip(r["values"], r["cells"], numeric, strict=True)]
                for r in data["rows"]]
        return ["ID", *(c["label"] for c in data["columns"])], [[r["id"], *row] for r, row in
                                                              zip(data["rows"], rows, strict=True)]
    if hasattr(widget_type, "export_rows"):
        return widget_type.export_rows(ctx, widget)
    data = widget_type.data(ctx, widget) if hasattr(widget_type, "data") else None
    if not isinstance(data, Mapping) or "columns" not in data or "rows" not in data:
        errors = FieldErrors()
        errors.add("widget", "This widget has no rows to export.")
        raise errors
    return [c.get("label") or c.get("id") for c in data["columns"]], [list(r) for r in data["rows"]]


def _raw_or_text(value: Any, text: str, numeric: bool) -> Any:
    """A number stays a number in a numeric column (sums work in the spreadsheet); everything else is the
    text the page shows (option labels, names)."""
    if numeric and isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        return value
    return text


def _escaped(cells: list[Any]) -> list[Any]:
    return [c if isinstance(c, (int, float, Decimal)) and not isinstance(c, bool) else safe_cell("" if c is None
            else str(c)) for c in cells]


def rows_escaped(headers: list[str], rows: list[list]) -> Iterator[list[Any]]:
    yield _escaped(headers)
    for r in rows:
        yield _escaped(r)


def to_csv(headers: list[str], rows: list[list]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out)
    for r in rows_escaped(headers, rows):
        w.writerow(r)
    return ("\ufeff" + out.getvalue()).encode("utf-8")  # the BOM makes Excel read UTF-8 (Chinese) right


def to_xlsx(headers: list[str], rows: list[list], title: str = "export") -> bytes:
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet(title=_sheet_title(title))
    for r in rows_escaped(headers, rows):
        # openpyxl stores a str starting with "=" as a formula; escaped cells never start so
        ws.append([float(c) if isinstance(c, Decimal) else c for c in r])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _sheet_title(title: str) -> str:
    bad = set('[]:*?/\\')
    return "".join(c for c in title if c not in bad)[:31] or "export"
