"""What a widget reads through: one WidgetContext per rendering, bound to the viewer. Every read goes through
the one permission point (`keel.storage.query.select_records`, `readable_fields`), so a widget cannot show
a row or a field its viewer may not read — built-in widgets and plugins' alike."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from keel.actor import Actor
from keel.dashboards import rules as R
from keel.definitions.model import EntityDef, FieldDef, Label
from keel.storage import highlights
from keel.storage.built import BuiltApp
from keel.storage.permissions import readable_fields
from keel.storage.query import read_condition, select_records
from keel.storage.system import users

MAX_ROWS = 20_000  # a widget never reads more rows than this at once


@dataclass
class WidgetContext:
    conn: sa.Connection
    built: BuiltApp
    actor: Actor
    lang: str = "zh"
    dashboard: str | None = None
    # per rendering caches (user names, marks) so widgets on one page share one query each
    _names: dict[int, str] = field(default_factory=dict)

    @property
    def app(self) -> str:
        return self.built.id

    @property
    def settings(self) -> Mapping[str, Any]:
        return self.built.definition.settings

    def entity(self, entity_id: str) -> EntityDef:
        return self.built.entity(entity_id)

    def readable(self, entity_id: str) -> dict[str, FieldDef]:
        return {f.id: f for f in readable_fields(self.entity(entity_id), self.actor)}

    def label(self, x: Any, fallback: str = "") -> str:
        if isinstance(x, Label):
            return x.get(self.lang)
        return Label.parse(x, fallback).get(self.lang)

    def rows(self, entity_id: str, filters: Iterable = (), sort: Iterable = (), limit: int | None = None,
             columns: Iterable[str] | None = None) -> list[Mapping[str, Any]]:
        """Raw stored values (Decimal, date, ids) of the rows the viewer may read, only readable fields
        kept: what rules and charts compute on. `columns`: read only these (and `id`)."""
        stmt, order = select_records(self.built, entity_id, self.actor, _filters(filters), list(sort))
        table = self.built.table(entity_id)
        keep = {"id", "row_version", "created_at", "updated_at", "created_by", "updated_by",
                *self.readable(entity_id)}
        if columns is not None:
            keep &= {"id", *columns}
            stmt = stmt.with_only_columns(*(table.c[c] for c in sorted(keep)))
        stmt = stmt.order_by(*order, table.c.id).limit(min(limit or MAX_ROWS, MAX_ROWS))
        result = self.conn.execute(stmt).mappings()
        if columns is not None:
            return list(result)
        return [{k: v for k, v in r.items() if k in keep} for r in result]

    def records(self, entity_id: str, filters: Iterable = (), sort: Iterable = (), limit: int | None = None):
        """The same rows as JSON values (what the API shows)."""
        fields = self.readable(entity_id)
        out = []
        for r in self.rows(entity_id, filters, sort, limit):
            item = {k: r.get(k) for k in ("id", "row_version")}
            for fid, f in fields.items():
                v = r.get(fid)
                item[fid] = None if v is None else f.ftype.dump(f, v)
            out.append(item)
        return out

    def marked(self, entity_id: str, ids: Iterable[int] | None = None) -> dict[int, dict[str, Any]]:
        if self.actor.user_id is None:
            return {}
        found = highlights.marked(self.conn, self.actor.user_id, self.app, entity_id,
                                  None if ids is None else list(ids))
        return {rid: m for (_a, _e, rid), m in found.items()}

    def rules(self, raw: Any, entity_id: str, default_field: str | None = None) -> tuple[R.Rule, ...]:
        """Compiled rules over the fields the viewer may read; a rule on a field hidden from the viewer is
        dropped (it would reveal the value), memoised per version."""
        readable = self.readable(entity_id)
        key = ("dash-rules", entity_id, repr(raw), default_field)
        every = self.built.product(key, lambda: _compile_all(raw, self.entity(entity_id), self.settings,
                                                             default_field))
        return tuple(r for r in every if r.field in readable)

    def evaluate(self, rules: Sequence[R.Rule], row: Mapping[str, Any]) -> str | None:
        return R.style_of(rules, row)

    def record_url(self, entity_id: str, record_id: Any) -> str:
        return f"/apps/{self.app}/{entity_id}/{record_id}"

    def user_names(self, ids: Iterable[Any]) -> dict[int, str]:
        wanted = sorted({i for i in ids if isinstance(i, int) and i not in self._names})
        if wanted:
            for r in self.conn.execute(sa.select(users.c.id, users.c.display_name).where(users.c.id.in_(wanted))):
                self._names[r.id] = r.display_name
        return self._names

    def titles(self, entity_id: str, ids: Iterable[Any]) -> dict[int, str]:
        """Titles of the linked records the viewer may read (others stay unnamed)."""
        wanted = sorted({i for i in ids if isinstance(i, int)})
        entity = self.entity(entity_id)
        tf = entity.title_field
        if not wanted or not tf or tf not in self.readable(entity_id):
            return {}
        table = self.built.table(entity_id)
        stmt = sa.select(table.c.id, table.c[tf]).where(table.c.id.in_(wanted),
                                                         read_condition(table, entity, self.actor))
        return {r[0]: str(r[1]) for r in self.conn.execute(stmt)}

    def display(self, f: FieldDef, value: Any, names: Mapping[int, str] | None = None,
                titles: Mapping[int, str] | None = None) -> str:
        """A stored value as the reader sees it (option labels, names, percentages, grouped numbers)."""
        if value is None:
            return ""
        if f.type == "user":
            return (names or self._names).get(value, f"#{value}")
        if f.type == "link":
            return (titles or {}).get(value, f"#{value}")
        if f.type in ("select", "multi_select"):
            labels = {o.id: o.label.get(self.lang) for o in f.options}
            vals = value if isinstance(value, list) else [value]
            return ", ".join(labels.get(v, str(v)) for v in vals)
        if f.type == "boolean":
            return ("是" if value else "否") if self.lang.startswith("zh") else ("Yes" if value else "No")
        if f.type == "percent":
            return format_number(Decimal(str(value)) * 100, 1) + "%"
        if f.type == "money":
            return "¥" + format_number(value, 2) if (f.currency or "CNY") == "CNY" else \
                f"{format_number(value, 2)} {f.currency}"
        if f.type == "decimal":
            return format_number(value, f.scale if f.scale is not None else 2)
        if f.type == "integer":
            return format_number(value, 0)
        if f.type == "datetime":
            return str(value).replace("T", " ")[:16]
        return str(value)


def format_number(value: Any, places: int = 2) -> str:
    try:
        d = Decimal(str(value))
    except Exception:  # shown as stored rather than failing a page
        return str(value)
    return f"{d:,.{places}f}"


def format_value(value: Any, fmt: str | None) -> str:
    if value is None:
        return "—"
    if fmt == "money":
        return "¥" + format_number(value, 2)
    if fmt == "percent":
        return format_number(Decimal(str(value)) * 100, 1) + "%"
    if fmt == "count":
        return format_number(value, 0)
    d = Decimal(str(value))
    return format_number(d, 0 if d == d.to_integral_value() else 2)


def _filters(raw: Iterable) -> list:
    out = []
    for f in raw or ():
        if isinstance(f, Mapping):
            out.append((f["field"], f.get("op", "eq"), f.get("value")))
        else:
            out.append(f)
    return out


def _compile_all(raw: Any, entity: EntityDef, settings: Mapping[str, Any], default_field: str | None):
    return R.compile_rules(raw, field_types(entity), settings, default_field)


def field_types(entity: EntityDef) -> dict[str, str]:
    return {"id": "integer", **{f.id: f.type for f in entity.fields}}
