"""Benchmark: a 100,000-item job split into chunks, on 1 worker process and then on 2, against the same
Redis and database. The job is `touch_records` over 100,000 rows with a little CPU work per record
(SHA-256 rounds), 50 chunks of 2,000. Budget: 2 workers finish faster than 1 (ratio 1w/2w > 1).

Database: PostgreSQL when KEEL_TEST_POSTGRES_URL (or the local default) answers, else SQLite (where
every transaction holds the one write lock, so expect little gain there). Redis: KEEL_REDIS_URL, else
KEEL_TEST_REDIS_URL / redis://127.0.0.1:6379/15, else a private redis-server. Uses its own queue name
and deletes only its own keys."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

ROWS = 100_000
CHUNK = 2_000
WORK_ROUNDS = 20
BATCH = 10_000
PG_ADMIN = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TEST_REDIS = os.environ.get("KEEL_REDIS_URL") or os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _bundle() -> dict:
    return {"app.json": {"id": "bench", "version": "1", "label": "Bench"},
            "entities/item.json": {"id": "item", "label": "Item", "fields": [
                {"id": "title", "type": "text", "max_length": 200}, {"id": "qty", "type": "integer"}]},
            "jobs/touch.json": {"id": "touch", "type": "touch_records", "idempotency": "run",
                                "chunk_size": CHUNK, "timeout_seconds": 600,
                                "params": {"entity": "item", "work_rounds": WORK_ROUNDS}}}


def _database(folder: Path) -> tuple[str, str, object]:
    """(url, kind, cleanup)."""
    try:
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        name = f"keel_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')

        def drop():
            with admin.connect() as c:
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()

        return sa.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False), "postgresql", drop
    except Exception:  # noqa: BLE001 - no PostgreSQL here: SQLite
        return f"sqlite:///{folder / 'bench.db'}", "sqlite", lambda: None


def _redis(app) -> str:
    from keel.jobs.embedded import ensure_redis
    from keel.jobs.queue import redis_connection

    try:
        redis_connection(TEST_REDIS, timeout=1).ping()
        return TEST_REDIS
    except Exception:  # noqa: BLE001
        url = ensure_redis(app)
        if url is None:
            raise RuntimeError("no Redis: set KEEL_REDIS_URL or install redis-server") from None
        return url


def _fill(engine, built) -> None:
    table = built.table("item")
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        for start in range(0, ROWS, BATCH):
            conn.execute(table.insert(), [{"created_at": now, "updated_at": now, "title": f"item {i}", "qty": i}
                                          for i in range(start, start + BATCH)])


def _timed_run(app, env, n_workers: int, worker_env: dict) -> float:
    from rq import Worker

    from keel.jobs.catalog import ask, find_spec
    from keel.jobs.execute import Dispatch
    from keel.jobs.runs import get_run

    procs = [subprocess.Popen([sys.executable, "-m", "keel.cli", "worker",
                               "--name", f"{worker_env['KEEL_JOB_QUEUE']}-{n_workers}-{i}"],
                              env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i in range(n_workers)]
    try:
        deadline = time.monotonic() + 60
        while len(Worker.all(queue=env.dispatcher.queue)) < n_workers:  # all up before the clock starts
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start")
            time.sleep(0.1)
        spec = find_spec(env, "touch")
        run_id = ask(env, spec, dict(spec.params), trigger="cli", user_id=None).run_id
        started = time.perf_counter()
        env.dispatcher.send(Dispatch(run_id, timeout=spec.timeout_seconds))
        while True:
            with env.engine.connect() as conn:
                run = get_run(conn, run_id)
            if run["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        if run["status"] != "succeeded" or run["counts"] != {"records": ROWS}:
            raise RuntimeError(f"the run did not count every record: {run}")
        return seconds
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def run() -> dict:
    from keel import create_app
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from keel.definitions.loader import load_bundle
    from keel.jobs import jobs_env
    from keel.jobs.queue import RQDispatcher, forget_queue, redis_connection

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db_url, db_kind, drop = _database(folder)
        queue = f"keelbench-{uuid.uuid4().hex[:8]}"
        try:
            app = create_app({"KEEL_INSTANCE_PATH": str(folder / "instance"), "KEEL_DATABASE_URL": db_url,
                              "KEEL_REDIS_URL": None, "KEEL_JOB_QUEUE": queue})
            env = jobs_env(app)
            apply_app(env.engine, load_bundle(_bundle(), env.runtime.registries), SYSTEM)
            env.runtime.refresh()
            _fill(env.engine, env.runtime.get("bench"))
            redis_url = _redis(app)
            env.dispatcher = RQDispatcher(redis_url, queue)
            worker_env = {**os.environ, "KEEL_DATABASE_URL": db_url, "KEEL_REDIS_URL": redis_url,
                          "KEEL_INSTANCE_PATH": str(folder / "instance"), "KEEL_JOB_QUEUE": queue}
            one = _timed_run(app, env, 1, worker_env)
            two = _timed_run(app, env, 2, worker_env)
        finally:
            try:
                conn = redis_connection(env.dispatcher.url) if "env" in dir() and env.dispatcher else None
                if conn is not None:
                    forget_queue(conn, queue)
            finally:
                if "env" in dir():
                    env.engine.dispose()
                drop()
    ratio = one / two
    return {"bench": "jobs_100k_two_workers",
            "figures": {"items": ROWS, "chunks": ROWS // CHUNK, "work_rounds_per_item": WORK_ROUNDS,
                        "database": db_kind, "seconds_1_worker": round(one, 3), "seconds_2_workers": round(two, 3),
                        "speedup_1w_over_2w": round(ratio, 3)},
            "budget": {"speedup_gt": 1.0}, "within_budget": ratio > 1.0}


if __name__ == "__main__":
    outcome = run()
    print(json.dumps(outcome))
    sys.exit(0 if outcome["within_budget"] else 1)
