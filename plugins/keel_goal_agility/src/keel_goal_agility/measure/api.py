"""REST routes of the measures, under /api/v1/apps/goal_agility/measures/ (contract: /work/briefs/contract-measure.md,
docs/goal-agility-measures.md). Snapshot rows are filtered by the caller's read permission on their goals;
the aggregates (alignment index, effect panel) are for managers, the strategy department, executives and
admins."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, current_app, request

from keel_goal_agility.measure import alignment, effect
from keel_goal_agility.measure.periods import PeriodError, parse_period
from keel_goal_agility.measure.tables import period_signals, snapshots

APP = "goal_agility"
bp = Blueprint("goal_agility_measures_api", __name__, url_prefix=f"/api/v1/apps/{APP}/measures")
AGGREGATE_ROLES = frozenset({"manager", "strategy", "executive"})
MAX_LIMIT = 1000


def _json(body: Any, status: int = 200):
    from keel.api.common import json_response

    return json_response(body, status)


def _invalid(field: str, message: str):
    return _json({"errors": {field: [message]}}, 422)


def _runtime():
    from keel_goal_agility.measure.tables import ensure_tables

    runtime = current_app.extensions["keel"]
    ensure_tables(runtime.engine)
    return runtime


def _actor():
    from keel.auth import current_actor

    return current_actor()


def _may_aggregate(actor) -> bool:
    return actor.is_admin or bool(AGGREGATE_ROLES & set(actor.roles))


def _forbidden():
    return _json({"error": "managers, the strategy department and executives only"}, 403)


def _period_arg(name: str, required: bool = False) -> str | None:
    value = request.args.get(name)
    if value is None and not required:
        return None
    parse_period(value)
    return value


def _num(value) -> str | None:
    """A decimal as plain text without trailing zeros ("-0.15", "12000000"); None stays None (no data)."""
    if value is None:
        return None
    text = format(Decimal(str(value)).normalize(), "f")
    return "0" if text in ("-0", "") else text


def _item(r, signals: dict[str, Any]) -> dict[str, Any]:
    return {"goal_id": r.goal_id, "title": r.title, "owner": r.owner_id, "category": r.category, "unit": r.unit,
            "period": r.period, "target": _num(r.target), "expected": _num(r.expected), "actual": _num(r.actual),
            "deviation": _num(r.deviation), "status": r.status, "forecast": _num(r.forecast),
            "forecast_deviation": _num(r.forecast_deviation), "signals": signals.get(r.period),
            # the month's competitor actions about this goal's category (or about no category in particular)
            "related_actions": [a for a in (signals.get(r.period) or {}).get("competitor_actions", [])
                                if a.get("category") in (None, r.category)],
            "taken_at": r.taken_at}


def _signals(conn, periods) -> dict[str, Any]:
    return {r.period: {"hot_words": r.hot_words, "competitor_actions": r.competitor_actions,
                       "feedback_count": r.feedback_count}
            for r in conn.execute(sa.select(period_signals).where(period_signals.c.period.in_(set(periods))))}


def _readable_goals(built, actor):
    from keel.storage.query import read_condition

    g = built.table("goal")
    return g, read_condition(g, built.entity("goal"), actor)


@bp.get("/snapshots")
def list_snapshots():
    """Goal snapshots of a period (default: the latest), the caller's readable goals only.

    Query:
        period: YYYY-MM (default: the latest period with a snapshot)
        flag: `red` for the red-flagged goals only
        goal (integer): one goal
        limit (integer): at most this many (default 200, at most 1000)
        offset (integer): skip this many
    Responses:
        200: {"period", "threshold", "total", "items": [...]}; `actual` and `deviation` null = no data
    """
    actor, runtime = _actor(), _runtime()
    built = runtime.get(APP)
    try:
        period = _period_arg("period")
        limit = min(int(request.args.get("limit", 200)), MAX_LIMIT)
        offset = max(int(request.args.get("offset", 0)), 0)
        goal_id = int(request.args["goal"]) if request.args.get("goal") else None
    except PeriodError as exc:
        return _invalid("period", str(exc))
    except ValueError:
        return _invalid("limit", "limit, offset and goal must be whole numbers")
    flag = request.args.get("flag")
    if flag not in (None, "", "red"):
        return _invalid("flag", "flag must be 'red' or absent")
    g, readable = _readable_goals(built, actor)
    s = snapshots.c
    with runtime.engine.connect() as conn:
        if period is None:
            period = conn.execute(sa.select(sa.func.max(s.period))).scalar()
        where = [s.period == period, readable]
        if flag == "red":
            where.append(s.status == "red")
        if goal_id is not None:
            where.append(s.goal_id == goal_id)
        base = sa.select(snapshots, g.c.title).join(g, g.c.id == s.goal_id).where(*where)
        total = conn.execute(sa.select(sa.func.count()).select_from(base.subquery())).scalar()
        rows = conn.execute(base.order_by(s.status.desc(), s.deviation, s.goal_id).limit(limit).offset(offset)).all()
        sig = _signals(conn, [period]) if period else {}
    return _json({"period": period, "threshold": built.definition.settings.get("deviation_threshold"),
                  "total": total, "items": [_item(r, sig) for r in rows]})


@bp.get("/snapshots/periods")
def list_periods():
    """Every snapshot period with its counts, newest first.

    Responses:
        200: [{"period", "goals", "red", "no_data", "taken_at", "import_report"}]
    """
    actor, runtime = _actor(), _runtime()
    if not _may_aggregate(actor):
        return _forbidden()
    s = snapshots.c
    with runtime.engine.connect() as conn:
        rows = conn.execute(sa.select(s.period, sa.func.count(), sa.func.sum(sa.case((s.status == "red", 1), else_=0)),
                                      sa.func.sum(sa.case((s.status == "no_data", 1), else_=0)), sa.func.max(s.taken_at))
                            .group_by(s.period).order_by(s.period.desc())).all()
        reports = {r.period: r.import_report for r in conn.execute(sa.select(period_signals.c.period,
                                                                              period_signals.c.import_report))}
    return _json([{"period": p, "goals": n, "red": int(red or 0), "no_data": int(nd or 0), "taken_at": at,
                   "import_report": reports.get(p)} for p, n, red, nd, at in rows])


@bp.get("/goals/<int:goal_id>/snapshots")
def goal_snapshots(goal_id: int):
    """One goal's snapshot history, oldest first (its deviation trend).

    Responses:
        200: {"goal_id", "items": [...]}
    """
    actor, runtime = _actor(), _runtime()
    built = runtime.get(APP)
    g, readable = _readable_goals(built, actor)
    s = snapshots.c
    with runtime.engine.connect() as conn:
        if conn.execute(sa.select(g.c.id).where(g.c.id == goal_id, readable)).first() is None:
            return _json({"error": "no such goal"}, 404)
        periods = conn.execute(sa.select(period_signals.c.period)).scalars().all()  # one row per snapshot month
        rows = conn.execute(sa.select(snapshots, g.c.title).join(g, g.c.id == s.goal_id)
                            .where(s.period.in_(periods), s.goal_id == goal_id).order_by(s.period)).all()
        sig = _signals(conn, [r.period for r in rows])
    return _json({"goal_id": goal_id, "items": [_item(r, sig) for r in rows]})


@bp.get("/signals/<period>")
def get_signals(period: str):
    """The market signals a period's snapshot saw: customer-feedback hot words and competitor actions.

    Responses:
        200: {"period", "hot_words": [[word, weight]], "competitor_actions": [...], "feedback_count"}
    """
    try:
        parse_period(period)
    except PeriodError as exc:
        return _invalid("period", str(exc))
    with _runtime().engine.connect() as conn:
        sig = _signals(conn, [period]).get(period)
    if sig is None:
        return _json({"error": f"no snapshot of {period} yet"}, 404)
    return _json({"period": period, **sig})


@bp.get("/alignment")
def get_alignment():
    """The goal alignment index by month (trend) for a department or the company, each component inspectable.

    Query:
        department: a department code, or `company` (default)
        from: first month, YYYY-MM (default: six months back from the latest data)
        to: last month, YYYY-MM
    Responses:
        200: {"weights", "series": [{"period", "department", "index", "components"}]}
        403: not a manager, strategy, executive or admin
    """
    actor, runtime = _actor(), _runtime()
    if not _may_aggregate(actor):
        return _forbidden()
    built = runtime.get(APP)
    department = request.args.get("department") or alignment.COMPANY
    try:
        first, last = _period_arg("from"), _period_arg("to")
    except PeriodError as exc:
        return _invalid("from", str(exc))
    with runtime.engine.connect() as conn:
        if first is None or last is None:
            span = alignment.latest_months(conn, built)
            if span is None:
                return _json({"weights": alignment.weights_of(built.definition.settings), "series": []})
            first, last = first or span[0], last or span[1]
        if first > last:
            return _invalid("from", "from must not be after to")
        if parse_period(last)[0] * 12 + parse_period(last)[1] - parse_period(first)[0] * 12 - parse_period(first)[1] > 36:
            return _invalid("from", "at most 36 months at once")
        try:
            return _json(alignment.monthly(conn, built, department, first, last))
        except KeyError:
            return _invalid("department", f"no department {department!r}")


@bp.get("/alignment/departments")
def alignment_departments():
    """The alignment index of one month for the company and every department (a board table).

    Query:
        period (string, required): YYYY-MM
    Responses:
        200: [{"period", "department", "index", "components"}]
        403: not a manager, strategy, executive or admin
    """
    actor, runtime = _actor(), _runtime()
    if not _may_aggregate(actor):
        return _forbidden()
    try:
        period = _period_arg("period", required=True)
    except PeriodError as exc:
        return _invalid("period", str(exc))
    with runtime.engine.connect() as conn:
        return _json(alignment.by_department(conn, runtime.get(APP), period))


@bp.get("/effect")
def get_effect():
    """Before/after panel for a change date, every figure computed from the app's records.

    Query:
        change_date (string, required): YYYY-MM-DD
        window_days (integer): days on each side (default settings.snapshot.effect_window_days, 60)
    Responses:
        200: {"change_date", "before", "after", "metrics": [{"id", "label", "unit", "before", "after", "change"}]}
        403: not a manager, strategy, executive or admin
    """
    actor, runtime = _actor(), _runtime()
    if not _may_aggregate(actor):
        return _forbidden()
    try:
        change = dt.date.fromisoformat(request.args.get("change_date", ""))
    except ValueError:
        return _invalid("change_date", "change_date must be a date, YYYY-MM-DD")
    try:
        days = int(request.args["window_days"]) if request.args.get("window_days") else None
    except ValueError:
        days = 0
    if days is not None and not 1 <= days <= 366:
        return _invalid("window_days", "window_days must be a whole number from 1 to 366")
    with runtime.engine.connect() as conn:
        return _json(effect.panel(conn, runtime.get(APP), change, days))
