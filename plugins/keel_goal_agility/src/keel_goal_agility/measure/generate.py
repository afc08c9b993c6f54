"""A generated company for the benchmark and the scale tests: `n` goals in Q4 2025 with CRM actuals staged
for October (every tenth goal without data), inserted set-based straight into the tables — a fixture of
data, not a user's writes (no versions or audit rows; the snapshot does not read those)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa

from keel_goal_agility.measure.tables import ensure_tables, metric_inputs

PERIOD = "2025-10"
START, END = dt.date(2025, 10, 1), dt.date(2025, 12, 31)
BATCH = 5000


def owners(conn: sa.Connection, count: int = 50) -> list[int]:
    from keel.actor import SYSTEM
    from keel.auth.directory import add_user, find_user

    out = []
    for i in range(count):
        name = f"gen_owner_{i:03d}"
        row = find_user(conn, name)
        out.append(row.id if row is not None else add_user(conn, name, f"负责人{i:03d}", SYSTEM))
    return out


def company(engine: sa.Engine, built, n: int) -> dict[str, int]:
    """Insert `n` active goals and their October actuals; returns {"goals", "with_actuals", "first_id"}."""
    ensure_tables(engine)
    goal = built.table("goal")
    now = dt.datetime.now(dt.UTC)
    has = set(goal.c.keys())
    with engine.begin() as conn:
        people = owners(conn)
        first = (conn.execute(sa.select(sa.func.max(goal.c.id))).scalar() or 0) + 1
        rows = []
        for i in range(n):
            unit = ("count", "cny", "percent")[i % 3]
            row = {"id": first + i, "row_version": 1, "created_at": now, "updated_at": now,
                   "title": f"生成目标 {i}", "owner": people[i % len(people)], "level": "personal",
                   "category": ("new_business", "upsell", "renewal")[i % 3], "metric": f"指标{i % 7}",
                   "unit": unit, "target": Decimal(90 if unit == "percent" else 1000 + i % 500),
                   "period_start": START, "period_end": END, "status": "active"}
            if "pacing" in has:
                row["pacing"] = "linear"
            rows.append({k: v for k, v in row.items() if k in has})
            if len(rows) >= BATCH:
                conn.execute(goal.insert(), rows)
                rows = []
        if rows:
            conn.execute(goal.insert(), rows)
        inputs, with_actuals = [], 0
        for i in range(n):
            if i % 10 == 9:
                continue  # no data for this goal
            with_actuals += 1
            unit = ("count", "cny", "percent")[i % 3]
            value = Decimal(80 + i % 20) if unit == "percent" else Decimal((1000 + i % 500) * (20 + i % 15) // 100)
            inputs.append({"period": PERIOD, "goal_id": first + i, "kind": "actual", "value": value,
                           "source": "generated", "imported_at": now})
            if len(inputs) >= BATCH:
                conn.execute(metric_inputs.insert(), inputs)
                inputs = []
        if inputs:
            conn.execute(metric_inputs.insert(), inputs)
    return {"goals": n, "with_actuals": with_actuals, "first_id": first}
