"""Schema-valid JSON documents -> the immutable model (model.py).

Only documents that passed their JSON Schema get here, so the shapes are known; what the schema
cannot know (a field type, a referenced id) is left for checks.py, which works on the result.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from keel.definitions.model import (
    AppDef,
    Definition,
    EntityDef,
    FieldDef,
    FormDef,
    FormField,
    FormSection,
    Label,
    Option,
    PermissionRule,
    RoleDef,
    RuleDef,
    freeze,
)
from keel.fieldtypes.base import FieldValueError

SHORTHAND_SECTION = "main"  # the id of the one section a flat `fields` list becomes


@dataclass
class Sources:
    """The documents of one app that passed schema validation, built into the model, each with the
    file it came from; and the (kind, id) of files that did not, so that a reference to one of those
    is not reported a second time."""

    app: Mapping[str, Any] | None  # app.json as parsed; None when missing or invalid
    # Read from app.json even when another part of it is invalid, so that one typo there does not
    # hide (or fake) every role and table-name error elsewhere. None: not knowable.
    app_id: str | None
    role_ids: list[str] | None
    entities: list[tuple[str, EntityDef]]
    forms: list[tuple[str, FormDef]]
    others: list[Definition]
    broken: set[tuple[str, str]]
    # Files of registered kinds that failed their JSON Schema: their kind's checks still look at them,
    # best effort, so a reference error is reported in the same run as the schema error beside it.
    invalid_others: list[Definition] = field(default_factory=list)


def sources(valid: Mapping[str, tuple[str, Mapping[str, Any]]], broken: set[tuple[str, str]], app_doc: Any,
            field_types: Mapping[str, Any]) -> Sources:
    """`valid`: path -> (kind, frozen document); `app_doc`: app.json as found in the bundle, valid or not;
    `field_types`: the registered field types, resolved into each FieldDef."""
    app_id, role_ids = None, None
    if isinstance(app_doc, dict):
        app_id = app_doc.get("id") if isinstance(app_doc.get("id"), str) else None
        roles = app_doc.get("roles", [])
        if isinstance(roles, list):
            role_ids = [r["id"] for r in roles if isinstance(r, dict) and isinstance(r.get("id"), str)]
    out = Sources(app=None, app_id=app_id, role_ids=role_ids, entities=[], forms=[], others=[],
                  broken=set(broken))
    for path in sorted(valid):
        kind, doc = valid[path]
        if kind == "app":
            out.app = doc
        elif kind == "entity":
            out.entities.append((path, entity(doc, field_types)))
        elif kind == "form":
            out.forms.append((path, form(doc)))
        else:
            out.others.append(Definition(id=doc["id"], kind=kind, file=path, data=freeze(doc)))
    return out


def app(src: Sources, bundle: Mapping[str, Any], checksum: str, registries: Any) -> AppDef:
    """The AppDef of sources that passed every check (so app.json is there and ids are unique)."""
    a = src.app
    assert a is not None
    others: dict[str, dict[str, Definition]] = {}
    for d in src.others:
        others.setdefault(d.kind, {})[d.id] = d
    return AppDef(
        id=a["id"], version=a["version"], label=Label.parse(a["label"], a["id"]),
        roles=tuple(RoleDef(r["id"], Label.parse(r.get("label"), r["id"])) for r in a.get("roles", ())),
        settings=freeze(a.get("settings", {})),
        entities=MappingProxyType({e.id: e for _, e in src.entities}),
        forms=MappingProxyType({f.id: f for _, f in src.forms}),
        definitions=MappingProxyType({k: MappingProxyType(v) for k, v in others.items()}),
        description=_label_or_none(a.get("description")),
        bundle=bundle, checksum=checksum, registries=registries)


def entity(d: Mapping[str, Any], field_types: Mapping[str, Any]) -> EntityDef:
    return EntityDef(
        id=d["id"], label=Label.parse(d.get("label"), d["id"]),
        fields=tuple(field(f, field_types) for f in d["fields"]),
        permissions=tuple(PermissionRule(role=p["role"], read=p.get("read", "none"), create=p.get("create", False),
                                         update=p.get("update", "none"), delete=p.get("delete", "none"))
                          for p in d.get("permissions", ())),
        owner_field=d.get("owner_field"), title_field=d.get("title_field"),
        track_changes=d.get("track_changes", True),
        rules=tuple(RuleDef(id=r["id"], check=r["check"], message=Label.parse(r["message"], r["id"]),
                            field=r.get("field")) for r in d.get("rules", ())),
        raw=freeze(d))


def field(d: Mapping[str, Any], field_types: Mapping[str, Any]) -> FieldDef:
    roles = {k: tuple(d[k]) if k in d else None for k in ("read_roles", "write_roles")}
    f = FieldDef(
        id=d["id"], type=d["type"], label=Label.parse(d.get("label"), d["id"]),
        required=d.get("required", False), unique=d.get("unique", False), read_only=d.get("read_only", False),
        changed_by=d.get("changed_by"), min_length=d.get("min_length"), max_length=d.get("max_length"), pattern=d.get("pattern"),
        default=d.get("default"), computed=d.get("computed"),
        options=tuple(Option(o["id"], Label.parse({k: o[k] for k in ("zh", "en") if k in o} or None, o["id"]))
                      for o in d.get("options", ())),
        entity=d.get("entity"), currency=d.get("currency"), precision=d.get("precision"), scale=d.get("scale"),
        columns=tuple(field(c, field_types) for c in d.get("columns", ())),
        help=_label_or_none(d.get("help")), read_roles=roles["read_roles"], write_roles=roles["write_roles"],
        raw=freeze(d), ftype=field_types.get(d["type"]))
    return replace(f, min=bound(f, d.get("min")), max=bound(f, d.get("max")))


def bound(f: FieldDef, value: Any) -> Any:
    """A min/max in the field's own terms: int for integer, Decimal for decimal/money/percent, an ISO
    string for dates (as model.FieldDef documents). Left as written when it does not parse; checks.py
    reports that."""
    if value is None or f.ftype is None:
        return value
    try:
        parsed = f.ftype.parse(f, value)
    except (FieldValueError, TypeError, ValueError, ArithmeticError):
        return value
    return parsed.isoformat() if isinstance(parsed, (dt.date, dt.datetime)) else parsed


def form(d: Mapping[str, Any]) -> FormDef:
    label = Label.parse(d.get("label"), d["id"])
    sections = tuple(FormSection(s["id"], Label.parse(s.get("label"), s["id"]),
                                 tuple(_form_field(x) for x in s["fields"])) for s in d.get("sections", ()))
    if not sections and "fields" in d:
        sections = (FormSection(SHORTHAND_SECTION, label, tuple(_form_field(x) for x in d["fields"])),)
    return FormDef(id=d["id"], entity=d["entity"], label=label, sections=sections,
                   roles=tuple(d["roles"]) if "roles" in d else None,
                   submit_label=_label_or_none(d.get("submit_label")), raw=freeze(d))


def _form_field(item: Any) -> FormField:
    if isinstance(item, str):
        return FormField(item)
    return FormField(item["field"], help=_label_or_none(item.get("help")), visible_if=item.get("visible_if"),
                     required=item.get("required"))


def _label_or_none(raw: Any) -> Label | None:
    return None if raw is None else Label.parse(raw, "")
