"""The inbox and approval metrics over REST:

    GET  /inbox?unread=1&page=1&per_page=20   my messages, newest first, in my language
    POST /inbox/{id}/read                     mark one read (idempotent)
    POST /inbox/read_all                      mark all read
    GET  /workflows/metrics?app=&workflow=&since=   aggregates for dashboards (admin or strategy role)
    GET  /workflows/metrics?instance={id}           one instance, per step
"""
from __future__ import annotations

import datetime as dt

from flask import request

from keel.api import bp
from keel.api.common import actor, int_arg, json_response, runtime
from keel.errors import FieldErrors, PermissionDenied
from keel.i18n import current_lang
from keel.notify import inbox as inbox_store

METRICS_ROLES = frozenset({"strategy"})


def _flag(name: str) -> bool:
    raw = (request.args.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    errors = FieldErrors()
    errors.add(name, "Must be true or false.")
    raise errors


@bp.get("/inbox")
def inbox_list():
    """My inbox messages, newest first, in my language.

    Query:
        unread (boolean): only unread messages
        page (integer): page number, from 1
        per_page (integer): messages per page (at most 100)
    """
    who = actor()
    page = int_arg("page", request.args.get("page")) or 1
    per_page = int_arg("per_page", request.args.get("per_page")) or 20
    if per_page > inbox_store.MAX_PAGE:
        errors = FieldErrors()
        errors.add("per_page", "Must be at most %(max)s.", max=inbox_store.MAX_PAGE)
        raise errors
    with runtime().engine.connect() as conn:
        body = inbox_store.list_messages(conn, who.user_id, unread_only=_flag("unread"), page=page,
                                         per_page=per_page, lang=current_lang())
    return json_response(body)


@bp.post("/inbox/<int:message_id>/read")
def inbox_read(message_id: int):
    """Mark one of my messages read (idempotent); answers the remaining unread count."""
    who = actor()
    with runtime().engine.begin() as conn:
        read_at = inbox_store.mark_read(conn, who.user_id, message_id)
        unread = inbox_store.unread_count(conn, who.user_id)
    return json_response({"id": message_id, "read_at": read_at, "unread": unread})


@bp.post("/inbox/read_all")
def inbox_read_all():
    """Mark all my messages read."""
    who = actor()
    with runtime().engine.begin() as conn:
        marked = inbox_store.mark_all_read(conn, who.user_id)
    return json_response({"marked": marked, "unread": 0})


def _since(raw: str | None) -> dt.datetime | None:
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        errors = FieldErrors()
        errors.add("since", "Must be a date or time in ISO 8601 form, e.g. 2025-10-01.")
        raise errors from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@bp.get("/workflows/metrics")
def workflow_metrics():
    """Approval metrics: per workflow (aggregates for dashboards) or per step of one instance.

    Administrators and the strategy role only.

    Query:
        app: app id (required without `instance`)
        workflow: workflow id (required without `instance`)
        since: ISO 8601 date or time; only instances started since then
        instance (integer): one instance, per step
    Responses:
        403: neither an administrator nor in the strategy role
    """
    from keel.workflow import metrics

    who = actor()
    if not (who.is_admin or who.roles & METRICS_ROLES):
        raise PermissionDenied("approval metrics are for administrators and the strategy department")
    instance = int_arg("instance", request.args.get("instance"))
    with runtime().engine.connect() as conn:
        if instance is not None:
            return json_response(metrics.instance_metrics(conn, instance))
        errors = FieldErrors()
        app_id, workflow = request.args.get("app"), request.args.get("workflow")
        if not app_id:
            errors.add("app", "This field is required.")
        if not workflow:
            errors.add("workflow", "This field is required.")
        if errors:
            raise errors
        return json_response(metrics.workflow_metrics(conn, app_id, workflow, since=_since(request.args.get("since"))))
