"""The Goal Agility board and impact graph on the dashboards: the goal entity's links drawn up to the strategy card
and down to the tasks (GET /api/v1/apps/goal_agility/graph/goal/{id}, permission-filtered), changed nodes marked
for the viewer after a revision; the board's widgets — the revision pipeline with its SLA, the lead times against
the case, root-cause tickets, the goals with their yellow marks."""
from __future__ import annotations

import pytest

from helpers_goal import Demo

pytest.importorskip("keel.dashboards.graph", reason="the dashboards (graph, Dash pages) are not on this branch yet")


@pytest.fixture
def demo(demo_app):
    return Demo(demo_app)


def _login(demo, who):
    from keel.demo import DEMO_PASSWORD
    from test_workflow_pages import login

    return login(demo.app, who, DEMO_PASSWORD)


def test_the_impact_graph_runs_from_the_strategy_card_to_the_tasks(demo):
    sales, li = demo.goal("销售部 Q4 核心目标"), demo.goal("李娜 Q4 个人目标")
    r = demo.get(f"/apps/goal_agility/graph/goal/{sales['id']}?dashboard=board&widget=impact_graph", "rep_li")
    assert r.status_code == 200, r.get_json()
    nodes = {n["data"]["id"]: n["data"] for n in r.get_json()["elements"]["nodes"]}
    labels = {d.get("label") for d in nodes.values()}
    assert {"高客单价客户深耕", "公司 Q4 营收", "华东大区 Q4 目标", "李娜 Q4 个人目标", "每日寻找 3 条新线索"} <= labels
    assert nodes[f"goal:{li['id']}"]["level"] > 0 and nodes[f"goal:{sales['id']}"]["level"] == 0
    assert not nodes[f"goal:{li['id']}"].get("marked")
    # After the CRO's revision, 李娜's goal and task are drawn as changed for her.
    assert demo.submit("cro", sales["id"]).status_code == 201
    demo.approve_all("ceo", "strategy_lead")
    r = demo.get(f"/apps/goal_agility/graph/goal/{sales['id']}?dashboard=board&widget=impact_graph", "rep_li")
    nodes = {n["data"]["id"]: n for n in r.get_json()["elements"]["nodes"]}
    mine = nodes[f"goal:{li['id']}"]
    assert mine["data"]["marked"] and "marked" in mine["classes"]
    assert "销售部 Q4 核心目标" in mine["data"]["mark_reason"]


def test_the_board_shows_the_pipeline_the_lead_times_and_the_changes(demo):
    from helpers_dash import by_id, dash_page, text_of

    sales, li = demo.goal("销售部 Q4 核心目标"), demo.goal("李娜 Q4 个人目标")
    assert demo.submit("rep_li", li["id"], _bare=True, proposed_target="4", reason="r", resources="x").status_code == 201
    lead = _login(demo, "strategy_lead")
    page = dash_page(lead, "/dash/goal_agility/board")
    text = text_of(page)
    assert "修订流水线" in text and "李娜 Q4 个人目标" in text and "正常" in text
    assert "修订时效 vs 案例" in text and "根因分析工单" in text and "目标影响图谱" in text
    assert demo.submit("cro", sales["id"]).status_code == 201
    demo.approve_all("ceo", "strategy_lead")
    text = text_of(dash_page(lead, "/dash/goal_agility/board"))
    assert "已决申请: 1" in text
    assert by_id(dash_page(lead, "/dash/goal_agility/board"), "lead-approval") is not None
    # A rep sees no lead-time figures (the widget's roles) and their changed goal in yellow.
    rep = _login(demo, "rep_li")
    text = text_of(dash_page(rep, "/dash/goal_agility/board"))
    assert "修订时效 vs 案例" not in text and "李娜 Q4 个人目标" in text


def test_the_graph_of_a_revision_runs_down_through_its_goal_to_the_tasks(demo):
    sales = demo.goal("销售部 Q4 核心目标")
    request_id = demo.submit("cro", sales["id"]).get_json()["id"]
    r = demo.get(f"/apps/goal_agility/graph/revision_request/{request_id}?dashboard=board&widget=impact_graph",
                 "strategy_lead")
    assert r.status_code == 200, r.get_json()
    labels = {n["data"].get("label") for n in r.get_json()["elements"]["nodes"]}
    assert {"销售目标由拓新转向增购", "销售部 Q4 核心目标", "李娜 Q4 个人目标", "每日寻找 3 条新线索"} <= labels
    assert demo.get(f"/apps/goal_agility/graph/revision_request/{request_id}", "rep_li").status_code in (403, 404)


def test_red_goals_show_with_deviation_signals_and_the_request_action(demo):
    from helpers_dash import dash_page, text_of, with_class

    sales = demo.goal("销售部 Q4 核心目标")
    if "flag" not in sales:
        pytest.skip("the measures (snapshot flag) are not on this branch yet")
    with demo.engine.begin() as conn:  # the October snapshot's verdict, whatever the sample data says
        conn.exec_driver_sql(f"UPDATE goal_agility__goal SET flag = 'red', deviation = -0.4 WHERE id = {sales['id']}")
    page = dash_page(_login(demo, "cro"), "/dash/goal_agility/board")
    rows = {c["props"].get("id"): c for c in with_class(page, "style-red") if str(c["props"].get("id", "")).startswith("flagged-")}
    row = rows[f"flagged-{sales['id']}"]
    assert "-40.0%" in text_of(row) and "新增客户数 ≥ 40 个" in text_of(row) and "申请修订" in text_of(row)
    # Someone who may not request a revision of it sees the red goal without the action.
    row = {c["props"].get("id"): c for c in with_class(dash_page(_login(demo, "rep_zhang"), "/dash/goal_agility/board"),
                                                      "style-red")}[f"flagged-{sales['id']}"]
    assert "申请修订" not in text_of(row)
    r = demo.get(f"/apps/goal_agility/graph/goal/{sales['id']}?dashboard=board&widget=impact_graph", "rep_li")
    node = next(n for n in r.get_json()["elements"]["nodes"] if n["data"]["id"] == f"goal:{sales['id']}")
    assert node["data"]["style"] == "red"
