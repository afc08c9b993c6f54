"""Whether a workflow keeps a record from being changed right now, for pages deciding what to offer (the
record page hides its edit form and says why). Read only.

The decision is the write path's own: `guards.check_update`, asked with no values, so a page never
offers an edit the write path would refuse with 409, nor hides one it would accept. This module only
adds which state the record is in, to say why in the user's words."""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from keel.actor import Actor
from keel.errors import Conflict
from keel.workflow import guards


@dataclass(frozen=True)
class EditLock:
    status: str  # "pending": under approval; "approved": approved, so immutable
    instance_id: int | None  # the request that holds the record


def edit_lock(conn: sa.Connection, built, entity_id: str, record_id: int, actor: Actor) -> EditLock | None:
    """The lock a workflow holds on this record against this actor's changes, or None when they may be
    written (as far as workflows go: row and field permissions are checked apart)."""
    if not built.definition.definitions_of("workflow"):
        return None
    try:
        guards.check_update(conn, built, entity_id, record_id, {}, actor)
    except Conflict:
        found = guards.latest_status(conn, built, entity_id, record_id)  # the request check_update saw
        if found is None:
            return EditLock("pending", None)
        return EditLock(found[1], found[0])
    return None
