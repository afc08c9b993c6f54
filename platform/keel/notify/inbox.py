"""The inbox (站内信): one message per recipient, read/unread, a link to the record, and the deliveries
of the same message to outside channels.

`send` is called inside the transaction of whatever caused the message (an approval, a timer, a
cascade): the inbox rows, their deliveries and the audit event commit with it or not at all. Outside
channels are sent to only after that commit (see `delivery`)."""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from keel.actor import Actor
from keel.definitions.model import AppDef, thaw
from keel.errors import FieldErrors, NotFound
from keel.notify import delivery
from keel.notify.render import NotificationTemplateError, literal_message, pick, render_message
from keel.registries import Registries
from keel.storage.audit import record_event
from keel.storage.notify_tables import inbox
from keel.storage.system import app_versions, users

log = logging.getLogger("keel.notify")

MAX_RECIPIENTS = 5000
MAX_LINK = 1000
MAX_PAGE = 200
CHANNELS_SETTING = "notification_channels"  # app.json settings: channels for notifications without their own


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- the notification definitions of an app's current version -------------------------------------------

_defs: dict[tuple[str, int, str, int], AppDef] = {}


def current_app_def(conn: sa.Connection, app: str, registries: Registries) -> AppDef:
    """The app's latest stored version, loaded with `registries` once per (version, checksum) per
    process."""
    row = conn.execute(sa.select(app_versions.c.version, app_versions.c.checksum)
                       .where(app_versions.c.app == app)
                       .order_by(app_versions.c.version.desc()).limit(1)).first()
    if row is None:
        raise NotFound(f"no app '{app}'")
    key = (app, row.version, row.checksum, id(registries))
    found = _defs.get(key)
    if found is None:
        from keel.storage.versions import get

        found = get(conn, app, row.version, registries)
        if len(_defs) > 64:
            _defs.clear()
        _defs[key] = found
    return found


def notification(app_def: AppDef, template: str) -> Mapping[str, Any]:
    found = app_def.definitions_of("notification").get(template)
    if found is None:
        raise NotFound(f"app '{app_def.id}' has no notification '{template}' "
                       f"(notifications/{template}.json)")
    return found.data


def _channels(app_def: AppDef | None, definition: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if definition is not None and "channels" in definition:
        raw = definition["channels"]
    elif app_def is not None:
        raw = app_def.settings.get(CHANNELS_SETTING) or ()
    else:
        raw = ()
    return [{"type": c} if isinstance(c, str) else thaw(c) for c in raw
            if not (c == "inbox" or (isinstance(c, Mapping) and c.get("type") == "inbox"))]


# -- sending -----------------------------------------------------------------------------------------

# Built once: every message runs them (a call only binds its values).
_INSERT_RETURNING = inbox.insert().returning(inbox.c.user_id, inbox.c.id)
_ACTIVE = sa.select(users.c.id).where(users.c.id.in_(sa.bindparam("ids", expanding=True)), users.c.active.is_(True))

def _recipient_ids(recipients: Iterable[Any]) -> list[int]:
    out: dict[int, None] = {}
    for r in recipients:
        if r is None:
            continue
        if isinstance(r, bool) or not isinstance(r, int):
            errors = FieldErrors()
            errors.add("recipients", "Recipients must be user ids.")
            raise errors
        out[r] = None
    if len(out) > MAX_RECIPIENTS:
        errors = FieldErrors()
        errors.add("recipients", "At most %(n)s recipients per message.", n=MAX_RECIPIENTS)
        raise errors
    return list(out)


def send(conn: sa.Connection, *, app: str, template: str | None, recipients: Iterable[int],
         context: Mapping[str, Any], link: str | None, actor: Actor,
         subject: Mapping[str, str] | None = None, body: Mapping[str, str] | None = None,
         entity: str | None = None, record_id: int | None = None, app_def: AppDef | None = None,
         registries: Registries | None = None) -> list[int]:
    """Write one inbox message per recipient (deduplicated; unknown or inactive users are skipped and
    named in the audit event) and queue its deliveries. `template` names a notification definition of
    the app's current version, rendered once per language with `context` as data; without one,
    `subject`/`body` ({zh, en}) are the text itself. `app_def`: that current version, when the caller
    already holds it (the workflow engine does), so it is not looked up again; otherwise it is loaded
    with `registries`, which also name the delivery channels. Returns the inbox ids, in recipient order."""
    registries = app_def.registries if app_def is not None and registries is None else registries
    if registries is None:
        raise ValueError("inbox.send needs the app's definition or the registries to load it with")
    ids = _recipient_ids(recipients)
    if link is not None and (not isinstance(link, str) or len(link) > MAX_LINK
                             or not link.startswith(("/", "https://"))
                             or link.startswith("//")):
        errors = FieldErrors()
        errors.add("link", "A link must be a path on this site or an https:// address.")
        raise errors
    definition = None
    if template is not None:
        app_def = app_def or current_app_def(conn, app, registries)
        definition = notification(app_def, template)
        try:
            subjects, bodies = render_message(definition["subject"], definition["body"], context,
                                              where=f"notifications/{template}.json")
        except NotificationTemplateError as exc:
            subjects, bodies = _template_failed(conn, app, template, exc, subject, body, entity, record_id,
                                                registries)
    else:
        if subject is None:
            errors = FieldErrors()
            errors.add("subject", "A message needs a template or a subject.")
            raise errors
        subjects, bodies = literal_message(subject, body)
        if app_def is None:
            try:
                app_def = current_app_def(conn, app, registries) if app else None
            except NotFound:
                app_def = None  # a system message about something outside any app
    active = set(conn.execute(_ACTIVE, {"ids": ids}).scalars()) if ids else set()
    skipped = [i for i in ids if i not in active]
    now = _now()
    inbox_ids: dict[int, int] = {}
    rows = [{"user_id": user_id, "app": app, "template": template, "subject": subjects, "body": bodies, "link": link,
             "entity": entity, "record_id": record_id, "sent_by": actor.user_id, "created_at": now}
            for user_id in ids if user_id in active]
    if rows:
        # One statement for all recipients. RETURNING rows of a multi-row insert come in no promised
        # order, so each id is matched to its row by user_id, which is unique here (deduplicated above).
        made = dict(conn.execute(_INSERT_RETURNING, rows).all())
        inbox_ids = {r["user_id"]: made[r["user_id"]] for r in rows}
    queued = delivery.queue(conn, app=app, channels=_channels(app_def, definition),
                            installed=registries.delivery_channels, recipient_ids=list(inbox_ids), inbox_ids=inbox_ids,
                            payload={"subject": subjects, "body": bodies, "link": link}, now=now) \
        if inbox_ids else []
    record_event(conn, actor, "inbox.send", app=app, entity=entity, record_id=record_id, at=now, detail={
        "template": template, "recipients": list(inbox_ids), "skipped": skipped,
        "inbox_ids": list(inbox_ids.values()), "deliveries": queued, "link": link})
    if queued:
        _after_commit(queued)
    return list(inbox_ids.values())


# What a message says when its template fails and the sender gave no text of its own.
FALLBACK_SUBJECT = {"zh": "通知", "en": "Notification"}
FALLBACK_BODY = {"zh": "此通知的模板无法生成，已通知管理员。", "en": "This notification's template could not be "
                 "rendered; an administrator has been told."}
ALERT_SUBJECT = {"zh": "通知模板出错：%(template)s", "en": "Notification template failed: %(template)s"}
ALERT_BODY = {"zh": "应用 %(app)s 的通知模板 %(template)s 无法生成，已改发内置文本。原因：%(error)s",
              "en": "The notification template %(template)s of app %(app)s could not be rendered; the built-in "
                    "text was sent instead. Reason: %(error)s"}


def _template_failed(conn: sa.Connection, app: str, template: str, exc: Exception,
                     subject: Mapping[str, str] | None, body: Mapping[str, str] | None,
                     entity: str | None, record_id: int | None, registries: Registries):
    """A template that fails at run time (validation renders it against sample data, but real data can
    still differ) never blocks what sent the message — an approval commits all the same. The message
    falls back to the sender's built-in text; the failure is in the audit trail and in every admin's
    inbox, in the same transaction."""
    from keel.actor import SYSTEM

    error = str(exc)[:1000]
    log.warning("notification template %s of app %s failed: %s", template, app, error)
    record_event(conn, SYSTEM, "notification.template_failed", app=app, entity=entity, record_id=record_id,
                 detail={"template": template, "error": error})
    admins = list(conn.execute(sa.select(users.c.id).where(users.c.is_admin.is_(True), users.c.active.is_(True))
                               .order_by(users.c.id)).scalars())
    if admins:
        params = {"app": app, "template": template, "error": error}
        send(conn, app=app, template=None, recipients=admins, context={}, link=None, actor=SYSTEM,
             subject={k: v % params for k, v in ALERT_SUBJECT.items()},
             body={k: v % params for k, v in ALERT_BODY.items()}, entity=entity, record_id=record_id,
             registries=registries)
    return literal_message(subject or FALLBACK_SUBJECT, body if subject else FALLBACK_BODY)


def _after_commit(delivery_ids: list[int]) -> None:
    """In a request, remember the deliveries so the request's teardown sends them (after the view's
    transaction committed; if it rolled back, the rows are not there and nothing is sent). Elsewhere
    the timers job sends whatever is pending."""
    try:
        from flask import g, has_request_context
    except ImportError:  # pragma: no cover
        return
    if has_request_context():
        g.setdefault("keel_pending_deliveries", []).extend(delivery_ids)


# -- reading ------------------------------------------------------------------------------------------

def as_dict(row: sa.Row, lang: str | None) -> dict[str, Any]:
    from keel.notify.render import plain_text

    body = pick(row.body, lang)
    return {"id": row.id, "app": row.app, "template": row.template, "subject": pick(row.subject, lang),
            "body": body, "text": plain_text(body), "link": row.link, "entity": row.entity,
            "record_id": row.record_id, "created_at": row.created_at, "read_at": row.read_at,
            "unread": row.read_at is None}


def list_messages(conn: sa.Connection, user_id: int, *, unread_only: bool = False, page: int = 1,
                  per_page: int = 20, lang: str | None = None) -> dict[str, Any]:
    """A user's messages, newest first: {items, total, unread, page, per_page}."""
    page, per_page = max(1, int(page)), max(1, min(int(per_page), MAX_PAGE))
    where = [inbox.c.user_id == user_id]
    if unread_only:
        where.append(inbox.c.read_at.is_(None))
    total = conn.execute(sa.select(sa.func.count()).select_from(inbox).where(*where)).scalar()
    rows = conn.execute(sa.select(inbox).where(*where).order_by(inbox.c.id.desc())
                        .limit(per_page).offset((page - 1) * per_page)).all()
    return {"items": [as_dict(r, lang) for r in rows], "total": total,
            "unread": unread_count(conn, user_id), "page": page, "per_page": per_page}


def unread_count(conn: sa.Connection, user_id: int) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(inbox)
                        .where(inbox.c.user_id == user_id, inbox.c.read_at.is_(None))).scalar()


def mark_read(conn: sa.Connection, user_id: int, message_id: int) -> dt.datetime:
    """Mark one of the user's messages read (idempotent: the first read time stays). Someone else's
    message is NotFound, the same answer as a message that does not exist."""
    row = conn.execute(sa.select(inbox.c.read_at).where(inbox.c.id == message_id, inbox.c.user_id == user_id)
                       ).first()
    if row is None:
        raise NotFound(f"no message {message_id} in your inbox")
    if row.read_at is not None:
        return row.read_at
    now = _now()
    conn.execute(inbox.update().where(inbox.c.id == message_id, inbox.c.read_at.is_(None)).values(read_at=now))
    return now


def mark_all_read(conn: sa.Connection, user_id: int) -> int:
    return conn.execute(inbox.update().where(inbox.c.user_id == user_id, inbox.c.read_at.is_(None))
                        .values(read_at=_now())).rowcount
