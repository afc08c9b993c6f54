"""Lead times of revisions against the case's figures: request → decision (approval), decision → everyone
notified, request → everyone notified. Only decided requests count (approved or rejected): a withdrawn or
pending request has no decision time and is left out, never counted as 0 h. Targets come from the settings
(lead_time_targets.approval_days, cascade_hours); the case's own figures are shown beside them.

Also the revision pipeline: every open request with its SLA status (the workflow step's `sla.working_days`,
counted on the working calendar from when the step started)."""
from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from keel.storage.audit import utcnow
from keel.storage.workflow_tables import wf_instances
from keel_goal_agility import settings

CASE = {"approval_days_before": 5.0, "approval_days_after": 1.8, "end_to_end_hours": 62.0, "approval_hours": 12.0}


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _hours(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    a, b = _aware(a), _aware(b)
    return None if a is None or b is None else round((b - a).total_seconds() / 3600, 2)


def _avg(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def lead_times(conn: sa.Connection, built) -> dict[str, Any]:
    t = built.table("revision_request")
    rows = conn.execute(sa.select(t.c.id, t.c.status, t.c.created_at, t.c.decided_at, t.c.notified_at).where(
        t.c.deleted_at.is_(None), t.c.status.in_(("approved", "rejected")), t.c.decided_at.is_not(None))).all()
    approval = [_hours(r.created_at, r.decided_at) for r in rows]
    notify = [_hours(r.decided_at, r.notified_at) for r in rows if r.status == "approved" and r.notified_at]
    end_to_end = [_hours(r.created_at, r.notified_at) for r in rows if r.status == "approved" and r.notified_at]
    approval_target_h = settings.approval_target_days(built) * 24
    notify_target_h = settings.notify_target_hours(built)
    avg_approval, worst_notify = _avg(approval), (max(notify) if notify else None)
    return {
        "decided": len(rows), "approved": sum(r.status == "approved" for r in rows),
        "approval_hours_avg": avg_approval, "approval_days_avg": round(avg_approval / 24, 2) if avg_approval is not None else None,
        "notify_hours_avg": _avg(notify), "notify_hours_max": worst_notify, "end_to_end_hours_avg": _avg(end_to_end),
        "targets": {"approval_hours": approval_target_h, "notify_hours": notify_target_h},
        "meets": {"approval": None if avg_approval is None else avg_approval <= approval_target_h,
                  "notify": None if worst_notify is None else worst_notify <= notify_target_h},
        "case": CASE,
        "items": [{"id": r.id, "status": r.status, "approval_hours": _hours(r.created_at, r.decided_at),
                   "notify_hours": _hours(r.decided_at, r.notified_at)} for r in rows],
    }


def pipeline(conn: sa.Connection, built, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Open revision requests with their SLA status: ok, due_soon (within a working day), overdue."""
    from keel.workflow.calendar import add_working_days
    from keel.workflow.definition import workflows_of

    now = now or utcnow()
    flows = {w.id: w for w in workflows_of(built.definition).values() if w.entity == "revision_request"}
    req, goal = built.table("revision_request"), built.table("goal")
    rows = conn.execute(sa.select(
        req.c.id, req.c.title, req.c.status, req.c.created_at, req.c.created_by, goal.c.id.label("goal_id"),
        goal.c.title.label("goal_title"), wf_instances.c.id.label("instance"), wf_instances.c.workflow,
        wf_instances.c.state, wf_instances.c.step_started_at, wf_instances.c.started_at,
    ).select_from(req.join(goal, goal.c.id == req.c.goal).join(wf_instances, sa.and_(
        wf_instances.c.app == built.id, wf_instances.c.entity == "revision_request",
        wf_instances.c.record_id == req.c.id, wf_instances.c.status.in_(("pending", "returned")))))
        .where(req.c.deleted_at.is_(None)).order_by(req.c.created_at)).all()
    out = []
    for r in rows:
        wf = flows.get(r.workflow)
        step = wf.steps.get(r.state) if wf is not None else None
        sla = dict(step.sla) if step is not None and getattr(step, "sla", None) else {}
        started = _aware(r.step_started_at or r.started_at)
        due = add_working_days(started, int(sla["working_days"])) if sla.get("working_days") and started else None
        if due is None:
            state = "none"
        elif now > due:
            state = "overdue"
        elif now > add_working_days(due, -1):
            state = "due_soon"
        else:
            state = "ok"
        out.append({"id": r.id, "title": r.title, "goal": {"id": r.goal_id, "title": r.goal_title},
                    "status": r.status, "instance": r.instance, "step": r.state, "submitted_at": _aware(r.created_at),
                    "due": due, "sla": state, "age_hours": _hours(r.created_at, now)})
    return out
