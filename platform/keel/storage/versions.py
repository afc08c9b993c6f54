"""Stored definition versions: every applied version of an app, numbered 1, 2, 3 ... per app, with the
exact bundle that was loaded. Rollback, diff and a running server's refresh all start from here."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from keel.definitions.model import AppDef, thaw
from keel.errors import NotFound
from keel.json_values import integer_problem
from keel.registries import Registries
from keel.storage.system import app_versions, users


def bundle_checksum(bundle: Mapping[str, Any]) -> str:
    """sha256 of the bundle's canonical JSON; used when a definition carries no checksum of its own."""
    text = json.dumps(thaw(bundle), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def checksum_of(app_def: AppDef) -> str:
    return app_def.checksum or bundle_checksum(app_def.bundle)


def load(bundle: Mapping[str, Any], registries: Registries) -> AppDef:
    # Imported here: the loader validates against JSON Schemas and is only needed when reading back.
    from keel.definitions.loader import load_bundle

    return load_bundle(bundle, registries)


def next_version(conn: sa.Connection, app_id: str) -> int:
    top = conn.execute(sa.select(sa.func.max(app_versions.c.version))
                       .where(app_versions.c.app == app_id)).scalar()
    return (top or 0) + 1


def store(conn: sa.Connection, app_def: AppDef, user_id: int | None, note: str = "") -> int:
    """Store `app_def` as the app's next version and return its number. The caller holds the app's
    lock (see `storage.sync.lock_app`), so two stores cannot pick the same number; the unique
    constraint on (app, version) is the backstop."""
    number = next_version(conn, app_def.id)
    conn.execute(app_versions.insert().values(
        app=app_def.id, version=number, label=str(app_def.version)[:64], checksum=checksum_of(app_def),
        bundle=thaw(app_def.bundle), note=(note or "")[:500], created_by=user_id,
        created_at=dt.datetime.now(dt.UTC)))
    return number


def latest_row(conn: sa.Connection, app_id: str) -> sa.Row | None:
    """The newest stored version as a row (version, checksum, bundle), without loading it."""
    return conn.execute(
        sa.select(app_versions.c.version, app_versions.c.checksum, app_versions.c.bundle)
        .where(app_versions.c.app == app_id).order_by(app_versions.c.version.desc()).limit(1)).first()


def latest(conn: sa.Connection, app_id: str, registries: Registries) -> tuple[int, AppDef] | None:
    row = latest_row(conn, app_id)
    return None if row is None else (row.version, load(row.bundle, registries))


def get_bundle(conn: sa.Connection, app_id: str, version: int) -> dict:
    if integer_problem(version):  # typed into a page: no stored version is that large
        raise NotFound(f"app '{app_id}' has no version {str(version)[:30]}")
    bundle = conn.execute(sa.select(app_versions.c.bundle).where(
        app_versions.c.app == app_id, app_versions.c.version == version)).scalar()
    if bundle is None:
        known = conn.execute(sa.select(sa.func.max(app_versions.c.version))
                             .where(app_versions.c.app == app_id)).scalar()
        if known is None:
            raise NotFound(f"app '{app_id}' has no stored versions")
        raise NotFound(f"app '{app_id}' has no version {version} (versions 1 to {known} are stored)")
    return bundle


def get(conn: sa.Connection, app_id: str, version: int, registries: Registries) -> AppDef:
    return load(get_bundle(conn, app_id, version), registries)


def history(conn: sa.Connection, app_id: str) -> list[dict]:
    """Every stored version of an app, oldest first."""
    rows = conn.execute(
        sa.select(app_versions.c.version, app_versions.c.label, app_versions.c.checksum,
                  app_versions.c.note, app_versions.c.created_by, users.c.username,
                  app_versions.c.created_at)
        .select_from(app_versions.outerjoin(users, users.c.id == app_versions.c.created_by))
        .where(app_versions.c.app == app_id).order_by(app_versions.c.version)).all()
    return [{"version": r.version, "label": r.label, "checksum": r.checksum, "note": r.note,
             "created_by": r.username if r.username is not None else r.created_by,
             "created_at": r.created_at} for r in rows]


def versions_newest_first(conn: sa.Connection, app_id: str):
    """(version, bundle) of every stored version, newest first, each bundle fetched only when asked
    for: a sync looking for the last type a retired field had usually stops after one or two."""
    numbers = conn.execute(sa.select(app_versions.c.version).where(app_versions.c.app == app_id)
                           .order_by(app_versions.c.version.desc())).scalars().all()
    for number in numbers:
        yield number, get_bundle(conn, app_id, number)


# --- diff of two bundles -------------------------------------------------------------------------

VALUE_WIDTH = 80


def _show(value: Any) -> str:
    text = json.dumps(thaw(value), ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= VALUE_WIDTH else text[:VALUE_WIDTH - 1] + "…"


def _escape(token: Any) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def _by_id(items: list) -> dict | None:
    """Lists of objects with unique ids (fields, options, sections) are matched by id, so inserting
    one field reports one addition instead of a change to every field after it."""
    if not items or not all(isinstance(i, Mapping) and isinstance(i.get("id"), str) for i in items):
        return None
    ids = [i["id"] for i in items]
    return None if len(set(ids)) != len(ids) else {i["id"]: n for n, i in enumerate(items)}


def _walk(old: Any, new: Any, pointer: str, out: list[str]) -> None:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in old:
            if key not in new:
                out.append(f"removed {pointer}/{_escape(key)} (was {_show(old[key])})")
        for key in new:
            p = f"{pointer}/{_escape(key)}"
            if key not in old:
                out.append(f"added {p} = {_show(new[key])}")
            else:
                _walk(old[key], new[key], p, out)
        return
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        old_ids, new_ids = _by_id(list(old)), _by_id(list(new))
        if old_ids is not None and new_ids is not None:
            for key, n in old_ids.items():
                if key not in new_ids:
                    out.append(f"removed {pointer}/{n} (was {_show(old[n])})")
            for key, n in new_ids.items():
                if key not in old_ids:
                    out.append(f"added {pointer}/{n} = {_show(new[n])}")
                else:
                    _walk(old[old_ids[key]], new[n], f"{pointer}/{n}", out)
            return
        for n in range(max(len(old), len(new))):
            if n >= len(new):
                out.append(f"removed {pointer}/{n} (was {_show(old[n])})")
            elif n >= len(old):
                out.append(f"added {pointer}/{n} = {_show(new[n])}")
            else:
                _walk(old[n], new[n], f"{pointer}/{n}", out)
        return
    # Scalars (and a container replaced by something else). bool is compared by type too: 1 != true.
    if old != new or type(old) is not type(new):
        out.append(f"changed {pointer or '/'}: {_show(old)} → {_show(new)}")


def bundle_diff(old_bundle: Mapping[str, Any] | None, new_bundle: Mapping[str, Any]) -> list[str]:
    """What changed between two bundles, one line per change: files added and removed, and for each
    changed file the JSON pointers added, removed or changed (old → new)."""
    old_bundle = old_bundle or {}
    lines: list[str] = []
    for path in sorted(set(old_bundle) | set(new_bundle)):
        if path not in new_bundle:
            lines.append(f"{path}: file removed")
        elif path not in old_bundle:
            lines.append(f"{path}: file added")
        else:
            changes: list[str] = []
            _walk(old_bundle[path], new_bundle[path], "", changes)
            lines.extend(f"{path}: {c}" for c in changes)
    return lines
