"""The stability guard (目标稳定性系数): when goals of one category are revised more than `max_revisions` times
within `window_months` (settings.revision_guard), a root-cause analysis ticket opens — once per breach, not once
per revision: a ticket counts the revisions it covers, and the next one opens only when the revisions approved
after it exceed the limit again. The ticket goes to the head of settings.revision_guard.ticket_owner.department
(the strategy department by default), who gets an inbox message."""
from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from keel.actor import SYSTEM, Actor
from keel.auth import directory
from keel.storage import records
from keel.storage.audit import record_event
from keel_goal_agility import settings
from keel_goal_agility.formats import CATEGORY_LABELS


def window_start(now: dt.datetime, months: int) -> dt.datetime:
    month = now.month - months
    year = now.year + (month - 1) // 12
    month = (month - 1) % 12 + 1
    day = min(now.day, 28)
    return now.replace(year=year, month=month, day=day)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def check(conn: sa.Connection, built, category: str | None, actor: Actor, now: dt.datetime) -> int | None:
    """Open a ticket when `category` is over the limit; returns the new ticket's id, or None."""
    if not category or "root_cause_ticket" not in built.definition.entities:
        return None
    limit, months = settings.guard_limits(built)
    since = window_start(now, months)
    tickets = built.table("root_cause_ticket")
    last = conn.execute(sa.select(sa.func.max(tickets.c.created_at)).where(
        tickets.c.category == category, tickets.c.deleted_at.is_(None))).scalar()
    last = _aware(last)
    counted_from = max(since, last) if last is not None else since
    req = built.table("revision_request")
    rows = conn.execute(sa.select(req.c.id, req.c.decided_at).where(
        req.c.goal_category == category, req.c.status == "approved", req.c.decided_at.is_not(None),
        req.c.deleted_at.is_(None))).all()
    counted = sorted(r.id for r in rows if _aware(r.decided_at) > counted_from) if last is not None else \
        sorted(r.id for r in rows if _aware(r.decided_at) >= counted_from)
    if len(counted) <= limit:
        return None
    dept = settings.ticket_owner_department(built)
    owner = directory.department_head(conn, dept)
    if owner is None:
        from keel.workflow.resolvers import users_with_role

        owner = next(iter(users_with_role(conn, "executive")), None)
    if owner is None:
        return None
    label = CATEGORY_LABELS.get(category, {}).get("zh", category)
    ticket = records.create(conn, built, "root_cause_ticket", {
        "title": f"「{label}」类目标 {months} 个月内修订 {len(counted)} 次，请做根因分析",
        "category": category, "owner": owner, "revision_count": len(counted),
        "window_start": since.date().isoformat(), "revisions": counted, "status": "open"}, SYSTEM)
    record_event(conn, actor, "goal_agility.guard_breach", app=built.id, entity="root_cause_ticket",
                 record_id=ticket["id"], detail={"category": category, "revisions": counted, "limit": limit,
                                                 "window_months": months}, at=now)
    from keel.notify import inbox

    inbox.send(conn, app=built.id, template=None, recipients=[owner], actor=SYSTEM,
               link=f"/apps/{built.id}/root_cause_ticket/{ticket['id']}", entity="root_cause_ticket",
               record_id=ticket["id"], app_def=built.definition, context={},
               subject={"zh": f"根因分析工单：「{label}」类目标修订过于频繁",
                        "en": f"Root-cause analysis: goals of category {category} were revised too often"},
               body={"zh": f"{months} 个月内「{label}」类目标已修订 {len(counted)} 次（上限 {limit} 次），"
                           f"请分析原因并填写改进措施。",
                     "en": f"Goals of category {category} were revised {len(counted)} times in {months} months "
                           f"(limit {limit}): find the root cause and the corrective actions."})
    return ticket["id"]
