"""/inbox: my messages, newest first, unread ones marked, with a button to mark one or all read (plain
form posts with the CSRF token; no script needed). Also the inbox's part of every page: the header's
unread count, and sending what a request queued for outside channels once its response is done."""
from __future__ import annotations

import logging

from flask import Blueprint, Flask, current_app, g, redirect, render_template, request, url_for
from markupsafe import Markup

from keel import formats
from keel.i18n import current_lang
from keel.notify import channel_settings
from keel.notify import inbox as inbox_store
from keel.web.context import signed_in_actor

log = logging.getLogger("keel.notify")

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
    return render_template("inbox.html", title="Inbox", data=data, unread_only=unread_only, page=page, tz=formats.zone_label(),
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


def _unread_count() -> dict:
    who = signed_in_actor()
    if who is None:
        return {}
    with _engine().connect() as conn:
        return {"unread_count": inbox_store.unread_count(conn, who.user_id)}


def _deliver_after_response(response):
    """Send what this request queued, once the response has gone out (WSGI servers close a response
    after sending it; the test client when the test calls `close()`). By then the view's transaction
    has committed: rows of a rolled-back transaction do not exist, so nothing is sent for them. A
    failure is only logged; the delivery stays pending for the timers job."""
    ids = g.pop("keel_pending_deliveries", None)
    if not ids:
        return response
    from keel.notify.delivery import deliver_pending

    runtime = current_app.extensions["keel"]
    engine, channels, config = runtime.engine, runtime.registries.delivery_channels, channel_settings(
        current_app.config)

    def send() -> None:
        try:
            deliver_pending(engine, channels, ids=ids, settings=config)
        except Exception:
            log.exception("sending %s delivery(ies) after the request failed; they stay pending", len(ids))

    response.call_on_close(send)
    return response


def init_app(app: Flask) -> None:
    """Call after the other page set-up: the unread count replaces the header's default of 0."""
    if "inbox_pages" not in app.blueprints:
        app.register_blueprint(bp)
    app.context_processor(_unread_count)
    app.after_request(_deliver_after_response)
