"""What a revision request (申请修订) must be before it is written — checked on the record write path, so the
form page, the form API and any import are refused alike, before anything is written:

(who may request a revision of which goal is the revision workflow's `starts_on.who`, checked by the engine;)
- only a goal flagged red, when settings.revision.flagged_only says so;
- one pending revision per goal (the goal row is locked while checking, so two at once cannot both pass);
- a proposed value that is not negative, in the unit (whole numbers for counts, 0–100 for rates) and not the
  same as today's when nothing else changes; a new unit needs a new core metric;
- every dimension that changes (core metric, incentive weight, resource allocation) carries its rationale.
"""
from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from keel.actor import Actor
from keel.errors import FieldErrors, PermissionDenied
from keel_goal_agility import settings
from keel_goal_agility.formats import amount, decimal_of

OPEN_STATUSES = ("pending", "returned")


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _locked_goal(conn: sa.Connection, built, goal_id: int) -> dict[str, Any] | None:
    t = built.table("goal")
    row = conn.execute(sa.select(t).where(t.c.id == goal_id, t.c.deleted_at.is_(None)).with_for_update()).first()
    return dict(row._mapping) if row is not None else None


def may_request(conn: sa.Connection, built, goal: Mapping[str, Any], actor: Actor) -> bool:
    """Whether `actor` may file a revision of `goal`: the revision workflow's `starts_on.who` decides (the
    engine checks it again when the request is filed; this is for showing the 申请修订 action)."""
    from keel.workflow.definition import workflows_of
    from keel.workflow.starters import check_may_start

    flows = [w for w in workflows_of(built.definition).values() if w.entity == "revision_request"]
    try:
        for wf in flows:
            check_may_start(conn, built, wf, {"goal": goal["id"]}, actor)
    except PermissionDenied:
        return False
    return True


def open_request(conn: sa.Connection, built, goal_id: int, exclude: int | None = None) -> int | None:
    t = built.table("revision_request")
    q = sa.select(t.c.id).where(t.c.goal == goal_id, t.c.status.in_(OPEN_STATUSES), t.c.deleted_at.is_(None))
    if exclude is not None:
        q = q.where(t.c.id != exclude)
    return conn.execute(q.order_by(t.c.id).limit(1)).scalar()


def check_value(errors: FieldErrors, field: str, value: Decimal, unit: str) -> None:
    if value < 0:
        errors.add(field, "The proposed value cannot be negative (%(value)s).", value=str(value))
    elif unit == "count" and value != value.to_integral():
        errors.add(field, "The unit is a count: give a whole number, not %(value)s.", value=str(value))
    elif unit == "percent" and value > 100:
        errors.add(field, "The unit is a percentage: give a value from 0 to 100, not %(value)s.", value=str(value))


def proposed_changes(goal: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The goal fields this request would change: {goal field: (current, proposed)} — only real changes."""
    pairs = {"target": "proposed_target", "metric": "proposed_metric", "unit": "proposed_unit",
             "category": "proposed_category", "incentive_category": "proposed_incentive_category",
             "incentive_weight": "proposed_incentive_weight", "resources": "proposed_resources"}
    out: dict[str, tuple[Any, Any]] = {}
    for gf, rf in pairs.items():
        new = values.get(rf)
        if new is None or (isinstance(new, str) and not new.strip()):
            continue
        old = goal.get(gf)
        if gf in ("target", "incentive_weight"):
            d_new, d_old = decimal_of(new), decimal_of(old)
            if d_new is None or (d_old is not None and d_new == d_old):
                continue
            out[gf] = (d_old, d_new)
        elif str(new).strip() != (str(old).strip() if old is not None else None):
            out[gf] = (old, str(new).strip())
    return out


def check_request(conn: sa.Connection, built, values: Mapping[str, Any], actor: Actor,
                  record_id: int | None = None, stored: Mapping[str, Any] | None = None) -> None:
    """Refuse a revision request that must not be written (PermissionDenied or FieldErrors)."""
    merged = {**(stored or {}), **values}
    goal_id = _int(merged.get("goal"))
    if goal_id is None:
        return  # the write path reports a missing or malformed goal
    goal = _locked_goal(conn, built, goal_id)
    if goal is None:
        return  # "the linked record does not exist", from the write path
    errors = FieldErrors()
    if record_id is None and settings.flagged_only(built) and goal.get("flag") != "red":
        errors.add("goal", "Only goals flagged red can be revised (settings.revision.flagged_only); "
                           "“%(goal)s” is not flagged.", goal=goal.get("title") or goal_id)
    pending = open_request(conn, built, goal_id, exclude=record_id)
    if pending is not None:
        errors.add("goal", "This goal already has a revision request in progress (#%(id)s): wait for its "
                           "decision or withdraw it first.", id=pending)
    unit = merged.get("proposed_unit") or goal.get("unit")
    if merged.get("proposed_unit") and merged.get("proposed_unit") != goal.get("unit") \
            and not (merged.get("proposed_metric") or "").strip():
        errors.add("proposed_unit", "A new unit means a new core metric: fill in the new core metric too.")
    target = decimal_of(merged.get("proposed_target"))
    if target is not None:
        check_value(errors, "proposed_target", target, unit)
    weight = decimal_of(merged.get("proposed_incentive_weight"))
    if weight is not None and weight < 0:
        errors.add("proposed_incentive_weight", "The proposed value cannot be negative (%(value)s).", value=str(weight))
    changes = proposed_changes(goal, merged)
    if target is not None and not errors.errors.get("proposed_target") and not changes:
        errors.add("proposed_target", "The proposed value equals the current one (%(value)s) and nothing else "
                   "changes: there is nothing to revise.", value=amount(goal.get("target"), goal.get("unit")))
    for dims, rationale in ((("metric", "unit", "category"), "metric_rationale"),
                            (("incentive_category", "incentive_weight"), "incentive_rationale"),
                            (("resources",), "resources_rationale")):
        if any(d in changes for d in dims) and not str(merged.get(rationale) or "").strip():
            errors.add(rationale, "Give the rationale for this change (调整依据).")
    if errors:
        raise errors
