"""The OpenAPI 3.1 document of /api/v1, generated from the definitions the runtime holds.

Paths and component schemas are derived by walking every app's entities and forms (schemas from
`forms.schema.entity_json_schema`, the same source as validation), so a newly applied version shows up
on the next request. Each app's part is memoised on its BuiltApp; the assembled document is memoised
per set of (app, version).

The document needs authentication like every other API route: it is data-free, but it lists every
app, entity and field name — including fields only some roles may read — which is reconnaissance an
anonymous visitor has no need for. A signed-in developer or an API token gets it."""
from __future__ import annotations

import re
from importlib.metadata import version as package_version
from typing import Any

from flask import Flask, current_app

from keel.api import bp, routedoc
from keel.api.common import json_response, runtime
from keel.forms.schema import entity_json_schema, form_json_schema
from keel.storage.built import BuiltApp

OPENAPI_VERSION = "3.1.0"


def component_name(*parts: str) -> str:
    """A component key from ids, in the charset OpenAPI allows (`^[a-zA-Z0-9.\\-_]+$`). Dots separate
    the parts and are never kept inside one, so two different id pairs cannot give the same name."""
    return ".".join(re.sub(r"[^A-Za-z0-9_-]", "_", p) or "_" for p in parts)


def ref(name: str, kind: str = "schemas") -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


def _clean(schema: dict) -> dict:
    # A component is a schema inside the OpenAPI document, whose dialect is already JSON Schema
    # 2020-12; a `$schema` of its own would make it a separate resource.
    return {k: v for k, v in schema.items() if k not in ("$schema", "$id")}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


ERROR_RESPONSES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
                   422: "ValidationFailed", 428: "PreconditionRequired"}


def _errors(*codes: int) -> dict:
    return {str(c): ref(ERROR_RESPONSES[c], "responses") for c in codes}


def _record_response(description: str, schema_name: str, *, location: bool = False) -> dict:
    headers = {"ETag": ref("ETag", "headers")}
    if location:
        headers["Location"] = ref("Location", "headers")
    return {"description": description, "headers": headers, "content": _json(ref(schema_name))}


# ---- one app -------------------------------------------------------------------------------------

def app_part(built: BuiltApp) -> tuple[dict, dict]:
    """(paths, component schemas) of one app version; memoised on the BuiltApp."""
    return built.product(("openapi",), lambda: _build_app_part(built))


def _build_app_part(built: BuiltApp) -> tuple[dict, dict]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    app_id = built.id
    for entity_id, entity in built.definition.entities.items():
        read, create, update = (component_name(app_id, entity_id, *m) for m in ((), ("create",), ("update",)))
        schemas[read] = _clean(entity_json_schema(entity, None, "read"))
        schemas[create] = _clean(entity_json_schema(entity, None, "create"))
        schemas[update] = _clean(entity_json_schema(entity, None, "update"))
        paths.update(_entity_paths(app_id, entity_id, entity, read, create, update))
    for form_id, form in built.definition.forms.items():
        name = component_name(app_id, form_id, "form")
        schemas[name] = _clean(form_json_schema(built, form_id, "en"))
        paths[f"/apps/{app_id}/forms/{form_id}"] = _form_path(app_id, form_id, form, name)
    return paths, schemas


FILTER_DESCRIPTION = (
    "Filter with query arguments `field=value` or `field__op=value`, op one of eq, ne, lt, lte, gt, gte, "
    "contains, in (comma-separated values), isnull (true/false); only fields the caller may read. "
    "Sort with `sort=a,-b`. The `Link` header and `next`/`prev` give the neighbouring pages.")
EXPAND_DESCRIPTION = (
    "Comma-separated link or user fields (also created_by, updated_by) whose ids are replaced by objects: "
    "a link by {id, title} of the target if the caller may read it (else null), a user by "
    "{id, username, display_name}.")


def _expand_parameter(link_fields: list[str]) -> dict:
    schema: dict = {"type": "string"}
    if link_fields:
        schema["examples"] = [",".join(link_fields)]
    return {"name": "expand", "in": "query", "required": False, "description": EXPAND_DESCRIPTION,
            "schema": schema}


def _entity_paths(app_id: str, entity_id: str, entity, read: str, create: str, update: str) -> dict:
    label = entity.label.en
    tag = [f"{app_id}.{entity_id}"]
    op = component_name(app_id, entity_id)
    base = f"/apps/{app_id}/{entity_id}"
    link_fields = [f.id for f in entity.fields if f.type in ("link", "user")]
    page_schema = {"type": "object", "required": ["items", "total", "page", "per_page"], "properties": {
        "items": {"type": "array", "items": ref(read)}, "total": {"type": "integer"},
        "page": {"type": "integer"}, "per_page": {"type": "integer"},
        "next": {"type": "string", "format": "uri-reference"},
        "prev": {"type": "string", "format": "uri-reference"}}}
    return {
        base: {
            "get": {"operationId": f"{op}.list", "tags": tag, "summary": f"List {label} records",
                    "description": FILTER_DESCRIPTION,
                    "parameters": [ref("page", "parameters"), ref("per_page", "parameters"),
                                   ref("sort", "parameters"), _expand_parameter(link_fields)],
                    "responses": {"200": {"description": "One page of records",
                                          "headers": {"Link": ref("Link", "headers")},
                                          "content": _json(page_schema)},
                                  **_errors(401, 403, 404, 422)}},
            "post": {"operationId": f"{op}.create", "tags": tag, "summary": f"Create a {label} record",
                     "requestBody": {"required": True, "content": _json(ref(create))},
                     "responses": {"201": _record_response("The created record", read, location=True),
                                   **_errors(400, 401, 403, 404, 422)}},
        },
        f"{base}/{{id}}": {
            "parameters": [ref("record_id", "parameters")],
            "get": {"operationId": f"{op}.get", "tags": tag, "summary": f"Read a {label} record",
                    "parameters": [_expand_parameter(link_fields)],
                    "responses": {"200": _record_response("The record", read), **_errors(401, 403, 404, 422)}},
            "patch": {"operationId": f"{op}.update", "tags": tag, "summary": f"Update a {label} record",
                      "parameters": [ref("if_match_required", "parameters")],
                      "requestBody": {"required": True, "content": _json(ref(update))},
                      "responses": {"200": _record_response("The updated record", read),
                                    **_errors(400, 401, 403, 404, 409, 422, 428)}},
            "delete": {"operationId": f"{op}.delete", "tags": tag, "summary": f"Delete a {label} record "
                                                                              "(soft: kept with its history)",
                       "parameters": [ref("if_match_optional", "parameters")],
                       "responses": {"204": {"description": "Deleted"}, **_errors(400, 401, 403, 404, 409)}},
        },
        f"{base}/{{id}}/history": {
            "parameters": [ref("record_id", "parameters")],
            "get": {"operationId": f"{op}.history", "tags": tag, "summary": f"Versions of a {label} record",
                    "responses": {"200": {"description": "Every stored version, oldest first",
                                          "content": _json({"type": "object", "required": ["items"],
                                                            "properties": {"items": {
                                                                "type": "array",
                                                                "items": ref("HistoryEntry")}}})},
                                  **_errors(401, 403, 404)}},
        },
        f"{base}/export.csv": {
            "get": {"operationId": f"{op}.export", "tags": tag, "summary": f"Export {label} records as CSV",
                    "parameters": [ref("sort", "parameters")],
                    "responses": {"200": {"description": "CSV, one row per readable record",
                                          "content": {"text/csv": {"schema": {"type": "string"}}}},
                                  **_errors(401, 403, 404, 422)}},
        },
    }


def _form_path(app_id: str, form_id: str, form, schema_name: str) -> dict:
    tag = [f"{app_id}.{form.entity}"]
    op = component_name(app_id, "forms", form_id)
    read = component_name(app_id, form.entity)
    return {
        "get": {"operationId": f"{op}.schema", "tags": tag, "summary": f"JSON Schema of the form {form.label.en}",
                "responses": {"200": {"description": "The form's JSON Schema (titles in the request's language)",
                                      "content": _json({"type": "object"})},
                              **_errors(401, 403, 404)}},
        "post": {"operationId": f"{op}.submit", "tags": tag, "summary": f"Submit the form {form.label.en}",
                 "requestBody": {"required": True, "content": _json(ref(schema_name))},
                 "responses": {"201": _record_response("The created record", read, location=True),
                               **_errors(400, 401, 403, 404, 422)}},
    }


# ---- what every document has ---------------------------------------------------------------------

def _static_paths() -> dict:
    return {
        "/auth/token": {
            "post": {
                "operationId": "auth.token", "tags": ["auth"], "security": [],
                "summary": "Exchange a username and password for a token (shown once)",
                "requestBody": {"required": True, "content": _json({
                    "type": "object", "required": ["username", "password"], "additionalProperties": False,
                    "properties": {"username": {"type": "string"}, "password": {"type": "string"},
                                   "name": {"type": "string", "maxLength": 200,
                                            "description": "a name for the token"}}})},
                "responses": {"201": {"description": "A new bearer token", "content": _json(ref("Token"))},
                              "429": {"description": "Too many failed attempts; see Retry-After",
                                      "content": _json(ref("Error"))},
                              **_errors(400, 401, 422)}},
            "delete": {
                "operationId": "auth.revoke", "tags": ["auth"], "summary": "Revoke the token of this request",
                "responses": {"204": {"description": "Revoked"}, **_errors(401)}},
        },
        "/me": {"get": {
            "operationId": "auth.me", "tags": ["auth"], "summary": "Who the token belongs to",
            "responses": {"200": {"description": "The current user", "content": _json(ref("User"))},
                          **_errors(401)}}},
        "/audit": {"get": {
            "operationId": "audit.list", "tags": ["audit"], "summary": "Audit events the caller may see",
            "parameters": [
                {"name": "app", "in": "query", "schema": {"type": "string"}},
                {"name": "entity", "in": "query", "schema": {"type": "string"}},
                {"name": "record", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                ref("page", "parameters"), ref("per_page", "parameters")],
            "responses": {"200": {"description": "One page of events", "content": _json(ref("AuditPage"))},
                          **_errors(401, 403, 422)}}},
        "/openapi.json": {"get": {
            "operationId": "openapi", "tags": ["meta"], "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1", "content": _json({"type": "object"})},
                          **_errors(401)}}},
    }


def _components() -> dict:
    error = {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string"},
        "id": {"type": "string", "description": "log reference of an internal error"},
        "current_version": {"type": "integer", "description": "on 409: the record's stored row_version"}}}
    validation = {"type": "object", "required": ["errors"], "properties": {"errors": {
        "type": "object", "description": "field id (or `_record` for the record as a whole) -> messages "
                                         "in the request's language",
        "additionalProperties": {"type": "array", "items": {"type": "string"}}}}}

    def response(description: str, schema: str) -> dict:
        return {"description": description, "content": _json(ref(schema))}

    return {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "an API token (`keel user token`, or POST /auth/token)"}},
        "schemas": {
            "Error": error,
            "ValidationErrors": validation,
            "Token": {"type": "object", "required": ["token"], "properties": {
                "token": {"type": "string"}, "user": ref("User")}},
            "User": {"type": "object", "required": ["id", "username", "display_name"], "properties": {
                "id": {"type": "integer"}, "username": {"type": "string"}, "display_name": {"type": "string"},
                "email": {"type": ["string", "null"]}, "locale": {"type": ["string", "null"]},
                "is_admin": {"type": "boolean"}, "roles": {"type": "array", "items": {"type": "string"}},
                "department": {"type": ["object", "null"]}, "manager": {"type": ["object", "null"]}}},
            "HistoryEntry": {"type": "object", "properties": {
                "version": {"type": "integer"}, "action": {"type": "string"},
                "changes": {"type": "object", "description": "field -> [before, after]"},
                "user_id": {"type": ["integer", "null"]}, "at": {"type": "string", "format": "date-time"},
                "via": {"type": ["string", "null"],
                        "description": "what wrote it for the user, e.g. job:APP/JOB#RUN (a job's run)"}}},
            "AuditEvent": {"type": "object", "properties": {
                "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
                "user_id": {"type": ["integer", "null"]}, "action": {"type": "string"},
                "app": {"type": ["string", "null"]}, "entity": {"type": ["string", "null"]},
                "record_id": {"type": ["integer", "null"]}, "detail": {"type": "object"}}},
            "AuditPage": {"type": "object", "required": ["items", "total", "page", "per_page"], "properties": {
                "items": {"type": "array", "items": ref("AuditEvent")}, "total": {"type": "integer"},
                "page": {"type": "integer"}, "per_page": {"type": "integer"}}},
        },
        "responses": {
            "BadRequest": response("The request itself is malformed (body, header or JSON)", "Error"),
            "Unauthorized": response("No valid bearer token", "Error"),
            "Forbidden": response("The caller may not do this", "Error"),
            "NotFound": response("No such app, entity, form or record (or not visible to the caller)", "Error"),
            "Conflict": response("The record changed since it was read; `current_version` says which "
                                 "version is stored", "Error"),
            "ValidationFailed": response("Per-field problems with the input; nothing was written",
                                         "ValidationErrors"),
            "PreconditionRequired": response("The update needs an If-Match header with the record's ETag",
                                             "Error"),
        },
        "parameters": {
            "page": {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
            "per_page": {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
            "sort": {"name": "sort", "in": "query", "description": "field ids, comma-separated; `-` for "
                                                                   "descending", "schema": {"type": "string"}},
            "record_id": {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}},
            "if_match_required": {"name": "If-Match", "in": "header", "required": True,
                                  "description": 'the ETag of the version the change is based on, e.g. W/"3"',
                                  "schema": {"type": "string"}},
            "if_match_optional": {"name": "If-Match", "in": "header", "required": False,
                                  "description": "when given, the delete fails with 409 if the record changed",
                                  "schema": {"type": "string"}},
        },
        "headers": {
            "ETag": {"description": 'W/"<row_version>"', "schema": {"type": "string"}},
            "Location": {"description": "URL of the record", "schema": {"type": "string"}},
            "Link": {"description": "first/prev/next/last pages (RFC 8288)", "schema": {"type": "string"}},
        },
    }


def route_paths(app: Flask) -> dict:
    """The paths of every registered /api/v1 route: generated from the views' docstrings
    (`keel.api.routedoc`), with the hand-written operations above taking the place of the generated
    ones they describe in more detail. docs/api.md's route table is made from the same dict."""
    paths: dict[str, dict] = {}
    for doc in routedoc.api_routes(app):
        paths.setdefault(doc.path, {})[doc.method.lower()] = routedoc.operation(doc, ERROR_RESPONSES)
    for path, item in _static_paths().items():
        if path in paths:
            paths[path].update(item)
    return paths


def build_document(apps: list[BuiltApp], routes: dict | None = None) -> dict:
    paths = {path: dict(item) for path, item in (routes if routes is not None else _static_paths()).items()}
    components = _components()
    for built in sorted(apps, key=lambda a: a.id):
        app_paths, app_schemas = app_part(built)
        paths.update(app_paths)
        components["schemas"].update(app_schemas)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Keel API", "version": package_version("keel"),
                 "description": "Generated from the app definitions in force: "
                                + ", ".join(f"{a.id} v{a.version}" for a in sorted(apps, key=lambda a: a.id))},
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": components,
    }


def openapi_document() -> dict:
    """The document for the apps in force now, rebuilt only when an app version changed."""
    apps = runtime().apps()
    key = tuple(sorted((a.id, a.version) for a in apps))
    cached = current_app.extensions.get("keel_openapi")
    if cached is None or cached[0] != key:
        routes = current_app.extensions.get("keel_route_paths")
        if routes is None:  # the url_map is fixed once the app serves
            routes = current_app.extensions["keel_route_paths"] = route_paths(current_app)
        cached = (key, build_document(apps, routes))
        current_app.extensions["keel_openapi"] = cached  # one assignment: safe across threads
    return cached[1]


@bp.get("/openapi.json")
def openapi_json():
    """This document: OpenAPI 3.1 of every route and of every entity and form of the apps in force."""
    return json_response(openapi_document())
