"""Reading the audit trail, filtered by what the reader may see.

Admins see every event. Anyone else sees only events about records they can read now — decided by
the same row filter as every other read (`storage.permissions.row_filter`) — and never events about
definitions, users or anything else that is not a record.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from keel.actor import Actor
from keel.errors import FieldErrors
from keel.runtime import BuiltApp, Runtime
from keel.storage.query import MAX_PER_PAGE, Page, datetime_json, fetch_row, read_condition
from keel.storage.system import audit_events

ae = audit_events.c


def _event_json(row: Any) -> dict:
    return {"id": row.id, "at": datetime_json(row.at), "user_id": row.user_id, "action": row.action,
            "app": row.app, "entity": row.entity, "record_id": row.record_id, "detail": row.detail}


def _visible_records(apps: list[BuiltApp], actor: Actor, entity: str | None) -> sa.ColumnElement[bool]:
    """Events about records the actor can read now: per entity, the record id is among the ids its
    read filter selects."""
    parts = []
    for built in apps:
        for eid, edef in built.definition.entities.items():
            if entity is not None and eid != entity:
                continue
            table = built.tables[eid]
            cond = read_condition(table, edef, actor)
            parts.append(sa.and_(ae.app == built.id, ae.entity == eid, ae.record_id.in_(
                sa.select(table.c.id).where(cond))))
    return sa.or_(*parts) if parts else sa.false()


def list_audit(conn: sa.Connection, runtime: Runtime, actor: Actor, app: str | None = None,
               entity: str | None = None, record: Any = None, page: int = 1, per_page: int = 50,
               user_id: int | None = None, since: Any = None, until: Any = None) -> Page:
    """Audit events, newest first; optionally only those by one user (`user_id`) and at or after
    `since` / before `until` (aware datetimes)."""
    if record is not None and (app is None or entity is None):
        errors = FieldErrors()
        errors.add("record", "Give the app and the entity with a record.")
        raise errors
    page = max(1, int(page))
    per_page = min(max(1, int(per_page)), MAX_PER_PAGE)
    conds = []
    if user_id is not None:
        conds.append(ae.user_id == user_id)
    if since is not None:
        conds.append(ae.at >= since)
    if until is not None:
        conds.append(ae.at < until)
    if app is not None:
        conds.append(ae.app == app)
    if entity is not None:
        conds.append(ae.entity == entity)
    if record is not None:
        built = runtime.get(app)
        # One record: the read path decides (NotFound when it is missing or hidden).
        row = fetch_row(conn, built, entity, record, actor, include_deleted=actor.is_admin)
        conds.append(ae.record_id == row.id)
    elif not actor.is_admin:
        apps = [runtime.get(app)] if app is not None else runtime.apps()
        conds.append(_visible_records(apps, actor, entity))
    stmt = sa.select(audit_events).where(*conds)
    total = conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery())).scalar_one()
    rows = conn.execute(stmt.order_by(ae.id.desc()).limit(per_page).offset((page - 1) * per_page))
    return Page([_event_json(r) for r in rows], total, page, per_page)
