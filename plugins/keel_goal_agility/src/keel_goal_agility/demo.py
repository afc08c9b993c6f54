"""The demo case (keel demo): the 80-person SaaS company of the seed in Q4 2025. Keel's demo has created the org
(keel/demo.py); this adds the strategy cards, the goal tree and the tasks, through the record write path (so
everything is versioned and audited). Titles name the goal, never its number: metric and target are fields.

The sales department's goal is the one the CRO revises on 2025-10-18 (docs/goal-agility.md walks it):
新增客户数 ≥ 40 → 客户增购额 ≥ ¥800,000; incentive 拓新 70% → 增购 60%; 线索分配优先 → 专属客户成功经理配置.
Team and personal goals under it carry their share of its target, so the approval re-splits them."""
from __future__ import annotations

from decimal import Decimal

from keel.actor import SYSTEM
from keel.auth.directory import find_user
from keel_goal_agility.settings import APP

PERIOD = {"period_start": "2025-10-01", "period_end": "2025-12-31"}

# The revision the CRO files on 2025-10-18 (the case's table): what docs/goal-agility.md submits.
CRO_REVISION = {
    "title": "销售目标由拓新转向增购",
    "reason": "10 月中旬市场部监测到头部客户群批量增购信号，原定“拓新为主”策略不再适用；7 月上线新定价模型后老客户续费率明显提升。",
    "proposed_target": "800000", "proposed_metric": "客户增购额", "proposed_unit": "cny", "proposed_category": "upsell",
    "metric_rationale": "近30天有12家客户主动咨询扩容",
    "proposed_incentive_category": "upsell", "proposed_incentive_weight": "0.60",
    "incentive_rationale": "高客单价客户LTV测算提升40%",
    "proposed_resources": "专属客户成功经理配置", "resources_rationale": "服务响应速度成续约关键因子",
    "resources": "为 TOP50 存量客户配置 3 名专属客户成功经理；销售每日 3 小时由找新线索转为回访存量客户。",
}


def seed(app) -> None:
    """Create the case's goals unless they exist (keel demo runs once per instance, but twice must not double)."""
    runtime = app.extensions["keel"]
    if APP not in {a.id for a in runtime.apps()}:
        return
    import sqlalchemy as sa

    from keel.storage import records

    built = runtime.get(APP)
    with runtime.engine.begin() as conn:
        if conn.execute(sa.select(sa.func.count()).select_from(built.table("goal"))).scalar():
            return
        uid = {u: find_user(conn, u).id for u in ("ceo", "cro", "strategy_lead", "east_mgr", "north_mgr",
                                                  "rep_li", "rep_zhang", "cs_lead")}

        def create(entity, **values):
            return records.create(conn, built, entity, values, SYSTEM)["id"]

        card = create("strategy_card", title="高客单价客户深耕", period="2025-Q4", owner=uid["ceo"], priority=1,
                      keywords="高客单价,增购,续约,客户成功,LTV",
                      description="9 月起公司战略转向高客单价客户深耕：提升存量客户增购与续约。")
        create("strategy_card", title="产品化交付提效", period="2025-Q4", owner=uid["strategy_lead"], priority=2,
               keywords="交付,标准化,实施周期")
        company = create("goal", title="公司 Q4 营收", owner=uid["ceo"], level="company", category="other",
                         metric="季度营收", unit="cny", target=Decimal("12000000"), strategy_card=card, **PERIOD)
        sales = create("goal", title="销售部 Q4 核心目标", owner=uid["cro"], level="department",
                       category="new_business", metric="新增客户数", unit="count", target=Decimal("40"),
                       parent=company, strategy_card=card, incentive_category="new_business",
                       incentive_weight=Decimal("0.70"), resources="线索分配优先", **PERIOD)
        east = create("goal", title="华东大区 Q4 目标", owner=uid["east_mgr"], level="team", category="new_business",
                      metric="新增客户数", unit="count", target=Decimal("14"), target_share=Decimal("0.35"),
                      parent=sales, strategy_card=card, **PERIOD)
        create("goal", title="华北大区 Q4 目标", owner=uid["north_mgr"], level="team", category="new_business",
               metric="新增客户数", unit="count", target=Decimal("13"), target_share=Decimal("0.325"),
               parent=sales, strategy_card=card, **PERIOD)
        li = create("goal", title="李娜 Q4 个人目标", owner=uid["rep_li"], level="personal", category="new_business",
                    metric="新增客户数", unit="count", target=Decimal("5"), target_share=Decimal("0.36"), parent=east,
                    **PERIOD)
        zhang = create("goal", title="张伟 Q4 个人目标", owner=uid["rep_zhang"], level="personal",
                       category="new_business", metric="新增客户数", unit="count", target=Decimal("5"),
                       target_share=Decimal("0.36"), parent=east, **PERIOD)
        create("goal", title="客户成功部 Q4 续约", owner=uid["cs_lead"], level="department", category="renewal",
               metric="续约率", unit="percent", target=Decimal("90"), parent=company, strategy_card=card, **PERIOD)
        create("task", title="每日寻找 3 条新线索", owner=uid["rep_li"], goal=li, status="doing",
               estimate_hours=Decimal("3"))
        create("task", title="回访 TOP50 存量客户", owner=uid["rep_zhang"], goal=zhang, status="todo",
               due="2025-10-31")
        create("task", title="整理 12 家扩容咨询客户清单", owner=uid["east_mgr"], goal=east, status="done")
        create("task", title="周报", owner=uid["rep_zhang"], status="todo")
