"""Database engines. SQLite is the embedded default; PostgreSQL is the production database.

On SQLite one writer at a time holds the database's write lock, and WAL lets readers go on beside it.
A transaction that reads first and writes later cannot wait for that lock (SQLite refuses the upgrade
at once), so a transaction that may write takes the lock when it begins. The rule here:
- a transaction begun explicitly (`engine.begin()`, `conn.begin()`) is a write: `BEGIN IMMEDIATE`;
- one SQLAlchemy begins by itself for a statement on `engine.connect()` only reads: plain `BEGIN`,
  no lock, never blocked by a writer. A connection that writes through autobegin (a job's chunk,
  whose transaction must start at its first statement and not before) says so with `writes_later`.
A writer waits at most the lock timeout (`KEEL_DB_LOCK_TIMEOUT`, seconds) and then fails with an error
`is_lock_timeout` recognises; the web answers it with 503 and Retry-After."""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy import event

from keel.storage.system import metadata as system_metadata

# SQLite stores NUMERIC with 15 significant digits; field types cap precision at that, so the
# warning about non-native Decimal is expected and says nothing new.
warnings.filterwarnings("ignore", message=".*does \\*not\\* support Decimal objects natively.*")

DEFAULT_LOCK_TIMEOUT = 10.0  # seconds; well under a front server's request timeout (gunicorn: 30 s)
WRITES_LATER = "keel_writes_later"
LOCK_WAIT = "keel_lock_wait"  # seconds a write transaction waits for the lock, when not the default
_LOCK_MESSAGES = ("database is locked", "database table is locked")
_PG_LOCK_NOT_AVAILABLE = "55P03"


def create_engine(url: str, lock_timeout: float | None = None) -> sa.Engine:
    lock_timeout = DEFAULT_LOCK_TIMEOUT if lock_timeout is None else float(lock_timeout)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": lock_timeout})
        _sqlite_transactional(engine, lock_timeout)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


class _Connection(sa.Connection):
    """Tells the `begin` event whether SQLAlchemy began this transaction by itself (autobegin)."""

    _keel_autobegin = False

    def _autobegin(self) -> None:
        # Re-entered (and a no-op) for the statements the `begin` event itself runs: restore, not reset.
        outer, self._keel_autobegin = self._keel_autobegin, True
        try:
            super()._autobegin()
        finally:
            self._keel_autobegin = outer


def _sqlite_transactional(engine: sa.Engine, lock_timeout: float) -> None:
    """Make pysqlite issue BEGIN itself, so DDL runs inside the same transaction as the data it touches
    and a failed sync rolls back whole; writes take the write lock up front (see the module doc)."""
    engine._connection_cls = _Connection  # the one seam SQLAlchemy offers for telling autobegin apart

    default_ms = int(lock_timeout * 1000)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={default_ms}")
        cur.close()
        record.info[LOCK_WAIT] = default_ms

    @event.listens_for(engine, "begin")
    def _begin(conn):
        options = conn.get_execution_options()
        wait_ms = int(options[LOCK_WAIT] * 1000) if LOCK_WAIT in options else default_ms
        if conn.connection.info.get(LOCK_WAIT) != wait_ms:  # only after `without_waiting` changed it
            conn.exec_driver_sql(f"PRAGMA busy_timeout={wait_ms}")
            conn.connection.info[LOCK_WAIT] = wait_ms
        reads_only = conn._keel_autobegin and not options.get(WRITES_LATER)
        conn.exec_driver_sql("BEGIN" if reads_only else "BEGIN IMMEDIATE")


def writes_later(conn: sa.Connection) -> sa.Connection:
    """Mark a connection from `engine.connect()` whose transaction (begun by its first statement) will
    write: on SQLite it takes the write lock at that first statement."""
    return conn.execution_options(**{WRITES_LATER: True})


@contextmanager
def without_waiting(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A write transaction for something that may as well not happen (a "last used" stamp): when another
    writer holds the lock it fails at once with a lock timeout instead of making a request wait."""
    with engine.connect() as conn:
        conn.execution_options(**{LOCK_WAIT: 0})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL lock_timeout = '100ms'")
            yield conn


def is_lock_timeout(exc: BaseException) -> bool:
    """Whether `exc` (or the error it wraps) is a writer that gave up waiting for a lock: SQLite's
    "database is locked", PostgreSQL's lock_not_available (lock_timeout)."""
    orig = getattr(exc, "orig", exc)
    if getattr(orig, "sqlstate", None) == _PG_LOCK_NOT_AVAILABLE:
        return True
    return type(orig).__name__ == "OperationalError" and str(orig).startswith(_LOCK_MESSAGES)


def sync_system_tables(conn: sa.Connection) -> None:
    """Keel's own tables as this version defines them: missing tables are created, and nullable columns
    and indexes added to tables an older version created (an existing database gets them at its next
    start). Keel's own tables only ever gain nullable columns, so nothing here rewrites a table."""
    system_metadata.create_all(conn)
    inspector = sa.inspect(conn)
    for table in system_metadata.sorted_tables:
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have and column.nullable:
                ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
                conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN {ddl}')
        for index in table.indexes:
            conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))


def create_system_tables(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        sync_system_tables(conn)
