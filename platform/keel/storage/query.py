"""The one read path for entity records: get, list (filter, sort, page), expand, aggregate and history.

Every name a caller gives — field, operator, sort key, aggregate metric — is looked up in the entity
definition and becomes a `Column` or one of a fixed set of operators; every value is a bound parameter.
There is no raw-SQL feature. Row scopes and field permissions come from `storage.permissions`, so a
field the actor cannot read can be neither seen nor filtered, sorted, grouped or aggregated by (a filter
on a hidden field would let an attacker infer its values one guess at a time).
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from keel.actor import Actor
from keel.definitions.model import EntityDef, FieldDef, Label
from keel.errors import FieldErrors, NotFound
from keel.fieldtypes.base import FieldValueError
from keel.fieldtypes.builtin import Boolean, DateTime, Integer, User
from keel.storage.built import BuiltApp
from keel.storage.permissions import readable_fields, row_filter
from keel.storage.system import record_versions

MAX_PER_PAGE = 200
MAX_SORT_KEYS = 5
MAX_IN_VALUES = 100
MAX_FILTER_TEXT = 1000
MAX_GROUPS = 1000
MAX_PAGE = 1_000_000  # keeps OFFSET inside a 64-bit integer on every database
OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "contains", "in", "isnull")
METRICS = ("count", "sum", "avg", "min", "max")

# System columns a client may filter and sort by, typed like fields so values parse the same way.
SYSTEM_FIELDS = {
    "id": FieldDef("id", "integer", Label("ID", "ID"), ftype=Integer()),
    "created_at": FieldDef("created_at", "datetime", Label("创建时间", "Created at"), ftype=DateTime()),
    "created_by": FieldDef("created_by", "user", Label("创建人", "Created by"), ftype=User()),
    "updated_at": FieldDef("updated_at", "datetime", Label("更新时间", "Updated at"), ftype=DateTime()),
    "updated_by": FieldDef("updated_by", "user", Label("更新人", "Updated by"), ftype=User()),
}
_BOOLEAN = Boolean()
_DATETIME = SYSTEM_FIELDS["created_at"]


@dataclass(frozen=True)
class Filter:
    field: str
    op: str
    value: Any
    key: str = ""  # where an error about it is reported: the query argument, e.g. "amount__gte"

    @property
    def place(self) -> str:
        place = self.key or (self.field if self.op == "eq" else f"{self.field}__{self.op}")
        return str(place)[:100]  # a client's key, echoed in the 422 body: keep it short


@dataclass(frozen=True)
class Sort:
    field: str
    descending: bool = False


@dataclass
class Page:
    items: list[dict]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


# ---------------------------------------------------------------- record ids and rows as JSON

def record_id_of(value: Any) -> int:
    """A record id from a URL or a body; anything else is simply not found."""
    if isinstance(value, bool):
        raise NotFound("no such record")
    try:
        rid = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise NotFound("no such record") from None
    if not 0 < rid < 2**63:
        raise NotFound("no such record")
    return rid


def datetime_json(value: Any) -> Any:
    return _DATETIME.ftype.dump(_DATETIME, value)


def to_json(entity: EntityDef, row: Any, fields: Iterable[FieldDef]) -> dict:
    """The JSON form of a stored row: its system columns and the given (readable) fields."""
    m = row._mapping if hasattr(row, "_mapping") else row
    out = {"id": m["id"], "row_version": m["row_version"],
           "created_at": datetime_json(m["created_at"]), "created_by": m["created_by"],
           "updated_at": datetime_json(m["updated_at"]), "updated_by": m["updated_by"]}
    if m.get("deleted_at") is not None:
        out["deleted_at"] = datetime_json(m["deleted_at"])
    for f in fields:
        value = m.get(f.id)
        out[f.id] = None if value is None else f.ftype.dump(f, value)
    return out


# ---------------------------------------------------------------- names -> columns, values -> params

def _queryable(entity: EntityDef, actor: Actor) -> dict[str, FieldDef]:
    return {**SYSTEM_FIELDS, **{f.id: f for f in readable_fields(entity, actor)}}


def _sql_type(f: FieldDef) -> sa.types.TypeEngine:
    return f.ftype.column_type(f)


def _ops_for(f: FieldDef) -> tuple[str, ...]:
    """Which operators make sense for a field, from its SQL type: JSON values compare on no
    database (PostgreSQL has no `=` for json), booleans have no order."""
    sql_type = _sql_type(f)
    if isinstance(sql_type, sa.JSON):
        return ("contains", "isnull") if f.type == "multi_select" else ("isnull",)
    if isinstance(sql_type, sa.Boolean):
        return ("eq", "ne", "in", "isnull")
    if isinstance(sql_type, sa.String):  # includes Text
        return OPS
    return tuple(op for op in OPS if op != "contains")


def _parse_one(f: FieldDef, raw: Any) -> Any:
    if isinstance(raw, str) and len(raw) > MAX_FILTER_TEXT:
        raise FieldValueError("At most %(n)s characters.", n=MAX_FILTER_TEXT)
    if raw is None:
        raise FieldValueError("A value is required.")
    if isinstance(raw, str) and f.type in ("text", "long_text", "rich_text"):
        return raw  # compared as given: a filter is not a stored value, so it is not sanitised
    return f.ftype.parse(f, raw)


def _parse_filter_value(f: FieldDef, op: str, raw: Any) -> Any:
    if op == "isnull":
        return _BOOLEAN.parse(f, raw)
    if op == "in":
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        if not items or len(items) > MAX_IN_VALUES:
            raise FieldValueError("Give between 1 and %(n)s values.", n=MAX_IN_VALUES)
        return tuple(_parse_one(f, item.strip() if isinstance(item, str) else item) for item in items)
    if op == "contains":
        if not isinstance(raw, str):
            raise FieldValueError("Must be text.")
        if len(raw) > MAX_FILTER_TEXT:
            raise FieldValueError("At most %(n)s characters.", n=MAX_FILTER_TEXT)
        return raw
    return _parse_one(f, raw)


def normalise_filters(entity: EntityDef, actor: Actor, filters: Iterable[Filter | tuple]) -> list[Filter]:
    """Check every filter against the definition and the actor's readable fields and parse its value
    by the field's type. Collects all problems into one FieldErrors."""
    allowed = _queryable(entity, actor)
    errors, out = FieldErrors(), []
    for flt in filters:
        if not isinstance(flt, Filter):
            flt = Filter(*flt)
        f = allowed.get(flt.field) if isinstance(flt.field, str) else None
        if f is None:
            errors.add(flt.place, "Unknown field.")
            continue
        if flt.op not in OPS:
            errors.add(flt.place, "Unknown filter operator.")
            continue
        if flt.op not in _ops_for(f):
            errors.add(flt.place, "This filter does not apply to this field.")
            continue
        try:
            out.append(Filter(f.id, flt.op, _parse_filter_value(f, flt.op, flt.value), flt.place))
        except FieldValueError as e:
            errors.errors.setdefault(flt.place, []).extend(e.messages)
    if errors:
        raise errors
    return out


def _condition(table: sa.Table, flt: Filter, entity: EntityDef) -> sa.ColumnElement[bool]:
    col, v = table.c[flt.field], flt.value
    f = entity.field(flt.field) or SYSTEM_FIELDS[flt.field]
    match flt.op:
        case "eq":
            return col == v
        case "ne":
            return sa.or_(col != v, col.is_(None))  # "not this value" includes having no value
        case "lt":
            return col < v
        case "lte":
            return col <= v
        case "gt":
            return col > v
        case "gte":
            return col >= v
        case "in":
            return col.in_(v)
        case "isnull":
            return col.is_(None) if v else col.is_not(None)
        case "contains" if f.type == "multi_select":
            # The stored JSON text of the list holds the option as a JSON string on both databases.
            return sa.cast(col, sa.Text).contains(json.dumps(v), autoescape=True)
        case "contains":
            return col.icontains(v, autoescape=True)
    raise AssertionError(flt.op)  # normalise_filters admits only OPS


def normalise_sort(entity: EntityDef, actor: Actor, sort: Iterable[Sort | str]) -> list[Sort]:
    allowed = _queryable(entity, actor)
    errors, out = FieldErrors(), []
    for s in sort:
        if isinstance(s, str):
            s = Sort(s[1:], True) if s.startswith("-") else Sort(s)
        f = allowed.get(s.field) if isinstance(s.field, str) else None
        if f is None:
            errors.add("sort", "Cannot sort by '%(field)s'.", field=str(s.field)[:50])
        elif isinstance(_sql_type(f), sa.JSON):
            errors.add("sort", "Cannot sort by '%(field)s'.", field=f.id)
        else:
            out.append(s)
    if len(out) > MAX_SORT_KEYS:
        errors.add("sort", "Sort by at most %(n)s fields.", n=MAX_SORT_KEYS)
    if errors:
        raise errors
    return out


def _order_by(table: sa.Table, sort: Sequence[Sort]) -> list:
    # NULLs last in both directions on both databases (their defaults differ); id breaks ties so
    # paging is stable.
    keys = [(table.c[s.field].desc() if s.descending else table.c[s.field].asc()).nulls_last() for s in sort]
    return [*keys, table.c.id.asc()]


def parse_query_args(entity: EntityDef, actor: Actor, args: Mapping[str, Any], *,
                     ignore: Iterable[str] = ()) -> tuple[list[Filter], list[Sort], int, int]:
    """Filters, sort and paging from query arguments (`?field=v`, `?field__op=v`, `?sort=a,-b`,
    `?page=`, `?per_page=`). Names in `ignore` belong to the caller (e.g. `expand`). Problems with
    every argument are reported together; field names and values are checked against the definition
    (see `normalise_filters`), so the result is safe to pass to `list_records`."""
    errors = FieldErrors()
    filters, sort, page, per_page = [], [], 1, 50
    skip = set(ignore)
    for key, raw in args.items():
        if key in skip:
            continue
        if isinstance(raw, (list, tuple)):
            if len(raw) != 1:
                errors.add(key, "Give this argument once.")
                continue
            raw = raw[0]
        if key == "sort":
            sort = [s.strip() for s in str(raw).split(",") if s.strip()]
        elif key in ("page", "per_page"):
            try:
                n = int(str(raw).strip())
            except ValueError:
                errors.add(key, "Must be a whole number.")
                continue
            if n < 1:
                errors.add(key, "Must be at least %(min)s.", min=1)
            elif key == "page" and n > MAX_PAGE:
                errors.add(key, "Must be at most %(max)s.", max=MAX_PAGE)
            elif key == "page":
                page = n
            else:
                per_page = min(n, MAX_PER_PAGE)
        else:
            field, _, op = key.partition("__")
            filters.append(Filter(field, op or "eq", raw, key))
    try:
        filters = normalise_filters(entity, actor, filters)
    except FieldErrors as e:
        _merge(errors, e)
    try:
        sort = normalise_sort(entity, actor, sort)
    except FieldErrors as e:
        _merge(errors, e)
    if errors:
        raise errors
    return filters, sort, page, per_page


def _merge(into: FieldErrors, other: FieldErrors) -> None:
    for k, msgs in other.errors.items():
        into.errors.setdefault(k, []).extend(msgs)


# ---------------------------------------------------------------- get and list

def read_condition(table: sa.Table, entity: EntityDef, actor: Actor, include_deleted: bool = False):
    cond = row_filter(table, entity, actor, "read", include_deleted)
    return sa.false() if cond is None else cond


def fetch_row(conn: sa.Connection, built: BuiltApp, entity_id: str, record_id: Any, actor: Actor, *,
              include_deleted: bool = False, deleted_only: bool = False, for_update: bool = False):
    """The row the actor may read, or NotFound — the same answer for missing and hidden rows, so the
    existence of a record nobody showed you is not revealed."""
    entity, table = built.entity(entity_id), built.table(entity_id)
    rid = record_id_of(record_id)
    stmt = sa.select(table).where(table.c.id == rid,
                                  read_condition(table, entity, actor, include_deleted or deleted_only))
    if deleted_only:
        stmt = stmt.where(table.c.deleted_at.is_not(None))
    if for_update:
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    if row is None and _granted(conn, built, entity_id, rid, actor):
        stmt = sa.select(table).where(table.c.id == rid)
        if not (include_deleted or deleted_only):
            stmt = stmt.where(table.c.deleted_at.is_(None))
        row = conn.execute(stmt.with_for_update() if for_update else stmt).first()
    if row is None:
        raise NotFound(f"no {entity_id} record {rid}")
    return row


def _granted(conn: sa.Connection, built: BuiltApp, entity_id: str, record_id: Any, actor: Actor) -> bool:
    """Whether a subsystem lets the actor read this one record beyond their role's rows (the workflow
    engine: an approver reads the record of a task assigned to them); `keel_record_read_grant`."""
    hook = getattr(built.registries, "read_grants", None)
    if hook is None or actor.user_id is None or not isinstance(record_id, int):
        return False
    return any(hook(conn=conn, app=built, entity_id=entity_id, record_id=record_id, actor=actor))


def _check_expand(entity: EntityDef, actor: Actor, expand: Iterable[str]) -> list[FieldDef]:
    readable = {f.id: f for f in readable_fields(entity, actor)}
    errors, out = FieldErrors(), []
    for name in expand:
        f = readable.get(name)
        if f is None or f.type != "link":
            errors.add("expand", "Cannot expand '%(field)s'.", field=str(name)[:50])
        else:
            out.append(f)
    if errors:
        raise errors
    return out


def _expand(conn: sa.Connection, built: BuiltApp, actor: Actor, items: list[dict],
            links: list[FieldDef]) -> None:
    """Replace link ids with {id, title}, or with None when the target is missing, deleted or not
    readable by the actor: None rather than {id}, so an expansion never confirms that a hidden
    record exists."""
    for f in links:
        ids = {item[f.id] for item in items if item.get(f.id) is not None}
        found: dict[int, Any] = {}
        if ids:
            target, ttable = built.entity(f.entity), built.table(f.entity)
            title = target.field(target.title_field) if target.title_field else None
            if title is not None and title not in readable_fields(target, actor):
                title = None
            cols = [ttable.c.id] + ([ttable.c[title.id]] if title is not None else [])
            rows = conn.execute(sa.select(*cols).where(ttable.c.id.in_(sorted(ids)),
                                                       read_condition(ttable, target, actor)))
            for r in rows:
                value = r[1] if title is not None else None
                found[r[0]] = None if value is None else title.ftype.dump(title, value)
        for item in items:
            rid = item.get(f.id)
            item[f.id] = {"id": rid, "title": found[rid]} if rid in found else None


def get_record(conn: sa.Connection, built: BuiltApp, entity_id: str, record_id: Any, actor: Actor,
               include_deleted: bool = False, expand: Iterable[str] = ()) -> dict:
    entity = built.entity(entity_id)
    links = _check_expand(entity, actor, expand)
    row = fetch_row(conn, built, entity_id, record_id, actor, include_deleted=include_deleted)
    item = to_json(entity, row, readable_fields(entity, actor))
    _expand(conn, built, actor, [item], links)
    return item


@dataclass(frozen=True)
class Search:
    """Free text matched (case-insensitively, as a part) against any of `fields` — the search box of a
    list view. Fields the actor may not read are left out, so a search never reveals a hidden value."""

    text: str
    fields: tuple[str, ...]


def _search_condition(table: sa.Table, entity: EntityDef, actor: Actor, search: Search | None):
    if search is None or not search.text.strip():
        return None
    readable = {f.id for f in readable_fields(entity, actor)}
    cols = [table.c[f] for f in search.fields if f in readable and f in table.c]
    if not cols:
        return sa.false()
    text = search.text.strip()[:MAX_FILTER_TEXT]
    return sa.or_(*(c.icontains(text, autoescape=True) for c in cols))


def select_records(built: BuiltApp, entity_id: str, actor: Actor, filters=(), sort=(),
                   include_deleted: bool = False, search: Search | None = None,
                   where: Callable[[sa.Table], Any] | None = None) -> tuple[sa.Select, list]:
    """The permission-checked SELECT (without paging) and ORDER BY for a list; shared by list, export.
    `where(table)`: an extra condition the caller builds (a workbench's "owned by my team")."""
    entity, table = built.entity(entity_id), built.table(entity_id)
    flts = normalise_filters(entity, actor, filters)
    sorts = normalise_sort(entity, actor, sort)
    stmt = sa.select(table).where(read_condition(table, entity, actor, include_deleted),
                                  *(_condition(table, f, entity) for f in flts))
    found = _search_condition(table, entity, actor, search)
    if found is not None:
        stmt = stmt.where(found)
    if where is not None:
        stmt = stmt.where(where(table))
    return stmt, _order_by(table, sorts)


def list_records(conn: sa.Connection, built: BuiltApp, entity_id: str, actor: Actor, filters=(), sort=(),
                 page: int = 1, per_page: int = 50, include_deleted: bool = False,
                 expand: Iterable[str] = (), search: Search | None = None,
                 where: Callable[[sa.Table], Any] | None = None) -> Page:
    entity = built.entity(entity_id)
    links = _check_expand(entity, actor, expand)
    stmt, order = select_records(built, entity_id, actor, filters, sort, include_deleted, search, where)
    page = min(max(1, int(page)), MAX_PAGE)
    per_page = min(max(1, int(per_page)), MAX_PER_PAGE)
    rows = conn.execute(stmt.order_by(*order).limit(per_page).offset((page - 1) * per_page)).all()
    if page > 1 or len(rows) >= per_page:
        total = conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery())).scalar_one()
    else:  # the whole list is on this first page: its length is the total, no second query
        total = len(rows)
    fields = readable_fields(entity, actor)
    items = [to_json(entity, r, fields) for r in rows]
    _expand(conn, built, actor, items, links)
    return Page(items, total, page, per_page)


# ---------------------------------------------------------------- aggregate and history

NUMERIC_TYPES = ("integer", "decimal", "money", "percent")


def aggregate(conn: sa.Connection, built: BuiltApp, entity_id: str, actor: Actor, group_by: str | None,
              metric: str, field: str | None, filters=()) -> list[dict]:
    """[{"group": value or None, "value": ...}] over the rows the actor may read. Counts are
    integers; sums, averages, minima and maxima of numbers are exact decimal strings."""
    entity, table = built.entity(entity_id), built.table(entity_id)
    allowed = {f.id: f for f in readable_fields(entity, actor)}
    errors = FieldErrors()
    if metric not in METRICS:
        errors.add("metric", "Unknown metric.")
    f = None
    if field is not None:
        f = allowed.get(field)
        if f is None:
            errors.add("field", "Unknown field.")
        elif metric in ("sum", "avg") and f.type not in NUMERIC_TYPES:
            errors.add("field", "Only numbers can be summed or averaged.")
        elif metric in ("min", "max") and f.type not in (*NUMERIC_TYPES, "date", "datetime"):
            errors.add("field", "Only numbers and dates have a minimum and maximum.")
    elif metric != "count":
        errors.add("field", "Choose a field for this metric.")
    g = None
    if group_by is not None:
        g = allowed.get(group_by)
        if g is None or isinstance(_sql_type(g), sa.JSON):
            errors.add("group_by", "Cannot group by '%(field)s'.", field=str(group_by)[:50])
    if errors:
        raise errors
    stmt, _ = select_records(built, entity_id, actor, filters)
    src = stmt.subquery()
    col = src.c[f.id] if f is not None else None
    # SQLite keeps NUMERIC as floats: coercing the result to the field's own NUMERIC type rounds it
    # back to the field's scale, which is exact while the total fits its 15 significant digits.
    ctype = table.c[f.id].type if f is not None else None
    exprs = {"count": sa.func.count(col) if col is not None else sa.func.count()}
    if metric in ("sum", "avg"):
        exprs["sum"] = sa.type_coerce(sa.func.sum(col), ctype)
        exprs["count"] = sa.func.count(col)
    elif metric in ("min", "max"):
        exprs[metric] = sa.type_coerce(getattr(sa.func, metric)(col), ctype)
    labels = [e.label(k) for k, e in exprs.items()]
    if g is not None:
        q = sa.select(src.c[g.id].label("g"), *labels).group_by(src.c[g.id]) \
            .order_by(src.c[g.id].asc().nulls_last()).limit(MAX_GROUPS)
    else:
        q = sa.select(sa.null().label("g"), *labels).select_from(src)
    out = []
    for r in conn.execute(q).mappings():
        group = None if r["g"] is None or g is None else g.ftype.dump(g, r["g"])
        out.append({"group": group, "value": _metric_value(metric, f, r)})
    return out


def _metric_value(metric: str, f: FieldDef | None, r: Mapping) -> Any:
    if metric == "count":
        return r["count"]
    if metric == "avg":
        if not r["count"] or r["sum"] is None:
            return None
        scale = 4 if f.type == "integer" else (f.scale if f.scale is not None
                                               else f.ftype.default_scale)
        return str((Decimal(r["sum"]) / r["count"]).quantize(Decimal(1).scaleb(-scale)))
    value = r[metric]
    if value is None:
        return None
    if isinstance(value, (dt.date, dt.datetime)):
        return f.ftype.dump(f, value)
    return str(value)


def record_history(conn: sa.Connection, built: BuiltApp, entity_id: str, record_id: Any, actor: Actor,
                   include_deleted: bool = False) -> list[dict]:
    """The stored versions of a record the actor may read, oldest first; `changes` holds
    [before, after] only for fields the actor may read now."""
    entity = built.entity(entity_id)
    row = fetch_row(conn, built, entity_id, record_id, actor, include_deleted=include_deleted)
    visible = {f.id for f in readable_fields(entity, actor)}
    rv = record_versions.c
    rows = conn.execute(sa.select(record_versions).where(
        rv.app == built.id, rv.entity == entity_id, rv.record_id == row.id).order_by(rv.version, rv.id))
    return [{"version": r.version, "action": r.action, "at": datetime_json(r.at), "user_id": r.user_id,
             "via": r.via, "changes": {k: v for k, v in (r.changes or {}).items() if k in visible}} for r in rows]
