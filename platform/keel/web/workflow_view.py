"""What the workflow pages show, assembled from the engine's queries: a user's tasks with the request's
title, due time and the actions its step allows; one instance with its steps, tasks and timeline in words;
the workflows and requests of a record; and refusals explained in the reader's language.

Reads only: every change goes through `keel.workflow.engine` (see workflow_pages). Record values are
read through `storage.query` as the reader, so a task never shows what its approver may not read."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from flask import url_for

from keel import formats
from keel.actor import Actor
from keel.errors import Conflict, KeelError, NotFound, PermissionDenied
from keel.i18n import translate
from keel.storage.notify_tables import timers
from keel.storage.workflow_tables import wf_instances, wf_tasks
from keel.web.pages import N_, runtime, user_names
from keel.workflow import steps as machine
from keel.workflow.definition import workflows_of

STATUS_LABELS = {
    "pending": N_("Pending"), "waiting": N_("Waiting"), "returned": N_("Returned for changes"),
    "approved": N_("Approved"), "rejected": N_("Rejected"), "withdrawn": N_("Withdrawn"),
    "sent_back": N_("Sent back"), "transferred": N_("Transferred"), "escalated": N_("Escalated"),
    "informed": N_("For information"), "running": N_("In approval")}
INSTANCE_PENDING = N_("In approval")  # a pending request; a pending task is "Pending" (to do)
MODE_LABELS = {"single": N_("one approver"), "all": N_("all must approve"), "any": N_("first approval decides"),
               "sequential": N_("one after another")}
# An event of the timeline is named by what was done: the same words as the buttons.
EVENT_LABELS = {
    "start": N_("Submitted"), "step_enter": N_("Step started"), "approve": N_("Approve"),
    "reject": N_("Reject"), "send_back": N_("Send back"), "transfer": N_("Transfer"),
    "add_approvers": N_("Add approvers"), "cc": N_("CC"), "withdraw": N_("Withdraw"),
    "remind": N_("Remind the approvers"), "resubmit": N_("Resubmit"), "escalate": N_("Escalated"),
    "step_complete": N_("Step decided"), "finish": N_("Finished"), "return": N_("Returned to the submitter"),
    "route": N_("Routed"), "on_self": N_("Approver adjusted"), "auto_approve": N_("Approved automatically"),
    "delegation_skipped": N_("Delegation not applied"),
    "restart": N_("Changed after an approval: approvals start again")}
# Why an approver was adjusted (`on_self` events) and what was done about it.
ON_SELF_TEXTS = {
    ("submitter", "left_out"): N_("%(user)s submitted the request and is left out of %(rule)s"),
    ("duplicate", "left_out"): N_("%(user)s already decides at this step and is left out of %(rule)s"),
    ("submitter", "skipped_to_superior"): N_("%(user)s submitted the request: their superior %(to)s decides instead"),
    ("duplicate", "skipped_to_superior"): N_("%(user)s already decides at this step: their superior %(to)s takes the seat of %(rule)s"),
    ("submitter", "auto_approved"): N_("%(user)s submitted the request: the seat of %(rule)s is approved automatically"),
    ("duplicate", "auto_approved"): N_("%(user)s already decides at this step: the seat of %(rule)s is approved automatically")}
# The fields of the action forms, for messages about them.
FIELD_LABELS = {"comment": N_("Comment"), "to_step": N_("Send back to"), "to_user": N_("Transfer to"),
                "users": N_("People"), "task_ids": N_("Tasks"), "action": N_("Action")}


def status_label(status: str | None, of_instance: bool = False) -> str:
    if of_instance and status == "pending":
        return translate(INSTANCE_PENDING)
    return translate(STATUS_LABELS[status]) if status in STATUS_LABELS else (status or "")


def local_time(value: dt.datetime | None) -> str:
    """A stored time (UTC; SQLite gives it back naive) in the one display zone (keel.formats)."""
    return formats.format_datetime(value)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def workflow_of(conn: sa.Connection, app: str, version: int, workflow: str):
    """The workflow definition an instance is pinned to, or None when that version no longer loads."""
    try:
        from flask import current_app

        return workflows_of(machine.pinned_app(conn, current_app.extensions["keel"], app, version)).get(workflow)
    except KeelError:
        return None


def record_summary(conn: sa.Connection, app: str, entity_id: str, record_id: int, who: Actor) -> dict:
    """The record's title and page link as the reader may see them (neither when they may not read it)."""
    from keel.storage import query

    out = {"title": f"#{record_id}", "href": None, "item": None}
    try:
        built = runtime().get(app)
        entity = built.entity(entity_id)
        item = query.get_record(conn, built, entity_id, record_id, who)
    except KeelError:
        return out
    title = item.get(entity.title_field) if entity.title_field else None
    out.update(title=f"{title} (#{record_id})" if title not in (None, "") else f"#{record_id}", item=item,
               href=url_for("web.record_page", app_id=app, entity_id=entity_id, record_id=record_id))
    return out


def due_times(conn: sa.Connection, task_ids: Iterable[int]) -> dict[int, dt.datetime]:
    """task id -> its SLA due time (the `due` timer; a task without an SLA has none)."""
    ids = list(task_ids)
    if not ids:
        return {}
    rows = conn.execute(sa.select(timers.c.task_id, timers.c.due_at).where(
        timers.c.task_id.in_(ids), timers.c.kind == "due"))
    return {r.task_id: _aware(r.due_at) for r in rows}


def _passed_steps(conn: sa.Connection, instance_ids: Iterable[int]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    ids = list(instance_ids)
    if ids:
        for r in conn.execute(sa.select(wf_tasks.c.instance_id, wf_tasks.c.step).where(
                wf_tasks.c.instance_id.in_(ids), wf_tasks.c.kind == "approve").distinct()):
            out.setdefault(r.instance_id, set()).add(r.step)
    return out


def task_rows(conn: sa.Connection, who: Actor, items: list[dict], lang: str, now: dt.datetime) -> list[dict]:
    """The tasks of `queries.list_tasks`, with what a row of the tasks page shows and offers."""
    dues = due_times(conn, [t["id"] for t in items if t["status"] == "pending"])
    passed = _passed_steps(conn, {t["instance"]["id"] for t in items if t["status"] == "pending"})
    versions = _versions(conn, {t["instance"]["id"] for t in items})
    rows = []
    for t in items:
        inst = t["instance"]
        wf = workflow_of(conn, inst["app"], versions[inst["id"]], inst["workflow"])
        step = wf.steps.get(t["step"]) if wf is not None else None
        actions = sorted(step.actions) if step is not None and t["status"] == "pending" and t["kind"] == "approve" \
            else []
        back_to = []
        if "send_back" in actions:
            back_to = [(s, wf.node(s).label.get(lang) if wf.node(s) is not None else s)
                       for s in sorted(passed.get(inst["id"], set()) - {t["step"]})]
            back_to.append(("submitter", translate("The submitter (for changes)")))
        due = dues.get(t["id"])
        submitter = inst["submitter"]
        rows.append({
            "id": t["id"], "kind": t["kind"], "status": t["status"], "status_label": status_label(t["status"]),
            "workflow_label": inst["workflow_label"], "step_label": t["step_label"],
            "mode_label": translate(MODE_LABELS[step.mode]) if step is not None and step.mode in MODE_LABELS else "",
            "record": record_summary(conn, inst["app"], inst["entity"], inst["record_id"], who),
            "instance_id": inst["id"], "instance_status": status_label(inst["status"], True),
            "submitter": submitter.get("name") or submitter.get("username") or "",
            "created_at": local_time(t["created_at"]), "acted_at": local_time(t["acted_at"]),
            "comment": t["comment"], "due": local_time(due), "overdue": due is not None and due <= now,
            "actions": actions, "back_to": back_to, "bulk": "bulk" in actions})
    return rows


def _versions(conn: sa.Connection, instance_ids: Iterable[int]) -> dict[int, int]:
    """instance id -> the app version it is pinned to (list_tasks does not say)."""
    ids = list(instance_ids)
    if not ids:
        return {}
    return dict(conn.execute(sa.select(wf_instances.c.id, wf_instances.c.app_version)
                             .where(wf_instances.c.id.in_(ids))).all())


def pending_count(conn: sa.Connection, user_id: int) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(wf_tasks).where(
        wf_tasks.c.assignee_id == user_id, wf_tasks.c.status == "pending")).scalar() or 0


# ---- one instance ------------------------------------------------------------------------------------

def _names_in(view: Mapping[str, Any]) -> set[int]:
    ids = {view["submitter"]["id"]}
    ids |= {t["assignee"]["id"] for t in view["tasks"]} | {t["on_behalf_of"] for t in view["tasks"]}
    for e in view["timeline"]:
        ids |= {e.get(k) for k in ("user_id", "by", "assignee", "to_user", "from_user", "user", "delegate")}
        for k in ("users", "assignees"):
            ids |= set(e.get(k) or ())
    return {i for i in ids if isinstance(i, int) and not isinstance(i, bool)}


def _event_text(e: Mapping[str, Any], names: Mapping[int, str], step_label) -> str:
    """What an event did, beyond its label: whom it went to, where it was sent back, the outcome."""
    def who(uid) -> str:
        return names.get(uid, f"#{uid}") if uid is not None else ""

    parts = []
    if e.get("step"):
        parts.append(step_label(e["step"]))
    action = e["action"]
    if action == "send_back":
        target = e.get("to_step")
        parts.append("→ " + (translate("the submitter") if target == "submitter" else step_label(target)))
    elif action in ("transfer", "escalate"):
        parts.append("→ " + who(e.get("to_user")))
    elif action in ("add_approvers", "cc", "remind"):
        parts.append("→ " + ", ".join(who(u) for u in e.get("users") or ()))
    elif action == "step_enter" and e.get("assignees"):
        parts.append("→ " + ", ".join(who(u) for u in e["assignees"]))
    elif action == "on_self" and (e.get("reason"), e.get("outcome")) in ON_SELF_TEXTS:
        parts.append(translate(ON_SELF_TEXTS[(e["reason"], e["outcome"])], user=who(e.get("user")),
                               to=who(e.get("to_user")), rule=e.get("rule") or ""))
    elif action == "auto_approve":
        parts.append(who(e.get("assignee")))
    elif action == "delegation_skipped":
        parts.append(translate("%(user)s keeps the task: %(delegate)s already decides at this step or submitted it",
                               user=who(e.get("user")), delegate=who(e.get("delegate"))))
    elif action == "restart" and e.get("fields"):
        parts.append(", ".join(e["fields"]))
    elif action in ("finish", "step_complete") and e.get("outcome"):
        parts.append(status_label(e["outcome"]))
    return " · ".join(p for p in parts if p)


def instance_page_data(conn: sa.Connection, view: dict, who: Actor, lang: str, now: dt.datetime) -> dict:
    """`queries.instance_view` with names, labels, due times and the buttons this reader gets."""
    names = user_names(conn, _names_in(view))
    wf = workflow_of(conn, view["app"], view["app_version"], view["workflow"]["id"])

    def step_label(step_id: str) -> str:
        node = wf.node(step_id) if wf is not None else None
        return node.label.get(lang) if node is not None else str(step_id)

    dues = due_times(conn, [t["id"] for t in view["tasks"] if t["status"] == "pending"])
    steps = []
    for s in view["steps"]:
        tasks = [{**t, "name": names.get(t["assignee"]["id"], t["assignee"]["username"] or ""),
                  "status_label": status_label(t["status"]), "acted_at": local_time(t["acted_at"]),
                  "due": local_time(dues.get(t["id"])),
                  "overdue": t["id"] in dues and dues[t["id"]] <= now,
                  "for_whom": names.get(t["on_behalf_of"]) if t["on_behalf_of"] else None}
                 for t in sorted(view["tasks"], key=lambda t: (t["visit"], t["seq"], t["id"])) if t["step"] == s["id"]]
        steps.append({**s, "mode_label": translate(MODE_LABELS.get(s["mode"], s["mode"])), "tasks": tasks,
                      "current": view["state"] == s["id"] and view["status"] == "pending"})
    timeline = [{"at": local_time(e["at"]), "label": translate(EVENT_LABELS[e["action"]])
                 if e["action"] in EVENT_LABELS else e["action"],
                 "who": names.get(e["user_id"], translate("system")) if e["user_id"] is not None
                 else translate("system"),
                 "text": _event_text(e, names, step_label), "comment": e.get("comment")}
                for e in view["timeline"]]
    mine = [t for t in view["tasks"] if t["assignee"]["id"] == who.user_id and t["status"] == "pending"
            and t["kind"] == "approve"]
    is_submitter = who.user_id == view["submitter"]["id"] or who.is_admin
    step = wf.steps.get(view["state"]) if wf is not None else None
    allowed = step.actions if step is not None else frozenset()
    pending = view["status"] == "pending"
    buttons = []
    if is_submitter:
        if view["status"] == "returned" or (pending and "withdraw" in allowed):
            buttons.append("withdraw")
        if pending and "remind" in allowed:
            buttons.append("remind")
        if view["status"] == "returned":
            buttons.append("resubmit")
    return {"id": view["id"], "workflow_label": view["workflow"]["label"], "status": view["status"],
            "status_label": status_label(view["status"], True),
            "state_label": step_label(view["state"]) if pending or view["status"] == "returned" else "",
            "submitter": names.get(view["submitter"]["id"], view["submitter"]["username"] or ""),
            "started_at": local_time(view["started_at"]), "finished_at": local_time(view["finished_at"]),
            "record": record_summary(conn, view["app"], view["entity"], view["record_id"], who),
            "steps": steps, "timeline": timeline, "my_task_ids": [t["id"] for t in mine], "buttons": buttons,
            "latest_task_ids": [t["id"] for t in sorted(view["tasks"], key=lambda t: -t["id"]) if t["kind"] == "approve"][:1]}


# ---- a record's workflows ---------------------------------------------------------------------------

def record_panel(conn: sa.Connection, built, entity_id: str, record_id: int, who: Actor, lang: str) -> dict:
    """The requests running or run on a record, and the forms that start a workflow about it: every
    workflow started by a form with a link field to this entity, prefilled with this record."""
    from keel.web.context import usable_forms

    rows = conn.execute(sa.select(wf_instances).where(
        wf_instances.c.app == built.id, wf_instances.c.entity == entity_id,
        wf_instances.c.record_id == record_id).order_by(wf_instances.c.id.desc()).limit(50)).all()
    instances = []
    for r in rows:
        wf = workflow_of(conn, r.app, r.app_version, r.workflow)
        instances.append({"id": r.id, "label": wf.label.get(lang) if wf is not None else r.workflow,
                          "status": r.status, "status_label": status_label(r.status, True),
                          "started_at": local_time(r.started_at),
                          "href": url_for("workflow_pages.instance_page", instance_id=r.id)})
    usable = {link.href for link in usable_forms(built, who, lang)}
    starters = []
    for wf in workflows_of(built.definition).values():
        form = built.definition.forms.get(wf.form) if wf.form else None
        if form is None:
            continue
        href = url_for("web.form_page", app_id=built.id, form_id=form.id)
        if href not in usable:
            continue
        target = built.definition.entities.get(form.entity)
        on_form = {ff.field for ff in form.fields}
        link = next((f.id for f in target.fields if f.type == "link" and f.entity == entity_id
                     and f.id in on_form), None) if target is not None else None
        if link is not None:
            starters.append({"label": form.label.get(lang), "href": f"{href}?{link}={record_id}"})
    return {"instances": instances, "starters": starters}


# ---- refusals in the reader's language ------------------------------------------------------------------

def explain_task_refusal(conn: sa.Connection, error: KeelError, task_id: int, who: Actor) -> str:
    """Why the engine refused an action on a task, from the task's state now (the engine's own messages
    are English and for logs; this one is for the person who clicked)."""
    task = conn.execute(sa.select(wf_tasks.c.status, wf_tasks.c.assignee_id, wf_tasks.c.kind,
                                  wf_instances.c.status.label("instance_status"), wf_instances.c.submitter_id)
                        .select_from(wf_tasks.join(wf_instances, wf_instances.c.id == wf_tasks.c.instance_id))
                        .where(wf_tasks.c.id == task_id)).first()
    if isinstance(error, NotFound) or task is None:
        return translate("There is no such task.")
    if isinstance(error, PermissionDenied):
        if task.assignee_id != who.user_id and not who.is_admin:
            return translate("This task is assigned to someone else. Nothing was changed.")
        if task.submitter_id == who.user_id:
            return translate("You cannot decide on your own request. Nothing was changed.")
        return translate("This step does not allow that action. Nothing was changed.")
    if isinstance(error, Conflict):
        if task.kind == "cc":
            return translate("A copy is for information: there is nothing to decide.")
        if task.status != "pending":
            return translate("This task was already handled (%(status)s). Nothing was changed.",
                             status=status_label(task.status))
        if task.instance_status != "pending":
            return translate("This request is %(status)s: nothing can be decided on it any more.",
                             status=status_label(task.instance_status, True))
        return translate("Someone else changed this in the meantime.")
    return field_errors_text(error)


def explain_instance_refusal(conn: sa.Connection, error: KeelError, instance_id: int, action: str,
                             who: Actor) -> str:
    inst = conn.execute(sa.select(wf_instances.c.status, wf_instances.c.submitter_id)
                        .where(wf_instances.c.id == instance_id)).first()
    if isinstance(error, NotFound) or inst is None:
        return translate("There is no such request.")
    if isinstance(error, PermissionDenied):
        if inst.submitter_id != who.user_id and not who.is_admin:
            return translate("Only the submitter can do this. Nothing was changed.")
        return translate("This step does not allow that action. Nothing was changed.")
    if isinstance(error, Conflict):
        if action == "remind" and inst.status == "pending":
            return translate("The approvers were reminded less than ten minutes ago.")
        return translate("This request is %(status)s: that is not possible now. Nothing was changed.",
                         status=status_label(inst.status, True))
    return field_errors_text(error)


def field_errors_text(error: KeelError) -> str:
    from keel.errors import FieldErrors

    if not isinstance(error, FieldErrors):
        return translate("Some values need correcting.")
    return "; ".join(f"{translate(FIELD_LABELS[k]) if k in FIELD_LABELS else k}: {m}"
                     for k, ms in error.rendered().items() for m in ms)
