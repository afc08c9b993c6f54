"""Yellow marks (keel.storage.highlights): a change by someone else marks the owner's record until the owner
acknowledges it; a plugin can mark anyone; marks do not pile up; acknowledging is audited."""
import sqlalchemy as sa

from keel.actor import SYSTEM, Actor
from keel.auth.directory import add_user, find_user
from keel.storage import highlights, records
from keel.storage.system import audit_events


def _actor(conn, username):
    u = find_user(conn, username)
    return Actor(user_id=u.id, username=u.username, roles=frozenset({"strategy"}), is_admin=False)


def test_a_change_by_someone_else_marks_the_owner_until_acknowledged(demo_app):
    runtime = demo_app.extensions["keel"]
    built = runtime.get("goal_agility")
    with runtime.engine.begin() as conn:
        owner = find_user(conn, "rep_li")
        goal = conn.execute(sa.select(built.table("goal").c.id).where(
            built.table("goal").c.owner == owner.id)).scalar_one()
        lead = _actor(conn, "strategy_lead")
        records.update_current(conn, built, "goal", goal, {"period_end": "2025-12-20"}, lead)
        records.update_current(conn, built, "goal", goal, {"period_end": "2025-12-25"}, lead)
        marks = highlights.marked(conn, owner.id, "goal_agility", "goal")
        assert list(marks) == [("goal_agility", "goal", goal)]          # one mark, refreshed, not two
        assert marks[("goal_agility", "goal", goal)]["detail"] == {"fields": ["period_end"], "by": "strategy_lead"}
        assert "结束日期" in marks[("goal_agility", "goal", goal)]["reason"]
        assert highlights.marked(conn, lead.user_id) == {}              # the writer is not marked
        # the owner's own change marks nobody
        me = _actor(conn, "rep_li")
        assert highlights.acknowledge(conn, me, "goal_agility", "goal", goal) == 1
        records.update_current(conn, built, "goal", goal, {"period_end": "2025-12-31"}, me)
        assert highlights.count_marked(conn, owner.id) == 0
        audit = conn.execute(sa.select(audit_events.c.user_id).where(
            audit_events.c.action == "highlight.acknowledge")).scalars().all()
        assert audit == [owner.id]


def test_a_plugin_marks_anyone_and_ignores_nobody(demo_app):
    runtime = demo_app.extensions["keel"]
    with runtime.engine.begin() as conn:
        a = add_user(conn, "mark_a", "甲", SYSTEM)
        n = highlights.mark(conn, "goal_agility", "task", 7, [a, None], "上级目标已修订")
        assert n == 1
        uid = find_user(conn, "mark_a").id
        assert highlights.marked(conn, uid, record_ids=[7])[("goal_agility", "task", 7)]["reason"] == "上级目标已修订"
        assert highlights.marked(conn, uid, record_ids=[8]) == {}
