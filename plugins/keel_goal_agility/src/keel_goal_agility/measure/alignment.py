"""The goal alignment index (目标对齐度指数), 0–100, for a department (with its sub-departments) or the company
over any date range — a month for the trend, a before/after window for the effect panel:

- keywords: the share of meeting notes that mention at least one strategy-card keyword (jieba segmentation,
  the keywords and company terms as a user dictionary);
- task_links: the share of personal tasks created in the range that are linked to a goal;
- collaboration: cross-department collaboration requests (from the IM) per head and 30 days, against
  `settings.snapshot.collaboration_target_per_head` (reaching the target scores 1).

index = 100 × Σ wᵢ·scoreᵢ / Σ wᵢ over the components that have data (`settings.alignment_weights`); a
component with no records in the range is shown as such and left out rather than counted as 0."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa

from keel_goal_agility.measure import org, text
from keel_goal_agility.measure.periods import bounds, months_between
from keel_goal_agility.measure.signals import company_terms, strategy_keywords

COMPANY = "company"
DEFAULT_WEIGHTS = {"keywords": 0.4, "task_links": 0.4, "collaboration": 0.2}


class Inputs:
    """Everything the index reads for a date range, read once (so a year's trend by department is a
    handful of queries, not one per month and department)."""

    def __init__(self, conn: sa.Connection, built, first: dt.date, last: dt.date):
        self.settings = built.definition.settings
        self.depts = org.departments(conn)
        self.user_dept = org.user_departments(conn)
        self.keywords = strategy_keywords(conn, built)
        self.terms = company_terms(conn, built, self.settings)
        note, task, collab = (built.table(e) for e in ("meeting_note", "task", "collaboration_request"))
        self.notes = [(r.held_on, r.department, text.mentions(r.body or "", self.keywords, self.terms))
                      for r in conn.execute(sa.select(note.c.held_on, note.c.department, note.c.body).where(
                          note.c.deleted_at.is_(None), note.c.held_on >= first, note.c.held_on <= last))]
        start = dt.datetime.combine(first, dt.time.min, dt.UTC)
        end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time.min, dt.UTC)
        self.tasks = [(_day(r.created_at), self.user_dept.get(r.owner), r.goal is not None)
                      for r in conn.execute(sa.select(task.c.created_at, task.c.owner, task.c.goal).where(
                          task.c.deleted_at.is_(None), task.c.created_at >= start, task.c.created_at < end))]
        self.requests = [(r.requested_on, r.from_department, r.to_department)
                         for r in conn.execute(sa.select(collab.c.requested_on, collab.c.from_department,
                                                         collab.c.to_department).where(
                             collab.c.deleted_at.is_(None), collab.c.requested_on >= first,
                             collab.c.requested_on <= last))]

    def scope(self, department: str) -> set[str] | None:
        return None if department == COMPANY else org.subtree(self.depts, department)

    def heads(self, scope: set[str] | None) -> int:
        return sum(1 for d in self.user_dept.values() if scope is None or d in scope)


def _day(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    return dt.datetime.fromisoformat(str(value)).date()


def _ratio(a: int, b: int) -> float | None:
    return None if b == 0 else round(a / b, 4)


def index(inp: Inputs, department: str, first: dt.date, last: dt.date) -> dict[str, Any]:
    """The index and its components for `department` (a code or "company") over [first, last]."""
    scope = inp.scope(department)
    inside = (lambda d: True) if scope is None else (lambda d: d in scope)
    notes = [n for n in inp.notes if first <= n[0] <= last and inside(n[1])]
    matched = [n for n in notes if n[2]]
    found = sorted({k for n in matched for k in n[2]})
    tasks = [t for t in inp.tasks if first <= t[0] <= last and inside(t[1])]
    linked = sum(1 for t in tasks if t[2])
    # A request counts for the department that asked, when it asked another department (not itself).
    reqs = [r for r in inp.requests if first <= r[0] <= last and r[1] != r[2] and inside(r[1])]
    heads = inp.heads(scope)
    days = (last - first).days + 1
    per_head_target = float((inp.settings.get("snapshot") or {}).get("collaboration_target_per_head", 0.5))
    wanted = heads * per_head_target * days / 30
    collab = None if heads == 0 or wanted <= 0 else round(min(len(reqs) / wanted, 1.0), 4)
    components = {
        "keywords": {"score": _ratio(len(matched), len(notes)), "matched_notes": len(matched), "notes": len(notes),
                     "keywords": found},
        "task_links": {"score": _ratio(linked, len(tasks)), "linked": linked, "tasks": len(tasks)},
        "collaboration": {"score": collab if reqs or heads else None, "requests": len(reqs), "people": heads},
    }
    if not reqs and not notes and not tasks:
        components["collaboration"]["score"] = None  # nothing at all recorded: no data, not 0
    weights = {**DEFAULT_WEIGHTS, **(inp.settings.get("alignment_weights") or {})}
    num = den = Decimal(0)
    for name, comp in components.items():
        w = Decimal(str(weights.get(name, 0)))
        if comp["score"] is not None and w > 0:
            num += w * Decimal(str(comp["score"]))
            den += w
    value = None if den == 0 else float((Decimal(100) * num / den).quantize(Decimal("0.1"), ROUND_HALF_UP))
    return {"department": department, "from": first.isoformat(), "to": last.isoformat(), "index": value,
            "components": components}


def monthly(conn: sa.Connection, built, department: str, first_period: str, last_period: str) -> dict[str, Any]:
    """The trend: one index per month from first_period to last_period."""
    first, _ = bounds(first_period)
    _, last = bounds(last_period)
    inp = Inputs(conn, built, first, last)
    if department != COMPANY and department not in inp.depts:
        raise KeyError(department)
    series = []
    for p in months_between(first, last):
        a, b = bounds(p)
        series.append({"period": p, **index(inp, department, a, b)})
    return {"weights": {**DEFAULT_WEIGHTS, **(inp.settings.get("alignment_weights") or {})}, "series": series}


def by_department(conn: sa.Connection, built, period: str) -> list[dict[str, Any]]:
    first, last = bounds(period)
    inp = Inputs(conn, built, first, last)
    return [{"period": period, **index(inp, code, first, last)} for code in [COMPANY, *sorted(inp.depts)]]


def latest_months(conn: sa.Connection, built, count: int = 6) -> tuple[str, str] | None:
    """The last `count` months up to the latest meeting note or collaboration request."""
    note, collab = built.table("meeting_note"), built.table("collaboration_request")
    latest = [conn.execute(sa.select(sa.func.max(note.c.held_on)).where(note.c.deleted_at.is_(None))).scalar(),
              conn.execute(sa.select(sa.func.max(collab.c.requested_on))
                           .where(collab.c.deleted_at.is_(None))).scalar()]
    latest = [d for d in latest if d is not None]
    if not latest:
        return None
    end = max(latest)
    y, m = end.year, end.month - (count - 1)
    while m <= 0:
        y, m = y - 1, m + 12
    return f"{y:04d}-{m:02d}", f"{end.year:04d}-{end.month:02d}"


def weights_of(settings: Mapping[str, Any]) -> dict[str, float]:
    return {**DEFAULT_WEIGHTS, **(settings.get("alignment_weights") or {})}
