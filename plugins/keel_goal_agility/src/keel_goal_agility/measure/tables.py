"""The measures' own tables (not entities): snapshots are written set-based by the thousand and never
changed, which the record write path (one version row per write) is not made for.

- `ga_goal_snapshots`: one row per goal and period, immutable — a database trigger refuses UPDATE and
  DELETE on SQLite and PostgreSQL, so no code path (ours, a plugin's, a console) can rewrite history.
  UNIQUE(period, goal_id) is what makes a rerun (or a chunk retried after a killed worker) insert nothing twice;
  it is also the only index: a goal's history is read as `period IN (the periods) AND goal_id = ?` (a seek
  per period, periods being few), which saves the snapshot a second index to write 100,000 times.
- `ga_period_signals`: per period, the market signals the snapshot saw (hot words, competitor actions) and
  the report of the connector import (rows matching no goal). Immutable too.
- `ga_metric_inputs`: CRM actuals and finance forecasts per goal and month, staged from the connectors.
"""
from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_NUM = sa.Numeric(20, 6, asdecimal=True)

snapshots = sa.Table(
    "ga_goal_snapshots", metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("period", sa.String(7), nullable=False),
    sa.Column("goal_id", sa.BigInteger(), nullable=False),
    sa.Column("owner_id", sa.BigInteger()),
    sa.Column("category", sa.String(64)),
    sa.Column("unit", sa.String(32)),
    sa.Column("target", _NUM),
    sa.Column("expected", _NUM),
    sa.Column("actual", _NUM),            # NULL: no data from the CRM (never 0)
    sa.Column("deviation", _NUM),         # NULL: no data
    sa.Column("status", sa.String(8), nullable=False),  # red | ok | no_data
    sa.Column("forecast", _NUM),
    sa.Column("forecast_deviation", _NUM),
    sa.Column("run_id", sa.BigInteger()),
    sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("period", "goal_id", name="uq_ga_goal_snapshots_period_goal"),
)

period_signals = sa.Table(
    "ga_period_signals", metadata,
    sa.Column("period", sa.String(7), primary_key=True),
    sa.Column("hot_words", sa.JSON(), nullable=False),
    sa.Column("competitor_actions", sa.JSON(), nullable=False),
    sa.Column("feedback_count", sa.Integer(), nullable=False),
    sa.Column("import_report", sa.JSON(), nullable=False),
    sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
)

metric_inputs = sa.Table(
    "ga_metric_inputs", metadata,
    sa.Column("period", sa.String(7), nullable=False),
    sa.Column("goal_id", sa.BigInteger(), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # actual | forecast
    sa.Column("value", _NUM, nullable=False),
    sa.Column("source", sa.String(64)),
    sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("goal_id", "kind", "period", name="pk_ga_metric_inputs"),
    sa.Index("ix_ga_metric_inputs_period", "period", "kind"),
)

IMMUTABLE = ("ga_goal_snapshots", "ga_period_signals")
MESSAGE = "goal snapshots are immutable"


def _sqlite_triggers() -> list[str]:
    out = []
    for t in IMMUTABLE:
        for op in ("UPDATE", "DELETE"):
            out.append(f"CREATE TRIGGER IF NOT EXISTS {t}_no_{op.lower()} BEFORE {op} ON {t} "
                       f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END")
    return out


def _postgres_triggers() -> list[str]:
    out = ["CREATE OR REPLACE FUNCTION ga_refuse_change() RETURNS trigger LANGUAGE plpgsql AS "
           f"$$ BEGIN RAISE EXCEPTION '{MESSAGE}'; END $$"]
    for t in IMMUTABLE:
        out.append(f"DROP TRIGGER IF EXISTS {t}_immutable ON {t}")
        out.append(f"CREATE TRIGGER {t}_immutable BEFORE UPDATE OR DELETE ON {t} "
                   "FOR EACH ROW EXECUTE FUNCTION ga_refuse_change()")
    return out


_READY: set[str] = set()


def ensure_tables(bind: sa.Engine | sa.Connection) -> None:
    """Create the tables and their immutability triggers when missing (every process may call this: on
    PostgreSQL an advisory lock serialises two processes starting at once). Cheap after the first call.
    Given a connection, works inside its transaction (a job's planning already holds SQLite's write lock:
    a second transaction from the engine would wait for it)."""
    engine = bind.engine if isinstance(bind, sa.Connection) else bind
    key = engine.url.render_as_string(hide_password=True)
    if key in _READY:
        return
    if isinstance(bind, sa.Connection):
        _ensure(bind)  # not remembered: that transaction may still roll back
        return
    with bind.begin() as conn:
        _ensure(conn)
    _READY.add(key)


def _ensure(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(74120511)"))
    have = set(sa.inspect(conn).get_table_names())
    if all(t.name in have for t in metadata.sorted_tables):
        return
    metadata.create_all(conn, checkfirst=True)
    for stmt in (_postgres_triggers() if conn.dialect.name == "postgresql" else _sqlite_triggers()):
        conn.execute(sa.text(stmt))
