"""The one write path: every write stores row + version + audit event in one transaction, validation
collects every problem and changes nothing, stale writes are conflicts, money stays exact."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from helpers_records import drop_failure, fail_inserts_into, make_world
from keel.actor import SYSTEM
from keel.errors import Conflict, FieldErrors, NotFound, PermissionDenied
from keel.storage import query, records
from keel.storage.system import audit_events, record_versions, users


@pytest.fixture
def world(db_url):
    w = make_world(db_url)
    yield w
    w.engine.dispose()


def create(w, actor, **values):
    with w.engine.begin() as c:
        return records.create(c, w.built, "account", values, w[actor] if isinstance(actor, str) else actor)


def update(w, actor, rid, version, **values):
    with w.engine.begin() as c:
        return records.update(c, w.built, "account", rid, values, w[actor], version)


def versions_of(w, rid):
    with w.engine.connect() as c:
        return c.execute(sa.select(record_versions).where(record_versions.c.record_id == rid)
                         .order_by(record_versions.c.version)).all()


def events_of(w, rid):
    with w.engine.connect() as c:
        return c.execute(sa.select(audit_events).where(audit_events.c.record_id == rid)
                         .order_by(audit_events.c.id)).all()


def messages(err: FieldErrors) -> dict[str, list[str]]:
    return err.rendered()


# ---------------------------------------------------------------- the happy paths store all three

def test_create_stores_row_version_and_audit_event(world):
    alice = world["alice"]
    rec = create(world, "alice", name="Acme", owner=alice.user_id, budget="1200.50", cost="200.25",
                 tags=["b", "a", "b"], started="2025-10-18")
    assert rec["row_version"] == 1 and rec["created_by"] == alice.user_id == rec["updated_by"]
    assert rec["budget"] == "1200.50" and rec["margin"] == "1000.25"   # computed on create
    assert rec["level"] == "bronze"                                      # default applied
    assert rec["tags"] == ["b", "a"] and rec["started"] == "2025-10-18"
    assert "secret" not in rec                                           # alice may not read it
    [v] = versions_of(world, rec["id"])
    assert (v.version, v.action, v.user_id, v.app, v.entity) == (1, "create", alice.user_id, "crm", "account")
    assert v.changes["budget"] == [None, "1200.50"] and v.changes["margin"] == [None, "1000.25"]
    assert "rating" not in v.changes  # only fields that got a value
    [e] = events_of(world, rec["id"])
    assert (e.action, e.user_id, e.app, e.entity) == ("record.create", alice.user_id, "crm", "account")
    assert e.detail == {"by": "alice", "version": 1}


def test_update_stores_only_changed_fields_and_recomputes(world):
    rec = create(world, "alice", name="Acme", owner=world["alice"].user_id, budget="100", cost="40")
    out = update(world, "alice", rec["id"], 1, budget="150.00", cost="40", name="Acme")
    assert out["row_version"] == 2 and out["margin"] == "110.00"
    v = versions_of(world, rec["id"])[-1]
    assert (v.version, v.action) == (2, "update")
    assert v.changes == {"budget": ["100.00", "150.00"], "margin": ["60.00", "110.00"]}
    assert [e.action for e in events_of(world, rec["id"])] == ["record.create", "record.update"]


def test_update_that_changes_nothing_writes_nothing(world):
    rec = create(world, "alice", name="Acme", owner=world["alice"].user_id, budget="100")
    before = world.snapshot()
    out = update(world, "alice", rec["id"], 1, name="Acme", budget="100.00", region=None)
    assert out["row_version"] == 1
    assert world.snapshot() == before


def test_computed_value_that_cannot_be_evaluated_is_stored_empty(world):
    rec = create(world, "alice", name="Acme", owner=world["alice"].user_id, budget="100")
    assert rec["margin"] is None  # budget - None fails: stored as None, the write goes through
    out = update(world, "alice", rec["id"], 1, cost="30")
    assert out["margin"] == "70.00"


def test_delete_is_soft_and_restore_brings_it_back(world):
    rec = create(world, "alice", name="Acme", owner=world["alice"].user_id)
    with world.engine.begin() as c:
        records.delete(c, world.built, "account", rec["id"], world["alice"], expected_version=1)
    with world.engine.connect() as c, pytest.raises(NotFound):
        query.get_record(c, world.built, "account", rec["id"], world["alice"])
    assert world.count("account") == 1  # the row is kept
    with world.engine.begin() as c:
        back = records.restore(c, world.built, "account", rec["id"], world["alice"])
    assert back["row_version"] == 3 and back["name"] == "Acme" and "deleted_at" not in back
    assert [(v.version, v.action) for v in versions_of(world, rec["id"])] == \
        [(1, "create"), (2, "delete"), (3, "restore")]
    assert [e.action for e in events_of(world, rec["id"])] == ["record.create", "record.delete", "record.restore"]


def test_restore_refuses_a_unique_value_taken_meanwhile(world):
    rec = create(world, "alice", name="Acme", owner=world["alice"].user_id)
    with world.engine.begin() as c:
        records.delete(c, world.built, "account", rec["id"], world["alice"])
    create(world, "alice", name="Acme", owner=world["alice"].user_id)
    before = world.snapshot()
    with world.engine.begin() as c, pytest.raises(FieldErrors) as err:
        records.restore(c, world.built, "account", rec["id"], world["alice"])
    assert messages(err.value) == {"name": ["Must be unique."]}
    assert world.snapshot() == before


def test_restore_needs_delete_scope(world):
    rec = create(world, "carol", name="Team", owner=world["alice"].user_id)
    with world.engine.begin() as c:
        records.delete(c, world.built, "account", rec["id"], world["alice"])
    # carol (lead: read team, no delete) sees the deleted row's owner in her team but may not restore
    with world.engine.begin() as c, pytest.raises(PermissionDenied):
        records.restore(c, world.built, "account", rec["id"], world["carol"])
    with world.engine.begin() as c, pytest.raises(NotFound):
        records.restore(c, world.built, "account", rec["id"], world["bob"])


# ---------------------------------------------------------------- one transaction, or nothing

@pytest.mark.parametrize("step", ["create", "update", "delete"])
def test_a_failure_at_the_last_step_leaves_nothing_behind(world, step):
    rec = create(world, "alice", name="Acme", owner=world["alice"].user_id, budget="1")
    before = world.snapshot()
    fail_inserts_into(world.engine, "keel_audit_events")  # the audit event is written last
    with pytest.raises(sa.exc.DBAPIError), world.engine.begin() as c:
        if step == "create":
            records.create(c, world.built, "account", {"name": "Other"}, world["alice"])
        elif step == "update":
            records.update(c, world.built, "account", rec["id"], {"budget": "2"}, world["alice"], 1)
        else:
            records.delete(c, world.built, "account", rec["id"], world["alice"], 1)
    drop_failure(world.engine, "keel_audit_events")
    assert world.snapshot() == before


def test_a_unique_violation_found_by_the_database_is_a_field_error_and_rolls_back(world):
    rec = create(world, "alice", name="Acme", owner=world["alice"].user_id)
    with world.engine.begin() as c:
        records.delete(c, world.built, "account", rec["id"], world["alice"])
        # An index that also covers deleted rows, which the write path's own check ignores.
        c.exec_driver_sql("CREATE UNIQUE INDEX ux_account_name ON crm__account (name)")
    before = world.snapshot()
    with pytest.raises(FieldErrors) as err, world.engine.begin() as c:
        records.create(c, world.built, "account", {"name": "Acme"}, world["alice"])
    assert "_record" in err.value.errors
    assert world.snapshot() == before


# ---------------------------------------------------------------- optimistic concurrency

def test_stale_update_is_a_conflict_and_changes_nothing(world):
    rec = create(world, "alice", name="Acme", owner=world["alice"].user_id, budget="1")
    update(world, "alice", rec["id"], 1, budget="2")
    before = world.snapshot()
    with pytest.raises(Conflict) as err:
        update(world, "alice", rec["id"], 1, budget="3")
    assert "current version is 2" in str(err.value) and err.value.current_version == 2
    assert world.snapshot() == before
    with pytest.raises(Conflict), world.engine.begin() as c:
        records.delete(c, world.built, "account", rec["id"], world["alice"], expected_version=1)
    assert world.snapshot() == before


def test_update_without_a_version_is_refused(world):
    rec = create(world, "alice", name="Acme", owner=world["alice"].user_id)
    with pytest.raises(FieldErrors) as err:
        update(world, "alice", rec["id"], None, budget="3")
    assert "row_version" in err.value.errors


# ---------------------------------------------------------------- 422: every problem, nothing written

def test_every_problem_is_reported_at_once_and_nothing_is_written(world):
    before = world.snapshot()
    with pytest.raises(FieldErrors) as err:
        create(world, "alice", budget="12.345", rating="seven", region="east", started="18/10/2025",
               notes="x" * 100_001, owner=999_999, colour="red")
    got = messages(err.value)
    assert got["name"] == ["This field is required."]
    assert got["budget"] == ["At most 2 digits after the decimal point."]
    assert got["rating"] == ["Must be a whole number."]
    assert got["region"] == ["'east' is not one of the options."]
    assert got["started"] == ["Must be a date (YYYY-MM-DD)."]
    assert got["notes"] == ["At most 100000 characters."]
    assert got["owner"] == ["No such active user."]
    assert got["colour"] == ["Unknown field."]
    assert world.snapshot() == before


def test_oversized_and_out_of_range_values(world):
    with pytest.raises(FieldErrors) as err:
        create(world, "alice", name="n" * 101, rating=11, budget="1e20")
    got = messages(err.value)
    assert got == {"name": ["At most 100 characters."], "rating": ["Must be at most 10."],
                   "budget": ["The number is too large."]}


@pytest.mark.parametrize("key, value, message", [
    ("id", 5, "This field is set by the system."),
    ("row_version", 9, "This field is set by the system."),
    ("created_by", 1, "This field is set by the system."),
    ("updated_at", "2020-01-01T00:00:00", "This field is set by the system."),
    ("deleted_at", None, "This field is set by the system."),
    ("margin", "1", "This field is read-only."),       # computed
    ("approved", True, "This field is read-only."),    # read_only: only the platform sets it
    ("bonus", "1", "You may not change this field."),  # write_roles: manager
    ("secret", "x", "Unknown field."),                 # read_roles: hr — not even admitted to exist
])
def test_mass_assignment_is_refused_on_create_and_update(world, key, value, message):
    rec = create(world, "alice", name="Acme", owner=world["alice"].user_id)
    before = world.snapshot()
    with pytest.raises(FieldErrors) as err:
        create(world, "alice", name="Other", **{key: value})
    assert messages(err.value) == {key: [message]}
    with pytest.raises(FieldErrors) as err:
        update(world, "alice", rec["id"], 1, **{key: value})
    assert messages(err.value) == {key: [message]}
    assert world.snapshot() == before


def test_role_restricted_and_read_only_fields_for_those_allowed(world):
    rec = create(world, "dave", name="Big", owner=world["dave"].user_id, bonus="500")
    assert rec["bonus"] == "500.00"
    with world.engine.begin() as c:  # a connector or job, acting as the platform, fills read-only fields
        out = records.update(c, world.built, "account", rec["id"], {"approved": True}, SYSTEM, 1)
    assert out["approved"] is True and out["updated_by"] is None
    hank = create(world, "root", name="HR", secret="s1")
    assert hank["secret"] == "s1"


def test_required_on_update_only_when_cleared(world):
    rec = create(world, "alice", name="Acme", owner=world["alice"].user_id)
    assert update(world, "alice", rec["id"], 1, budget="5")["budget"] == "5.00"
    with pytest.raises(FieldErrors) as err:
        update(world, "alice", rec["id"], 2, name="  ")
    assert messages(err.value) == {"name": ["This field is required."]}


def test_unique_ignores_deleted_rows_and_the_record_itself(world):
    rec = create(world, "alice", name="Acme", owner=world["alice"].user_id)
    with pytest.raises(FieldErrors) as err:
        create(world, "bob", name="Acme")
    assert messages(err.value) == {"name": ["Must be unique."]}
    update(world, "alice", rec["id"], 1, name="Acme", budget="1")  # its own value is not a duplicate
    with world.engine.begin() as c:
        records.delete(c, world.built, "account", rec["id"], world["alice"])
    assert create(world, "bob", name="Acme")["name"] == "Acme"


def test_links_must_point_at_live_records_the_writer_can_read(world):
    mine = create(world, "alice", name="Mine", owner=world["alice"].user_id)
    franks = create(world, "frank", name="Franks", owner=world["frank"].user_id)
    gone = create(world, "alice", name="Gone", owner=world["alice"].user_id)
    with world.engine.begin() as c:
        records.delete(c, world.built, "account", gone["id"], world["alice"])
    for target in (franks["id"], gone["id"], 10_000):
        with pytest.raises(FieldErrors) as err:
            create(world, "alice", name=f"Child {target}", parent=target)
        assert messages(err.value) == {"parent": ["The linked record does not exist."]}
    assert create(world, "alice", name="Child", parent=mine["id"], owner=world["alice"].user_id)["parent"] == mine["id"]
    with world.engine.begin() as c:
        c.execute(users.update().where(users.c.id == world["bob"].user_id).values(active=False))
    with pytest.raises(FieldErrors) as err:
        create(world, "alice", name="Bobs", owner=world["bob"].user_id)
    assert messages(err.value) == {"owner": ["No such active user."]}


# ---------------------------------------------------------------- permissions come first

def test_writes_are_checked_before_anything_is_written(world):
    rec = create(world, "alice", name="Acme", owner=world["alice"].user_id)
    before = world.snapshot()
    with pytest.raises(PermissionDenied):
        create(world, "gus", name="Nope")
    with pytest.raises(PermissionDenied):   # erin may read everything but update nothing
        update(world, "erin", rec["id"], 1, budget="1")
    with pytest.raises(NotFound):           # bob cannot even see it: not found, not forbidden
        update(world, "bob", rec["id"], 1, budget="1")
    with pytest.raises(NotFound):
        update(world, "bob", rec["id"], 1, nonsense="x")  # permission before validation
    with pytest.raises(NotFound), world.engine.begin() as c:
        records.delete(c, world.built, "account", rec["id"], world["bob"])
    with pytest.raises(PermissionDenied), world.engine.begin() as c:
        records.delete(c, world.built, "account", rec["id"], world["carol"])
    assert world.snapshot() == before


def test_create_only_actor_gets_back_only_the_system_columns(world):
    # frank (rep, read own) creates an account owned by alice: he may create it but not read it.
    rec = create(world, "frank", name="For alice", owner=world["alice"].user_id, budget="9")
    assert set(rec) == {"id", "row_version", "created_at", "created_by", "updated_at", "updated_by"}


# ---------------------------------------------------------------- exact money

def test_money_round_trips_exactly(world):
    alice = world["alice"]
    a = create(world, "alice", name="A", owner=alice.user_id, budget="800000.01", cost=0.1)
    b = create(world, "alice", name="B", owner=alice.user_id, budget=800000.01, cost="0.2")
    assert a["budget"] == b["budget"] == "800000.01"
    assert a["margin"] == "799999.91" and b["margin"] == "799999.81"
    with world.engine.connect() as c:
        total = query.aggregate(c, world.built, "account", alice, None, "sum", "cost")
        assert total == [{"group": None, "value": "0.30"}]  # 0.1 + 0.2, not 0.30000000000000004
        got = query.get_record(c, world.built, "account", a["id"], alice)
    assert got["budget"] == "800000.01" and got["cost"] == "0.10"
    big = create(world, "alice", name="C", owner=alice.user_id, budget="9999999999999.99")
    assert big["budget"] == "9999999999999.99"


# ---------------------------------------------------------------- concurrent writers

def run_at_once(n, work):
    import threading

    barrier, results = threading.Barrier(n), []

    def one(i):
        barrier.wait()
        try:
            results.append(work(i))
        except Exception as e:  # - collected; the test asserts each one's type
            results.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_simultaneous_updates_of_one_version_let_exactly_one_win(world):
    rec = create(world, "alice", name="Acme", owner=world["alice"].user_id)
    results = run_at_once(5, lambda i: update(world, "alice", rec["id"], 1, rating=i))
    assert sum(isinstance(r, dict) for r in results) == 1
    assert all(isinstance(r, (dict, Conflict)) for r in results), results
    assert [v.version for v in versions_of(world, rec["id"])] == [1, 2]


def test_simultaneous_creates_of_a_unique_value_let_exactly_one_in(world):
    results = run_at_once(5, lambda i: create(world, "alice", name="Same", owner=world["alice"].user_id))
    assert sum(isinstance(r, dict) for r in results) == 1
    assert all(isinstance(r, (dict, FieldErrors)) for r in results), results
    assert world.count("account") == 1
