"""The personal workbench: the apps, forms and entities this user can use, and their goal tree — records
of any self-linked entity (a goal with a parent goal) that they own, each with its chain of parents."""
from __future__ import annotations

from dataclasses import dataclass

from flask import redirect, render_template, url_for

from keel.definitions.model import EntityDef, FieldDef
from keel.errors import FieldErrors, NotFound
from keel.storage import query
from keel.storage.permissions import allowed_scope
from keel.web.context import usable_forms
from keel.web.pages import actor, bp, lang, runtime

MAX_TREE_ITEMS = 50
MAX_CHAIN = 10  # a parent chain longer than this (or a cycle) is cut, never followed forever


@dataclass
class TreeItem:
    id: int
    title: str
    href: str
    chain: list[tuple[str, str]]  # (title, href) from the top down to the direct parent


def parent_field(entity: EntityDef) -> FieldDef | None:
    for f in entity.fields:
        if f.type == "link" and f.entity == entity.id:
            return f
    return None


def _title(entity: EntityDef, item: dict) -> str:
    value = item.get(entity.title_field) if entity.title_field else None
    return str(value) if value not in (None, "") else f"#{item['id']}"


def goal_tree(conn, built, entity: EntityDef, who) -> list[TreeItem]:
    parent = parent_field(entity)
    if parent is None or not entity.owner_field:
        return []
    try:
        page = query.list_records(conn, built, entity.id, who,
                                  filters=[query.Filter(entity.owner_field, "eq", who.user_id)],
                                  sort=["id"], per_page=MAX_TREE_ITEMS)
    except FieldErrors:  # the owner field is not readable for this user: no tree
        return []
    base = f"/apps/{built.id}/{entity.id}/"
    out = []
    for item in page.items:
        chain: list[tuple[str, str]] = []
        seen = {item["id"]}
        up = item.get(parent.id)
        while up is not None and up not in seen and len(chain) < MAX_CHAIN:
            seen.add(up)
            try:
                p = query.get_record(conn, built, entity.id, up, who)
            except NotFound:  # a parent this user may not read stays out of the picture
                break
            chain.insert(0, (_title(entity, p), base + str(p["id"])))
            up = p.get(parent.id)
        out.append(TreeItem(item["id"], _title(entity, item), base + str(item["id"]), chain))
    return out


@bp.get("/")
def home():
    return redirect(url_for("web.workbench"))


@bp.get("/workbench")
def workbench():
    who, lg = actor(), lang()
    apps = []
    with runtime().engine.connect() as conn:
        for built in sorted(runtime().apps(), key=lambda b: b.id):
            entities, trees = [], []
            for e in built.definition.entities.values():
                if allowed_scope(e, who, "read") == "none":
                    continue
                href = url_for("web.record_list", app_id=built.id, entity_id=e.id)
                entities.append((e.label.get(lg), href))
                tree = goal_tree(conn, built, e, who)
                if tree:
                    trees.append((e.label.get(lg), tree))
            forms = usable_forms(built, who, lg)
            if entities or forms:
                apps.append({"label": built.definition.label.get(lg), "id": built.id, "forms": forms,
                             "entities": entities, "trees": trees})
    return render_template("workbench.html", apps=apps)
