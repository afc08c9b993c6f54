"""Definition kinds beyond entities and forms: what a subsystem (or any plugin) contributes through the
`keel_definition_kinds` hook so that the loader reads, validates and checks its files.

The definition language knows entities, forms and app.json itself; workflows, notifications, jobs,
connectors and dashboards are kinds their own packages register, exactly as a plugin would. The loader
stays pure: a kind's checks get a `CheckContext` (the rest of the app as parsed, and the registries of
the installed plugins), never a database.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from keel.definitions.errors import DefinitionError
from keel.definitions.model import Definition, EntityDef, FormDef
from keel.registries import Registries

CORE_FOLDERS = {"entities": "entity", "forms": "form"}
SCHEMA_BASE = "https://keel.dev/schemas/"


@dataclass(frozen=True)
class CheckContext:
    """What the checks of one definition may look at in the rest of its app. It reads like the AppDef
    being built (`id`, `entities`, `forms`, `settings`, `definitions_of(kind)`, `registries`), so a check written for
    a loaded app (a job type's `definition_errors`, say) works on it too."""

    app_id: str | None
    entities: Mapping[str, EntityDef]           # entities that passed their own schema
    forms: Mapping[str, FormDef]
    roles: frozenset[str] | None                # None: not knowable (app.json is broken)
    settings: Mapping[str, Any]
    definitions: Mapping[str, Mapping[str, Definition]]  # kind -> id -> schema-valid definition
    broken: frozenset[tuple[str, str]]          # (kind, id) of files reported broken already
    registries: Registries

    @property
    def id(self) -> str:
        return self.app_id or "?"

    def definitions_of(self, kind: str) -> Mapping[str, Definition]:
        return self.definitions.get(kind, {})

    def ids(self, kind: str) -> frozenset[str] | None:
        """The ids of a kind's definitions; None when a file of that kind is broken (a reference to it
        cannot be judged, and is not reported twice)."""
        if any(k == kind for k, _ in self.broken):
            return None
        if kind == "entity":
            return frozenset(self.entities)
        if kind == "form":
            return frozenset(self.forms)
        return frozenset(self.definitions.get(kind, {}))

    def role_errors(self, file: str, where: str, roles: Any) -> Iterator[DefinitionError]:
        """An error for each role in `roles` that app.json does not declare."""
        if self.roles is None or not isinstance(roles, (list, tuple)):
            return
        for i, role in enumerate(roles):
            if role not in self.roles:
                yield DefinitionError(file, f"{where}/{i}", f"unknown role '{role}'; declare it in app.json roles "
                                      f"(declared: {', '.join(sorted(self.roles))})")

    def known(self, kind: str, ident: str) -> bool:
        ids = self.ids(kind)
        return ids is None or ident in ids or (kind, ident) in self.broken


Check = Callable[[Definition, CheckContext], Iterable[DefinitionError]]


@dataclass(frozen=True, eq=False)
class DefinitionKind:
    """`name`: the kind of each file ("workflow"); `folder`: where the files live ("workflows");
    `schema`: the JSON Schema (draft 2020-12) of one file — give it an `$id` under
    https://keel.dev/schemas/ to `$ref` the shared parts (`common.json#/$defs/label`, ...); `check`:
    what the schema cannot say, as DefinitionErrors with the file and pointer; `label`: the plural noun
    `keel app validate` counts them with."""

    name: str
    folder: str
    schema: Mapping[str, Any]
    check: Check | None = None
    label: str = ""
    # The order kinds are listed in (validate's summary); lower first.
    order: int = 100
    # What is allowed but probably a mistake: `keel app validate` prints these as warnings; they never
    # stop a load or an apply. Called with (definition, the loaded AppDef).
    warn: Callable[[Definition, Any], Iterable[DefinitionError]] | None = None

    @property
    def plural(self) -> str:
        return self.label or self.folder


def kind_problem(obj: Any) -> str | None:
    """Why `obj` cannot be used as a definition kind (for the plugin host), or None."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(obj, DefinitionKind):
        return "is not a keel.definitions.kinds.DefinitionKind"
    if not obj.name.isidentifier() or not obj.folder.isidentifier():
        return "needs a `name` and a `folder` that are identifiers (letters, digits, '_')"
    if obj.folder in CORE_FOLDERS or obj.name in ("app", *CORE_FOLDERS.values()):
        return f"claims '{obj.folder}/', which Keel's core defines"
    if not isinstance(obj.schema, Mapping):
        return "has a `schema` that is not a JSON Schema object"
    try:
        Draft202012Validator.check_schema(obj.schema)
    except SchemaError as exc:
        return f"has an invalid `schema`: {exc.message}"
    if obj.check is not None and not callable(obj.check):
        return "has a `check` that is not callable"
    return None


def definition_warnings(app_def: Any, registries: Any) -> list[DefinitionError]:
    """Every kind's warnings about a loaded app (see DefinitionKind.warn), sorted by file and pointer."""
    out: list[DefinitionError] = []
    for kind in registries.definition_kinds.values():
        if kind.warn is None:
            continue
        for d in app_def.definitions_of(kind.name).values():
            out.extend(kind.warn(d, app_def))
    return sorted(set(out))
