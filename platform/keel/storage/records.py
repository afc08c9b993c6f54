"""The one write path for entity records: create, update, delete (soft) and restore.

Each function runs in the caller's transaction (`conn` from `engine.begin()`) and writes three things
on that one connection: the row, a `keel_record_versions` row and an audit event — so a version and an
event exist exactly when the change does. Permissions are checked before anything is written; all
validation problems are collected into one `FieldErrors`; a write based on a stale `row_version` is a
`Conflict`. Nothing a client sends is silently dropped: a key it may not send is an error.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from keel.actor import Actor
from keel.definitions.model import EntityDef, FieldDef, thaw
from keel.errors import Conflict, FieldErrors, NotFound, PermissionDenied
from keel.fieldtypes.base import FieldValueError
from keel.json_values import integer_problem
from keel.storage import highlights
from keel.storage.audit import record_event, utcnow
from keel.storage.built import BuiltApp
from keel.storage.events import RecordEvent
from keel.storage.permissions import can_create, readable_fields, row_filter, writable_fields
from keel.storage.query import fetch_row, read_condition, record_id_of, to_json
from keel.storage.system import record_versions, users
from keel.storage.tables import SYSTEM_COLUMNS

# ---------------------------------------------------------------- validation

def _mapping(values: Any) -> Mapping[str, Any]:
    """What listeners see of the sent values (a non-object body is reported by the parser below)."""
    return values if isinstance(values, Mapping) else {}


def _is_empty(f: FieldDef, value: Any) -> bool:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return True
    # An empty list is "no options" / "no rows"; for free JSON it is a value like any other.
    return f.type != "json" and isinstance(value, (list, tuple, dict)) and not value


def _as_json(f: FieldDef, value: Any) -> Any:
    return None if value is None else f.ftype.dump(f, value)


def _parse_values(entity: EntityDef, actor: Actor, values: Mapping[str, Any],
                  errors: FieldErrors) -> dict[str, Any]:
    """Parse and check every sent value; an error for each key the actor may not send."""
    if not isinstance(values, Mapping):
        errors.add("_record", "Send an object of field values.")
        return {}
    writable = {f.id for f in writable_fields(entity, actor)}
    readable = {f.id for f in readable_fields(entity, actor)}
    parsed: dict[str, Any] = {}
    for key, raw in values.items():
        key = str(key)
        f = entity.field(key)
        if key in SYSTEM_COLUMNS:
            errors.add(key, "This field is set by the system.")
        elif f is None or key not in readable:
            # A field the actor cannot read is reported like an unknown one: no hint that it exists.
            errors.add(key[:100], "Unknown field.")
        elif f.computed or (f.read_only and not actor.is_system):
            errors.add(key, "This field is read-only.")
        elif key not in writable:
            errors.add(key, "You may not change this field.")
        elif _is_empty(f, raw):
            parsed[key] = None
        else:
            ftype = f.ftype
            try:
                value = ftype.parse(f, raw)
            except FieldValueError as e:
                errors.errors.setdefault(key, []).extend(e.messages)
                continue
            problems = ftype.check(f, value)
            if problems:
                errors.errors.setdefault(key, []).extend(problems)
            else:
                parsed[key] = value
    return parsed


def _defaults(entity: EntityDef, sent: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for f in entity.fields:
        if f.id in sent or f.computed or f.default is None:
            continue
        try:
            out[f.id] = f.ftype.parse(f, thaw(f.default))
        except FieldValueError:
            out[f.id] = None  # definitions.checks refuses such defaults; never block a write on one
    return out


def _lock_value(conn: sa.Connection, table: sa.Table, f: FieldDef, value: Any) -> None:
    """On PostgreSQL, serialise writers of the same unique value until commit, so two concurrent
    inserts cannot both pass the check below. (SQLite's BEGIN IMMEDIATE already serialises writers.)"""
    if conn.dialect.name != "postgresql":
        return
    digest = hashlib.sha256(json.dumps([table.name, f.id, _as_json(f, value)], default=str).encode()).digest()
    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(int.from_bytes(digest[:8], "big", signed=True))))


def _check_unique(conn: sa.Connection, table: sa.Table, entity: EntityDef, values: Mapping[str, Any],
                  record_id: int | None, errors: FieldErrors) -> None:
    for fid, value in values.items():
        f = entity.field(fid)
        if f is None or not f.unique or value is None or isinstance(table.c[fid].type, sa.JSON):
            continue
        _lock_value(conn, table, f, value)
        stmt = sa.select(table.c.id).where(table.c[fid] == value, table.c.deleted_at.is_(None)).limit(1)
        if record_id is not None:
            stmt = stmt.where(table.c.id != record_id)
        if conn.execute(stmt).first() is not None:
            errors.add(fid, "Must be unique.")


def _check_links(conn: sa.Connection, built: BuiltApp, entity: EntityDef, actor: Actor,
                 values: Mapping[str, Any], errors: FieldErrors) -> None:
    """A link must point at a live record the writer may read (through the read path: linking to a
    record would otherwise confirm that it exists); a user field at an active user."""
    for fid, value in values.items():
        f = entity.field(fid)
        if value is None or f is None:
            continue
        if f.type == "link":
            target, ttable = built.entity(f.entity), built.table(f.entity)
            found = conn.execute(sa.select(ttable.c.id).where(
                ttable.c.id == value, read_condition(ttable, target, actor))).first()
            if found is None:
                errors.add(fid, "The linked record does not exist.")
        elif f.type == "user":
            found = conn.execute(sa.select(users.c.id).where(users.c.id == value, users.c.active)).first()
            if found is None:
                errors.add(fid, "No such active user.")


def _compute(built: BuiltApp, entity: EntityDef, full: dict[str, Any]) -> dict[str, Any]:
    """Evaluate computed fields, in definition order, over the record's full values after the change
    (each sees those computed before it). A computed value that cannot be evaluated for this record —
    a division by an empty or zero target, an input not filled in yet — is stored as None: it must
    not block saving what the user actually typed, and None says "no value" honestly instead of
    keeping a stale one. A result is rounded to the field's scale; one its column cannot hold at all
    (an integer beyond 64 bits, a decimal with too many digits) is a 422 naming the field — never a
    driver error, never silently dropped."""
    from keel.expressions import ExpressionError, compile_expression

    out, errors = {}, FieldErrors()
    for f in entity.fields:
        if not f.computed:
            continue
        try:
            expr = built.product(("computed", entity.id, f.id), lambda f=f: compile_expression(f.computed))
            value = expr.evaluate(full)
        except ExpressionError:
            value = None
        if value is not None:
            try:
                value = f.ftype.from_computed(f, value)
            except FieldValueError as e:
                errors.add(f.id, "The computed value cannot be stored: %(reason)s",
                           reason=e.messages[0])  # rendered with the message, in its language
                value = None
        full[f.id] = out[f.id] = value
    if errors:
        raise errors
    return out


def _check_rules(built: BuiltApp, entity: EntityDef, record: Mapping[str, Any], errors: FieldErrors,
                 changed: set[str] | None = None) -> None:
    """The entity's rules over the record as it would be saved (computed fields included). A rule is
    skipped when a value it names already has an error, when it cannot be evaluated (a value it needs
    is empty) and, on an update, when it names none of the changed fields: a platform write such as a
    workflow's status change is not refused for dates typed before the rule existed."""
    from keel.errors import LabelMessage
    from keel.expressions import ExpressionError, compile_expression

    if not entity.rules:
        return
    full = dict(record)
    computed = _compute(built, entity, full)
    if changed is not None:
        changed = changed | {k for k, v in computed.items() if v != record.get(k)}
    for rule in entity.rules:
        expr = built.product(("rule", entity.id, rule.id), lambda r=rule: compile_expression(r.check))
        if expr.names & set(errors.errors) or (changed is not None and not expr.names & changed):
            continue
        try:
            ok = expr.evaluate(full)
        except ExpressionError:
            continue
        if ok is not None and not ok:
            errors.errors.setdefault(rule.field or "_record", []).append(
                LabelMessage.of_label(rule.message.zh, rule.message.en))


# ---------------------------------------------------------------- shared steps of every write

def _require(conn: sa.Connection, table: sa.Table, entity: EntityDef, actor: Actor, action: str,
             record_id: int, include_deleted: bool = False) -> None:
    cond = row_filter(table, entity, actor, action, include_deleted)
    if cond is None or conn.execute(sa.select(table.c.id).where(table.c.id == record_id, cond)).first() is None:
        raise PermissionDenied(f"you may not {action} this {entity.id} record")


def _locked_row(conn: sa.Connection, built: BuiltApp, entity_id: str, record_id: Any, actor: Actor,
                action: str) -> sa.Row:
    """The live row the actor may read, locked for the write, after checking that they may `action`
    it: NotFound for a row they cannot read (as `fetch_row`), PermissionDenied for one they can read
    but not change. The action's row scope is evaluated in the same statement that reads and locks the
    row, so the write path asks the database once instead of twice."""
    entity, table = built.entity(entity_id), built.table(entity_id)
    cond = row_filter(table, entity, actor, action)
    if cond is None:
        fetch_row(conn, built, entity_id, record_id, actor)  # NotFound first, as for any unreadable row
        raise PermissionDenied(f"you may not {action} this {entity.id} record")
    rid = record_id_of(record_id)
    row = conn.execute(sa.select(table, cond.label("_keel_may")).where(
        table.c.id == rid, read_condition(table, entity, actor)).with_for_update()).first()
    if row is None:
        raise NotFound(f"no {entity_id} record {rid}")
    if not row._keel_may:  # NULL (an owner column that is empty) is no permission either
        raise PermissionDenied(f"you may not {action} this {entity.id} record")
    return row


def _conflict(conn: sa.Connection, table: sa.Table, record_id: int, expected: int | None) -> Conflict:
    current = conn.execute(sa.select(table.c.row_version).where(table.c.id == record_id)).scalar()
    err = Conflict(f"The record was changed by someone else: you edited version {expected}, "
                   f"the current version is {current}. Reload it and apply your change again.")
    err.current_version = current  # for the API's 409 body
    return err


def _check_expected(expected_version: Any) -> int:
    if (isinstance(expected_version, bool) or not isinstance(expected_version, int)
            or integer_problem(expected_version)):  # a form's text can hold any number
        errors = FieldErrors()
        errors.add("row_version", "Give the version of the record you edited.")
        raise errors
    return expected_version


# One statement object for every version row (its compiled form is cached once; see storage.audit).
_INSERT_VERSION = record_versions.insert()


def _store(conn: sa.Connection, built: BuiltApp, entity_id: str, record_id: int, version: int, action: str,
           changes: dict[str, list], actor: Actor, at) -> None:
    conn.execute(_INSERT_VERSION, {"app": built.id, "entity": entity_id, "record_id": record_id, "version": version,
                                   "action": action, "changes": changes, "user_id": actor.user_id, "via": actor.via,
                                   "at": at})
    # The event names the version, not the values: the audit trail is shown to everyone who may
    # read the record, and values of fields they may not read must not reach them this way.
    record_event(conn, actor, f"record.{action}", app=built.id, entity=entity_id, record_id=record_id,
                 detail={"version": version}, at=at)


def _result(conn: sa.Connection, built: BuiltApp, entity_id: str, record_id: int, actor: Actor) -> dict:
    """The record as the actor may see it; only its system columns when its row scope does not
    cover it (e.g. a create-only role)."""
    entity, table = built.entity(entity_id), built.table(entity_id)
    row = conn.execute(sa.select(table).where(table.c.id == record_id)).one()
    visible = conn.execute(sa.select(table.c.id).where(
        table.c.id == record_id, read_condition(table, entity, actor, include_deleted=True))).first()
    return to_json(entity, row, readable_fields(entity, actor) if visible else ())


def _write(conn: sa.Connection, stmt) -> sa.CursorResult:
    try:
        return conn.execute(stmt)
    except sa.exc.IntegrityError:
        # A database constraint caught what the checks above did not (e.g. a unique index that also
        # covers deleted rows). The caller's transaction rolls back whole.
        errors = FieldErrors()
        errors.add("_record", "The record conflicts with another record.")
        raise errors from None


# ---------------------------------------------------------------- the four writes

def create(conn: sa.Connection, built: BuiltApp, entity_id: str, values: Mapping[str, Any], actor: Actor,
           origin: Mapping[str, Any] | None = None) -> dict:
    """Create a record. `origin` says where the write comes from ({"form": id} for a form submission);
    the listeners of record events see it (a workflow that starts from a form starts on it)."""
    entity, table = built.entity(entity_id), built.table(entity_id)
    if not can_create(entity, actor):
        raise PermissionDenied(f"you may not create {entity_id} records")
    origin = origin or {}
    built.events.before(RecordEvent(conn, built, entity_id, "create", actor, values=_mapping(values),
                                    origin=origin))
    errors = FieldErrors()
    sent = _parse_values(entity, actor, values, errors)
    record = {f.id: None for f in entity.fields}
    record.update(_defaults(entity, sent))
    record.update(sent)
    writable = {f.id for f in writable_fields(entity, actor)}
    # Required applies to what this actor can fill in; a field only another role may write is
    # filled in by that role later.
    for f in entity.fields:
        if f.required and f.id in writable and record[f.id] is None and f.id not in errors.errors:
            errors.add(f.id, "This field is required.")
    given = {k: v for k, v in record.items() if v is not None and k not in errors.errors}
    _check_unique(conn, table, entity, given, None, errors)
    _check_links(conn, built, entity, actor, {k: v for k, v in sent.items() if k not in errors.errors}, errors)
    _check_rules(built, entity, record, errors)
    if errors:
        raise errors
    _compute(built, entity, record)
    now = utcnow()
    result = _write(conn, table.insert().values(
        **record, row_version=1, created_at=now, created_by=actor.user_id, updated_at=now,
        updated_by=actor.user_id))
    record_id = result.inserted_primary_key[0]
    changes = {f.id: [None, _as_json(f, record[f.id])] for f in entity.fields if record[f.id] is not None}
    _store(conn, built, entity_id, record_id, 1, "create", changes, actor, now)
    built.events.after(RecordEvent(conn, built, entity_id, "create", actor, record_id, _mapping(values),
                                   changes, 1, origin))
    return _result(conn, built, entity_id, record_id, actor)


def update(conn: sa.Connection, built: BuiltApp, entity_id: str, record_id: Any, values: Mapping[str, Any],
           actor: Actor, expected_version: int) -> dict:
    """Change a record the actor edited at `expected_version`; the record as it is afterwards."""
    return _update(conn, built, entity_id, record_id, values, actor, _check_expected(expected_version))


def update_current(conn: sa.Connection, built: BuiltApp, entity_id: str, record_id: Any,
                   values: Mapping[str, Any], actor: Actor, origin: Mapping[str, Any] | None = None) -> int | None:
    """Change the record as it is now, under its row lock, for the platform's own writes (the workflow
    engine keeping its status field, its `set_fields` actions): they act on the current version, not
    on one somebody edited. Checked, versioned and audited exactly like `update`; the record is not
    read back, as nobody is shown it. Returns the new row version, or None when nothing changed."""
    return _update(conn, built, entity_id, record_id, values, actor, None, read_back=False, origin=origin)


def _update(conn: sa.Connection, built: BuiltApp, entity_id: str, record_id: Any, values: Mapping[str, Any],
            actor: Actor, expected: int | None, read_back: bool = True,
            origin: Mapping[str, Any] | None = None) -> Any:
    entity, table = built.entity(entity_id), built.table(entity_id)
    row = _locked_row(conn, built, entity_id, record_id, actor, "update")
    origin = origin or {}
    built.events.before(RecordEvent(conn, built, entity_id, "update", actor, row.id, _mapping(values),
                                    version=row.row_version, origin=origin))
    if expected is None:
        expected = row.row_version  # read under the lock: nobody can change it before the write below
    elif row.row_version != expected:
        raise _conflict(conn, table, row.id, expected)
    errors = FieldErrors()
    sent = _parse_values(entity, actor, values, errors)
    before = {f.id: row._mapping.get(f.id) for f in entity.fields}
    for fid, value in sent.items():
        if value is None and entity.field(fid).required:
            errors.add(fid, "This field is required.")
    fields = entity.field_map
    changed = {k: v for k, v in sent.items()
               if k not in errors.errors and _as_json(fields[k], v) != _as_json(fields[k], before[k])}
    _check_unique(conn, table, entity, changed, row.id, errors)
    _check_links(conn, built, entity, actor, changed, errors)
    _check_rules(built, entity, {**before, **changed}, errors, changed=set(changed))
    if errors:
        raise errors
    after = {**before, **changed}
    for fid, value in _compute(built, entity, after).items():
        if _as_json(fields[fid], value) != _as_json(fields[fid], before[fid]):
            changed[fid] = value
    if not changed:
        return _result(conn, built, entity_id, row.id, actor) if read_back else None
    now = utcnow()
    result = _write(conn, table.update().where(
        table.c.id == row.id, table.c.row_version == expected, table.c.deleted_at.is_(None)).values(
        **changed, row_version=table.c.row_version + 1, updated_at=now, updated_by=actor.user_id))
    if result.rowcount == 0:
        raise _conflict(conn, table, row.id, expected)
    diff = {k: [_as_json(fields[k], before[k]), _as_json(fields[k], v)] for k, v in changed.items()}
    _store(conn, built, entity_id, row.id, expected + 1, "update", diff, actor, now)
    _mark_for_owner(conn, built, entity, row, after, diff, actor, now)
    built.events.after(RecordEvent(conn, built, entity_id, "update", actor, row.id, _mapping(values), diff,
                                   expected + 1, origin))
    return _result(conn, built, entity_id, row.id, actor) if read_back else expected + 1


def _mark_for_owner(conn, built, entity: EntityDef, row, after, diff, actor: Actor, now) -> None:
    """Someone else changed your record: it shows yellow for you until you acknowledge it."""
    if not entity.track_changes:
        return
    owner = after.get(entity.owner_field) if entity.owner_field else row.created_by
    if owner is None or owner == actor.user_id:
        return
    # The reason is stored in the product's default language; `detail.fields` lets a page say it in another.
    labels = "、".join(entity.field(f).label.zh for f in diff if f in entity.field_map)
    highlights.mark(conn, built.id, entity.id, row.id, [owner], labels,
                    {"fields": sorted(diff), "by": actor.username}, at=now)


def delete(conn: sa.Connection, built: BuiltApp, entity_id: str, record_id: Any, actor: Actor,
           expected_version: int | None = None) -> None:
    """Soft delete: the row stays, with `deleted_at` set, and can be restored."""
    table = built.table(entity_id)
    row = _locked_row(conn, built, entity_id, record_id, actor, "delete")
    built.events.before(RecordEvent(conn, built, entity_id, "delete", actor, row.id, version=row.row_version))
    if expected_version is not None and row.row_version != _check_expected(expected_version):
        raise _conflict(conn, table, row.id, expected_version)
    now = utcnow()
    result = conn.execute(table.update().where(
        table.c.id == row.id, table.c.row_version == row.row_version, table.c.deleted_at.is_(None)).values(
        deleted_at=now, row_version=table.c.row_version + 1, updated_at=now, updated_by=actor.user_id))
    if result.rowcount == 0:
        raise _conflict(conn, table, row.id, row.row_version)
    _store(conn, built, entity_id, row.id, row.row_version + 1, "delete", {}, actor, now)
    built.events.after(RecordEvent(conn, built, entity_id, "delete", actor, row.id, version=row.row_version + 1))


def restore(conn: sa.Connection, built: BuiltApp, entity_id: str, record_id: Any, actor: Actor) -> dict:
    """Undo a soft delete. Needs the same row scope as deleting; a unique value taken by a live
    record since the delete is an error, not a duplicate."""
    entity, table = built.entity(entity_id), built.table(entity_id)
    row = fetch_row(conn, built, entity_id, record_id, actor, deleted_only=True, for_update=True)
    _require(conn, table, entity, actor, "delete", row.id, include_deleted=True)
    built.events.before(RecordEvent(conn, built, entity_id, "restore", actor, row.id, version=row.row_version))
    errors = FieldErrors()
    _check_unique(conn, table, entity, {f.id: row._mapping.get(f.id) for f in entity.fields}, row.id, errors)
    if errors:
        raise errors
    now = utcnow()
    result = conn.execute(table.update().where(
        table.c.id == row.id, table.c.row_version == row.row_version).values(
        deleted_at=None, row_version=table.c.row_version + 1, updated_at=now, updated_by=actor.user_id))
    if result.rowcount == 0:
        raise _conflict(conn, table, row.id, row.row_version)
    _store(conn, built, entity_id, row.id, row.row_version + 1, "restore", {}, actor, now)
    built.events.after(RecordEvent(conn, built, entity_id, "restore", actor, row.id, version=row.row_version + 1))
    return _result(conn, built, entity_id, row.id, actor)
