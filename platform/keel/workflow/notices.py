"""The engine's side of notifications and SLA timers: who gets a message, what the engine's own
messages say, and the calls into `keel.notify.inbox` and `keel.workflow.timers`.

Both modules are optional here (they may not be installed in a trimmed deployment, and were written at
the same time as the engine): without them these calls do nothing, and the approval itself is unaffected.

The engine's own messages carry no value a user typed (no record field, no comment, no name): only the
workflow's and step's labels from the definition and the instance number, so nothing a user controls is
ever treated as template text. Record values reach notification templates only as context data."""
from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

import sqlalchemy as sa

from keel.storage.workflow_tables import wf_tasks

log = logging.getLogger("keel.workflow")


def _close_messages_statement():
    from keel.storage.notify_tables import inbox as inbox_table

    return inbox_table.update().where(
        inbox_table.c.user_id.in_(sa.bindparam("people", expanding=True)), inbox_table.c.read_at.is_(None),
        inbox_table.c.template.is_(None), inbox_table.c.link == sa.bindparam("b_link")
    ).values(read_at=sa.bindparam("b_now"))


@cache
def _optional(name: str):
    """The module, or None when it is not installed. Only a missing module counts as absent: an error
    inside an installed one is raised, not hidden."""
    try:
        if importlib.util.find_spec(name) is None:
            return None
    except ModuleNotFoundError:
        return None
    return importlib.import_module(name)


def inbox():
    return _optional("keel.notify.inbox")


def timers():
    return _optional("keel.workflow.timers")


def schedule_step(conn: sa.Connection, instance_id: int, step_id: str, task_ids: list[int],
                  sla: Mapping[str, Any] | None, started_at) -> None:
    t = timers()
    if t is not None and task_ids:
        t.schedule_step(conn, instance_id, step_id, list(task_ids), sla, started_at)


def cancel_tasks(conn: sa.Connection, task_ids: Iterable[int], instance_id: int | None = None,
                 assignees: Iterable[int] = ()) -> None:
    """Tasks closed (decided, withdrawn, transferred, escalated): their timers stop, and the
    "待您审批" messages of their `assignees` about the request (`instance_id`) are marked done (read)."""
    ids = list(task_ids)
    t = timers()
    if t is not None and ids:
        t.cancel_tasks(conn, ids)
    people = sorted({a for a in assignees if a is not None})
    if instance_id is not None and people:
        close_task_messages(conn, instance_id, people)


def link(instance_id: int) -> str:
    return f"/workflows/instances/{instance_id}"


def close_task_messages(conn: sa.Connection, instance_id: int, people: list[int]) -> int:
    """Mark done the engine's unread messages to these people about this request: their task is closed,
    so "待您审批" (and a 催办 about it) need nothing more from them. One statement, on the inbox's
    (user_id, read_at) index; the app's own template messages are left alone."""
    if inbox() is None:
        return 0
    return conn.execute(_close_messages(), {"people": people, "b_link": link(instance_id), "b_now": _utcnow()}).rowcount


@cache
def _close_messages():
    return _close_messages_statement()


def _utcnow():
    from keel.storage.audit import utcnow

    return utcnow()


# What the engine says, in both languages. %(workflow)s and %(step)s are labels from the definition.
MESSAGES = {
    "task": ({"zh": "待您审批：%(workflow)s #%(id)s", "en": "Approval needed: %(workflow)s #%(id)s"},
             {"zh": "申请 #%(id)s 在“%(step)s”步骤等待您审批。", "en": "Request #%(id)s waits for your approval at step “%(step)s”."}),
    "remind": ({"zh": "催办：%(workflow)s #%(id)s", "en": "Reminder: %(workflow)s #%(id)s"},
               {"zh": "申请人催促您处理申请 #%(id)s（步骤：%(step)s）。", "en": "The submitter asks you to act on request #%(id)s (step “%(step)s”)."}),
    "cc": ({"zh": "抄送：%(workflow)s #%(id)s", "en": "For your information: %(workflow)s #%(id)s"},
           {"zh": "申请 #%(id)s 抄送给您，供您知悉。", "en": "Request #%(id)s was copied to you for your information."}),
    "approved": ({"zh": "已通过：%(workflow)s #%(id)s", "en": "Approved: %(workflow)s #%(id)s"},
                 {"zh": "您的申请 #%(id)s 已审批通过。", "en": "Your request #%(id)s was approved."}),
    "rejected": ({"zh": "已驳回：%(workflow)s #%(id)s", "en": "Rejected: %(workflow)s #%(id)s"},
                 {"zh": "您的申请 #%(id)s 在“%(step)s”步骤被驳回。", "en": "Your request #%(id)s was rejected at step “%(step)s”."}),
    "returned": ({"zh": "已退回待修改：%(workflow)s #%(id)s", "en": "Returned for changes: %(workflow)s #%(id)s"},
                 {"zh": "您的申请 #%(id)s 被退回，请修改后重新提交。", "en": "Your request #%(id)s was returned to you: change it and resubmit."}),
    "withdrawn": ({"zh": "已撤回：%(workflow)s #%(id)s", "en": "Withdrawn: %(workflow)s #%(id)s"},
                  {"zh": "申请 #%(id)s 已被申请人撤回，您的待办已取消。", "en": "Request #%(id)s was withdrawn; your task is cancelled."}),
}


def send_engine_message(conn: sa.Connection, kind: str, *, app: str, recipients: Iterable[int], instance_id: int,
                        workflow_label, step_label, actor, extra: Mapping[str, Any] | None = None,
                        app_def=None) -> list[int]:
    """One of the engine's own messages. `app_def`: the app's current version when the caller holds it
    (the engine's built app), so the inbox need not look it up again for every message."""
    box = inbox()
    people = sorted({r for r in recipients if r is not None})
    if box is None or not people:
        return []
    subject, body = MESSAGES[kind]
    params = {lang: {"id": instance_id, "workflow": workflow_label.get(lang),
                     "step": step_label.get(lang) if step_label is not None else ""} for lang in ("zh", "en")}
    return box.send(conn, app=app, template=None, recipients=people,
                    context={"instance_id": instance_id, "kind": kind, **(extra or {})},
                    link=link(instance_id), actor=actor, app_def=app_def, subject={lang: subject[lang] % params[lang] for lang in ("zh", "en")},
                    body={lang: body[lang] % params[lang] for lang in ("zh", "en")})


# ---- recipients and templates of `notify` actions -----------------------------------------------------

def participants(conn: sa.Connection, instance_id: int, kinds: tuple[str, ...] = ("approve", "cc"),
                 acted_only: bool = False) -> list[int]:
    stmt = sa.select(wf_tasks.c.assignee_id).where(wf_tasks.c.instance_id == instance_id,
                                                   wf_tasks.c.kind.in_(kinds))
    if acted_only:
        stmt = stmt.where(wf_tasks.c.status.in_(("approved", "rejected", "sent_back")))
    return sorted(set(conn.execute(stmt).scalars()))


def recipients(ctx, to: Iterable[Any]) -> list[int]:
    from keel.workflow.resolvers import ResolveContext, resolve_rule

    inst = ctx.instance
    out: set[int] = set()
    for item in to:
        if item == "submitter":
            out.add(inst["submitter_id"])
        elif item == "approvers":
            out.update(participants(ctx.conn, inst["id"], ("approve",), acted_only=True))
        elif item == "participants":
            out.update(participants(ctx.conn, inst["id"]))
            out.add(inst["submitter_id"])
        elif isinstance(item, Mapping):
            rctx = ResolveContext(ctx.conn, ctx.app_def, ctx.workflow, ctx.record, inst["submitter_id"])
            out.update(resolve_rule(rctx, item))
    return sorted(out)


def template_context(ctx) -> dict[str, Any]:
    """The data a notification template sees: the record (JSON values), the request and its workflow."""
    from keel.json_values import jsonable
    from keel.storage.query import to_json

    inst = ctx.instance
    entity = ctx.built.entity(inst["entity"])
    table = ctx.built.table(inst["entity"])
    row = ctx.conn.execute(sa.select(table).where(table.c.id == inst["record_id"])).first()
    record = jsonable(to_json(entity, row, entity.fields)) if row is not None else {}
    return {"record": record, "app": inst["app"],
            "workflow": {"id": ctx.workflow.id, "label": {"zh": ctx.workflow.label.zh, "en": ctx.workflow.label.en}},
            "instance": {"id": inst["id"], "status": inst["status"], "state": inst["state"]},
            **decision_context(ctx)}


def decision_context(ctx) -> dict[str, Any]:
    """`decision` (the request's outcome once it has one: approved, rejected, withdrawn; else None),
    `decider` ({id, username, name} of the person whose action this is; None for the system) and
    `comment` (what they wrote on the task they decided; None without one)."""
    from keel.storage.system import users

    inst, actor = ctx.instance, ctx.actor
    decision = inst["status"] if inst["status"] in ("approved", "rejected", "withdrawn") else None
    decider, comment = None, None
    if actor is not None and actor.user_id is not None:
        row = ctx.conn.execute(sa.select(users.c.id, users.c.username, users.c.display_name)
                               .where(users.c.id == actor.user_id)).first()
        if row is not None:
            decider = {"id": row.id, "username": row.username, "name": row.display_name}
        comment = ctx.conn.execute(sa.select(wf_tasks.c.comment).where(
            wf_tasks.c.instance_id == inst["id"], wf_tasks.c.acted_by == actor.user_id,
            wf_tasks.c.status.in_(("approved", "rejected", "sent_back")))
            .order_by(wf_tasks.c.acted_at.desc(), wf_tasks.c.id.desc()).limit(1)).scalar()
    return {"decision": decision, "decider": decider, "comment": comment}


def send_template(ctx, template: str, people: list[int]) -> list[int]:
    box = inbox()
    if box is None or not people:
        return []
    # The engine's own text for the instance's status: what the message says if the template fails.
    fallback = {}
    if ctx.instance["status"] in MESSAGES:
        subject, body = MESSAGES[ctx.instance["status"]]
        params = {lang: {"id": ctx.instance["id"], "workflow": ctx.workflow.label.get(lang), "step": ""}
                  for lang in ("zh", "en")}
        fallback = {"subject": {lang: subject[lang] % params[lang] for lang in ("zh", "en")},
                    "body": {lang: body[lang] % params[lang] for lang in ("zh", "en")}}
    return box.send(ctx.conn, app=ctx.instance["app"], template=template, recipients=people,
                    context=template_context(ctx), link=link(ctx.instance["id"]), actor=ctx.actor,
                    app_def=ctx.built.definition, **fallback)
