"""The admin definition editor: the current version and its history, every file of the bundle as JSON to
edit, "Validate" (every error at once as `file: /pointer: message`, plus what applying would change) and
"Apply" (through keel.apply, the same path as `keel app apply`), and a rollback per stored version."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError, validate_csrf
from wtforms.validators import ValidationError

from keel.definitions.errors import DefinitionError, DefinitionErrors
from keel.definitions.model import thaw
from keel.errors import PermissionDenied
from keel.i18n import translate
from keel.storage import versions
from keel.web.pages import actor, bp, built_app, lang, runtime

FILE_PREFIX = "file:"


def _admin():
    who = actor()
    if not who.is_admin:
        raise PermissionDenied("the definition editor is for admins")
    return who


def _check_csrf() -> None:
    # CSRFProtect (set up by auth) already checks every form post; this page checks again itself,
    # because what it guards is the definition of the whole app.
    try:
        validate_csrf(request.form.get("csrf_token"))
    except (ValidationError, CSRFError):
        abort(400)


def pretty(doc: Any) -> str:
    return json.dumps(thaw(doc), ensure_ascii=False, indent=2, sort_keys=False)


def _posted_files() -> dict[str, str]:
    return {k[len(FILE_PREFIX):]: v for k, v in request.form.items() if k.startswith(FILE_PREFIX)}


def parse_files(app_id: str, texts: Mapping[str, str]):
    """(app_def, []) or (None, [error lines]): JSON syntax errors of every file first, then every
    definition error of the whole bundle."""
    from keel.definitions.loader import load_bundle, parse_json

    bundle, errors = {}, []
    for path, text in texts.items():
        try:
            bundle[path] = parse_json(text.encode("utf-8"))
        except ValueError as e:
            errors.append(str(DefinitionError(path, "", str(e))))
    if errors:
        return None, errors
    try:
        app_def = load_bundle(bundle, runtime().registries)
    except DefinitionErrors as e:
        return None, [str(x) for x in e.errors]
    if app_def.id != app_id:
        return None, [str(DefinitionError("app.json", "/id", f"must stay '{app_id}' on this page"))]
    return app_def, []


def _render(app_id: str, texts: Mapping[str, str] | None = None, status: int = 200, **result):
    built = built_app(app_id)
    with runtime().engine.connect() as conn:
        history = list(reversed(versions.history(conn, app_id)))
    bundle = built.definition.bundle
    current = {path: pretty(doc) for path, doc in sorted(bundle.items())}
    return render_template("admin_app.html", app_id=app_id, built=built, history=history,
                           current=current, texts=texts or current, title=built.definition.label.en,
                           **result), status


@bp.get("/admin/apps/<app_id>")
def admin_app(app_id: str):
    _admin()
    return _render(app_id)


@bp.post("/admin/apps/<app_id>")
def admin_app_post(app_id: str):
    from keel.apply import apply_app, diff_app
    from keel.storage.sync import SyncRefused

    who = _admin()
    built_app(app_id)  # 404 for an unknown app, before anything else
    _check_csrf()
    texts = _posted_files()
    app_def, errors = parse_files(app_id, texts)
    if errors:
        return _render(app_id, texts, 422, errors=errors)
    engine = runtime().engine
    if request.form.get("action") == "apply":
        try:
            result = apply_app(engine, app_def, who, note=request.form.get("note", "")[:500])
        except SyncRefused as e:
            return _render(app_id, texts, 409, refusals=e.refusals)
        if result.changed:
            flash(translate("Applied as version %(v)s.", v=result.version), "success")
        else:
            flash(translate("Nothing changed: the definition equals version %(v)s.", v=result.version),
                  "info")
        return redirect(url_for("web.admin_app", app_id=app_id))
    from keel.web import admin_diff

    diff = diff_app(engine, app_def)
    built = built_app(app_id)
    with engine.connect() as conn:
        effects = admin_diff.effects(conn, app_id, built.definition.bundle, app_def.bundle, built.version + 1,
                                     lang())
    return _render(app_id, texts, 200, validated=True, steps=diff.plan.descriptions(),
                   refusals=diff.plan.refusals, changes=admin_diff.describe(built.definition.bundle,
                                                                            app_def.bundle, lang()),
                   effects=effects)


@bp.get("/admin/apps/<app_id>/rollback")
def admin_app_rollback_confirm(app_id: str):
    """Before a rollback: what it changes and does, and the button that confirms it."""
    from keel.web import admin_diff

    _admin()
    built = built_app(app_id)
    try:
        version = int(request.args.get("version", ""))
    except ValueError:
        abort(400)
    with runtime().engine.connect() as conn:
        target = versions.get_bundle(conn, app_id, version)  # NotFound → 404
        effects = admin_diff.effects(conn, app_id, built.definition.bundle, target, built.version + 1, lang())
    changes = admin_diff.describe(built.definition.bundle, target, lang())
    return render_template("admin/rollback.html", app_id=app_id, built=built, version=version, changes=changes,
                           effects=effects, title=translate("Roll back to version %(v)s", v=version))


@bp.post("/admin/apps/<app_id>/rollback")
def admin_app_rollback(app_id: str):
    from keel.apply import rollback_app
    from keel.storage.sync import SyncRefused

    who = _admin()
    built_app(app_id)
    _check_csrf()
    try:
        version = int(request.form.get("version", ""))
    except ValueError:
        abort(400)
    if request.form.get("confirm") != "yes":
        # A rollback replaces the definition every user works with: only from the confirmation page,
        # which shows what it changes.
        return render_template("error.html", status=400, title=translate("Not rolled back"),
                               detail=translate("A rollback needs confirmation: review what it changes first.")), 400
    try:
        result = rollback_app(runtime().engine, app_id, version, who, runtime().registries)
    except SyncRefused as e:
        return _render(app_id, None, 409, refusals=e.refusals)
    if result.changed:
        flash(translate("Rolled back to version %(old)s (stored as version %(v)s).", old=version,
                        v=result.version), "success")
    else:
        flash(translate("Nothing changed: the definition equals version %(v)s.", v=result.version), "info")
    return redirect(url_for("web.admin_app", app_id=app_id))


@bp.get("/admin")
def admin_index():
    _admin()
    apps = [(b.definition.label.get(lang()), url_for("web.admin_app", app_id=b.id))
            for b in sorted(runtime().apps(), key=lambda b: b.id)]
    return render_template("admin_index.html", apps=apps, title=translate("Admin"))
