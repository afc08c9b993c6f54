"""Stored definition versions: numbering per app, reading back, history and the bundle diff."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from helpers_registries import REGISTRIES
from keel.definitions.loader import load_bundle
from keel.errors import NotFound
from keel.storage import versions
from keel.storage.db import create_engine, create_system_tables
from keel.storage.system import app_versions, users


def bundle(app: str, version: str = "1", fields: list[dict] | None = None) -> dict:
    return {"app.json": {"id": app, "version": version, "label": app},
            "entities/item.json": {"id": "item", "fields": fields or [{"id": "title", "type": "text"}]}}


@pytest.fixture
def engine(db_url):
    eng = create_engine(db_url)
    create_system_tables(eng)
    yield eng
    eng.dispose()


def load(raw: dict):
    return load_bundle(raw, REGISTRIES)


def test_versions_are_numbered_from_one_per_app(engine):
    with engine.begin() as conn:
        assert versions.store(conn, load(bundle("shop")), None) == 1
        assert versions.store(conn, load(bundle("shop", "2")), None, note="second") == 2
        assert versions.store(conn, load(bundle("crm")), None) == 1
        row = conn.execute(sa.select(app_versions).where(app_versions.c.app == "shop",
                                                         app_versions.c.version == 2)).one()
    assert (row.label, row.note) == ("2", "second")
    assert row.bundle == bundle("shop", "2")   # exactly what was loaded, as plain JSON
    assert row.checksum == load(bundle("shop", "2")).checksum


def test_latest_and_get_read_back_the_stored_definition(engine):
    with engine.begin() as conn:
        assert versions.latest(conn, "shop", REGISTRIES) is None
        versions.store(conn, load(bundle("shop")), None)
        versions.store(conn, load(bundle("shop", "2", [{"id": "title", "type": "text"},
                                                       {"id": "qty", "type": "integer"}])), None)
        number, latest = versions.latest(conn, "shop", REGISTRIES)
        first = versions.get(conn, "shop", 1, REGISTRIES)
    assert number == 2 and latest.entities["item"].field("qty").type == "integer"
    assert first.version == "1" and first.entities["item"].field("qty") is None


def test_get_of_a_missing_version_says_what_exists(engine):
    with engine.begin() as conn:
        with pytest.raises(NotFound, match="app 'shop' has no stored versions"):
            versions.get(conn, "shop", 1, REGISTRIES)
        versions.store(conn, load(bundle("shop")), None)
        with pytest.raises(NotFound, match=r"app 'shop' has no version 4 \(versions 1 to 1 are stored\)"):
            versions.get(conn, "shop", 4, REGISTRIES)


def test_history_names_the_user_who_stored_each_version(engine):
    with engine.begin() as conn:
        uid = conn.execute(users.insert().values(username="carol", display_name="Carol")
                           .returning(users.c.id)).scalar()
        versions.store(conn, load(bundle("shop")), uid, note="first")
        versions.store(conn, load(bundle("shop", "2")), None)
        versions.store(conn, load(bundle("other")), uid)
        history = versions.history(conn, "shop")
    assert [(h["version"], h["label"], h["note"], h["created_by"]) for h in history] == [
        (1, "1", "first", "carol"), (2, "2", "", None)]
    assert all(len(h["checksum"]) == 64 and h["created_at"] is not None for h in history)


def test_checksum_falls_back_to_the_bundle_when_the_definition_has_none():
    import dataclasses

    app_def = dataclasses.replace(load(bundle("shop")), checksum="")
    assert versions.checksum_of(app_def) == versions.bundle_checksum(bundle("shop"))
    assert versions.bundle_checksum({"a": 1, "b": 2}) == versions.bundle_checksum({"b": 2, "a": 1})


# --- bundle_diff -----------------------------------------------------------------------------------

def test_diff_lists_added_and_removed_files():
    old = {"app.json": {"id": "a"}, "entities/old.json": {"id": "old"}}
    new = {"app.json": {"id": "a"}, "entities/new.json": {"id": "new"}}
    assert versions.bundle_diff(old, new) == ["entities/new.json: file added", "entities/old.json: file removed"]


def test_diff_of_an_unchanged_bundle_is_empty():
    assert versions.bundle_diff(bundle("shop"), bundle("shop")) == []


def test_diff_gives_json_pointers_with_old_and_new_values():
    old = {"e.json": {"id": "goal", "label": {"zh": "目标"}, "track_changes": True, "tags": ["a", "b"]}}
    new = {"e.json": {"id": "goal", "label": {"zh": "目标", "en": "Goal"}, "track_changes": 1, "tags": ["a"],
                      "title_field": "name"}}
    assert versions.bundle_diff(old, new) == [
        'e.json: added /label/en = "Goal"',
        "e.json: changed /track_changes: true → 1",      # 1 is not true: types count
        'e.json: removed /tags/1 (was "b")',
        'e.json: added /title_field = "name"',
    ]


def test_diff_matches_fields_by_id_so_an_insertion_is_one_change():
    fields = [{"id": "a", "type": "text"}, {"id": "b", "type": "integer"}]
    inserted = [{"id": "a", "type": "text"}, {"id": "new", "type": "date"}, {"id": "b", "type": "decimal"}]
    assert versions.bundle_diff({"f.json": {"fields": fields}}, {"f.json": {"fields": inserted}}) == [
        'f.json: added /fields/1 = {"id": "new", "type": "date"}',
        'f.json: changed /fields/2/type: "integer" → "decimal"',
    ]


def test_diff_escapes_pointer_tokens_and_shortens_long_values():
    old = {"f.json": {"a/b": "x", "note": "short"}}
    new = {"f.json": {"a/b": "y", "note": "z" * 500}}
    lines = versions.bundle_diff(old, new)
    assert lines[0] == 'f.json: changed /a~1b: "x" → "y"'
    assert lines[1].startswith('f.json: changed /note: "short" → "zzz') and lines[1].endswith("…")
    assert len(lines[1]) < 140
