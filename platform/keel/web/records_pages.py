"""Record list and record page. Both read through `storage.query` (row and field permissions applied
there); the edit form writes through `storage.records.update` with the row version the page was read
at, so a stale edit gets a clear 409 page instead of overwriting someone else's change."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, request, url_for

from keel import formats
from keel.errors import Conflict, FieldErrors
from keel.forms.build import attach_errors, collect, entity_form_class, prefill
from keel.forms.choices import fill_choices
from keel.i18n import translate
from keel.storage import query
from keel.storage.permissions import can_create, readable_fields, row_filter, writable_fields
from keel.web.pages import (
    N_,
    Cell,
    actor,
    bp,
    built_app,
    cell,
    lang,
    runtime,
    system_cell,
    user_ids_in,
    user_names,
)
from keel.web.workbench_model import mark_text
from keel.workflow.locks import edit_lock

ACTIONS = {"create": N_("created"), "update": N_("changed"), "delete": N_("deleted"),
           "restore": N_("restored")}
LOCKED = {"pending": N_("Under approval: cannot be changed"), "approved": N_("Approved: cannot be changed")}


@dataclass(frozen=True)
class TableCell:
    """A `table` value for a template: the columns' labels and a row of cells per row."""

    heads: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]


def shown(built, f, value: Any, names: Mapping[int, str], *, summary: bool = False,
          record: Mapping[str, Any] | None = None) -> Cell | TableCell:
    """A value as the reader sees it: `cell`, except that a `table` is a table whose every cell is shown
    by `cell` as a field of its column's type (option labels, decimals, dates), or in a list its size."""
    if not f.columns or not isinstance(value, list) or not value:
        return cell(built, f, value, names, record)
    if summary:
        # two msgids, not ngettext: Chinese has one form, and the catalog checks want plain entries
        return Cell(translate("1 row") if len(value) == 1 else translate("%(n)s rows", n=len(value)))
    rows = tuple(tuple(cell(built, c, row.get(c.id) if isinstance(row, Mapping) else None, names)
                       for c in f.columns) for row in value)
    return TableCell(tuple(c.label.get(lang()) for c in f.columns), rows)


def _system_cell(name: str, value: Any, names: Mapping[int, str]) -> Cell:
    if value is None and name in ("created_by", "updated_by"):
        return Cell(translate("System"))  # written by the platform itself (a job, a workflow, a sync)
    return system_cell(name, value, names)


def _link_fields(entity, who) -> list[str]:
    return [f.id for f in readable_fields(entity, who) if f.type == "link"]


PAGE_ARGS = ("lang", "view", "q")


@bp.get("/apps/<app_id>/<entity_id>")
def record_list(app_id: str, entity_id: str):
    """A list view (lists/*.json, or one made from the entity): its columns, default sort, filter controls
    and search box; the title column links to the record."""
    from keel.web import list_views

    built, who, lg = built_app(app_id), actor(), lang()
    entity = built.entity(entity_id)
    view = list_views.view_for(built, entity, request.args.get("view"))
    if view is None:
        abort(404)
    if not view.open_to(entity, who):
        abort(403)
    args = {k: v for k, v in request.args.items() if k not in PAGE_ARGS and v != ""}
    search_text = (request.args.get("q") or "").strip()
    arg_errors: list[str] = []
    try:
        filters, sort, page, per_page = query.parse_query_args(entity, who, {"per_page": view.per_page, **args})
    except FieldErrors as e:  # a bad sort or filter in the URL: say so, show the unfiltered list
        arg_errors = [f"{k}: {m}" for k, ms in e.rendered().items() for m in ms]
        filters, sort, page, per_page = [], [], 1, view.per_page
    fixed = [query.Filter(k.partition("__")[0], k.partition("__")[2] or "eq", v, k) for k, v in view.where.items()]
    readable_ids = {f.id for f in readable_fields(entity, who)} | set(query.SYSTEM_FIELDS)
    # the view's default order, on the fields this reader may see (a hidden field would be a 422)
    sort = sort or [s for s in view.sort if s.lstrip("-") in readable_ids]
    search = query.Search(search_text, view.search) if search_text and view.search else None
    columns = list_views.readable_columns(view, entity, who)
    with runtime().engine.connect() as conn:
        result = query.list_records(conn, built, entity_id, who, [*fixed, *filters], sort, page, per_page,
                                    expand=_link_fields(entity, who), search=search)
        names = user_names(conn, user_ids_in(entity, result.items))
        controls = filter_controls(conn, built, entity, view, who, request.args, lg)
        marks = _marks(conn, built, entity, who, [i["id"] for i in result.items])
    current = query.normalise_sort(entity, who, sort)[0] if sort else None
    keep = {k: v for k, v in request.args.items() if k != "lang" and v != ""}

    def sort_href(field_id: str) -> str:
        descending = current is not None and current.field == field_id and not current.descending
        q = {k: v for k, v in keep.items() if k not in ("sort", "page")}
        q["sort"] = ("-" if descending else "") + field_id
        return "?" + urlencode(q)

    def page_href(n: int) -> str:
        return "?" + urlencode({**{k: v for k, v in keep.items() if k != "page"}, "page": n})

    def sorted_as(field_id: str) -> str:
        if current is None or current.field != field_id:
            return ""
        return "desc" if current.descending else "asc"

    title_id = entity.title_field
    rows = []
    for item in result.items:
        href = url_for("web.record_page", app_id=app_id, entity_id=entity_id, record_id=item["id"])
        cells = []
        for f in columns:
            c = shown(built, f, item.get(f.id), names, summary=True, record=item)
            if f.id == title_id and isinstance(c, Cell):
                c = Cell(c.text or f"#{item['id']}", href=href)
            cells.append((f.label.get(lg), c))
        mark = marks.get((built.id, entity.id, item["id"]))
        rows.append({"id": item["id"], "href": href, "cells": cells,
                     "changed": mark_text(entity, mark, lg) if mark else None})
    heads = [{"label": f.label.get(lg), "href": sort_href(f.id), "sorted": sorted_as(f.id),
              "numeric": f.type in ("integer", "decimal", "money", "percent")} for f in columns]
    forms = []
    if can_create(entity, who):
        forms = [(f.label.get(lg), url_for("web.form_page", app_id=app_id, form_id=f.id))
                 for f in built.definition.forms.values() if f.entity == entity_id]
    others = [(v.title(entity, lg), "?" + urlencode({"view": v.id}), v.id == view.id)
              for v in list_views.entity_views(built, entity_id) if v.open_to(entity, who)]
    return render_template("records_list.html", app_id=app_id, entity=entity, title=view.title(entity, lg),
                           heads=heads, rows=rows, page=result, arg_errors=arg_errors, view=view,
                           show_id=not title_id or title_id not in {f.id for f in columns},
                           search_text=search_text, controls=controls, views=others if len(others) > 1 else [],
                           prev_href=page_href(result.page - 1) if result.page > 1 else None,
                           next_href=page_href(result.page + 1) if result.page < result.pages else None,
                           forms=forms)


def _marks(conn, built, entity, who, record_ids) -> dict:
    """The viewer's open yellow marks among these records (changed since they last looked)."""
    from keel.storage import highlights

    if not record_ids or who.user_id is None:
        return {}
    return highlights.marked(conn, who.user_id, built.id, entity.id, record_ids)


def filter_controls(conn, built, entity, view, who, args, lg: str) -> list[dict]:
    """One control per filter the view offers: options for a select or yes/no, a type-ahead for a
    person or a link (its current choice shown by name), from/to for a date."""
    readable = {f.id: f for f in readable_fields(entity, who)}
    out = []
    for fid in view.filters:
        f = readable.get(fid)
        if f is None:
            continue
        control = {"id": fid, "label": f.label.get(lg), "type": f.type, "value": args.get(fid, "")}
        if f.type in ("select", "multi_select"):
            key = fid if f.type == "select" else f"{fid}__contains"
            control.update(name=key, value=args.get(key, ""),
                           options=[(o.id, o.label.get(lg)) for o in f.options])
        elif f.type == "boolean":
            control.update(name=fid, options=[("true", translate("Yes")), ("false", translate("No"))])
        elif f.type in ("user", "link"):
            value = args.get(fid, "")
            label = ""
            if value.isdigit():
                if f.type == "user":
                    label = user_names(conn, [int(value)]).get(int(value), f"#{value}")
                else:
                    label = _record_title(conn, built, f.entity, int(value), who)
            picker = url_for("pickers.users_page") if f.type == "user" else \
                url_for("pickers.records_page", app_id=built.id, entity_id=f.entity)
            control.update(name=fid, picker=picker, options=[(value, label)] if value else [])
        elif f.type in ("date", "datetime"):
            control.update(name=f"{fid}__gte", name_to=f"{fid}__lte", value=args.get(f"{fid}__gte", ""),
                           value_to=args.get(f"{fid}__lte", ""))
        else:
            control.update(name=f"{fid}__contains", value=args.get(f"{fid}__contains", ""))
        out.append(control)
    return out


def _record_title(conn, built, entity_id: str, record_id: int, who) -> str:
    from keel.errors import NotFound

    try:
        item = query.get_record(conn, built, entity_id, record_id, who)
    except NotFound:
        return f"#{record_id}"
    target = built.entity(entity_id)
    value = item.get(target.title_field) if target.title_field else None
    return str(value) if value not in (None, "") else f"#{record_id}"


def _edit_ids(conn, built, entity_id: str, record_id, who) -> list[str]:
    """The fields this user may change on this record: none unless the row is in their update scope
    (the write path checks again; this only decides whether to show the form). A field only a workflow
    changes (`"changed_by": "workflow"`) is shown with the values, never as an input."""
    entity, table = built.entity(entity_id), built.table(entity_id)
    cond = row_filter(table, entity, who, "update")
    if cond is None:
        return []
    rid = query.record_id_of(record_id)
    found = conn.execute(sa.select(table.c.id).where(table.c.id == rid, cond)).first()
    return [f.id for f in writable_fields(entity, who) if f.changed_by != "workflow"] if found is not None else []


def _lock_line(conn, built, entity_id: str, record_id: int, who) -> str | None:
    """Why a workflow keeps this record from being changed now, in one line; None when it does not."""
    lock = edit_lock(conn, built, entity_id, record_id, who)
    return None if lock is None else translate(LOCKED.get(lock.status, LOCKED["pending"]))


def _render_record(built, entity_id: str, record_id, who, form=None, status: int = 200, notice=None,
                   general=()):
    lg = lang()
    entity = built.entity(entity_id)
    with runtime().engine.connect() as conn:
        item = query.get_record(conn, built, entity_id, record_id, who, expand=_link_fields(entity, who))
        history = query.record_history(conn, built, entity_id, record_id, who)
        ids = user_ids_in(entity, [item]) | {h["user_id"] for h in history if isinstance(h["user_id"], int)}
        names = user_names(conn, ids)
        edit_ids = _edit_ids(conn, built, entity_id, record_id, who)
        mark = _marks(conn, built, entity, who, [item["id"]]).get((built.id, entity_id, item["id"]))
        locked = _lock_line(conn, built, entity_id, item["id"], who) if edit_ids else None
        if locked and form is None:  # nothing to offer; a posted form is kept so the typed text is not lost
            edit_ids = []
        if edit_ids and form is None:
            form = entity_form_class(built, entity_id, lg)()
            raw = dict(item)
            for fid in _link_fields(entity, who):  # the form takes ids, not the expanded {id, title}
                if isinstance(raw.get(fid), dict):
                    raw[fid] = raw[fid]["id"]
            prefill(form, raw)
            form.row_version.data = str(item["row_version"])
        if form is not None:
            fill_choices(conn, built, form, who, item)
    fields = readable_fields(entity, who)
    values = [(f.label.get(lg), shown(built, f, item.get(f.id), names, record=item)) for f in fields]
    system = [(translate(label), _system_cell(name, item.get(name), names)) for name, label in (
        ("id", N_("ID")), ("row_version", N_("Version")), ("created_at", N_("Created at")),
        ("created_by", N_("Created by")), ("updated_at", N_("Updated at")), ("updated_by", N_("Updated by")))]
    labels = {f.id: f.label.get(lg) for f in fields}
    by_id = {f.id: f for f in fields}
    timeline = [_history_entry(built, h, labels, by_id, names, item) for h in reversed(history)]
    return render_template("record.html", app_id=built.id, entity=entity, item=item, values=values,
                           system=system, timeline=timeline, form=form, edit_ids=set(edit_ids),
                           title=f"{entity.label.get(lg)} #{item['id']}", notice=notice, locked=locked,
                           general_errors=list(general),
                           changed=mark_text(entity, mark, lg) if mark else None,
                           list_href=url_for("web.record_list", app_id=built.id, entity_id=entity_id)), status


def _via(by: str, via: str | None) -> str:
    """Who wrote a version, with what wrote it for them ("job:APP/JOB#RUN", keel.actor.job_via)."""
    if not via:
        return by
    kind, _, rest = via.partition(":")
    name, sep, number = rest.rpartition("#")
    if kind == "job" and sep:
        return translate("%(who)s, via job %(job)s run #%(run)s", who=by, job=name, run=number)
    if kind == "workflow" and sep:
        return translate("%(who)s, via workflow %(workflow)s request #%(n)s", who=by, workflow=name, n=number)
    return translate("%(who)s, via %(via)s", who=by, via=via)


def _history_entry(built, h: dict, labels: dict, by_id: dict, names: dict, item: dict) -> dict:
    def value_of(fid, value):
        # the record's current values give a past value its unit (a goal's target in ¥ or 个)
        return shown(built, by_id[fid], value, names, record=item) if fid in by_id else None

    who = h["user_id"]
    by = translate("system") if who is None else names.get(who, f"#{who}")
    return {"version": h["version"], "action": translate(ACTIONS.get(h["action"], h["action"])),
            "at": formats.format_datetime(h["at"]),
            "who": _via(by, h.get("via")),
            "changes": [(labels.get(k, k), value_of(k, v[0]), value_of(k, v[1]))
                        for k, v in h["changes"].items()]}


@bp.get("/apps/<app_id>/<entity_id>/<record_id>")
def record_page(app_id: str, entity_id: str, record_id: str):
    built = built_app(app_id)
    return _render_record(built, entity_id, record_id, actor())


@bp.post("/apps/<app_id>/<entity_id>/<record_id>")
def record_update(app_id: str, entity_id: str, record_id: str):
    from keel.storage import records

    built, who = built_app(app_id), actor()
    form = entity_form_class(built, entity_id, lang())()
    if not form.validate():  # CSRF only
        abort(400)
    with runtime().engine.connect() as conn:
        edit_ids = _edit_ids(conn, built, entity_id, record_id, who)
    try:
        expected = int(form.row_version.data or "")
    except ValueError:
        abort(400)
    values = collect(form, edit_ids)
    try:
        with runtime().engine.begin() as conn:
            record = records.update(conn, built, entity_id, record_id, values, who, expected)
    except Conflict:
        # Keep what the user typed, show the current values above it, and base the next save on the
        # current version: saving again is then a deliberate choice, made after seeing the change.
        with runtime().engine.connect() as conn:
            current = query.get_record(conn, built, entity_id, record_id, who)
            locked = _lock_line(conn, built, entity_id, current["id"], who)
        form.row_version.data = str(current["row_version"])
        notice = locked or translate("Someone else changed this record after you opened it. Your changes "
                                     "were not saved: check the current values and save again.")
        return _render_record(built, entity_id, record_id, who, form, 409, notice)
    except FieldErrors as e:
        labels = {f.id: f.label.get(lang()) for f in built.entity(entity_id).fields}
        general = attach_errors(form, e.errors, labels)
        return _render_record(built, entity_id, record_id, who, form, 422, general=general)
    flash(translate("Saved."), "success")
    return redirect(url_for("web.record_page", app_id=app_id, entity_id=entity_id, record_id=record["id"]))
