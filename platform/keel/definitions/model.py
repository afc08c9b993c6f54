"""The validated, immutable model of an app definition.

`definitions.loader` builds these from JSON files (or from a stored bundle); nothing here touches a
database. Everything downstream — tables, forms, API schemas, OpenAPI, labels — is derived from
these objects, so they are the single source of truth for fields.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


def freeze(value: Any) -> Any:
    """Deep-freeze parsed JSON: dicts become read-only mappings, lists become tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of `freeze`, for serialising back to JSON."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


# Columns every entity record has, kept by Keel itself; a field may not take these ids.
SYSTEM_COLUMNS = ("id", "row_version", "created_at", "created_by", "updated_at", "updated_by", "deleted_at")


@dataclass(frozen=True)
class Label:
    zh: str
    en: str

    def get(self, lang: str | None) -> str:
        return self.en if (lang or "").startswith("en") else self.zh

    @classmethod
    def parse(cls, raw: Any, fallback: str) -> Label:
        if raw is None:
            return cls(fallback, fallback)
        if isinstance(raw, str):
            return cls(raw, raw)
        return cls(raw.get("zh") or raw.get("en") or fallback, raw.get("en") or raw.get("zh") or fallback)


@dataclass(frozen=True)
class Option:
    id: str
    label: Label


@dataclass(frozen=True)
class FieldDef:
    """One field of an entity, declared once. `type` names a registered field type."""

    id: str
    type: str
    label: Label
    required: bool = False
    unique: bool = False
    read_only: bool = False
    changed_by: str | None = None  # "workflow": after the create, only a workflow action changes it
    min: Any = None            # Decimal or int; dates as ISO strings
    max: Any = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None  # RE2 syntax, checked with google-re2
    default: Any = None
    computed: str | None = None  # safe expression over other fields; makes the field read-only
    options: tuple[Option, ...] = ()
    entity: str | None = None    # target of a `link` field
    currency: str | None = None  # for `money`
    precision: int | None = None  # total digits for decimal/money/percent
    scale: int | None = None      # digits after the point
    columns: tuple[FieldDef, ...] = ()  # row shape of a `table` field
    help: Label | None = None
    read_roles: tuple[str, ...] | None = None   # None: everyone who may read the record
    write_roles: tuple[str, ...] | None = None  # None: everyone who may write the record
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False, repr=False)
    # The registered FieldType that `type` names, resolved by the loader from the registries it was
    # given (None only while checks report an unknown type). Everything downstream asks it, never a
    # registry: a definition carries the behaviour it was validated with.
    ftype: Any = field(default=None, compare=False, repr=False)

    @property
    def writable(self) -> bool:
        """Whether a client may ever send a value for this field."""
        return not (self.read_only or self.computed)

    def option_ids(self) -> tuple[str, ...]:
        return tuple(o.id for o in self.options)


@dataclass(frozen=True)
class PermissionRule:
    """What one role may do with an entity. Each action is a row scope (see `ROW_SCOPES`)."""

    role: str
    read: str = "none"
    create: bool = False
    update: str = "none"
    delete: str = "none"


@dataclass(frozen=True)
class RuleDef:
    """A check across fields (`entities/*.json` "rules"): `check` is a safe expression over the record
    after the change that must be true; otherwise the write is refused with `message`, shown at
    `field` (or for the record as a whole). A check that cannot be evaluated because a value it needs is
    empty does not refuse: a rule about an end date waits until there is one."""

    id: str
    check: str
    message: Label
    field: str | None = None


# Row scopes, from widest to narrowest. `own`: the record's owner is the user; `team`: owned by the
# user or one of the user's direct reports; `department`: owned by someone in the user's department.
ROW_SCOPES = ("all", "department", "team", "own", "none")


@dataclass(frozen=True)
class EntityDef:
    id: str
    label: Label
    fields: tuple[FieldDef, ...]
    permissions: tuple[PermissionRule, ...] = ()
    owner_field: str | None = None   # a `user` field; defaults to created_by for row scopes
    title_field: str | None = None   # shown for links, graphs and lists
    track_changes: bool = True
    rules: tuple[RuleDef, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False, repr=False)

    def field(self, field_id: str) -> FieldDef | None:
        for f in self.fields:
            if f.id == field_id:
                return f
        return None

    @property
    def field_map(self) -> Mapping[str, FieldDef]:
        return MappingProxyType({f.id: f for f in self.fields})


@dataclass(frozen=True)
class FormField:
    field: str
    help: Label | None = None
    visible_if: str | None = None  # safe expression over the form's values
    required: bool | None = None   # overrides the entity field's `required` for this form


@dataclass(frozen=True)
class FormSection:
    id: str
    label: Label
    fields: tuple[FormField, ...]


@dataclass(frozen=True)
class FormDef:
    id: str
    entity: str
    label: Label
    sections: tuple[FormSection, ...]
    roles: tuple[str, ...] | None = None  # who may submit; None: whoever may create the entity
    submit_label: Label | None = None
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False, repr=False)

    @property
    def fields(self) -> tuple[FormField, ...]:
        return tuple(ff for s in self.sections for ff in s.fields)


@dataclass(frozen=True)
class RoleDef:
    id: str
    label: Label


@dataclass(frozen=True)
class Definition:
    """A file of a kind a subsystem registered (workflow, notification, job, connector, dashboard, or a
    plugin's): its id, the file it came from and its frozen JSON. The subsystem models it in full."""

    id: str
    kind: str
    file: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class AppDef:
    id: str
    version: str
    label: Label
    roles: tuple[RoleDef, ...]
    settings: Mapping[str, Any]
    entities: Mapping[str, EntityDef]
    forms: Mapping[str, FormDef]
    # Files of registered kinds: kind name ("workflow") -> id -> Definition.
    definitions: Mapping[str, Mapping[str, Definition]] = field(default_factory=lambda: MappingProxyType({}))
    # relative file path -> parsed JSON, exactly what was loaded; stored as the version's bundle
    bundle: Mapping[str, Any] = field(compare=False, repr=False, default_factory=lambda: MappingProxyType({}))
    checksum: str = ""
    description: Label | None = None
    # The keel.registries.Registries it was loaded with: its field types and kinds, and what a part
    # that reads another version of the same app (history, sync) loads that one with.
    registries: Any = field(default=None, compare=False, repr=False)

    def role_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.roles)

    def definitions_of(self, kind: str) -> Mapping[str, Definition]:
        """The app's definitions of a registered kind by id (empty when it has none)."""
        return self.definitions.get(kind, _NONE)

    def known(self, kind: str, ident: str) -> bool:
        """Whether `ident` names a definition of `kind` ("entity", "form", or a registered kind). Checks
        that take an app (a job type's `definition_errors`) ask this before saying a name is unknown: the
        CheckContext of an app being validated answers the same question, and also says yes for a file
        that is broken already, so that one mistake is not reported twice."""
        if kind == "entity":
            return ident in self.entities
        if kind == "form":
            return ident in self.forms
        return ident in self.definitions_of(kind)


_NONE: Mapping[str, Definition] = MappingProxyType({})
