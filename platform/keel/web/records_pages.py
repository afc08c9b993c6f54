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
from keel.workflow.locks import edit_lock

ACTIONS = {"create": N_("created"), "update": N_("changed"), "delete": N_("deleted"),
           "restore": N_("restored")}
LIST_COLUMNS = 8  # the list shows the first readable fields; the record page shows them all
LOCKED = {"pending": N_("Under approval: cannot be changed"), "approved": N_("Approved: cannot be changed")}


@dataclass(frozen=True)
class TableCell:
    """A `table` value for a template: the columns' labels and a row of cells per row."""

    heads: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]


def shown(built, f, value: Any, names: Mapping[int, str], *, summary: bool = False) -> Cell | TableCell:
    """A value as the reader sees it: `cell`, except that a `table` is a table whose every cell is shown
    by `cell` as a field of its column's type (option labels, decimals, dates), or in a list its size."""
    if not f.columns or not isinstance(value, list) or not value:
        return cell(built, f, value, names)
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


@bp.get("/apps/<app_id>/<entity_id>")
def record_list(app_id: str, entity_id: str):
    built, who, lg = built_app(app_id), actor(), lang()
    entity = built.entity(entity_id)
    args = {k: v for k, v in request.args.items() if k != "lang"}
    fields = list(readable_fields(entity, who))
    arg_errors: list[str] = []
    try:
        filters, sort, page, per_page = query.parse_query_args(entity, who, args)
    except FieldErrors as e:  # a bad sort or filter in the URL: say so, show the unfiltered list
        arg_errors = [f"{k}: {m}" for k, ms in e.rendered().items() for m in ms]
        filters, sort, page, per_page = [], [], 1, 50
    with runtime().engine.connect() as conn:
        result = query.list_records(conn, built, entity_id, who, filters, sort, page, per_page,
                                    expand=_link_fields(entity, who))
        names = user_names(conn, user_ids_in(entity, result.items))
    columns = fields[:LIST_COLUMNS]
    current = sort[0] if sort else None

    def sort_href(field_id: str) -> str:
        descending = current is not None and current.field == field_id and not current.descending
        q = {k: v for k, v in args.items() if k not in ("sort", "page")}
        q["sort"] = ("-" if descending else "") + field_id
        return "?" + urlencode(q)

    def page_href(n: int) -> str:
        return "?" + urlencode({**{k: v for k, v in args.items() if k != "page"}, "page": n})

    rows = [{"id": item["id"], "href": url_for("web.record_page", app_id=app_id, entity_id=entity_id,
                                               record_id=item["id"]),
             "cells": [shown(built, f, item.get(f.id), names, summary=True) for f in columns]}
            for item in result.items]
    def sorted_as(field_id: str) -> str:
        if current is None or current.field != field_id:
            return ""
        return "desc" if current.descending else "asc"

    heads = [{"label": f.label.get(lg), "href": sort_href(f.id), "sorted": sorted_as(f.id)} for f in columns]
    forms = []
    if can_create(entity, who):
        forms = [(f.label.get(lg), url_for("web.form_page", app_id=app_id, form_id=f.id))
                 for f in built.definition.forms.values() if f.entity == entity_id]
    return render_template("records_list.html", app_id=app_id, entity=entity, title=entity.label.get(lg),
                           heads=heads, rows=rows, page=result, arg_errors=arg_errors,
                           prev_href=page_href(result.page - 1) if result.page > 1 else None,
                           next_href=page_href(result.page + 1) if result.page < result.pages else None,
                           forms=forms)


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
    values = [(f.label.get(lg), shown(built, f, item.get(f.id), names)) for f in fields]
    system = [(translate(label), _system_cell(name, item.get(name), names)) for name, label in (
        ("id", N_("ID")), ("row_version", N_("Version")), ("created_at", N_("Created at")),
        ("created_by", N_("Created by")), ("updated_at", N_("Updated at")), ("updated_by", N_("Updated by")))]
    labels = {f.id: f.label.get(lg) for f in fields}
    by_id = {f.id: f for f in fields}
    timeline = [_history_entry(built, h, labels, by_id, names) for h in reversed(history)]
    return render_template("record.html", app_id=built.id, entity=entity, item=item, values=values,
                           system=system, timeline=timeline, form=form, edit_ids=set(edit_ids),
                           title=f"{entity.label.get(lg)} #{item['id']}", notice=notice, locked=locked,
                           general_errors=list(general),
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


def _history_entry(built, h: dict, labels: dict, by_id: dict, names: dict) -> dict:
    def value_of(fid, value):
        return shown(built, by_id[fid], value, names) if fid in by_id else None

    who = h["user_id"]
    by = translate("system") if who is None else names.get(who, f"#{who}")
    return {"version": h["version"], "action": translate(ACTIONS.get(h["action"], h["action"])),
            "at": str(h["at"])[:19].replace("T", " "),
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
