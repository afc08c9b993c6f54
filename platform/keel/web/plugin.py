"""What the pages bring to Keel, through the same hooks as any plugin: the `workbench` and `list` definition
kinds (what each role's workbench shows; list views with columns, sort, filters and search) and the
engine's own workbench sections (pending approvals, changed items, unread inbox)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from keel.definitions.errors import DefinitionError
from keel.definitions.kinds import CheckContext, DefinitionKind
from keel.definitions.model import Definition
from keel.hooks import hookimpl

SYSTEM_FIELDS = ("id", "created_at", "created_by", "updated_at", "updated_by")
SORTABLE_SYSTEM = SYSTEM_FIELDS
FILTER_TYPES = ("select", "multi_select", "user", "link", "boolean", "date", "datetime", "text")


def _schema(name: str) -> dict:
    return json.loads((Path(__file__).resolve().parent / "schemas" / name).read_text("utf-8"))


def _field_refs(d: Definition, entity, where: str, ids, system: bool = False) -> Iterator[DefinitionError]:
    known = {f.id for f in entity.fields} | (set(SYSTEM_FIELDS) if system else set())
    for i, fid in enumerate(ids or ()):
        name = fid.lstrip("-") if isinstance(fid, str) else fid
        if name not in known:
            yield DefinitionError(d.file, f"{where}/{i}", f"no field '{name}' in entity '{entity.id}'")


def _where_refs(d: Definition, entity, where) -> Iterator[DefinitionError]:
    known = {f.id for f in entity.fields} | set(SYSTEM_FIELDS)
    for key in where or {}:
        name = key.partition("__")[0]
        if name not in known:
            yield DefinitionError(d.file, f"/where/{key}", f"no field '{name}' in entity '{entity.id}'")


def _common(d: Definition, ctx: CheckContext) -> Iterator[DefinitionError]:
    yield from ctx.role_errors(d.file, "/roles", d.data.get("roles"))
    entity_id = d.data.get("entity")
    if entity_id is None:
        return
    entity = ctx.entities.get(entity_id)
    if entity is None:
        if not ctx.known("entity", entity_id):
            yield DefinitionError(d.file, "/entity", f"unknown entity '{entity_id}'")
        return
    yield from _field_refs(d, entity, "/sort", d.data.get("sort"), system=True)
    yield from _where_refs(d, entity, d.data.get("where"))


def _check_workbench(d: Definition, ctx: CheckContext) -> Iterator[DefinitionError]:
    yield from _common(d, ctx)
    section = d.data.get("section")
    if section is not None:
        sections = getattr(ctx.registries, "workbench_sections", {}) or {}
        if section not in sections:
            yield DefinitionError(d.file, "/section", f"unknown workbench section '{section}' (installed: "
                                  f"{', '.join(sorted(sections)) or 'none'})")
        return
    entity = ctx.entities.get(d.data.get("entity"))
    if entity is None:
        return
    if d.data.get("filter", "mine") in ("mine", "team", "department") and not entity.owner_field:
        yield DefinitionError(d.file, "/filter", f"entity '{entity.id}' has no owner_field, so 'mine', 'team' "
                              "and 'department' cannot be decided; use 'all' or give the entity an owner_field")
    card = d.data.get("card") or {}
    for key in ("title", "subtitle", "status", "due"):
        if key in card:
            yield from _field_refs(d, entity, "/card", [card[key]])
    yield from _field_refs(d, entity, "/card/fields", card.get("fields"))
    if "progress" in card:
        yield from _field_refs(d, entity, "/card/progress", [card["progress"]["value"], card["progress"]["target"]])
    yield from _colour_errors(d, entity, ctx, card.get("colour") or ())


def _colour_errors(d: Definition, entity, ctx: CheckContext, rules) -> Iterator[DefinitionError]:
    from keel.expressions import ExpressionError, compile_expression

    names = {f.id for f in entity.fields} | set(SYSTEM_FIELDS) | set(ctx.settings or {})
    for i, rule in enumerate(rules):
        where = f"/card/colour/{i}/if"
        try:
            expr = compile_expression(rule["if"])
        except ExpressionError as e:
            yield DefinitionError(d.file, where, f"not a valid expression: {e}")
            continue
        unknown = sorted(set(expr.names) - names)
        if unknown:
            yield DefinitionError(d.file, where, f"unknown name(s) {', '.join(unknown)}: use the entity's field "
                                  "ids and app.json settings")


def _check_list(d: Definition, ctx: CheckContext) -> Iterator[DefinitionError]:
    yield from _common(d, ctx)
    entity = ctx.entities.get(d.data.get("entity"))
    if entity is None:
        return
    yield from _field_refs(d, entity, "/columns", d.data.get("columns"), system=True)
    yield from _field_refs(d, entity, "/filters", d.data.get("filters"), system=True)
    yield from _field_refs(d, entity, "/search", d.data.get("search"))
    by_id = {f.id: f for f in entity.fields}
    for i, fid in enumerate(d.data.get("filters") or ()):
        f = by_id.get(fid)
        if f is not None and f.type not in FILTER_TYPES:
            yield DefinitionError(d.file, f"/filters/{i}", f"'{fid}' is a {f.type} field; the page offers filters "
                                  f"for {', '.join(FILTER_TYPES)} fields")
    for i, fid in enumerate(d.data.get("search") or ()):
        f = by_id.get(fid)
        if f is not None and f.type not in ("text", "long_text", "email", "url", "phone"):
            yield DefinitionError(d.file, f"/search/{i}", f"'{fid}' is a {f.type} field; search looks in text fields")


@hookimpl
def keel_definition_kinds():
    return [DefinitionKind(name="workbench", folder="workbench", schema=_schema("workbench.json"),
                           check=_check_workbench, label="workbench sections", order=60),
            DefinitionKind(name="list", folder="lists", schema=_schema("list.json"),
                           check=_check_list, label="list views", order=55)]


@hookimpl
def keel_workbench_sections():
    from keel.web.workbench_builtin import SECTIONS

    return list(SECTIONS)
