"""Tables of SLA timers, inbox messages and their external deliveries, on Keel's system metadata.

Due times live here and nowhere else: a process that restarts finds every timer it had, and two
processes agree on which one fired (a timer is fired by the transaction that sets `fired_at`).
Importing this module puts the tables on `keel.storage.system.metadata`, so `create_system_tables`
makes them once `storage.db` imports it."""
from __future__ import annotations

import sqlalchemy as sa

from keel.storage.system import metadata

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


# One row per (task, kind): `remind` before the due time, `due` at it (the approver is told it is
# overdue), `escalate` at it (the task goes to the approver's superior). The engine's task and
# instance ids are plain integers: the engine's tables are created by another module, and a timer
# outliving a deleted instance is handled when it fires (the task is no longer pending: skipped).
timers = sa.Table(
    "keel_timers", metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),          # remind | due | escalate
    sa.Column("instance_id", sa.BigInteger(), nullable=False),
    sa.Column("step_id", sa.String(64), nullable=False),
    sa.Column("task_id", sa.BigInteger(), nullable=False),
    _ts("due_at", nullable=False),
    _ts("fired_at"),        # set by the transaction that fired it (a claim that commits with the effects)
    _ts("cancelled_at"),    # the task was decided, withdrawn or transferred before the timer was due
    sa.Column("outcome", sa.String(32)),                         # fired | skipped | cancelled | failed
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    _ts("retry_at"),        # after a failed attempt: not before this time
    sa.Column("last_error", sa.String(2000)),
    sa.Column("detail", sa.JSON(), nullable=False),             # the step's sla, escalation level, ...
    _ts("created_at", nullable=False),
    sa.UniqueConstraint("task_id", "kind", name="uq_keel_timers_task_kind"),
    sa.Index("ix_keel_timers_open", "fired_at", "cancelled_at", "due_at"),
)

# One message per recipient. Subject and body are rendered once, in both languages, when the message
# is sent; reading picks the recipient's language, nothing is rendered again.
inbox = sa.Table(
    "keel_inbox", metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("user_id", sa.BigInteger(), nullable=False),
    sa.Column("app", sa.String(64)),
    sa.Column("template", sa.String(64)),
    sa.Column("subject", sa.JSON(), nullable=False),   # {"zh": ..., "en": ...}
    sa.Column("body", sa.JSON(), nullable=False),      # {"zh": ..., "en": ...}
    sa.Column("link", sa.String(1000)),
    sa.Column("entity", sa.String(64)),
    sa.Column("record_id", sa.BigInteger()),
    sa.Column("sent_by", sa.BigInteger()),             # None: the system (timers, jobs)
    _ts("created_at", nullable=False),
    _ts("read_at"),
    sa.Index("ix_keel_inbox_user", "user_id", "read_at", "id"),
)

# A message on its way to a channel outside Keel (a group robot, an e-mail). Written in the same
# transaction as the inbox rows, sent after it committed, retried with back-off; a failure never
# touches the inbox row.
deliveries = sa.Table(
    "keel_deliveries", metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("channel", sa.String(64), nullable=False),   # a registered channel name: robot, email, ...
    sa.Column("inbox_id", sa.BigInteger()),                # per-recipient channels (email); None for a group
    sa.Column("app", sa.String(64)),
    sa.Column("target", sa.JSON(), nullable=False),        # the channel's config (never a secret itself)
    sa.Column("payload", sa.JSON(), nullable=False),       # rendered subject/body per language, link
    sa.Column("status", sa.String(16), nullable=False),    # pending | sent | failed
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    _ts("next_attempt_at", nullable=False),
    sa.Column("last_error", sa.String(2000)),
    _ts("created_at", nullable=False),
    _ts("sent_at"),
    sa.Index("ix_keel_deliveries_due", "status", "next_attempt_at"),
)

NOTIFY_TABLES = (timers, inbox, deliveries)


def create_notify_tables(engine: sa.Engine) -> None:
    """Until `storage.db.create_system_tables` imports this module, callers make the tables here."""
    metadata.create_all(engine, tables=list(NOTIFY_TABLES))
