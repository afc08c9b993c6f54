"""List views from definitions (`lists/*.json`): which columns, the default sort, the filters offered on the
page, the fields the search box looks in, a fixed `where`, who may use it and whether the app menu offers
it. An entity without a view gets one made from its definition, so every entity has a usable list."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keel.storage.permissions import allowed_scope, readable_fields

GENERATED_COLUMNS = 8
SEARCHABLE = ("text", "long_text", "email", "url", "phone")
FILTERABLE = ("select", "multi_select", "user", "link", "boolean")


@dataclass(frozen=True)
class ListView:
    id: str
    entity: str
    label: Any                 # {"zh", "en"} / text, or None: the entity's label
    columns: tuple[str, ...]
    sort: tuple[str, ...]
    filters: tuple[str, ...]
    search: tuple[str, ...]
    where: Mapping[str, Any]
    roles: tuple[str, ...] | None
    menu: bool
    per_page: int
    generated: bool = False

    def title(self, entity, lang: str) -> str:
        if isinstance(self.label, Mapping):
            return str(self.label.get(lang) or self.label.get("zh") or self.label.get("en"))
        return str(self.label) if self.label else entity.label.get(lang)

    def open_to(self, entity, who) -> bool:
        if allowed_scope(entity, who, "read") == "none":
            return False
        return not self.roles or who.is_admin or bool(set(self.roles) & set(who.roles))


def _from_data(d: Mapping[str, Any]) -> ListView:
    return ListView(id=d["id"], entity=d["entity"], label=d.get("label"), columns=tuple(d.get("columns") or ()),
                    sort=tuple(d.get("sort") or ()), filters=tuple(d.get("filters") or ()),
                    search=tuple(d.get("search") or ()), where=dict(d.get("where") or {}),
                    roles=tuple(d["roles"]) if d.get("roles") else None, menu=d.get("menu", True),
                    per_page=d.get("per_page", 50))


def generated(entity) -> ListView:
    """The view of an entity no list definition covers: its first fields, newest first, a filter per
    option and person field, search over its text fields."""
    fields = [f for f in entity.fields if f.type not in ("json", "rich_text", "long_text")]  # a table: its size
    if entity.title_field:
        fields.sort(key=lambda f: f.id != entity.title_field)
    return ListView(id=f"{entity.id}", entity=entity.id, label=None,
                    columns=tuple(f.id for f in fields[:GENERATED_COLUMNS]), sort=(),
                    filters=tuple(f.id for f in entity.fields if f.type in ("select", "user"))[:4],
                    search=tuple(f.id for f in entity.fields if f.type in SEARCHABLE)[:4],
                    where={}, roles=None, menu=True, per_page=50, generated=True)


def views_of(built) -> list[ListView]:
    """The app's defined views (in file order by id)."""
    return built.product("keel.web.list_views", lambda: [
        _from_data(d.data) for d in sorted(built.definition.definitions_of("list").values(), key=lambda d: d.id)])


def entity_views(built, entity_id: str) -> list[ListView]:
    return [v for v in views_of(built) if v.entity == entity_id]


def view_for(built, entity, view_id: str | None) -> ListView | None:
    """The view a list page shows: the one asked for (None when it is not this entity's), else the
    entity's default, else its first, else the generated one."""
    views = entity_views(built, entity.id)
    if view_id:
        return next((v for v in views if v.id == view_id), None)
    defaults = [v for v in views if _is_default(built, v)]
    return (defaults or views or [generated(entity)])[0]


def _is_default(built, v: ListView) -> bool:
    d = built.definition.definitions_of("list").get(v.id)
    return bool(d is not None and d.data.get("default"))


def menu_views(built, who) -> list[tuple[ListView, Any]]:
    """(view, entity) for the app menu: each defined view the user may use and the menu offers, and each
    readable entity that has no view of its own."""
    out = []
    covered = set()
    for v in views_of(built):
        entity = built.definition.entities.get(v.entity)
        covered.add(v.entity)
        if entity is not None and v.menu and v.open_to(entity, who):
            out.append((v, entity))
    for entity in built.definition.entities.values():
        if entity.id not in covered and allowed_scope(entity, who, "read") != "none":
            out.append((generated(entity), entity))
    return out


def readable_columns(view: ListView, entity, who) -> list:
    readable = {f.id: f for f in readable_fields(entity, who)}
    return [readable[c] for c in view.columns if c in readable]


def search_fields(built, entity) -> tuple[str, ...]:
    """What a type-ahead or a search box matches: the title field, then the default view's search fields."""
    view = view_for(built, entity, None)
    out = [entity.title_field] if entity.title_field else []
    return tuple(dict.fromkeys([*out, *(view.search if view else ())]))
