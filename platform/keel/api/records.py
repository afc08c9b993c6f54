"""Records of any entity of any app: list, create, get, update, delete, history and CSV export.

The app and entity come from the URL and are looked up in the runtime, so every entity of every
applied version is served by these few generic routes. Reads go through `storage.query` and writes
through `storage.records`, which apply permissions, validation, versions and audit; this module only
translates HTTP (ETags, If-Match, Location, Link) to and from them."""
from __future__ import annotations

from urllib.parse import urlencode

import sqlalchemy as sa
from flask import Response, request, url_for

from keel.api import bp
from keel.api.common import actor, built_entity, if_match_version, json_object, json_response, runtime
from keel.api.errors import StaleVersion, etag
from keel.errors import Conflict, NotFound, PermissionDenied
from keel.storage import records as storage_records
from keel.storage.export import export_csv
from keel.storage.permissions import readable_fields
from keel.storage.query import get_record as query_get
from keel.storage.query import list_records as query_list
from keel.storage.query import parse_query_args
from keel.storage.query import record_history as query_history
from keel.storage.system import users


def _record_headers(app_id: str, entity_id: str, record: dict, location: bool = False) -> dict[str, str]:
    headers = {"ETag": etag(record["row_version"])}
    if location:
        headers["Location"] = url_for("api.get_record", app_id=app_id, entity_id=entity_id,
                                      record_id=record["id"])
    return headers


# Query arguments that are not filters: `expand` is handled here, `lang` picks the response language.
NOT_FILTERS = ("expand", "lang")
SYSTEM_USER_COLUMNS = ("created_by", "updated_by")


@bp.get("/apps/<app_id>/<entity_id>")
def list_records(app_id: str, entity_id: str):
    """List the records of an entity the caller may read, with filters, sort and paging.

    Filters are query arguments `field=value` or `field__op=value` (op one of eq, ne, lt, lte, gt, gte,
    contains, in, isnull) on fields the caller may read. The `Link` header carries first/prev/next/last.

    Query:
        sort: field ids, comma-separated; `-` for descending
        page (integer): page number, from 1
        per_page (integer): records per page (at most 200)
        expand: link or user fields whose ids become objects
    Responses:
        200: one page: `items`, `total`, `page`, `per_page`, `next`, `prev`
        403: the caller's roles may not read this entity
    """
    built = built_entity(app_id, entity_id)
    who = actor()
    entity = built.entity(entity_id)
    filters, sort, page, per_page = parse_query_args(entity, who, request.args, ignore=NOT_FILTERS)
    link_fields, user_fields = _expand_args(entity, who)
    with runtime().engine.connect() as conn:
        result = query_list(conn, built, entity_id, who, filters, sort, page, per_page, expand=link_fields)
        _expand_users(conn, result.items, user_fields)
    body = {"items": result.items, "total": result.total, "page": result.page, "per_page": result.per_page}
    links = _page_links(result.page, result.per_page, result.total)
    body.update({rel: url for rel, url in links.items() if rel in ("next", "prev")})
    headers = {"Link": ", ".join(f'<{url}>; rel="{rel}"' for rel, url in links.items())} if links else {}
    return json_response(body, headers=headers)


def _page_links(page: int, per_page: int, total: int) -> dict[str, str]:
    """first/prev/next/last URLs: the request's own query with only `page` changed."""
    last = max(1, -(-total // per_page)) if per_page else 1

    def at(n: int) -> str:
        args = [(k, v) for k, v in request.args.items(multi=True) if k != "page"] + [("page", str(n))]
        # Relative: a link built from the Host header could point a client at another site.
        return f"{request.script_root}{request.path}?{urlencode(args)}"

    links = {"first": at(1)}
    if page > 1:
        links["prev"] = at(min(page - 1, last))
    if page < last:
        links["next"] = at(page + 1)
    links["last"] = at(last)
    return links


@bp.post("/apps/<app_id>/<entity_id>")
def create_record(app_id: str, entity_id: str):
    """Create a record from a JSON object of field values.

    Responses:
        201: the record, with `Location` and `ETag`
        400: the body is not a JSON object
        403: the caller may not create records of this entity
        422: problems per field; nothing was written
    """
    built = built_entity(app_id, entity_id)
    values = json_object()
    with runtime().engine.begin() as conn:
        record = storage_records.create(conn, built, entity_id, values, actor())
    return json_response(record, 201, _record_headers(app_id, entity_id, record, location=True))


@bp.get("/apps/<app_id>/<entity_id>/<int:record_id>")
def get_record(app_id: str, entity_id: str, record_id: int):
    """Read one record (`ETag: W/"<row_version>"`).

    Query:
        expand: link or user fields whose ids become objects
    """
    built = built_entity(app_id, entity_id)
    who = actor()
    link_fields, user_fields = _expand_args(built.entity(entity_id), who)
    with runtime().engine.connect() as conn:
        record = query_get(conn, built, entity_id, record_id, who, expand=link_fields)
        _expand_users(conn, [record], user_fields)
    return json_response(record, headers=_record_headers(app_id, entity_id, record))


def _expand_args(entity, who) -> tuple[list[str], list[str]]:
    """`?expand=a,b` split into link fields (expanded by storage.query, the one read path, which also
    refuses anything that is not a readable link) and user fields, expanded here."""
    names = list(dict.fromkeys(n.strip() for n in request.args.get("expand", "").split(",") if n.strip()))
    readable_users = {f.id for f in readable_fields(entity, who) if f.type == "user"} | set(SYSTEM_USER_COLUMNS)
    users_ = [n for n in names if n in readable_users]
    return [n for n in names if n not in readable_users], users_


def _expand_users(conn, items: list[dict], fields: list[str]) -> None:
    """Replace user ids with {id, username, display_name} (None for an unknown id), like storage.query
    replaces link ids with {id, title}."""
    if not fields:
        return
    ids = {item[f] for item in items for f in fields if isinstance(item.get(f), int)}
    found = {}
    if ids:
        rows = conn.execute(sa.select(users.c.id, users.c.username, users.c.display_name)
                            .where(users.c.id.in_(sorted(ids)))).mappings()
        found = {r["id"]: dict(r) for r in rows}
    for item in items:
        for f in fields:
            if f in item:
                item[f] = found.get(item[f]) if item[f] is not None else None


@bp.patch("/apps/<app_id>/<entity_id>/<int:record_id>")
def update_record(app_id: str, entity_id: str, record_id: int):
    """Change fields of a record; needs `If-Match` with the ETag that was read.

    Responses:
        200: the updated record with its new `ETag`
        400: the body is not a JSON object, or If-Match is malformed
        403: the caller may not update this record
        409: the record changed since it was read (`current_version` in the body)
        422: problems per field; nothing was written
        428: no If-Match header
    """
    built = built_entity(app_id, entity_id)
    expected = if_match_version(required=True)
    values = json_object()
    who = actor()
    try:
        with runtime().engine.begin() as conn:
            record = storage_records.update(conn, built, entity_id, record_id, values, who, expected_version=expected)
    except Conflict as e:
        raise _stale(built, entity_id, record_id, who, e) from e
    return json_response(record, headers=_record_headers(app_id, entity_id, record))


@bp.delete("/apps/<app_id>/<entity_id>/<int:record_id>")
def delete_record(app_id: str, entity_id: str, record_id: int):
    """Delete a record (soft: kept with its history, hidden from lists).

    With `If-Match`, the delete fails with 409 if the record changed since it was read.

    Responses:
        204: deleted
        403: the caller may not delete this record
        409: the record changed since it was read
    """
    built = built_entity(app_id, entity_id)
    expected = if_match_version(required=False)
    who = actor()
    try:
        with runtime().engine.begin() as conn:
            storage_records.delete(conn, built, entity_id, record_id, who, expected_version=expected)
    except Conflict as e:
        raise _stale(built, entity_id, record_id, who, e) from e
    return Response(status=204)


def _stale(built, entity_id: str, record_id: int, who, e: Conflict) -> StaleVersion:
    """A 409 that tells the client which version is current, so it can re-read and retry."""
    current = getattr(e, "current_version", None)
    if current is None:
        try:
            with runtime().engine.connect() as conn:
                current = query_get(conn, built, entity_id, record_id, who)["row_version"]
        except (NotFound, PermissionDenied):
            current = None
    return StaleVersion(str(e) or "The record was changed since you read it.", current)


@bp.get("/apps/<app_id>/<entity_id>/<int:record_id>/history")
def record_history(app_id: str, entity_id: str, record_id: int):
    """Every version of a record, oldest first: who, when, each field before and after."""
    built = built_entity(app_id, entity_id)
    with runtime().engine.connect() as conn:
        items = query_history(conn, built, entity_id, record_id, actor())
    return json_response({"items": items})


@bp.get("/apps/<app_id>/<entity_id>/export.csv")
def export_records(app_id: str, entity_id: str):
    """Export the records the caller may read as CSV (formula-like cells neutralised).

    Query:
        sort: field ids, comma-separated; `-` for descending
    Responses:
        200: CSV, one row per readable record
    """
    built = built_entity(app_id, entity_id)
    who = actor()
    filters, sort, _page, _per_page = parse_query_args(built.entity(entity_id), who, request.args,
                                                       ignore=(*NOT_FILTERS, "page", "per_page"))
    with runtime().engine.connect() as conn:
        text = export_csv(conn, built, entity_id, who, filters, sort)
    return Response(text, mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{app_id}-{entity_id}.csv"'})

