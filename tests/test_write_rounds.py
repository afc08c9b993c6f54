"""The round trips of the hot write paths: a workflow transition, the engine's writes to a record and an
inbox message ask the database only what they need — and still write everything they must (the version
row and audit event of every record write, every inbox message, the permission checks first)."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from helpers_notify import add_people, apply_bundle, bundle, engine_for
from helpers_records import captured_sql, make_world
from helpers_registries import REGISTRIES
from keel.actor import SYSTEM, Actor
from keel.errors import NotFound, PermissionDenied
from keel.notify import inbox
from keel.storage import records
from keel.storage.notify_tables import inbox as inbox_table
from keel.storage.system import audit_events, record_versions

# ---- records.update_current: the engine's writes to a record ---------------------------------------


@pytest.fixture
def world(db_url):
    w = make_world(db_url)
    yield w
    w.engine.dispose()


def _account(w, **values) -> dict:
    with w.engine.begin() as c:
        return records.create(c, w.built, "account", {"name": "Acme", **values}, w["alice"])


def test_update_current_writes_the_current_version_with_its_version_row_and_event_in_five_statements(world):
    rec = _account(world, owner=world["alice"].user_id)
    with world.engine.begin() as c:
        records.update(c, world.built, "account", rec["id"], {"rating": 3}, world["alice"], 1)
    with world.engine.begin() as c, captured_sql(world.engine) as sql:
        version = records.update_current(c, world.built, "account", rec["id"], {"approved": True}, SYSTEM)
    assert version == 3  # no version given: the one the row had under its lock (2), plus one
    # one read (row, lock and permission together), the write, its version row, its audit event and the
    # owner's yellow mark (someone else changed alice's record), each one statement
    assert [s.split()[0] for s in sql] == ["SELECT", "UPDATE", "INSERT", "INSERT", "INSERT"]
    with world.engine.connect() as c:
        v = c.execute(sa.select(record_versions).where(record_versions.c.record_id == rec["id"],
                                                       record_versions.c.version == 3)).one()
        events = c.execute(sa.select(audit_events.c.action, audit_events.c.detail).where(
            audit_events.c.record_id == rec["id"]).order_by(audit_events.c.id)).all()
        row = c.execute(sa.select(world.built.table("account")).where(
            world.built.table("account").c.id == rec["id"])).one()
    assert (v.action, v.user_id, v.changes) == ("update", None, {"approved": [None, True]})
    assert [e.action for e in events] == ["record.create", "record.update", "record.update"]
    assert events[-1].detail == {"by": "system", "version": 3}
    assert row.approved is True and row.row_version == 3 and row.rating == 3


def test_update_current_that_changes_nothing_writes_nothing(world):
    rec = _account(world, owner=world["alice"].user_id, rating=4)
    before = world.snapshot()
    with world.engine.begin() as c:
        assert records.update_current(c, world.built, "account", rec["id"], {"rating": 4}, SYSTEM) is None
    assert world.snapshot() == before


def test_update_current_checks_the_actor_before_writing(world):
    """Not found for a row the actor cannot read; forbidden for one it can read but not change —
    including a row whose owner is empty, where the scope condition is NULL rather than false."""
    alice, bob, erin = world["alice"], world["bob"], world["erin"]
    owned = _account(world, owner=alice.user_id)
    with world.engine.begin() as c:  # created by the system, nobody owns it
        ownerless = records.create(c, world.built, "account", {"name": "Nobody's"}, SYSTEM)
    reads_all_updates_own = Actor(bob.user_id, "bob", frozenset({"rep", "analyst"}), False, bob.department_id)
    before = world.snapshot()
    cases = [(bob, owned, NotFound), (erin, owned, PermissionDenied), (reads_all_updates_own, owned, PermissionDenied),
             (reads_all_updates_own, ownerless, PermissionDenied)]
    for actor, rec, error in cases:
        with pytest.raises(error), world.engine.begin() as c:
            records.update_current(c, world.built, "account", rec["id"], {"rating": 1}, actor)
        with pytest.raises(error), world.engine.begin() as c:  # the write path users take answers alike
            records.update(c, world.built, "account", rec["id"], {"rating": 1}, actor, 1)
    assert world.snapshot() == before
    with world.engine.begin() as c:
        records.delete(c, world.built, "account", owned["id"], alice)
    with pytest.raises(NotFound), world.engine.begin() as c:  # a deleted record is not written
        records.update_current(c, world.built, "account", owned["id"], {"rating": 1}, SYSTEM)


# ---- inbox: one statement for every recipient --------------------------------------------------------

def test_a_message_to_many_is_one_insert_and_each_id_is_its_recipients(db_url):
    engine = engine_for(db_url)
    try:
        apply_bundle(engine, bundle())
        ids = add_people(engine, ("amy", {}), ("bo", {}), ("cy", {}), ("di", {}))
        order = [ids["di"], ids["amy"], ids["cy"], ids["bo"]]
        with engine.begin() as conn, captured_sql(engine) as sql:
            sent = inbox.send(conn, app="notes", template=None, recipients=order, context={}, link="/x",
                              actor=SYSTEM, subject={"zh": "你好", "en": "Hello"}, body={"zh": "正文", "en": "Body"}, registries=REGISTRIES)
        assert sum(s.startswith("INSERT INTO keel_inbox") for s in sql) == 1
        with engine.connect() as conn:
            owner = dict(conn.execute(sa.select(inbox_table.c.id, inbox_table.c.user_id)).all())
            event = conn.execute(sa.select(audit_events.c.detail).where(audit_events.c.action == "inbox.send")).one()
        assert [owner[i] for i in sent] == order  # ids come back in recipient order, each one its recipient's
        assert event.detail["recipients"] == order and event.detail["inbox_ids"] == sent
    finally:
        engine.dispose()


# ---- a workflow round: start, then a two-branch all-of approval ---------------------------------------

WF_BUNDLE = {
    "app.json": {"id": "rounds", "version": "1", "label": "Rounds", "roles": [{"id": "employee", "label": "Employee"}]},
    "entities/request.json": {"id": "request", "label": "Request", "fields": [
        {"id": "title", "type": "text", "required": True, "max_length": 200},
        {"id": "status", "type": "select", "read_only": True, "options": [
            {"id": s, "zh": s, "en": s} for s in ("pending", "returned", "approved", "rejected", "withdrawn")]}],
        "permissions": [{"role": "employee", "read": "own", "create": True, "update": "own"}]},
    "workflows/approval.json": {"id": "approval", "starts_on": {"entity": "request"}, "status_field": "status",
                                "steps": [{"id": "dual", "mode": "all", "approvers": [
                                    {"rule": "manager_of", "of": "submitter"},
                                    {"rule": "department", "code": "finance", "pick": "head"}]}]},
}
# Statements of one round (start, two approvals; BEGINs not counted) when this was last measured. More
# means a new round trip on the hottest path: check that it is needed (bench/bench_workflow.py).
# 44: each decision marks its approver's "待您审批" message done (one UPDATE per decision, issue 9).
ROUND_STATEMENTS = 44


def test_a_workflow_round_keeps_every_write_and_stays_within_its_statements(db_url):
    from keel.apply import apply_app
    from keel.auth.directory import add_department, add_user, get_actor, set_department_head
    from keel.definitions.loader import load_bundle
    from keel.runtime import Runtime, build
    from keel.storage.db import create_engine, create_system_tables
    from keel.storage.workflow_tables import wf_tasks
    from keel.workflow import engine as wf
    from keel.workflow import ensure_tables, notices

    notices.inbox(), notices.timers()
    engine = create_engine(db_url)
    try:
        create_system_tables(engine)
        ensure_tables(engine)
        app_def = load_bundle(WF_BUNDLE, REGISTRIES)
        apply_app(engine, app_def, SYSTEM)
        built = build(app_def, 1)
        runtime = Runtime(engine, REGISTRIES)
        with engine.begin() as conn:
            add_department(conn, "sales", "Sales", SYSTEM)
            add_department(conn, "finance", "Finance", SYSTEM)
            boss = add_user(conn, "boss", "Boss", SYSTEM, department_code="sales")
            head = add_user(conn, "head", "Head", SYSTEM, department_code="finance")
            rep = add_user(conn, "rep", "Rep", SYSTEM, roles=["employee"], department_code="sales",
                           manager_username="boss")
            set_department_head(conn, "finance", "head", SYSTEM)
            rep, boss, head = (get_actor(conn, u) for u in (rep, boss, head))

        def one_round() -> tuple[int, list[str]]:
            with engine.begin() as conn:  # no starting form: creating the record does not start it
                rid = records.create(conn, built, "request", {"title": "Laptop"}, SYSTEM)["id"]
            with captured_sql(engine) as sql:
                with engine.begin() as conn:
                    iid = wf.start(conn, built, "approval", rid, rep)
                with engine.connect() as conn:
                    task_of = dict(conn.execute(sa.select(wf_tasks.c.assignee_id, wf_tasks.c.id)
                                                .where(wf_tasks.c.instance_id == iid)).all())
                for approver in (boss, head):
                    with engine.begin() as conn:
                        outcome = wf.approve(conn, runtime, task_of[approver.user_id], approver)
            assert outcome["status"] == "approved"
            return rid, [s for s in sql if not s.startswith("BEGIN") and "wf_tasks.assignee_id, keel_wf_tasks.id" not in s]

        one_round()  # the first round loads the pinned version once per process
        rid, statements = one_round()
        assert len(statements) <= ROUND_STATEMENTS, "\n".join(statements)

        table = built.table("request")
        with engine.connect() as conn:
            versions = conn.execute(sa.select(record_versions.c.version, record_versions.c.user_id,
                                              record_versions.c.changes)
                                    .where(record_versions.c.record_id == rid).order_by(record_versions.c.version)).all()
            events = conn.execute(sa.select(audit_events.c.action).where(
                audit_events.c.app == "rounds", audit_events.c.record_id == rid).order_by(audit_events.c.id)
            ).scalars().all()
            sends = conn.execute(sa.select(audit_events.c.detail).where(audit_events.c.action == "inbox.send")
                                 .order_by(audit_events.c.id)).scalars().all()[2:]  # the second round's
            messages = conn.execute(sa.select(inbox_table.c.user_id).order_by(inbox_table.c.id)).scalars().all()[3:]
            status = conn.execute(sa.select(table.c.status).where(table.c.id == rid)).scalar()
        # the status field is kept by versioned, audited writes of the system
        assert [(v.version, v.user_id) for v in versions] == [(1, None), (2, None), (3, None)]
        assert versions[1].changes == {"status": [None, "pending"]}
        assert versions[2].changes == {"status": ["pending", "approved"]}
        assert status == "approved"
        assert events.count("record.create") == 1 and events.count("record.update") == 2
        assert [e for e in events if e.startswith("workflow.")] == [
            "workflow.start", "workflow.step_enter", "workflow.approve", "workflow.approve",
            "workflow.step_complete", "workflow.finish"]
        # the approvers were told of their tasks (one message each), the submitter of the outcome
        assert sorted(messages[:2]) == sorted([boss.user_id, head.user_id]) and messages[2:] == [rep.user_id]
        assert [sorted(d["recipients"]) for d in sends] == [sorted([boss.user_id, head.user_id]), [rep.user_id]]
    finally:
        engine.dispose()
