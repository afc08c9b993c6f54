"""What a running server uses: the latest applied version of every app, built into tables (and, on
demand, forms and schemas). A version applied by another process is picked up on the next request."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from keel.definitions.model import AppDef, EntityDef
from keel.errors import NotFound
from keel.storage.system import app_versions
from keel.storage.tables import app_tables


@dataclass
class BuiltApp:
    definition: AppDef
    version: int
    metadata: sa.MetaData
    tables: dict[str, sa.Table]
    # Products derived from the definition (form classes, validators, schemas), built once per
    # version by whoever needs them: key -> product.
    products: dict[Any, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.definition.id

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
    return BuiltApp(definition, version, md, tables)


class Runtime:
    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self._apps: dict[str, BuiltApp] = {}
        self._marker: int | None = -1
        self._lock = threading.Lock()

    def refresh(self, conn: sa.Connection | None = None) -> None:
        """Load every app whose latest version is newer than what this process has. One small query
        when nothing changed."""
        from keel.definitions.loader import load_bundle

        def run(c: sa.Connection) -> None:
            marker = c.execute(sa.select(sa.func.max(app_versions.c.id))).scalar()
            if marker == self._marker:
                return
            latest = sa.select(app_versions.c.app, sa.func.max(app_versions.c.version).label("v")) \
                .group_by(app_versions.c.app).subquery()
            rows = c.execute(sa.select(app_versions.c.app, app_versions.c.version, app_versions.c.bundle)
                             .join(latest, sa.and_(latest.c.app == app_versions.c.app,
                                                   latest.c.v == app_versions.c.version))).all()
            with self._lock:
                apps = dict(self._apps)
                for app_id, version, bundle in rows:
                    if app_id not in apps or apps[app_id].version != version:
                        apps[app_id] = build(load_bundle(bundle), version)
                self._apps, self._marker = apps, marker

        if conn is not None:
            run(conn)
        else:
            with self.engine.connect() as c:
                run(c)

    def get(self, app_id: str) -> BuiltApp:
        try:
            return self._apps[app_id]
        except KeyError:
            raise NotFound(f"no app '{app_id}'") from None

    def apps(self) -> list[BuiltApp]:
        return list(self._apps.values())
