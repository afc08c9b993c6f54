"""Shared fixtures. Tests use real databases: SQLite in a temporary folder, and PostgreSQL when
KEEL_TEST_POSTGRES_URL points at a server (each test gets a fresh database, dropped afterwards).
CI sets KEEL_REQUIRE_POSTGRES=1 so a missing server fails the run instead of skipping."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
APPS = REPO / "app_definitions"
PG_ADMIN_URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _pg_available() -> bool:
    try:
        eng = sa.create_engine(PG_ADMIN_URL)
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:
        return False


_PG = None


def pg_available() -> bool:
    global _PG
    if _PG is None:
        _PG = _pg_available()
        if not _PG and os.environ.get("KEEL_REQUIRE_POSTGRES") == "1":
            raise RuntimeError(f"PostgreSQL is required (KEEL_REQUIRE_POSTGRES=1) but {PG_ADMIN_URL} is unreachable")
    return _PG


@pytest.fixture
def pg_url():
    """A fresh, empty PostgreSQL database for one test."""
    if not pg_available():
        pytest.skip("PostgreSQL not reachable (set KEEL_TEST_POSTGRES_URL)")
    name = f"keel_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(PG_ADMIN_URL).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as c:
        c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'keel.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """Runs a test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keel.db'}"
    return request.getfixturevalue("pg_url")


def make_app(tmp_path, db_url: str, **extra):
    from keel import create_app

    cfg = {"KEEL_INSTANCE_PATH": str(tmp_path / "instance"), "KEEL_DATABASE_URL": db_url,
           "KEEL_APPS_PATH": str(APPS), "TESTING": True, "KEEL_ENV": "development"}
    cfg.update(extra)
    return create_app(cfg)


@pytest.fixture
def app(tmp_path, sqlite_url):
    a = make_app(tmp_path, sqlite_url)
    yield a
    a.extensions["keel"].engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def demo_app(tmp_path, sqlite_url):
    """A server app on SQLite with the Goal Agility app applied and `keel demo`'s data seeded."""
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from keel.definitions.loader import load_app_dir
    from keel.demo import seed_demo

    a = make_app(tmp_path, sqlite_url)
    runtime = a.extensions["keel"]
    apply_app(runtime.engine, load_app_dir(APPS / "goal_agility", a.extensions["keel_plugins"].registries()),
              SYSTEM)
    runtime.refresh()
    seed_demo(a)
    yield a
    runtime.engine.dispose()
