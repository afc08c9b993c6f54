"""/inbox: my messages, newest first, unread ones marked, with a button to mark one or all read (plain
form posts with the CSRF token; no script needed)."""
from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from markupsafe import Markup

from keel.i18n import current_lang
from keel.notify import inbox as inbox_store
from keel.web.workflow_view import DEFAULT_TZ

bp = Blueprint("inbox_pages", __name__)
PER_PAGE = 20


def _engine():
    from flask import current_app

    return current_app.extensions["keel"].engine


def _user_id() -> int:
    from keel.auth import current_actor

    return current_actor().user_id


@bp.get("/inbox")
def inbox_page():
    unread_only = request.args.get("unread") == "1"
    try:
        page = max(1, int(request.args.get("page") or 1))
    except ValueError:
        page = 1
    with _engine().connect() as conn:
        data = inbox_store.list_messages(conn, _user_id(), unread_only=unread_only, page=page,
                                         per_page=PER_PAGE, lang=current_lang())
    for item in data["items"]:
        # The body was rendered once when it was sent: values escaped, markup limited by nh3.
        item["body_html"] = Markup(item["body"])
    pages = max(1, -(-data["total"] // PER_PAGE))
    return render_template("inbox.html", title="Inbox", data=data, unread_only=unread_only, page=page, tz=DEFAULT_TZ,
                           pages=pages)


@bp.post("/inbox/<int:message_id>/read")
def inbox_mark_read(message_id: int):
    with _engine().begin() as conn:
        inbox_store.mark_read(conn, _user_id(), message_id)
    return redirect(_back())


@bp.post("/inbox/read_all")
def inbox_mark_all_read():
    with _engine().begin() as conn:
        inbox_store.mark_all_read(conn, _user_id())
    return redirect(_back())


def _back() -> str:
    # Only back to the inbox itself (never a Referer or a user-given URL: no open redirect).
    return url_for("inbox_pages.inbox_page", unread="1") if request.form.get("unread") == "1" \
        else url_for("inbox_pages.inbox_page")
