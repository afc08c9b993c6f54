"""SLA timers of approval steps: a reminder before the due time, an overdue notice at it, and escalation
to the approver's superior.

Due times live in the database (keel_timers), never only in a process: `schedule_step` writes them in
the transaction that creates the tasks, and whichever process runs `fire_due_timers` next fires them —
after a restart too. Firing a timer is one transaction that sets `fired_at` (guarded by
`fired_at IS NULL`, so two processes never both fire one; PostgreSQL picks rows with
`FOR UPDATE SKIP LOCKED`, so they do not even wait for each other) together with everything the timer
does (inbox messages, the escalation). A crash in the middle rolls all of it back and leaves the timer
for the next run; a failing timer is retried with back-off and recorded.

A step's `sla` in the workflow definition:

    {"working_days": 7, "remind_before_days": 1, "escalate": "manager_of_approver" | "none",
     "timezone": "Asia/Shanghai", "max_escalations": 3,
     "remind_template": ..., "overdue_template": ..., "escalate_template": ...}   (notification ids)
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from keel.actor import SYSTEM
from keel.errors import KeelError
from keel.jobs.types import JobType
from keel.storage.audit import record_event
from keel.storage.notify_tables import timers
from keel.storage.system import users
from keel.workflow.calendar import DEFAULT_TZ, add_working_days

log = logging.getLogger("keel.workflow.timers")

KINDS = ("remind", "due", "escalate")
ESCALATE_RULES = ("manager_of_approver",)
MAX_ATTEMPTS = 5
RETRY_SECONDS = (60, 300, 900, 3600)
DEFAULT_MAX_ESCALATIONS = 3
# The instance page the engine serves; inbox messages link to it.
INSTANCE_LINK = "/workflows/instances/{id}"


class SLAError(KeelError):
    """A step's `sla` that cannot be scheduled."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def sla_problem(sla: Any) -> str | None:
    """Why a step's `sla` is unusable (None: fine); for definition checks and `schedule_step`."""
    if not isinstance(sla, Mapping):
        return "`sla` must be an object"
    days = sla.get("working_days")
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365:
        return "`sla.working_days` must be a whole number from 1 to 365"
    before = sla.get("remind_before_days", 0)
    if isinstance(before, bool) or not isinstance(before, int) or not 0 <= before <= 365:
        return "`sla.remind_before_days` must be a whole number from 0 to 365"
    if sla.get("escalate") not in (None, "none", *ESCALATE_RULES):
        return f"`sla.escalate` must be one of none, {', '.join(ESCALATE_RULES)}"
    levels = sla.get("max_escalations", DEFAULT_MAX_ESCALATIONS)
    if isinstance(levels, bool) or not isinstance(levels, int) or not 0 <= levels <= 10:
        return "`sla.max_escalations` must be a whole number from 0 to 10"
    tz = sla.get("timezone", DEFAULT_TZ)
    try:
        import zoneinfo

        zoneinfo.ZoneInfo(tz)
    except (TypeError, ValueError, zoneinfo.ZoneInfoNotFoundError):
        return f"`sla.timezone` {tz!r} is not a known time zone"
    return None


# -- scheduling and cancelling (in the engine's transaction) ---------------------------------------

def _insert_ignoring_duplicates(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    for row in rows:
        conn.execute(insert(timers).values(**row).on_conflict_do_nothing(index_elements=["task_id", "kind"]))


def schedule_step(conn: sa.Connection, instance_id: int, step_id: str, task_ids: list[int],
                  sla: Mapping[str, Any] | None, started_at: dt.datetime, *, level: int = 0) -> list[int]:
    """Timers for the tasks of a step entered at `started_at`: due after `working_days`, a reminder
    `remind_before_days` working days earlier, escalation at the due time when the step asks for it.
    Idempotent per (task, kind). Returns the ids of the timers of these tasks."""
    if sla is None or not task_ids:
        return []
    problem = sla_problem(sla)
    if problem:
        raise SLAError(f"step {step_id}: {problem}")
    tz = sla.get("timezone", DEFAULT_TZ)
    started_at = _aware(started_at)
    due = add_working_days(started_at, sla["working_days"], tz)
    plan = [("due", due)]
    before = sla.get("remind_before_days", 0)
    remind_at = add_working_days(due, -before, tz) if before else None
    if remind_at is not None and remind_at > started_at:  # a reminder before the step began is no reminder
        plan.append(("remind", remind_at))
    if sla.get("escalate") in ESCALATE_RULES:
        plan.append(("escalate", due))
    now = _now()
    detail = {"sla": dict(sla), "level": level, "started_at": started_at.isoformat()}
    _insert_ignoring_duplicates(conn, [
        {"kind": kind, "instance_id": instance_id, "step_id": step_id, "task_id": task_id, "due_at": at,
         "attempts": 0, "detail": detail, "created_at": now}
        for task_id in task_ids for kind, at in plan])
    return list(conn.execute(sa.select(timers.c.id).where(timers.c.task_id.in_(task_ids))
                             .order_by(timers.c.id)).scalars())


# Built once: every decided task runs it (a call only binds its values).
_CANCEL = timers.update().where(timers.c.task_id.in_(sa.bindparam("task_ids", expanding=True)),
                                timers.c.fired_at.is_(None), timers.c.cancelled_at.is_(None))


def cancel_tasks(conn: sa.Connection, task_ids: list[int]) -> int:
    """Cancel the unfired timers of tasks that were decided, withdrawn, transferred or escalated."""
    if not task_ids:
        return 0
    return conn.execute(_CANCEL, {"task_ids": list(task_ids), "cancelled_at": _now(), "outcome": "cancelled"}).rowcount


# -- firing --------------------------------------------------------------------------------------------

def _due_clause(now: dt.datetime):
    c = timers.c
    return sa.and_(c.fired_at.is_(None), c.cancelled_at.is_(None), c.due_at <= now,
                   sa.or_(c.retry_at.is_(None), c.retry_at <= now))


def _claim_next(conn: sa.Connection, now: dt.datetime, skip: set[int]) -> sa.Row | None:
    """The next due timer, marked fired on `conn` (committed only with its effects)."""
    query = sa.select(timers).where(_due_clause(now), timers.c.id.notin_(skip) if skip else sa.true()) \
        .order_by(timers.c.due_at, timers.c.id).limit(1)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    row = conn.execute(query).first()
    if row is None:
        return None
    claimed = conn.execute(timers.update().where(timers.c.id == row.id, _due_clause(now))
                           .values(fired_at=now, attempts=timers.c.attempts + 1, outcome="fired"))
    return row if claimed.rowcount == 1 else None


def _record_failure(conn: sa.Connection, row: sa.Row, error: BaseException, now: dt.datetime) -> str:
    attempts = row.attempts + 1
    message = f"{type(error).__name__}: {error}"[:2000]
    values: dict[str, Any] = {"attempts": attempts, "last_error": message}
    if attempts >= MAX_ATTEMPTS:
        values.update(fired_at=now, outcome="failed")
        log.error("timer #%s (%s of task %s) failed for good after %s attempts: %s", row.id, row.kind,
                  row.task_id, attempts, message)
    else:
        values["retry_at"] = now + dt.timedelta(seconds=RETRY_SECONDS[min(attempts - 1, len(RETRY_SECONDS) - 1)])
        log.warning("timer #%s (%s of task %s) failed, retried later: %s", row.id, row.kind, row.task_id, message)
    conn.execute(timers.update().where(timers.c.id == row.id, timers.c.fired_at.is_(None)).values(**values))
    return "failed"


def _fail(target: sa.Engine | sa.Connection, row: sa.Row, error: BaseException, now: dt.datetime) -> str:
    if isinstance(target, sa.Engine):
        with target.begin() as conn:
            return _record_failure(conn, row, error, now)
    with target.begin_nested():
        return _record_failure(target, row, error, now)


def fire_due_timers(target: sa.Engine | sa.Connection, runtime, now: dt.datetime | None = None, *,
                    limit: int = 500, deliver: bool = True) -> dict[str, int]:
    """Fire every timer due at `now`: each in its own transaction (an Engine) or savepoint (a
    Connection: a job's transaction). Returns counts: remind, due, escalate, skipped, failed — and
    what the deliveries queued by them did (sent, retry, undelivered) when `deliver` and an Engine."""
    now = _aware(now or _now())
    counts = {"remind": 0, "due": 0, "escalate": 0, "skipped": 0, "failed": 0}
    attempted: set[int] = set()
    is_engine = isinstance(target, sa.Engine)
    while len(attempted) < limit:
        outcome, row = None, None
        try:
            with (target.begin() if is_engine else target.begin_nested()) as unit:
                conn = unit if is_engine else target
                row = _claim_next(conn, now, attempted)
                if row is None:
                    break
                attempted.add(row.id)
                outcome = fire(conn, runtime, row, now)
                if outcome == "skipped":
                    conn.execute(timers.update().where(timers.c.id == row.id).values(outcome="skipped"))
        except Exception as error:  # any failure of one timer: recorded on it, retried later
            if row is None:
                raise
            log.debug("timer #%s failed", row.id, exc_info=True)
            outcome = _fail(target, row, error, now)
        counts[outcome] = counts.get(outcome, 0) + 1
    if deliver and is_engine:
        from keel.notify.delivery import deliver_pending

        sent = deliver_pending(target, runtime.registries.delivery_channels, now=now)
        counts.update(sent=sent["sent"], retry=sent["retry"], undelivered=sent["failed"])
    return counts


# -- what a timer does ------------------------------------------------------------------------------

def _pending_assignee(conn: sa.Connection, row: sa.Row) -> int | None:
    """The assignee of the timer's task while it is still pending (None: decided, moved or gone)."""
    from keel.workflow.engine import pending_tasks_of_step

    for task in pending_tasks_of_step(conn, row.instance_id, row.step_id):
        m = task._mapping if hasattr(task, "_mapping") else task
        if m["id"] == row.task_id:
            return m["assignee_id"]
    return None


def _instance(conn: sa.Connection, instance_id: int) -> sa.Row | None:
    from keel.storage.workflow_tables import wf_instances

    return conn.execute(sa.select(wf_instances).where(wf_instances.c.id == instance_id)).first()


def _workflow_label(conn: sa.Connection, runtime, inst: sa.Row) -> dict[str, str]:
    from keel.definitions.model import Label, thaw

    try:
        found = runtime.latest(conn, inst.app).definition.definitions_of("workflow").get(inst.workflow)
    except KeelError:
        found = None
    label = Label.parse(thaw(found.data.get("label")) if found else None, inst.workflow)
    return {"zh": label.zh, "en": label.en}


def _texts(kind: str, name: Mapping[str, str], inst: sa.Row, due_local: str) -> tuple[dict, dict]:
    """The default subject and body of a timer's message, per language (data, not templates)."""
    n = inst.id
    texts = {
        "remind": ({"zh": f"审批即将到期：{name['zh']} #{n}", "en": f"Approval due soon: {name['en']} #{n}"},
                   {"zh": f"请在 {due_local} 前处理这项审批。", "en": f"Please decide this approval by {due_local}."}),
        "due": ({"zh": f"审批已超时：{name['zh']} #{n}", "en": f"Approval overdue: {name['en']} #{n}"},
                {"zh": f"这项审批已于 {due_local} 到期，请尽快处理。",
                 "en": f"This approval was due at {due_local}; please decide it now."}),
        "escalated_to": ({"zh": f"审批已升级给您：{name['zh']} #{n}",
                          "en": f"Approval escalated to you: {name['en']} #{n}"},
                         {"zh": f"原审批人未在 {due_local} 前处理，审批已转给您。",
                          "en": f"The approver did not decide by {due_local}; the approval is now yours."}),
        "escalated_from": ({"zh": f"审批已升级给上级：{name['zh']} #{n}",
                            "en": f"Approval escalated to your superior: {name['en']} #{n}"},
                           {"zh": f"这项审批已于 {due_local} 到期，已转给您的上级。",
                            "en": f"This approval was due at {due_local} and went to your superior."}),
        "unresolved": ({"zh": f"审批超时且无人可升级：{name['zh']} #{n}",
                        "en": f"Overdue approval with nobody to escalate to: {name['en']} #{n}"},
                       {"zh": f"审批已于 {due_local} 到期，但审批人没有上级（或已达升级上限），请管理员处理。",
                        "en": f"The approval was due at {due_local}, but its approver has no superior (or the "
                              f"escalation limit was reached); an administrator must act."}),
    }
    return texts[kind]


def _message(conn: sa.Connection, runtime, inst: sa.Row, kind: str, recipients: list[int], template: str | None,
             context: dict[str, Any], name: Mapping[str, str], due_local: str) -> list[int]:
    from keel.notify.inbox import send

    subject, body = _texts(kind, name, inst, due_local)
    return send(conn, app=inst.app, template=template, recipients=recipients, context=context,
                link=INSTANCE_LINK.format(id=inst.id), actor=SYSTEM, subject=subject, body=body,
                entity=inst.entity, record_id=inst.record_id, registries=runtime.registries)


def _admins(conn: sa.Connection) -> list[int]:
    return list(conn.execute(sa.select(users.c.id).where(users.c.is_admin.is_(True), users.c.active.is_(True))
                             .order_by(users.c.id)).scalars())


def fire(conn: sa.Connection, runtime, row: sa.Row, now: dt.datetime) -> str:
    """Do what one claimed timer says, on `conn`; returns its outcome (the counts key)."""
    assignee = _pending_assignee(conn, row)
    inst = _instance(conn, row.instance_id)
    if assignee is None or inst is None:
        return "skipped"
    detail = row.detail or {}
    sla = detail.get("sla") or {}
    tz = sla.get("timezone", DEFAULT_TZ)
    import zoneinfo

    # A reminder fires before the task is due: it names the task's due time (its `due` timer), not its own.
    task_due = row.due_at
    if row.kind == "remind":
        task_due = conn.execute(sa.select(timers.c.due_at).where(
            timers.c.task_id == row.task_id, timers.c.kind == "due")).scalar() or row.due_at
    due_local = _aware(task_due).astimezone(zoneinfo.ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")
    name = _workflow_label(conn, runtime, inst)
    context = {"instance_id": inst.id, "workflow": inst.workflow, "step": row.step_id, "due_at": due_local,
               "entity": inst.entity, "record_id": inst.record_id, "workflow_label": name}
    audit = {"timer_id": row.id, "instance_id": inst.id, "step": row.step_id, "task_id": row.task_id,
             "assignee": assignee, "due_at": _aware(task_due).isoformat(), "fired_for": _aware(row.due_at).isoformat()}
    if row.kind == "remind":
        _message(conn, runtime, inst, "remind", [assignee], sla.get("remind_template"), context, name, due_local)
        record_event(conn, SYSTEM, "workflow.sla_remind", app=inst.app, entity=inst.entity,
                     record_id=inst.record_id, detail=audit, at=now)
        return "remind"
    if row.kind == "due":
        _message(conn, runtime, inst, "due", [assignee], sla.get("overdue_template"), context, name, due_local)
        record_event(conn, SYSTEM, "workflow.sla_overdue", app=inst.app, entity=inst.entity,
                     record_id=inst.record_id, detail=audit, at=now)
        return "due"
    return _escalate(conn, runtime, row, inst, assignee, sla, context, name, due_local, audit, now)


def _escalate(conn, runtime, row, inst, assignee: int, sla: Mapping[str, Any], context, name, due_local: str,
              audit: dict[str, Any], now: dt.datetime) -> str:
    level = int((row.detail or {}).get("level", 0))
    limit = sla.get("max_escalations", DEFAULT_MAX_ESCALATIONS)
    to = _escalation_target(conn, inst, row.step_id, assignee) if level < limit else None
    if to is None or to == assignee:
        admins = _admins(conn)
        _message(conn, runtime, inst, "unresolved", admins, None, context, name, due_local)
        record_event(conn, SYSTEM, "workflow.sla_escalation_unresolved", app=inst.app, entity=inst.entity,
                     record_id=inst.record_id, at=now, detail={
                         **audit, "level": level, "notified_admins": admins,
                         "reason": "no superior" if level < limit else "escalation limit reached"})
        return "escalate"
    from keel.workflow.engine import escalate_task

    # escalate_task moves the task and tells the superior that it waits for them (the engine's "task"
    # message); an `escalate_template` of the step adds its own message on top.
    new_task = escalate_task(conn, runtime, row.task_id, to, SYSTEM)
    if sla.get("escalate_template"):
        _message(conn, runtime, inst, "escalated_to", [to], sla["escalate_template"], context, name, due_local)
    _message(conn, runtime, inst, "escalated_from", [assignee], None, context, name, due_local)
    record_event(conn, SYSTEM, "workflow.sla_escalate", app=inst.app, entity=inst.entity,
                 record_id=inst.record_id, at=now, detail={**audit, "to": to, "level": level + 1,
                                                           "new_task_id": new_task})
    if isinstance(new_task, int) and not isinstance(new_task, bool):
        # The superior gets the step's SLA afresh; the level bounds how far up it can climb.
        schedule_step(conn, inst.id, row.step_id, [new_task], sla, now, level=level + 1)
    return "escalate"


def _escalation_target(conn: sa.Connection, inst: sa.Row, step_id: str, assignee: int) -> int | None:
    """The approver's nearest superior who does not already decide (or has decided) in this step and is
    not the submitter: one person decides at most once per step, escalation included."""
    from keel.auth.directory import manager_chain
    from keel.storage.workflow_tables import wf_tasks
    from keel.workflow.steps import SEATED

    seated = set(conn.execute(sa.select(wf_tasks.c.assignee_id).where(
        wf_tasks.c.instance_id == inst.id, wf_tasks.c.step == step_id, wf_tasks.c.visit == inst.visit,
        wf_tasks.c.kind == "approve", wf_tasks.c.status.in_(SEATED))).scalars())
    for boss in manager_chain(conn, assignee):
        if boss not in seated and boss != inst.submitter_id:
            return boss
    return None


# -- the periodic job ----------------------------------------------------------------------------------

class WorkflowTimersJob(JobType):
    """The job type `workflow_timers`: fire what is due and send pending deliveries. An app schedules it
    with a job definition, e.g. {"id": "workflow_timers", "type": "workflow_timers", "cron": "* * * * *"}."""

    name = "workflow_timers"
    label = "Workflow SLA timers: reminders, overdue notices, escalation; pending deliveries"
    params_schema = {"type": "object", "properties": {}, "additionalProperties": False}

    def authorize(self, ctx, params):
        return None if ctx.actor.is_admin else "only the system or an administrator fires SLA timers"

    def run_chunk(self, ctx, params, chunk):
        from keel.notify.delivery import deliver_pending

        # ctx.conn is the chunk's transaction (on SQLite it holds the write lock, so nothing here may
        # open a second writing connection): timers fire in savepoints of it, deliveries are sent on it.
        counts = fire_due_timers(ctx.conn, ctx.runtime, _now(), deliver=False)
        sent = deliver_pending(ctx.conn, ctx.runtime.registries.delivery_channels, now=_now(), limit=50)
        return {**counts, "sent": sent["sent"], "retry": sent["retry"], "undelivered": sent["failed"]}
