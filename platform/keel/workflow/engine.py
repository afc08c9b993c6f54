"""The workflow engine: starting an instance and every action on it (approve, reject, send back,
transfer, add approvers, CC, withdraw, remind, resubmit, escalate).

Each action is one transition in the caller's transaction (`engine.begin()`): it locks the instance row
(`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers), re-reads
the task under that lock, checks everything — who acts, the step allows it, the task is still open —
and only then writes. A refused action raises before any write (403 PermissionDenied, 409 Conflict,
422 FieldErrors, 404 NotFound), so the database is left as it was. Every action is audited as
`workflow.<action>` with the instance, step, task and comment.
"""
from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from keel.actor import Actor
from keel.errors import Conflict, FieldErrors, NotFound, PermissionDenied
from keel.storage.audit import utcnow
from keel.storage.system import users
from keel.storage.workflow_tables import FINISHED, wf_instances, wf_tasks
from keel.workflow import notices
from keel.workflow import steps as machine
from keel.workflow.definition import Step, workflows_of
from keel.workflow.resolvers import NoApprover, ResolveContext

log = logging.getLogger("keel.workflow")
MAX_COMMENT = 2000
MAX_USERS = 20


# ---- starting ------------------------------------------------------------------------------------------

# Built once (see the locking statements below): a call only binds its values.
_OPEN_INSTANCE = sa.select(wf_instances.c.id).where(
    wf_instances.c.app == sa.bindparam("app"), wf_instances.c.entity == sa.bindparam("entity"),
    wf_instances.c.record_id == sa.bindparam("record_id"), wf_instances.c.workflow == sa.bindparam("workflow"),
    wf_instances.c.status.in_(("pending", "returned")))
_INSERT_INSTANCE = wf_instances.insert()


def start(conn: sa.Connection, built, workflow_id: str, record_id: int, actor: Actor) -> int:
    """Start `workflow_id` for a record, pinned to the app's latest version (`built`); returns the
    instance id. Raises NoApprover (422) when a step on the way would find nobody, before anything is
    written."""
    if actor.is_system:
        raise PermissionDenied("a workflow is started by a person: the system actor has no superior to ask")
    app_id = built.id
    wf = workflows_of(built.definition).get(workflow_id)
    if wf is None:
        raise NotFound(f"no workflow '{workflow_id}' in app '{app_id}'")
    table = built.table(wf.entity)
    row = conn.execute(sa.select(table).where(table.c.id == record_id)).first()
    if row is None:
        raise NotFound(f"no {wf.entity} record {record_id}")
    values = dict(row._mapping)
    from keel.workflow.starters import check_may_start

    check_may_start(conn, built, wf, values, actor)
    open_one = conn.execute(_OPEN_INSTANCE, {"app": app_id, "entity": wf.entity, "record_id": record_id,
                                             "workflow": workflow_id}).first()
    if open_one is not None:
        raise Conflict(f"this record already has request #{open_one.id} in progress")
    try:
        planned = machine.plan_path(ResolveContext(conn, built.definition, wf, values, actor.user_id), wf, wf.start)
    except NoApprover as e:
        report_unresolved(app_id, e, actor)
        raise
    now = utcnow()
    row = {"app": app_id, "workflow": workflow_id, "app_version": built.version, "entity": wf.entity,
           "record_id": record_id, "submitter_id": actor.user_id, "status": "pending", "state": wf.start, "visit": 0,
           "step_started_at": None, "started_at": now, "updated_at": now, "finished_at": None,
           "last_reminded_at": None}
    row["id"] = conn.execute(_INSERT_INSTANCE, row).inserted_primary_key[0]
    run = machine.Run(conn, row, built.definition, wf, built, actor, now, values=values, planned=planned)
    machine.audit(run, "start", app_version=built.version, submitter=actor.user_id, state=wf.start)
    machine.sync_status(run)
    machine.enter(run, wf.start)
    return row["id"]


def report_unresolved(app_id: str, e: NoApprover, actor: Actor) -> None:
    """Tell the administrators about a request nobody could approve. The submitter's transaction rolls
    back, so the audit event is written after it, by the request's teardown (keel.api.workflows)."""
    log.warning("workflow %s/%s: no approver at step %s for %s: %s", app_id, e.workflow, e.step, actor.username,
                e.reason)
    from flask import g, has_request_context

    if has_request_context():
        g.setdefault("keel_workflow_unresolved", []).append({
            "app": app_id, "workflow": e.workflow, "step": e.step, "rule": e.rule, "reason": e.reason,
            "submitter": actor.user_id})


def starting_workflows(built, *, form_id: str | None = None, entity_id: str | None = None) -> list[str]:
    return [w.id for w in workflows_of(built.definition).values()
            if (form_id is not None and w.form == form_id) or (entity_id is not None and w.form is None
                                                                and w.entity == entity_id)]


def start_for(conn: sa.Connection, built, record: dict, actor: Actor, *, form_id: str | None = None,
              entity_id: str | None = None) -> list[int]:
    """Start the workflows a new record triggers: those on the form it was submitted with, or on its
    entity. Records the system creates (imports, actions) start none: they have no submitter."""
    if actor.is_system:
        return []
    started = []
    for wid in starting_workflows(built, form_id=form_id, entity_id=entity_id):
        wf = workflows_of(built.definition)[wid]
        if wf.when:
            from keel.expressions import ExpressionError, compile_expression

            table = built.table(wf.entity)
            row = conn.execute(sa.select(table).where(table.c.id == record["id"])).one()
            try:
                if not compile_expression(wf.when).evaluate(dict(row._mapping)):
                    continue
            except ExpressionError:
                continue
        started.append(start(conn, built, wid, record["id"], actor))
    return started


# ---- locking and checking --------------------------------------------------------------------------------

# The statements of every action, built once: each call then only binds its ids (building the expression
# and its cache key anew on every call costs more than running it on SQLite). The instance row comes
# with the app's latest version number (machine.LATEST_VERSION), which load_run needs anyway; asking in
# the same statement saves a round trip. PostgreSQL locks only the instance row: the subquery is a read.
_LOCK_INSTANCE = (sa.select(wf_instances, machine.LATEST_VERSION)
                  .where(wf_instances.c.id == sa.bindparam("instance_id")).with_for_update())
_LOCK_INSTANCE_NOWAIT = _LOCK_INSTANCE.with_for_update(nowait=True)
_LOCK_TASK_INSTANCE = (sa.select(wf_instances, machine.LATEST_VERSION).where(
    wf_instances.c.id == sa.select(wf_tasks.c.instance_id).where(wf_tasks.c.id == sa.bindparam("task_id"))
    .scalar_subquery()).with_for_update())
_TASK = sa.select(wf_tasks).where(wf_tasks.c.id == sa.bindparam("task_id"))
_MARK = wf_tasks.update().where(wf_tasks.c.id == sa.bindparam("task_id"), wf_tasks.c.status == "pending")


def _lock_instance(conn: sa.Connection, instance_id: Any) -> Any:
    if isinstance(instance_id, bool) or not isinstance(instance_id, int):
        raise NotFound(f"no workflow instance {instance_id!r}")
    row = conn.execute(_LOCK_INSTANCE, {"instance_id": instance_id}).first()
    if row is None:
        raise NotFound(f"no workflow instance {instance_id}")
    return row


def _lock_task(conn: sa.Connection, task_id: Any) -> tuple[Any, Any]:
    """The task and its instance, the instance locked first and the task read after the lock, so two
    approvers of one task see each other's decision."""
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise NotFound(f"no task {task_id!r}")
    inst = conn.execute(_LOCK_TASK_INSTANCE, {"task_id": task_id}).first()
    if inst is None:
        raise NotFound(f"no task {task_id}")
    task = conn.execute(_TASK, {"task_id": task_id}).one()
    return task, inst


def comment_of(comment: Any) -> str | None:
    """A task comment as sent (None when empty); FieldErrors when it is not text."""
    if comment is None or comment == "":
        return None
    if not isinstance(comment, str):
        errors = FieldErrors()
        errors.add("comment", "Must be text.")
        raise errors
    if len(comment) > MAX_COMMENT:
        errors = FieldErrors()
        errors.add("comment", "Must be at most %(max)s characters long.", max=MAX_COMMENT)
        raise errors
    return comment


def _task_run(conn: sa.Connection, runtime, task_id: Any, actor: Actor, action: str) -> tuple[machine.Run, Any, Step]:
    """Lock, then check that `actor` may do `action` on the task now. Raises before any write."""
    task, inst = _lock_task(conn, task_id)
    if task.assignee_id != actor.user_id and not actor.is_admin:
        raise PermissionDenied("this task is assigned to someone else")
    if task.kind != "approve":
        raise Conflict("a CC is for information: there is nothing to decide")
    run = machine.load_run(conn, runtime, inst, actor)
    step = run.workflow.steps.get(task.step)
    if step is None:
        raise Conflict(f"step '{task.step}' is not in the version of the workflow this request runs on")
    if actor.user_id == inst.submitter_id and not step.allow_self_approval:
        raise PermissionDenied("you cannot decide on your own request")
    if inst.status != "pending":
        raise Conflict(f"this request is {inst.status}: nothing can be decided on it any more")
    if task.status != "pending":
        raise Conflict(f"this task is already {task.status.replace('_', ' ')}")
    if not step.allows(action):
        raise PermissionDenied(f"step '{step.id}' does not allow {action.replace('_', ' ')}")
    return run, task, step


def _mark(run: machine.Run, task: Any, status: str, comment: str | None) -> None:
    done = run.conn.execute(_MARK, {"task_id": task.id, "status": status, "comment": comment,
                                    "acted_by": run.actor.user_id, "acted_at": run.now})
    if done.rowcount != 1:  # the lock makes this unreachable; kept as the last line of defence
        raise Conflict("this task was decided meanwhile")
    notices.cancel_tasks(run.conn, [task.id], run.id, [task.assignee_id])


def _detail(task: Any, comment: str | None, **more: Any) -> dict[str, Any]:
    """What an action's audit event says; `assignee` differs from the event's user when an admin acted."""
    return {"step": task.step, "visit": task.visit, "task_id": task.id, "assignee": task.assignee_id,
            "comment": comment, **more}


# ---- deciding -------------------------------------------------------------------------------------------

def approve(conn: sa.Connection, runtime, task_id: int, actor: Actor, comment: str | None = None, *,
            bulk: bool = False) -> dict:
    """同意. `bulk`: part of a bulk approval, which the step must allow as well."""
    comment = comment_of(comment)
    run, task, step = _task_run(conn, runtime, task_id, actor, "approve")
    if bulk and not step.allows("bulk"):
        raise PermissionDenied(f"step '{step.id}' does not allow bulk approval")
    _mark(run, task, "approved", comment)
    machine.audit(run, "approve", **_detail(task, comment))
    machine.after_decision(run, step, "approve")
    return {"task": task.id, "instance": run.id, "status": run.instance["status"], "state": run.instance["state"]}


def reject(conn: sa.Connection, runtime, task_id: int, actor: Actor, comment: str | None = None) -> dict:
    comment = comment_of(comment)
    run, task, step = _task_run(conn, runtime, task_id, actor, "reject")
    if step.reject_requires_comment and not (comment or "").strip():
        errors = FieldErrors()
        errors.add("comment", "A rejection needs a comment: say why.")
        raise errors
    _mark(run, task, "rejected", comment)
    machine.audit(run, "reject", **_detail(task, comment))
    machine.after_decision(run, step, "reject")
    return {"task": task.id, "instance": run.id, "status": run.instance["status"], "state": run.instance["state"]}


def send_back(conn: sa.Connection, runtime, task_id: int, actor: Actor, to_step: Any, comment: str | None = None) -> dict:
    """退回: back to an earlier step this request has passed (its approvers decide again), or to the
    submitter ("submitter") for changes and resubmission."""
    comment = comment_of(comment)
    run, task, step = _task_run(conn, runtime, task_id, actor, "send_back")
    passed = set(conn.execute(sa.select(wf_tasks.c.step).where(
        wf_tasks.c.instance_id == run.id, wf_tasks.c.kind == "approve", wf_tasks.c.step != step.id)).scalars())
    if to_step != "submitter" and (not isinstance(to_step, str) or to_step not in passed
                                   or to_step not in run.workflow.steps):
        errors = FieldErrors()
        errors.add("to_step", "Choose an earlier step of this request, or submitter: %(steps)s.",
                   steps=", ".join(sorted(passed | {"submitter"})))
        raise errors
    _mark(run, task, "sent_back", comment)
    machine.close_open(run)
    machine.audit(run, "send_back", **_detail(task, comment, to_step=to_step))
    if to_step == "submitter":
        machine.save(run, status="returned")
        machine.sync_status(run)
        machine.tell_submitter(run, "returned", step)
    else:
        machine.enter(run, to_step)
    return {"task": task.id, "instance": run.id, "status": run.instance["status"], "state": run.instance["state"]}


def _users(conn: sa.Connection, refs: Any, field: str) -> list[int]:
    """User ids for a list of usernames or ids: every one must be an active user."""
    if isinstance(refs, (str, int)) and not isinstance(refs, bool):
        refs = [refs]
    errors = FieldErrors()
    if not isinstance(refs, list) or not refs or len(refs) > MAX_USERS:
        errors.add(field, "Give 1 to %(max)s users (usernames or ids).", max=MAX_USERS)
        raise errors
    out = []
    for ref in refs:
        col = users.c.username if isinstance(ref, str) else users.c.id
        row = None
        if isinstance(ref, (str, int)) and not isinstance(ref, bool):
            row = conn.execute(sa.select(users.c.id, users.c.active).where(col == ref)).first()
        if row is None or not row.active:
            errors.add(field, "No active user %(user)s.", user=str(ref)[:150])
        elif row.id not in out:
            out.append(row.id)
    if errors:
        raise errors
    return out


def _newcomers(run: machine.Run, step: Step, people: list[int], field: str) -> None:
    """One person decides at most once per step: nobody who has an open task in it or already decided
    in it (approved, rejected, sent back) gets another, whether by transfer or by adding approvers."""
    errors = FieldErrors()
    tasks = machine.step_tasks(run, step.id)
    open_ = {t.assignee_id for t in tasks if t.status in machine.OPEN}
    decided = {t.assignee_id for t in tasks if t.status in machine.SEATED} - open_
    names = dict(run.conn.execute(sa.select(users.c.id, users.c.username).where(users.c.id.in_(people))).all())
    for uid in people:
        who = names.get(uid, str(uid))
        if uid == run.instance["submitter_id"] and not step.allow_self_approval:
            errors.add(field, "The submitter cannot approve their own request.")
        elif uid in open_:
            errors.add(field, "User %(user)s already has this task.", user=who)
        elif uid in decided:
            errors.add(field, "User %(user)s already decided at this step: one person decides once per step.",
                       user=who)
    if errors:
        raise errors


def transfer(conn: sa.Connection, runtime, task_id: int, actor: Actor, to_user: Any, comment: str | None = None) -> dict:
    """转交: the task goes to someone else, who decides instead."""
    comment = comment_of(comment)
    run, task, step = _task_run(conn, runtime, task_id, actor, "transfer")
    (target,) = _users(conn, [to_user] if not isinstance(to_user, list) else to_user[:1], "to_user")
    _newcomers(run, step, [target], "to_user")
    _mark(run, task, "transferred", comment)
    (new_id,) = machine.assign(run, step, [target], ["pending"], [task.seq], [task.on_behalf_of or task.assignee_id])
    machine.audit(run, "transfer", **_detail(task, comment, to_user=target, new_task=new_id))
    return {"task": new_id, "instance": run.id, "status": run.instance["status"], "state": run.instance["state"]}


def add_approvers(conn: sa.Connection, runtime, task_id: int, actor: Actor, people: Any, comment: str | None = None) -> dict:
    """加签: more approvers at this step. In a sequential chain they come right after this task; in the
    other modes they decide alongside the others (an any-of step still ends at the first approval)."""
    comment = comment_of(comment)
    run, task, step = _task_run(conn, runtime, task_id, actor, "add_approvers")
    ids = _users(conn, people, "users")
    _newcomers(run, step, ids, "users")
    if step.mode == "sequential":
        conn.execute(wf_tasks.update().where(
            wf_tasks.c.instance_id == run.id, wf_tasks.c.step == step.id, wf_tasks.c.visit == task.visit,
            wf_tasks.c.seq > task.seq).values(seq=wf_tasks.c.seq + len(ids)))
        new = machine.assign(run, step, ids, ["waiting"] * len(ids), [task.seq + 1 + i for i in range(len(ids))])
    else:
        new = machine.assign(run, step, ids, ["pending"] * len(ids), [task.seq] * len(ids))
    machine.audit(run, "add_approvers", **_detail(task, comment, users=ids, new_tasks=new))
    return {"tasks": new, "instance": run.id}


def cc(conn: sa.Connection, runtime, task_id: int, actor: Actor, people: Any, comment: str | None = None) -> dict:
    """抄送: people who are told and may read the request, but do not decide."""
    comment = comment_of(comment)
    run, task, step = _task_run(conn, runtime, task_id, actor, "cc")
    ids = _users(conn, people, "users")
    new = machine.insert_tasks(run, step, ids, ["informed"] * len(ids), [0] * len(ids), kind="cc")
    machine.audit(run, "cc", **_detail(task, comment, users=ids, new_tasks=new))
    notices.send_engine_message(conn, "cc", app=run.instance["app"], recipients=ids, instance_id=run.id,
                                workflow_label=run.workflow.label, step_label=step.label, actor=actor,
                                app_def=run.built.definition)
    return {"tasks": new, "instance": run.id}


# ---- the submitter's actions ------------------------------------------------------------------------------

def _submitter_run(conn: sa.Connection, runtime, instance_id: Any, actor: Actor, action: str,
                   statuses: tuple[str, ...]) -> machine.Run:
    inst = _lock_instance(conn, instance_id)
    if inst.submitter_id != actor.user_id and not actor.is_admin:
        raise PermissionDenied(f"only the submitter may {action} this request")
    if inst.status not in statuses:
        raise Conflict(f"this request is {inst.status}: you cannot {action} it now")
    run = machine.load_run(conn, runtime, inst, actor)
    step = run.workflow.steps.get(inst.state)
    if inst.status == "pending" and step is not None and not step.allows(action):
        raise PermissionDenied(f"step '{step.id}' does not allow {action}")
    return run


def withdraw(conn: sa.Connection, runtime, instance_id: int, actor: Actor, comment: str | None = None) -> dict:
    """撤回: the submitter takes the request back; open tasks are cancelled."""
    comment = comment_of(comment)
    run = _submitter_run(conn, runtime, instance_id, actor, "withdraw", ("pending", "returned"))
    open_people = [t.assignee_id for t in conn.execute(sa.select(wf_tasks.c.assignee_id).where(
        wf_tasks.c.instance_id == run.id, wf_tasks.c.status.in_(machine.OPEN)))]
    machine.audit(run, "withdraw", step=run.instance["state"], comment=comment)
    machine.finish(run, run.workflow.final_state("withdrawn"))
    notices.send_engine_message(conn, "withdrawn", app=run.instance["app"], recipients=open_people,
                                instance_id=run.id, workflow_label=run.workflow.label, step_label=None, actor=actor,
                                app_def=run.built.definition)
    return {"instance": run.id, "status": run.instance["status"], "state": run.instance["state"]}


REMIND_INTERVAL_SECONDS = 600


def remind(conn: sa.Connection, runtime, instance_id: int, actor: Actor, comment: str | None = None) -> dict:
    """催办: remind the approvers who have not acted yet (at most once every ten minutes)."""
    comment = comment_of(comment)
    run = _submitter_run(conn, runtime, instance_id, actor, "remind", ("pending",))
    last = run.instance.get("last_reminded_at")
    if last is not None:
        last = last if last.tzinfo else last.replace(tzinfo=run.now.tzinfo)
        if (run.now - last).total_seconds() < REMIND_INTERVAL_SECONDS:
            raise Conflict("the approvers were reminded less than ten minutes ago")
    pending = machine.step_tasks(run)
    people = [t.assignee_id for t in pending if t.status == "pending"]
    machine.save(run, last_reminded_at=run.now)
    step = run.workflow.steps.get(run.instance["state"])
    machine.audit(run, "remind", step=run.instance["state"], comment=comment, users=people)
    notices.send_engine_message(conn, "remind", app=run.instance["app"], recipients=people, instance_id=run.id,
                                workflow_label=run.workflow.label, step_label=step.label if step else None,
                                actor=actor, app_def=run.built.definition)
    return {"instance": run.id, "reminded": people}


def resubmit(conn: sa.Connection, runtime, instance_id: int, actor: Actor, comment: str | None = None) -> dict:
    """A request returned for changes goes through the workflow again from the start, with the record as
    the submitter changed it (on the same pinned version)."""
    comment = comment_of(comment)
    run = _submitter_run(conn, runtime, instance_id, actor, "resubmit", ("returned",))
    try:
        run.planned = machine.plan_path(machine.resolve_context(run), run.workflow, run.workflow.start)
    except NoApprover as e:
        report_unresolved(run.instance["app"], e, actor)
        raise
    machine.audit(run, "resubmit", comment=comment)
    machine.save(run, status="pending")
    machine.sync_status(run)
    machine.enter(run, run.workflow.start)
    return {"instance": run.id, "status": run.instance["status"], "state": run.instance["state"]}


# ---- content binding ---------------------------------------------------------------------------------------

_ROUND_START = ("workflow.start", "workflow.resubmit", "workflow.restart")


def restart_after_edit(conn: sa.Connection, runtime, instance_id: int, actor: Actor, fields: list[str]) -> bool:
    """bind_content: the record of a pending request was edited. When anyone approved since the request
    was (re)submitted or last restarted, the approvals start again from the first step, on the content
    as it is now; the timeline and the audit trail say so (`restart`). Returns whether it restarted."""
    from keel.storage.system import audit_events

    # The editor holds the record's row lock already; an approver locks the instance first and the
    # record last (when the request ends). Waiting here could deadlock with them, so do not wait: an
    # edit that meets a decision in progress is a 409 to retry (SQLite serialises writers anyway).
    try:  # the whole write is refused, so the aborted transaction is rolled back by the caller
        inst = conn.execute(_LOCK_INSTANCE_NOWAIT, {"instance_id": instance_id}).first()
    except sa.exc.OperationalError:
        from keel.i18n import translate

        raise Conflict(translate("This request is being decided right now: try your change again in a moment.")
                       ) from None
    if inst is None or inst.status != "pending":
        return False
    run = machine.load_run(conn, runtime, inst, actor)
    if run.workflow.status_field in fields:
        fields = [f for f in fields if f != run.workflow.status_field]
    if not fields:
        return False
    since = conn.execute(sa.select(sa.func.max(audit_events.c.at)).where(
        audit_events.c.app == inst.app, audit_events.c.entity == inst.entity,
        audit_events.c.record_id == inst.record_id, audit_events.c.action.in_(_ROUND_START))).scalar()
    approved = sa.select(wf_tasks.c.id).where(wf_tasks.c.instance_id == inst.id, wf_tasks.c.status == "approved",
                                              wf_tasks.c.kind == "approve")
    if since is not None:
        approved = approved.where(wf_tasks.c.acted_at >= since)
    if conn.execute(approved.limit(1)).first() is None:
        return False
    try:
        run.planned = machine.plan_path(machine.resolve_context(run), run.workflow, run.workflow.start)
    except NoApprover as e:
        report_unresolved(run.instance["app"], e, actor)
        raise
    machine.close_open(run)
    machine.audit(run, "restart", reason="content_changed", fields=fields)
    machine.enter(run, run.workflow.start)
    return True


# ---- for SLA timers --------------------------------------------------------------------------------------

def escalate_task(conn: sa.Connection, runtime, task_id: int, to_user_id: int, actor: Actor) -> int:
    """Reassign a pending task to `to_user_id` (an overdue task going to the approver's manager).
    Returns the new task's id. Only the system or an administrator escalates."""
    if not actor.is_admin:
        raise PermissionDenied("only the system or an administrator escalates tasks")
    task, inst = _lock_task(conn, task_id)
    if inst.status != "pending" or task.status != "pending" or task.kind != "approve":
        raise Conflict(f"task {task_id} is no longer pending")
    (target,) = _users(conn, [to_user_id], "to_user")
    run = machine.load_run(conn, runtime, inst, actor)
    step = run.workflow.steps[task.step]
    if target == inst.submitter_id and not step.allow_self_approval:
        raise Conflict(f"task {task_id} cannot go to {target}: the submitter does not approve their own request")
    already = [t for t in machine.step_tasks(run, step.id) if t.assignee_id == target and t.status in machine.OPEN]
    conn.execute(wf_tasks.update().where(wf_tasks.c.id == task.id)
                 .values(status="escalated", acted_at=run.now, acted_by=actor.user_id))
    notices.cancel_tasks(conn, [task.id], inst.id, [task.assignee_id])
    if already:  # the superior already decides in this step: their task carries the decision
        machine.audit(run, "escalate", step=task.step, visit=task.visit, task_id=task.id,
                      from_user=task.assignee_id, to_user=target, new_task=already[0].id)
        return already[0].id
    new_id = machine.insert_tasks(run, step, [target], ["pending"], [task.seq],
                                  on_behalf_of=[task.on_behalf_of or task.assignee_id])[0]
    notices.send_engine_message(conn, "task", app=inst.app, recipients=[target], instance_id=inst.id,
                                workflow_label=run.workflow.label, step_label=step.label, actor=actor,
                                app_def=run.built.definition)
    machine.audit(run, "escalate", step=task.step, visit=task.visit, task_id=task.id, from_user=task.assignee_id,
                  to_user=target, new_task=new_id)
    return new_id


def pending_tasks_of_step(conn: sa.Connection, instance_id: int, step_id: str) -> list[dict]:
    """The open tasks of a step's current visit (empty when the instance is elsewhere or finished)."""
    inst = conn.execute(sa.select(wf_instances.c.visit, wf_instances.c.state, wf_instances.c.status)
                        .where(wf_instances.c.id == instance_id)).first()
    if inst is None or inst.status in FINISHED or inst.state != step_id:
        return []
    rows = conn.execute(sa.select(wf_tasks).where(
        wf_tasks.c.instance_id == instance_id, wf_tasks.c.step == step_id, wf_tasks.c.visit == inst.visit,
        wf_tasks.c.kind == "approve", wf_tasks.c.status == "pending").order_by(wf_tasks.c.id)).all()
    return [dict(r._mapping) for r in rows]
