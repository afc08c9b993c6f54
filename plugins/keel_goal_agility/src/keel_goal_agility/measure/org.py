"""The org directory as the measures need it: departments with their sub-departments, and head counts."""
from __future__ import annotations

import sqlalchemy as sa


def departments(conn: sa.Connection) -> dict[str, dict]:
    """code -> {"id", "code", "name", "parent_id"} of active departments."""
    from keel.storage.system import departments as d

    return {r.code: {"id": r.id, "code": r.code, "name": r.name, "parent_id": r.parent_id}
            for r in conn.execute(sa.select(d.c.id, d.c.code, d.c.name, d.c.parent_id).where(d.c.active))}


def subtree(depts: dict[str, dict], code: str) -> set[str]:
    """`code` and every department below it."""
    by_parent: dict[int | None, list[str]] = {}
    for c, d in depts.items():
        by_parent.setdefault(d["parent_id"], []).append(c)
    out, todo = set(), [code]
    while todo:
        c = todo.pop()
        if c in out or c not in depts:
            continue
        out.add(c)
        todo += by_parent.get(depts[c]["id"], [])
    return out


def user_departments(conn: sa.Connection) -> dict[int, str]:
    """user id -> department code, for active users."""
    from keel.storage.system import departments as d
    from keel.storage.system import users as u

    return {r.id: r.code for r in conn.execute(sa.select(u.c.id, d.c.code).join(d, d.c.id == u.c.department_id)
                                                 .where(u.c.active))}
