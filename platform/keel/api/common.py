"""What every API module needs: the runtime, the built app of a URL, the acting user, a JSON body that
must be an object, JSON-ready values, and the If-Match version of a write."""
from __future__ import annotations

import json
import re
from typing import Any

from flask import Response, current_app, request

from keel.actor import Actor
from keel.api.errors import BadRequestBody, PreconditionRequired
from keel.auth import current_actor
from keel.boundary.security import json_body
from keel.errors import FieldErrors
from keel.i18n import translate
from keel.json_values import INT64_MAX, jsonable
from keel.runtime import BuiltApp, Runtime


def runtime() -> Runtime:
    return current_app.extensions["keel"]


def built_app(app_id: str) -> BuiltApp:
    return runtime().get(app_id)  # NotFound → 404 JSON


def built_entity(app_id: str, entity_id: str) -> BuiltApp:
    built = built_app(app_id)
    built.entity(entity_id)  # NotFound → 404 JSON
    return built


def actor() -> Actor:
    return current_actor()


def json_object() -> dict[str, Any]:
    """The request body, parsed with the platform's size and depth limits, which must be an object."""
    data = json_body()
    if not isinstance(data, dict):
        raise BadRequestBody(translate("The request body must be a JSON object."))
    return data


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response that keeps the order of keys (fields in definition order, as a form shows them;
    Flask's provider would sort them) and writes Chinese text as itself, not as escapes."""
    text = json.dumps(jsonable(body), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return Response(text, status=status, headers=headers, mimetype="application/json")


_ETAG = re.compile(r'^(?:W/)?"?(\d{1,9})"?$')


def if_match_version(required: bool) -> int | None:
    """The row_version a write is based on, from If-Match (`W/"3"`, `"3"` or `3`)."""
    raw = request.headers.get("If-Match", "").strip()
    if not raw:
        if required:
            raise PreconditionRequired(translate(
                "This update needs an If-Match header with the record's ETag (e.g. If-Match: W/\"3\"), "
                "so it cannot overwrite a change made since you read the record."))
        return None
    m = _ETAG.match(raw)
    if not m:
        raise BadRequestBody(translate('If-Match must be the ETag of one record version, e.g. W/"3".'))
    return int(m.group(1))


def int_arg(name: str, value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    errors = FieldErrors()
    if n < 1:
        errors.add(name, "Must be a whole number of at least 1.")
    elif n > INT64_MAX:  # an id, a page or a count: none is larger than a BIGINT column holds
        errors.add(name, "The number is too large.")
    if errors:
        raise errors
    return n


def only_keys(data: dict, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    """`data` when its keys are among `allowed` and every `required` one has a value; else 422 naming each."""
    errors = FieldErrors()
    for key in sorted(set(data) - set(allowed)):
        errors.add(str(key)[:100], "Unknown field.")
    for key in required:
        if data.get(key) in (None, "", []):
            errors.add(key, "This field is required.")
    if errors:
        raise errors
    return data
