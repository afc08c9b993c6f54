"""What every page needs: the blueprint, the runtime and the acting user, the language, the values of a
record as the reader sees them, and the friendly error pages.

Pages are server-rendered with Jinja autoescape. Labels and values are plain text; only `rich_text`
values (sanitised with nh3 by their field type on the way in) are marked safe.
"""
from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, current_app, render_template, request
from markupsafe import Markup
from werkzeug.exceptions import HTTPException

from keel import formats
from keel.definitions.model import EntityDef, FieldDef
from keel.errors import Conflict, FieldErrors, KeelError, NotFound, PermissionDenied
from keel.i18n import current_lang, translate
from keel.runtime import BuiltApp, Runtime
from keel.storage.system import users

log = logging.getLogger("keel.web")

bp = Blueprint("web", __name__)


def runtime() -> Runtime:
    return current_app.extensions["keel"]


def built_app(app_id: str) -> BuiltApp:
    return runtime().get(app_id)


def actor():
    from keel.auth import current_actor

    return current_actor()


def lang() -> str:
    return current_lang()


# ---------------------------------------------------------------- values as the reader sees them

@dataclass(frozen=True)
class Cell:
    """One value ready for a template: text (escaped when rendered), an optional link, or sanitised
    rich-text HTML."""

    text: str = ""
    href: str | None = None
    html: Markup | None = None
    block: bool = False  # long text / JSON: shown in a <pre>


def user_names(conn: sa.Connection, ids: Iterable[Any]) -> dict[int, str]:
    wanted = sorted({i for i in ids if isinstance(i, int)})
    if not wanted:
        return {}
    rows = conn.execute(sa.select(users.c.id, users.c.display_name).where(users.c.id.in_(wanted)))
    return {r.id: r.display_name for r in rows}


def user_ids_in(entity: EntityDef, items: Iterable[Mapping[str, Any]]) -> set[int]:
    user_fields = [f.id for f in entity.fields if f.type == "user"] + ["created_by", "updated_by"]
    return {item.get(k) for item in items for k in user_fields if isinstance(item.get(k), int)}


def _empty_label(f: FieldDef) -> str:
    """A field's `empty_label` in the page's language ("暂无数据" where a blank would read as zero), or ""."""
    label = f.raw.get("empty_label") if f.raw else None
    if isinstance(label, str):
        return label
    if isinstance(label, Mapping):
        return str(label.get(lang()) or label.get("zh") or label.get("en") or "")
    return ""


def cell(built: BuiltApp, f: FieldDef, value: Any, names: Mapping[int, str],
         record: Mapping[str, Any] | None = None) -> Cell:
    """A value as the reader sees it; numbers, money, times and units through keel.formats (the same
    text on every page), links as links, JSON and long text as blocks."""
    if value is None:
        return Cell(_empty_label(f))
    lg = lang()
    if f.type == "rich_text":
        return Cell(html=Markup(value))  # nh3-sanitised when it was written (fieldtypes.RichText)
    if f.type == "link":
        if isinstance(value, Mapping):  # expanded: {id, title}
            rid, title = value.get("id"), value.get("title")
        else:
            rid, title = value, None
        return Cell(str(title) if title is not None else f"#{rid}",
                    href=f"/apps/{built.id}/{f.entity}/{rid}")
    if f.type in ("json", "table"):
        return Cell(json.dumps(value, ensure_ascii=False, indent=2), block=True)
    if f.type == "long_text":
        return Cell(str(value), block=True)
    siblings = _siblings(built, f) if record is not None and f.raw.get("format") else None
    return Cell(formats.format_value(f, value, record=record, lang=lg, names=names, fields=siblings))


def _siblings(built: BuiltApp, f: FieldDef) -> Mapping[str, FieldDef] | None:
    """The fields of the entity `f` belongs to (a unit field names a sibling), memoised per version."""
    def build():
        return {id(x): {y.id: y for y in e.fields} for e in built.definition.entities.values() for x in e.fields}

    return built.product("keel.web.siblings", build).get(id(f))


def system_cell(name: str, value: Any, names: Mapping[int, str]) -> Cell:
    if value is None:
        return Cell("")
    if name in ("created_by", "updated_by"):
        return Cell(names.get(value, f"#{value}"))
    return Cell(formats.format_datetime(value) if name.endswith("_at") else str(value))


# ---------------------------------------------------------------- error pages

def N_(msgid: str) -> str:
    """Marks a msgid for extraction (pybabel -k N_); translated when shown."""
    return msgid


ERROR_TITLES = {
    400: N_("The request could not be understood."),
    401: N_("Please sign in."),
    403: N_("You do not have permission to see this."),
    404: N_("This page does not exist."),
    405: N_("This action is not allowed here."),
    409: N_("Someone else changed this in the meantime."),
    413: N_("The request is too large."),
    422: N_("Some values need correcting."),
    500: N_("Something went wrong on our side."),
    503: N_("The system is busy. Nothing was changed; please try again in a few seconds."),
}


def error_page(status: int, detail: str | None = None, error_id: str | None = None):
    title = translate(ERROR_TITLES.get(status, ERROR_TITLES[400]))
    try:
        return render_template("error.html", status=status, title=title, detail=detail,
                               error_id=error_id), status
    except Exception:
        log.exception("error page failed")
        return f"{status}", status


def _api(e):
    """/api/ paths answer in JSON (the API registers its own handlers; ours must not shadow them)."""
    from keel.api.errors import handle

    return handle(e)


def _is_api() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def handle_keel_error(e: KeelError):
    if _is_api():
        return _api(e)
    if isinstance(e, NotFound):
        return error_page(404)
    if isinstance(e, PermissionDenied):
        return error_page(403)
    if isinstance(e, Conflict):
        return error_page(409)
    if isinstance(e, FieldErrors):
        return error_page(422, "; ".join(m for ms in e.rendered().values() for m in ms))
    return error_page(400)


def handle_http_error(e: HTTPException):
    if _is_api():
        return _api(e)
    if e.code == 500:
        return handle_unexpected(getattr(e, "original_exception", None) or e)
    if e.code == 400 and e.__class__.__name__ == "CSRFError":
        return error_page(400, translate("The form has expired or was not sent from this site. "
                                         "Go back, reload the page and try again."))
    return error_page(e.code or 500)


def handle_unexpected(e: BaseException):
    if _is_api():
        return _api(e)
    error_id = uuid.uuid4().hex[:12]
    log.error("internal error %s on %s %s", error_id, request.method, request.path, exc_info=e)
    return error_page(500, error_id=error_id)


def handle_database_error(e: sa.exc.OperationalError):
    """A write that waited too long for the database's lock is a 503 the user may retry (the
    transaction rolled back whole); any other database failure is unexpected."""
    from keel.api.errors import RETRY_AFTER_SECONDS
    from keel.storage.db import is_lock_timeout

    if not is_lock_timeout(e):
        raise e
    if _is_api():
        return _api(e)
    body, status = error_page(503)
    return body, status, {"Retry-After": str(RETRY_AFTER_SECONDS)}


def register_error_pages(app) -> None:
    for code in (400, 401, 403, 404, 405, 413, 500):
        app.register_error_handler(code, handle_http_error)
    app.register_error_handler(KeelError, handle_keel_error)
    # In tests too: a lock timeout is an answer, not a crash.
    app.register_error_handler(sa.exc.OperationalError, handle_database_error)
    if not app.testing or app.config.get("KEEL_FRIENDLY_500_IN_TESTS"):
        # In tests an unexpected exception should fail loudly with its traceback.
        app.register_error_handler(Exception, handle_unexpected)
