"""Market signals of a month: competitor actions (the `market_signal` entity) and the hot words of the
month's customer feedback (`customer_feedback`, jieba TF-IDF with the company's terms)."""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from keel_goal_agility.measure import text
from keel_goal_agility.measure.periods import bounds
from keel_goal_agility.measure.tables import period_signals

_SPLIT = re.compile(r"[,，、;；\s]+")


def company_terms(conn: sa.Connection, built, settings: Mapping[str, Any]) -> list[str]:
    """The company's own vocabulary: strategy-card keywords, goal metrics, and settings.snapshot.user_terms."""
    terms = set((settings.get("snapshot") or {}).get("user_terms") or [])
    terms |= set(strategy_keywords(conn, built))
    g = built.table("goal")
    terms |= {m.strip() for m in conn.execute(sa.select(g.c.metric).where(g.c.deleted_at.is_(None)).distinct()
                                              .limit(500)).scalars() if m and len(m.strip()) <= 20}
    return sorted(t for t in terms if isinstance(t, str) and t.strip())


def strategy_keywords(conn: sa.Connection, built) -> list[str]:
    card = built.table("strategy_card")
    out: list[str] = []
    for kw in conn.execute(sa.select(card.c.keywords).where(card.c.deleted_at.is_(None))).scalars():
        out += [k for k in _SPLIT.split(kw or "") if k]
    return sorted(set(out))


def month_signals(conn: sa.Connection, built, period: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    first, last = bounds(period)
    fb, ms = built.table("customer_feedback"), built.table("market_signal")
    texts = conn.execute(sa.select(fb.c.text).where(fb.c.deleted_at.is_(None), fb.c.received_on >= first,
                                                    fb.c.received_on <= last)).scalars().all()
    top = int((settings.get("snapshot") or {}).get("hot_words") or 10)
    actions = [{"date": r.observed_on.isoformat(), "kind": r.kind, "source": r.source, "summary": r.summary,
                "category": r.category}
               for r in conn.execute(sa.select(ms).where(ms.c.deleted_at.is_(None), ms.c.observed_on >= first,
                                                          ms.c.observed_on <= last)
                                     .order_by(ms.c.observed_on, ms.c.id))]
    return {"hot_words": [[w, s] for w, s in text.hot_words(texts, company_terms(conn, built, settings), top)],
            "competitor_actions": actions, "feedback_count": len(texts)}


def store(conn: sa.Connection, period: str, signals: Mapping[str, Any], report: Mapping[str, Any],
          now: dt.datetime) -> bool:
    """Store a period's signals once; a rerun keeps the first (the snapshot saw those). True if stored now."""
    if conn.execute(sa.select(period_signals.c.period).where(period_signals.c.period == period)).first():
        return False
    conn.execute(period_signals.insert().values(period=period, hot_words=signals["hot_words"],
                                                competitor_actions=signals["competitor_actions"],
                                                feedback_count=signals["feedback_count"],
                                                import_report=dict(report), taken_at=now))
    return True
