"""Forms over the API: a form's JSON Schema (titles in the caller's language) and its submission,
through the same `submit_form` the form page uses, so both channels accept and refuse the same input."""
from __future__ import annotations

from flask import url_for

from keel.api import bp
from keel.api.common import actor, built_app, json_object, json_response, runtime
from keel.api.errors import etag
from keel.errors import PermissionDenied
from keel.forms.schema import form_def, form_json_schema
from keel.forms.submit import check_roles, submit_form
from keel.i18n import current_lang
from keel.storage.permissions import can_create


def _check_may_submit(built, form_id: str, who) -> None:
    """Who may see a form is who may submit it: its roles, or else whoever may create its entity."""
    form = form_def(built, form_id)  # NotFound → 404
    if form.roles is not None:
        check_roles(built, form_id, who)
    elif not can_create(built.entity(form.entity), who):
        raise PermissionDenied(f"form '{form_id}' is not open to this user")


@bp.get("/apps/<app_id>/forms/<form_id>")
def form_schema(app_id: str, form_id: str):
    """The JSON Schema of a form, titles in the request's language.

    Responses:
        403: the form is not open to the caller
    """
    built = built_app(app_id)
    _check_may_submit(built, form_id, actor())
    return json_response(form_json_schema(built, form_id, current_lang()))


@bp.post("/apps/<app_id>/forms/<form_id>")
def submit(app_id: str, form_id: str):
    """Submit a form: creates its record (and starts its workflow, if any).

    Responses:
        201: the created record, with `Location` and `ETag`
        400: the body is not a JSON object
        403: the form is not open to the caller
        422: problems per field; nothing was written
    """
    built = built_app(app_id)
    entity_id = form_def(built, form_id).entity
    data = json_object()
    with runtime().engine.begin() as conn:
        record = submit_form(conn, built, form_id, data, actor())
    return json_response(record, 201, {
        "ETag": etag(record["row_version"]),
        "Location": url_for("api.get_record", app_id=app_id, entity_id=entity_id, record_id=record["id"])})
