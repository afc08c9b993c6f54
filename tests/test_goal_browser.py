"""The case in a real browser (headless Chromium): the CRO opens the sales goal and files the revision of
2025-10-18 with its three dimensions; the CEO and the head of strategy each see current → proposed and the
impact on their task page and approve; 李娜 then sees her goal in yellow on the board and in the impact graph."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("keel.dashboards.graph", reason="the dashboards (graph, Dash pages) are not on this branch yet")
from helpers_browser import browser, live_server, logged_in_page, require_browser, screenshot  # noqa: E402
from helpers_goal import Demo  # noqa: E402

pytestmark = require_browser()

FILL = {"title": "销售目标由拓新转向增购", "reason": "头部客户群出现批量增购信号", "proposed_target": "800000",
        "resources": "为 TOP50 存量客户配置 3 名专属客户成功经理", "proposed_metric": "客户增购额",
        "metric_rationale": "近30天有12家客户主动咨询扩容", "proposed_incentive_weight": "0.6",
        "incentive_rationale": "高客单价客户LTV测算提升40%", "proposed_resources": "专属客户成功经理配置",
        "resources_rationale": "服务响应速度成续约关键因子"}
SELECT = {"proposed_unit": "cny", "proposed_category": "upsell", "proposed_incentive_category": "upsell"}


def test_the_case_in_the_browser(demo_app):
    demo = Demo(demo_app)
    sales, li = demo.goal("销售部 Q4 核心目标"), demo.goal("李娜 Q4 个人目标")
    with live_server(demo_app) as base, browser() as b:
        with logged_in_page(b, base, "cro") as page:
            page.goto(f"{base}/apps/goal_agility/goal/{sales['id']}")
            page.click(f"a[href='/apps/goal_agility/forms/revision_request?goal={sales['id']}']")
            for name, value in FILL.items():
                page.fill(f"[name={name}]", value)
            for name, value in SELECT.items():
                page.select_option(f"select[name={name}]", value)
            page.click("form button[type=submit]:has-text('提交审批')")
            page.wait_for_load_state()
            assert "审批中" in page.content(), [e.inner_text() for e in page.query_selector_all(".error, .error-summary")]
            screenshot(page, "cro-submitted")
        [(request_id,)] = [(r["id"],) for r in demo.rows("SELECT id FROM goal_agility__revision_request")]
        assert demo.rows("SELECT proposed_incentive_weight AS w FROM goal_agility__revision_request")[0]["w"] == 0.6 \
            or str(demo.rows("SELECT proposed_incentive_weight AS w FROM goal_agility__revision_request")[0]["w"]) == "0.6000"
        for who in ("ceo", "strategy_lead"):
            [task] = demo.tasks_of(who)
            with logged_in_page(b, base, who) as page:
                page.goto(f"{base}/workflows/tasks/{task['id']}")
                text = page.inner_text("body")
                assert "新增客户数 ≥ 40 个" in text and "客户增购额 ≥ ¥800,000.00" in text
                assert "拓新占比70%" in text and "增购占比60%" in text and "影响预览" in text
                assert "华东大区 Q4 目标" in text and "¥280,000.00" in text
                screenshot(page, f"task-{who}")
                page.click("button[name=action][value=approve]")
                page.wait_for_load_state()
        assert demo.goal("销售部 Q4 核心目标")["revision_no"] == 2
        with logged_in_page(b, base, "rep_li") as page:
            page.goto(f"{base}/dash/goal_agility/board")
            page.wait_for_selector(".marked")
            marked = page.inner_text(".marked") if page.query_selector(".marked") else ""
            assert re.search("李娜 Q4 个人目标|每日寻找", page.inner_text("body"))
            assert marked
            screenshot(page, "rep-board")
            page.goto(f"{base}/dash/goal_agility/graph/goal/{li['id']}")
            page.wait_for_load_state("networkidle")
            body = page.inner_text("body")
            assert "李娜 Q4 个人目标" in body and "销售部 Q4 核心目标" in body
            screenshot(page, "rep-graph")
    assert request_id
