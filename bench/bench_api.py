"""Benchmark: create a record through the REST API — JSON parsing, token check, validation, insert,
version row and audit event — with the in-process Flask test client, on SQLite and on PostgreSQL.

    python bench/bench_api.py            # one JSON line per result
    N=1000 python bench/bench_api.py

`run()` returns the results for bench/run.py. The budget (median 5 ms) applies to SQLite, the embedded
default; PostgreSQL figures are reported without a budget (they depend on the server's disk and fsync)."""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "api_app"
URL = "/api/v1/apps/tracker/project"
BUDGET_MEDIAN_MS = 5.0
PG_ADMIN_URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _timed_creates(db_url: str, instance: Path, n: int, warmup: int = 20) -> list[float]:
    from keel import create_app
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from keel.auth.directory import add_user
    from keel.auth.tokens import issue_token
    from keel.definitions.loader import load_app_dir
    from keel.plugins import builtin_registries

    app = create_app({"KEEL_INSTANCE_PATH": str(instance), "KEEL_DATABASE_URL": db_url,
                      "KEEL_ENV": "development", "TESTING": True})
    engine = app.extensions["keel"].engine
    try:
        apply_app(engine, load_app_dir(FIXTURE, builtin_registries()), SYSTEM)
        with engine.begin() as conn:
            uid = add_user(conn, "bench", "Bench", SYSTEM, roles=["manager"])
            token = issue_token(conn, uid)
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        times = []
        for i in range(warmup + n):
            body = {"name": f"project {i}", "budget": "1234.50", "start": "2025-10-18", "status": "open",
                    "active": True, "score": i % 100}
            t0 = time.perf_counter()
            r = client.post(URL, json=body, headers=headers)
            elapsed = time.perf_counter() - t0
            if r.status_code != 201:
                raise RuntimeError(f"create failed: {r.status_code} {r.get_data(as_text=True)[:500]}")
            if i >= warmup:
                times.append(elapsed * 1000)
        return times
    finally:
        engine.dispose()


def _figures(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"median_ms": round(statistics.median(ordered), 3),
            "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 3), "n": len(ordered)}


def bench_sqlite(n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        times = _timed_creates(f"sqlite:///{Path(tmp) / 'keel.db'}", Path(tmp) / "instance", n)
    figures = _figures(times)
    return {"bench": "api_create_record_sqlite", "figures": figures,
            "budget": {"median_ms": BUDGET_MEDIAN_MS}, "within_budget": figures["median_ms"] <= BUDGET_MEDIAN_MS}


def bench_postgres(n: int) -> dict:
    import sqlalchemy as sa

    result = {"bench": "api_create_record_postgres", "budget": None, "within_budget": None}
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"keel_bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as e:  # noqa: BLE001 - no server is a reportable outcome, not a failure
        admin.dispose()
        return {**result, "figures": None, "note": f"skipped: PostgreSQL unreachable ({type(e).__name__})"}
    try:
        url = sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        with tempfile.TemporaryDirectory() as tmp:
            times = _timed_creates(url, Path(tmp) / "instance", n)
        return {**result, "figures": _figures(times), "note": "report only"}
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def run(n: int | None = None) -> list[dict]:
    n = n or int(os.environ.get("N", "300"))
    return [bench_sqlite(n), bench_postgres(n)]


if __name__ == "__main__":
    for line in run(int(sys.argv[1]) if len(sys.argv) > 1 else None):
        print(json.dumps(line))
