"""The goal tree: roll-up as the metric demands (sums for amounts and counts, weighted averages for rates, shares
for a goal that contributes to two parents, "no data" never 0), the impact set, and the lead-time figures."""
from __future__ import annotations

from decimal import Decimal

import pytest

from helpers_goal import Demo


@pytest.fixture
def demo(demo_app):
    return Demo(demo_app)


def _create(demo, conn, **values):
    from keel.actor import SYSTEM
    from keel.storage import records

    base = {"owner": demo.ids["cro"], "category": "upsell", "metric": "增购额", "unit": "cny", "level": "team"}
    return records.create(conn, demo.built(), "goal", {**base, **values}, SYSTEM)["id"]


def test_amounts_are_summed_rates_averaged_and_no_data_is_not_zero(demo):
    from keel.actor import SYSTEM
    from keel.storage import records

    with demo.engine.begin() as conn:
        top = _create(demo, conn, title="产品线合计", target="121000")
        for title, target, actual in (("产品 A", "100000", "50000"), ("产品 B", "20000", "10000"),
                                      ("产品 C", "1000", None)):
            _create(demo, conn, title=title, target=target, actual=actual, parent=top)
        rate = _create(demo, conn, title="续约率", unit="percent", metric="续约率", target="90")
        _create(demo, conn, title="大客户续约率", unit="percent", metric="续约率", target="95", actual="80", parent=rate)
        small = _create(demo, conn, title="小客户续约率", unit="percent", metric="续约率", target="85", actual="60",
                        parent=rate)
        other = _create(demo, conn, title="交叉销售目标", target="50000")
        # 小客户续约率 also counts 50% towards the cross-sell goal… in another unit: it does not count there.
        records.create(conn, demo.built(), "goal_contribution", {"goal": small, "parent": rate, "share": "0.5"}, SYSTEM)
        empty = _create(demo, conn, title="尚无数据", target="10")
    body = demo.get(f"/apps/goal_agility/goals/{top}/rollup?children=1", "strategy_lead").get_json()
    assert body["mode"] == "sum" and Decimal(body["value"]) == Decimal("60000")   # not a third each
    assert [c["value"] for c in body["children"]][2] is None                     # 产品 C: no data
    body = demo.get(f"/apps/goal_agility/goals/{rate}/rollup", "strategy_lead").get_json()
    # 大客户 weight 1; 小客户 is linked twice to the same parent: main link 0.5 + contribution 0.5.
    assert body["mode"] == "weighted_average" and Decimal(body["value"]) == Decimal("70")
    assert demo.get(f"/apps/goal_agility/goals/{empty}/rollup", "rep_li").get_json()["value"] is None
    assert demo.get(f"/apps/goal_agility/goals/{other}/rollup", "rep_li").get_json()["value"] is None


def test_a_goal_contributing_to_two_parents_counts_by_its_shares(demo):
    from keel.actor import SYSTEM
    from keel.storage import records

    with demo.engine.begin() as conn:
        sales = _create(demo, conn, title="销售增购", target="1000")
        cs = _create(demo, conn, title="客户成功增购", target="1000")
        shared = _create(demo, conn, title="联合增购", target="100", actual="100", parent=sales)
        records.create(conn, demo.built(), "goal_contribution", {"goal": shared, "parent": cs, "share": "0.3"}, SYSTEM)
    value = lambda g: Decimal(demo.get(f"/apps/goal_agility/goals/{g}/rollup", "ceo").get_json()["value"])  # noqa: E731
    assert value(sales) == Decimal("70") and value(cs) == Decimal("30")


def test_lead_times_count_only_decided_requests(demo):
    import datetime as dt

    import sqlalchemy as sa

    sales = demo.goal("销售部 Q4 核心目标")
    li = demo.goal("李娜 Q4 个人目标")
    assert demo.submit("cro", sales["id"]).status_code == 201
    demo.approve_all("ceo", "strategy_lead")
    r = demo.submit("rep_li", li["id"], _bare=True, proposed_target="3", reason="r", resources="x")
    assert r.status_code == 201
    [inst] = demo.rows("SELECT id FROM keel_wf_instances WHERE record_id = :i AND entity = 'revision_request'",
                       i=r.get_json()["id"])
    assert demo.post(f"/workflows/instances/{inst['id']}/withdraw", "rep_li").status_code == 200
    # The approved one was filed 12 hours before its decision, like the case's approval.
    with demo.engine.begin() as conn:
        conn.execute(sa.text("UPDATE goal_agility__revision_request SET created_at = decided_at - :d "
                             "WHERE status = 'approved'"), {"d": dt.timedelta(hours=12)}) \
            if conn.dialect.name == "postgresql" else \
            conn.execute(sa.text("UPDATE goal_agility__revision_request SET created_at = "
                                 "datetime(decided_at, '-12 hours') WHERE status = 'approved'"))
    body = demo.get("/apps/goal_agility/revisions/lead-times", "strategy_lead").get_json()
    assert body["decided"] == 1                                  # the withdrawn one is not a decision
    assert 11.9 <= body["approval_hours_avg"] <= 12.1 and body["meets"]["approval"] is True
    assert body["notify_hours_max"] < 1 and body["meets"]["notify"] is True
    assert body["targets"] == {"approval_hours": 48.0, "notify_hours": 24.0}
    assert demo.get("/apps/goal_agility/revisions/lead-times", "rep_li").status_code == 403


def test_the_pipeline_shows_open_requests_with_their_sla(demo):
    li = demo.goal("李娜 Q4 个人目标")
    assert demo.submit("rep_li", li["id"], _bare=True, proposed_target="3", reason="r", resources="x").status_code == 201
    [item] = demo.get("/apps/goal_agility/revisions/pipeline", "east_mgr").get_json()["items"]
    assert item["goal"]["title"] == "李娜 Q4 个人目标" and item["sla"] == "ok" and item["due"]


def test_the_impact_preview_names_what_would_change(demo):
    sales = demo.goal("销售部 Q4 核心目标")
    request_id = demo.submit("cro", sales["id"]).get_json()["id"]
    body = demo.get(f"/apps/goal_agility/revisions/{request_id}/impact", "strategy_lead").get_json()
    [core, incentive, resources] = body["changes"]
    assert (core["old"], core["new"]) == ("新增客户数 ≥ 40 个", "客户增购额 ≥ ¥800,000.00")
    assert (incentive["old"], incentive["new"]) == ("拓新占比70%", "增购占比60%")
    assert (resources["old"], resources["new"]) == ("线索分配优先", "专属客户成功经理配置")
    assert core["rationale"] == "近30天有12家客户主动咨询扩容"
    resplit = {r["title"]: r["new"] for r in body["resplit"]}
    assert resplit["华东大区 Q4 目标"] == "客户增购额 ≥ ¥280,000.00" and resplit["李娜 Q4 个人目标"] == "客户增购额 ≥ ¥100,800.00"
    impact = body["impact"]
    named = {r["id"] for r in demo.rows("SELECT id FROM goal_agility__task WHERE title IN "
                                        "('每日寻找 3 条新线索', '回访 TOP50 存量客户', '整理 12 家扩容咨询客户清单')")}
    assert named <= set(impact["tasks"]) and demo.ids["rep_li"] in impact["people"]
    assert "周报" not in {t["title"] for t in demo.rows("SELECT title FROM goal_agility__task WHERE id IN "
                                                       f"({','.join(map(str, impact['tasks']))})")}
    assert impact["goals_up"] == [demo.goal("公司 Q4 营收")["id"]] and len(impact["cards"]) == 1
    assert demo.get(f"/apps/goal_agility/revisions/{request_id}/impact", "rep_li").status_code == 404


def test_monthly_pacing_needs_usable_weights(demo):
    li = demo.goal("李娜 Q4 个人目标")
    url = f"/apps/goal_agility/goal/{li['id']}"
    for weights, fragment in (([0.3, 0.3], "12"), ({"2025/10": 1}, "YYYY-MM"), ([0] * 12, "大于 0"),
                              ({"2025-10": -1}, "不小于 0")):
        r = demo.patch(url, "strategy_lead", {"pacing": "monthly", "monthly_weights": weights}, li["row_version"])
        assert r.status_code == 422, weights
        assert fragment in r.get_json()["errors"]["monthly_weights"][0]
    r = demo.patch(url, "strategy_lead", {"pacing": "monthly",
                                          "monthly_weights": {"2025-10": 0.2, "2025-11": 0.3, "2025-12": 0.5}},
                   li["row_version"])
    assert r.status_code == 200, r.get_json()
    assert demo.goal("李娜 Q4 个人目标")["pacing"] == "monthly"
