"""The Goal Agility revision approval (app_definitions/goal_agility/workflows/revision_approval.json) end
to end, and the engine functions the SLA timers call (escalate_task, pending_tasks_of_step)."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from conftest import APPS, make_app
from helpers_registries import REGISTRIES
from test_workflow_support import make_world


@pytest.fixture
def world(tmp_path, sqlite_url):
    w = make_world(tmp_path, sqlite_url)
    yield w
    w.engine.dispose()

API = "/api/v1"


def test_a_target_revision_needs_the_superior_and_the_strategy_head(tmp_path, sqlite_url):
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from keel.auth.directory import add_department, add_user, set_department_head
    from keel.auth.tokens import issue_token
    from keel.definitions.loader import load_app_dir
    from keel.storage import records

    flask_app = make_app(tmp_path, sqlite_url)
    engine = flask_app.extensions["keel"].engine
    apply_app(engine, load_app_dir(APPS / "goal_agility", REGISTRIES), SYSTEM)
    with engine.begin() as conn:
        add_department(conn, "sales", "销售部", SYSTEM)
        add_department(conn, "strategy", "战略部", SYSTEM)
        ids = {"cro": add_user(conn, "cro", "CRO", SYSTEM, roles=["executive", "manager"], department_code="sales"),
               "lin": add_user(conn, "lin", "林晓", SYSTEM, roles=["strategy"], department_code="strategy")}
        ids["rep"] = add_user(conn, "rep", "Rep", SYSTEM, roles=["employee"], department_code="sales",
                              manager_username="cro")
        set_department_head(conn, "strategy", "lin", SYSTEM)
        built = flask_app.extensions["keel"]
        built.refresh(conn)
        goal = records.create(conn, built.get("goal_agility"), "goal", {
            "title": "Q4 新增客户数 ≥ 40", "owner": ids["rep"], "category": "new_business", "metric": "新增客户数",
            "target": "40"}, SYSTEM)
        tokens = {k: issue_token(conn, v) for k, v in ids.items()}
    client = flask_app.test_client()

    def post(url, who, body=None):
        return client.post(API + url, json=body or {}, headers={"Authorization": f"Bearer {tokens[who]}"})

    before = {"reason": "12 个客户 30 天内咨询扩容", "resources": "专属客户成功经理"}
    # The entity API cannot create a request outside its approval: it names the form to use, writes nothing.
    r = post("/apps/goal_agility/revision_request", "rep", {"goal": goal["id"], "proposed_target": "800000", **before})
    assert r.status_code == 422
    [message] = r.get_json()["errors"]["_record"]
    assert "此类记录需要走审批" in message and "/api/v1/apps/goal_agility/forms/revision_request" in message
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM goal_agility__revision_request")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM keel_wf_instances")).scalar() == 0
    r = post("/apps/goal_agility/forms/revision_request", "rep", {"goal": goal["id"], **before})
    assert r.status_code == 422 and "proposed_target" in r.get_json()["errors"]  # required
    r = post("/apps/goal_agility/forms/revision_request", "rep",
             {"goal": goal["id"], "proposed_target": "800000", **before})
    assert r.status_code == 201, r.get_json()
    record = r.get_json()
    assert record["status"] == "pending"
    for who in ("cro", "lin"):
        mine = client.get(API + "/workflows/tasks", headers={"Authorization": f"Bearer {tokens[who]}"}).get_json()
        assert mine["total"] == 1, who
        assert post(f"/workflows/tasks/{mine['items'][0]['id']}/approve", who).status_code == 200
    with engine.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM goal_agility__revision_request WHERE id = :i"),
                              {"i": record["id"]}).scalar()
        assert status == "approved"
        notified = conn.execute(sa.text("SELECT user_id FROM keel_inbox WHERE template = 'goal_changed'")).scalars().all()
    assert sorted(notified) == sorted(ids.values())  # the submitter and both approvers
    flask_app.extensions["keel"].engine.dispose()


def test_escalation_moves_a_pending_task_to_the_superior(world):
    from keel.actor import SYSTEM
    from keel.workflow.engine import escalate_task, pending_tasks_of_step

    w = world
    iid = w.start("allof")
    with w.engine.begin() as conn:
        pending = pending_tasks_of_step(conn, iid, "dual")
        assert sorted(t["assignee_id"] for t in pending) == sorted([w.ids["sam"], w.ids["fiona"]])
        sam_task = next(t["id"] for t in pending if t["assignee_id"] == w.ids["sam"])
        new_task = escalate_task(conn, w.app.extensions["keel"], sam_task, w.ids["ceo"], SYSTEM)
    assert w.post(f"/workflows/tasks/{sam_task}/approve", "sam").status_code == 409
    assert w.post(f"/workflows/tasks/{new_task}/approve", "ceo").status_code == 200
    assert w.act(iid, "fiona").status_code == 200
    view = w.instance(iid)
    assert view["status"] == "approved" and "escalate" in [e["action"] for e in view["timeline"]]
    with w.engine.begin() as conn:
        assert pending_tasks_of_step(conn, iid, "dual") == []
