"""Spreadsheet import over REST: `POST /api/v1/apps/{app}/{entity}/import` (keel.connectors.imports)."""
from __future__ import annotations

from flask import request

from keel.api import bp
from keel.api.common import actor, built_entity, json_response, runtime
from keel.errors import FieldErrors


@bp.post("/apps/<app_id>/<entity_id>/import")
def import_records_route(app_id: str, entity_id: str):
    """Import an .xlsx or .csv file as new records, all rows or none; `preview` checks and writes nothing.

    Administrators only. Send the file as multipart field `file`. Columns name fields by id or label; link
    cells take an id or the linked record's title, user cells a username. Every row goes through the record
    write path; the answer lists each refused row with its field errors.

    Path:
        app_id: the app
        entity_id: the entity to create records of
    Query:
        preview (boolean): check every row and write nothing
        sheet: the sheet of an .xlsx file (default: the first)
    Body:
        file (string, required): the spreadsheet (multipart/form-data)
    Responses:
        200: the preview, or the import (`written`, `created`, `errors` per row)
        403: not an administrator
    """
    from keel.connectors.imports import import_records

    built = built_entity(app_id, entity_id)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        errors = FieldErrors()
        errors.add("file", "Send the spreadsheet as multipart field “file”.")
        raise errors
    preview = request.args.get("preview", "") in ("1", "true", "yes")
    result = import_records(runtime().engine, built, entity_id, upload.filename, upload.read(), actor(),
                            preview=preview, sheet=request.args.get("sheet") or None)
    return json_response(result.as_dict(), status=200 if result.written or preview else 422)
