"""Benchmark: the HR plugin's `hr.sync_directory` job syncs 10,000 employees (200 departments, managers
resolved in the second pass) from a paginated HTTP JSON API on 127.0.0.1 into the org directory, through
the jobs engine's foreground path (`keel jobs run`): fetch, diff, bulk writes with a version row and an
audit event per change. Then the same sync again with no upstream change, which must write nothing.
Beside the first sync a thread writes as web requests do; its longest wait for the write lock is a figure
(tests/test_hr_plugin.py shows that web writes get in between the sync's commits; how long one waits
depends on the machine, so it is measured here, not asserted there).
Budget: the first sync < 10 s; no web write waits 2 s; the repeated sync writes 0 rows. SQLite, and
PostgreSQL when it answers (KEEL_TEST_POSTGRES_URL or the local default)."""
from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa

EMPLOYEES = 10_000
DEPARTMENTS = 200
PAGE = 500
BUDGET_SECONDS = 10.0
WEB_WAIT_BUDGET_SECONDS = 2.0
PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
PG_ADMIN = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _employees() -> list[dict]:
    rows = []
    for i in range(1, EMPLOYEES + 1):
        dept = i % DEPARTMENTS
        # The first person of each department heads it and reports to employee 1; the rest report to
        # their head, who is listed after some of them (the second pass has work to do).
        head = dept if dept else DEPARTMENTS
        rows.append({"id": f"E{i:05d}", "login": f"emp{i:05d}", "name": f"员工{i:05d}",
                     "email": f"emp{i:05d}@example.com", "dept": f"d{dept:03d}",
                     "manager": None if i == 1 else (f"E{head:05d}" if i != head else "E00001")})
    return rows


def _departments() -> list[dict]:
    return [{"code": f"d{d:03d}", "name": f"部门{d:03d}", "parent": None if d == 0 else "d000"}
            for d in range(DEPARTMENTS)]


class _HR(ThreadingHTTPServer):
    """The HR API: GET /employees?offset=&limit= and GET /departments."""

    daemon_threads = True

    def __init__(self):
        people, depts = _employees(), _departments()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                parts = urlsplit(self.path)
                q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                if parts.path == "/employees":
                    offset, limit = int(q.get("offset", 0)), int(q.get("limit", PAGE))
                    doc = {"employees": people[offset:offset + limit]}
                else:
                    doc = {"departments": depts}
                body = json.dumps(doc, ensure_ascii=False).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


def _bundle(hr: _HR) -> dict:
    allow = [f"127.0.0.1:{hr.server_address[1]}"]
    return {
        "app.json": {"id": "org", "version": "1", "label": "Org"},
        "connectors/people.json": {"id": "people", "type": "http_json", "allowlist": allow, "config": {
            "url": hr.url("/employees"), "items": "employees", "pagination": {"type": "offset", "page_size": PAGE}}},
        "connectors/depts.json": {"id": "depts", "type": "http_json", "allowlist": allow, "config": {
            "url": hr.url("/departments"), "items": "departments"}},
        "jobs/hr_sync.json": {"id": "hr_sync", "type": "hr.sync_directory", "timeout_seconds": 600, "params": {
            "connector": "people", "default_roles": ["employee"],
            "users": {"external_key": "id", "username": "login", "display_name": "name", "email": "email",
                      "department_code": "dept", "manager_key": {"path": "manager", "required": False}},
            "departments": {"connector": "depts", "mapping": {
                "code": "code", "name": "name", "parent_code": {"path": "parent", "required": False}}}}},
    }


def _writes(engine: sa.Engine) -> int:
    from keel.storage.system import audit_events, record_versions

    with engine.connect() as conn:
        return sum(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
                   for t in (audit_events, record_versions))


class _WebWrites:
    """A thread inserting rows one transaction at a time, as web requests would, until stopped; it
    records how long each insert waited (a lock timeout of a minute: a wait is measured, not failed)."""

    def __init__(self, url: str):
        from keel.storage.db import create_engine

        self.engine = create_engine(url, lock_timeout=60.0)
        with self.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE bench_web_writes (n INTEGER)")
        self.waits: list[float] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def _write(self) -> None:
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                with self.engine.begin() as conn:
                    conn.exec_driver_sql("INSERT INTO bench_web_writes (n) VALUES (1)")
                self.waits.append(time.perf_counter() - started)
                self._stop.wait(0.02)
        except BaseException as e:  # reported by __exit__, on the bench's thread
            self.error = e

    def __enter__(self) -> _WebWrites:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()
        if self.error is not None:
            raise RuntimeError(f"the web writes failed: {self.error}") from self.error


def _sync_on(kind: str, url: str, folder: Path, hr: _HR) -> dict:
    from keel import create_app
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from keel.definitions.loader import load_bundle
    from keel.jobs import jobs_env
    from keel.jobs.catalog import ask, find_spec, run_in_foreground

    app = create_app({"KEEL_INSTANCE_PATH": str(folder / kind), "KEEL_DATABASE_URL": url,
                      "KEEL_PLUGINS_PATH": str(PLUGINS), "TESTING": True})
    env = jobs_env(app)
    try:
        apply_app(env.engine, load_bundle(_bundle(hr), env.runtime.registries), SYSTEM)
        spec = replace(find_spec(env, "hr_sync"), idempotency="run")

        def sync() -> tuple[dict, float, int]:
            before = _writes(env.engine)
            started = time.perf_counter()
            asked = ask(env, spec, dict(spec.params), trigger="cli", user_id=None)
            run = run_in_foreground(env, asked.run_id)
            seconds = time.perf_counter() - started
            if run["status"] != "succeeded":
                raise RuntimeError(f"the sync failed: {run['error']}")
            return run["counts"], seconds, _writes(env.engine) - before

        with _WebWrites(url) as web:
            counts, first_seconds, first_writes = sync()
        web_wait = max(web.waits)
        if counts["users_created"] != EMPLOYEES or counts["problems"]:
            raise RuntimeError(f"the first sync did not create every employee: {counts}")
        again, second_seconds, second_writes = sync()
    finally:
        env.engine.dispose()
    return {"bench": f"hr_sync_10k_employees_{kind}",
            "figures": {"employees": EMPLOYEES, "departments": DEPARTMENTS, "page_size": PAGE,
                        "first_sync_seconds": round(first_seconds, 3), "first_sync_writes": first_writes,
                        "web_writes_beside": len(web.waits), "longest_web_write_wait_seconds": round(web_wait, 3),
                        "repeat_sync_seconds": round(second_seconds, 3), "repeat_sync_writes": second_writes,
                        "repeat_unchanged": again["users_unchanged"]},
            "budget": {"first_sync_seconds": BUDGET_SECONDS, "longest_web_write_wait_seconds": WEB_WAIT_BUDGET_SECONDS,
                       "repeat_sync_writes": 0},
            "within_budget": first_seconds < BUDGET_SECONDS and web_wait < WEB_WAIT_BUDGET_SECONDS
            and second_writes == 0}


def _postgres() -> tuple[str, object] | None:
    try:
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        name = f"keel_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception:  # no PostgreSQL here: SQLite only
        return None

    def drop():
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return sa.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False), drop


def run() -> list[dict]:
    hr = _HR()
    threading.Thread(target=hr.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            results.append(_sync_on("sqlite", f"sqlite:///{folder / 'bench.db'}", folder, hr))
            pg = _postgres()
            if pg is not None:
                url, drop = pg
                try:
                    results.append(_sync_on("postgresql", url, folder, hr))
                finally:
                    drop()
    finally:
        hr.shutdown()
        hr.server_close()
    return results


if __name__ == "__main__":
    outcomes = run()
    for outcome in outcomes:
        print(json.dumps(outcome, ensure_ascii=False))
    sys.exit(0 if all(o["within_budget"] for o in outcomes) else 1)
