"""Type-ahead for link and user fields: JSON answers a picker asks as the user types, over all records (not a
capped list of options). People are ordered by the pinyin of their names (pypinyin) and found by name,
username, full pinyin or initials ("ln" finds 李娜); records by their title and the fields their list view
searches, only those the viewer may read.

The same views answer on two paths: `/pickers/...` for pages (session cookie; what keel.js calls) and
`/api/v1/pickers/...` for API clients (Bearer token) — keel.auth decides by the path.
"""
from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa
from flask import Blueprint, jsonify, request

from keel.errors import FieldErrors
from keel.formats import pinyin_of
from keel.storage import query
from keel.storage.permissions import readable_fields
from keel.storage.system import departments, users
from keel.web.pages import actor, built_app, runtime

bp = Blueprint("pickers", __name__)
DEFAULT_LIMIT = 20
MAX_LIMIT = 50
MAX_QUERY = 100

def _paging() -> tuple[str, int, int]:
    errors = FieldErrors()
    q = (request.args.get("q") or "").strip()
    if len(q) > MAX_QUERY:
        errors.add("q", "At most %(n)s characters.", n=MAX_QUERY)
    values = {}
    for key, default, top in (("limit", DEFAULT_LIMIT, MAX_LIMIT), ("offset", 0, 100_000)):
        raw = request.args.get(key)
        try:
            n = default if raw in (None, "") else int(raw)
        except ValueError:
            errors.add(key, "Must be a whole number.")
            continue
        if not (1 if key == "limit" else 0) <= n <= top:
            errors.add(key, "Must be between %(min)s and %(max)s.", min=1 if key == "limit" else 0, max=top)
        values[key] = n
    if errors:
        raise errors
    return q, values["limit"], values["offset"]


def _matches(q: str, name: str, username: str) -> bool:
    if not q:
        return True
    needle = q.lower().replace(" ", "")
    full, initials = pinyin_of(name)
    return (needle in name.lower() or needle in username.lower() or needle in full.replace(" ", "")
            or initials.startswith(needle))


def find_users(conn: sa.Connection, q: str, limit: int, offset: int) -> tuple[list[dict], bool]:
    rows = conn.execute(sa.select(users.c.id, users.c.username, users.c.display_name, departments.c.name)
                        .select_from(users.outerjoin(departments, departments.c.id == users.c.department_id))
                        .where(users.c.active.is_(True))).all()
    found = [r for r in rows if _matches(q, r.display_name or "", r.username)]
    found.sort(key=lambda r: (pinyin_of(r.display_name or r.username)[0], r.display_name or "", r.id))
    page = found[offset:offset + limit]
    items = [{"id": r.id, "label": r.display_name or r.username,
              "detail": " · ".join(x for x in (r.username, r.name) if x)} for r in page]
    return items, len(found) > offset + limit


def find_records(conn: sa.Connection, built, entity_id: str, who, q: str, limit: int, offset: int):
    from keel.web.list_views import search_fields

    entity = built.entity(entity_id)
    fields = search_fields(built, entity)
    sort = [entity.title_field, "id"] if entity.title_field else ["id"]
    search = query.Search(q, fields) if q else None
    # one more than asked tells whether there are more, without counting them all
    stmt, order = query.select_records(built, entity_id, who, sort=sort, search=search)
    rows = conn.execute(stmt.order_by(*order).limit(limit + 1).offset(offset)).all()
    readable = readable_fields(entity, who)
    items = [query.to_json(entity, r, readable) for r in rows]
    out = []
    for item in items[:limit]:
        title = item.get(entity.title_field) if entity.title_field else None
        out.append({"id": item["id"], "label": str(title) if title not in (None, "") else f"#{item['id']}",
                    "detail": f"#{item['id']}"})
    return out, len(items) > limit


def _answer(items: list[Mapping], more: bool):
    return jsonify(items=items, more=more)


def users_picker():
    """Find people for a user field, ordered by the pinyin of their names.

    Active users whose display name, username, full pinyin or pinyin initials match `q`.
    Query:
        q: what the user typed (at most 100 characters; empty: everyone)
        limit (integer): at most this many (1-50, default 20)
        offset (integer): skip this many (for "more")
    Responses:
        200: {"items": [{"id", "label", "detail"}], "more": bool}
    """
    actor()  # signed in (the path's authentication already ran); nothing more is needed to see names
    q, limit, offset = _paging()
    with runtime().engine.connect() as conn:
        items, more = find_users(conn, q, limit, offset)
    return _answer(items, more)


def records_picker(app_id: str, entity_id: str):
    """Find records for a link field: those the viewer may read, matched on their title and searched fields.

    Query:
        q: what the user typed (at most 100 characters; empty: the first ones by title)
        limit (integer): at most this many (1-50, default 20)
        offset (integer): skip this many (for "more")
    Responses:
        200: {"items": [{"id", "label", "detail"}], "more": bool} (none when the viewer may read none)
    """
    built, who = built_app(app_id), actor()
    q, limit, offset = _paging()
    with runtime().engine.connect() as conn:
        items, more = find_records(conn, built, entity_id, who, q, limit, offset)
    return _answer(items, more)


def picker_url(app_id: str, target: str) -> str:
    """The page path a type-ahead asks: people for a user field, the target entity's records for a link."""
    from flask import url_for

    if target == "user":
        return url_for("pickers.users_page")
    return url_for("pickers.records_page", app_id=app_id, entity_id=target)


def _copy(fn, name: str):
    def view(**kwargs):
        return fn(**kwargs)

    view.__name__ = name
    view.__doc__ = fn.__doc__
    return view


bp.add_url_rule("/pickers/users", "users_page", _copy(users_picker, "users_page"))
bp.add_url_rule("/pickers/apps/<app_id>/<entity_id>", "records_page", _copy(records_picker, "records_page"))
bp.add_url_rule("/api/v1/pickers/users", "users_api", _copy(users_picker, "users_api"))
bp.add_url_rule("/api/v1/pickers/apps/<app_id>/<entity_id>", "records_api", _copy(records_picker, "records_api"))
