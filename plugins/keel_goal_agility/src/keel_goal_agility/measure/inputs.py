"""CRM actuals and finance forecasts: read from their connectors and staged per goal and month.

A connector row names a goal the way the CRM and finance know it: the owner's username and the goal's
core metric (`owner`, `metric`), for a month (`period`). A row that matches no active goal covering that
month — or more than one — is reported (with its row number and why) and never imported: a wrong figure on
the wrong goal would flag it red for nothing."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa

from keel_goal_agility.measure.periods import PeriodError, bounds, parse_period
from keel_goal_agility.measure.tables import metric_inputs

MAX_REPORTED = 50
VALUE_COLUMN = {"actual": "value", "forecast": "forecast"}


def _goal_index(conn: sa.Connection, built) -> dict[tuple[str, str], list[Any]]:
    from keel.storage.system import users

    goal = built.table("goal")
    rows = conn.execute(sa.select(goal.c.id, goal.c.metric, goal.c.period_start, goal.c.period_end,
                                  users.c.username)
                        .join(users, users.c.id == goal.c.owner)
                        .where(goal.c.deleted_at.is_(None), goal.c.status == "active"))
    index: dict[tuple[str, str], list[Any]] = {}
    for r in rows:
        index.setdefault((r.username, (r.metric or "").strip()), []).append(r)
    return index


def _covers(goal: Any, first: dt.date, last: dt.date) -> bool:
    return (goal.period_start is None or goal.period_start <= last) and \
        (goal.period_end is None or goal.period_end >= first)


def match_rows(conn: sa.Connection, built, items: Iterable[Mapping[str, Any]], kind: str,
               period: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows to stage, problems). `period`: rows of that month and the months before it are considered — a
    goal's actual to date adds up its months, and the first snapshot may come after the goal started —
    later months are skipped silently (a CRM export usually holds several months)."""
    column = VALUE_COLUMN[kind]
    index = _goal_index(conn, built)
    staged: dict[tuple[int, str], dict[str, Any]] = {}
    problems: list[str] = []
    for n, item in enumerate(items, start=2):  # row 1 is the header
        where = f"row {n}"
        try:
            month = str(item.get("period") or "").strip()
            parse_period(month)
        except PeriodError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if period is not None and month > period:
            continue
        owner, metric = str(item.get("owner") or "").strip(), str(item.get("metric") or "").strip()
        try:
            value = Decimal(str(item.get(column)).replace(",", "").strip())
            if not value.is_finite():
                raise InvalidOperation
        except (InvalidOperation, ValueError):
            problems.append(f"{where}: {column} {item.get(column)!r} is not a number")
            continue
        first, last = bounds(month)
        goals = [g for g in index.get((owner, metric), []) if _covers(g, first, last)]
        if not goals:
            problems.append(f"{where}: no active goal of owner {owner!r} with core metric {metric!r} in "
                            f"{month}; not imported")
            continue
        if len(goals) > 1:
            problems.append(f"{where}: {len(goals)} goals of owner {owner!r} with core metric {metric!r} in "
                            f"{month} (ids {', '.join(str(g.id) for g in goals)}); not imported")
            continue
        staged[(goals[0].id, month)] = {"goal_id": goals[0].id, "period": month, "kind": kind, "value": value}
    return list(staged.values()), problems


def stage(conn: sa.Connection, rows: list[dict[str, Any]], source: str, now: dt.datetime) -> int:
    """Replace the staged values of these goals and months (a corrected CRM export wins until the month's
    snapshot is taken; the snapshot itself never changes)."""
    if not rows:
        return 0
    t = metric_inputs.c
    keys = {(r["goal_id"], r["period"]) for r in rows}
    kind = rows[0]["kind"]
    for period in {p for _, p in keys}:
        ids = [g for g, p in keys if p == period]
        for i in range(0, len(ids), 500):
            conn.execute(metric_inputs.delete().where(t.kind == kind, t.period == period,
                                                      t.goal_id.in_(ids[i:i + 500])))
    conn.execute(metric_inputs.insert(), [{**r, "source": source, "imported_at": now} for r in rows])
    return len(rows)


def import_connector(conn: sa.Connection, built, connector_id: str, kind: str, period: str | None,
                     now: dt.datetime, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read one connector and stage what matches; returns {"imported", "rejected", "problems"}."""
    from keel.connectors.sync import fetch_items

    items = fetch_items(built.definition, connector_id, environ=environ)
    rows, problems = match_rows(conn, built, items, kind, period)
    imported = stage(conn, rows, connector_id, now)
    return {"connector": connector_id, "imported": imported, "rejected": len(problems),
            "problems": problems[:MAX_REPORTED]}
