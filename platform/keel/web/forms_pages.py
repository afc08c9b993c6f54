"""The generated form page: GET renders the form of a definition, POST submits it through `submit_form`
(the same path as the API) and shows every message next to its field, in the user's language."""
from __future__ import annotations

import re

from flask import abort, flash, redirect, render_template, request, url_for

from keel.errors import FieldErrors, KeelError, NotFound, PermissionDenied
from keel.forms.build import attach_errors, collect, form_class, form_field
from keel.forms.choices import fill_choices
from keel.forms.schema import form_def
from keel.forms.submit import check_roles, condition_inputs, submit_form, visible_fields
from keel.i18n import translate
from keel.storage import query
from keel.storage.permissions import can_create
from keel.web.pages import actor, bp, built_app, lang, runtime


def _check_may_use(built, form_id: str, who) -> None:
    form = form_def(built, form_id)
    if form.roles is not None:
        check_roles(built, form_id, who)
    elif not can_create(built.entity(form.entity), who):
        raise PermissionDenied(f"form '{form_id}' is not open to this user")


def _render(built, form_id: str, form, values: dict, status: int = 200, general=()):
    fdef = form_def(built, form_id)
    shown = visible_fields(built, form_id, values)
    depends = sorted(condition_inputs(built, form_id))
    return render_template(
        "form.html", app_id=built.id, form_def=fdef, form=form, title=fdef.label.get(lang()),
        submit_label=(fdef.submit_label.get(lang()) if fdef.submit_label else translate("Submit")),
        shown=shown, has_conditions=bool(depends), depends=" ".join(depends),
        general_errors=list(general)), status


def _prefilled_links(conn, built, form_id: str, who) -> dict[str, int]:
    """`?<link field>=<id>` preselects a record in one of the form's link fields (e.g. the goal a revision
    request is about, from the goal's page). Only link fields, and only a record the user can read: any
    other id is ignored, so the form never reveals whether a record exists."""
    fdef = form_def(built, form_id)
    entity = built.entity(fdef.entity)
    out: dict[str, int] = {}
    for ff in fdef.fields:
        f, raw = entity.field(ff.field), request.args.get(ff.field, "")
        if f is None or f.type != "link" or not re.fullmatch(r"[0-9]{1,18}", raw):
            continue
        try:
            query.get_record(conn, built, f.entity, int(raw), who)
        except KeelError:
            continue
        out[f.id] = int(raw)
    return out


@bp.route("/apps/<app_id>/forms/<form_id>", methods=["GET", "POST"])
def form_page(app_id: str, form_id: str):
    built, who = built_app(app_id), actor()
    _check_may_use(built, form_id, who)
    form = form_class(built, form_id, lang())()
    engine = runtime().engine
    if request.method == "GET":
        with engine.connect() as conn:
            chosen = _prefilled_links(conn, built, form_id, who)
            fill_choices(conn, built, form, who, chosen)
        for fid, rid in chosen.items():
            if form_field(form, fid) is not None:
                form_field(form, fid).data = str(rid)
        return _render(built, form_id, form, {})
    if not form.validate():  # only the CSRF token is validated by WTForms
        abort(400)
    values = collect(form)
    submitted = {k: v for k, v in values.items() if v is not None}
    if request.form.get("_refresh"):
        # "Update the form": show or hide conditional fields for the values so far; nothing is saved.
        with engine.connect() as conn:
            fill_choices(conn, built, form, who, values)
        return _render(built, form_id, form, submitted)
    try:
        with engine.begin() as conn:
            record = submit_form(conn, built, form_id, submitted, who)
    except FieldErrors as e:
        labels = {f.id: f.label.get(lang()) for f in built.entity(form_def(built, form_id).entity).fields}
        general = attach_errors(form, e.errors, labels)
        with engine.connect() as conn:
            fill_choices(conn, built, form, who, values)
        return _render(built, form_id, form, submitted, 422, general)
    entity_id = form_def(built, form_id).entity
    flash(translate("Saved."), "success")
    with engine.connect() as conn:
        try:
            query.get_record(conn, built, entity_id, record["id"], who)
        except NotFound:  # submitted, but not readable by its author (e.g. a request to someone else)
            return redirect(url_for("web.workbench"))
    return redirect(url_for("web.record_page", app_id=app_id, entity_id=entity_id, record_id=record["id"]))
