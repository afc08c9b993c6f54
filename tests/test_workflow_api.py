"""Approvals end to end through the REST API: the fixture app tests/fixtures/wf_app applied to a real
database, an org chart, tokens, and the Flask test client. Every refusal is checked to leave the
database as it was."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from helpers_registries import REGISTRIES
from test_jobs_helpers import wait_for
from test_workflow_support import World, make_world


@pytest.fixture
def world(tmp_path, sqlite_url):
    w = make_world(tmp_path, sqlite_url)
    yield w
    w.engine.dispose()


@pytest.fixture
def world_on_each_db(tmp_path, db_url):
    w = make_world(tmp_path, db_url)
    yield w
    w.engine.dispose()


def actions(w: World, iid: int) -> list[str]:
    return [e["action"] for e in w.instance(iid)["timeline"]]


def tasks(w: World, iid: int) -> list[tuple[str, str]]:
    ordered = sorted(w.instance(iid)["tasks"], key=lambda t: (t["visit"], t["seq"], t["id"]))
    return [(t["assignee"]["username"], t["status"]) for t in ordered if t["kind"] == "approve"]


# ---- the three shapes of approval --------------------------------------------------------------------

def test_two_branch_all_of_needs_both_the_superior_and_the_finance_head(world_on_each_db):
    w = world_on_each_db
    r = w.submit("allof", "alice")
    assert r.status_code == 201, r.get_json()
    record_id = r.get_json()["id"]
    iid = w.instance_of(record_id)
    assert w.record(record_id)["status"] == "pending"
    mine = w.get("/workflows/tasks", "sam").get_json()
    assert mine["total"] == 1 and mine["items"][0]["instance"]["id"] == iid
    assert mine["items"][0]["instance"]["submitter"]["username"] == "alice"
    assert tasks(w, iid) == [("sam", "pending"), ("fiona", "pending")]

    r = w.act(iid, "sam", comment="同意，客户需求明确")
    assert r.status_code == 200 and r.get_json()["status"] == "pending"
    assert w.record(record_id)["status"] == "pending"  # one branch is not enough
    r = w.act(iid, "fiona")
    assert r.status_code == 200 and r.get_json()["status"] == "approved"

    view = w.instance(iid, "alice")
    assert view["status"] == "approved" and view["state"] == "approved" and view["finished_at"]
    assert w.record(record_id)["status"] == "approved"
    assert [e["action"] for e in view["timeline"]] == ["start", "step_enter", "approve", "approve",
                                                       "step_complete", "finish"]
    approval = view["timeline"][2]
    assert approval["by"] == "sam" and approval["step"] == "dual" and approval["comment"] == "同意，客户需求明确"
    with w.engine.connect() as conn:  # on_approved: create_record ran, as the system, linked to the request
        assert conn.execute(sa.text("SELECT title, expense FROM wfapp__followup")).all() == [("Pay out", record_id)]
    assert w.get("/workflows/tasks", "sam").get_json()["total"] == 0
    assert w.get("/workflows/tasks?status=approved", "sam").get_json()["total"] == 1


def test_any_of_first_approval_wins_and_the_other_tasks_are_withdrawn(world):
    w = world
    iid = w.start("anyof")
    assert sorted(tasks(w, iid)) == [("fay", "pending"), ("fiona", "pending"), ("fred", "pending")]
    other = w.task_of(iid, "fay")
    assert w.act(iid, "fred").status_code == 200
    assert sorted(tasks(w, iid)) == [("fay", "withdrawn"), ("fiona", "withdrawn"), ("fred", "approved")]
    assert w.instance(iid)["status"] == "approved"
    r = w.post(f"/workflows/tasks/{other}/approve", "fay")
    assert r.status_code == 409 and "approved" in r.get_json()["error"]


def test_sequential_chain_goes_one_approver_after_another(world):
    w = world
    iid = w.start("chain", reviewer=w.ids["fay"])
    assert tasks(w, iid) == [("sam", "pending"), ("fay", "waiting"), ("ceo", "waiting")]
    waiting = w.task_of(iid, "fay", "waiting")
    assert w.post(f"/workflows/tasks/{waiting}/approve", "fay").status_code == 409  # not her turn yet
    assert w.act(iid, "sam").status_code == 200
    assert tasks(w, iid) == [("sam", "approved"), ("fay", "pending"), ("ceo", "waiting")]
    assert w.act(iid, "fay").status_code == 200
    assert w.act(iid, "ceo").status_code == 200
    assert w.instance(iid)["status"] == "approved"


def test_quorum_two_of_three(world):
    w = world
    iid = w.start("quorum", "bob")
    assert w.act(iid, "fred", "reject").status_code == 200
    assert w.instance(iid)["status"] == "pending"  # two can still approve
    assert w.act(iid, "fay").status_code == 200
    assert w.act(iid, "fiona").status_code == 200
    assert w.instance(iid)["status"] == "approved"


# ---- rejection, send back, resubmission ----------------------------------------------------------------

def test_reject_request_ends_it_and_cancels_the_other_branch(world):
    w = world
    iid = w.start("allof")
    fiona_task = w.task_of(iid, "fiona")
    assert w.act(iid, "sam", "reject", comment="预算不足").status_code == 200
    view = w.instance(iid)
    assert view["status"] == "rejected" and tasks(w, iid) == [("sam", "rejected"), ("fiona", "withdrawn")]
    assert w.record(view["record_id"])["status"] == "rejected"
    assert w.post(f"/workflows/tasks/{fiona_task}/approve", "fiona").status_code == 409
    assert w.post(f"/workflows/instances/{iid}/resubmit", "alice").status_code == 409  # final


def test_a_rejected_request_is_resubmitted_with_changes(world):
    w = world
    r = w.submit("anyof", "alice", amount="900")
    record_id = r.get_json()["id"]
    iid = w.instance_of(record_id)
    assert w.act(iid, "fred", "reject", comment="金额需要附发票").status_code == 200
    assert w.instance(iid)["status"] == "returned" and w.record(record_id)["status"] == "returned"
    # returned: the submitter may change the record again, but not the workflow's field
    url = f"/apps/wfapp/expense/{record_id}"
    version = w.get(url, "alice").get_json()["row_version"]
    r = w.client.patch("/api/v1" + url, json={"status": "approved"},
                       headers={**w.headers("alice"), "If-Match": f'W/"{version}"'})
    assert r.status_code == 422 and "status" in r.get_json()["errors"]
    r = w.client.patch("/api/v1" + url, json={"amount": "950", "note": "invoice attached"},
                       headers={**w.headers("alice"), "If-Match": f'W/"{version}"'})
    assert r.status_code == 200, r.get_json()
    assert w.post(f"/workflows/instances/{iid}/resubmit", "fred").status_code == 403
    r = w.post(f"/workflows/instances/{iid}/resubmit", "alice", {"comment": "已补充发票"})
    assert r.status_code == 200 and r.get_json()["status"] == "pending"
    assert w.record(record_id)["status"] == "pending"
    assert w.act(iid, "fay").status_code == 200
    view = w.instance(iid)
    assert view["status"] == "approved"
    assert {t["visit"] for t in view["tasks"]} == {1, 2}
    assert "resubmit" in actions(w, iid)


def test_send_back_to_an_earlier_step_and_to_the_submitter(world):
    w = world
    iid = w.start("twostep")
    assert w.act(iid, "sam").status_code == 200
    assert w.instance(iid)["state"] == "finance"
    before = w.snapshot()
    r = w.act(iid, "fiona", "send_back", to_step="big")  # never passed
    assert r.status_code == 422 and "to_step" in r.get_json()["errors"]
    assert w.snapshot() == before
    assert w.act(iid, "fiona", "send_back", to_step="manager", comment="请经理再确认").status_code == 200
    view = w.instance(iid)
    assert view["state"] == "manager" and view["status"] == "pending"
    assert w.act(iid, "sam").status_code == 200
    assert w.act(iid, "fiona", "send_back", to_step="submitter").status_code == 200
    assert w.instance(iid)["status"] == "returned"


def test_a_condition_routes_large_amounts_through_the_ceo(world):
    w = world
    iid = w.start("twostep", amount="20000")
    assert w.act(iid, "sam").status_code == 200
    assert w.instance(iid)["state"] == "big"
    assert w.act(iid, "ceo").status_code == 200
    assert w.act(iid, "fiona").status_code == 200
    view = w.instance(iid)
    assert view["status"] == "approved" and view["state"] == "done"  # the declared final state


# ---- transfer, add approvers, CC -----------------------------------------------------------------------

def test_transfer_gives_the_task_to_someone_else(world):
    w = world
    iid = w.start("twostep")
    w.act(iid, "sam")
    before = w.snapshot()
    r = w.act(iid, "fiona", "transfer", to_user="alice")  # the submitter
    assert r.status_code == 422 and w.snapshot() == before
    assert w.act(iid, "fiona", "transfer", to_user="nobody").status_code == 422
    assert w.act(iid, "fiona", "transfer", to_user="fred", comment="请代审").status_code == 200
    finance = [t for t in w.instance(iid)["tasks"] if t["step"] == "finance"]
    assert [(t["assignee"]["username"], t["status"]) for t in finance] == [("fiona", "transferred"), ("fred", "pending")]
    assert finance[1]["on_behalf_of"] == w.ids["fiona"]
    assert w.act(iid, "fred").status_code == 200
    assert w.instance(iid)["status"] == "approved"


def test_add_approvers_to_a_chain_puts_them_next(world):
    w = world
    iid = w.start("chain", reviewer=w.ids["fay"])
    assert w.act(iid, "sam", "add_approvers", users=["fred"]).status_code == 200
    assert tasks(w, iid) == [("sam", "pending"), ("fred", "waiting"), ("fay", "waiting"), ("ceo", "waiting")]
    assert w.act(iid, "sam", "add_approvers", users=["fay"]).status_code == 422  # already in the step
    w.act(iid, "sam")
    assert tasks(w, iid)[1] == ("fred", "pending")


def test_cc_informs_without_deciding_and_lets_them_read(world):
    w = world
    iid = w.start("twostep")
    w.act(iid, "sam")
    assert w.get(f"/workflows/instances/{iid}", "ceo").status_code == 404  # not a participant yet
    assert w.act(iid, "fiona", "cc", users=["ceo"]).status_code == 200
    view = w.get(f"/workflows/instances/{iid}", "ceo").get_json()
    cc = [t for t in view["tasks"] if t["kind"] == "cc"]
    assert [(t["assignee"]["username"], t["status"]) for t in cc] == [("ceo", "informed")]
    r = w.post(f"/workflows/tasks/{cc[0]['id']}/approve", "ceo")
    assert r.status_code == 409  # informed, not deciding
    assert w.get(f"/workflows/instances/{iid}", "otto").status_code == 404


# ---- the submitter: withdraw, remind ----------------------------------------------------------------------

def test_withdraw_then_approve_is_a_conflict(world):
    w = world
    iid = w.start("allof")
    sam_task = w.task_of(iid, "sam")
    assert w.post(f"/workflows/instances/{iid}/withdraw", "sam").status_code == 403
    r = w.post(f"/workflows/instances/{iid}/withdraw", "alice", {"comment": "写错了"})
    assert r.status_code == 200 and r.get_json()["status"] == "withdrawn"
    assert w.record(w.instance(iid)["record_id"])["status"] == "withdrawn"
    before = w.snapshot()
    r = w.post(f"/workflows/tasks/{sam_task}/approve", "sam")
    assert r.status_code == 409 and w.snapshot() == before
    assert w.post(f"/workflows/instances/{iid}/withdraw", "alice").status_code == 409


def test_remind_tells_the_approvers_once_in_a_while(world):
    w = world
    iid = w.start("allof")
    assert w.post(f"/workflows/instances/{iid}/remind", "sam").status_code == 403
    r = w.post(f"/workflows/instances/{iid}/remind", "alice")
    assert r.status_code == 200 and sorted(r.get_json()["reminded"]) == sorted([w.ids["sam"], w.ids["fiona"]])
    assert w.post(f"/workflows/instances/{iid}/remind", "alice").status_code == 409
    assert "remind" in actions(w, iid)


# ---- who may act ---------------------------------------------------------------------------------------------

def test_approving_someone_elses_task_is_403_and_changes_nothing(world):
    w = world
    iid = w.start("allof")
    task = w.task_of(iid, "sam")
    before = w.snapshot()
    for who in ("fiona", "alice", "otto"):
        r = w.post(f"/workflows/tasks/{task}/approve", who)
        assert r.status_code == 403, (who, r.get_json())
    assert w.snapshot() == before


def test_self_approval_is_refused_even_for_an_admin(world):
    w = world
    iid = w.start("anyof", "root")  # an administrator's own request
    task = w.task_of(iid, "fred")
    before = w.snapshot()
    r = w.post(f"/workflows/tasks/{task}/approve", "root")
    assert r.status_code == 403 and "own request" in r.get_json()["error"]
    assert w.snapshot() == before


def test_a_submitter_among_a_roles_approvers_is_left_out_and_the_timeline_says_so(world):
    w = world
    iid = w.start("anyof", "fiona")  # finance role: fiona herself would be among the approvers
    assert sorted(tasks(w, iid)) == [("fay", "pending"), ("fred", "pending")]
    (note,) = [e for e in w.instance(iid)["timeline"] if e["action"] == "on_self"]
    assert note["user"] == w.ids["fiona"] and note["reason"] == "submitter" and note["outcome"] == "left_out"


def test_an_admin_may_act_for_an_assignee_and_it_is_recorded(world):
    w = world
    iid = w.start("allof")
    assert w.act(iid, "sam").status_code == 200
    fiona_task = w.task_of(iid, "fiona")
    assert w.post(f"/workflows/tasks/{fiona_task}/approve", "root").status_code == 200
    last = [e for e in w.instance(iid)["timeline"] if e["action"] == "approve"][-1]
    assert last["by"] == "root" and last["assignee"] == w.ids["fiona"]


def test_acting_twice_is_a_conflict(world):
    w = world
    iid = w.start("allof")
    task = w.task_of(iid, "sam")
    assert w.post(f"/workflows/tasks/{task}/approve", "sam").status_code == 200
    before = w.snapshot()
    for action in ("approve", "reject"):
        r = w.post(f"/workflows/tasks/{task}/{action}", "sam")
        assert r.status_code == 409 and "already approved" in r.get_json()["error"]
    assert w.snapshot() == before
    assert w.post("/workflows/tasks/999999/approve", "sam").status_code == 404
    r = w.post(f"/workflows/tasks/{task}/approve", "sam", {"comment": "x", "extra": 1})
    assert r.status_code == 422 and "extra" in r.get_json()["errors"]


# ---- records under approval ---------------------------------------------------------------------------------

def test_a_record_under_approval_and_an_approved_record_cannot_be_changed(world):
    w = world
    r = w.submit("anyof", "alice")
    record_id = r.get_json()["id"]
    iid = w.instance_of(record_id)
    url = f"/api/v1/apps/wfapp/expense/{record_id}"

    def patch():
        version = w.get(f"/apps/wfapp/expense/{record_id}", "alice").get_json()["row_version"]
        return w.client.patch(url, json={"amount": "1"}, headers={**w.headers("alice"), "If-Match": f'W/"{version}"'})

    r = patch()
    assert r.status_code == 409 and "under approval" in r.get_json()["error"]
    w.act(iid, "fred")
    before = w.snapshot()
    r = patch()
    assert r.status_code == 409 and "new revision request" in r.get_json()["error"]
    r = w.client.delete(url, headers=w.headers("alice"))
    assert r.status_code == 409
    assert w.snapshot() == before


def test_the_workflow_field_cannot_be_sent_on_create(world):
    w = world
    before = w.snapshot()
    r = w.post("/apps/wfapp/expense", "alice", {"title": "x", "amount": "1", "status": "approved"})
    assert r.status_code == 422 and "status" in r.get_json()["errors"]
    assert w.snapshot() == before


# ---- approvers who are not there ------------------------------------------------------------------------------

def test_a_submitter_without_a_manager_goes_to_the_department_head_up_the_tree(world):
    w = world
    assert tasks(w, w.start("allof", "bob"))[0] == ("sam", "pending")   # no manager: the head of sales
    assert tasks(w, w.start("allof", "erin"))[0] == ("sam", "pending")  # sales_east has no head: up to sales


def test_nobody_to_approve_is_a_clear_422_with_nothing_written_and_an_admin_event(world):
    w = world
    before = w.snapshot()
    r = w.submit("allof", "otto")
    assert r.status_code == 422
    message = r.get_json()["errors"]["_record"][0]
    assert "dual" in message and "manager_of" in message
    after = w.snapshot()
    assert after[:2] == before[:2] and after[3:] == before[3:]  # no instance, task, version or record
    with w.engine.connect() as conn:
        events = conn.execute(sa.text("SELECT action, user_id FROM keel_audit_events "
                                      "WHERE action = 'workflow.unresolved'")).all()
    assert events == [("workflow.unresolved", w.ids["otto"])]
    # the fallback role of twostep_flow catches the same case
    assert tasks(w, w.start("twostep", "otto")) == [("ceo", "pending")]


# ---- versions, delegation, bulk ----------------------------------------------------------------------------------

def test_a_running_instance_stays_on_its_version(world):
    from keel.definitions.loader import read_bundle
    from test_workflow_support import FIXTURE, apply_fixture

    w = world
    old = w.start("allof")
    bundle = read_bundle(FIXTURE, REGISTRIES)
    bundle["app.json"]["version"] = "2"
    step = bundle["workflows/allof_flow.json"]["steps"][0]
    step["approvers"] = [{"rule": "fixed", "username": "ceo"}]
    apply_fixture(w.engine, bundle=bundle)
    new = w.start("allof")
    assert tasks(w, new) == [("ceo", "pending")] and w.instance(new)["app_version"] == 2
    assert w.instance(old)["app_version"] == 1
    assert w.act(old, "sam").status_code == 200  # still the two-branch step of version 1
    assert w.instance(old)["status"] == "pending"
    assert w.act(old, "fiona").status_code == 200
    assert w.instance(old)["status"] == "approved"


def test_delegation_sends_new_tasks_to_the_delegate(world):
    w = world
    r = w.client.put("/api/v1/workflows/delegation", json={"to_user": "ceo"}, headers=w.headers("sam"))
    assert r.status_code == 200, r.get_json()
    iid = w.start("allof")
    task = next(t for t in w.instance(iid)["tasks"] if t["assignee"]["username"] == "ceo")
    assert task["on_behalf_of"] == w.ids["sam"]
    assert w.get(f"/workflows/instances/{iid}", "sam").status_code == 200  # still a participant
    assert w.client.delete("/api/v1/workflows/delegation", headers=w.headers("sam")).status_code == 200
    assert tasks(w, w.start("allof"))[0] == ("sam", "pending")


def test_bulk_approve_runs_each_task_as_its_own_transition(world):
    w = world
    ids = [w.task_of(w.start("allof"), "sam") for _ in range(2)]
    foreign = w.task_of(w.start("allof"), "fiona")
    r = w.post("/workflows/tasks/bulk_approve", "sam", {"task_ids": ids + [foreign], "comment": "批量同意"})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["queued"] is False and body["approved"] == 2
    assert [x["status"] for x in body["results"]] == [200, 200, 403]
    anyof = w.task_of(w.start("anyof"), "fred")  # its step does not allow bulk
    assert w.post("/workflows/tasks/bulk_approve", "fred", {"task_ids": [anyof]}).get_json()["results"][0]["status"] == 403
    assert w.post("/workflows/tasks/bulk_approve", "sam", {"task_ids": []}).status_code == 422


def test_bulk_above_the_threshold_is_queued_as_a_job(world):
    from keel.jobs import jobs_env
    from keel.jobs.queue import InProcessDispatcher

    w = world
    env = jobs_env(w.app)
    env.dispatcher = InProcessDispatcher(env)
    try:
        ids = [w.task_of(w.start("allof"), "sam") for _ in range(4)]  # threshold 3
        r = w.post("/workflows/tasks/bulk_approve", "sam", {"task_ids": ids})
        assert r.status_code == 202, r.get_json()
        run_id = r.get_json()["run_id"]

        def status() -> str:
            with w.engine.connect() as conn:
                return conn.execute(sa.text("SELECT status FROM keel_job_runs WHERE id = :i"), {"i": run_id}).scalar()

        wait_for(lambda: status() in ("succeeded", "failed"), "the bulk approval's run to finish")
        assert status() == "succeeded"
        with w.engine.connect() as conn:
            done = conn.execute(sa.text("SELECT count(*) FROM keel_wf_tasks WHERE status = 'approved'")).scalar()
        assert done == 4
    finally:
        env.dispatcher.close(wait=True)


def test_task_list_refuses_an_unknown_status(world):
    r = world.get("/workflows/tasks?status=bogus", "sam")
    assert r.status_code == 422 and "status" in r.get_json()["errors"]
