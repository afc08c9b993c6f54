"""A workbench section over an entity, as its `workbench/*.json` definition says: whose records (mine, my
team's, my department's, all I may read), which ones (`where`, `sort`, `limit`), and how each card looks
(title, subtitle, fields, a progress bar from value/target, the status word, a colour from safe-expression
rules over the record and the app's settings). Reads go through the one read path as the viewer, so a card
never shows a record or a field they may not read."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from flask import url_for

from keel import formats
from keel.errors import FieldErrors
from keel.expressions import ExpressionError, compile_expression
from keel.storage import query
from keel.storage.permissions import allowed_scope, readable_fields
from keel.storage.system import users
from keel.web.pages import user_ids_in, user_names
from keel.web.workbench_model import COLOURS, Card, SectionView, WorkbenchContext, mark_text

DEFAULT_LIMIT = 12
MAX_CHAIN = 10  # a parent chain longer than this (or a cycle) is cut, never followed forever


def team_ids(manager_id: int) -> sa.Select:
    """Everyone who reports to `manager_id`, directly or through others (UNION ends a cycle)."""
    team = sa.select(users.c.id).where(users.c.manager_id == manager_id).cte("team", recursive=True)
    team = team.union(sa.select(users.c.id).where(users.c.manager_id == team.c.id))
    return sa.select(team.c.id)


def _owner_condition(entity, who, mode: str):
    owner = entity.owner_field
    if mode == "all" or not owner:
        return None
    if mode == "mine":
        return lambda t: t.c[owner] == who.user_id
    if mode == "team":
        return lambda t: t.c[owner].in_(team_ids(who.user_id))
    if who.department_id is None:
        return lambda t: t.c[owner] == who.user_id
    return lambda t: t.c[owner].in_(sa.select(users.c.id).where(users.c.department_id == who.department_id))


def _ratio(value: Any, target: Any) -> float | None:
    try:
        v, t = Decimal(str(value)), Decimal(str(target))
    except (InvalidOperation, ValueError):
        return None
    if t == 0:
        return None
    return float(v / t * 100)


def _colour(rules, record: Mapping[str, Any], settings: Mapping[str, Any], default: str) -> str:
    names = {**settings, **record}
    for rule in rules:
        try:
            if compile_expression(rule["if"]).evaluate(names):
                return rule["colour"]
        except ExpressionError:  # a rule that cannot be decided for this record does not colour it
            continue
    return default


def _numbers(item: Mapping[str, Any], entity) -> dict[str, Any]:
    """Record values for colour rules as the expressions compare them: decimals as Decimal and dates as
    dates (JSON gives both as text), so `due < today()` and `actual >= target` mean what they say."""
    out = dict(item)
    for f in entity.fields:
        v = out.get(f.id)
        if isinstance(v, str) and f.type in ("decimal", "money", "percent"):
            try:
                out[f.id] = Decimal(v)
            except InvalidOperation:
                pass
        elif isinstance(v, str) and f.type == "date":
            try:
                out[f.id] = dt.date.fromisoformat(v[:10])
            except ValueError:
                pass
        elif isinstance(v, Mapping) and f.type == "link":
            out[f.id] = v.get("id")
    return out


def entity_section(ctx: WorkbenchContext) -> SectionView | None:
    d, built, who, lg = ctx.definition, ctx.app, ctx.actor, ctx.lang
    entity = built.entity(d["entity"])
    if allowed_scope(entity, who, "read") == "none":
        return None
    mode = d.get("filter", "mine")
    if mode == "team":
        # nobody reports to this user: not a manager, so no team section (rather than an empty one)
        if ctx.conn.execute(sa.select(users.c.id).where(users.c.manager_id == who.user_id).limit(1)).first() is None:
            return None
    card = d.get("card") or {}
    readable = {f.id: f for f in readable_fields(entity, who)}
    links = [fid for fid, f in readable.items() if f.type == "link"
             and fid in {card.get("subtitle"), *card.get("fields", ())}]
    filters = [query.Filter(*(k.partition("__")[0], k.partition("__")[2] or "eq", v), key=k)
               for k, v in (d.get("where") or {}).items()]
    try:
        page = query.list_records(ctx.conn, built, entity.id, who, filters=filters,
                                  sort=[x for x in d.get("sort") or ["-updated_at"]
                                        if x.lstrip("-") in readable or x.lstrip("-") in query.SYSTEM_FIELDS],
                                  per_page=d.get("limit", DEFAULT_LIMIT), expand=links,
                                  where=_owner_condition(entity, who, mode))
    except FieldErrors:  # a field this user may not read is named: the section is not for them
        return None
    names = user_names(ctx.conn, user_ids_in(entity, page.items))
    marks = {}
    if page.items:
        from keel.storage import highlights

        marks = highlights.marked(ctx.conn, who.user_id, built.id, entity.id, [i["id"] for i in page.items])
    cards = tuple(_card(built, entity, item, card, readable, names, marks, ctx.settings, lg) for item in page.items)
    if mode == "mine":
        cards = _with_trails(ctx, built, entity, cards, page.items)
    title = label_text(d.get("label"), lg) or entity.label.get(lg)
    more = url_for("web.record_list", app_id=built.id, entity_id=entity.id)
    return SectionView(title, cards, count=page.total, more_href=more,
                       empty_text=_empty_text(mode))


def label_text(label: Any, lg: str) -> str:
    """A label from a kind's JSON: {"zh", "en"} or one text for both."""
    if isinstance(label, Mapping):
        return str(label.get(lg) or label.get("zh") or label.get("en") or "")
    return str(label) if label else ""


def _with_trails(ctx, built, entity, cards: tuple[Card, ...], items) -> tuple[Card, ...]:
    """My records of a self-linked entity (a goal under a goal) show their chain of parents."""
    parent = next((f for f in entity.fields if f.type == "link" and f.entity == entity.id), None)
    if parent is None:
        return cards
    from dataclasses import replace

    from keel.errors import NotFound

    cache: dict[int, dict | None] = {}

    def get(rid):
        if rid not in cache:
            try:
                cache[rid] = query.get_record(ctx.conn, built, entity.id, rid, ctx.actor)
            except NotFound:  # a parent this user may not read stays out of the picture
                cache[rid] = None
        return cache[rid]

    out = []
    for c, item in zip(cards, items, strict=True):
        trail: list[tuple[str, str]] = []
        seen, up = {item["id"]}, item.get(parent.id)
        up = up.get("id") if isinstance(up, Mapping) else up
        while up is not None and up not in seen and len(trail) < MAX_CHAIN:
            seen.add(up)
            p = get(up)
            if p is None:
                break
            title = p.get(entity.title_field) if entity.title_field else None
            trail.insert(0, (str(title) if title not in (None, "") else f"#{p['id']}",
                             url_for("web.record_page", app_id=built.id, entity_id=entity.id, record_id=p["id"])))
            up = p.get(parent.id)
        out.append(replace(c, trail=tuple(trail)))
    return tuple(out)


def _empty_text(mode: str) -> str:
    from keel.i18n import translate

    return translate("Nothing of yours here yet.") if mode == "mine" else translate("Nothing here yet.")


def _text(built, f, item, names, fields_by_id) -> str:
    if f is None:
        return ""
    return formats.format_value(f, item.get(f.id), record=item, names=names, fields=fields_by_id)


def _card(built, entity, item, card, readable, names, marks, settings, lg) -> Card:
    fields_by_id = {f.id: f for f in entity.fields}
    title_id = card.get("title") or entity.title_field
    title = _text(built, readable.get(title_id), item, names, fields_by_id) if title_id else ""
    subtitle_id = card.get("subtitle")
    subtitle = _text(built, readable.get(subtitle_id), item, names, fields_by_id) if subtitle_id else None
    shown = tuple((label, text) for label, text in (
        (readable[fid].label.get(lg), _text(built, readable[fid], item, names, fields_by_id))
        for fid in card.get("fields", ()) if fid in readable) if text)  # an empty value is left out
    progress = text = None
    prog = card.get("progress")
    if prog and prog["value"] in readable and prog["target"] in readable:
        value, target = item.get(prog["value"]), item.get(prog["target"])
        if value is not None and target is not None:
            progress = _ratio(value, target)
            if progress is not None:
                text = (f'{formats.format_percent(progress, 0, points=True)} · '
                        f'{_text(built, readable[prog["value"]], item, names, fields_by_id)} / '
                        f'{_text(built, readable[prog["target"]], item, names, fields_by_id)}')
    status_id = card.get("status")
    badge = _text(built, readable.get(status_id), item, names, fields_by_id) if status_id in readable else None
    due_id = card.get("due")
    due = _text(built, readable.get(due_id), item, names, fields_by_id) if due_id in readable else None
    colour = _colour(card.get("colour") or (), _numbers(item, entity), settings, card.get("default_colour", "blue"))
    mark = marks.get((built.id, entity.id, item["id"]))
    return Card(title=title or f"#{item['id']}",
                href=url_for("web.record_page", app_id=built.id, entity_id=entity.id, record_id=item["id"]),
                subtitle=subtitle, fields=shown, progress=progress, progress_text=text,
                colour=colour if colour in COLOURS else "blue", badge=badge, due=due,
                highlight=mark_text(entity, mark, lg) if mark else None,
                ack={"app": built.id, "entity": entity.id, "record_id": item["id"]} if mark else None,
                key=(built.id, entity.id, item["id"]))


def default_definitions(built) -> list[dict]:
    """An app without workbench/ files: "mine" for every entity with an owner (its first fields shown)."""
    out = []
    for i, e in enumerate(built.definition.entities.values()):
        if not e.owner_field:
            continue
        shown = [f.id for f in e.fields if f.id not in (e.title_field, e.owner_field)
                 and f.type not in ("json", "table", "rich_text", "long_text")][:3]
        out.append({"id": f"mine_{e.id}", "entity": e.id, "filter": "mine", "order": 100 + i,
                    "card": {"title": e.title_field or "id", "fields": shown}})
    return out
