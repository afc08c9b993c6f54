"""Keel's own tables: the org directory, credentials, definition versions, record history and the
audit trail. Entity tables are built from definitions in `tables.py`."""
from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

NOW = sa.func.now()


def _ts(name: str, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


departments = sa.Table(
    "keel_departments", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("code", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("name_en", sa.String(200)),
    sa.Column("parent_id", sa.ForeignKey("keel_departments.id")),
    sa.Column("head_id", sa.BigInteger()),  # a keel_users.id; no FK: users point back here
    sa.Column("external_key", sa.String(200), unique=True),
    sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()),
)

users = sa.Table(
    "keel_users", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("username", sa.String(150), nullable=False, unique=True),
    sa.Column("display_name", sa.String(200), nullable=False),
    sa.Column("email", sa.String(320)),
    sa.Column("password_hash", sa.String(255)),  # argon2; None: cannot log in with a password
    sa.Column("department_id", sa.ForeignKey("keel_departments.id")),
    sa.Column("manager_id", sa.ForeignKey("keel_users.id")),  # direct superior
    sa.Column("locale", sa.String(10)),
    sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("external_key", sa.String(200), unique=True),
    # Bumped whenever roles, admin flag or activity change, so cached permissions are dropped.
    sa.Column("auth_version", sa.Integer(), nullable=False, server_default="1"),
    _ts("created_at", nullable=False, server_default=NOW),
    # Team and department row scopes filter on these (storage.permissions).
    sa.Index("ix_keel_users_manager", "manager_id"),
    sa.Index("ix_keel_users_department", "department_id"),
)

user_roles = sa.Table(
    "keel_user_roles", metadata,
    sa.Column("user_id", sa.ForeignKey("keel_users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("role", sa.String(64), primary_key=True),
)

api_tokens = sa.Table(
    "keel_api_tokens", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("user_id", sa.ForeignKey("keel_users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),  # sha256 hex of the token
    _ts("created_at", nullable=False, server_default=NOW),
    _ts("last_used_at"),
    _ts("revoked_at"),
)

# Page sessions: the signed cookie carries only a random secret, this table its sha256, so logging out,
# deactivating a user or changing a password ends a session on the server, copies of the cookie included.
page_sessions = sa.Table(
    "keel_sessions", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("user_id", sa.ForeignKey("keel_users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    _ts("created_at", nullable=False, server_default=NOW),
    _ts("ended_at"),
)

app_versions = sa.Table(
    "keel_app_versions", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("app", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),  # 1, 2, 3 ... per app
    sa.Column("label", sa.String(64), nullable=False),   # the `version` string of app.json
    sa.Column("checksum", sa.String(64), nullable=False),
    sa.Column("bundle", sa.JSON(), nullable=False),       # relative file path -> parsed JSON
    sa.Column("note", sa.String(500), nullable=False, server_default=""),
    sa.Column("created_by", sa.BigInteger()),
    _ts("created_at", nullable=False, server_default=NOW),
    sa.UniqueConstraint("app", "version"),
)

record_versions = sa.Table(
    "keel_record_versions", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("app", sa.String(64), nullable=False),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("record_id", sa.BigInteger(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),   # the record's row_version after the write
    sa.Column("action", sa.String(16), nullable=False),   # create, update, delete, restore
    sa.Column("changes", sa.JSON(), nullable=False),      # field -> [before, after], JSON values
    sa.Column("user_id", sa.BigInteger()),
    _ts("at", nullable=False),
    # What made the write on the user's behalf, when not the user directly: "job tracker/count run #12"
    # (keel.actor.Actor.via). Shown in the record's history beside the user.
    sa.Column("via", sa.String(200)),
    sa.Index("ix_keel_record_versions_record", "app", "entity", "record_id", "version"),
)

audit_events = sa.Table(
    "keel_audit_events", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    _ts("at", nullable=False),
    sa.Column("user_id", sa.BigInteger()),      # None only for the system itself (migrations, jobs)
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("app", sa.String(64)),
    sa.Column("entity", sa.String(64)),
    sa.Column("record_id", sa.BigInteger()),
    sa.Column("detail", sa.JSON(), nullable=False),
    sa.Index("ix_keel_audit_record", "app", "entity", "record_id"),
    sa.Index("ix_keel_audit_at", "at"),
)

# Yellow marks (storage/highlights.py): a record to look at again, per user, until acknowledged.
highlights = sa.Table(
    "keel_highlights", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("user_id", sa.BigInteger(), nullable=False),
    sa.Column("app", sa.String(64), nullable=False),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("record_id", sa.BigInteger(), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),   # what changed, in words for the user
    sa.Column("detail", sa.JSON()),                          # e.g. {"fields": [...], "by": "cro"}
    _ts("marked_at", nullable=False),
    _ts("acknowledged_at"),                                  # None: still yellow
    sa.Index("ix_keel_highlights_user", "user_id", "acknowledged_at"),
    # At most one open mark per user and record: a new change refreshes it (one upsert, no read first).
    sa.Index("ux_keel_highlights_open", "user_id", "app", "entity", "record_id", unique=True,
             sqlite_where=sa.text("acknowledged_at IS NULL"), postgresql_where=sa.text("acknowledged_at IS NULL")),
)

# Tables of other parts, defined on this metadata so `create_system_tables` creates them all.
from keel.storage import job_tables, notify_tables, workflow_tables  # noqa: E402,F401
