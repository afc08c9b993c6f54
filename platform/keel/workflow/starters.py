"""Who may start a workflow: `starts_on.who`, a list of rules of which any one must match the person.

    "owner_of:<link field>"           the owner of the record the link field points to (that entity's
                                      `owner_field`, else whoever created it)
    "managers_of_owner:<link field>"  that owner's managers, all the way up (as `manager_of` finds them)
    "role:<role>"                     anyone with the role
    {"rule": "...", ...}              an approver rule: the person may start when it resolves to them

Administrators may always start. Without `who`, whoever may create the record may start (the form's and
the entity's permissions decide). A refusal is a 403 before anything is written: the record that would
have started the request is not created either.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from keel.actor import Actor
from keel.auth import directory
from keel.errors import PermissionDenied

PREFIXES = ("owner_of", "managers_of_owner", "role")


def describe(item: Any) -> str:
    if isinstance(item, Mapping):
        from keel.workflow.resolvers import describe as describe_rule

        return describe_rule(item)
    return str(item)


def item_errors(item: Any, scope) -> list[tuple[str, str]]:
    """Problems with one `who` item, as (pointer inside the item, message)."""
    if isinstance(item, Mapping):
        from keel.workflow.resolvers import rule_errors

        return rule_errors(item, scope)
    kind, _, arg = str(item).partition(":")
    if kind not in PREFIXES or not arg:
        return [("", f"unknown rule {item!r}: use owner_of:<link field>, managers_of_owner:<link field>, "
                     f"role:<role> or an approver rule object")]
    if kind == "role":
        if scope.roles is not None and arg not in scope.roles:
            return [("", f"unknown role '{arg}'; declare it in app.json roles")]
        return []
    if scope.entity is not None:
        f = scope.entity.field(arg)
        links = ", ".join(x.id for x in scope.entity.fields if x.type == "link") or "none"
        if f is None or f.type != "link":
            return [("", f"'{arg}' is not a link field of entity '{scope.entity.id}' (link fields: {links})")]
    return []


def _owner_of(conn: sa.Connection, built, entity_id: str, values: Mapping[str, Any], link: str) -> int | None:
    entity = built.entity(entity_id)
    f = entity.field(link)
    target_id = values.get(link)
    if f is None or f.entity is None or not isinstance(target_id, int):
        return None
    target = built.entity(f.entity)
    table = built.table(f.entity)
    cols = [table.c.created_by] + ([table.c[target.owner_field]] if target.owner_field else [])
    row = conn.execute(sa.select(*cols).where(table.c.id == target_id)).first()
    if row is None:
        return None
    owner = row[1] if target.owner_field else None
    return owner if owner is not None else row[0]


def _managers(conn: sa.Connection, user_id: int) -> list[int]:
    return directory.manager_chain(conn, user_id)


def matches(conn: sa.Connection, built, wf, values: Mapping[str, Any], actor: Actor, item: Any) -> bool:
    if isinstance(item, Mapping):
        from keel.workflow.resolvers import ResolveContext, resolve_rule

        ctx = ResolveContext(conn, built.definition, wf, values, actor.user_id)
        return actor.user_id in resolve_rule(ctx, item)
    kind, _, arg = str(item).partition(":")
    if kind == "role":
        return arg in actor.roles
    owner = _owner_of(conn, built, wf.entity, values, arg)
    if owner is None:
        return False
    if kind == "owner_of":
        return owner == actor.user_id
    if kind == "managers_of_owner":
        return actor.user_id in _managers(conn, owner)
    return False


def check_may_start(conn: sa.Connection, built, wf, values: Mapping[str, Any], actor: Actor) -> None:
    """PermissionDenied unless `actor` may start `wf` for a record with these values."""
    if wf.who is None or actor.is_admin:
        return
    if any(matches(conn, built, wf, values, actor, item) for item in wf.who):
        return
    from keel.i18n import current_lang, translate

    raise PermissionDenied(translate("You may not start “%(workflow)s” for this record: allowed are %(who)s.",
                                     workflow=wf.label.get(current_lang()),
                                     who=", ".join(describe(i) for i in wf.who)))
