"""The monthly snapshot, set-based: one INSERT ... SELECT per chunk of goals computes every goal's actual to
date (from the staged CRM actuals), expected to date (target × pacing), deviation, forecast deviation and
red flag inside the database, and one UPDATE copies deviation/flag/period onto the goals. No goal is
loaded into Python (goals paced by monthly weights are the exception: their share due is computed per
distinct weights in Python, then inserted by the same statement).

Idempotent by construction: UNIQUE(period, goal_id) with ON CONFLICT DO NOTHING, so a rerun of a period,
or a chunk retried after its worker was killed (its transaction rolled back), inserts nothing twice and
changes nothing already taken. Deviation is rounded to 6 places before it is compared with the threshold,
so exactly 15% is 0.150000 and is not red (floating point would make some exact cases 0.1500000001)."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from keel_goal_agility.measure.periods import bounds, linear_fraction, monthly_fraction
from keel_goal_agility.measure.tables import metric_inputs, snapshots

SCALE = 6
_NUM = sa.Numeric(20, 6)


def _days(dialect: str, a, b):
    """b - a in days, as a number."""
    if dialect == "sqlite":
        return sa.func.julianday(b) - sa.func.julianday(a)
    return sa.cast(b - a, _NUM)


def _month_of(dialect: str, d):
    return sa.func.substr(d, 1, 7) if dialect == "sqlite" else sa.func.to_char(d, "YYYY-MM")


def _linear_fraction(dialect: str, g, p_end: dt.date):
    end_bound = sa.literal(p_end, sa.Date())
    upto = sa.case((g.c.period_end < end_bound, g.c.period_end), else_=end_bound)
    share = (sa.cast(_days(dialect, g.c.period_start, upto), _NUM) + 1) / \
        (sa.cast(_days(dialect, g.c.period_start, g.c.period_end), _NUM) + 1)
    return sa.case(
        (sa.or_(g.c.period_start.is_(None), g.c.period_end.is_(None), g.c.period_end < g.c.period_start),
         sa.literal(1, _NUM)),
        (share > 1, sa.literal(1, _NUM)),
        (share < 0, sa.literal(0, _NUM)),
        else_=share)


def _select(dialect: str, g, period: str, fraction, where, settings: Mapping[str, Any], run_id: int | None,
            now: dt.datetime):
    """SELECT of the snapshot rows of the goals `where` picks, `fraction` being their share due."""
    mi = metric_inputs.c
    first_month = sa.func.coalesce(_month_of(dialect, g.c.period_start), "0000-00")
    summed = (sa.select(sa.func.sum(mi.value))
              .where(mi.goal_id == g.c.id, mi.kind == "actual", mi.period <= period, mi.period >= first_month)
              .scalar_subquery())
    latest = (sa.select(mi.value).where(mi.goal_id == g.c.id, mi.kind == "actual", mi.period <= period,
                                        mi.period >= first_month)
              .order_by(mi.period.desc()).limit(1).scalar_subquery())
    forecast = (sa.select(mi.value).where(mi.goal_id == g.c.id, mi.kind == "forecast", mi.period <= period,
                                          mi.period >= first_month)
                .order_by(mi.period.desc()).limit(1).scalar_subquery())
    # A rate (percent) is due in full at any point; amounts and counts accrue with the pacing.
    expected = sa.case((g.c.unit == "percent", g.c.target), else_=g.c.target * fraction)
    actual = sa.case((g.c.unit == "percent", latest), else_=summed)
    inner = (sa.select(g.c.id.label("goal_id"), g.c.owner.label("owner_id"), g.c.category, g.c.unit,
                       g.c.target, expected.label("expected"), actual.label("actual"),
                       forecast.label("forecast"))
             .where(*where).cte("due").prefix_with("MATERIALIZED"))
    # MATERIALIZED: computed once per goal. As a plain subquery it is flattened into the outer SELECT,
    # which names `actual` and `expected` a dozen times (deviation, status) — each a correlated subquery
    # run again: four times slower on 100,000 goals.
    d = inner.c
    deviation = sa.case(
        (sa.and_(d.actual.is_not(None), d.expected > 0),
         sa.func.round(sa.cast((d.actual - d.expected) / d.expected, _NUM), SCALE)),
        else_=sa.null())
    threshold = float(settings.get("deviation_threshold", 0.15))
    below_only = (settings.get("snapshot") or {}).get("flag_direction") == "below"
    red = deviation < -threshold if below_only else sa.or_(deviation > threshold, deviation < -threshold)
    status = sa.case((deviation.is_(None), "no_data"), (red, "red"), else_="ok")
    forecast_dev = sa.case(
        (sa.and_(d.forecast.is_not(None), d.target > 0),
         sa.func.round(sa.cast((d.forecast - d.target) / d.target, _NUM), SCALE)), else_=sa.null())
    return sa.select(sa.literal(period).label("period"), d.goal_id, d.owner_id, d.category, d.unit, d.target,
                     sa.func.round(sa.cast(d.expected, _NUM), SCALE).label("expected"), d.actual,
                     deviation.label("deviation"), status.label("status"), d.forecast,
                     forecast_dev.label("forecast_deviation"),
                     sa.literal(run_id, sa.BigInteger()).label("run_id"),
                     sa.literal(now, sa.DateTime(timezone=True)).label("taken_at")).where(sa.true())
    # ^ SQLite reads "INSERT ... SELECT ... FROM t ON CONFLICT" as a join's ON without a WHERE here.


COLUMNS = ["period", "goal_id", "owner_id", "category", "unit", "target", "expected", "actual", "deviation",
           "status", "forecast", "forecast_deviation", "run_id", "taken_at"]


def _insert(conn: sa.Connection, select) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(snapshots).from_select(COLUMNS, select).on_conflict_do_nothing(
        index_elements=["period", "goal_id"])
    conn.execute(stmt)


def active_goals(g, period: str):
    """Goals a period's snapshot covers: active, not deleted, started by the end of the month."""
    _, last = bounds(period)
    return [g.c.deleted_at.is_(None), g.c.status == "active",
            sa.or_(g.c.period_start.is_(None), g.c.period_start <= sa.literal(last, sa.Date()))]


def take(conn: sa.Connection, built, period: str, settings: Mapping[str, Any], id_range: tuple[int, int],
         run_id: int | None = None, now: dt.datetime | None = None) -> dict[str, int]:
    """Snapshot the goals with ids in [lo, hi] for `period`, and copy the results onto the goals.
    Returns {"snapshotted": rows inserted now, "red", "no_data", "ok": of this range in this period}."""
    now = now or dt.datetime.now(dt.UTC)
    g = built.table("goal")
    dialect = conn.dialect.name
    _, p_end = bounds(period)
    lo, hi = id_range
    where = [*active_goals(g, period), g.c.id >= lo, g.c.id <= hi]
    monthly = "pacing" in g.c and "monthly_weights" in g.c
    linear_where = [*where, sa.func.coalesce(g.c.pacing, "linear") != "monthly"] if monthly else where
    s = snapshots.c
    in_range = [s.period == period, s.goal_id >= lo, s.goal_id <= hi]
    before = conn.execute(sa.select(sa.func.count()).where(*in_range)).scalar()
    _insert(conn, _select(dialect, g, period, _linear_fraction(dialect, g, p_end), linear_where,
                                     settings, run_id, now))
    if monthly:
        _insert_monthly(conn, g, dialect, period, where, settings, run_id, now)
    _copy_to_goals(conn, g, period, lo, hi)
    counts = {"snapshotted": 0, "red": 0, "no_data": 0, "ok": 0}
    for status, n in conn.execute(sa.select(s.status, sa.func.count()).where(*in_range).group_by(s.status)):
        counts[status] = n
    # Counted, not taken from rowcount: SQLite's driver reports -1 for an INSERT that starts with WITH.
    counts["snapshotted"] = counts["red"] + counts["no_data"] + counts["ok"] - before
    return counts


def _insert_monthly(conn, g, dialect, period, where, settings, run_id, now) -> None:
    rows = conn.execute(sa.select(g.c.id, g.c.period_start, g.c.period_end, g.c.monthly_weights)
                        .where(*where, g.c.pacing == "monthly")).all()
    by_fraction: dict[Decimal, list[int]] = {}
    for r in rows:
        f = None
        if r.period_start is not None and r.period_end is not None:
            f = monthly_fraction(r.monthly_weights, r.period_start, r.period_end, period)
        if f is None:  # no usable weights: the goal is paced linearly, as if it had said so
            f = linear_fraction(r.period_start, r.period_end, period)
        by_fraction.setdefault(f.quantize(Decimal("1e-15")), []).append(r.id)
    for fraction, ids in by_fraction.items():
        for i in range(0, len(ids), 500):
            _insert(conn, _select(dialect, g, period, sa.literal(fraction, sa.Numeric(30, 15)),
                                              [*where, g.c.id.in_(ids[i:i + 500])], settings, run_id, now))


def _copy_to_goals(conn: sa.Connection, g, period: str, lo: int, hi: int) -> None:
    """The goal shows its latest snapshot: deviation (NULL = no data), flag and period. A rerun of an
    older period does not overwrite a newer one's values."""
    s = snapshots.c
    # UPDATE ... FROM (SQLite 3.33+, PostgreSQL): one join, not three correlated subqueries per goal.
    conn.execute(g.update()
                 .where(g.c.id == s.goal_id, s.period == period, s.goal_id >= lo, s.goal_id <= hi,
                        sa.or_(g.c.last_snapshot.is_(None), g.c.last_snapshot <= period))
                 .values(deviation=s.deviation, flag=sa.case((s.status == "red", "red"), else_="none"),
                         last_snapshot=period))


def id_ranges(conn: sa.Connection, built, period: str, size: int) -> list[tuple[int, int]]:
    """[lo, hi] id ranges of about `size` active goals each."""
    g = built.table("goal")
    ids = conn.execute(sa.select(g.c.id).where(*active_goals(g, period)).order_by(g.c.id)).scalars().all()
    return [(ids[i], ids[min(i + size, len(ids)) - 1]) for i in range(0, len(ids), size)]
