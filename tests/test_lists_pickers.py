"""List views from definitions (columns, default sort, filters, search, title links) and the type-ahead
pickers over all records and people (pinyin order), on the demo company."""
from __future__ import annotations

import re

import sqlalchemy as sa

from test_workbench import login


def test_the_goal_list_shows_the_views_columns_sorted_with_title_links_and_formats(demo_app):
    c = login(demo_app, "east_mgr")
    page = c.get("/apps/goal_agility/goal").text
    assert "<h1>目标列表</h1>" in page
    heads = re.findall(r"<th[^>]*><a [^>]*>([^<]+)</a>", page)
    assert heads[:5] == ["目标", "责任人", "层级", "目标类别", "目标值"], heads
    company = re.search(r'<td data-label="目标"><a href="(/apps/goal_agility/goal/\d+)">公司 Q4 营收</a>', page)
    assert company, page  # the title links to the record; "company" level sorts first
    assert "¥12,000,000.00" in page and "14 个" in page  # money goal and count goal, units beside
    assert "12000000.00" not in page and "5.00" not in page


def test_search_and_filters_on_the_list_page(demo_app):
    c = login(demo_app, "east_mgr")
    found = c.get("/apps/goal_agility/goal?view=goals&q=华东").text
    assert "华东大区 Q4 目标" in found and "华北大区" not in found
    actives = c.get("/apps/goal_agility/goal?view=goals&level=personal").text
    assert "李娜 Q4 个人目标" in actives and "Q4 营收" not in actives
    bad = c.get("/apps/goal_agility/goal?view=goals&target__lt=abc")
    assert bad.status_code == 200 and 'class="errors"' in bad.text  # said, and the list still shows
    assert c.get("/apps/goal_agility/goal?view=nope").status_code == 404


def test_the_app_menu_offers_lists_before_new_forms(demo_app):
    page = login(demo_app, "rep_li").get("/workbench").text
    menu = re.search(r'<details class="menu">(.*?)</details>', page, re.DOTALL).group(1)
    links = re.findall(r'<a href="([^"]+)">', menu)
    assert links[0] == "/apps/goal_agility/goal?view=goals", links
    assert any(h.startswith("/apps/goal_agility/forms/") for h in links)
    assert links.index("/apps/goal_agility/goal?view=goals") < min(
        i for i, h in enumerate(links) if "/forms/" in h)


def test_user_picker_finds_by_pinyin_and_orders_by_pinyin(demo_app):
    c = login(demo_app, "rep_li")
    r = c.get("/pickers/users?q=ln")
    assert r.status_code == 200
    labels = [i["label"] for i in r.get_json()["items"]]
    assert "李娜" in labels
    everyone = c.get("/pickers/users?limit=50").get_json()
    assert everyone["more"] is True  # 80 people: more than one page
    from keel.web.pickers import pinyin_of

    names = [i["label"] for i in everyone["items"]]
    assert names == sorted(names, key=lambda n: pinyin_of(n)[0])
    assert c.get("/pickers/users?limit=0").status_code == 422  # said on a page, nothing else happens


def test_the_api_picker_answers_json_and_says_what_is_wrong(demo_app):
    from keel.auth.tokens import issue_token
    from test_workbench import user_id

    with demo_app.extensions["keel"].engine.begin() as conn:
        token = issue_token(conn, user_id(demo_app, "rep_li"))
    api = demo_app.test_client()
    h = {"Authorization": f"Bearer {token}"}
    r = api.get("/api/v1/pickers/users?q=lina", headers=h)
    assert r.status_code == 200 and r.get_json()["items"][0]["label"] == "李娜"
    r = api.get("/api/v1/pickers/users?limit=500&offset=-1&q=" + "x" * 101, headers=h)
    assert r.status_code == 422 and set(r.get_json()["errors"]) == {"limit", "offset", "q"}
    r = api.get("/api/v1/pickers/apps/goal_agility/goal?q=华东", headers=h)
    assert [i["label"] for i in r.get_json()["items"]] == ["华东大区 Q4 目标"]
    assert api.get("/api/v1/pickers/apps/goal_agility/nope", headers=h).status_code == 404


def test_record_picker_searches_all_records_the_viewer_may_read(demo_app):
    from keel.actor import SYSTEM
    from keel.storage import records

    runtime = demo_app.extensions["keel"]
    built = runtime.get("goal_agility")
    with runtime.engine.begin() as conn:
        owner = conn.execute(sa.text("SELECT id FROM keel_users WHERE username = 'rep_li'")).scalar_one()
        for i in range(600):  # past the old cap of 500 options
            records.create(conn, built, "task", {"title": f"批量任务 {i:03d}", "owner": owner, "status": "todo"},
                           SYSTEM)
    c = login(demo_app, "rep_li")
    r = c.get("/pickers/apps/goal_agility/task?q=批量任务 599").get_json()
    assert [i["label"] for i in r["items"]] == ["批量任务 599"]
    page = c.get("/pickers/apps/goal_agility/task?q=批量&limit=50&offset=550").get_json()
    assert len(page["items"]) == 50 and page["more"] is False


def test_api_picker_needs_a_token_and_form_selects_carry_the_picker(demo_app):
    assert demo_app.test_client().get("/api/v1/pickers/users?q=li").status_code == 401
    c = login(demo_app, "rep_li")
    form = c.get("/apps/goal_agility/forms/task").text
    assert 'data-picker="/pickers/apps/goal_agility/goal"' in form and 'data-picker="/pickers/users"' in form
