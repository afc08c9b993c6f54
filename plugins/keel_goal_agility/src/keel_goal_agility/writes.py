"""Goal Agility's side of every record write (the record event hooks in plugin.py), whatever the path — form
page, form API, entity API, import, connector:

- a goal tree never loops: a goal's parent, or a goal it contributes to, may not be the goal or under it;
- (the fields an approved revision owns — target, core metric, incentive weight, resource allocation — are
  marked `"changed_by": "workflow"` in entities/goal.json: the engine refuses any other change of them;)
- a revision request is checked before it is written (keel_goal_agility.requests);
- a goal's `department` follows its owner's department (kept like a computed field, in the same version).
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from keel.errors import FieldErrors
from keel.storage.system import departments, record_versions, users
from keel_goal_agility import requests, tree
from keel_goal_agility.requests import _int
from keel_goal_agility.settings import APP


def _stored(event) -> dict[str, Any]:
    t = event.app.table(event.entity_id)
    row = event.conn.execute(sa.select(t).where(t.c.id == event.record_id)).first()
    return dict(row._mapping) if row is not None else {}


def _check_cycle(event, stored: dict[str, Any]) -> None:
    values = event.values
    if event.entity_id == "goal" and "parent" in values and event.record_id is not None:
        new_parent = _int(values.get("parent"))
        if new_parent is not None and new_parent != stored.get("parent") \
                and tree.would_cycle(event.conn, event.app, event.record_id, new_parent):
            errors = FieldErrors()
            errors.add("parent", "This parent would make the goal tree a loop: goal #%(parent)s is this goal or "
                                 "lies under it.", parent=new_parent)
            raise errors
    if event.entity_id == "goal_contribution" and ("goal" in values or "parent" in values):
        merged = {**stored, **values}
        child, parent = _int(merged.get("goal")), _int(merged.get("parent"))
        if child is not None and parent is not None and tree.would_cycle(event.conn, event.app, child, parent):
            errors = FieldErrors()
            errors.add("parent", "This contribution would make the goal tree a loop: goal #%(parent)s is goal "
                                 "#%(goal)s or lies under it.", parent=parent, goal=child)
            raise errors


def _weights_problem(weights: Any) -> str | None:
    """None when `weights` is a usable monthly pacing (else the message saying why): 12 non-negative numbers (January…December) or a map of
    YYYY-MM → non-negative number, not all zero."""
    import re

    if isinstance(weights, str):
        import json

        try:
            weights = json.loads(weights)
        except ValueError:
            return "Monthly weights: not JSON."
    if isinstance(weights, list):
        values = weights
        if len(values) != 12:
            return "Monthly weights: a list needs 12 numbers, January to December."
    elif isinstance(weights, dict):
        if not weights or not all(isinstance(k, str) and re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", k) for k in weights):
            return "Monthly weights: a map's keys are months, YYYY-MM."
        values = list(weights.values())
    else:
        return "Monthly weights: give a list of 12 numbers or a map of YYYY-MM to numbers."
    if not all(isinstance(v, (int, float, Decimal)) and not isinstance(v, bool) and v >= 0 for v in values):
        return "Monthly weights: every weight is a number of at least 0."
    if not any(values):
        return "Monthly weights: at least one weight must be above 0."
    return None


def _check_pacing(event, stored: dict[str, Any]) -> None:
    if not ({"pacing", "monthly_weights"} & set(event.values)):
        return
    merged = {**stored, **event.values}
    if merged.get("pacing") != "monthly":
        return
    problem = _weights_problem(merged.get("monthly_weights"))
    if problem is not None:
        errors = FieldErrors()
        errors.add("monthly_weights", problem)
        raise errors


def before_write(event) -> None:
    if event.app.id != APP or event.action not in ("create", "update"):
        return
    if event.entity_id not in ("goal", "goal_contribution", "revision_request"):
        return
    if event.entity_id == "goal" and not ({"parent", "pacing", "monthly_weights"} & set(event.values)):
        return  # nothing that could close a loop or break the pacing: nothing to read
    stored = _stored(event) if event.record_id is not None else {}
    if event.entity_id == "goal":
        _check_pacing(event, stored)
    if event.entity_id in ("goal", "goal_contribution"):
        _check_cycle(event, stored)
    if event.entity_id == "revision_request" and not event.actor.is_system:
        requests.check_request(event.conn, event.app, event.values, event.actor, event.record_id,
                               stored if event.record_id is not None else None)


def _department_code(conn: sa.Connection, user_id: int | None) -> str | None:
    if user_id is None:
        return None
    return conn.execute(sa.select(departments.c.code).select_from(
        users.join(departments, departments.c.id == users.c.department_id)).where(users.c.id == user_id)).scalar()


def fill_department(event) -> None:
    """The goal's department follows its owner, written in the same version row as the change that moved it."""
    if event.app.id != APP or event.entity_id != "goal" or event.action not in ("create", "update"):
        return
    if event.action == "update" and "owner" not in event.changes:
        return
    t = event.app.table("goal")
    row = event.conn.execute(sa.select(t.c.owner, t.c.department).where(t.c.id == event.record_id)).first()
    code = _department_code(event.conn, row.owner) if row is not None else None
    if code is None or code == row.department:
        return
    event.conn.execute(t.update().where(t.c.id == event.record_id).values(department=code))
    v = event.conn.execute(sa.select(record_versions.c.id, record_versions.c.changes).where(
        record_versions.c.app == event.app.id, record_versions.c.entity == "goal",
        record_versions.c.record_id == event.record_id, record_versions.c.version == event.version)).first()
    if v is not None:
        changes = dict(v.changes or {})
        changes["department"] = [row.department, code]
        event.conn.execute(record_versions.update().where(record_versions.c.id == v.id).values(changes=changes))
