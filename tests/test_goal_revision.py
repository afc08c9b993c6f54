"""A revision request that really changes the goal: the CRO's revision of 2025-10-18 on the demo company, through
the REST API — refusals first (nothing written), then both approvers, then the new goal version, the re-split of
the derived goals under it, one message per affected person, yellow marks, and the lead times."""
from __future__ import annotations

from decimal import Decimal

import pytest

from helpers_goal import Demo

FORM = "/apps/goal_agility/forms/revision_request"


@pytest.fixture
def demo(demo_app):
    return Demo(demo_app)


def _nothing_written(demo, before):
    assert demo.count("goal_agility__revision_request") == before
    assert demo.count("keel_wf_instances") == 0


def test_bad_revision_requests_are_refused_with_a_clear_message_and_nothing_written(demo):
    sales = demo.goal("销售部 Q4 核心目标")
    li = demo.goal("李娜 Q4 个人目标")
    cases = [
        ({"proposed_target": "-5", "_bare": True, "reason": "r", "resources": "x"}, "proposed_target", "不能为负"),
        ({"proposed_target": "40", "proposed_metric": None, "proposed_unit": None, "proposed_category": None,
          "proposed_incentive_category": None, "proposed_incentive_weight": None, "proposed_resources": None},
         "proposed_target", "与当前值相同"),
        ({"proposed_target": "3.5", "proposed_metric": None, "proposed_unit": None}, "proposed_target", "整数"),
        ({"proposed_unit": "percent", "proposed_target": "120"}, "proposed_target", "0 到 100"),
        ({"proposed_metric": None}, "proposed_unit", "核心指标"),
        ({"metric_rationale": ""}, "metric_rationale", "依据"),
    ]
    for values, field, fragment in cases:
        r = demo.submit("cro", sales["id"], **values)
        assert r.status_code == 422, (values, r.get_json())
        messages = r.get_json()["errors"][field]
        assert any(fragment in m for m in messages), (field, messages)
        _nothing_written(demo, 0)
    # Someone who neither owns the goal nor manages its owner: 403, naming who may.
    r = demo.submit("rep_zhang", sales["id"])
    assert r.status_code == 403 and "managers_of_owner:goal" in r.get_json()["error"]
    r = demo.submit("rep_li", demo.goal("公司 Q4 营收")["id"], proposed_target="1", _bare=True, reason="r",
                    resources="x")
    assert r.status_code == 403
    _nothing_written(demo, 0)
    # A second pending revision of the same goal.
    assert demo.submit("rep_li", li["id"], proposed_target="4", _bare=True, reason="r", resources="x").status_code == 201
    r = demo.submit("east_mgr", li["id"], proposed_target="3", _bare=True, reason="r", resources="x")
    assert r.status_code == 422 and "已有一个修订申请" in r.get_json()["errors"]["goal"][0]
    assert demo.count("goal_agility__revision_request") == 1


def test_the_cros_revision_changes_the_goal_and_cascades_once_approved(demo):
    sales, east, li = (demo.goal(t) for t in ("销售部 Q4 核心目标", "华东大区 Q4 目标", "李娜 Q4 个人目标"))
    r = demo.submit("cro", sales["id"])
    assert r.status_code == 201, r.get_json()
    request_id = r.get_json()["id"]
    # Routed to the goal owner's direct superior (the CEO) and the strategy department's head, in parallel.
    assert len(demo.tasks_of("ceo")) == 1 and len(demo.tasks_of("strategy_lead")) == 1
    assert demo.goal("销售部 Q4 核心目标")["target"] == Decimal("40")     # nothing changes before the decision
    demo.approve_all("ceo")
    assert demo.goal("销售部 Q4 核心目标")["revision_no"] == 1
    demo.approve_all("strategy_lead")

    after = demo.goal("销售部 Q4 核心目标")
    assert (after["metric"], after["unit"], after["category"], after["target"]) == \
        ("客户增购额", "cny", "upsell", Decimal("800000"))
    assert (after["incentive_category"], Decimal(str(after["incentive_weight"])), after["resources"]) == \
        ("upsell", Decimal("0.6"), "专属客户成功经理配置")
    assert after["revision_no"] == 2 and after["last_revision"] == request_id
    history = demo.get(f"/apps/goal_agility/goal/{sales['id']}/history", "cro").get_json()
    latest = history["items"][-1]
    assert latest["changes"]["last_revision"] == [None, request_id]
    assert latest["changes"]["target"][1] in ("800000.00", "800000")
    # Derived goals are re-split by their shares and follow the new metric; the others are untouched.
    east_after, li_after = demo.goal("华东大区 Q4 目标"), demo.goal("李娜 Q4 个人目标")
    assert (east_after["metric"], east_after["unit"], east_after["target"]) == ("客户增购额", "cny", Decimal("280000"))
    assert li_after["target"] == Decimal("100800") and li_after["last_revision"] == request_id
    assert demo.goal("客户成功部 Q4 续约")["target"] == Decimal("90")
    # One message per person: everyone who owns an affected goal or task, the submitter and the approvers.
    told = demo.rows("SELECT user_id, count(*) AS n FROM keel_inbox WHERE template = 'goal_changed' GROUP BY user_id")
    assert {r["n"] for r in told} == {1}
    expected = {demo.ids[u] for u in ("cro", "east_mgr", "north_mgr", "rep_li", "rep_zhang", "ceo", "strategy_lead")}
    owners = {r["owner"] for r in demo.rows("SELECT owner FROM goal_agility__task WHERE goal IN "
                                            "(SELECT id FROM goal_agility__goal WHERE last_revision = :r)",
                                            r=request_id)}
    assert {r["user_id"] for r in told} == expected | owners
    # the CRO (the submitter) hears of the outcome once: the cascade's message, not also the engine's "已通过"
    to_cro = demo.rows("SELECT template, subject FROM keel_inbox WHERE user_id = :u", u=demo.ids["cro"])
    assert [m["template"] for m in to_cro] == ["goal_changed"], to_cro
    [message] = demo.get("/inbox", "rep_li").get_json()["items"][:1]
    assert "销售部 Q4 核心目标" in message["subject"]
    assert "新增客户数 ≥ 40 个 → 客户增购额 ≥ ¥800,000.00" in message["body"]
    # Yellow for rep_li: her goal and her task, until she acknowledges.
    from keel.storage import highlights

    with demo.engine.connect() as conn:
        marks = highlights.marked(conn, demo.ids["rep_li"], "goal_agility")
    assert ("goal_agility", "goal", li["id"]) in marks and any(k[1] == "task" for k in marks)
    assert "销售部 Q4 核心目标" in marks[("goal_agility", "goal", li["id"])]["reason"]
    # The request knows when it was decided and when everyone was told, and what it touched.
    [req] = demo.rows("SELECT * FROM goal_agility__revision_request WHERE id = :i", i=request_id)
    assert req["status"] == "approved" and req["decided_at"] is not None and req["notified_at"] is not None
    assert req["goal_category"] == "new_business"
    assert east["id"] in (req["impact"] if isinstance(req["impact"], dict) else __import__("json").loads(req["impact"]))["resplit"]


def test_targets_change_only_through_an_approved_revision(demo):
    li = demo.goal("李娜 Q4 个人目标")
    url = f"/apps/goal_agility/goal/{li['id']}"
    r = demo.patch(url, "rep_li", {"target": "2"}, li["row_version"])
    assert r.status_code == 422 and "只能通过审批流程修改" in r.get_json()["errors"]["target"][0]
    r = demo.patch(url, "strategy_lead", {"metric": "别的指标", "incentive_weight": "0.1"}, li["row_version"])
    assert r.status_code == 422 and {"metric", "incentive_weight"} <= set(r.get_json()["errors"])
    assert demo.goal("李娜 Q4 个人目标")["target"] == Decimal("5")
    # The same value is not a change (forms send every field back), and other fields stay editable.
    r = demo.patch(url, "rep_li", {"target": "5.00", "period_end": "2025-12-20"}, li["row_version"])
    assert r.status_code == 200, r.get_json()


def test_a_goal_tree_with_a_cycle_is_refused(demo):
    company, li = demo.goal("公司 Q4 营收"), demo.goal("李娜 Q4 个人目标")
    r = demo.patch(f"/apps/goal_agility/goal/{company['id']}", "strategy_lead", {"parent": li["id"]},
                   company["row_version"])
    assert r.status_code == 422 and "环" in r.get_json()["errors"]["parent"][0]
    r = demo.patch(f"/apps/goal_agility/goal/{li['id']}", "strategy_lead", {"parent": li["id"]}, li["row_version"])
    assert r.status_code == 422
    r = demo.post("/apps/goal_agility/goal_contribution", "strategy_lead",
                  {"goal": company["id"], "parent": li["id"], "share": "0.5"})
    assert r.status_code == 422 and "parent" in r.get_json()["errors"]
    assert demo.count("goal_agility__goal_contribution") == 0
    assert demo.goal("公司 Q4 营收")["parent"] is None


def test_the_goal_edit_page_cannot_change_the_target_and_keeps_other_edits(demo):
    from helpers_goal import form_values
    from keel.demo import DEMO_PASSWORD
    from test_workflow_pages import login

    li = demo.goal("李娜 Q4 个人目标")
    url = f"/apps/goal_agility/goal/{li['id']}"
    page = login(demo.app, "rep_li", DEMO_PASSWORD)
    html = page.get(url).text
    forms = [i for i in range(html.count("<form")) if "row_version" in form_values(html, i)]
    values = form_values(html, forms[0])
    assert "target" not in values          # the page offers no way to change it…
    page.post(url, data={**values, "target": "2"})
    assert demo.goal("李娜 Q4 个人目标")["target"] == Decimal("5")   # …and a forged field changes nothing
    r = page.post(url, data={**values, "period_end": "2025-12-20"})
    assert r.status_code == 302, r.text


def test_approvers_see_old_and_new_with_the_impact_and_a_rejection_needs_a_reason(demo):
    sales = demo.goal("销售部 Q4 核心目标")
    request_id = demo.submit("cro", sales["id"]).get_json()["id"]
    for who in ("ceo", "strategy_lead"):
        [task] = demo.tasks_of(who)
        body = demo.get(f"/workflows/tasks/{task['id']}", who).get_json()
        revision, impact = body["panels"][:2]
        rows = {r["label"]: (r["old"], r["new"]) for r in revision["rows"]}
        assert rows["核心指标"] == ("新增客户数 ≥ 40 个", "客户增购额 ≥ ¥800,000.00")
        assert rows["激励权重"] == ("拓新占比70%", "增购占比60%")
        assert rows["资源倾斜"] == ("线索分配优先", "专属客户成功经理配置")
        assert rows["核心指标 · 调整依据"][1] == "近30天有12家客户主动咨询扩容"
        impact_rows = {r["label"]: (r["old"], r["new"]) for r in impact["rows"]}
        assert impact_rows["目标 · 华东大区 Q4 目标"] == ("新增客户数 ≥ 14 个", "客户增购额 ≥ ¥280,000.00")
        assert impact_rows["目标 · 李娜 Q4 个人目标"] == ("新增客户数 ≥ 5 个", "客户增购额 ≥ ¥100,800.00")
        assert "任务 · 每日寻找 3 条新线索" in impact_rows and "战略卡片 · 高客单价客户深耕" in impact_rows
    [task] = demo.tasks_of("ceo")
    r = demo.post(f"/workflows/tasks/{task['id']}/reject", "ceo", {})
    assert r.status_code == 422 and "comment" in r.get_json()["errors"]
    [req] = demo.rows("SELECT status FROM goal_agility__revision_request WHERE id = :i", i=request_id)
    assert req["status"] == "pending"


def test_an_edit_after_one_approval_restarts_the_approvals(demo):
    sales = demo.goal("销售部 Q4 核心目标")
    created = demo.submit("cro", sales["id"]).get_json()
    demo.approve_all("ceo")
    r = demo.patch(f"/apps/goal_agility/revision_request/{created['id']}", "cro", {"proposed_target": "900000"},
                   demo.rows("SELECT row_version FROM goal_agility__revision_request")[0]["row_version"])
    assert r.status_code == 200, r.get_json()
    assert len(demo.tasks_of("ceo")) == 1 and len(demo.tasks_of("strategy_lead")) == 1   # both decide again
    demo.approve_all("ceo", "strategy_lead")
    assert demo.goal("销售部 Q4 核心目标")["target"] == Decimal("900000")
