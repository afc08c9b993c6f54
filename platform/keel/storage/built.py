"""An app version as the engine uses it: its definition, its tables, the registries it was loaded with,
and the products derived from it (form classes, validators, schemas), each built once per version."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from keel.definitions.model import AppDef, EntityDef
from keel.errors import NotFound
from keel.registries import Registries
from keel.storage.events import NO_LISTENERS, RecordListeners
from keel.storage.tables import app_tables


@dataclass
class BuiltApp:
    definition: AppDef
    version: int
    metadata: sa.MetaData
    tables: dict[str, sa.Table]
    registries: Registries = field(default_factory=Registries)
    # Products derived from the definition (form classes, validators, schemas), built once per
    # version by whoever needs them: key -> product.
    products: dict[Any, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.definition.id

    @property
    def events(self) -> RecordListeners:
        """Who hears about this app's record writes (the subsystems and plugins that subscribed)."""
        return self.registries.record_events or NO_LISTENERS

    def entity(self, entity_id: str) -> EntityDef:
        try:
            return self.definition.entities[entity_id]
        except KeyError:
            raise NotFound(f"no entity '{entity_id}' in app '{self.id}'") from None

    def table(self, entity_id: str) -> sa.Table:
        self.entity(entity_id)
        return self.tables[entity_id]

    def product(self, key: Any, build) -> Any:
        """Memoise something derived from this version (a form class, a validator)."""
        if key not in self.products:
            self.products[key] = build()
        return self.products[key]


def build(definition: AppDef, version: int) -> BuiltApp:
    md, tables = app_tables(definition)
    return BuiltApp(definition, version, md, tables, definition.registries or Registries())
