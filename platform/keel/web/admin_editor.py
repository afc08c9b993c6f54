"""The definition editor's forms: fields (add, relabel, reorder, make required, retire), settings,
approvers of each workflow step, job schedules and dashboard widgets — no JSON text boxes needed, though
a widget is edited as the JSON object it is.

Every form edits a copy of the current bundle and leads to the same review page: the changes by id in the
reader's language, their effect on running requests, the schema steps and every definition error. Only
the review page's confirmation applies (through `keel.apply`, like `keel app apply`), and only if nobody
applied another version in between."""
from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import Length, Optional

from keel.definitions.model import thaw
from keel.errors import NotFound
from keel.i18n import translate
from keel.web import admin_diff
from keel.web.admin_org import _choices
from keel.web.admin_pages import _admin
from keel.web.pages import bp, built_app, lang, runtime

APPROVER_RULES = ("manager_of", "department", "role", "user", "fixed")
STEP_MODES = ("single", "sequential", "all", "any")
MAX_JSON = 100_000


class ReviewForm(FlaskForm):
    bundle = HiddenField()
    base_version = HiddenField()
    note = StringField(validators=[Optional(), Length(max=500)])


def _current(app_id: str) -> tuple[Any, dict]:
    built = built_app(app_id)  # NotFound → 404
    return built, thaw(built.definition.bundle)


def _form(fields: Mapping[str, Any]) -> FlaskForm:
    """A Flask-WTF form (CSRF included) with the given fields, built for this request."""
    cls = type("EditForm", (FlaskForm,), dict(fields))
    return cls()


def _label_of(doc: Mapping[str, Any], key: str = "label") -> tuple[str, str]:
    value = doc.get(key)
    if isinstance(value, Mapping):
        return value.get("zh", ""), value.get("en", "")
    return (value or "", value or "") if isinstance(value, str) else ("", "")


def _set_label(doc: dict, zh: str, en: str, key: str = "label") -> None:
    zh, en = (zh or "").strip(), (en or "").strip()
    if (zh, en) == _label_of(doc, key):
        return  # unchanged: keep the way it was written
    if zh or en:
        doc[key] = {"zh": zh or en, "en": en or zh}
    else:
        doc.pop(key, None)


def _json_value(text: str) -> Any:
    """A setting as typed: JSON when it parses (0.2, true, {"a": 1}), otherwise the text itself."""
    text = (text or "").strip()
    try:
        return json.loads(text)
    except ValueError:
        return text


def _render_edit(app_id: str, built, form: FlaskForm, title: str, groups: list[dict], action: str,
                 status: int = 200, help_text: str = ""):
    return render_template("admin/edit.html", app_id=app_id, built=built, form=form, title=title, groups=groups,
                           action=action, help_text=help_text), status


# ---- review and apply ----------------------------------------------------------------------------

def review(app_id: str, new_bundle: Mapping[str, Any], note: str = "", status: int = 200):
    """The review page for a proposed bundle: what changes and what it does; nothing is applied."""
    from keel.apply import diff_app
    from keel.definitions.errors import DefinitionErrors
    from keel.definitions.loader import load_bundle

    built, current = _current(app_id)
    errors, steps, refusals = [], [], []
    try:
        app_def = load_bundle(new_bundle, runtime().registries)
    except DefinitionErrors as e:
        errors = [str(x) for x in e.errors]
        status = 422
    else:
        if app_def.id != app_id:
            errors, status = [translate("The app id must stay %(id)s.", id=app_id)], 422
        else:
            plan = diff_app(runtime().engine, app_def).plan
            steps, refusals = plan.descriptions(), list(plan.refusals)
            status = 409 if refusals else status
    described = admin_diff.describe(current, new_bundle, lang())
    with runtime().engine.connect() as conn:
        effects = admin_diff.effects(conn, app_id, current, new_bundle, built.version + 1, lang())
    form = ReviewForm(bundle=json.dumps(new_bundle, ensure_ascii=False), base_version=str(built.version),
                      note=note)
    return render_template("admin/review.html", app_id=app_id, built=built, title=translate("Review the change"),
                           changes=described, effects=effects, errors=errors, steps=steps, refusals=refusals,
                           form=form), status


@bp.post("/admin/apps/<app_id>/apply")
def admin_apply_reviewed(app_id: str):
    """Apply a reviewed bundle, unless another version was applied since the review."""
    from keel.apply import apply_app
    from keel.definitions.errors import DefinitionErrors
    from keel.definitions.loader import load_bundle, parse_json
    from keel.storage.sync import SyncRefused

    who = _admin()
    built, _ = _current(app_id)
    form = ReviewForm()
    if not form.validate_on_submit() or len(form.bundle.data or "") > MAX_JSON * 20:
        abort(400)
    try:
        bundle = parse_json((form.bundle.data or "").encode("utf-8"))
    except ValueError:
        abort(400)
    if not isinstance(bundle, dict):
        abort(400)
    if form.base_version.data != str(built.version):
        flash(translate("Version %(v)s was applied since you reviewed this change; review it again.",
                        v=built.version), "error")
        return review(app_id, bundle, form.note.data or "", 409)
    try:
        app_def = load_bundle(bundle, runtime().registries)
        if app_def.id != app_id:
            abort(400)
        result = apply_app(runtime().engine, app_def, who, note=(form.note.data or "")[:500])
    except (DefinitionErrors, SyncRefused):
        return review(app_id, bundle, form.note.data or "", 422)
    if result.changed:
        flash(translate("Applied as version %(v)s.", v=result.version), "success")
    else:
        flash(translate("Nothing changed: the definition equals version %(v)s.", v=result.version), "info")
    return redirect(url_for("web.admin_app", app_id=app_id))


def _edit_route(path: str, endpoint: str, build: Callable, apply_edit: Callable, title: Callable) -> None:
    """GET shows the form built from the current bundle; POST applies the edit to a copy and shows the
    review page (or the form again, 422, when the input itself is unusable)."""
    def view(app_id: str, **kw):
        _admin()
        built, current = _current(app_id)
        fields, groups = build(current, **kw)
        form = _form(fields)
        if request.method == "POST":
            if not form.validate_on_submit():
                return _render_edit(app_id, built, form, title(current, **kw), groups, request.path, 422)
            new = copy.deepcopy(current)
            problems = apply_edit(new, form, **kw)
            if problems:
                for p in problems:
                    flash(p, "error")
                return _render_edit(app_id, built, form, title(current, **kw), groups, request.path, 422)
            return review(app_id, new, getattr(form, "note", None) and form.note.data or "")
        return _render_edit(app_id, built, form, title(current, **kw), groups, request.path)

    view.__name__ = endpoint
    bp.add_url_rule(path, endpoint=endpoint, view_func=view, methods=["GET", "POST"])


def _doc(bundle: Mapping[str, Any], path: str) -> dict:
    doc = bundle.get(path)
    if not isinstance(doc, dict):
        raise NotFound(f"no {path} in this app")
    return doc


# ---- fields --------------------------------------------------------------------------------------

def _fields_build(bundle: Mapping[str, Any], entity_id: str):
    doc = _doc(bundle, f"entities/{entity_id}.json")
    types = sorted(runtime().registries.field_types)
    entities = sorted(p[len("entities/"):-5] for p in bundle if p.startswith("entities/"))
    fields: dict[str, Any] = {}
    rows = []
    for n, f in enumerate(doc.get("fields", [])):
        zh, en = _label_of(f)
        key = f"f{n}"
        fields[f"{key}_zh"] = StringField(default=zh, validators=[Length(max=200)])
        fields[f"{key}_en"] = StringField(default=en, validators=[Length(max=200)])
        fields[f"{key}_pos"] = IntegerField(default=(n + 1) * 10, validators=[Optional()])
        fields[f"{key}_required"] = BooleanField(default=bool(f.get("required")))
        fields[f"{key}_retire"] = BooleanField(default=False)
        rows.append({"head": f"{f.get('id')} ({f.get('type')})",
                     "cells": [f"{key}_zh", f"{key}_en", f"{key}_pos", f"{key}_required", f"{key}_retire"]})
    fields.update({
        "new_id": StringField(validators=[Optional(), Length(max=64)]),
        "new_type": SelectField(choices=_choices([(t, t) for t in types]), default="text"),
        "new_zh": StringField(validators=[Optional(), Length(max=200)]),
        "new_en": StringField(validators=[Optional(), Length(max=200)]),
        "new_required": BooleanField(),
        "new_options": TextAreaField(validators=[Optional(), Length(max=10_000)]),
        "new_entity": SelectField(choices=_choices([("", "—")] + [(e, e) for e in entities]), default=""),
        "new_to_forms": BooleanField(default=True),
        "note": StringField(validators=[Optional(), Length(max=500)]),
    })
    groups = [{"title": translate("Fields"),
               "columns": [translate("Field"), translate("Name (Chinese)"), translate("Name (English)"),
                           translate("Position"), translate("Required"), translate("Retire")], "rows": rows},
              {"title": translate("Add a field"), "pairs": [
                  (translate("Id"), "new_id"), (translate("Type"), "new_type"),
                  (translate("Name (Chinese)"), "new_zh"), (translate("Name (English)"), "new_en"),
                  (translate("Required"), "new_required"),
                  (translate("Options (select fields; one per line: id | 中文 | English)"), "new_options"),
                  (translate("Linked entity (link fields)"), "new_entity"),
                  (translate("Add it to the entity's forms"), "new_to_forms")]},
              {"pairs": [(translate("Note"), "note")]}]
    return fields, groups


def _options(text: str) -> list[dict]:
    out = []
    for line in (text or "").splitlines():
        parts = [p.strip() for p in line.split("|")]
        if parts and parts[0]:
            zh = parts[1] if len(parts) > 1 and parts[1] else parts[0]
            en = parts[2] if len(parts) > 2 and parts[2] else zh
            out.append({"id": parts[0], "zh": zh, "en": en})
    return out


def _form_field_lists(form_doc: dict) -> list[list]:
    if isinstance(form_doc.get("fields"), list):
        return [form_doc["fields"]]
    return [s["fields"] for s in form_doc.get("sections", []) if isinstance(s, dict) and isinstance(s.get("fields"), list)]


def _fields_apply(bundle: dict, form: FlaskForm, entity_id: str) -> list[str]:
    doc = bundle[f"entities/{entity_id}.json"]
    kept, retired = [], set()
    for n, f in enumerate(doc.get("fields", [])):
        key = f"f{n}"
        if form[f"{key}_retire"].data:
            retired.add(f.get("id"))
            continue
        _set_label(f, form[f"{key}_zh"].data, form[f"{key}_en"].data)
        if bool(form[f"{key}_required"].data) != bool(f.get("required")):
            if form[f"{key}_required"].data:
                f["required"] = True
            else:
                f.pop("required", None)
        position = form[f"{key}_pos"].data
        kept.append((position if position is not None else (n + 1) * 10, n, f))
    new_id = (form["new_id"].data or "").strip()
    if new_id:
        field: dict[str, Any] = {"id": new_id, "type": form["new_type"].data}
        _set_label(field, form["new_zh"].data, form["new_en"].data)
        if form["new_required"].data:
            field["required"] = True
        options = _options(form["new_options"].data)
        if options:
            field["options"] = options
        if form["new_entity"].data:
            field["entity"] = form["new_entity"].data
        kept.append((10 ** 9, len(kept), field))
    doc["fields"] = [f for _, _, f in sorted(kept, key=lambda t: (t[0], t[1]))]
    for path, form_doc in bundle.items():
        if path.startswith("forms/") and isinstance(form_doc, dict) and form_doc.get("entity") == entity_id:
            lists = _form_field_lists(form_doc)
            for items in lists:
                items[:] = [i for i in items if not (isinstance(i, dict) and i.get("field") in retired)]
            if new_id and form["new_to_forms"].data and lists:
                lists[-1].append({"field": new_id})
    return []


_edit_route("/admin/apps/<app_id>/entities/<entity_id>/fields", "admin_edit_fields", _fields_build, _fields_apply,
            lambda b, entity_id: translate("Fields of %(entity)s", entity=entity_id))


# ---- settings ------------------------------------------------------------------------------------

def _settings_build(bundle: Mapping[str, Any]):
    settings = _doc(bundle, "app.json").get("settings") or {}
    fields: dict[str, Any] = {}
    rows = []
    for n, (key, value) in enumerate(settings.items()):
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        fields[f"s{n}_value"] = StringField(default=text, validators=[Length(max=MAX_JSON)])
        fields[f"s{n}_remove"] = BooleanField()
        rows.append({"head": key, "cells": [f"s{n}_value", f"s{n}_remove"]})
    fields.update({"new_key": StringField(validators=[Optional(), Length(max=64)]),
                   "new_value": StringField(validators=[Optional(), Length(max=MAX_JSON)]),
                   "note": StringField(validators=[Optional(), Length(max=500)])})
    groups = [{"title": translate("Settings"), "columns": [translate("Setting"), translate("Value"),
                                                          translate("Remove")], "rows": rows},
              {"title": translate("Add a setting"), "pairs": [(translate("Name"), "new_key"),
                                                              (translate("Value"), "new_value")]},
              {"pairs": [(translate("Note"), "note")]}]
    return fields, groups


def _settings_apply(bundle: dict, form: FlaskForm) -> list[str]:
    app = bundle["app.json"]
    settings = app.get("settings") or {}
    new: dict[str, Any] = {}
    for n, (key, value) in enumerate(settings.items()):
        if form[f"s{n}_remove"].data:
            continue
        typed = form[f"s{n}_value"].data
        old_text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        new[key] = value if typed == old_text else _json_value(typed)
    key = (form["new_key"].data or "").strip()
    if key:
        if key in new:
            return [translate("The setting %(key)s exists already.", key=key)]
        new[key] = _json_value(form["new_value"].data)
    if new:
        app["settings"] = new
    else:
        app.pop("settings", None)
    return []


_edit_route("/admin/apps/<app_id>/settings", "admin_edit_settings", _settings_build, _settings_apply,
            lambda b: translate("Settings"))


# ---- approvers -----------------------------------------------------------------------------------

_TARGET_KEYS = {"manager_of": "of", "department": "code", "role": "role", "user": "field", "fixed": "username"}


def _approvers_build(bundle: Mapping[str, Any], workflow_id: str):
    doc = _doc(bundle, f"workflows/{workflow_id}.json")
    rule_choices = [(r, r) for r in APPROVER_RULES]
    fields: dict[str, Any] = {"note": StringField(validators=[Optional(), Length(max=500)])}
    groups = []
    for s, step in enumerate(doc.get("steps", [])):
        rows = []
        fields[f"st{s}_mode"] = SelectField(choices=_choices([(m, m) for m in STEP_MODES]),
                                            default=step.get("mode", "single"))
        for a, rule in enumerate(step.get("approvers", [])):
            key = f"st{s}_a{a}"
            kind = rule.get("rule") if isinstance(rule, Mapping) else None
            known = kind in _TARGET_KEYS
            fields[f"{key}_rule"] = SelectField(choices=_choices(rule_choices if known else [(kind, kind)]),
                                                default=kind)
            fields[f"{key}_target"] = StringField(default=str(rule.get(_TARGET_KEYS.get(kind, ""), "")) if known else
                                                  json.dumps(rule, ensure_ascii=False), validators=[Length(max=200)])
            fields[f"{key}_pick"] = SelectField(choices=_choices([("head", "head"), ("all", "all")]),
                                                default=rule.get("pick", "head") if known else "head")
            fields[f"{key}_remove"] = BooleanField()
            rows.append({"head": admin_diff.approver_text(rule),
                         "cells": [f"{key}_rule", f"{key}_target", f"{key}_pick", f"{key}_remove"]})
        key = f"st{s}_new"
        fields[f"{key}_rule"] = SelectField(choices=_choices([("", "—")] + rule_choices), default="")
        fields[f"{key}_target"] = StringField(validators=[Optional(), Length(max=200)])
        fields[f"{key}_pick"] = SelectField(choices=_choices([("head", "head"), ("all", "all")]),
                                            default="head")
        rows.append({"head": translate("Add an approver"), "cells": [f"{key}_rule", f"{key}_target", f"{key}_pick"]})
        zh, en = _label_of(step)
        name = (en if lang() == "en" else zh) or step.get("id")
        groups.append({"title": translate("Step %(step)s", step=f"{name} ({step.get('id')})"),
                       "pairs": [(translate("Mode"), f"st{s}_mode")],
                       "columns": [translate("Approver"), translate("Rule"),
                                   translate("Who (submitter or a field; department code; role; user field; "
                                             "username)"), translate("Department: head or all"),
                                   translate("Remove")], "rows": rows})
    groups.append({"pairs": [(translate("Note"), "note")]})
    return fields, groups


def _rule(kind: str, target: str, pick: str, base: Mapping[str, Any] | None = None) -> dict:
    rule = {k: v for k, v in (base or {}).items() if k not in ("rule", *_TARGET_KEYS.values(), "pick")}
    rule["rule"] = kind
    target = (target or "").strip()
    if kind == "manager_of":
        rule["of"] = target or "submitter"
    elif kind == "department":
        rule["code"], rule["pick"] = target, pick or "head"
    elif target:
        rule[_TARGET_KEYS[kind]] = target
    return rule


def _approvers_apply(bundle: dict, form: FlaskForm, workflow_id: str) -> list[str]:
    doc = bundle[f"workflows/{workflow_id}.json"]
    for s, step in enumerate(doc.get("steps", [])):
        mode = form[f"st{s}_mode"].data
        if mode != step.get("mode", "single"):
            step["mode"] = mode
        rules = []
        for a, rule in enumerate(step.get("approvers", [])):
            key = f"st{s}_a{a}"
            if form[f"{key}_remove"].data:
                continue
            kind = rule.get("rule") if isinstance(rule, Mapping) else None
            if kind not in _TARGET_KEYS:
                rules.append(rule)  # a plugin's rule: kept as written
                continue
            new = _rule(form[f"{key}_rule"].data, form[f"{key}_target"].data, form[f"{key}_pick"].data, rule)
            rules.append(rule if new == rule else new)
        kind = form[f"st{s}_new_rule"].data
        if kind in _TARGET_KEYS:
            rules.append(_rule(kind, form[f"st{s}_new_target"].data, form[f"st{s}_new_pick"].data))
        step["approvers"] = rules
    return []


_edit_route("/admin/apps/<app_id>/workflows/<workflow_id>/approvers", "admin_edit_approvers", _approvers_build,
            _approvers_apply, lambda b, workflow_id: translate("Approvers of %(workflow)s", workflow=workflow_id))


# ---- schedules -----------------------------------------------------------------------------------

def _jobs(bundle: Mapping[str, Any]) -> list[tuple[str, dict]]:
    return [(p, d) for p, d in sorted(bundle.items()) if p.startswith("jobs/") and isinstance(d, dict)]


def _schedules_build(bundle: Mapping[str, Any]):
    fields: dict[str, Any] = {"note": StringField(validators=[Optional(), Length(max=500)])}
    rows = []
    for n, (_, job) in enumerate(_jobs(bundle)):
        fields[f"j{n}_cron"] = StringField(default=job.get("cron", ""), validators=[Length(max=200)])
        fields[f"j{n}_tz"] = StringField(default=job.get("timezone", ""), validators=[Length(max=64)])
        fields[f"j{n}_enabled"] = BooleanField(default=job.get("enabled", True))
        rows.append({"head": f"{job.get('id')} ({job.get('type')})",
                     "cells": [f"j{n}_cron", f"j{n}_tz", f"j{n}_enabled"]})
    groups = [{"title": translate("Schedules"),
               "columns": [translate("Job"), translate("Schedule (cron: minute hour day month weekday)"),
                           translate("Time zone"), translate("Enabled")], "rows": rows},
              {"pairs": [(translate("Note"), "note")]}]
    return fields, groups


def _schedules_apply(bundle: dict, form: FlaskForm) -> list[str]:
    for n, (path, job) in enumerate(_jobs(bundle)):
        for key, field in (("cron", f"j{n}_cron"), ("timezone", f"j{n}_tz")):
            value = (form[field].data or "").strip()
            if value != job.get(key, ""):
                if value:
                    job[key] = value
                else:
                    job.pop(key, None)
        enabled = bool(form[f"j{n}_enabled"].data)
        if enabled != job.get("enabled", True):
            job["enabled"] = enabled
        bundle[path] = job
    return []


_edit_route("/admin/apps/<app_id>/schedules", "admin_edit_schedules", _schedules_build, _schedules_apply,
            lambda b: translate("Schedules"))


# ---- dashboard widgets ---------------------------------------------------------------------------

def _widgets_build(bundle: Mapping[str, Any], dashboard_id: str):
    doc = _doc(bundle, f"dashboards/{dashboard_id}.json")
    fields: dict[str, Any] = {"note": StringField(validators=[Optional(), Length(max=500)]),
                              "new_widget": TextAreaField(validators=[Optional(), Length(max=MAX_JSON)])}
    rows = []
    for n, widget in enumerate(doc.get("widgets", [])):
        fields[f"w{n}_json"] = TextAreaField(default=json.dumps(widget, ensure_ascii=False, indent=2),
                                             validators=[Length(max=MAX_JSON)])
        fields[f"w{n}_pos"] = IntegerField(default=(n + 1) * 10, validators=[Optional()])
        fields[f"w{n}_remove"] = BooleanField()
        name = widget.get("id", n + 1) if isinstance(widget, Mapping) else n + 1
        rows.append({"head": str(name), "cells": [f"w{n}_json", f"w{n}_pos", f"w{n}_remove"]})
    groups = [{"title": translate("Widgets"), "columns": [translate("Widget"), translate("Definition (JSON)"),
                                                         translate("Position"), translate("Remove")], "rows": rows},
              {"title": translate("Add a widget"), "pairs": [(translate("Definition (JSON)"), "new_widget")]},
              {"pairs": [(translate("Note"), "note")]}]
    return fields, groups


def _widgets_apply(bundle: dict, form: FlaskForm, dashboard_id: str) -> list[str]:
    from keel.definitions.loader import parse_json

    doc = bundle[f"dashboards/{dashboard_id}.json"]
    problems, kept = [], []
    for n, widget in enumerate(doc.get("widgets", [])):
        if form[f"w{n}_remove"].data:
            continue
        text = form[f"w{n}_json"].data or ""
        try:
            # Unchanged text keeps the widget exactly as stored (no number re-parsed on the way).
            value = widget if text == json.dumps(widget, ensure_ascii=False, indent=2) else \
                parse_json(text.encode("utf-8"))
        except ValueError as e:
            problems.append(translate("Widget %(n)s: %(error)s", n=n + 1, error=str(e)))
            continue
        position = form[f"w{n}_pos"].data
        kept.append((position if position is not None else (n + 1) * 10, n, value))
    text = (form["new_widget"].data or "").strip()
    if text:
        try:
            kept.append((10 ** 9, len(kept), parse_json(text.encode("utf-8"))))
        except ValueError as e:
            problems.append(translate("New widget: %(error)s", error=str(e)))
    doc["widgets"] = [w for _, _, w in sorted(kept, key=lambda t: (t[0], t[1]))]
    return problems


_edit_route("/admin/apps/<app_id>/dashboards/<dashboard_id>/widgets", "admin_edit_widgets", _widgets_build,
            _widgets_apply, lambda b, dashboard_id: translate("Widgets of %(dashboard)s", dashboard=dashboard_id))
