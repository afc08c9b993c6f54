"""Yellow marks: "this record changed since you last looked". A general engine feature — any page or widget
asks which of the records it shows are marked for the viewer, and the viewer acknowledges them.

A mark is opened for a user on a record by whoever decides the user should look again: the write path opens
one for the record's owner when someone else changes a record of an entity with `track_changes` (the
default), and a plugin opens them for everyone a change affects (the Goal Agility cascade marks every
affected owner). Marks are per user and record: a second change before the user looked refreshes the open
mark (its `reason` and time) instead of piling up rows. Acknowledging closes it, audited as the user's write.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from keel.actor import Actor
from keel.storage.audit import record_event, utcnow
from keel.storage.system import highlights

REASON_MAX = 500


def mark(conn: sa.Connection, app: str, entity: str, record_id: int, user_ids: Iterable[int], reason: str,
         detail: dict[str, Any] | None = None, at: dt.datetime | None = None) -> int:
    """Open (or refresh) a mark on one record for each user; returns how many users were marked."""
    return mark_many(conn, app, ((entity, record_id, u) for u in user_ids), reason, detail, at)


def mark_many(conn: sa.Connection, app: str, marks: Iterable[tuple[str, int, int]], reason: str,
              detail: dict[str, Any] | None = None, at: dt.datetime | None = None) -> int:
    """`mark` for many records at once — (entity, record_id, user_id) triples, e.g. everything a change
    cascades to — as one multi-row upsert however many there are. Same result as calling `mark` per
    record; returns how many (record, user) marks are open afterwards."""
    wanted = sorted({(str(e), int(r), int(u)) for e, r, u in marks if u is not None})
    if not wanted:
        return 0
    at = at or utcnow()
    rows = [{"user_id": u, "app": app, "entity": e, "record_id": r, "reason": reason[:REASON_MAX],
             "detail": detail, "marked_at": at} for e, r, u in wanted]
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(highlights)
    conn.execute(insert.on_conflict_do_update(
        index_elements=["user_id", "app", "entity", "record_id"],
        index_where=highlights.c.acknowledged_at.is_(None),
        set_={"reason": insert.excluded.reason, "detail": insert.excluded.detail,
              "marked_at": insert.excluded.marked_at}), rows)
    return len(wanted)


def marked(conn: sa.Connection, user_id: int, app: str | None = None, entity: str | None = None,
           record_ids: Iterable[int] | None = None) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The viewer's open marks, as {(app, entity, record_id): {"reason", "detail", "marked_at"}}."""
    q = sa.select(highlights).where(highlights.c.user_id == user_id, highlights.c.acknowledged_at.is_(None))
    if app is not None:
        q = q.where(highlights.c.app == app)
    if entity is not None:
        q = q.where(highlights.c.entity == entity)
    if record_ids is not None:
        q = q.where(highlights.c.record_id.in_([int(i) for i in record_ids]))
    return {(r.app, r.entity, r.record_id): {"reason": r.reason, "detail": r.detail, "marked_at": r.marked_at}
            for r in conn.execute(q.order_by(highlights.c.marked_at.desc()))}


def count_marked(conn: sa.Connection, user_id: int) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(highlights).where(
        highlights.c.user_id == user_id, highlights.c.acknowledged_at.is_(None))).scalar_one()


def acknowledge(conn: sa.Connection, actor: Actor, app: str, entity: str | None = None,
                record_id: int | None = None) -> int:
    """Close the actor's open marks on one record (or all of an entity / an app); audited. Returns how many."""
    where = [highlights.c.user_id == actor.user_id, highlights.c.app == app,
             highlights.c.acknowledged_at.is_(None)]
    if entity is not None:
        where.append(highlights.c.entity == entity)
    if record_id is not None:
        where.append(highlights.c.record_id == record_id)
    n = conn.execute(highlights.update().where(*where).values(acknowledged_at=utcnow())).rowcount
    if n:
        record_event(conn, actor, "highlight.acknowledge", app=app, entity=entity, record_id=record_id,
                     detail={"count": n})
    return n
