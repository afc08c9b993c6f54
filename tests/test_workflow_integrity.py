"""Approvals that cannot collapse into one person (issue 8 §3), the engine's messages (issue 9 §2) and the
general capabilities apps build on (a field only a workflow changes, who may start, a rejection that
needs a reason, approvals bound to the content, review panels). The wf_app fixture with variations,
applied to a real database, driven through the REST API; every refusal leaves the database as it was.

    sales: alice -> sam -> ceo;  finance: fiona (head) -> ceo; fred, fay -> fiona;  otto: nobody above
"""
from __future__ import annotations

import copy
import json

import pytest
import sqlalchemy as sa

from conftest import make_app
from test_workflow_support import FIXTURE, World, apply_fixture, build_org


def fixture_bundle() -> dict:
    return {p.relative_to(FIXTURE).as_posix(): json.loads(p.read_text(encoding="utf-8"))
            for p in FIXTURE.rglob("*.json")}


def world_with(tmp_path, db_url, change=None) -> World:
    from keel.auth.tokens import issue_token

    bundle = fixture_bundle()
    if change is not None:
        change(bundle)
    flask_app = make_app(tmp_path, db_url)
    engine = flask_app.extensions["keel"].engine
    apply_fixture(engine, bundle=bundle)
    with engine.begin() as conn:
        ids = build_org(conn)
        tokens = {name: issue_token(conn, uid) for name, uid in ids.items()}
    return World(flask_app, flask_app.test_client(), engine, ids, tokens)


def page(w: World, who: str, url: str) -> str:
    """A page as `who` sees it, signed in through /login like a browser."""
    from helpers_notify import PASSWORD, login
    from keel.actor import SYSTEM
    from keel.auth.directory import set_password

    with w.engine.begin() as conn:
        set_password(conn, w.ids[who], PASSWORD, SYSTEM)
    r = login(w.app, who).get(url, follow_redirects=True)
    assert r.status_code == 200, r.status_code
    return r.get_data(as_text=True)


def unchanged_but_the_admins_were_told(w: World, before: tuple) -> None:
    """A request refused at submission: no record, request or task; the audit trail tells the admins."""
    after = w.snapshot()
    assert after[:2] == before[:2] and after[3:] == before[3:]
    with w.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM keel_audit_events WHERE action = 'workflow.unresolved'")
                            ).scalar() == 1


def step_of(bundle, flow: str, **settings) -> dict:
    step = bundle[f"workflows/{flow}.json"]["steps"][0]
    step.update(settings)
    return step


def tasks(w: World, iid: int) -> list[tuple[str, str]]:
    ordered = sorted(w.instance(iid)["tasks"], key=lambda t: (t["visit"], t["seq"], t["id"]))
    return [(t["assignee"]["username"], t["status"]) for t in ordered if t["kind"] == "approve"]


def events(w: World, iid: int, action: str) -> list[dict]:
    return [e for e in w.instance(iid)["timeline"] if e["action"] == action]


@pytest.fixture
def world(tmp_path, db_url):
    w = world_with(tmp_path, db_url)
    yield w
    w.engine.dispose()


# ---- one person decides at most once per step ------------------------------------------------------------

def test_a_transfer_to_someone_who_already_approved_the_step_is_refused(world):
    """Issue 8: sam approves his task, fiona transfers hers to sam, sam approves again: the all-of step
    completed with one person."""
    w = world
    iid = w.start("allof")
    assert w.act(iid, "sam").status_code == 200
    before = w.snapshot()
    r = w.act(iid, "fiona", "transfer", to_user="sam")
    assert r.status_code == 422
    assert r.get_json()["errors"]["to_user"] == ["用户 sam 已在本步骤审批过：同一步骤每人只能审批一次。"]
    assert w.snapshot() == before
    assert w.act(iid, "fiona", "transfer", to_user="fay").status_code == 200  # someone new may take it
    assert w.act(iid, "fay").status_code == 200
    assert w.instance(iid)["status"] == "approved"


def test_adding_an_approver_who_already_approved_is_refused(world):
    w = world
    iid = w.start("chain", reviewer=w.ids["fay"])
    assert w.act(iid, "sam").status_code == 200
    before = w.snapshot()
    r = w.act(iid, "fay", "add_approvers", users=["sam"])
    assert r.status_code == 422 and "已在本步骤审批过" in r.get_json()["errors"]["users"][0]
    assert w.snapshot() == before


def test_a_delegation_to_someone_already_in_the_step_does_not_give_them_both_tasks(world):
    """Issue 8: fiona delegates to sam, who then received and approved both tasks of the step."""
    w = world
    r = w.client.put("/api/v1/workflows/delegation", json={"to_user": "sam"}, headers=w.headers("fiona"))
    assert r.status_code == 200
    iid = w.start("allof")
    assert tasks(w, iid) == [("sam", "pending"), ("fiona", "pending")]
    (skipped,) = events(w, iid, "delegation_skipped")
    assert skipped["user"] == w.ids["fiona"] and skipped["delegate"] == w.ids["sam"]
    assert skipped["reason"] == "duplicate"
    assert "Fiona 保留此待办：Sam 已在本步骤审批或是申请人" in page(w, "root", f"/workflows/instances/{iid}")


def test_one_person_in_two_seats_of_a_sequential_step_is_refused_by_default(world):
    """Issue 8: the manager is also the second level's approver: one approval would cover both levels."""
    w = world
    before = w.snapshot()
    r = w.submit("chain", "alice", reviewer=w.ids["sam"])
    assert r.status_code == 422
    assert r.get_json()["errors"]["_record"] == [
        "无法提交此申请：在步骤 chain，sam 将审批两次，本步骤不允许（on_self）。已通知管理员。"]
    unchanged_but_the_admins_were_told(w, before)


def test_a_duplicate_seat_is_approved_automatically_when_the_step_says_so_and_the_timeline_shows_it(tmp_path,
                                                                                                     sqlite_url):
    w = world_with(tmp_path, sqlite_url, lambda b: step_of(b, "chain_flow", on_self="auto_approve"))
    iid = w.start("chain", reviewer=w.ids["sam"])
    assert tasks(w, iid) == [("sam", "pending"), ("ceo", "waiting"), ("sam", "approved")]
    (note,) = events(w, iid, "on_self")
    assert (note["reason"], note["outcome"], note["setting"]) == ("duplicate", "auto_approved", "auto_approve")
    assert len(events(w, iid, "auto_approve")) == 1
    assert w.act(iid, "sam").status_code == 200
    assert w.act(iid, "ceo").status_code == 200
    assert w.instance(iid)["status"] == "approved"
    with w.engine.connect() as conn:  # in the audit trail as well
        assert conn.execute(sa.text("SELECT count(*) FROM keel_audit_events WHERE action = 'workflow.on_self'")
                            ).scalar() == 1
    w.engine.dispose()


def test_the_submitter_as_the_only_approver_of_a_rule_is_refused_by_default(world):
    """Issue 8: the finance head files her own request at a step where she is the finance approver."""
    w = world
    before = w.snapshot()
    r = w.submit("allof", "fiona")
    assert r.status_code == 422 and "申请人 fiona 将审批自己的申请" in r.get_json()["errors"]["_record"][0]
    unchanged_but_the_admins_were_told(w, before)


def test_skip_to_superior_gives_the_seat_to_the_submitters_superior(tmp_path, sqlite_url):
    def change(b):
        step_of(b, "allof_flow", on_self="skip_to_superior",
                approvers=[{"rule": "fixed", "username": "otto"}, {"rule": "fixed", "username": "fred"}])
    w = world_with(tmp_path, sqlite_url, change)
    iid = w.start("allof", "fred")
    assert tasks(w, iid) == [("otto", "pending"), ("fiona", "pending")]
    (note,) = events(w, iid, "on_self")
    assert (note["reason"], note["outcome"], note["to_user"]) == ("submitter", "skipped_to_superior", w.ids["fiona"])
    text = page(w, "root", f"/workflows/instances/{iid}")
    assert "Fred 是申请人：改由其上级 Fiona 审批" in text
    w.engine.dispose()


# ---- a rejection needs a reason ---------------------------------------------------------------------------

def test_reject_requires_comment(tmp_path, sqlite_url):
    w = world_with(tmp_path, sqlite_url, lambda b: step_of(b, "allof_flow", reject_requires_comment=True))
    iid = w.start("allof")
    before = w.snapshot()
    for body in ({}, {"comment": "   "}):
        r = w.act(iid, "sam", "reject", **body)
        assert r.status_code == 422 and r.get_json()["errors"]["comment"] == ["驳回需要填写意见：请说明原因。"]
    assert w.snapshot() == before
    assert w.act(iid, "sam", "reject", comment="预算不足").status_code == 200
    assert w.instance(iid)["status"] == "rejected"
    w.engine.dispose()


# ---- who may start ------------------------------------------------------------------------------------------

def _followup_flow(b):
    b["entities/followup.json"]["permissions"] = [{"role": r, "read": "all", "create": True}
                                                  for r in ("employee", "manager", "finance", "executive")]
    b["forms/followup_form.json"] = {"id": "followup_form", "entity": "followup", "label": "Follow-up",
                                     "fields": [{"field": "title"}, {"field": "expense"}]}
    b["workflows/followup_flow.json"] = {
        "id": "followup_flow", "label": "Follow-up approval",
        "starts_on": {"form": "followup_form", "who": ["owner_of:expense", "managers_of_owner:expense"]},
        "steps": [{"id": "ok", "approvers": [{"rule": "fixed", "username": "fiona"}]}]}
    del b["workflows/allof_flow.json"]["on_approved"][0]  # the create_record of a followup


def test_only_the_owner_of_the_linked_record_and_their_managers_may_start(tmp_path, sqlite_url):
    w = world_with(tmp_path, sqlite_url, _followup_flow)
    expense = w.submit("anyof", "alice").get_json()["id"]
    before = w.snapshot()
    for who in ("fred", "fay"):
        r = w.post("/apps/wfapp/forms/followup_form", who, {"title": "Chase", "expense": expense})
        assert r.status_code == 403, r.get_json()
        assert "owner_of:expense, managers_of_owner:expense" in r.get_json()["error"]
    assert w.snapshot() == before  # the followup was not created either
    for who in ("alice", "sam", "ceo", "root"):
        r = w.post("/apps/wfapp/forms/followup_form", who, {"title": f"Chase {who}", "expense": expense})
        assert r.status_code == 201, (who, r.get_json())
        w.post(f"/workflows/instances/{w.instance_of(r.get_json()['id'])}/withdraw", who)
    w.engine.dispose()


def test_who_is_checked_when_the_definition_is_validated():
    from helpers_registries import REGISTRIES
    from keel.definitions.errors import DefinitionErrors
    from keel.definitions.loader import load_bundle

    bundle = fixture_bundle()
    _followup_flow(bundle)
    bundle["workflows/followup_flow.json"]["starts_on"]["who"] = ["owner_of:title", "role:nobody", "boss"]
    with pytest.raises(DefinitionErrors) as e:
        load_bundle(bundle, REGISTRIES)
    text = str(e.value)
    assert "'title' is not a link field of entity 'followup'" in text
    assert "unknown role 'nobody'" in text and "unknown rule 'boss'" in text


# ---- a field only a workflow changes --------------------------------------------------------------------------

def _guarded(b):
    b["entities/expense.json"]["fields"].append(
        {"id": "approved_amount", "type": "decimal", "label": "Approved amount", "scale": 2, "changed_by": "workflow"})
    b["forms/anyof.json"]["fields"].append({"field": "approved_amount"})
    b["workflows/anyof_flow.json"]["on_approved"] = [{"action": "set_fields", "values": {"approved_amount": "777"}}]


def test_a_workflow_only_field_changes_only_through_a_workflow_action(tmp_path, db_url):
    from keel.actor import SYSTEM, workflow_actor
    from keel.errors import FieldErrors
    from keel.storage import records

    w = world_with(tmp_path, db_url, _guarded)
    r = w.submit("anyof", "alice", approved_amount="500")  # the initial value is free
    assert r.status_code == 201, r.get_json()
    rid = r.get_json()["id"]
    iid = w.instance_of(rid)
    w.post(f"/workflows/instances/{iid}/withdraw", "alice")  # editable again
    url = f"/api/v1/apps/wfapp/expense/{rid}"
    version = w.get(f"/apps/wfapp/expense/{rid}", "alice").get_json()["row_version"]
    before = w.snapshot()
    r = w.client.patch(url, json={"approved_amount": "600"}, headers={**w.headers("alice"), "If-Match": f'W/"{version}"'})
    assert r.status_code == 422
    assert r.get_json()["errors"]["approved_amount"] == ["「Approved amount」只能通过审批流程修改（approved_amount）。"]
    assert w.snapshot() == before
    # the same value is no change: a form re-sends every field
    r = w.client.patch(url, json={"approved_amount": "500.00", "note": "ok"},
                       headers={**w.headers("alice"), "If-Match": f'W/"{version}"'})
    assert r.status_code == 200, r.get_json()
    runtime = w.app.extensions["keel"]
    with w.engine.begin() as conn:  # an import or a connector sync writes as the system: refused too
        with pytest.raises(FieldErrors) as e:
            records.update_current(conn, runtime.latest(conn, "wfapp"), "expense", rid, {"approved_amount": "9"}, SYSTEM)
        assert "approved_amount" in e.value.errors
    with w.engine.begin() as conn:
        records.update_current(conn, runtime.latest(conn, "wfapp"), "expense", rid, {"approved_amount": "9"},
                               workflow_actor("wfapp", "anyof_flow", iid))
    assert str(w.record(rid)["approved_amount"]) in ("9", "9.00")
    # and a set_fields on approval writes it, the audit trail naming the request
    iid = w.start("anyof", "alice", approved_amount="1")
    assert w.act(iid, "fred").status_code == 200
    rid2 = w.instance(iid)["record_id"]
    assert str(w.record(rid2)["approved_amount"]) in ("777", "777.00")
    with w.engine.connect() as conn:
        vias = [json.loads(d) if isinstance(d, str) else d for d in conn.execute(sa.text(
            "SELECT detail FROM keel_audit_events WHERE action = 'record.update' AND record_id = :r"), {"r": rid2})
            .scalars()]
    assert any(v.get("via") == f"workflow:wfapp/anyof_flow#{iid}" for v in vias)
    w.engine.dispose()


# ---- approvals bound to the content ----------------------------------------------------------------------------

def test_an_edit_after_an_approval_restarts_the_approvals(tmp_path, db_url):
    def change(b):
        b["workflows/allof_flow.json"]["bind_content"] = True
    w = world_with(tmp_path, db_url, change)
    r = w.submit("allof", "alice")
    rid = r.get_json()["id"]
    iid = w.instance_of(rid)
    url = f"/api/v1/apps/wfapp/expense/{rid}"

    def edit(**values):
        version = w.get(f"/apps/wfapp/expense/{rid}", "alice").get_json()["row_version"]
        return w.client.patch(url, json=values, headers={**w.headers("alice"), "If-Match": f'W/"{version}"'})

    assert edit(note="before any approval").status_code == 200  # editable while pending; nothing restarts
    assert events(w, iid, "restart") == []
    assert w.act(iid, "sam").status_code == 200
    r = edit(amount="5000")
    assert r.status_code == 200, r.get_json()
    (restart,) = events(w, iid, "restart")
    assert restart["fields"] == ["amount"] and restart["reason"] == "content_changed" and restart["by"] == "alice"
    assert tasks(w, iid) == [("sam", "approved"), ("fiona", "withdrawn"), ("sam", "pending"), ("fiona", "pending")]
    assert w.act(iid, "fiona").status_code == 200
    assert w.instance(iid)["status"] == "pending"  # sam's earlier approval does not count for the new content
    assert w.act(iid, "sam").status_code == 200
    assert w.instance(iid)["status"] == "approved"
    assert "内容已修改，审批重新开始" in page(w, "alice", f"/workflows/instances/{iid}")
    assert edit(note="after").status_code == 409  # an approved record stays frozen
    w.engine.dispose()


# ---- review panels ------------------------------------------------------------------------------------------------

class PanelPlugin:
    from keel.hooks import hookimpl

    @hookimpl
    def keel_review_panels(self, app, entity, record, task):
        return [{"title": {"zh": "修订内容", "en": "Revision"},
                 "rows": [{"label": {"zh": "金额", "en": "Amount"}, "old": "1000", "new": record["amount"],
                           "unit": "元"}], "note": f"task {task['id']} step {task['step']}"}]


class BrokenPanels:
    from keel.hooks import hookimpl

    @hookimpl
    def keel_review_panels(self, conn, app, entity, record, task, actor):
        raise RuntimeError("boom")


def test_review_panels_reach_the_task_api_and_the_page(world):
    w = world
    host = w.app.extensions["keel_plugins"]
    host.pm.register(PanelPlugin(), name="panels_test")
    iid = w.start("allof", amount="1200")
    task = w.task_of(iid, "sam")
    r = w.client.get(f"/api/v1/workflows/tasks/{task}", headers={**w.headers("sam"), "Accept-Language": "en"})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["instance"]["id"] == iid and body["record"]["title"] == "Laptop"
    assert body["panels"] == [{"title": "Revision", "rows": [{"label": "Amount", "old": "1000", "new": "1200.00",
                                                               "unit": "元"}], "note": f"task {task} step dual"}]
    assert w.get(f"/workflows/tasks/{task}", "bob").status_code == 404  # not a participant
    text = page(w, "sam", f"/workflows/instances/{iid}")
    assert "修订内容" in text and "1200.00" in text
    host.pm.register(BrokenPanels(), name="broken_panels")
    body = w.get(f"/workflows/tasks/{task}", "sam").get_json()
    assert len(body["panels"]) == 2 and "broken_panels" in body["panels"][1]["title"]
    assert "修订内容" in page(w, "sam", f"/workflows/tasks/{task}")  # the task's page: its request's, followed


# ---- approvers read what they decide ------------------------------------------------------------------------------

def test_an_approver_reads_the_record_of_their_task_without_a_read_rule(tmp_path, sqlite_url):
    def change(b):
        step_of(b, "anyof_flow", approvers=[{"rule": "fixed", "username": "otto"}])
    w = world_with(tmp_path, sqlite_url, change)
    rid = w.submit("anyof", "alice").get_json()["id"]
    assert w.get(f"/apps/wfapp/expense/{rid}", "otto").status_code == 200  # employee: reads only his own
    assert w.get(f"/apps/wfapp/expense/{rid}", "bob").status_code == 404
    assert "Laptop" in page(w, "otto", f"/apps/wfapp/expense/{rid}")
    w.engine.dispose()


def test_validate_warns_when_an_approver_role_cannot_read_the_entity():
    from helpers_registries import REGISTRIES
    from keel.definitions.kinds import definition_warnings
    from keel.definitions.loader import load_bundle

    bundle = fixture_bundle()
    bundle["app.json"]["roles"].append({"id": "auditor", "label": "Auditor"})
    step_of(bundle, "anyof_flow", approvers=[{"rule": "role", "role": "auditor"}])
    app = load_bundle(bundle, REGISTRIES)  # a warning never stops a load
    (warning,) = definition_warnings(app, REGISTRIES)
    assert warning.file == "workflows/anyof_flow.json" and warning.pointer == "/steps/0/approvers/0"
    assert "approver role 'auditor' cannot read entity 'expense'" in warning.message
    assert definition_warnings(load_bundle(fixture_bundle(), REGISTRIES), REGISTRIES) == []


# ---- messages --------------------------------------------------------------------------------------------------------

def _inbox(w: World, who: str) -> list[dict]:
    return w.get("/inbox?per_page=100", who).get_json()["items"]


def test_the_apps_template_is_the_one_message_of_an_outcome_with_the_decision_decider_and_comment(tmp_path,
                                                                                                   sqlite_url):
    def change(b):
        b["notifications/expense_done.json"]["body"] = {
            "zh": "{{ decision }} · {{ decider.username }} · {{ comment }}",
            "en": "{{ decision }} · {{ decider.username }} · {{ comment }}"}
    w = world_with(tmp_path, sqlite_url, change)
    iid = w.start("allof")
    assert w.act(iid, "sam").status_code == 200
    assert w.act(iid, "fiona", comment="同意付款").status_code == 200
    mine = _inbox(w, "alice")
    assert len(mine) == 1, [m["subject"] for m in mine]  # not the engine's "已通过：…" beside it
    assert mine[0]["subject"] == "已通过：Laptop"
    assert mine[0]["body"] == "approved · fiona · 同意付款"
    w.engine.dispose()


def _notify_without_template(b):  # a notify without a template is the engine's message: still one, not two
    b["workflows/anyof_flow.json"]["on_approved"] = [{"action": "notify", "to": ["submitter"]}]


@pytest.mark.parametrize("change", [None, _notify_without_template])
def test_without_a_template_the_engine_tells_the_submitter_once(tmp_path, sqlite_url, change):
    w = world_with(tmp_path, sqlite_url, change)
    iid = w.start("anyof")
    assert w.act(iid, "fred").status_code == 200
    assert [m["subject"] for m in _inbox(w, "alice")] == [f"已通过：Any-of #{iid}"]
    w.engine.dispose()


def test_a_task_message_is_marked_done_when_the_task_closes(world):
    w = world
    iid = w.start("anyof")
    unread = {who: [m for m in _inbox(w, who) if not m.get("read_at")] for who in ("fred", "fay")}
    assert all(len(v) == 1 for v in unread.values()), unread
    assert w.act(iid, "fred").status_code == 200  # fred decides; fay's task is withdrawn
    for who in ("fred", "fay"):
        assert all(m.get("read_at") for m in _inbox(w, who)), (who, _inbox(w, who))


# ---- the issue's reproductions on the Goal Agility demo -----------------------------------------------------------

@pytest.fixture
def demo(tmp_path, sqlite_url):
    from conftest import APPS
    from helpers_registries import REGISTRIES
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from keel.auth.directory import find_user
    from keel.auth.tokens import issue_token
    from keel.definitions.loader import load_app_dir
    from keel.demo import seed_demo

    app = make_app(tmp_path, sqlite_url)
    engine = app.extensions["keel"].engine
    apply_app(engine, load_app_dir(APPS / "goal_agility", REGISTRIES), SYSTEM)
    app.extensions["keel"].refresh()
    seed_demo(app)
    with engine.begin() as conn:
        ids = {u: find_user(conn, u).id for u in ("rep_li", "east_mgr", "strategy_lead", "cro", "ceo", "admin")}
        ids["root"] = ids["admin"]
        tokens = {u: issue_token(conn, i) for u, i in ids.items()}
    yield World(app, app.test_client(), engine, ids, tokens)
    engine.dispose()


def _file_revision(w: World, who: str):
    with w.engine.connect() as conn:
        goal = conn.execute(sa.text("SELECT id FROM goal_agility__goal WHERE title LIKE '李娜%'")).scalar()
    return w.post("/apps/goal_agility/forms/revision_request", who, {
        "goal": goal, "title": "李娜目标改为增购", "proposed_target": "8", "reason": "12 个客户咨询扩容",
        "resources": "客户成功经理"})


def test_demo_strategy_lead_cannot_approve_twice_through_a_transfer(demo):
    w = demo
    r = _file_revision(w, "rep_li")
    assert r.status_code == 201, r.get_json()
    iid = w.instance_of(r.get_json()["id"])
    assert sorted(tasks(w, iid)) == [("east_mgr", "pending"), ("strategy_lead", "pending")]
    assert w.act(iid, "strategy_lead").status_code == 200
    r = w.act(iid, "east_mgr", "transfer", to_user="strategy_lead")
    assert r.status_code == 422 and "strategy_lead" in r.get_json()["errors"]["to_user"][0]
    assert w.instance(iid)["status"] == "pending"
    assert w.act(iid, "east_mgr").status_code == 200
    assert w.instance(iid)["status"] == "approved"


def test_demo_a_delegation_to_the_other_line_leaves_the_task_with_its_approver(demo):
    w = demo
    r = w.client.put("/api/v1/workflows/delegation", json={"to_user": "east_mgr"}, headers=w.headers("strategy_lead"))
    assert r.status_code == 200
    iid = w.instance_of(_file_revision(w, "rep_li").get_json()["id"])
    assert sorted(tasks(w, iid)) == [("east_mgr", "pending"), ("strategy_lead", "pending")]
    assert [e["reason"] for e in events(w, iid, "delegation_skipped")] == ["duplicate"]


def test_demo_the_strategy_head_filing_a_revision_is_not_silently_rerouted(demo):
    from keel.actor import SYSTEM
    from keel.auth.directory import find_user
    from keel.storage import records

    w = demo
    # Only a goal's owner and the owner's managers may request its revision (starts_on.who): the head of
    # strategy files one for a goal of their own, where they would be one of the two approvers.
    runtime = w.app.extensions["keel"]
    with w.engine.begin() as conn:
        goal = records.create(conn, runtime.get("goal_agility"), "goal", {
            "title": "战略部 Q4 目标", "owner": find_user(conn, "strategy_lead").id, "level": "department",
            "category": "other", "metric": "战略项目数", "unit": "count", "target": "4"}, SYSTEM)["id"]
    r = w.post("/apps/goal_agility/forms/revision_request", "strategy_lead", {
        "goal": goal, "title": "战略项目改为 3 个", "proposed_target": "3", "reason": "聚焦", "resources": "无"})
    assert r.status_code == 422
    assert "申请人 strategy_lead 将审批自己的申请" in r.get_json()["errors"]["_record"][0]


def test_the_record_page_shows_a_workflow_only_field_but_offers_no_input_for_it(tmp_path, sqlite_url):
    w = world_with(tmp_path, sqlite_url, _guarded)
    rid = w.submit("anyof", "alice", approved_amount="500").get_json()["id"]
    w.post(f"/workflows/instances/{w.instance_of(rid)}/withdraw", "alice")
    text = page(w, "alice", f"/apps/wfapp/expense/{rid}")
    assert "Approved amount" in text and "500.00" in text
    assert 'name="note"' in text  # the edit form is there
    assert 'name="approved_amount"' not in text
    w.engine.dispose()


def test_an_edit_meeting_a_decision_in_progress_is_a_409_not_a_deadlock(tmp_path, pg_url):
    """PostgreSQL: the editor holds the record and must not wait for the instance an approver holds."""
    def change(b):
        b["workflows/allof_flow.json"]["bind_content"] = True
    w = world_with(tmp_path, pg_url, change)
    rid = w.submit("allof", "alice").get_json()["id"]
    iid = w.instance_of(rid)
    assert w.act(iid, "sam").status_code == 200
    version = w.get(f"/apps/wfapp/expense/{rid}", "alice").get_json()["row_version"]
    with w.engine.connect() as holder:  # an approval in progress holds the instance row
        holder.execute(sa.text("SELECT id FROM keel_wf_instances WHERE id = :i FOR UPDATE"), {"i": iid})
        r = w.client.patch(f"/api/v1/apps/wfapp/expense/{rid}", json={"amount": "99"},
                           headers={**w.headers("alice"), "If-Match": f'W/"{version}"'})
        holder.rollback()
    assert r.status_code == 409 and r.get_json()["error"] == "此申请正在审批处理中：请稍后再保存您的修改。"
    assert str(w.record(rid)["amount"]) in ("1200", "1200.00")
    w.engine.dispose()


def test_a_connector_sync_cannot_change_a_workflow_only_field(tmp_path, sqlite_url):
    from loopback import LoopbackServer
    from test_connector_sync import (
        CUSTOMER,
        ROWS,
        crm_connector,
        customers,
        make_world,
        serve_pages,
        sync_job,
    )

    entity = copy.deepcopy(CUSTOMER)
    next(f for f in entity["fields"] if f["id"] == "revenue")["changed_by"] = "workflow"
    with LoopbackServer() as crm:
        rows = [dict(r) for r in ROWS]
        serve_pages(crm, rows)
        world = make_world(tmp_path, sqlite_url, entities=[entity], connectors=[crm_connector(crm)],
                           jobs=[sync_job(skip_invalid=True)])
        first = world.run("crm_sync")
        assert first["counts"]["created"] == 3  # the first value is free
        rows[0]["revenue"] = 999999
        rows[1]["name"] = "Beta Retail Ltd"
        run = world.run("crm_sync")
        assert (run["counts"]["updated"], run["counts"]["invalid"]) == (1, 1), run
        got = customers(world)
        assert got["C1"]["revenue"] == 120000 and got["C2"]["name"] == "Beta Retail Ltd"


def test_set_fields_on_the_linked_record_writes_a_workflow_only_field_on_approval(tmp_path, sqlite_url):
    """An approved request changes another record (a revision → its goal) through the workflow."""
    def change(b):
        _guarded(b)
        _followup_flow(b)
        b["entities/followup.json"]["fields"].append({"id": "proposed", "type": "decimal", "label": "Proposed",
                                                      "scale": 2})
        b["forms/followup_form.json"]["fields"].append({"field": "proposed"})
        b["workflows/followup_flow.json"]["on_approved"] = [
            {"action": "set_fields", "record": "expense", "from": {"approved_amount": "proposed"}}]
    w = world_with(tmp_path, sqlite_url, change)
    expense = w.submit("anyof", "alice", approved_amount="100").get_json()["id"]
    w.post(f"/workflows/instances/{w.instance_of(expense)}/withdraw", "alice")
    r = w.post("/apps/wfapp/forms/followup_form", "alice", {"title": "Raise", "expense": expense, "proposed": "250"})
    assert r.status_code == 201, r.get_json()
    iid = w.instance_of(r.get_json()["id"])
    assert str(w.record(expense)["approved_amount"]) in ("100", "100.00")  # not before the approval
    assert w.act(iid, "fiona").status_code == 200
    assert str(w.record(expense)["approved_amount"]) in ("250", "250.00")
    w.engine.dispose()


def test_set_fields_on_a_linked_record_is_checked_when_validated():
    from helpers_registries import REGISTRIES
    from keel.definitions.errors import DefinitionErrors
    from keel.definitions.loader import load_bundle

    bundle = fixture_bundle()
    _followup_flow(bundle)
    bundle["workflows/followup_flow.json"]["on_approved"] = [
        {"action": "set_fields", "record": "title", "values": {"x": 1}},
        {"action": "set_fields", "record": "expense", "from": {"nope": "title", "amount": "nosuch + 1"}}]
    with pytest.raises(DefinitionErrors) as e:
        load_bundle(bundle, REGISTRIES)
    text = str(e.value)
    assert "'title' is not a link field of entity 'followup'" in text
    assert "no field 'nope' in entity 'expense'" in text and "unknown name 'nosuch'" in text
