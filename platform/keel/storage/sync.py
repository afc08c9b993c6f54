"""Schema sync: the change between two versions of an app, planned against the actual database and
applied with Alembic operations.

Nothing is ever dropped. A field removed from the definition is *retired*: its column and data stay
and it is hidden simply by not being in the definition; adding it back with a compatible type brings
its data back. A type change converts every stored value in Python (`FieldType.convert`, then
`check`) and is refused as a whole if any value does not fit; when it goes ahead, the old column is
renamed `{field}__{oldtype}_v{N}` and kept. The plan is computed first — it reads the data it needs
to decide — and `apply` executes it on the caller's transaction, so a failure leaves nothing behind
(storage.db makes SQLite DDL transactional).
"""
from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations, ops

from keel.definitions.model import AppDef, EntityDef, FieldDef
from keel.errors import KeelError
from keel.fieldtypes.base import FieldValueError
from keel.fieldtypes.builtin import LONG_TEXT_MAX, TEXT_MAX, DecimalType, Select, Text
from keel.storage import versions
from keel.storage.system import app_versions
from keel.storage.tables import app_tables, table_name

STEP_KINDS = ("create_table", "add_column", "retire_field", "retire_entity", "restore_field",
              "convert_type", "alter_column", "add_index")
MAX_IDS_SHOWN = 10
IDENTIFIER_MAX = 63


class SyncRefused(KeelError):
    """The new version cannot be applied without losing data; `refusals` says why, one per field."""

    def __init__(self, refusals: list[str]):
        super().__init__("\n".join(refusals))
        self.refusals = list(refusals)


@dataclass
class Step:
    kind: str
    description: str
    table: str = ""
    # What `apply` needs; built by `plan`, never shown.
    element: Any = field(default=None, repr=False)           # Table, Column, Index or a new type
    rename_to: str | None = None                             # convert_type: where the old values stay
    values: list = field(default_factory=list, repr=False)   # convert_type: [(id, new value)]

    def __str__(self) -> str:
        return self.description


@dataclass
class SyncPlan:
    app_id: str
    version: int
    steps: list[Step] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refusals

    def descriptions(self) -> list[str]:
        return [s.description for s in self.steps]


def lock_app(conn: sa.Connection, app_id: str) -> None:
    """Serialise syncs of one app. PostgreSQL: a transaction-scoped advisory lock with a key fixed per
    app (released at commit or rollback). SQLite: BEGIN IMMEDIATE already holds the write lock."""
    if conn.dialect.name == "postgresql":
        key = (0x4B45454C << 32) | zlib.crc32(f"keel.app:{app_id}".encode())  # 'KEEL' namespace
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


# --- planning -----------------------------------------------------------------------------------

def plan(conn: sa.Connection, old: AppDef | None, new: AppDef, version: int | None = None) -> SyncPlan:
    """What applying `new` over `old` (the app's current version, None for a new app) does to the
    database. Table and column existence come from the database itself; types, retirements and
    restores from the definitions. `version` is the number the new version will get (used to name
    kept columns); by default the next free one."""
    if version is None:
        has_versions = sa.inspect(conn).has_table(app_versions.name)
        version = versions.next_version(conn, new.id) if has_versions else 1
    planner = _Planner(conn, old, new, version)
    return planner.run()


class _Planner:
    def __init__(self, conn: sa.Connection, old: AppDef | None, new: AppDef, version: int):
        self.conn, self.old, self.new, self.version = conn, old, new, version
        self.inspector = sa.inspect(conn)
        self.result = SyncPlan(new.id, version)
        self._loaded: list[AppDef] = []   # stored versions, newest first, loaded as far as needed
        self._source: Iterator[AppDef] | None = None
        self.postgres = conn.dialect.name == "postgresql"

    def step(self, kind: str, description: str, **kw: Any) -> None:
        self.result.steps.append(Step(kind, description, **kw))

    def refuse(self, message: str) -> None:
        self.result.refusals.append(message)

    def run(self) -> SyncPlan:
        _md, tables = app_tables(self.new)
        existing = set(self.inspector.get_table_names())
        for eid, entity in self.new.entities.items():
            table = tables[eid]
            old_entity = self.old.entities.get(eid) if self.old else None
            if table.name not in existing:
                self.step("create_table", f"{eid}: create table {table.name} ({len(entity.fields)} fields)",
                          table=table.name, element=table)
                for index in table.indexes:
                    self.step("add_index", f"{eid}: add index {index.name}", table=table.name, element=index)
                continue
            self.sync_entity(entity, old_entity, table)
        if self.old:
            for eid in self.old.entities:
                if eid not in self.new.entities:
                    name = table_name(self.new.id, eid)
                    self.step("retire_entity", f"{eid}: retire entity (table {name} and its data kept)",
                              table=name)
        return self.result

    def sync_entity(self, entity: EntityDef, old_entity: EntityDef | None, table: sa.Table) -> None:
        columns = {c["name"]: c for c in self.inspector.get_columns(table.name)}
        for f in entity.fields:
            where = f"{entity.id}.{f.id}"
            old_f = old_entity.field(f.id) if old_entity else None
            if f.id not in columns:
                self.step("add_column", f"{where}: add column ({f.type})", table=table.name,
                          element=table.c[f.id])
                continue
            restoring = old_f is None
            if restoring:
                old_f = self.last_known(entity.id, f.id)
            if old_f is None:
                self.restore_unknown(where, f, table, columns)
            elif old_f.type != f.type:
                self.convert(where, old_f, f, table, columns, restoring)
            else:
                if old_f != f:
                    self.check_narrowing(where, old_f, f, table)
                if restoring:
                    self.step("restore_field", f"{where}: restore retired field (column and data come back)",
                              table=table.name)
                self.widen(where, f, table, columns[f.id])
        if old_entity:
            for old_f in old_entity.fields:
                if entity.field(old_f.id) is None:
                    self.step("retire_field", f"{entity.id}.{old_f.id}: retire field (column and data kept)",
                              table=table.name)
        present = {ix["name"] for ix in self.inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in present:
                self.step("add_index", f"{entity.id}: add index {index.name}", table=table.name, element=index)

    # The type a retired field last had: the newest stored version that still defines it.
    def last_known(self, entity_id: str, field_id: str) -> FieldDef | None:
        for app in self.history():
            entity = app.entities.get(entity_id)
            f = entity.field(field_id) if entity else None
            if f is not None:
                return f
        return None

    def history(self) -> Iterator[AppDef]:
        if self._source is None:
            self._source = self._stored_versions()
        n = 0
        while True:
            if n < len(self._loaded):
                yield self._loaded[n]
                n += 1
                continue
            app = next(self._source, None)
            if app is None:
                return
            self._loaded.append(app)

    def _stored_versions(self) -> Iterator[AppDef]:
        if not self.inspector.has_table(app_versions.name):
            return
        for _number, bundle in versions.versions_newest_first(self.conn, self.new.id):
            try:
                yield versions.load(bundle, self.new.registries)
            except (KeelError, ValueError):
                continue  # an old bundle the current loader no longer accepts tells us nothing

    # --- type changes ---------------------------------------------------------------------------

    def convert(self, where: str, old_f: FieldDef, f: FieldDef, table: sa.Table, columns: dict,
                restoring: bool) -> None:
        new_type = f.ftype
        if old_f.type not in new_type.converts_from:
            allowed = ", ".join(sorted(new_type.converts_from)) or "no other type"
            self.refuse(f"{where}: cannot change type {old_f.type} → {f.type}: {f.type} cannot take over "
                        f"{old_f.type} values (it converts from: {allowed}).")
            return
        stored_type = old_f.ftype.column_type(old_f) if old_f.ftype is not None else None
        self.convert_values(where, old_f.type, f, table, columns, stored_type, restoring)

    def convert_values(self, where: str, old_name: str, f: FieldDef, table: sa.Table, columns: dict,
                       stored_type: Any, restoring: bool) -> None:
        new_type = f.ftype
        rows, total = self.read(table.name, f.id, stored_type or columns[f.id]["type"])
        converted, failures = [], []
        for rid, value in rows:
            try:
                new_value = new_type.convert(f, value)
                problems = new_type.check(f, new_value)
            except FieldValueError as e:
                problems = e.messages
            if problems:
                failures.append((rid, problems[0].render()))
            else:
                converted.append((rid, new_value))
        if failures:
            self.refuse(f"{where}: cannot change type {old_name} → {f.type}: "
                        f"{_failures(failures, total, 'cannot be converted')}")
            return
        keep = _free_name(f.id, f"__{old_name}_v{self.version}", columns)
        what = "restore retired field and convert" if restoring else "convert"
        self.step("convert_type", f"{where}: {what} {old_name} → {f.type} ({len(converted)} values; "
                  f"old column kept as {keep})", table=table.name, element=table.c[f.id], rename_to=keep,
                  values=converted)

    def restore_unknown(self, where: str, f: FieldDef, table: sa.Table, columns: dict) -> None:
        """A column no stored version explains (e.g. the database outlived its version table). Its
        data comes back if every value passes the new field's checks; a column of another kind of
        SQL type is converted like a type change."""
        column = columns[f.id]
        reflected = column["type"]
        if _family(reflected) != _family(table.c[f.id].type):
            name = type(reflected).__name__.lower()
            self.convert_values(where, name, f, table, columns, reflected, True)
            return
        new_type = f.ftype
        # Numbers are read unrounded (see check_narrowing); other values as the new type reads them.
        stored = sa.Numeric(asdecimal=True) if _family(reflected) == "numeric" else table.c[f.id].type
        rows, total = self.read(table.name, f.id, stored)
        failures = []
        for rid, value in rows:
            try:
                problems = new_type.check(f, new_type.parse(f, value))
            except FieldValueError as e:
                problems = e.messages
            if problems:
                failures.append((rid, problems[0].render()))
        if failures:
            self.refuse(f"{where}: cannot restore the existing column as {f.type}: "
                        f"{_failures(failures, total, 'do not fit')}")
            return
        self.step("restore_field", f"{where}: restore existing column ({len(rows)} values)", table=table.name)
        self.widen(where, f, table, column)

    # --- same type, narrower definition ------------------------------------------------------------

    def check_narrowing(self, where: str, old_f: FieldDef, f: FieldDef, table: sa.Table) -> None:
        """Refuse a definition change that stored data would no longer fit: a select option still in
        use, max_length below stored text, fewer decimal digits than stored numbers have."""
        new_type = f.ftype
        if isinstance(new_type, Select):
            gone = set(old_f.option_ids()) - set(f.option_ids())
            if not gone:
                return
            what = f"cannot remove option{'s' if len(gone) > 1 else ''} {', '.join(sorted(gone))}"
        elif isinstance(new_type, Text):
            if _text_limit(new_type, f) >= _text_limit(new_type, old_f):
                return
            what = f"cannot lower max_length to {f.max_length}"
        elif isinstance(new_type, DecimalType):
            if new_type.digits(f) == new_type.digits(old_f):
                return
            precision, scale = new_type.digits(f)
            what = f"cannot change precision/scale to {precision}/{scale}"
        else:
            return
        # Read with the old type: on SQLite the new Numeric's result processor would round the values
        # to the new scale and hide exactly the digits that do not fit.
        rows, total = self.read(table.name, f.id, old_f.ftype.column_type(old_f))
        failures = []
        for rid, value in rows:
            try:
                problems = _storage_problems(new_type, f, value)
            except FieldValueError as e:
                problems = [m.render() for m in e.messages]
            if problems:
                failures.append((rid, problems[0]))
        if failures:
            self.refuse(f"{where}: {what}: {_failures(failures, total, 'do not fit')}")

    def widen(self, where: str, f: FieldDef, table: sa.Table, column: dict) -> None:
        """PostgreSQL enforces VARCHAR length and NUMERIC digits, so a longer text or a select with a
        longer option needs a wider column. SQLite enforces neither. Columns are never narrowed: the
        definition's limits are checked on every write anyway."""
        if not self.postgres:
            return
        want, have = table.c[f.id].type, column["type"]
        if isinstance(want, sa.String) and not isinstance(want, sa.Text) and isinstance(have, sa.String):
            if have.length is not None and want.length is not None and want.length > have.length:
                self.step("alter_column", f"{where}: widen column to {want.length} characters",
                          table=table.name, element=(f.id, want, have))
        elif (isinstance(want, sa.Numeric) and isinstance(have, sa.Numeric)
              and (have.precision, have.scale) != (want.precision, want.scale)):
            self.step("alter_column", f"{where}: change column to NUMERIC({want.precision}, {want.scale})",
                      table=table.name, element=(f.id, want, have))

    def read(self, name: str, column: str, type_: Any) -> tuple[list[tuple[int, Any]], int]:
        """Every stored value of a column (soft-deleted records too: their data is kept as well), and
        the table's row count."""
        stub = sa.Table(name, sa.MetaData(), sa.Column("id", sa.BigInteger), sa.Column(column, type_))
        rows = self.conn.execute(sa.select(stub.c.id, stub.c[column]).where(stub.c[column].is_not(None))
                                 .order_by(stub.c.id)).all()
        total = self.conn.execute(sa.select(sa.func.count()).select_from(stub)).scalar()
        return [tuple(r) for r in rows], total


def _text_limit(field_type: Any, f: FieldDef) -> int:
    return f.max_length or (TEXT_MAX if field_type.name == "text" else LONG_TEXT_MAX)


def _storage_problems(field_type: Any, f: FieldDef, value: Any) -> list[str]:
    if isinstance(field_type, Select):
        return [m.render() for m in field_type.check(f, field_type.parse(f, value))]
    if isinstance(field_type, Text):
        limit = _text_limit(field_type, f)
        return [f"{len(value)} characters, more than {limit}."] if len(value) > limit else []
    if isinstance(field_type, DecimalType):
        field_type.parse(f, value)
    return []


def _failures(failures: list[tuple[int, str]], total: int, verb: str) -> str:
    ids = ", ".join(str(rid) for rid, _ in failures[:MAX_IDS_SHOWN])
    if len(failures) > MAX_IDS_SHOWN:
        ids += ", …"
    messages = list(dict.fromkeys(msg for _, msg in failures))
    shown = " ".join(m if m.endswith(".") else m + "." for m in messages[:3])
    noun = "record" if total == 1 else "records"
    return f"{len(failures)} of {total} {noun} {verb} (ids {ids}): {shown}"


def _free_name(field_id: str, suffix: str, columns: dict) -> str:
    """A column name for kept data that is not taken yet and fits PostgreSQL's 63-byte identifiers
    (longer names are silently truncated there, and two truncated names could collide)."""
    n = 1
    while True:
        tail = suffix if n == 1 else f"{suffix}_{n}"
        candidate = field_id[:IDENTIFIER_MAX - len(tail)] + tail
        if candidate not in columns:
            return candidate
        n += 1


def _family(t: Any) -> str:
    """The kind of SQL type, to tell whether a column can hold a field's values as they are."""
    for kind, cls in (("boolean", sa.Boolean), ("datetime", sa.DateTime), ("date", sa.Date),
                      ("json", sa.JSON), ("integer", sa.Integer), ("numeric", sa.Numeric),
                      ("string", sa.String)):
        if isinstance(t, cls):
            return kind
    return type(t).__name__.lower()


# --- applying -----------------------------------------------------------------------------------

def apply(conn: sa.Connection, sync_plan: SyncPlan) -> None:
    """Execute a plan on the caller's transaction, or raise SyncRefused (before touching anything) if
    it has refusals. Callers plan and apply under one lock (see `keel.apply.apply_app`)."""
    if sync_plan.refusals:
        raise SyncRefused(sync_plan.refusals)
    lock_app(conn, sync_plan.app_id)
    op = Operations(MigrationContext.configure(conn))
    for s in sync_plan.steps:
        if s.kind == "create_table":
            op.invoke(ops.CreateTableOp.from_table(s.element))
        elif s.kind == "add_column":
            op.add_column(s.table, s.element)
        elif s.kind == "add_index":
            op.invoke(ops.CreateIndexOp.from_index(s.element))
        elif s.kind == "alter_column":
            name, want, have = s.element
            op.alter_column(s.table, name, type_=want, existing_type=have, existing_nullable=True)
        elif s.kind == "convert_type":
            _convert(conn, op, s)
        # retire_field, retire_entity and restore_field change nothing in the database: a field is
        # hidden or shown by the definition alone.


def _convert(conn: sa.Connection, op: Operations, s: Step) -> None:
    column: sa.Column = s.element
    op.alter_column(s.table, column.name, new_column_name=s.rename_to)
    op.add_column(s.table, column)
    if s.values:
        stub = sa.Table(s.table, sa.MetaData(), sa.Column("id", sa.BigInteger), sa.Column(column.name, column.type))
        conn.execute(stub.update().where(stub.c.id == sa.bindparam("_id"))
                     .values({column.name: sa.bindparam("_value")}),
                     [{"_id": rid, "_value": value} for rid, value in s.values])
