"""How long approvals take, computed from the audit trail (the one record of who did what when), per
instance and per step, and aggregated per workflow for dashboards.

The events read (the engine's, each with `detail.instance`; step events with `detail.step`):

    workflow.start          the request was submitted (the clock starts)
    workflow.step_enter     a step began (optional: otherwise a step begins when the previous one ended)
    workflow.approve / workflow.reject   an approver decided (counted per step)
    workflow.send_back / transfer / add_approvers   an approver acted without deciding (first action
                            = the first of these or of approve/reject)
    workflow.step_complete  a step was decided
    workflow.finish         the instance reached a final state (`detail.outcome`)
    any other workflow.* event of the instance (actions it triggered, e.g. the cascade) extends its
    lead time: "end to end" runs to the instance's last recorded event.

Per instance: time to first action, approval time (the sum of its steps' durations: from entering a
step to its decision) and lead time (start to last event). The Goal Agility case: 62 h end to end,
12 h of it approval."""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from keel.errors import NotFound
from keel.storage.system import audit_events

START, STEP_ENTER, STEP_COMPLETE, FINISH = ("workflow.start", "workflow.step_enter", "workflow.step_complete",
                                            "workflow.finish")
DECISIONS = ("workflow.approve", "workflow.reject")
ACTIONS = (*DECISIONS, "workflow.send_back", "workflow.transfer", "workflow.add_approvers")
MAX_INSTANCES = 10_000  # per aggregate query; older ones are left out (narrow with `since`)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _hours(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    if a is None or b is None:
        return None
    return round((b - a).total_seconds() / 3600, 3)


def _instance_key():
    # The engine writes `instance`; `instance_id` is accepted from other writers (plugins, imports).
    return sa.func.coalesce(audit_events.c.detail["instance"].as_integer(),
                            audit_events.c.detail["instance_id"].as_integer())


def _events(conn: sa.Connection, instance_ids: Iterable[int]) -> dict[int, list[sa.Row]]:
    ids = list(instance_ids)
    out: dict[int, list[sa.Row]] = defaultdict(list)
    key = _instance_key()
    for start in range(0, len(ids), 500):
        rows = conn.execute(sa.select(audit_events.c.at, audit_events.c.action, audit_events.c.detail,
                                      key.label("instance_id"))
                            .where(key.in_(ids[start:start + 500]), audit_events.c.action.like("workflow.%"))
                            .order_by(audit_events.c.at, audit_events.c.id)).all()
        for r in rows:
            out[r.instance_id].append(r)
    return out


def _summarise(instance_id: int, events: list[sa.Row], now: dt.datetime) -> dict[str, Any]:
    started = next((_aware(e.at) for e in events if e.action == START), None)
    if started is None:
        raise NotFound(f"workflow instance {instance_id} has no start in the audit trail")
    finished = next((_aware(e.at) for e in events if e.action == FINISH), None)
    last = _aware(events[-1].at)
    steps: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    boundary = started  # where the next step begins when no step_enter says otherwise
    for e in events:
        step = (e.detail or {}).get("step")
        at = _aware(e.at)
        if e.action in (STEP_ENTER, FINISH):
            # A step left without a decision (sent back to an earlier step, withdrawn) stops counting here.
            for other in steps.values():
                if other["step"] != step and "_open" in other:
                    other["hours"] += (at - other.pop("_open")).total_seconds() / 3600
        if step is None or e.action not in (STEP_ENTER, STEP_COMPLETE, *ACTIONS):
            continue
        s = steps.get(step)
        if s is None or (e.action == STEP_ENTER and "_open" not in s):
            # first visit, or the step entered again (sent back): a new visit adds to the same step
            if s is None:
                s = steps[step] = {"step": step, "visits": 0, "entered_at": None, "first_action_at": None,
                                   "completed_at": None, "approvals": 0, "rejections": 0, "hours": 0.0}
                order.append(step)
            s["visits"] += 1
            opened = at if e.action == STEP_ENTER else boundary
            s["entered_at"] = s["entered_at"] or opened  # the first visit's; time to first action counts from it
            s["completed_at"], s["_open"] = None, opened
        if e.action in ACTIONS:
            s["first_action_at"] = s["first_action_at"] or at
            if e.action in DECISIONS:
                s["approvals" if e.action == "workflow.approve" else "rejections"] += 1
        elif e.action == STEP_COMPLETE:
            s["completed_at"] = at
            s["hours"] += (at - s.pop("_open", at)).total_seconds() / 3600
            boundary = at
    step_list = []
    for name in order:
        s = steps[name]
        open_since = s.pop("_open", None)
        hours = s["hours"] + ((now - open_since).total_seconds() / 3600 if s["completed_at"] is None
                              and open_since is not None and finished is None else 0.0)
        step_list.append({**s, "hours": round(hours, 3),
                          "time_to_first_action_hours": _hours(s["entered_at"], s["first_action_at"])})
    first_action = min((_aware(e.at) for e in events if e.action in ACTIONS), default=None)
    finish_event = next((e for e in events if e.action == FINISH), None)
    return {
        "instance_id": instance_id,
        "started_at": started, "first_action_at": first_action, "finished_at": finished, "last_event_at": last,
        "status": (finish_event.detail or {}).get("outcome") if finish_event is not None else "running",
        "time_to_first_action_hours": _hours(started, first_action),
        "approval_hours": round(sum(s["hours"] for s in step_list), 3) if step_list else None,
        "lead_time_hours": _hours(started, last if finished is not None else now),
        "steps": step_list,
    }


def instance_metrics(conn: sa.Connection, instance_id: int, now: dt.datetime | None = None) -> dict[str, Any]:
    """Time to first action, approval time and lead time of one instance, and per step. A running
    instance is measured up to `now`."""
    events = _events(conn, [instance_id]).get(instance_id)
    if not events:
        raise NotFound(f"no audit events for workflow instance {instance_id}")
    return _summarise(instance_id, events, _aware(now or dt.datetime.now(dt.UTC)))


def percentile(values: list[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 3)


def _stats(values: list[float], prefix: str) -> dict[str, float | None]:
    return {f"avg_{prefix}_hours": round(sum(values) / len(values), 3) if values else None,
            f"p50_{prefix}_hours": percentile(values, 50), f"p90_{prefix}_hours": percentile(values, 90),
            f"max_{prefix}_hours": round(max(values), 3) if values else None}


def workflow_metrics(conn: sa.Connection, app: str, workflow: str, since: dt.datetime | None = None,
                     now: dt.datetime | None = None) -> dict[str, Any]:
    """Aggregates over the finished instances of a workflow started since `since`: {count, running,
    avg/p50/p90/max of approval, lead time and time to first action (hours), per step, by status}."""
    now = _aware(now or dt.datetime.now(dt.UTC))
    where = [audit_events.c.action == START, audit_events.c.app == app,
             audit_events.c.detail["workflow"].as_string() == workflow]
    if since is not None:
        where.append(audit_events.c.at >= _aware(since))
    ids = list(conn.execute(sa.select(_instance_key()).where(*where).order_by(audit_events.c.at.desc())
                            .limit(MAX_INSTANCES)).scalars())
    summaries = [_summarise(i, ev, now) for i, ev in _events(conn, [i for i in ids if i is not None]).items()
                 if any(e.action == START for e in ev)]
    done = [s for s in summaries if s["finished_at"] is not None]
    by_status: dict[str, int] = defaultdict(int)
    for s in done:
        by_status[s["status"] or "finished"] += 1
    step_hours: dict[str, list[float]] = defaultdict(list)
    for s in done:
        for step in s["steps"]:
            if step["completed_at"] is not None:
                step_hours[step["step"]].append(step["hours"])
    return {
        "app": app, "workflow": workflow, "since": since, "count": len(done),
        "running": len(summaries) - len(done), "by_status": dict(by_status),
        **_stats([s["approval_hours"] for s in done if s["approval_hours"] is not None], "approval"),
        **_stats([s["lead_time_hours"] for s in done if s["lead_time_hours"] is not None], "lead_time"),
        **_stats([s["time_to_first_action_hours"] for s in done
                  if s["time_to_first_action_hours"] is not None], "first_action"),
        "steps": {name: _stats(values, "step") | {"count": len(values)} for name, values in step_hours.items()},
    }
