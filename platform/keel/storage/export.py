"""Exporting records as CSV, through the same permission-checked read path as a list: the same row
scope, the same readable fields, the same filter and sort checks.

Spreadsheets run a cell that starts with `=`, `+`, `-`, `@`, tab or CR as a formula (CSV injection), so
such cells — headers included — get a leading `'`. A plain number in a numeric field is left alone:
it cannot be a formula, and `'-5` would no longer be a number.
"""
from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from keel.actor import Actor
from keel.errors import FieldErrors
from keel.storage.built import BuiltApp
from keel.storage.permissions import readable_fields
from keel.storage.query import NUMERIC_TYPES, select_records, to_json

MAX_EXPORT_ROWS = 100_000
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
SYSTEM_COLUMNS = ("id", "row_version", "created_at", "created_by", "updated_at", "updated_by")
_PLAIN_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def safe_cell(text: str, numeric: bool = False) -> str:
    if numeric and _PLAIN_NUMBER.fullmatch(text):
        return text
    return "'" + text if text.startswith(FORMULA_START) else text


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def export_rows(conn: sa.Connection, built: BuiltApp, entity_id: str, actor: Actor, filters=(), sort=(),
                limit: int = MAX_EXPORT_ROWS) -> Iterator[list[str]]:
    """The header row, then one row of text cells per record. More than `limit` matching records is
    an error raised before the first row, rather than an export that silently stops short."""
    entity = built.entity(entity_id)
    stmt, order = select_records(built, entity_id, actor, filters, sort)
    total = conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery())).scalar_one()
    if total > limit:
        errors = FieldErrors()
        errors.add("_record", "The export would have %(total)s rows; at most %(n)s. Narrow it with filters.",
                   total=total, n=limit)
        raise errors
    fields = readable_fields(entity, actor)
    numeric = [False] * len(SYSTEM_COLUMNS) + [f.type in NUMERIC_TYPES for f in fields]
    keys = [*SYSTEM_COLUMNS, *(f.id for f in fields)]
    yield [safe_cell(k) for k in keys]
    result = conn.execution_options(yield_per=1000).execute(stmt.order_by(*order).limit(limit))
    for row in result:
        item = to_json(entity, row, fields)
        yield [safe_cell(_cell(item.get(k)), num) for k, num in zip(keys, numeric, strict=True)]


def export_csv(conn: sa.Connection, built: BuiltApp, entity_id: str, actor: Actor, filters=(), sort=(),
               limit: int = MAX_EXPORT_ROWS) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    for row in export_rows(conn, built, entity_id, actor, filters, sort, limit):
        writer.writerow(row)
    return out.getvalue()
