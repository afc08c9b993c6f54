"""A real table per entity, built with SQLAlchemy Core from its definition."""
from __future__ import annotations

import hashlib

import sqlalchemy as sa

from keel.definitions.model import SYSTEM_COLUMNS, AppDef, EntityDef

__all__ = ["SYSTEM_COLUMNS", "app_tables", "entity_table", "index_name", "table_name"]


def table_name(app_id: str, entity_id: str) -> str:
    return f"{app_id}__{entity_id}"


def index_name(table: str, column: str) -> str:
    """`ix_<table>_<column>`, shortened with a hash where it would pass PostgreSQL's 63-byte limit."""
    name = f"ix_{table}_{column}"
    if len(name) <= 63:
        return name
    return f"{name[:50]}_{hashlib.sha1(name.encode()).hexdigest()[:12]}"


def entity_table(metadata: sa.MetaData, app_id: str, entity: EntityDef) -> sa.Table:
    cols = [
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("row_version", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.BigInteger()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.BigInteger()),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
    ]
    name = table_name(app_id, entity.id)
    for f in entity.fields:
        # Columns are nullable in SQL: `required` is enforced on write, and a field added to a table
        # that already has rows must not fail on them.
        cols.append(sa.Column(f.id, f.ftype.column_type(f), nullable=True))
    indexes = [sa.Index(index_name(name, f.id), f.id) for f in entity.fields if f.type in ("link", "user")]
    return sa.Table(name, metadata, *cols, *indexes)


def app_tables(app: AppDef) -> tuple[sa.MetaData, dict[str, sa.Table]]:
    md = sa.MetaData()
    return md, {eid: entity_table(md, app.id, e) for eid, e in app.entities.items()}
