"""The one permission point. Every path that reads or writes entity records — pages, API, exports,
dashboards, jobs — asks this module which rows and which fields an actor may touch, so a new feature
cannot grant more than the definition says.

Row scopes (see `ROW_SCOPES`) become SQL conditions here; field permissions become tuples of
`FieldDef`. Anything unknown (a scope name a definition should never contain, an action we do not
know) denies.
"""
from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from keel.actor import Actor
from keel.definitions.model import ROW_SCOPES, EntityDef, FieldDef
from keel.storage.system import users

ROW_ACTIONS = ("read", "update", "delete")
# Narrowest first, so a larger rank is a wider scope.
_RANK = {scope: rank for rank, scope in enumerate(reversed(ROW_SCOPES))}


def allowed_scope(entity: EntityDef, actor: Actor, action: str) -> str:
    """The widest row scope any of the actor's roles grants for `action` on `entity`."""
    if action not in ROW_ACTIONS:
        raise ValueError(f"unknown row action {action!r}")
    if actor.is_admin:
        return "all"
    best = "none"
    for rule in entity.permissions:
        if rule.role not in actor.roles:
            continue
        scope = getattr(rule, action)
        if _RANK.get(scope, 0) > _RANK[best]:
            best = scope
    return best


def can_create(entity: EntityDef, actor: Actor) -> bool:
    if actor.is_admin:
        return True
    return any(rule.create for rule in entity.permissions if rule.role in actor.roles)


def owned_by(table: sa.Table, entity: EntityDef, who: Callable[[sa.ColumnElement], ColumnElement[bool]]
             ) -> ColumnElement[bool]:
    """Rows whose owner satisfies `who`. The owner is the entity's `owner_field`, else the creator; a
    row whose owner field is empty belongs to its creator, so nobody loses sight of what they just
    created by leaving the owner blank. (Written as an OR rather than COALESCE so PostgreSQL can use
    the index on the owner column.)"""
    if not entity.owner_field:
        return who(table.c.created_by)
    owner = table.c[entity.owner_field]
    return sa.or_(who(owner), sa.and_(owner.is_(None), who(table.c.created_by)))


def _scope_condition(table: sa.Table, entity: EntityDef, actor: Actor, scope: str) -> ColumnElement[bool]:
    if scope == "all":
        return sa.true()
    if actor.user_id is None:
        # A non-admin actor without a user (should not exist) owns nothing; comparing the owner
        # with None would otherwise become `IS NULL` and match every unowned row.
        return sa.false()
    me = actor.user_id
    if scope == "own":
        return owned_by(table, entity, lambda col: col == me)
    # Each wider scope includes the narrower ones, so granting a role a wider scope never hides
    # rows a narrower scope showed (a direct report may sit in another department).
    team = sa.select(users.c.id).where(sa.or_(users.c.id == me, users.c.manager_id == me))
    if scope == "department" and actor.department_id is not None:
        team = sa.select(users.c.id).where(sa.or_(
            users.c.id == me, users.c.manager_id == me, users.c.department_id == actor.department_id))
    if scope in ("team", "department"):
        return owned_by(table, entity, lambda col: col.in_(team))
    return sa.false()


def row_filter(table: sa.Table, entity: EntityDef, actor: Actor, action: str,
               include_deleted: bool = False) -> ColumnElement[bool] | None:
    """The SQL condition selecting the rows `actor` may `action`, or None when the actor may touch
    no row at all (the caller raises PermissionDenied or returns nothing). Soft-deleted rows are
    excluded unless `include_deleted`."""
    scope = allowed_scope(entity, actor, action)
    if scope not in ROW_SCOPES or scope == "none":
        return None
    cond = _scope_condition(table, entity, actor, scope)
    if not include_deleted:
        cond = sa.and_(cond, table.c.deleted_at.is_(None))
    return cond


def _has_role(actor: Actor, roles: tuple[str, ...] | None) -> bool:
    return roles is None or actor.is_admin or bool(actor.roles.intersection(roles))


def readable_fields(entity: EntityDef, actor: Actor) -> tuple[FieldDef, ...]:
    """Fields whose values the actor may see in a record it may read (and therefore filter, sort,
    group and aggregate by)."""
    return tuple(f for f in entity.fields if _has_role(actor, f.read_roles))


def writable_fields(entity: EntityDef, actor: Actor) -> tuple[FieldDef, ...]:
    """Fields the actor may send a value for. Computed fields never; read-only fields only for the
    platform itself (connectors and jobs acting as SYSTEM fill them); a field the actor cannot read
    is not writable either, so nobody overwrites a value they cannot see."""
    out = []
    for f in entity.fields:
        if f.computed:
            continue
        if f.read_only and not actor.is_system:
            continue
        if _has_role(actor, f.write_roles) and _has_role(actor, f.read_roles):
            out.append(f)
    return tuple(out)
