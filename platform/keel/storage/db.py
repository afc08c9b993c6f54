"""Database engines. SQLite is the embedded default; PostgreSQL is the production database."""
from __future__ import annotations

import warnings

import sqlalchemy as sa
from sqlalchemy import event

from keel.storage.system import metadata as system_metadata

# SQLite stores NUMERIC with 15 significant digits; field types cap precision at that, so the
# warning about non-native Decimal is expected and says nothing new.
warnings.filterwarnings("ignore", message=".*does \\*not\\* support Decimal objects natively.*")


def create_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        _sqlite_transactional(engine)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _sqlite_transactional(engine: sa.Engine) -> None:
    """Make pysqlite issue BEGIN itself (IMMEDIATE: take the write lock up front), so DDL runs inside
    the same transaction as the data it touches and a failed sync rolls back whole."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_system_tables(engine: sa.Engine) -> None:
    system_metadata.create_all(engine)
