"""Writing the audit trail (reading it, permission-filtered, is keel.audit). Every write in Keel calls `record_event` inside the transaction of the
write itself, so an event exists exactly when the change does."""
from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from keel.actor import Actor
from keel.storage.system import audit_events

# One statement object for every event: its compiled form is cached once, instead of a new
# `insert().values(...)` construct (and its cache key) being built for each of the many events.
_INSERT = audit_events.insert()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def record_event(conn: sa.Connection, actor: Actor, action: str, *, app: str | None = None,
                 entity: str | None = None, record_id: int | None = None,
                 detail: dict[str, Any] | None = None, at: dt.datetime | None = None) -> None:
    conn.execute(_INSERT, {"at": at or utcnow(), "user_id": actor.user_id, "action": action, "app": app,
                           "entity": entity, "record_id": record_id,
                           "detail": {"by": actor.username, **({"via": actor.via} if actor.via else {}),
                                      **(detail or {})}})
