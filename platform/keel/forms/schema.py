"""JSON Schemas (draft 2020-12) derived from entity and form definitions.

Each property comes from `FieldType.json_schema(field)`: the same declaration that gives the SQL column
and the WTForms field, so a field added to a definition shows up here with no other change. The schemas
describe the wire shape; the values themselves are still validated by the write path (storage.records),
which is what produces the per-field messages a user sees.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from keel.actor import Actor
from keel.definitions.model import EntityDef, FieldDef, FormDef
from keel.errors import NotFound

DIALECT = "https://json-schema.org/draft/2020-12/schema"
MODES = ("create", "update", "read")

# The columns every entity table has (storage.tables.SYSTEM_COLUMNS), as they appear in a read.
SYSTEM_PROPERTIES: dict[str, dict] = {
    "id": {"type": "integer", "readOnly": True},
    "row_version": {"type": "integer", "readOnly": True},
    "created_at": {"type": "string", "format": "date-time", "readOnly": True},
    "created_by": {"type": ["integer", "null"], "readOnly": True},
    "updated_at": {"type": "string", "format": "date-time", "readOnly": True},
    "updated_by": {"type": ["integer", "null"], "readOnly": True},
}


def nullable(schema: dict) -> dict:
    """The same schema, also accepting null (a value left empty, or not stored yet)."""
    s = dict(schema)
    t = s.get("type")
    if t is None:
        return s  # no type constraint (json): null is already allowed
    types = [t] if isinstance(t, str) else list(t)
    if "null" not in types:
        s["type"] = types + ["null"]
    if "enum" in s and None not in s["enum"]:
        s["enum"] = list(s["enum"]) + [None]
    return s


def field_schema(f: FieldDef) -> dict:
    """The field type's schema plus the field's labels (both languages: a schema is not per user)."""
    s = dict(f.ftype.json_schema(f))
    s["title"] = f.label.en
    s["x-label"] = {"zh": f.label.zh, "en": f.label.en}
    if f.help is not None:
        s["description"] = f.help.en
    if f.options:
        s["x-enumLabels"] = {o.id: {"zh": o.label.zh, "en": o.label.en} for o in f.options}
    if not f.writable:
        s["readOnly"] = True
    return s


def _field_ids(found: Iterable[Any]) -> set[str]:
    # permissions may answer with field ids or with FieldDefs
    return {x if isinstance(x, str) else x.id for x in found}


def _permitted(entity: EntityDef, actor: Actor | None, mode: str) -> set[str]:
    if actor is None:
        if mode == "read":
            return {f.id for f in entity.fields}
        return {f.id for f in entity.fields if f.writable}
    from keel.storage import permissions

    if mode == "read":
        return _field_ids(permissions.readable_fields(entity, actor))
    sendable = {f.id for f in entity.fields if f.writable}
    return _field_ids(permissions.writable_fields(entity, actor)) & sendable


def entity_json_schema(entity: EntityDef, actor: Actor | None, mode: str) -> dict:
    """The body of a create or update, or the shape of a read, for `entity`. With an actor, only the
    fields that actor may write (create/update) or read (read); without one, every field a client may
    ever send or see (used for the published OpenAPI document)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    allowed = _permitted(entity, actor, mode)
    props: dict[str, dict] = {}
    required: list[str] = []
    for f in entity.fields:
        if f.id not in allowed:
            continue
        s = field_schema(f)
        if mode == "create" and f.required and f.default is None:
            required.append(f.id)
            props[f.id] = s
        elif mode == "update" and f.required:
            props[f.id] = s  # may be left out of an update, but not emptied
        else:
            props[f.id] = nullable(s)
    schema: dict[str, Any] = {"$schema": DIALECT, "type": "object", "title": entity.label.en,
                              "x-label": {"zh": entity.label.zh, "en": entity.label.en},
                              "x-entity": entity.id}
    if mode == "read":
        schema["properties"] = {**SYSTEM_PROPERTIES, **props}
        schema["required"] = list(SYSTEM_PROPERTIES)
    else:
        schema["properties"] = props
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
    return schema


def form_field_required(f: FieldDef, ff) -> bool:
    """A form may make a field required or optional for itself; otherwise the field decides."""
    return f.required if ff.required is None else ff.required


def form_def(built, form_id: str) -> FormDef:
    try:
        return built.definition.forms[form_id]
    except KeyError:
        raise NotFound(f"no form '{form_id}' in app '{built.id}'") from None


def form_json_schema(built, form_id: str, lang: str) -> dict:
    """The schema of a form submission, with titles and option labels in `lang`. Memoised per version."""
    return built.product(("form_json_schema", form_id, lang),
                         lambda: _build_form_schema(built, form_id, lang))


def _build_form_schema(built, form_id: str, lang: str) -> dict:
    form = form_def(built, form_id)
    entity = built.entity(form.entity)
    props: dict[str, dict] = {}
    required: list[str] = []
    for section in form.sections:
        for ff in section.fields:
            f = entity.field(ff.field)
            if f is None:  # definitions.checks refuses this; never fail a page over it
                continue
            s = dict(f.ftype.json_schema(f))
            s["title"] = f.label.get(lang)
            help_ = ff.help or f.help
            if help_ is not None:
                s["description"] = help_.get(lang)
            s["x-section"] = section.id
            if f.options:
                s["x-enumLabels"] = {o.id: o.label.get(lang) for o in f.options}
            is_required = form_field_required(f, ff)
            if ff.visible_if:
                # A hidden field is ignored, so it can only be required while visible: JSON Schema
                # cannot express the condition (it is a Keel expression), the submit path enforces it.
                s["x-visible-if"] = ff.visible_if
                if is_required:
                    s["x-required-if-visible"] = True
            elif is_required:
                required.append(f.id)
            props[f.id] = s if is_required else nullable(s)
    schema: dict[str, Any] = {
        "$schema": DIALECT, "type": "object", "title": form.label.get(lang),
        "x-form": form.id, "x-entity": form.entity,
        "x-sections": [{"id": s.id, "title": s.label.get(lang), "fields": [ff.field for ff in s.fields]}
                       for s in form.sections],
        "properties": props, "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema
