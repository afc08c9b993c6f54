"""SQLite under a long write: another process holds the database's write lock (a long job, a stuck
transaction). Reads go on beside it — pages, API reads, /healthz — and a write that cannot get the lock
in time is a 503 with Retry-After (JSON under /api, a page otherwise), with nothing written."""
from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers_notify import csrf_of
from test_jobs_helpers import make_job_world

LOCK_TIMEOUT = 1.0
# Where a test shows that nobody waited for the lock: a request that waited would take all of this (the
# lock is held throughout), and no request that did not takes that long, however busy the machine.
PATIENT_LOCK_TIMEOUT = 30.0
PROJECTS = "/api/v1/apps/tracker/project"


@contextmanager
def write_lock_held(db_file: Path, exclusive: bool = False):
    """Another connection in the middle of a write transaction for as long as the block runs."""
    other = sqlite3.connect(db_file, isolation_level=None, timeout=0)
    if exclusive:  # not even readers get in (what a database on a broken disk would look like)
        other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE keel_users SET display_name = display_name")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.fixture(name="world")
def world_fixture(tmp_path, sqlite_url):
    yield from _world(tmp_path, sqlite_url, LOCK_TIMEOUT)


@pytest.fixture(name="patient_world")
def patient_world_fixture(tmp_path, sqlite_url):
    yield from _world(tmp_path, sqlite_url, PATIENT_LOCK_TIMEOUT)


def _world(tmp_path, sqlite_url, lock_timeout: float):
    w = make_job_world(tmp_path, sqlite_url, {}, KEEL_DB_LOCK_TIMEOUT=str(lock_timeout),
                       KEEL_REDIS_URL=None)
    from keel.actor import SYSTEM
    from keel.auth.directory import set_password

    with w.engine.begin() as conn:
        set_password(conn, w.user_ids["manager"], "a long enough password 1", SYSTEM)
    w.db_file = Path(sqlite_url.removeprefix("sqlite:///"))
    yield w
    w.engine.dispose()


def _login(world):
    c = world.app.test_client()
    r = c.post("/login", data={"username": "mia", "password": "a long enough password 1",
                               "csrf_token": csrf_of(c.get("/login").text)})
    assert r.status_code in (302, 303), r.text
    return c


def _projects(world) -> list[str]:
    with world.engine.connect() as conn:
        return conn.execute(sa.text("SELECT name FROM tracker__project ORDER BY id")).scalars().all()


def test_reads_pages_and_healthz_answer_while_another_transaction_holds_the_write_lock(patient_world):
    world = patient_world
    world.add_projects(2)
    browser = _login(world)
    took: dict[str, float] = {}

    def timed(what: str, request):
        started = time.monotonic()
        r = request()
        took[what] = time.monotonic() - started
        return r

    with write_lock_held(world.db_file):
        health = timed("/healthz", lambda: world.client.get("/healthz"))
        assert health.status_code == 200 and health.get_json()["status"] == "ok"
        # The manager's token was never used: its "last used" stamp is skipped, the read still answers.
        listed = timed(PROJECTS, lambda: world.client.get(PROJECTS, headers=world.headers("manager")))
        assert listed.status_code == 200 and len(listed.get_json()["items"]) == 2
        jobs = timed("/api/v1/jobs", lambda: world.client.get("/api/v1/jobs", headers=world.headers("admin")))
        assert jobs.status_code == 200
        for page in ("/apps/tracker/project", "/workbench", "/inbox", "/workflows/tasks"):
            r = timed(page, lambda page=page: browser.get(page))
            assert r.status_code == 200, (page, r.status_code)
    # Nobody waited for the lock (a wait would have lasted the whole lock timeout).
    assert max(took.values()) < PATIENT_LOCK_TIMEOUT, took


def test_a_write_that_cannot_get_the_lock_in_time_is_a_503_with_retry_after_and_writes_nothing(world):
    world.add_projects(1)
    browser = _login(world)
    form = browser.get("/apps/tracker/project/1")
    with write_lock_held(world.db_file):
        api = world.client.post(PROJECTS, json={"name": "while locked"}, headers=world.headers("manager"))
        assert api.status_code == 503 and api.headers["Retry-After"] == "5"
        assert api.get_json() == {"error": "数据库正忙，未做任何更改。请几秒钟后重试。"}
        page = browser.post("/apps/tracker/project/1", data={
            "name": "renamed while locked", "row_version": "1", "csrf_token": csrf_of(form.text)})
        assert page.status_code == 503 and page.headers["Retry-After"] == "5"
        assert "text/html" in page.content_type and "系统繁忙" in page.text
    assert _projects(world) == ["project 0"]
    again = world.client.post(PROJECTS, json={"name": "after"}, headers=world.headers("manager"))
    assert again.status_code == 201 and _projects(world) == ["project 0", "after"]


def test_healthz_answers_json_even_when_the_database_cannot_be_read(world):
    world.engine.dispose()  # an exclusive lock needs every other connection closed
    with write_lock_held(world.db_file, exclusive=True):
        r = world.client.get("/healthz")
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert r.get_json() == {"status": "unavailable", "database": "busy"}


def test_an_api_read_records_when_its_token_was_last_used_once_the_lock_is_free(world):
    from keel.storage.system import api_tokens

    def last_used():
        with world.engine.connect() as conn:
            return conn.execute(sa.select(api_tokens.c.last_used_at)
                                .where(api_tokens.c.user_id == world.user_ids["manager"])).scalar()

    with write_lock_held(world.db_file):
        assert world.client.get(PROJECTS, headers=world.headers("manager")).status_code == 200
    assert last_used() is None  # skipped, not waited for
    assert world.client.get(PROJECTS, headers=world.headers("manager")).status_code == 200
    assert last_used() is not None


@pytest.mark.parametrize("name", ["KEEL_DB_LOCK_TIMEOUT", "KEEL_JOB_HEARTBEAT_SECONDS"])
@pytest.mark.parametrize("raw", ["soon", "0", "-5", "86400"])
def test_a_setting_of_seconds_that_is_not_a_sensible_number_stops_the_start_with_its_name(tmp_path, sqlite_url,
                                                                                          name, raw):
    from conftest import make_app
    from keel.config import ConfigError

    with pytest.raises(ConfigError, match=f"{name} must be a number of seconds between 0 and 3600, not '{raw}'"):
        make_app(tmp_path, sqlite_url, **{name: raw})
