"""Importing records from a spreadsheet (.xlsx or .csv) into any entity — a general feature of the engine
(`keel import`, `POST /api/v1/apps/{app}/{entity}/import`), used by the Goal Agility admins for goals.

- Columns name fields by id or by their zh/en label; an unknown column is refused, naming the fields.
- A link cell is the linked record's id or its title (the entity's `title_field`, among records the importer
  may read; rows created earlier in the same file count, so a tree imports parents first); a user cell is a
  username or an id; Excel dates and numbers arrive as values.
- Every row goes through the one write path (`keel.storage.records.create`): permissions, validation, the
  record events (an app's own rules, e.g. a goal tree refusing a loop), versions and audit — attributed to the
  importing user, `origin={"channel": "import"}`.
- All or nothing: any refused row means nothing is written; the answer lists every row's errors. A preview
  runs the same import and rolls it back.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from keel.actor import Actor
from keel.connectors.files import read_table_file
from keel.errors import FieldErrors, KeelError, PermissionDenied
from keel.i18n import translate
from keel.storage import records
from keel.storage.query import read_condition
from keel.storage.system import users

MAX_ROWS = 10_000
SHOWN = 50


@dataclass
class ImportResult:
    entity: str
    preview: bool
    rows: int = 0
    created: list[dict[str, Any]] = field(default_factory=list)   # {"row", "id", "title"}
    errors: list[dict[str, Any]] = field(default_factory=list)    # {"row", "errors": {field: [messages]}}

    @property
    def written(self) -> bool:
        return not self.preview and not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {"entity": self.entity, "preview": self.preview, "rows": self.rows, "written": self.written,
                "created": len(self.created) if self.written else 0, "valid_rows": len(self.created),
                "items": self.created[:SHOWN], "errors": self.errors}


def _column_map(entity, columns: list[str]) -> dict[str, str]:
    by_name: dict[str, str] = {}
    for f in entity.fields:
        for name in (f.id, f.label.zh, f.label.en):
            if name:
                by_name.setdefault(name.strip().lower(), f.id)
    out, unknown = {}, []
    for c in columns:
        fid = by_name.get(c.strip().lower())
        if fid is None:
            unknown.append(c)
        else:
            out[c] = fid
    if unknown:
        errors = FieldErrors()
        errors.add("file", "Unknown column(s) %(columns)s; columns name fields by id or label: %(fields)s.",
                   columns=", ".join(unknown), fields=", ".join(f.id for f in entity.fields))
        raise errors
    return out


def _cell(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, float):
        return str(value)
    return value.strip() if isinstance(value, str) else value


def _resolve(conn: sa.Connection, built, entity, actor: Actor, values: dict[str, Any], problems: FieldErrors) -> None:
    for fid, value in list(values.items()):
        f = entity.field(fid)
        if value is None or f is None or isinstance(value, int):
            continue
        text = str(value)
        if text.isdigit():
            values[fid] = int(text)
        elif f.type == "user":
            uid = conn.execute(sa.select(users.c.id).where(users.c.username == text)).scalar()
            if uid is None:
                problems.add(fid, "No user %(user)s.", user=text[:100])
            else:
                values[fid] = uid
        elif f.type == "link":
            target = built.entity(f.entity)
            if not target.title_field:
                continue
            t = built.table(f.entity)
            found = conn.execute(sa.select(t.c.id).where(
                t.c[target.title_field] == text, read_condition(t, target, actor)).limit(2)).scalars().all()
            if len(found) == 1:
                values[fid] = found[0]
            else:
                problems.add(fid, "No single %(entity)s titled “%(title)s” (%(n)s found).",
                             entity=f.entity, title=text[:100], n=len(found))


def import_records(engine: sa.Engine, built, entity_id: str, name: str, data: bytes, actor: Actor, *,
                   preview: bool = False, sheet: str | None = None) -> ImportResult:
    """Import the rows of a spreadsheet as new records of `entity_id` (see the module doc)."""
    if not actor.is_admin:
        raise PermissionDenied(translate("Only administrators import records."))
    entity = built.entity(entity_id)
    rows = read_table_file(name, data, sheet=sheet)
    mapping = _column_map(entity, rows.columns)
    result = ImportResult(entity_id, preview)
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            for number, row in enumerate(rows, start=2):
                result.rows += 1
                if result.rows > MAX_ROWS:
                    errors = FieldErrors()
                    errors.add("file", "At most %(n)s rows per import.", n=MAX_ROWS)
                    raise errors
                values = {mapping[c]: _cell(v) for c, v in row.items() if c in mapping}
                problems = FieldErrors()
                _resolve(conn, built, entity, actor, values, problems)
                if problems:
                    result.errors.append({"row": number, "errors": problems.rendered()})
                    continue
                savepoint = conn.begin_nested()
                try:
                    made = records.create(conn, built, entity_id, values, actor, origin={"channel": "import"})
                except FieldErrors as e:
                    savepoint.rollback()
                    result.errors.append({"row": number, "errors": e.rendered()})
                    continue
                except KeelError as e:
                    savepoint.rollback()
                    result.errors.append({"row": number, "errors": {"_record": [str(e)]}})
                    continue
                savepoint.commit()
                title = made.get(entity.title_field) if entity.title_field else None
                result.created.append({"row": number, "id": made["id"], "title": title})
            if result.written:
                trans.commit()
            else:
                trans.rollback()
        except BaseException:
            if trans.is_active:
                trans.rollback()
            raise
    return result
