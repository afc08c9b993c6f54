"""Cross-reference checks: what a JSON Schema cannot say about one app definition.

Ids (unique, matching the file name, usable as SQL names), field types and their keys, references
(link targets, form fields, owner/title fields, roles), bounds and defaults, expressions (they compile
and name only known fields) and computed-field cycles. Each problem is a DefinitionError with the file
and the JSON pointer of the value at fault; all of them are returned, none stops the others.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from sqlalchemy.dialects.postgresql.base import RESERVED_WORDS as PG_RESERVED
from sqlalchemy.sql.compiler import RESERVED_WORDS as SQL_RESERVED

from keel.definitions.build import Sources
from keel.definitions.errors import DefinitionError, pointer
from keel.definitions.kinds import CheckContext
from keel.definitions.model import SYSTEM_COLUMNS, Definition, EntityDef, FieldDef, FormDef, FormField
from keel.expressions import ExpressionError, compile_expression
from keel.fieldtypes.base import FieldValueError
from keel.registries import Registries

RESERVED_WORDS = frozenset(SQL_RESERVED | PG_RESERVED)
# Path segments the API and pages use under /apps/{app}/ besides entity ids.
RESERVED_ENTITY_IDS = frozenset({"forms", "graph", "workflows", "dashboards", "jobs"})
BUILTIN_ROLES = frozenset({"admin"})
MAX_IDENTIFIER = 63  # PostgreSQL's limit for a table or column name
# Keys every field may use, whatever its type; a type adds its own (FieldType.keys).
COMMON_KEYS = frozenset({"id", "type", "label", "help", "required", "unique", "read_only", "changed_by", "default",
                         "computed", "read_roles", "write_roles", "format", "empty_label"})
# A cell of a table field is a value inside one JSON column: it has no column, history or permissions
# of its own, so these keys would promise something Keel does not do.
CELL_FORBIDDEN = frozenset({"unique", "read_only", "changed_by", "default", "computed", "read_roles", "write_roles"})


def check_app(src: Sources, registries: Registries,
              schema_errors: list[DefinitionError] = ()) -> list[DefinitionError]:
    errors: list[DefinitionError] = []
    roles = _declared_roles(src, errors)
    entities = _unique("entity", [(p, e.id) for p, e in src.entities], errors)
    _unique("form", [(p, f.id) for p, f in src.forms], errors)
    for kind in registries.definition_kinds:
        _unique(kind, [(d.file, d.id) for d in src.others if d.kind == kind], errors)
    ctx = _Context(src, roles, {e.id: e for p, e in src.entities if entities.get(e.id) == p}, registries)
    app_id = src.app_id
    if app_id is not None and "__" in app_id:
        errors.append(DefinitionError("app.json", "/id", "must not contain '__' (Keel joins the app and "
                                      "entity ids with '__' to name tables)"))
    for path, e in src.entities:
        errors.extend(_entity_errors(ctx, path, e, app_id))
    for path, f in src.forms:
        errors.extend(_form_errors(ctx, path, f))
    errors.extend(_kind_errors(ctx, list(schema_errors)))
    return errors


class _Context:
    def __init__(self, src: Sources, roles: frozenset[str] | None, entities: Mapping[str, EntityDef],
                 registries: Registries):
        self.src, self.roles, self.entities = src, roles, entities
        self.form_ids = {f.id for _, f in src.forms}
        self.field_types = registries.field_types
        self.registries = registries

    def known(self, kind: str, ident: str) -> bool:
        """Whether `ident` names a definition of `kind`, or one whose file is already reported broken."""
        if (kind, ident) in self.src.broken:
            return True
        return ident in self.entities if kind == "entity" else ident in self.form_ids

    def role_errors(self, path: str, where: str, roles: Any) -> Iterator[DefinitionError]:
        if self.roles is None or roles is None:
            return
        for i, role in enumerate(roles):
            if role not in self.roles:
                yield DefinitionError(path, where + pointer(i), _unknown_role(role, self.roles))


def _unknown_role(role: str, declared: frozenset[str]) -> str:
    return f"unknown role '{role}'; declare it in app.json roles (declared: {', '.join(sorted(declared))})"


def _declared_roles(src: Sources, errors: list[DefinitionError]) -> frozenset[str] | None:
    """The roles app.json declares plus the built-in ones; None when app.json has no usable role list
    (then role references are not checked rather than all reported as unknown)."""
    if src.role_ids is None:
        return None
    seen: set[str] = set()
    for i, role in enumerate(src.role_ids):
        if role in seen:
            errors.append(DefinitionError("app.json", pointer("roles", i, "id"), f"duplicate role id '{role}'"))
        seen.add(role)
    return frozenset(seen | BUILTIN_ROLES)


def _unique(kind: str, items: list[tuple[str, str]], errors: list[DefinitionError]) -> dict[str, str]:
    """id -> the file that defines it first; reports a file named otherwise than its id, and an id that
    two files define."""
    first: dict[str, str] = {}

    def stem(path: str) -> str:
        return path.rsplit("/", 1)[-1][:-len(".json")]

    # The file named after the id owns it; the duplicate is reported on the other one.
    for path, ident in sorted(items, key=lambda item: (stem(item[0]) != item[1], item[0])):
        if stem(path) != ident:
            errors.append(DefinitionError(path, "/id", f"the file name must match the id: name the file "
                                          f"'{ident}.json' or change the id to '{stem(path)}'"))
        if ident in first:
            errors.append(DefinitionError(path, "/id", f"duplicate {kind} id '{ident}' (also in {first[ident]})"))
        else:
            first[ident] = path
    return first


# -- entities ---------------------------------------------------------------------------------------------

def _entity_errors(ctx: _Context, path: str, e: EntityDef, app_id: str | None) -> Iterator[DefinitionError]:
    if "__" in e.id:
        yield DefinitionError(path, "/id", "must not contain '__' (Keel joins the app and entity ids with "
                              "'__' to name tables)")
    if e.id in RESERVED_ENTITY_IDS:
        yield DefinitionError(path, "/id", f"'{e.id}' is reserved: the API uses /apps/{{app}}/{e.id}/... for "
                              "something else; choose another id")
    if app_id is not None and len(f"{app_id}__{e.id}") > MAX_IDENTIFIER:
        yield DefinitionError(path, "/id", f"too long: the table name '{app_id}__{e.id}' would exceed "
                              f"{MAX_IDENTIFIER} characters; shorten the entity id")
    seen: set[str] = set()
    for i, f in enumerate(e.fields):
        where = pointer("fields", i)
        if f.id in seen:
            yield DefinitionError(path, where + "/id", f"duplicate field id '{f.id}'")
        seen.add(f.id)
        if "__" in f.id:
            yield DefinitionError(path, where + "/id", "must not contain '__' (Keel uses it for the columns it "
                                  "keeps when a field changes type)")
        if f.id in RESERVED_WORDS:
            yield DefinitionError(path, where + "/id", f"'{f.id}' is a reserved word in SQL; choose another id")
        if f.id in SYSTEM_COLUMNS:
            yield DefinitionError(path, where + "/id", f"'{f.id}' is a column every record has already "
                                  f"({', '.join(SYSTEM_COLUMNS)}); choose another id")
        yield from _field_errors(ctx, path, where, f, cell=False)
        fmt = f.raw.get("format")
        unit_field = fmt.get("unit_field") if isinstance(fmt, Mapping) else None
        if unit_field is not None:
            target = e.field(unit_field)
            if target is None or target.type != "select":
                yield DefinitionError(path, where + "/format/unit_field",
                                      f"'{unit_field}' is not a select field of this entity; unit_field names "
                                      "the select whose option (cny, count, percent, ...) is the value's unit")
    yield from _computed_errors(path, e)
    yield from _rule_errors(path, e)
    for key, expected in (("owner_field", "user"), ("title_field", None)):
        ref = getattr(e, key)
        if ref is None:
            continue
        target = e.field(ref)
        if target is None:
            yield DefinitionError(path, "/" + key, f"no field '{ref}' in this entity")
        elif expected and target.type != expected:
            yield DefinitionError(path, "/" + key, f"'{ref}' is a {target.type} field; {key} must name a "
                                  f"{expected} field")
    rules: set[str] = set()
    for i, p in enumerate(e.permissions):
        if p.role in rules:
            yield DefinitionError(path, pointer("permissions", i, "role"), f"role '{p.role}' has two rules")
        rules.add(p.role)
        if ctx.roles is not None and p.role not in ctx.roles:
            yield DefinitionError(path, pointer("permissions", i, "role"), _unknown_role(p.role, ctx.roles))


def _field_errors(ctx: _Context, path: str, where: str, f: FieldDef, cell: bool) -> Iterator[DefinitionError]:
    ftype = f.ftype
    if ftype is None:
        yield DefinitionError(path, where + "/type", f"unknown field type '{f.type}'; known types: "
                              + ", ".join(sorted(ctx.field_types)))
        return
    allowed = (COMMON_KEYS | ftype.keys) - (CELL_FORBIDDEN if cell else frozenset())
    for key in sorted(set(f.raw) - allowed):
        if cell and key in CELL_FORBIDDEN:
            yield DefinitionError(path, where + "/" + key, f"'{key}' is not available for a table column")
        else:
            yield DefinitionError(path, where + "/" + key, f"'{key}' does not apply to a {f.type} field "
                                  f"(it takes: {', '.join(sorted(allowed - {'id', 'type'}))})")
    try:
        problems = ftype.definition_errors(f)
    except Exception as e:  # a plugin type must not turn a definition error into a crash
        problems = [f"the {f.type} field type could not check this field: {type(e).__name__}: {e}"]
    for message in problems:
        yield DefinitionError(path, where, message)
    if f.type == "link" and f.entity and not ctx.known("entity", f.entity):
        yield DefinitionError(path, where + "/entity", f"no entity '{f.entity}' in this app (entities: "
                              + ", ".join(sorted(ctx.entities)) + ")")
    option_ids: set[str] = set()
    for k, o in enumerate(f.options):
        if o.id in option_ids:
            yield DefinitionError(path, where + pointer("options", k, "id"), f"duplicate option id '{o.id}'")
        option_ids.add(o.id)
    yield from _bound_errors(path, where, f)
    if "default" in f.raw and f.default is not None and not cell:
        if f.computed:
            yield DefinitionError(path, where + "/default", "a computed field cannot have a default")
        else:
            yield from (DefinitionError(path, where + "/default", f"invalid default: {m}")
                        for m in _value_problems(f, f.default))
    for key in ("read_roles", "write_roles"):
        yield from ctx.role_errors(path, where + "/" + key, getattr(f, key))
    seen: set[str] = set()
    for k, c in enumerate(f.columns):
        cwhere = where + pointer("columns", k)
        if c.id in seen:
            yield DefinitionError(path, cwhere + "/id", f"duplicate column id '{c.id}'")
        seen.add(c.id)
        if c.ftype is not None:  # an unknown cell type is reported by the table type itself
            yield from _field_errors(ctx, path, cwhere, c, cell=True)


def _bound_errors(path: str, where: str, f: FieldDef) -> Iterator[DefinitionError]:
    ftype = f.ftype
    parsed: dict[str, Any] = {}
    for key in ("min", "max"):
        raw = f.raw.get(key)
        if raw is None or key not in ftype.keys:
            continue
        try:
            parsed[key] = ftype.parse(f, raw)
        except FieldValueError as e:
            yield DefinitionError(path, where + "/" + key, f"invalid {key}: {e.messages[0].render()}")
        except (TypeError, ValueError, ArithmeticError):  # e.g. a number beyond decimal precision
            yield DefinitionError(path, where + "/" + key, f"invalid {key}: not a value this field can hold")
    if len(parsed) == 2 and _greater(parsed["min"], parsed["max"]):
        yield DefinitionError(path, where + "/min", f"min ({f.raw['min']}) is greater than max ({f.raw['max']})")
    if f.min_length is not None and f.max_length is not None and f.min_length > f.max_length:
        yield DefinitionError(path, where + "/min_length",
                              f"min_length ({f.min_length}) is greater than max_length ({f.max_length})")
    precision = f.precision or getattr(ftype, "default_precision", None)
    if f.scale is not None and precision is not None and f.scale > precision:
        yield DefinitionError(path, where + "/scale", f"scale ({f.scale}) is greater than the precision "
                              f"({precision}): the digits after the point are part of the precision")


def _greater(a: Any, b: Any) -> bool:
    try:
        return bool(a > b)
    except TypeError:
        return False


def _value_problems(f: FieldDef, value: Any) -> list[str]:
    ftype = f.ftype
    try:
        parsed = ftype.parse(f, value)
    except FieldValueError as e:
        return [m.render() for m in e.messages]
    except (TypeError, ValueError, ArithmeticError):
        return ["not a value this field can hold"]
    try:
        return [m.render() for m in ftype.check(f, parsed)]
    except (TypeError, ValueError):
        return []  # the field's own bounds are invalid, and reported as such; nothing to compare with


# -- expressions ------------------------------------------------------------------------------------------

def _compile(path: str, where: str, source: str, allowed: set[str], scope: str) -> Iterator[DefinitionError]:
    try:
        expr = compile_expression(source)
    except ExpressionError as e:
        yield DefinitionError(path, where, f"invalid expression: {e}")
        return
    for name in sorted(expr.names - allowed):
        yield DefinitionError(path, where, f"unknown name '{name}' in expression {source!r}; it may only "
                              f"name {scope}")


def _computed_errors(path: str, e: EntityDef) -> Iterator[DefinitionError]:
    ids = {f.id for f in e.fields}
    depends: dict[str, list[str]] = {}
    for i, f in enumerate(e.fields):
        if f.computed:
            yield from _compile(path, pointer("fields", i, "computed"), f.computed, ids, "fields of this entity")
            try:
                names = compile_expression(f.computed).names
            except ExpressionError:
                continue
            depends[f.id] = sorted(names & ids)
    index = {f.id: i for i, f in enumerate(e.fields)}
    for cycle in _cycles(depends):
        yield DefinitionError(path, pointer("fields", index[cycle[0]], "computed"),
                              "computed fields depend on each other in a cycle: " + " -> ".join(cycle))


def _rule_errors(path: str, e: EntityDef) -> Iterator[DefinitionError]:
    ids = {f.id for f in e.fields}
    seen: set[str] = set()
    for i, r in enumerate(e.rules):
        if r.id in seen:
            yield DefinitionError(path, pointer("rules", i, "id"), f"duplicate rule id '{r.id}'")
        seen.add(r.id)
        yield from _compile(path, pointer("rules", i, "check"), r.check, ids, "fields of this entity")
        if r.field is not None and r.field not in ids:
            yield DefinitionError(path, pointer("rules", i, "field"), f"no field '{r.field}' in this entity")


def _cycles(depends: Mapping[str, list[str]]) -> list[list[str]]:
    """Each cycle among computed fields once, starting from its first field in definition order."""
    found: dict[frozenset[str], list[str]] = {}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        trail.append(node)
        for nxt in depends.get(node, ()):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt):]
                found.setdefault(frozenset(cycle), cycle)
            elif nxt in depends and state.get(nxt) is None:
                visit(nxt, trail)
        trail.pop()
        state[node] = 2

    for node in depends:
        if state.get(node) is None:
            visit(node, [])
    order = list(depends)
    out = []
    for cycle in found.values():
        start = min(range(len(cycle)), key=lambda k: order.index(cycle[k]))
        rotated = cycle[start:] + cycle[:start]
        out.append(rotated + [rotated[0]])
    return out


# -- forms and the rest -----------------------------------------------------------------------------------

def _form_errors(ctx: _Context, path: str, form: FormDef) -> Iterator[DefinitionError]:
    has_sections, has_fields = "sections" in form.raw, "fields" in form.raw
    if has_sections == has_fields:
        yield DefinitionError(path, "", "a form needs either `sections` or a flat `fields` list (not both)")
    yield from ctx.role_errors(path, "/roles", form.roles)
    entity = ctx.entities.get(form.entity)
    if entity is None:
        if not ctx.known("entity", form.entity):
            yield DefinitionError(path, "/entity", f"no entity '{form.entity}' in this app (entities: "
                                  + ", ".join(sorted(ctx.entities)) + ")")
        return
    in_form = {ff.field for ff in form.fields}
    seen_sections: set[str] = set()
    seen: set[str] = set()
    for s, section in enumerate(form.sections):
        base = pointer("sections", s) if has_sections else ""
        if section.id in seen_sections:
            yield DefinitionError(path, base + "/id", f"duplicate section id '{section.id}'")
        seen_sections.add(section.id)
        for j, ff in enumerate(section.fields):
            where = base + pointer("fields", j)
            yield from _form_field_errors(path, where, entity, ff, seen)
            seen.add(ff.field)
            if ff.visible_if:
                yield from _compile(path, where + "/visible_if", ff.visible_if, in_form, "fields of this form")


def _form_field_errors(path: str, where: str, entity: EntityDef, ff: FormField,
                       seen: set[str]) -> Iterator[DefinitionError]:
    f = entity.field(ff.field)
    if f is None:
        yield DefinitionError(path, where, f"no field '{ff.field}' in entity '{entity.id}' (fields: "
                              + ", ".join(x.id for x in entity.fields) + ")")
        return
    if ff.field in seen:
        yield DefinitionError(path, where, f"'{ff.field}' is already in this form")
    if f.computed or f.read_only:
        why = "computed" if f.computed else "read-only"
        yield DefinitionError(path, where, f"'{ff.field}' is {why}: it cannot be an input of a form")
    if ff.required is False and f.required and f.default is None:
        yield DefinitionError(path, where + "/required", f"'{ff.field}' is required by entity "
                              f"'{entity.id}'; a form cannot make it optional")


def _kind_errors(ctx: _Context, schema_errors: list[DefinitionError]) -> Iterator[DefinitionError]:
    """Each registered kind checks its own files; a kind's check that raises is reported on the file (a
    plugin's bug must not turn a definition error into a crash). Files that failed their schema are
    checked too, best effort: what the check finds at places the schema did not already report comes
    out in the same run; a check that trips over the broken shape says nothing more."""
    definitions: dict[str, dict[str, Definition]] = {}
    for d in ctx.src.others:
        definitions.setdefault(d.kind, {}).setdefault(d.id, d)
    check_ctx = CheckContext(
        app_id=ctx.src.app_id, entities=MappingProxyType(dict(ctx.entities)),
        forms=MappingProxyType({f.id: f for _, f in ctx.src.forms}), roles=ctx.roles,
        settings=(ctx.src.app or {}).get("settings") or MappingProxyType({}),
        definitions=MappingProxyType({k: MappingProxyType(v) for k, v in definitions.items()}),
        broken=frozenset(ctx.src.broken), registries=ctx.registries)
    reported = {(e.file, e.pointer) for e in schema_errors}
    for d, valid in [*((d, True) for d in ctx.src.others), *((d, False) for d in ctx.src.invalid_others)]:
        kind = ctx.registries.definition_kinds.get(d.kind)
        if kind is None or kind.check is None:
            continue
        try:
            found = list(kind.check(d, check_ctx))
        except Exception as e:
            if valid:
                owner = ctx.registries.owner("definition_kinds", d.kind) or "?"
                yield DefinitionError(d.file, "", f"the checks of the {d.kind} kind (plugin '{owner}') failed "
                                      f"on this file: {type(e).__name__}: {e}")
            continue
        for err in found:
            if valid or not _under_reported(err, reported):
                yield err


def _under_reported(err: DefinitionError, reported: set[tuple[str, str]]) -> bool:
    """Whether the schema already reported this place or a place that contains it."""
    parts = err.pointer.split("/")
    return any((err.file, "/".join(parts[:n])) in reported for n in range(1, len(parts) + 1))
