"""Standing delegation (委托): while it is in force, new tasks for a user go to the user they chose; the
task keeps whom it was meant for (`on_behalf_of`), so both can read the request and the audit trail
says who decided for whom."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from keel.actor import Actor
from keel.errors import FieldErrors, PermissionDenied
from keel.storage.audit import record_event, utcnow
from keel.storage.workflow_tables import wf_delegations
from keel.workflow.engine import _users


def set_delegation(conn: sa.Connection, actor: Actor, to_user: Any, until=None) -> dict:
    """From now on (until `until`, or until cleared), tasks for `actor` go to `to_user`."""
    if actor.is_system:
        raise PermissionDenied("the system actor has no tasks to delegate")
    (target,) = _users(conn, [to_user] if not isinstance(to_user, list) else to_user[:1], "to_user")
    if target == actor.user_id:
        errors = FieldErrors()
        errors.add("to_user", "Choose someone other than yourself.")
        raise errors
    conn.execute(wf_delegations.delete().where(wf_delegations.c.user_id == actor.user_id))
    conn.execute(wf_delegations.insert().values(user_id=actor.user_id, delegate_id=target, until=until,
                                                created_at=utcnow()))
    record_event(conn, actor, "workflow.delegate", detail={"to_user": target,
                                                           "until": until.isoformat() if until else None})
    return {"to_user": target, "until": until}


def clear_delegation(conn: sa.Connection, actor: Actor) -> None:
    gone = conn.execute(wf_delegations.delete().where(wf_delegations.c.user_id == actor.user_id)).rowcount
    if gone:
        record_event(conn, actor, "workflow.delegate", detail={"to_user": None})
