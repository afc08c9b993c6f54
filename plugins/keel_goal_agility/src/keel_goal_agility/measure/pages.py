"""The measures page, /apps/goal_agility/measures: the latest snapshot's red goals with their deviation and
the month's signals, the alignment index trend (company and departments) with its components, and the
before/after effect panel for a chosen change date. Reads through the same functions as the REST routes."""
from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, current_app, render_template, request

from keel_goal_agility.measure import alignment, effect
from keel_goal_agility.measure.tables import ensure_tables, period_signals, snapshots

APP = "goal_agility"
bp = Blueprint("goal_agility_measures_pages", __name__, template_folder="templates")


def percent(value: Any, places: str = "0.1") -> str:
    """0.15 -> "15.0%"; None -> "no data" (never 0%)."""
    from keel.i18n import translate

    if value is None:
        return translate("no data")
    return f"{(Decimal(str(value)) * 100).quantize(Decimal(places), ROUND_HALF_UP)}%"


def amount(value: Any, unit: str | None) -> str:
    from keel.i18n import translate

    if value is None:
        return translate("no data")
    d = Decimal(str(value))
    if unit == "cny":
        return f"¥{d.quantize(Decimal('0.01'), ROUND_HALF_UP):,}"
    if unit == "percent":
        return f"{d.quantize(Decimal('0.1'), ROUND_HALF_UP)}%"
    return f"{d.quantize(Decimal('1'), ROUND_HALF_UP):,}"


def _effect_value(value: str | None, unit: str) -> str:
    if value is None:
        return percent(None)
    if unit == "fraction":
        return percent(value)
    if unit == "cny":
        return amount(value, "cny")
    return value


@bp.get(f"/apps/{APP}/measures")
def measures_page():
    from keel.auth import current_actor
    from keel.i18n import current_lang, translate
    from keel.storage.query import read_condition
    from keel.storage.system import users

    actor = current_actor()
    runtime = current_app.extensions["keel"]
    ensure_tables(runtime.engine)
    built = runtime.get(APP)
    may_aggregate = actor.is_admin or bool({"manager", "strategy", "executive"} & set(actor.roles))
    g, s = built.table("goal"), snapshots.c
    change = request.args.get("change_date") or ""
    error = None
    with runtime.engine.connect() as conn:
        period = conn.execute(sa.select(sa.func.max(s.period))).scalar()
        red = conn.execute(sa.select(snapshots, g.c.title).join(g, g.c.id == s.goal_id)
                           .where(s.period == period, s.status == "red",
                                  read_condition(g, built.entity("goal"), actor))
                           .order_by(s.deviation, s.goal_id).limit(200)).all() if period else []
        signals = conn.execute(sa.select(period_signals).where(period_signals.c.period == period)).first()
        ids = sorted({r.owner_id for r in red if r.owner_id})
        owners = {r.id: r.display_name for r in conn.execute(
            sa.select(users.c.id, users.c.display_name).where(users.c.id.in_(ids)))} if ids else {}
        trend = departments = panel = None
        if may_aggregate:
            span = alignment.latest_months(conn, built)
            if span:
                trend = alignment.monthly(conn, built, alignment.COMPANY, *span)["series"]
                departments = alignment.by_department(conn, built, span[1])
            if change:
                try:
                    panel = effect.panel(conn, built, dt.date.fromisoformat(change))
                except ValueError:
                    error = translate("The change date must be a date (YYYY-MM-DD).")
    lang = current_lang()
    return render_template("goal_measures.html", title=translate("Goal measures"), period=period, red=red,
                           signals=signals, owners=owners, trend=trend, departments=departments, panel=panel,
                           change=change, error=error, may_aggregate=may_aggregate, lang=lang,
                           percent=percent, amount=amount, effect_value=_effect_value)
