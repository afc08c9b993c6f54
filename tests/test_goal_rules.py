"""Every Goal Agility rule is a value in the app definition, live after `keel app apply` (no restart): who may
request, flagged goals only, the approvers, the SLA, derived children re-split or confirmed, the fields only an
approval may change, and the stability guard's limits (one root-cause ticket per breach)."""
from __future__ import annotations

from decimal import Decimal

import pytest

from helpers_goal import Demo, edit_json, set_setting

BARE = {"_bare": True, "reason": "市场变化", "resources": "无"}


@pytest.fixture
def demo(demo_app):
    return Demo(demo_app)


def _revision(section: dict, **more):
    def change(folder):
        edit_json(folder, "app.json", lambda d: d["settings"].__setitem__("revision", {
            **d["settings"]["revision"], **section}))
        for k, v in more.items():
            set_setting(folder, k, v)
    return change


def _who(who):
    return lambda folder: edit_json(folder, "workflows/revision_approval.json",
                                    lambda wf: wf["starts_on"].__setitem__("who", who))


def test_who_may_request_is_configurable(demo):
    sales = demo.goal("销售部 Q4 核心目标")
    assert demo.submit("north_mgr", sales["id"], proposed_target="30", **BARE).status_code == 403
    demo.apply_definition(_who(["owner_of:goal", "role:manager"]))
    assert demo.submit("north_mgr", sales["id"], proposed_target="30", **BARE).status_code == 201


def test_only_the_owner_when_managers_are_not_listed(demo):
    li = demo.goal("李娜 Q4 个人目标")
    demo.apply_definition(_who(["owner_of:goal"]))
    r = demo.submit("east_mgr", li["id"], proposed_target="3", **BARE)
    assert r.status_code == 403 and "owner_of:goal" in r.get_json()["error"]
    assert demo.count("goal_agility__revision_request") == 0


def test_unflagged_goals_are_refused_when_only_flagged_ones_may_be_revised(demo):
    li = demo.goal("李娜 Q4 个人目标")
    has_flag = "flag" in li
    if has_flag:  # the snapshot's flag (the measures): this goal is not red now
        with demo.engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE goal_agility__goal SET flag = 'none' WHERE id = {li['id']}")
    demo.apply_definition(_revision({"flagged_only": True}))
    r = demo.submit("rep_li", li["id"], proposed_target="3", **BARE)
    assert r.status_code == 422 and "标红" in r.get_json()["errors"]["goal"][0]
    assert demo.count("goal_agility__revision_request") == 0
    if has_flag:
        with demo.engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE goal_agility__goal SET flag = 'red' WHERE id = {li['id']}")
        assert demo.submit("rep_li", li["id"], proposed_target="3", **BARE).status_code == 201
    else:
        demo.apply_definition(_revision({"flagged_only": False}))
        assert demo.submit("rep_li", li["id"], proposed_target="3", **BARE).status_code == 201


def test_the_approvers_and_the_sla_come_from_the_workflow_definition(demo):
    def change(folder):
        def edit(wf):
            step = wf["steps"][0]
            step["approvers"] = [{"rule": "manager_of_owner", "link": "goal"}, {"rule": "fixed", "username": "cs_lead"}]
            step["sla"]["working_days"] = 3
        edit_json(folder, "workflows/revision_approval.json", edit)
    demo.apply_definition(change)
    li = demo.goal("李娜 Q4 个人目标")
    assert demo.submit("rep_li", li["id"], proposed_target="3", **BARE).status_code == 201
    assert len(demo.tasks_of("cs_lead")) == 1 and len(demo.tasks_of("east_mgr")) == 1
    assert demo.tasks_of("strategy_lead") == []
    [item] = demo.get("/apps/goal_agility/revisions/pipeline", "cs_lead").get_json()["items"]
    [start] = demo.rows("SELECT started_at FROM keel_wf_instances")
    import datetime as dt

    from keel.workflow.calendar import add_working_days

    started = start["started_at"]
    started = dt.datetime.fromisoformat(started) if isinstance(started, str) else started
    started = started if started.tzinfo else started.replace(tzinfo=dt.UTC)
    assert item["due"][:10] == add_working_days(started, 3).isoformat()[:10]


def test_derived_children_are_flagged_for_confirmation_when_the_definition_says_so(demo):
    demo.apply_definition(lambda f: set_setting(f, "cascade", {"derived_children": "confirm"}))
    sales = demo.goal("销售部 Q4 核心目标")
    assert demo.submit("cro", sales["id"]).status_code == 201
    demo.approve_all("ceo", "strategy_lead")
    east = demo.goal("华东大区 Q4 目标")
    assert east["target"] == Decimal("14") and east["needs_confirmation"] in (True, 1)
    assert demo.goal("销售部 Q4 核心目标")["target"] == Decimal("800000")


def test_the_fields_only_an_approval_may_change_are_configurable(demo):
    li = demo.goal("李娜 Q4 个人目标")
    url = f"/apps/goal_agility/goal/{li['id']}"
    r = demo.patch(url, "strategy_lead", {"resources": "新资源"}, li["row_version"])
    assert r.status_code == 422 and "resources" in r.get_json()["errors"]

    def free_resources(folder):
        def edit(entity):
            next(f for f in entity["fields"] if f["id"] == "resources").pop("changed_by")
        edit_json(folder, "entities/goal.json", edit)
    demo.apply_definition(free_resources)
    r = demo.patch(url, "strategy_lead", {"resources": "新资源"}, li["row_version"])
    assert r.status_code == 200, r.get_json()
    r = demo.patch(url, "strategy_lead", {"target": "9"}, r.get_json()["row_version"])
    assert r.status_code == 422


def _approved_revisions(demo, n: int, goal_title: str = "李娜 Q4 个人目标") -> None:
    for _ in range(n):
        goal = demo.goal(goal_title)
        r = demo.submit("rep_li", goal["id"], proposed_target=str(int(goal["target"]) + 1), **BARE)
        assert r.status_code == 201, r.get_json()
        demo.approve_all("east_mgr", "strategy_lead")


def test_the_stability_guard_opens_one_ticket_per_breach(demo):
    _approved_revisions(demo, 3)
    assert demo.count("goal_agility__root_cause_ticket") == 0          # 3 is not more than 3
    _approved_revisions(demo, 1)
    [ticket] = demo.rows("SELECT * FROM goal_agility__root_cause_ticket")
    assert ticket["category"] == "new_business" and ticket["revision_count"] == 4
    assert ticket["owner"] == demo.ids["strategy_lead"] and ticket["status"] == "open"
    _approved_revisions(demo, 1)
    assert demo.count("goal_agility__root_cause_ticket") == 1          # the same breach: no second ticket
    inbox = demo.get("/inbox", "strategy_lead").get_json()["items"]
    assert sum("根因分析" in m["subject"] for m in inbox) == 1


def test_the_guard_limits_are_configurable(demo):
    demo.apply_definition(lambda f: set_setting(f, "revision_guard", {"max_revisions": 1, "window_months": 6,
                                                                      "ticket_owner": {"department": "sales"}}))
    _approved_revisions(demo, 1)
    assert demo.count("goal_agility__root_cause_ticket") == 0
    _approved_revisions(demo, 1)
    [ticket] = demo.rows("SELECT owner, revision_count FROM goal_agility__root_cause_ticket")
    assert ticket == {"owner": demo.ids["cro"], "revision_count": 2}
