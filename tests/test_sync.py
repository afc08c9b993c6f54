"""Schema sync and applying versions, on SQLite and PostgreSQL: tables and columns follow the
definition, nothing is ever dropped, a type change converts every value or is refused with nothing
changed, and every applied version is stored and audited."""
from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
import sqlalchemy as sa

from conftest import make_app
from helpers_registries import REGISTRIES
from keel.actor import SYSTEM, Actor
from keel.apply import apply_app, diff_app, rollback_app
from keel.definitions.loader import load_bundle
from keel.storage import sync, versions
from keel.storage.db import create_engine, create_system_tables
from keel.storage.sync import SyncRefused
from keel.storage.system import app_versions, audit_events, users
from keel.storage.tables import app_tables

APP = "shop"
TABLE = "shop__item"
TITLE = {"id": "title", "type": "text", "max_length": 200}
QTY = {"id": "qty", "type": "integer"}
OWNER = {"id": "owner", "type": "user"}


def bundle(version: str = "1", **entities: list[dict]) -> dict:
    """An app bundle as the loader reads it from a folder: relative path -> parsed JSON."""
    out = {"app.json": {"id": APP, "version": version, "label": {"zh": "商店", "en": "Shop"},
                        "roles": [{"id": "staff"}]}}
    for eid, fields in entities.items():
        out[f"entities/{eid}.json"] = {"id": eid, "label": eid, "fields": fields}
    return out


def define(version: str = "1", **entities: list[dict]):
    return load_bundle(bundle(version, **entities), REGISTRIES)


@pytest.fixture
def engine(db_url):
    eng = create_engine(db_url)
    yield eng
    eng.dispose()


def insert(engine, app_def, entity: str, rows: list[dict]) -> None:
    now = dt.datetime.now(dt.UTC)
    _md, tables = app_tables(app_def)
    with engine.begin() as conn:
        conn.execute(tables[entity].insert(), [{"created_at": now, "updated_at": now, **r} for r in rows])


def raw_rows(engine, name: str = TABLE) -> list[dict]:
    """Every column the database has, retired ones included."""
    with engine.connect() as conn:
        table = sa.Table(name, sa.MetaData(), autoload_with=conn)
        return [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(table.c.id))]


def columns(engine, name: str = TABLE) -> set[str]:
    with engine.connect() as conn:
        return {c["name"] for c in sa.inspect(conn).get_columns(name)}


def stored_versions(engine) -> list[int]:
    with engine.connect() as conn:
        return conn.execute(sa.select(app_versions.c.version).where(app_versions.c.app == APP)
                            .order_by(app_versions.c.version)).scalars().all()


def events(engine, action: str | None = None) -> list:
    with engine.connect() as conn:
        q = sa.select(audit_events).order_by(audit_events.c.id)
        if action:
            q = q.where(audit_events.c.action == action)
        return conn.execute(q).all()


def add_user(engine, username: str) -> Actor:
    create_system_tables(engine)
    with engine.begin() as conn:
        uid = conn.execute(users.insert().values(username=username, display_name=username)
                           .returning(users.c.id)).scalar()
    return Actor(uid, username, frozenset({"admin"}), is_admin=True)


# --- tables and columns ----------------------------------------------------------------------------

def test_first_version_creates_tables_columns_and_indexes(engine):
    result = apply_app(engine, define(item=[TITLE, QTY, OWNER]), SYSTEM)
    assert (result.version, result.changed) == (1, True)
    assert [s.kind for s in result.plan.steps] == ["create_table", "add_index"]
    assert {"id", "row_version", "created_at", "title", "qty", "owner"} <= columns(engine)
    with engine.connect() as conn:
        assert [ix["column_names"] for ix in sa.inspect(conn).get_indexes(TABLE)] == [["owner"]]
    assert stored_versions(engine) == [1]


def test_adding_a_field_keeps_rows_and_leaves_the_new_column_empty(engine):
    v1 = define(item=[TITLE, QTY])
    apply_app(engine, v1, SYSTEM)
    insert(engine, v1, "item", [{"title": "a", "qty": 1}, {"title": "b", "qty": 2}])
    result = apply_app(engine, define("2", item=[TITLE, QTY, {"id": "note", "type": "long_text"}]), SYSTEM)
    assert [(s.kind, s.description) for s in result.plan.steps] == [("add_column", "item.note: add column (long_text)")]
    assert [(r["title"], r["qty"], r["note"]) for r in raw_rows(engine)] == [("a", 1, None), ("b", 2, None)]


def test_a_new_entity_adds_a_table(engine):
    apply_app(engine, define(item=[TITLE]), SYSTEM)
    result = apply_app(engine, define("2", item=[TITLE], supplier=[{"id": "name", "type": "text"}]), SYSTEM)
    assert [s.kind for s in result.plan.steps] == ["create_table"]
    assert "name" in columns(engine, "shop__supplier")


def test_removed_field_is_retired_and_re_adding_it_brings_the_data_back(engine, tmp_path, db_url):
    v1 = define(item=[TITLE, QTY])
    apply_app(engine, v1, SYSTEM)
    insert(engine, v1, "item", [{"title": "a", "qty": 7}, {"title": "b", "qty": None}])

    retired = apply_app(engine, define("2", item=[TITLE]), SYSTEM)
    assert [(s.kind, s.description) for s in retired.plan.steps] == [
        ("retire_field", "item.qty: retire field (column and data kept)")]
    assert [r["qty"] for r in raw_rows(engine)] == [7, None]   # column and data still there
    with engine.connect() as conn:
        _v, current = versions.latest(conn, APP, REGISTRIES)
    assert "qty" not in app_tables(current)[1]["item"].c      # hidden from what the server uses

    restored = apply_app(engine, define("3", item=[TITLE, QTY]), SYSTEM)
    assert [s.kind for s in restored.plan.steps] == ["restore_field"]
    assert [r["qty"] for r in raw_rows(engine)] == [7, None]
    with engine.connect() as conn:
        _v, current = versions.latest(conn, APP, REGISTRIES)
    assert current.entities["item"].field("qty").type == "integer"


def test_retired_entity_keeps_its_table_and_rows(engine):
    v1 = define(item=[TITLE], supplier=[{"id": "name", "type": "text"}])
    apply_app(engine, v1, SYSTEM)
    insert(engine, v1, "supplier", [{"name": "acme"}])
    result = apply_app(engine, define("2", item=[TITLE]), SYSTEM)
    assert [s.kind for s in result.plan.steps] == ["retire_entity"]
    assert [r["name"] for r in raw_rows(engine, "shop__supplier")] == ["acme"]


# --- type changes ----------------------------------------------------------------------------------

def test_integer_to_decimal_converts_every_value_and_keeps_the_old_column(engine):
    v1 = define(item=[TITLE, QTY])
    apply_app(engine, v1, SYSTEM)
    insert(engine, v1, "item", [{"title": "a", "qty": 3}, {"title": "b", "qty": None}, {"title": "c", "qty": -40}])
    result = apply_app(engine, define("2", item=[TITLE, {"id": "qty", "type": "decimal", "scale": 2}]), SYSTEM)
    assert [s.description for s in result.plan.steps] == [
        "item.qty: convert integer → decimal (2 values; old column kept as qty__integer_v2)"]
    rows = raw_rows(engine)
    assert [r["qty"] for r in rows] == [Decimal("3.00"), None, Decimal("-40.00")]
    assert [r["qty__integer_v2"] for r in rows] == [3, None, -40]


def test_text_to_integer_converts_when_every_value_parses(engine):
    code = {"id": "code", "type": "text"}
    v1 = define(item=[TITLE, code])
    apply_app(engine, v1, SYSTEM)
    insert(engine, v1, "item", [{"title": "a", "code": "12"}, {"title": "b", "code": " 007 "}])
    apply_app(engine, define("2", item=[TITLE, {"id": "code", "type": "integer"}]), SYSTEM)
    rows = raw_rows(engine)
    assert [r["code"] for r in rows] == [12, 7]
    assert [r["code__text_v2"] for r in rows] == ["12", " 007 "]


def test_unconvertible_values_refuse_the_whole_version_and_change_nothing(engine):
    price = {"id": "price", "type": "money"}
    v1 = define(item=[TITLE, price])
    apply_app(engine, v1, SYSTEM)
    insert(engine, v1, "item", [{"title": "a", "price": Decimal("12.50")}, {"title": "b", "price": None},
                                {"title": "c", "price": Decimal(3)}])
    before_rows, before_columns = raw_rows(engine), columns(engine)
    v2 = define("2", item=[TITLE, {"id": "price", "type": "text", "max_length": 4},
                           {"id": "note", "type": "text"}])
    with pytest.raises(SyncRefused) as refused:
        apply_app(engine, v2, SYSTEM)
    assert refused.value.refusals == [("item.price: cannot change type money → text: 1 of 3 records cannot "
                                       "be converted (ids 1): At most 4 characters.")]
    # Nothing changed: no version, no column (not even the unrelated new one), same values, no event.
    assert stored_versions(engine) == [1]
    assert columns(engine) == before_columns
    assert raw_rows(engine) == before_rows
    assert [e.action for e in events(engine)] == ["app.apply"]


def test_a_type_that_cannot_take_over_the_old_one_is_refused(engine):
    v1 = define(item=[TITLE, {"id": "due", "type": "date"}])
    apply_app(engine, v1, SYSTEM)
    with pytest.raises(SyncRefused) as refused:
        apply_app(engine, define("2", item=[TITLE, {"id": "due", "type": "integer"}]), SYSTEM)
    message = refused.value.refusals[0]
    assert message.startswith("item.due: cannot change type date → integer: integer cannot take over date values")
    assert stored_versions(engine) == [1]


def test_money_to_date_refusal_names_the_records_and_the_reason(engine):
    target = {"id": "target", "type": "text"}
    v1 = define(item=[target])
    apply_app(engine, v1, SYSTEM)
    insert(engine, v1, "item", [{"target": "2025-10-18"}, {"target": "soon"}, {"target": "2025-13-01"}])
    with pytest.raises(SyncRefused) as refused:
        apply_app(engine, define("2", item=[{"id": "target", "type": "date"}]), SYSTEM)
    assert str(refused.value) == ("item.target: cannot change type text → date: 2 of 3 records cannot be "
                                  "converted (ids 2, 3): Must be a date (YYYY-MM-DD).")


def test_removing_a_select_option_in_use_is_refused_and_an_unused_one_is_not(engine):
    def status(*options):
        return {"id": "status", "type": "select", "options": [{"id": o} for o in options]}

    v1 = define(item=[status("open", "done", "spare")])
    apply_app(engine, v1, SYSTEM)
    insert(engine, v1, "item", [{"status": "open"}, {"status": "done"}])
    with pytest.raises(SyncRefused) as refused:
        apply_app(engine, define("2", item=[status("open")]), SYSTEM)
    assert "item.status: cannot remove options done, spare: 1 of 2 records do not fit (ids 2)" in str(refused.value)
    assert apply_app(engine, define("2", item=[status("open", "done")]), SYSTEM).version == 2


def test_lowering_max_length_below_stored_text_is_refused(engine):
    v1 = define(item=[TITLE])
    apply_app(engine, v1, SYSTEM)
    insert(engine, v1, "item", [{"title": "short"}, {"title": "x" * 30}])
    with pytest.raises(SyncRefused) as refused:
        apply_app(engine, define("2", item=[{"id": "title", "type": "text", "max_length": 10}]), SYSTEM)
    assert "item.title: cannot lower max_length to 10: 1 of 2 records do not fit (ids 2)" in str(refused.value)
    assert apply_app(engine, define("2", item=[{"id": "title", "type": "text", "max_length": 30}]), SYSTEM).changed


def test_a_longer_max_length_widens_the_column_so_long_values_can_be_written(engine):
    v1 = define(item=[{"id": "title", "type": "text", "max_length": 5}])
    apply_app(engine, v1, SYSTEM)
    v2 = define("2", item=[{"id": "title", "type": "text", "max_length": 50}])
    apply_app(engine, v2, SYSTEM)
    insert(engine, v2, "item", [{"title": "x" * 50}])   # PostgreSQL would refuse this in VARCHAR(5)
    assert raw_rows(engine)[0]["title"] == "x" * 50


def test_schema_changes_roll_back_with_the_transaction(engine):
    """storage.db makes SQLite DDL transactional: a failure after the sync leaves no table behind."""
    create_system_tables(engine)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        sync.apply(conn, sync.plan(conn, None, define(item=[TITLE, OWNER])))
        assert sa.inspect(conn).has_table(TABLE)
        raise RuntimeError("something after the sync failed")
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table(TABLE)


# --- versions, diff, rollback, audit ---------------------------------------------------------------

def test_applying_the_same_definition_twice_stores_one_version(engine):
    assert apply_app(engine, define(item=[TITLE]), SYSTEM).changed
    again = apply_app(engine, define(item=[TITLE]), SYSTEM)
    assert (again.changed, again.version, again.plan.steps) == (False, 1, [])
    assert "already at version 1" in again.message
    assert stored_versions(engine) == [1]
    assert len(events(engine, "app.apply")) == 1


def test_every_apply_writes_an_audit_event_with_the_user(engine):
    admin = add_user(engine, "alice")
    apply_app(engine, define(item=[TITLE]), admin, note="first")
    apply_app(engine, define("2", item=[TITLE, QTY]), admin)
    applied = events(engine, "app.apply")
    assert [(e.user_id, e.app, e.detail["version"], e.detail["by"]) for e in applied] == [
        (admin.user_id, APP, 1, "alice"), (admin.user_id, APP, 2, "alice")]
    assert applied[1].detail["steps"] == ["item.qty: add column (integer)"]
    with engine.connect() as conn:
        assert applied[1].detail["checksum"] == conn.execute(
            sa.select(app_versions.c.checksum).where(app_versions.c.version == 2)).scalar()


def test_diff_shows_steps_and_changes_without_writing(engine):
    apply_app(engine, define(item=[TITLE]), SYSTEM)
    result = diff_app(engine, define("2", item=[TITLE, QTY]))
    assert result.current_version == 1
    assert result.plan.descriptions() == ["item.qty: add column (integer)"]
    assert 'app.json: changed /version: "1" → "2"' in result.changes
    assert 'entities/item.json: added /fields/1 = {"id": "qty", "type": "integer"}' in result.changes
    assert "qty" not in columns(engine)
    assert stored_versions(engine) == [1]


def test_diff_of_a_new_app_on_an_empty_database_writes_nothing(engine):
    result = diff_app(engine, define(item=[TITLE]))
    assert result.current_version is None
    assert [s.kind for s in result.plan.steps] == ["create_table"]
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == []


def test_diff_reports_refusals(engine):
    v1 = define(item=[{"id": "code", "type": "text"}])
    apply_app(engine, v1, SYSTEM)
    insert(engine, v1, "item", [{"code": "x"}])
    result = diff_app(engine, define("2", item=[{"id": "code", "type": "integer"}]))
    assert result.plan.refusals and "Must be a whole number." in result.plan.refusals[0]


def test_rollback_reapplies_an_old_version_as_a_new_one(engine):
    admin = add_user(engine, "bob")
    v1 = define(item=[TITLE, QTY])
    apply_app(engine, v1, admin)
    insert(engine, v1, "item", [{"title": "a", "qty": 5}])
    apply_app(engine, define("2", item=[TITLE, {"id": "note", "type": "text"}]), admin)

    result = rollback_app(engine, APP, 1, admin, REGISTRIES)
    assert (result.version, result.changed) == (3, True)
    assert sorted(s.kind for s in result.plan.steps) == ["restore_field", "retire_field"]
    assert raw_rows(engine)[0]["qty"] == 5
    with engine.connect() as conn:
        history = versions.history(conn, APP)
        assert versions.latest(conn, APP, REGISTRIES)[1].checksum == v1.checksum
    assert [(h["version"], h["note"], h["created_by"]) for h in history] == [
        (1, "", "bob"), (2, "", "bob"), (3, "rollback to v1", "bob")]
    [event] = events(engine, "app.rollback")
    assert (event.user_id, event.detail["version"], event.detail["rollback_to"]) == (admin.user_id, 3, 1)


def test_rollback_needing_an_impossible_conversion_is_refused_the_same_way(engine):
    v1 = define(item=[{"id": "amount", "type": "decimal"}])
    apply_app(engine, v1, SYSTEM)
    v2 = define("2", item=[{"id": "amount", "type": "integer"}])
    apply_app(engine, v2, SYSTEM)
    insert(engine, v2, "item", [{"amount": 10**17}])   # fits an integer, not a 15-digit decimal
    with pytest.raises(SyncRefused) as refused:
        rollback_app(engine, APP, 1, SYSTEM, REGISTRIES)
    assert "item.amount: cannot change type integer → decimal: 1 of 1 record cannot be converted" in str(refused.value)
    assert stored_versions(engine) == [1, 2]
    assert events(engine, "app.rollback") == []


def test_rollback_to_an_unknown_version_says_which_exist(engine):
    from keel.errors import NotFound

    apply_app(engine, define(item=[TITLE]), SYSTEM)
    with pytest.raises(NotFound, match="app 'shop' has no version 9 \\(versions 1 to 1 are stored\\)"):
        rollback_app(engine, APP, 9, SYSTEM, REGISTRIES)


# --- a running server, and concurrency ----------------------------------------------------------------

def test_a_running_server_picks_up_a_new_version_on_refresh(tmp_path, db_url):
    flask_app = make_app(tmp_path, db_url)
    runtime = flask_app.extensions["keel"]
    try:
        apply_app(runtime.engine, define(item=[TITLE]), SYSTEM)
        runtime.refresh()
        assert runtime.get(APP).version == 1
        apply_app(runtime.engine, define("2", item=[TITLE, QTY]), SYSTEM)
        runtime.refresh()
        built = runtime.get(APP)
        assert built.version == 2
        assert built.definition.entities["item"].field("qty") is not None
        assert "qty" in built.table("item").c
    finally:
        runtime.engine.dispose()


def test_concurrent_applies_end_with_consistent_versions(engine):
    apply_app(engine, define(item=[TITLE]), SYSTEM)
    candidates = [define("2a", item=[TITLE, QTY]), define("2b", item=[TITLE, {"id": "note", "type": "text"}]),
                  define("2b", item=[TITLE, {"id": "note", "type": "text"}])]
    errors, barrier = [], threading.Barrier(len(candidates))

    def run(app_def):
        try:
            barrier.wait()
            apply_app(engine, app_def, SYSTEM)
        except Exception as e:  # any error fails the test below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(d,)) for d in candidates]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # Two distinct definitions → two new versions; the identical third one is either "already at"
    # the version just stored or a new version after the other one: never an error, never a gap.
    numbers = stored_versions(engine)
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) in (3, 4)
    assert {"qty", "note"} <= columns(engine)
    with engine.connect() as conn:
        labels = conn.execute(sa.select(app_versions.c.label).order_by(app_versions.c.version)).scalars().all()
    assert labels[0] == "1" and set(labels[1:]) == {"2a", "2b"}


def test_a_retired_field_can_come_back_with_a_compatible_new_type(engine):
    v1 = define(item=[TITLE, QTY])
    apply_app(engine, v1, SYSTEM)
    insert(engine, v1, "item", [{"title": "a", "qty": 4}])
    apply_app(engine, define("2", item=[TITLE]), SYSTEM)
    # The type it had is found in the stored versions: integer, which decimal takes over.
    result = apply_app(engine, define("3", item=[TITLE, {"id": "qty", "type": "decimal", "scale": 1}]), SYSTEM)
    assert [s.description for s in result.plan.steps] == [
        "item.qty: restore retired field and convert integer → decimal (1 values; old column kept as qty__integer_v3)"]
    row = raw_rows(engine)[0]
    assert (row["qty"], row["qty__integer_v3"]) == (Decimal("4.0"), 4)


def test_a_column_no_version_explains_is_restored_only_if_its_values_fit(engine):
    """A database that outlived its version table: the first apply finds the tables already there."""
    create_system_tables(engine)
    status = {"id": "status", "type": "select", "options": [{"id": "open"}, {"id": "done"}]}
    old = define(item=[TITLE, status])
    with engine.begin() as conn:
        sync.apply(conn, sync.plan(conn, None, old))
    insert(engine, old, "item", [{"title": "a", "status": "open"}, {"title": "b", "status": "done"}])

    narrower = {"id": "status", "type": "select", "options": [{"id": "open"}]}
    with pytest.raises(SyncRefused, match="item.status: cannot restore the existing column as select: "
                                          "1 of 2 records do not fit \\(ids 2\\)"):
        apply_app(engine, define(item=[TITLE, narrower]), SYSTEM)
    result = apply_app(engine, define(item=[TITLE, status]), SYSTEM)
    assert [s.kind for s in result.plan.steps] == ["restore_field", "restore_field"]
    assert [r["status"] for r in raw_rows(engine)] == ["open", "done"]


def test_removing_a_multi_select_option_in_use_is_refused(engine):
    def tags(*options):
        return {"id": "tags", "type": "multi_select", "options": [{"id": o} for o in options]}

    v1 = define(item=[tags("red", "blue")])
    apply_app(engine, v1, SYSTEM)
    insert(engine, v1, "item", [{"tags": ["red"]}, {"tags": ["red", "blue"]}])
    with pytest.raises(SyncRefused, match="item.tags: cannot remove option blue: 1 of 2 records do not fit"):
        apply_app(engine, define("2", item=[tags("red")]), SYSTEM)


def test_fewer_decimal_places_are_refused_when_stored_numbers_need_them(engine):
    v1 = define(item=[{"id": "rate", "type": "decimal", "scale": 4}])
    apply_app(engine, v1, SYSTEM)
    insert(engine, v1, "item", [{"rate": Decimal("1.5")}, {"rate": Decimal("0.1234")}])
    with pytest.raises(SyncRefused, match="item.rate: cannot change precision/scale to 15/2: 1 of 2 records "
                                          "do not fit \\(ids 2\\): At most 2 digits after the decimal point."):
        apply_app(engine, define("2", item=[{"id": "rate", "type": "decimal", "scale": 2}]), SYSTEM)
    result = apply_app(engine, define("2", item=[{"id": "rate", "type": "decimal", "scale": 6}]), SYSTEM)
    assert result.changed
    assert [r["rate"] for r in raw_rows(engine)] == [Decimal("1.5"), Decimal("0.1234")]
