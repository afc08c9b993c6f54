"""The goal alignment index (item 8), the pulse survey and the before/after effect panel (item 9), and the
demo's snapshot history (the sales goals red), on `keel demo`'s data: every figure computed from the
app's own records — add a record and the figure moves."""
from __future__ import annotations

import json
import shutil
from decimal import Decimal

import pytest
import sqlalchemy as sa

from helpers_goal_measure import APPS  # noqa: F401 - puts the plugin on sys.path

BASE = "/api/v1/apps/goal_agility/measures"


def _headers(app, username: str) -> dict[str, str]:
    from keel.auth.directory import find_user
    from keel.auth.tokens import issue_token

    with app.extensions["keel"].engine.begin() as conn:
        return {"Authorization": f"Bearer {issue_token(conn, find_user(conn, username).id)}"}


def _metrics(body) -> dict[str, dict]:
    return {m["id"]: m for m in body["metrics"]}


def test_the_demo_flags_the_sales_goals_red_and_keeps_the_others(demo_app):
    built = demo_app.extensions["keel"].get("goal_agility")
    goal = built.table("goal")
    with demo_app.extensions["keel"].engine.connect() as conn:
        rows = conn.execute(sa.select(goal.c.metric, goal.c.flag, goal.c.deviation, goal.c.last_snapshot)).all()
    by_metric: dict[str, set] = {}
    for r in rows:
        by_metric.setdefault(r.metric, set()).add(r.flag)
    assert by_metric["新增客户数"] == {"red"}
    assert by_metric["季度营收"] == {"none"} and by_metric["续约率"] == {"none"}
    assert {r.last_snapshot for r in rows} == {"2025-10"}


def test_the_effect_panel_gives_the_cases_figures_from_the_records(demo_app):
    client = demo_app.test_client()
    r = client.get(f"{BASE}/effect?change_date=2025-10-18", headers=_headers(demo_app, "ceo"))
    assert r.status_code == 200, r.json
    m = _metrics(r.json)
    assert (m["alignment_index"]["before"], m["alignment_index"]["after"]) == ("58.0", "83.0")
    assert m["sales_per_head"]["change"] == "0.2700"  # +27%
    assert (m["upsell_share"]["before"], m["upsell_share"]["after"]) == ("0.1800", "0.4100")
    assert (m["agreement_rate"]["before"], m["agreement_rate"]["after"]) == ("0.4286", "0.7917")  # 43% -> 79%
    assert Decimal(m["top3_named_share"]["before"]) < Decimal("0.40")
    assert r.json["before"] == {"from": "2025-08-19", "to": "2025-10-17", "pulse_answers": 70}

    # Computed, not typed in: one more upsell deal after the change moves the share.
    from keel.actor import SYSTEM
    from keel.storage import records

    runtime = demo_app.extensions["keel"]
    with runtime.engine.begin() as conn:
        records.create(conn, runtime.get("goal_agility"), "crm_deal", {
            "closed_on": "2025-11-20", "customer": "新客户", "kind": "upsell", "amount": "190000",
            "external_id": "T-1"}, SYSTEM)
    after = _metrics(client.get(f"{BASE}/effect?change_date=2025-10-18", headers=_headers(demo_app, "ceo")).json)
    assert after["upsell_share"]["after"] == "0.4380"  # (1,562,100 + 190,000) / (3,810,000 + 190,000)


def test_effect_panel_refuses_bad_input_and_non_managers(demo_app):
    client = demo_app.test_client()
    ceo = _headers(demo_app, "ceo")
    assert client.get(f"{BASE}/effect?change_date=2025-13-01", headers=ceo).json["errors"]["change_date"]
    assert client.get(f"{BASE}/effect?change_date=2025-10-18&window_days=0", headers=ceo).status_code == 422
    assert client.get(f"{BASE}/effect?change_date=2025-10-18", headers=_headers(demo_app, "rep_li")).status_code == 403


def test_alignment_index_by_month_with_inspectable_components(demo_app):
    client = demo_app.test_client()
    r = client.get(f"{BASE}/alignment?from=2025-08&to=2025-12", headers=_headers(demo_app, "strategy_lead"))
    assert r.status_code == 200, r.json
    series = r.json["series"]
    assert [s["period"] for s in series] == ["2025-08", "2025-09", "2025-10", "2025-11", "2025-12"]
    weights = r.json["weights"]
    for s in series:  # the index is exactly its components under the weights
        parts = {k: c["score"] for k, c in s["components"].items() if c["score"] is not None}
        expected = 100 * sum(weights[k] * v for k, v in parts.items()) / sum(weights[k] for k in parts)
        assert s["index"] == pytest.approx(expected, abs=0.05)
    november = series[3]["components"]
    assert november["keywords"]["notes"] > 0 and "增购" in november["keywords"]["keywords"]
    assert november["collaboration"]["people"] == 80
    assert series[4]["index"] > series[0]["index"]  # the trend after the change

    table = client.get(f"{BASE}/alignment/departments?period=2025-11", headers=_headers(demo_app, "strategy_lead"))
    rows = {row["department"]: row for row in table.json}
    assert rows["company"]["index"] == series[3]["index"]
    assert rows["sales"]["components"]["collaboration"]["people"] == 28  # sales with its three regions
    bad = client.get(f"{BASE}/alignment?department=nope&from=2025-08&to=2025-09", headers=_headers(demo_app, "ceo"))
    assert bad.status_code == 422
    assert client.get(f"{BASE}/alignment", headers=_headers(demo_app, "rep_li")).status_code == 403


def test_alignment_weights_are_a_setting_an_admin_changes_without_code(demo_app, tmp_path):
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from keel.definitions.loader import load_app_dir

    client = demo_app.test_client()
    url = f"{BASE}/alignment?from=2025-11&to=2025-11"
    before = client.get(url, headers=_headers(demo_app, "ceo")).json["series"][0]
    folder = tmp_path / "goal_agility"
    shutil.copytree(APPS / "goal_agility", folder)
    app_json = json.loads((folder / "app.json").read_text("utf-8"))
    app_json["settings"]["alignment_weights"] = {"keywords": 0, "task_links": 0, "collaboration": 1}
    (folder / "app.json").write_text(json.dumps(app_json, ensure_ascii=False), "utf-8")
    runtime = demo_app.extensions["keel"]
    apply_app(runtime.engine, load_app_dir(folder, demo_app.extensions["keel_plugins"].registries()), SYSTEM)

    after = client.get(url, headers=_headers(demo_app, "ceo")).json["series"][0]
    assert after["index"] == pytest.approx(100 * after["components"]["collaboration"]["score"], abs=0.05)
    assert after["index"] != before["index"]


def test_the_pulse_survey_is_a_form_staff_submit(demo_app):
    client = demo_app.test_client()
    rep = _headers(demo_app, "rep_li")
    schema = client.get("/api/v1/apps/goal_agility/forms/pulse_survey", headers=rep)
    assert schema.status_code == 200
    assert {"top_goal_1", "top_goal_2", "top_goal_3", "agreement"} <= set(schema.json["properties"])
    missing = client.post("/api/v1/apps/goal_agility/forms/pulse_survey", headers=rep,
                          json={"top_goal_1": "高客单价客户深耕", "top_goal_2": "产品化交付提效", "top_goal_3": "Q4 营收"})
    assert missing.status_code == 422 and "agreement" in missing.json["errors"]
    ok = client.post("/api/v1/apps/goal_agility/forms/pulse_survey", headers=rep,
                     json={"top_goal_1": "高客单价客户深耕", "top_goal_2": "产品化交付提效", "top_goal_3": "Q4 营收",
                           "agreement": "5"})
    assert ok.status_code == 201, ok.json
    # Its date is the day it was submitted: a window starting yesterday holds exactly this answer.
    import datetime as dt

    yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    body = client.get(f"{BASE}/effect?change_date={yesterday}&window_days=30", headers=_headers(demo_app, "ceo")).json
    assert body["after"]["pulse_answers"] == 1
    m = _metrics(body)
    assert (m["agreement_rate"]["after"], m["top3_named_share"]["after"]) == ("1.0000", "1.0000")
    assert m["agreement_rate"]["before"] is None  # no answers in that window: no data, not 0


def _login(app, username: str):
    from keel.demo import DEMO_PASSWORD
    from test_jobs_helpers import csrf_of

    client = app.test_client()
    r = client.post("/login", data={"username": username, "password": DEMO_PASSWORD,
                                     "csrf_token": csrf_of(client.get("/login").text)})
    assert r.status_code in (302, 303)
    return client


def test_the_measures_page_shows_red_goals_alignment_and_the_effect_panel_in_chinese(demo_app):
    page = _login(demo_app, "ceo").get("/apps/goal_agility/measures?change_date=2025-10-18")
    assert page.status_code == 200
    html = page.text
    built = demo_app.extensions["keel"].get("goal_agility")
    goal = built.table("goal")
    with demo_app.extensions["keel"].engine.connect() as conn:
        new_customer_goals = conn.execute(sa.select(sa.func.count()).where(goal.c.metric == "新增客户数")).scalar()
    assert "2025-10" in html and html.count('class="flag-red"') == new_customer_goals
    assert "-55.5%" in html  # the sales department: 6 of 13.5 expected by the end of October
    assert "目标对齐度指数" in html and "58.0" in html and "83.0" in html
    assert "18.0%" in html and "41.0%" in html
    assert "Goal alignment index" not in html  # zh page: no English leaking
    rep = _login(demo_app, "rep_li").get("/apps/goal_agility/measures")
    assert rep.status_code == 200 and 'id="alignment"' not in rep.text  # aggregates are for managers up


@pytest.fixture
def world(tmp_path, db_url, monkeypatch):
    from helpers_goal_measure import World

    w = World(tmp_path, db_url, monkeypatch)
    yield w
    w.close()


def test_alignment_and_effect_on_both_databases(world):
    import datetime as dt

    from keel.actor import SYSTEM
    from keel.storage import records

    built, engine = world.built, world.engine
    task = built.table("task")
    with engine.begin() as conn:
        def create(entity, **values):
            return records.create(conn, built, entity, values, SYSTEM)["id"]

        create("strategy_card", title="高客单价客户深耕", period="2025-Q4", owner=world.users["cro"],
               keywords="高客单价,增购")
        g = create("goal", title="增购", owner=world.users["rep_a"], level="personal", category="upsell",
                   metric="增购额", unit="cny", target="100000")
        for day, body in (("2025-11-03", "讨论 TOP 客户增购"), ("2025-11-04", "团建安排")):
            create("meeting_note", title="周会", held_on=day, department="sales", body=body)
        for linked in (True, False):
            tid = create("task", title="回访", owner=world.users["rep_a"], goal=g if linked else None)
            made = dt.datetime(2025, 11, 5, 10, tzinfo=dt.UTC)
            conn.execute(task.update().where(task.c.id == tid).values(created_at=made))
        create("collaboration_request", requested_on="2025-11-06", from_department="sales", to_department="hq",
               topic="扩容支持")
        for day, kind, amount in (("2025-10-20", "new_business", "300"), ("2025-11-20", "upsell", "100"),
                                  ("2025-11-21", "new_business", "300")):
            create("crm_deal", closed_on=day, kind=kind, amount=amount, customer="c")
        create("pulse_response", answered_on="2025-11-10", top_goal_1="高客单价客户深耕", top_goal_2="x",
               top_goal_3="y", agreement="4", respondent=world.users["rep_a"])

    client = world.app.test_client()
    body = client.get("/api/v1/apps/goal_agility/measures/alignment?department=sales&from=2025-11&to=2025-11",
                      headers=world.token("cro")).json
    (month,) = body["series"]
    comps = month["components"]
    assert (comps["keywords"]["matched_notes"], comps["keywords"]["notes"], comps["keywords"]["keywords"]) == (1, 2, ["增购"])
    assert (comps["task_links"]["linked"], comps["task_links"]["tasks"]) == (1, 2)
    # 1 request by 3 people in 30 days against 0.5 per head: 1 / 1.5
    assert (comps["collaboration"]["requests"], comps["collaboration"]["people"], comps["collaboration"]["score"]) == \
        (1, 3, 0.6667)
    assert month["index"] == 53.3  # 100 × (0.4×0.5 + 0.4×0.5 + 0.2×0.6667)

    panel = _metrics(client.get("/api/v1/apps/goal_agility/measures/effect?change_date=2025-11-15&window_days=30",
                                headers=world.token("cro")).json)
    assert panel["upsell_share"]["before"] == "0.0000" and panel["upsell_share"]["after"] == "0.2500"
    assert panel["sales_per_head"]["before"] == "100.00" and panel["sales_per_head"]["after"] == "133.33"
    assert panel["agreement_rate"]["before"] == "1.0000" and panel["agreement_rate"]["after"] is None
    assert panel["top3_named_share"]["before"] == "1.0000"  # one card only: naming it is naming them all


def test_a_goal_without_actuals_shows_no_data_not_zero_percent(demo_app):
    from keel.actor import SYSTEM
    from keel.storage import records

    runtime = demo_app.extensions["keel"]
    built = runtime.get("goal_agility")
    with runtime.engine.begin() as conn:
        from keel.auth.directory import find_user

        gid = records.create(conn, built, "goal", {
            "title": "新业务线试点", "owner": find_user(conn, "cro").id, "level": "department", "category": "other",
            "metric": "试点客户数", "unit": "count", "target": "10"}, SYSTEM)["id"]
    client = _login(demo_app, "ceo")
    import re

    def shown(html: str, label: str) -> str:
        return re.search(rf"<dt>{label}</dt>\s*<dd>(.*?)</dd>", html, re.S).group(1).strip()

    html = client.get(f"/apps/goal_agility/goal/{gid}").text
    assert (shown(html, "偏离度"), shown(html, "最近快照")) == ("暂无数据", "尚未快照")
    goal = built.table("goal")
    with runtime.engine.connect() as conn:
        sales = conn.execute(sa.select(goal.c.id).where(goal.c.metric == "新增客户数", goal.c.level == "department")
                             ).scalar_one()
    assert shown(client.get(f"/apps/goal_agility/goal/{sales}").text, "偏离度") == "-55.5%"  # keel.formats: percentages to one decimal


def _widget_context(demo_app, conn, username: str):
    """The dashboards' WidgetContext when that engine part is present; else the four things these widgets
    read from it (connection, built app, viewer, language)."""
    from dataclasses import dataclass

    from keel.auth.directory import find_user, get_actor

    built = demo_app.extensions["keel"].get("goal_agility")
    actor = get_actor(conn, find_user(conn, username).id)
    try:
        from keel.dashboards.context import WidgetContext
    except ImportError:
        @dataclass
        class WidgetContext:  # noqa: F811 - the same fields, in the same order
            conn: object
            built: object
            actor: object
            lang: str = "zh"
    return WidgetContext(conn, built, actor, "zh")


def test_board_widgets_show_the_alignment_trend_and_the_effect_panel(demo_app):
    from keel_goal_agility.measure.widgets import AlignmentWidget, EffectWidget

    with demo_app.extensions["keel"].engine.connect() as conn:
        ceo = _widget_context(demo_app, conn, "ceo")
        trend = AlignmentWidget().data(ceo, {"id": "a", "type": "goal_alignment", "months": 5})
        panel = EffectWidget().data(ceo, {"id": "e", "type": "goal_effect", "change_date": "2025-10-18"})
        denied = EffectWidget().data(_widget_context(demo_app, conn, "rep_li"),
                                     {"id": "e", "type": "goal_effect", "change_date": "2025-10-18"})
    assert [r[0] for r in trend["rows"]] == ["2025-08", "2025-09", "2025-10", "2025-11", "2025-12"]
    assert [c["label"] for c in trend["columns"]][:2] == ["月份", "对齐度指数"]
    assert panel["rows"][0] == ["目标对齐度指数", "58.0", "83.0"]
    assert panel["rows"][2] == ["增购收入贡献比", "18.0%", "41.0%"]
    assert denied == {"columns": [], "rows": [], "denied": True}
    assert list(EffectWidget().check({"change_date": "2025-02-30"}, None)) == [
        ("/change_date", "not a date: '2025-02-30' (YYYY-MM-DD)")]
