"""Reading workflows: a user's tasks, and one instance with its steps, tasks and timeline.

An instance is visible to its submitter, to everyone who has or had a task in it (CC included) and to
administrators; to anyone else it does not exist (404, the same answer as for a missing one)."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from keel.actor import Actor
from keel.errors import FieldErrors, NotFound
from keel.storage.system import audit_events, users
from keel.storage.workflow_tables import TASK_STATUSES, wf_instances, wf_tasks
from keel.workflow import steps as machine
from keel.workflow.definition import workflows_of

MAX_PER_PAGE = 200
TASK_FILTERS = ("all", "open", *TASK_STATUSES)


def _labels(conn: sa.Connection, runtime, app: str, version: int, workflow: str, step: str,
            lang: str) -> tuple[str, str]:
    try:
        wf = workflows_of(machine.pinned_app(conn, runtime, app, version)).get(workflow)
    except Exception:  # a version that no longer loads: show the ids
        wf = None
    if wf is None:
        return workflow, step
    node = wf.node(step)
    return wf.label.get(lang), node.label.get(lang) if node is not None else step


def list_tasks(conn: sa.Connection, runtime, actor: Actor, status: str = "pending", page: int = 1,
               per_page: int = 50, lang: str = "zh") -> dict[str, Any]:
    """The actor's tasks, newest first. `status`: a task status, `open` (pending), or `all`."""
    if status not in TASK_FILTERS:
        errors = FieldErrors()
        errors.add("status", "Unknown status %(value)s; use one of %(known)s.", value=str(status)[:50],
                   known=", ".join(TASK_FILTERS))
        raise errors
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    cond = [wf_tasks.c.assignee_id == actor.user_id]
    if status == "open":
        cond.append(wf_tasks.c.status == "pending")
    elif status != "all":
        cond.append(wf_tasks.c.status == status)
    total = conn.execute(sa.select(sa.func.count()).select_from(wf_tasks).where(*cond)).scalar()
    submitter = users.alias("submitter")
    rows = conn.execute(
        sa.select(wf_tasks, wf_instances.c.app, wf_instances.c.workflow, wf_instances.c.app_version,
                  wf_instances.c.entity, wf_instances.c.record_id, wf_instances.c.status.label("instance_status"),
                  wf_instances.c.state, wf_instances.c.submitter_id, wf_instances.c.started_at,
                  submitter.c.username.label("submitter_username"),
                  submitter.c.display_name.label("submitter_name"))
        .select_from(wf_tasks.join(wf_instances, wf_instances.c.id == wf_tasks.c.instance_id)
                     .outerjoin(submitter, submitter.c.id == wf_instances.c.submitter_id))
        .where(*cond).order_by(wf_tasks.c.id.desc()).limit(per_page).offset((page - 1) * per_page)).all()
    labels: dict[tuple, tuple[str, str]] = {}
    items = []
    for r in rows:
        key = (r.app, r.app_version, r.workflow, r.step)
        if key not in labels:
            labels[key] = _labels(conn, runtime, *key, lang)
        wf_label, step_label = labels[key]
        items.append({
            "id": r.id, "kind": r.kind, "status": r.status, "step": r.step, "step_label": step_label,
            "created_at": r.created_at, "acted_at": r.acted_at, "comment": r.comment, "on_behalf_of": r.on_behalf_of,
            "instance": {"id": r.instance_id, "app": r.app, "workflow": r.workflow, "workflow_label": wf_label,
                         "entity": r.entity, "record_id": r.record_id, "status": r.instance_status,
                         "state": r.state, "started_at": r.started_at,
                         "submitter": {"id": r.submitter_id, "username": r.submitter_username,
                                       "name": r.submitter_name}}})
    return {"items": items, "total": total, "page": page, "per_page": per_page}


def can_read(conn: sa.Connection, inst: Any, actor: Actor) -> bool:
    if actor.is_admin or inst.submitter_id == actor.user_id:
        return True
    return conn.execute(sa.select(wf_tasks.c.id).where(
        wf_tasks.c.instance_id == inst.id,
        sa.or_(wf_tasks.c.assignee_id == actor.user_id, wf_tasks.c.on_behalf_of == actor.user_id)).limit(1)
    ).first() is not None


def instance_view(conn: sa.Connection, runtime, instance_id: int, actor: Actor, lang: str = "zh") -> dict[str, Any]:
    inst = conn.execute(sa.select(wf_instances).where(wf_instances.c.id == instance_id)).first()
    if inst is None or not can_read(conn, inst, actor):
        raise NotFound(f"no workflow instance {instance_id}")
    app = machine.pinned_app(conn, runtime, inst.app, inst.app_version)
    wf = workflows_of(app)[inst.workflow]
    tasks = conn.execute(sa.select(wf_tasks).where(wf_tasks.c.instance_id == inst.id).order_by(wf_tasks.c.id)).all()
    events = conn.execute(sa.select(audit_events).where(
        audit_events.c.app == inst.app, audit_events.c.entity == inst.entity,
        audit_events.c.record_id == inst.record_id, audit_events.c.action.like("workflow.%"))
        .order_by(audit_events.c.id)).all()
    names = dict(conn.execute(sa.select(users.c.id, users.c.username).where(users.c.id.in_(
        {t.assignee_id for t in tasks} | {t.on_behalf_of for t in tasks if t.on_behalf_of}
        | {inst.submitter_id}))).all())
    timeline = []
    for e in events:
        detail = dict(e.detail or {})
        if detail.get("instance") != inst.id:
            continue
        by = detail.pop("by", None)
        for k in ("instance", "workflow"):
            detail.pop(k, None)
        timeline.append({"at": e.at, "action": e.action.removeprefix("workflow."), "user_id": e.user_id, "by": by,
                         **detail})
    return {
        "id": inst.id, "app": inst.app, "app_version": inst.app_version,
        "workflow": {"id": wf.id, "label": wf.label.get(lang)},
        "entity": inst.entity, "record_id": inst.record_id, "status": inst.status, "state": inst.state,
        "submitter": {"id": inst.submitter_id, "username": names.get(inst.submitter_id)},
        "started_at": inst.started_at, "finished_at": inst.finished_at,
        "steps": [{"id": s.id, "label": s.label.get(lang), "mode": s.mode, "quorum": s.quorum,
                   "actions": sorted(s.actions)} for s in wf.steps.values()],
        "tasks": [{"id": t.id, "step": t.step, "visit": t.visit, "seq": t.seq, "kind": t.kind, "status": t.status,
                   "assignee": {"id": t.assignee_id, "username": names.get(t.assignee_id)},
                   "on_behalf_of": t.on_behalf_of, "comment": t.comment, "created_at": t.created_at,
                   "acted_at": t.acted_at} for t in tasks],
        "timeline": timeline,
    }


def task_view(conn: sa.Connection, runtime, task_id: int, actor: Actor, lang: str = "zh") -> dict[str, Any]:
    """One task as its reader sees it: the task, its request, the record (as far as the reader may read
    it) and the plugins' review panels. Visible to whoever may see the request (404 otherwise)."""
    from keel.errors import KeelError
    from keel.storage import query
    from keel.workflow.panels import review_panels

    task = conn.execute(sa.select(wf_tasks).where(wf_tasks.c.id == task_id)).first()
    inst = conn.execute(sa.select(wf_instances).where(wf_instances.c.id == task.instance_id)).first() \
        if task is not None else None
    if inst is None or not can_read(conn, inst, actor):
        raise NotFound(f"no task {task_id}")
    wf_label, step_label = _labels(conn, runtime, inst.app, inst.app_version, inst.workflow, task.step, lang)
    built = machine.latest_built(conn, runtime, inst.app)
    try:
        record = query.get_record(conn, built, inst.entity, inst.record_id, actor)
    except KeelError:
        record = None
    instance = dict(inst._mapping)
    return {
        "task": {"id": task.id, "kind": task.kind, "status": task.status, "step": task.step, "step_label": step_label,
                 "visit": task.visit, "assignee_id": task.assignee_id, "on_behalf_of": task.on_behalf_of,
                 "comment": task.comment, "created_at": task.created_at, "acted_at": task.acted_at},
        "instance": {"id": inst.id, "app": inst.app, "workflow": inst.workflow, "workflow_label": wf_label,
                     "entity": inst.entity, "record_id": inst.record_id, "status": inst.status, "state": inst.state,
                     "submitter_id": inst.submitter_id},
        "record": record,
        "panels": review_panels(conn, built, instance, dict(task._mapping), actor, lang)}
