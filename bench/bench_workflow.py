"""Benchmarks of the workflow engine, in process on SQLite (the path a request takes, without HTTP):

- start an instance and resolve a two-branch parallel (all-of) approval: start the workflow on a submitted
  record (one transaction), then each of the two approvers approves (one transaction each), with the
  status field kept, audit events and inbox messages written; median of the whole, budget 10 ms;
- with 1,000 pending instances, list one approver's tasks (the first page): median, budget 50 ms."""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 60
PENDING = 1000
LIST_ROUNDS = 30
START_BUDGET_MS = 10.0
LIST_BUDGET_MS = 50.0

BUNDLE = {
    "app.json": {"id": "bench", "version": "1", "label": "Bench", "roles": [{"id": "employee", "label": "Employee"}]},
    "entities/request.json": {"id": "request", "label": "Request", "fields": [
        {"id": "title", "type": "text", "required": True, "max_length": 200},
        {"id": "amount", "type": "decimal", "scale": 2},
        {"id": "status", "type": "select", "read_only": True, "options": [
            {"id": s, "zh": s, "en": s} for s in ("pending", "returned", "approved", "rejected", "withdrawn")]}],
        "permissions": [{"role": "employee", "read": "own", "create": True, "update": "own"}]},
    "forms/request.json": {"id": "request", "entity": "request", "label": "Request",
                           "fields": [{"field": "title"}, {"field": "amount"}]},
    "workflows/approval.json": {"id": "approval", "starts_on": {"form": "request"}, "status_field": "status",
                                "steps": [{"id": "dual", "mode": "all", "approvers": [
                                    {"rule": "manager_of", "of": "submitter"},
                                    {"rule": "department", "code": "finance", "pick": "head"}]}]},
}


def _setup(folder: str):
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from keel.auth.directory import add_department, add_user, get_actor, set_department_head
    from keel.definitions.loader import load_bundle
    from keel.plugins import builtin_registries
    from keel.runtime import Runtime
    from keel.storage.db import create_engine, create_system_tables
    from keel.workflow import ensure_tables, notices

    notices.inbox(), notices.timers()  # imported first: their tables join the system metadata
    engine = create_engine(f"sqlite:///{Path(folder) / 'bench.db'}")
    create_system_tables(engine)
    ensure_tables(engine)
    app_def = load_bundle(BUNDLE, builtin_registries())
    apply_app(engine, app_def, SYSTEM)
    runtime = Runtime(engine, builtin_registries())
    runtime.refresh()
    with engine.begin() as conn:
        add_department(conn, "sales", "Sales", SYSTEM)
        add_department(conn, "finance", "Finance", SYSTEM)
        boss = add_user(conn, "boss", "Boss", SYSTEM, department_code="sales")
        head = add_user(conn, "head", "Head", SYSTEM, department_code="finance")
        rep = add_user(conn, "rep", "Rep", SYSTEM, roles=["employee"], department_code="sales",
                       manager_username="boss")
        set_department_head(conn, "finance", "head", SYSTEM)
        actors = {name: get_actor(conn, uid) for name, uid in (("boss", boss), ("head", head), ("rep", rep))}
    return engine, runtime, actors


def _record(engine, built, rep) -> int:
    from keel.actor import SYSTEM
    from keel.storage import records

    # Created by the system (records of this entity start an approval only through their form); the
    # request is then started for `rep`, as a form submission would.
    with engine.begin() as conn:
        return records.create(conn, built, "request", {"title": "Laptop", "amount": "1200"}, SYSTEM)["id"]


def _start(engine, built, rep, record_id: int) -> dict[int, int]:
    """Start the workflow on a record (one transaction); the new tasks by approver."""
    import sqlalchemy as sa

    from keel.storage.workflow_tables import wf_tasks
    from keel.workflow import engine as wf

    with engine.begin() as conn:
        instance_id = wf.start(conn, built, "approval", record_id, rep)
        return dict(conn.execute(sa.select(wf_tasks.c.assignee_id, wf_tasks.c.id)
                                 .where(wf_tasks.c.instance_id == instance_id)).all())


def run() -> list[dict]:
    from keel.workflow import engine as wf
    from keel.workflow import queries

    with tempfile.TemporaryDirectory() as folder:
        engine, runtime, actors = _setup(folder)
        built = runtime.get(BUNDLE["app.json"]["id"])
        try:
            rep, boss, head = actors["rep"], actors["boss"], actors["head"]
            timings = []
            for i in range(ROUNDS + 5):
                record_id = _record(engine, built, rep)  # the submitted record exists before the clock starts
                began = time.perf_counter()
                tasks = _start(engine, built, rep, record_id)
                for approver in (boss, head):
                    with engine.begin() as conn:
                        outcome = wf.approve(conn, runtime, tasks[approver.user_id], approver)
                elapsed = (time.perf_counter() - began) * 1000
                if outcome["status"] != "approved":
                    raise RuntimeError(f"the approval did not finish: {outcome}")
                if i >= 5:  # the first rounds fill caches (definitions, compiled statements)
                    timings.append(elapsed)
            start_ms = statistics.median(timings)

            for _ in range(PENDING):
                _start(engine, built, rep, _record(engine, built, rep))
            list_timings = []
            for _ in range(LIST_ROUNDS):
                began = time.perf_counter()
                with engine.connect() as conn:
                    page = queries.list_tasks(conn, runtime, head, "pending")
                list_timings.append((time.perf_counter() - began) * 1000)
            if page["total"] != PENDING or len(page["items"]) != 50:
                raise RuntimeError(f"expected {PENDING} pending tasks, got {page['total']}")
            list_ms = statistics.median(list_timings)
        finally:
            engine.dispose()
    return [
        {"bench": "workflow_start_and_parallel_approval",
         "figures": {"median_ms": round(start_ms, 3), "p90_ms": round(sorted(timings)[int(len(timings) * 0.9)], 3),
                     "rounds": ROUNDS},
         "budget": {"median_ms": START_BUDGET_MS}, "within_budget": start_ms < START_BUDGET_MS},
        {"bench": "workflow_list_tasks_1000_pending",
         "figures": {"median_ms": round(list_ms, 3), "pending": PENDING, "page_size": len(page["items"])},
         "budget": {"median_ms": LIST_BUDGET_MS}, "within_budget": list_ms < LIST_BUDGET_MS},
    ]


if __name__ == "__main__":
    results = run()
    for r in results:
        print(json.dumps(r))
    sys.exit(0 if all(r["within_budget"] for r in results) else 1)
