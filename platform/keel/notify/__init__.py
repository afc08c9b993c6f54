"""Notifications: the inbox (站内信), rendering notification definitions, and delivery to outside channels.

    render.py      notification templates in Jinja's immutable sandbox, once per language
    inbox.py       send / list / mark read; the messages live in keel_inbox
    delivery.py    the channel registry and the queue of deliveries (keel_deliveries), sent after commit
    channels/      the built-in channels: group robots (DingTalk, WeCom, Feishu) and e-mail

`init_app(app)` (call it after `keel.web.init_app`): the header's unread count, the inbox page, and
sending a request's deliveries once its response is done."""
from __future__ import annotations

import logging
import os
from collections import ChainMap

from flask import Flask, current_app, g

log = logging.getLogger("keel.notify")


def settings(app: Flask | None = None):
    """Configuration for channels: the app's config over the environment (KEEL_SMTP_*, webhook URLs)."""
    app = app or current_app
    return ChainMap({k: v for k, v in app.config.items() if isinstance(v, str)}, os.environ)


def notification_problems(data) -> list[tuple[str, str]]:
    """What the JSON Schema cannot see in a notification definition, as (JSON pointer, message): a
    template that does not compile or reaches for `_` names, a channel no installed type accepts. For
    the definition checks (`definitions/checks.py`), so a bad template fails `keel app validate`."""
    from keel.notify.delivery import channel_config_problem
    from keel.notify.render import template_problem

    out = []
    for part in ("subject", "body"):
        for lang, text in (data.get(part) or {}).items():
            problem = template_problem(text) if isinstance(text, str) else None
            if problem:
                out.append((f"/{part}/{lang}", problem))
    for n, entry in enumerate(data.get("channels") or ()):
        if entry == "inbox":
            continue
        problem = channel_config_problem({"type": entry} if isinstance(entry, str) else entry)
        if problem:
            out.append((f"/channels/{n}", problem))
    return out


def _unread_count() -> dict:
    from keel.web.context import signed_in_actor

    who = signed_in_actor()
    if who is None:
        return {}
    from keel.notify.inbox import unread_count

    with current_app.extensions["keel"].engine.connect() as conn:
        return {"unread_count": unread_count(conn, who.user_id)}


def _deliver_after_response(response):
    """Send what this request queued, once the response has gone out (WSGI servers close a response
    after sending it; the test client when the test calls `close()`). By then the view's transaction
    has committed: rows of a rolled-back transaction do not exist, so nothing is sent for them. A
    failure is only logged; the delivery stays pending for the timers job."""
    ids = g.pop("keel_pending_deliveries", None)
    if not ids:
        return response
    from keel.notify.delivery import deliver_pending

    engine, config = current_app.extensions["keel"].engine, settings()

    def send() -> None:
        try:
            deliver_pending(engine, ids=ids, settings=config)
        except Exception:
            log.exception("sending %s delivery(ies) after the request failed; they stay pending", len(ids))

    response.call_on_close(send)
    return response


def init_app(app: Flask) -> None:
    from keel.notify import delivery
    from keel.web import inbox_pages

    plugins = app.extensions.get("keel_plugins")
    for candidate in (plugins, getattr(plugins, "pm", None)):
        if candidate is not None:
            delivery.register_plugin_channels(candidate)
    if "inbox_pages" not in app.blueprints:
        app.register_blueprint(inbox_pages.bp)
    # Registered after keel.web's own context processor (which says 0), so this value wins.
    app.context_processor(_unread_count)
    app.after_request(_deliver_after_response)
