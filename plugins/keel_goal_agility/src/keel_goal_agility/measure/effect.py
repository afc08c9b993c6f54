"""The before/after panel for a change date: each figure computed from the app's own records over two
windows of `window_days` (before: the days up to the day before the change; after: from the change on).

- alignment_index: alignment.index over each window (company-wide);
- sales_per_head: CRM deal revenue (`crm_deal`) ÷ the active people of the sales departments
  (`settings.snapshot.sales_departments` with their sub-departments);
- upsell_share: upsell revenue ÷ all revenue;
- agreement_rate: pulse answers agreeing (≥ `settings.snapshot.pulse_agree_min`, 4 of 5) that "my work directly
  affects the company's key goals" ÷ all answers;
- top3_named_share: answers that name all of the company's top three goals — the three strategy cards of
  highest priority — ÷ all answers. An answer names a card when it contains the card's title or one of its
  keywords, or the card's title contains the answer (two characters or more)."""
from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa

from keel_goal_agility.measure import alignment, org
from keel_goal_agility.measure.signals import _SPLIT

LABELS = {
    "alignment_index": ("目标对齐度指数", "Goal alignment index", "index"),
    "sales_per_head": ("销售人均产出", "Sales output per head", "cny"),
    "upsell_share": ("增购收入贡献比", "Upsell share of revenue", "fraction"),
    "agreement_rate": ("“工作影响公司重要目标”认同度", "Agree: my work affects the key goals", "fraction"),
    "top3_named_share": ("能说出前三目标的员工占比", "Staff who can name the top three goals", "fraction"),
}


def windows(change: dt.date, days: int) -> tuple[tuple[dt.date, dt.date], tuple[dt.date, dt.date]]:
    return ((change - dt.timedelta(days=days), change - dt.timedelta(days=1)),
            (change, change + dt.timedelta(days=days - 1)))


def _q(value: Decimal | None, places: str = "0.0001") -> str | None:
    return None if value is None else str(value.quantize(Decimal(places), ROUND_HALF_UP))


def _sales(conn, built, first, last, heads: int) -> tuple[Decimal | None, Decimal | None]:
    deal = built.table("crm_deal")
    rows = conn.execute(sa.select(deal.c.kind, sa.func.sum(deal.c.amount)).where(
        deal.c.deleted_at.is_(None), deal.c.closed_on >= first, deal.c.closed_on <= last).group_by(deal.c.kind)).all()
    total = sum((Decimal(str(v or 0)) for _, v in rows), Decimal(0))
    if not rows or total == 0:
        return None, None
    upsell = sum((Decimal(str(v or 0)) for k, v in rows if k == "upsell"), Decimal(0))
    return (total / heads if heads else None), upsell / total


def top_cards(conn, built, on: dt.date | None = None) -> list[dict[str, Any]]:
    card = built.table("strategy_card")
    where = [card.c.deleted_at.is_(None)]
    if "status" in card.c:
        where.append(sa.or_(card.c.status.is_(None), card.c.status != "archived"))
    rows = conn.execute(sa.select(card.c.id, card.c.title, card.c.keywords, card.c.priority).where(*where)
                        .order_by(sa.func.coalesce(card.c.priority, 999), card.c.id).limit(3)).all()
    return [{"id": r.id, "title": r.title, "keywords": [k for k in _SPLIT.split(r.keywords or "") if len(k) >= 2]}
            for r in rows]


def names(answer: str, card: dict[str, Any]) -> bool:
    a = (answer or "").strip()
    if len(a) < 2:
        return False
    title = card["title"] or ""
    return title in a or a in title or any(k in a for k in card["keywords"])


def _pulse(conn, built, first, last, cards, agree_min: int) -> tuple[Decimal | None, Decimal | None, int]:
    pr = built.table("pulse_response")
    rows = conn.execute(sa.select(pr.c.top_goal_1, pr.c.top_goal_2, pr.c.top_goal_3, pr.c.agreement,
                                  pr.c.answered_on, pr.c.created_at).where(pr.c.deleted_at.is_(None))).all()
    inside = [r for r in rows if first <= (r.answered_on or r.created_at.date()) <= last]
    if not inside:
        return None, None, 0
    agree = sum(1 for r in inside if r.agreement is not None and int(r.agreement) >= agree_min)
    need = len(cards)
    named = sum(1 for r in inside
                if need and sum(1 for c in cards if any(names(a, c) for a in (r.top_goal_1, r.top_goal_2,
                                                                               r.top_goal_3))) >= need)
    n = len(inside)
    return Decimal(agree) / n, (Decimal(named) / n if need else None), n


def panel(conn: sa.Connection, built, change: dt.date, days: int | None = None) -> dict[str, Any]:
    settings = built.definition.settings
    snap = settings.get("snapshot") or {}
    days = int(days or snap.get("effect_window_days") or 60)
    (b1, b2), (a1, a2) = windows(change, days)
    depts = org.departments(conn)
    sales_scope: set[str] = set()
    for code in snap.get("sales_departments") or ["sales"]:
        sales_scope |= org.subtree(depts, code)
    heads = sum(1 for d in org.user_departments(conn).values() if d in sales_scope)
    inp = alignment.Inputs(conn, built, b1, a2)
    cards = top_cards(conn, built)
    agree_min = int(snap.get("pulse_agree_min", 4))
    values: dict[str, list[Any]] = {k: [] for k in LABELS}
    counts = []
    for first, last in ((b1, b2), (a1, a2)):
        ai = alignment.index(inp, alignment.COMPANY, first, last)["index"]
        per_head, upsell = _sales(conn, built, first, last, heads)
        agree, top3, n = _pulse(conn, built, first, last, cards, agree_min)
        values["alignment_index"].append(None if ai is None else Decimal(str(ai)))
        values["sales_per_head"].append(per_head)
        values["upsell_share"].append(upsell)
        values["agreement_rate"].append(agree)
        values["top3_named_share"].append(top3)
        counts.append(n)
    metrics = []
    for key, (zh, en, unit) in LABELS.items():
        before, after = values[key]
        places = "0.01" if unit == "cny" else ("0.1" if unit == "index" else "0.0001")
        change_ = None
        if before is not None and after is not None:
            # Rates and the index change in points; amounts as a relative change (the case's "+27%").
            change_ = _q((after - before) / before) if unit == "cny" and before else _q(after - before, places)
        metrics.append({"id": key, "label": {"zh": zh, "en": en}, "unit": unit,
                        "before": _q(before, places), "after": _q(after, places), "change": change_,
                        "change_kind": "relative" if unit == "cny" else "points"})
    return {"change_date": change.isoformat(), "window_days": days,
            "before": {"from": b1.isoformat(), "to": b2.isoformat(), "pulse_answers": counts[0]},
            "after": {"from": a1.isoformat(), "to": a2.isoformat(), "pulse_answers": counts[1]},
            "sales_heads": heads, "top_goals": [c["title"] for c in cards], "metrics": metrics}
