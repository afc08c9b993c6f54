"""Applying a version of an app: the one place above storage that does it (the CLI's `keel app
apply/diff/rollback` and the admin page call these). In one transaction: lock the app, compare with the
latest stored version, plan and run the schema sync, store the version, write the audit event. A
refused sync rolls all of it back, so a version is stored exactly when its schema is in place. A
running server picks the new version up through `Runtime.refresh`."""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from keel.actor import Actor
from keel.definitions.model import AppDef
from keel.registries import Registries
from keel.storage import sync, versions
from keel.storage.audit import record_event
from keel.storage.db import sync_system_tables
from keel.storage.sync import SyncPlan
from keel.storage.system import app_versions

SYSTEM_TABLES_LOCK = "(keel system tables)"  # not a valid app id, so never an app's lock


@dataclass(frozen=True)
class ApplyResult:
    version: int | None   # the version now current: the new one, or the unchanged one
    plan: SyncPlan
    changed: bool         # False: the definition equals the latest stored version; nothing written
    message: str = ""


@dataclass(frozen=True)
class DiffResult:
    plan: SyncPlan
    changes: list[str]            # versions.bundle_diff lines against the latest stored version
    current_version: int | None   # None: the app has never been applied


def ensure_system_tables(engine: sa.Engine) -> None:
    """Keel's own tables (and the indexes a newer version added), created under a lock: two processes
    applying to a fresh PostgreSQL database at once would otherwise both try to create them
    (`create_system_tables` does the same without the lock)."""
    with engine.begin() as conn:
        sync.lock_app(conn, SYSTEM_TABLES_LOCK)
        sync_system_tables(conn)


def apply_app(engine: sa.Engine, app_def: AppDef, actor: Actor, note: str = "") -> ApplyResult:
    """Apply `app_def` (loaded, so checked against the plugins it was loaded with) as the app's next
    version. Raises `SyncRefused` when the schema change would lose data; nothing is written then."""
    return _apply(engine, app_def, actor, note, "app.apply", {})


def rollback_app(engine: sa.Engine, app_id: str, version: int, actor: Actor,
                 registries: Registries) -> ApplyResult:
    """Re-apply the stored bundle of `version` (checked again with today's `registries`) as a new
    version, through the same path as any apply: a rollback that would need an impossible conversion is
    refused the same way. Raises NotFound for an unknown app or version."""
    ensure_system_tables(engine)
    with engine.connect() as conn:
        bundle = versions.get_bundle(conn, app_id, version)
    app_def = versions.load(bundle, registries)
    return _apply(engine, app_def, actor, f"rollback to v{version}", "app.rollback",
                  {"rollback_to": version})


def _apply(engine: sa.Engine, app_def: AppDef, actor: Actor, note: str, action: str,
           detail: dict) -> ApplyResult:
    ensure_system_tables(engine)
    checksum = versions.checksum_of(app_def)
    with engine.begin() as conn:
        # Under this lock nobody else plans, syncs or stores a version of this app until we commit.
        sync.lock_app(conn, app_def.id)
        current = versions.latest_row(conn, app_def.id)
        if current is not None and current.checksum == checksum:
            return ApplyResult(current.version, SyncPlan(app_def.id, current.version), False,
                               f"{app_def.id} is already at version {current.version}")
        old = versions.load(current.bundle, app_def.registries) if current is not None else None
        number = current.version + 1 if current is not None else 1
        sync_plan = sync.plan(conn, old, app_def, version=number)
        sync.apply(conn, sync_plan)  # SyncRefused leaves the `with` block: everything rolls back
        stored = versions.store(conn, app_def, actor.user_id, note)
        record_event(conn, actor, action, app=app_def.id,
                     detail={"version": stored, "checksum": checksum, "label": str(app_def.version),
                             "note": note, "steps": sync_plan.descriptions(), **detail})
    return ApplyResult(stored, sync_plan, True, f"{app_def.id} applied as version {stored}")


def diff_app(engine: sa.Engine, app_def: AppDef) -> DiffResult:
    """What applying `app_def` would do, without writing anything: the schema steps (and refusals)
    and the definition changes against the latest stored version."""
    with engine.connect() as conn:
        try:
            has_versions = sa.inspect(conn).has_table(app_versions.name)
            current = versions.latest_row(conn, app_def.id) if has_versions else None
            if current is not None and current.checksum == versions.checksum_of(app_def):
                return DiffResult(SyncPlan(app_def.id, current.version), [], current.version)
            old = versions.load(current.bundle, app_def.registries) if current is not None else None
            number = current.version + 1 if current is not None else 1
            sync_plan = sync.plan(conn, old, app_def, version=number)
            changes = versions.bundle_diff(current.bundle if current is not None else None, app_def.bundle)
            return DiffResult(sync_plan, changes, current.version if current is not None else None)
        finally:
            conn.rollback()


@dataclass(frozen=True)
class ExportResult:
    version: int
    written: list[str]   # bundle paths written
    removed: list[str]   # definition files of the folder that the version no longer has


def export_app(engine: sa.Engine, app_id: str, target, registries: Registries,
               version: int | None = None) -> ExportResult:
    """Write a stored version (the current one by default) of `app_id` into the folder `target` as the
    files `keel app apply` reads, so that the folder an admin applies from follows changes made on the
    pages or by a rollback. Definition files in the folder that the version does not have are removed
    (the version is the whole app); other files are left alone. A folder holding another app is refused."""
    import json
    from pathlib import Path

    from keel.definitions.loader import folders
    from keel.errors import KeelError, NotFound

    root = Path(target)
    with engine.connect() as conn:
        if version is None:
            row = versions.latest_row(conn, app_id)
            if row is None:
                raise NotFound(f"app '{app_id}' has no stored versions")
            version, bundle = row.version, row.bundle
        else:
            bundle = versions.get_bundle(conn, app_id, version)
    existing = root / "app.json"
    if existing.is_file():
        try:
            other = json.loads(existing.read_text(encoding="utf-8")).get("id")
        except (ValueError, AttributeError):
            other = None
        if other != app_id:
            raise KeelError(f"{root} holds another app ({other!r}); export '{app_id}' into its own folder")
    known = {f"{folder}/{p.name}" for folder in folders(registries) for p in (root / folder).glob("*.json")}
    removed = sorted(known - set(bundle))
    for rel in removed:
        (root / rel).unlink()
    for rel, doc in sorted(bundle.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return ExportResult(version, sorted(bundle), removed)
