"""Benchmark: the Goal Agility cascade on a generated company (SQLite, the embedded default).

    python bench/bench_goal_cascade.py

A 10,000-goal tree of depth 6 (company → 3 → 9 → 36 → 288 → 10,080 goals; every goal below the top carries
its share of its parent's target) with 1,000 tasks and 200 owners. Measured:
- impact set of a goal (up to the strategy card, down to every goal and task: what the graph and the
  approvers' preview are made of) for a goal with ~1,150 goals under it and for the company goal (all 10,000);
  budget: < 50 ms for the first;
- apply + cascade of an approved revision of that goal: new version, re-split of every derived goal under it
  through the record write path (versions, audit, events), yellow marks, one message per owner; budget < 1 s.
Prints one JSON line per figure."""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BRANCHING = (3, 3, 4, 8, 35)          # below the company goal: depth 6 in all
IMPACT_BUDGET_MS = 50.0
CASCADE_BUDGET_S = 1.0


def build_company(app, owners: int = 200):
    import sqlalchemy as sa

    from keel.actor import SYSTEM
    from keel.auth.directory import add_department, add_user
    from keel.storage.audit import utcnow

    runtime = app.extensions["keel"]
    built = runtime.get("goal_agility")
    goals, tasks, cards = built.table("goal"), built.table("task"), built.table("strategy_card")
    now = utcnow()
    sysc = {"row_version": 1, "created_at": now, "updated_at": now}
    with runtime.engine.begin() as conn:
        add_department(conn, "strategy", "战略部", SYSTEM)
        add_department(conn, "sales", "销售部", SYSTEM)
        boss = add_user(conn, "boss", "Boss", SYSTEM, roles=["executive"], department_code="sales")
        lin = add_user(conn, "lin", "林晓", SYSTEM, roles=["strategy"], department_code="strategy")
        conn.execute(sa.text("UPDATE keel_departments SET head_id = :h WHERE code = 'strategy'"), {"h": lin})
        people = [add_user(conn, f"u{i:03d}", f"员工{i}", SYSTEM, roles=["employee", "manager"], department_code="sales",
                           manager_username="boss") for i in range(owners)]
        card = conn.execute(cards.insert().values(title="高客单价客户深耕", owner=boss, period="2025-Q4",
                                                  status="active", priority=1, **sysc)).inserted_primary_key[0]
        base = {"category": "new_business", "metric": "新增客户数", "unit": "count", "status": "active",
                "rollup": "auto", "pacing": "linear", "revision_no": 1, "needs_confirmation": False, **sysc}
        root = conn.execute(goals.insert().values(title="公司", owner=boss, level="company", target=Decimal("100800"),
                                                  strategy_card=card, **base)).inserted_primary_key[0]
        levels, frontier, n = [[root]], [(root, Decimal("100800"))], 0
        for depth, fan in enumerate(BRANCHING, start=1):
            rows = []
            for parent, target in frontier:
                for _ in range(fan):
                    n += 1
                    rows.append({"title": f"目标 {n}", "owner": people[n % owners], "parent": parent,
                                 "target_share": Decimal(1) / fan, "target": (target / fan).quantize(Decimal(1)),
                                 "level": "team" if depth < 5 else "personal", **base})
            conn.execute(goals.insert(), rows)
            ids = list(conn.execute(sa.select(goals.c.id, goals.c.target).where(goals.c.id > levels[-1][-1])
                                    .order_by(goals.c.id)).all())
            levels.append([i for i, _ in ids])
            frontier = [(i, Decimal(t)) for i, t in ids]
        leaves = levels[-1]
        conn.execute(tasks.insert(), [{"title": f"任务 {i}", "owner": people[i % owners], "goal": leaves[i * 10],
                                       "status": "todo", **sysc} for i in range(1000)])
    runtime.refresh()
    return levels, boss


def run() -> list[dict]:
    from keel_goal_agility import cascade

    from keel import create_app
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from keel.definitions.loader import load_app_dir
    from keel.storage import records

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"KEEL_INSTANCE_PATH": tmp, "KEEL_DATABASE_URL": f"sqlite:///{tmp}/bench.db",
                          "KEEL_APPS_PATH": str(REPO / "app_definitions"), "KEEL_ENV": "development", "TESTING": True})
        runtime = app.extensions["keel"]
        apply_app(runtime.engine, load_app_dir(REPO / "app_definitions" / "goal_agility",
                                               app.extensions["keel_plugins"].registries()), SYSTEM)
        runtime.refresh()
        t0 = time.perf_counter()
        levels, boss = build_company(app)
        total = sum(len(level) for level in levels)
        results.append({"bench": "goal_cascade.generate", "goals": total, "seconds": round(time.perf_counter() - t0, 2)})
        built = runtime.get("goal_agility")
        target_goal, root = levels[2][0], levels[0][0]
        with runtime.engine.begin() as conn:
            req = records.create(conn, built, "revision_request", {
                "goal": target_goal, "reason": "市场变化", "resources": "客户成功经理", "proposed_target": "3000000",
                "proposed_metric": "客户增购额", "proposed_unit": "cny", "metric_rationale": "12 家客户咨询扩容"},
                SYSTEM)["id"]
            records.update_current(conn, built, "revision_request", req, {"status": "approved"}, SYSTEM)
        for label, goal_id in (("goal_with_1k_below", target_goal), ("company_goal_10k_below", root)):
            times, size = [], 0
            with runtime.engine.connect() as conn:
                for _ in range(7):
                    t = time.perf_counter()
                    p = cascade.impact(conn, built, goal_id)
                    times.append((time.perf_counter() - t) * 1000)
                    size = p.goals + len(p.tasks)
            med = statistics.median(times)
            row = {"bench": f"goal_cascade.impact_set.{label}", "nodes": size, "median_ms": round(med, 1)}
            if label == "goal_with_1k_below":
                row.update(budget_ms=IMPACT_BUDGET_MS, within_budget=med < IMPACT_BUDGET_MS)
            results.append(row)
        from keel.actor import workflow_actor

        writer = workflow_actor("goal_agility", "revision_approval", 1)  # what the approval's action writes with
        t = time.perf_counter()
        with runtime.engine.begin() as conn:
            p = cascade.apply(conn, built, req, writer, notify="goal_changed")
        elapsed = time.perf_counter() - t
        results.append({"bench": "goal_cascade.apply_and_cascade", "descendants": len(p.down), "resplit": len(p.resplit),
                        "tasks": len(p.tasks), "people_told": len(p.owners), "seconds": round(elapsed, 3),
                        "budget_s": CASCADE_BUDGET_S, "within_budget": elapsed < CASCADE_BUDGET_S})
        runtime.engine.dispose()
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "plugins" / "keel_goal_agility" / "src"))
    for r in run():
        print(json.dumps(r, ensure_ascii=False))
