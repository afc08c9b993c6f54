"""records.update_many_current: many records of one entity changed in one go, each still checked, versioned,
audited and announced — and nothing written when one of them is refused. highlights.mark_many: one mark per
(record, user), refreshed rather than doubled."""
from __future__ import annotations

import sqlalchemy as sa

from keel.actor import SYSTEM


def test_many_records_change_at_once_each_with_its_version_and_event(demo_app):
    from keel.errors import FieldErrors
    from keel.storage import highlights, records

    runtime = demo_app.extensions["keel"]
    built = runtime.get("goal_agility")
    t = built.table("task")
    with runtime.engine.begin() as conn:
        ids = list(conn.execute(sa.select(t.c.id).order_by(t.c.id)).scalars())
        out = records.update_many_current(conn, built, "task", {i: {"status": "done"} for i in ids}, SYSTEM)
    changed = [i for i in ids if i in out]
    assert changed and all(v >= 2 for v in out.values())
    with runtime.engine.connect() as conn:
        assert set(conn.execute(sa.select(t.c.status)).scalars()) == {"done"}
        versions = conn.execute(sa.text("SELECT count(*) FROM keel_record_versions WHERE entity = 'task' "
                                        "AND action = 'update'")).scalar()
        events = conn.execute(sa.text("SELECT count(*) FROM keel_audit_events WHERE action = 'record.update' "
                                      "AND entity = 'task'")).scalar()
    assert versions == events == len(changed)
    # One bad value refuses the whole batch, keyed by record, and writes nothing.
    with runtime.engine.begin() as conn:
        try:
            records.update_many_current(conn, built, "task", {ids[0]: {"status": "todo"}, ids[1]: {"status": "bogus"}},
                                        SYSTEM)
            raise AssertionError("expected FieldErrors")
        except FieldErrors as e:
            assert list(e.errors) == [f"{ids[1]}.status"]
    with runtime.engine.connect() as conn:
        assert set(conn.execute(sa.select(t.c.status)).scalars()) == {"done"}
    with runtime.engine.begin() as conn:
        owner = conn.execute(sa.select(t.c.owner).where(t.c.id == ids[0])).scalar()
        assert highlights.mark_many(conn, "goal_agility", [("task", ids[0], owner), ("task", ids[0], owner)], "a") == 1
        assert highlights.mark_many(conn, "goal_agility", [("task", ids[0], owner)], "b") == 1
        marks = highlights.marked(conn, owner, "goal_agility", "task")
    assert marks[("goal_agility", "task", ids[0])]["reason"] == "b" and len(marks) == 1
