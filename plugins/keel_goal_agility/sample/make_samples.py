"""Writes the sample connector files of the Goal Agility demo (the case: an 80-person SaaS company, Q4 2025;
the CRO's change on 2025-10-18). Deterministic; run it to regenerate the CSVs next to it. The figures are
chosen so that the app's own computations give the case's numbers: over 60 days before and after the
change, sales output per head +27%, upsell share 18% → 41%, alignment index 58 → 83 (with the pulse answers
and tasks that the demo creates, see keel_goal_agility/measure/demo.py)."""
from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEFORE = (dt.date(2025, 8, 19), dt.date(2025, 10, 17))
AFTER = (dt.date(2025, 10, 18), dt.date(2025, 12, 16))
REPS = ["rep_li", "rep_zhang", "east_mgr", "north_mgr"] + [f"staff{n:02d}" for n in range(1, 24)]


def spread(first: dt.date, last: dt.date, n: int) -> list[dt.date]:
    days = (last - first).days
    return [first + dt.timedelta(days=(i * days) // max(n - 1, 1)) for i in range(n)]


def amounts(total: int, n: int) -> list[int]:
    base = total // n
    return [base] * (n - 1) + [total - base * (n - 1)]


def write(name: str, header: list[str], rows: list[list]) -> None:
    with open(HERE / name, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def deals() -> None:
    rows, n = [], 0
    # before: ¥3,000,000, 18% upsell; after: ¥3,810,000 (+27%), 41% upsell
    for (first, last), total, upsell, n_up, n_other in ((BEFORE, 3_000_000, 540_000, 6, 24),
                                                        (AFTER, 3_810_000, 1_562_100, 17, 22)):
        kinds = [("upsell", a) for a in amounts(upsell, n_up)]
        other = amounts(total - upsell, n_other)
        kinds += [("new_business" if i % 3 else "renewal", a) for i, a in enumerate(other)]
        for day, (kind, amount) in zip(spread(first, last, len(kinds)), kinds, strict=True):
            n += 1
            rows.append([f"D{n:04d}", day.isoformat(), REPS[n % len(REPS)], f"客户{n:03d}", kind, amount])
    write("crm_deals.csv", ["deal_id", "closed_on", "sales_rep", "customer", "kind", "amount"], rows)


def actuals() -> None:
    # October 2025, the month the snapshot flags: new customers far behind, revenue and renewals on track.
    rows = [["2025-10", "ceo", "季度营收", "3600000"], ["2025-10", "cro", "新增客户数", "6"],
            ["2025-10", "east_mgr", "新增客户数", "2"], ["2025-10", "north_mgr", "新增客户数", "3"],
            ["2025-10", "rep_li", "新增客户数", "1"], ["2025-10", "rep_zhang", "新增客户数", "1"],
            ["2025-10", "cs_lead", "续约率", "93"]]
    write("crm_actuals.csv", ["period", "owner", "metric", "value"], rows)
    write("finance_forecast.csv", ["period", "owner", "metric", "forecast"],
          [["2025-10", "ceo", "季度营收", "11000000"], ["2025-10", "cro", "新增客户数", "21"],
           ["2025-10", "cs_lead", "续约率", "92"]])


def signals() -> None:
    write("market_signals.csv", ["signal_id", "observed_on", "kind", "source", "summary", "category"], [
        ["S001", "2025-09-12", "competitor_action", "行业媒体", "竞品 A 推出按席位计费的入门版，新客价格下调 20%", "new_business"],
        ["S002", "2025-10-09", "competitor_action", "客户转述", "竞品 B 向头部客户推出增购套餐（seats + API 调用量打包）", "upsell"],
        ["S003", "2025-10-14", "customer_demand", "市场部监测", "近 30 天 12 家头部客户主动咨询扩容", "upsell"],
        ["S004", "2025-10-21", "pricing", "竞品官网", "竞品 A 续约客户享 8 折", "renewal"],
        ["S005", "2025-11-06", "competitor_action", "展会", "竞品 C 发布客户成功托管服务", "upsell"]])
    fb = [
        ("2025-10-03", "星河科技", "ticket", "希望增加 seats，现在 50 个席位不够用，扩容流程太慢"),
        ("2025-10-05", "Acme China", "survey", "Renewal price is OK but we need more API quota, 扩容报价什么时候给？"),
        ("2025-10-08", "云帆医疗", "call", "客户成功经理响应很快，续费率我们内部评价很好，考虑增购数据分析模块"),
        ("2025-10-10", "北辰物流", "ticket", "API rate limit 太低，影响业务，希望扩容"),
        ("2025-10-12", "Blue Ocean Ltd", "im", "We want to upgrade to the enterprise plan (增购) before Q4 ends"),
        ("2025-10-15", "蓝鲸教育", "survey", "新定价模型比以前灵活，续费没问题，想增购 SSO 和审计日志"),
        ("2025-10-17", "华信制造", "call", "扩容 200 seats 的预算已批，请尽快安排客户成功经理对接"),
        ("2025-10-20", "Nova Retail", "ticket", "Need SSO + audit log, 增购 budget approved"),
        ("2025-10-23", "启明金融", "call", "数据导出太慢，希望 API 支持批量导出"),
        ("2025-10-27", "星河科技", "im", "扩容之后还想增购 BI 模块，请客户成功经理联系"),
        ("2025-10-30", "海川零售", "survey", "价格比竞品高，但服务好；续约意向明确"),
        ("2025-11-04", "Acme China", "ticket", "API quota upgrade done, thanks. 下一步考虑增购"),
    ]
    write("customer_feedback.csv", ["feedback_id", "received_on", "customer", "channel", "text"],
          [[f"F{i + 1:03d}", *row] for i, row in enumerate(fb)])


ALIGNED = ["复盘高客单价客户名单，确定增购优先级", "讨论 TOP50 存量客户增购方案与客户成功配置",
           "续约风险客户逐一过会，明确客户成功经理分工", "测算 LTV，调整大客户报价策略",
           "交付标准化模板评审，缩短实施周期"]
UNALIGNED = ["周例会：同步本周线索数量与拜访计划", "讨论办公室搬迁和团建安排", "新人培训排期与考勤说明",
             "整理展会物料清单和预算", "讨论季度报销流程调整"]
DEPTS = ["sales", "sales_east", "sales_north", "cs", "marketing", "rnd"]


def chosen(i: int, k: int, n: int) -> bool:
    """Whether item i of n is one of the k picked, spread evenly (so every month has its share)."""
    return (i + 1) * k // n > i * k // n


def notes() -> None:
    rows, n = [], 0
    for (first, last), total, aligned in ((BEFORE, 20, 10), (AFTER, 20, 17)):
        for i, day in enumerate(spread(first, last, total)):
            n += 1
            body = ALIGNED[i % len(ALIGNED)] if chosen(i, aligned, total) else UNALIGNED[i % len(UNALIGNED)]
            rows.append([f"M{n:03d}", day.isoformat(), DEPTS[i % len(DEPTS)], f"{DEPTS[i % len(DEPTS)]} 会议 {n}",
                         f"议题：{body}。记录人整理。"])
    write("meeting_notes.csv", ["note_id", "held_on", "department", "title", "body"], rows)


def collaboration() -> None:
    rows, n = [], 0
    pairs = [("sales_east", "cs"), ("sales_north", "cs"), ("cs", "rnd"), ("marketing", "sales"), ("sales", "finance"),
             ("rnd", "cs"), ("sales_south", "marketing")]
    # 80 people × 0.5 per head per 30 days × 2 = 80 requests score 1: before 56 (0.70), after 68 (0.85)
    for (first, last), total in ((BEFORE, 56), (AFTER, 68)):
        for i, day in enumerate(spread(first, last, total)):
            n += 1
            a, b = pairs[i % len(pairs)]
            rows.append([f"IM{n:04d}", day.isoformat(), a, b, f"协作请求 {n}：客户 {n:03d} 的扩容/续约支持"])
    write("im_collaboration.csv", ["request_id", "requested_on", "from_department", "to_department", "topic"], rows)


if __name__ == "__main__":
    deals()
    actuals()
    signals()
    notes()
    collaboration()
