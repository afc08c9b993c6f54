"""What a running server uses: the latest applied version of every app, built into tables (and, on
demand, forms and schemas). A version applied by another process is picked up on the next request."""
from __future__ import annotations

import threading

import sqlalchemy as sa

from keel.errors import NotFound
from keel.registries import Registries
from keel.storage.built import BuiltApp, build
from keel.storage.system import app_versions

__all__ = ["BuiltApp", "Runtime", "build"]

MAX_PINNED = 64


class Runtime:
    def __init__(self, engine: sa.Engine, registries: Registries | None = None):
        self.engine = engine
        self.registries = registries or Registries()
        self._apps: dict[str, BuiltApp] = {}
        self._marker: int | None = -1
        self._pinned: dict[tuple[str, int], BuiltApp] = {}
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
                        apps[app_id] = build(load_bundle(bundle, self.registries), version)
                self._apps, self._marker = apps, marker

        if conn is not None:
            run(conn)
        else:
            with self.engine.connect() as c:
                run(c)

    def at(self, conn: sa.Connection, app_id: str, version: int) -> BuiltApp:
        """The app built from a stored `version` (an approval pinned to the version it started with): this
        process's latest build when it is that version, otherwise the stored bundle built once and kept
        (a few versions per app; old ones are read rarely)."""
        current = self._apps.get(app_id)
        if current is not None and current.version == version:
            return current
        key = (app_id, version)
        found = self._pinned.get(key)
        if found is None:
            from keel.storage import versions

            found = build(versions.get(conn, app_id, version, self.registries), version)
            with self._lock:
                if len(self._pinned) >= MAX_PINNED:
                    self._pinned.pop(next(iter(self._pinned)))
                self._pinned[key] = found
        return found

    def latest(self, conn: sa.Connection, app_id: str) -> BuiltApp:
        """The app's latest stored version, read in `conn`'s transaction (it may be newer than what this
        process has seen)."""
        version = conn.execute(sa.select(sa.func.max(app_versions.c.version))
                               .where(app_versions.c.app == app_id)).scalar()
        if version is None:
            raise NotFound(f"no app '{app_id}'")
        return self.at(conn, app_id, version)

    def get(self, app_id: str) -> BuiltApp:
        try:
            return self._apps[app_id]
        except KeyError:
            raise NotFound(f"no app '{app_id}'") from None

    def apps(self) -> list[BuiltApp]:
        return list(self._apps.values())
