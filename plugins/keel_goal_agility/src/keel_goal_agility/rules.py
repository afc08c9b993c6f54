"""Approver rule `{"rule": "manager_of_owner", "link": "goal"}`: the direct superior of the owner of the record
a link field points to: a revision request goes to the goal owner's superior, whoever files it (when that
superior is the submitter, the engine's own rule for a submitter's seat applies). Written generally: any entity
with a link to an entity that has an `owner_field` (else its creator)."""
from __future__ import annotations

from typing import Any, ClassVar

import sqlalchemy as sa

from keel.auth import directory
from keel.storage.tables import table_name


class ManagerOfOwner:
    name = "manager_of_owner"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "required": ["link"],
                                               "properties": {"link": {"type": "string"},
                                                              "fallback_role": {"type": "string"}}}

    def check(self, params, scope):
        out = [(f"/{k}", f"unknown key '{k}'; this rule takes: fallback_role, link")
               for k in sorted(set(params) - {"rule", "link", "fallback_role"})]
        link = params.get("link")
        if not isinstance(link, str):
            return out + [("/link", "give `link`: a link field of the record")]
        if scope.entity is not None:
            f = scope.entity.field(link)
            if f is None or f.type != "link":
                return out + [("/link", f"'{link}' is not a link field of entity '{scope.entity.id}'")]
        return out

    def _owner(self, ctx, link: str) -> int | None:
        entity = ctx.app.entities.get(ctx.workflow.entity)
        f = entity.field(link) if entity is not None else None
        target_id = ctx.record.get(link)
        if f is None or target_id is None:
            return None
        target = ctx.app.entities.get(f.entity)
        col = getattr(target, "owner_field", None) or "created_by"
        t = sa.table(table_name(ctx.app.id, f.entity), sa.column("id"), sa.column(col))
        return ctx.conn.execute(sa.select(t.c[col]).where(t.c.id == target_id)).scalar()

    def resolve(self, ctx, params) -> list[int]:
        owner = self._owner(ctx, params["link"])
        boss = directory.manager_of(ctx.conn, owner) if owner is not None else None
        if boss is not None:
            return [boss]
        from keel.workflow.resolvers import users_with_role

        role = params.get("fallback_role") or ctx.workflow.fallback_role
        return users_with_role(ctx.conn, role) if role else []
