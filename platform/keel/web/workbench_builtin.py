"""The engine's own workbench sections, registered through `keel_workbench_sections` like a plugin's: my
pending approvals (count and due dates), the records changed for me (yellow, with acknowledge), and my
unread inbox. Each is on every user's workbench and hidden while it has nothing to show."""
from __future__ import annotations

import datetime as dt

from flask import url_for

from keel import formats
from keel.i18n import translate
from keel.web.workbench_model import AUTO, Card, SectionView, WorkbenchContext, WorkbenchSection, mark_text

SHOWN = 8  # cards per built-in section; the count and a link give the rest


def pending_approvals(ctx: WorkbenchContext) -> SectionView | None:
    from keel.web.workflow_view import due_times, record_summary
    from keel.workflow.queries import list_tasks

    data = list_tasks(ctx.conn, ctx.runtime, ctx.actor, status="pending", per_page=SHOWN, lang=ctx.lang)
    if not data["total"]:
        return None
    dues = due_times(ctx.conn, [t["id"] for t in data["items"]])
    now = dt.datetime.now(dt.UTC)
    cards = []
    for t in data["items"]:
        inst = t["instance"]
        rec = record_summary(ctx.conn, inst["app"], inst["entity"], inst["record_id"], ctx.actor)
        due = dues.get(t["id"])
        due_aware = due if due is None or due.tzinfo else due.replace(tzinfo=dt.UTC)
        submitter = inst["submitter"].get("name") or inst["submitter"].get("username") or ""
        cards.append(Card(
            title=rec["title"], href=url_for("workflow_pages.instance_page", instance_id=inst["id"]),
            subtitle=f'{inst["workflow_label"]} · {t["step_label"]}',
            fields=((translate("Submitted by"), submitter),
                    (translate("Received"), formats.format_datetime(t["created_at"]))),
            due=formats.format_datetime(due) if due else None,
            overdue=due_aware is not None and due_aware <= now,
            colour="red" if due_aware is not None and due_aware <= now else "amber"))
    return SectionView(translate("Pending approvals"), tuple(cards), count=data["total"],
                       more_href=url_for("workflow_pages.tasks_page"), kind="list")


def changed_items(ctx: WorkbenchContext) -> SectionView | None:
    from keel.errors import KeelError
    from keel.storage import highlights, query

    marks = highlights.marked(ctx.conn, ctx.actor.user_id)
    if not marks:
        return None
    cards = []
    for (app, entity_id, record_id), mark in list(marks.items())[:SHOWN * 3]:
        try:
            built = ctx.runtime.get(app)
            entity = built.entity(entity_id)
            item = query.get_record(ctx.conn, built, entity_id, record_id, ctx.actor)
        except KeelError:  # gone, or no longer readable: nothing to look at
            continue
        title = item.get(entity.title_field) if entity.title_field else None
        cards.append(Card(
            title=str(title) if title not in (None, "") else f"#{record_id}",
            href=url_for("web.record_page", app_id=app, entity_id=entity_id, record_id=record_id),
            subtitle=entity.label.get(ctx.lang), fields=((translate("Changed"),
                                                          formats.format_datetime(mark["marked_at"])),),
            highlight=mark_text(entity, mark, ctx.lang),
            ack={"app": app, "entity": entity_id, "record_id": record_id}, colour="amber",
            key=(app, entity_id, record_id)))
        if len(cards) >= SHOWN:
            break
    if not cards:
        return None
    apps = sorted({k[0] for k in marks})
    return SectionView(translate("Changed for you"), tuple(cards), count=len(marks), kind="list",
                       ack_all={"app": apps[0]} if len(apps) == 1 else None)


def unread_inbox(ctx: WorkbenchContext) -> SectionView | None:
    from keel.notify import inbox

    data = inbox.list_messages(ctx.conn, ctx.actor.user_id, unread_only=True, per_page=SHOWN,
                               lang=ctx.lang)
    if not data["total"]:
        return None
    cards = tuple(Card(title=m["subject"] or translate("Message"), href=m["link"] or url_for("inbox_pages.inbox_page"),
                       subtitle=(m["text"] or "")[:120], fields=((translate("Received"),
                                                               formats.format_datetime(m["created_at"])),),
                       colour="blue") for m in data["items"])
    return SectionView(translate("Unread messages"), cards, count=data["total"],
                       more_href=url_for("inbox_pages.inbox_page", unread="1"), kind="list")


SECTIONS = (WorkbenchSection("pending_approvals", pending_approvals, AUTO, order=10),
            WorkbenchSection("changed_items", changed_items, AUTO, order=20),
            WorkbenchSection("unread_inbox", unread_inbox, AUTO, order=90))
