"""Dashboards from definitions: validation of widgets and rules, the Dash pages under /dash/ (login, CSRF,
permissions, rules on settings, yellow marks, apply without restart), exports, and plugin widget types."""
from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from helpers_dash import (
    APP_DIR,
    by_id,
    dash_page,
    login,
    make_site,
    text_of,
    with_class,
)
from helpers_registries import REGISTRIES
from keel.definitions import DefinitionErrors, load_bundle, read_bundle
from keel.storage import highlights
from keel.storage.system import audit_events

BOARD = "dashboards/board.json"


@pytest.fixture
def site(tmp_path, db_url):
    s = make_site(tmp_path, db_url)
    yield s
    s.engine.dispose()


@pytest.fixture
def filled(site):
    """ann owns a (red: score 0.9 > 0.5) and b; bob owns c, a child of a; boss owns the root's leaf."""
    a = site.create("node", {"title": "Alpha", "owner": site.users["ann"], "score": "0.9", "goal": "1",
                             "secret": "s-a"})
    b = site.create("node", {"title": "Beta", "owner": site.users["ann"], "score": "0.2", "goal": "1",
                             "parent": a["id"]})
    c = site.create("node", {"title": "Gamma", "owner": site.users["bob"], "score": "0.4", "parent": a["id"]})
    d = site.create("node", {"title": "Delta", "owner": site.users["ann"], "score": "0.3", "parent": c["id"]})
    leaf = site.create("leaf", {"title": "Leaf", "owner": site.users["ann"], "node": b["id"]})
    return {"a": a["id"], "b": b["id"], "c": c["id"], "d": d["id"], "leaf": leaf["id"]}


# -- validation ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundle():
    return read_bundle(APP_DIR, REGISTRIES)


def errors_for(bundle, change) -> list[tuple[str, str]]:
    b = copy.deepcopy(bundle)
    change(b[BOARD])
    with pytest.raises(DefinitionErrors) as caught:
        load_bundle(b, REGISTRIES)
    return [(e.pointer, e.message) for e in caught.value.errors if e.file == BOARD]


def widget(doc, wid):
    return next(w for w in doc["widgets"] if w["id"] == wid)


def test_the_fixture_and_the_demo_dashboards_are_valid(bundle):
    assert "board" in load_bundle(bundle, REGISTRIES).definitions_of("dashboard")
    demo = read_bundle(Path(__file__).resolve().parent.parent / "app_definitions" / "goal_agility", REGISTRIES)
    assert load_bundle(demo, REGISTRIES).definitions_of("dashboard")


@pytest.mark.parametrize("change, pointer, fragment", [
    (lambda d: widget(d, "nodes").update(type="tabel"), "/widgets/2/type", "unknown widget type 'tabel'"),
    (lambda d: widget(d, "nodes").update(entity="nod"), "/widgets/2/entity", "unknown entity 'nod'"),
    (lambda d: widget(d, "nodes")["columns"].append("colour"), "/widgets/2/columns/5", "unknown field 'colour'"),
    (lambda d: widget(d, "nodes").update(colour="red"), "/widgets/2", "unknown key(s) 'colour'"),
    (lambda d: widget(d, "nodes")["rules"][0].update(op="bigger"), "/widgets/2/rules/0/op", "unknown op 'bigger'"),
    (lambda d: widget(d, "nodes")["rules"][0].update(value={"setting": "limits.nope"}),
     "/widgets/2/rules/0/value/setting", "unknown setting 'limits.nope'"),
    (lambda d: widget(d, "nodes")["rules"][0].pop("value"), "/widgets/2/rules/0/value", "needs a value"),
    (lambda d: widget(d, "nodes")["rules"][0].update(style="purple"), "/widgets/2/rules/0/style", "unknown style"),
    (lambda d: widget(d, "nodes")["rules"][0].update(when="x"), "/widgets/2/rules/0", "unknown key(s) in rule: when"),
    (lambda d: widget(d, "nodes")["rules"][0].update(field="status"), "/widgets/2/rules/0/op",
     "compares order, but field 'status' is a select"),
    (lambda d: widget(d, "nodes")["rules"][0].update(value="lots"), "/widgets/2/rules/0/value", "is not a number"),
    (lambda d: widget(d, "nodes")["rules"].append("red"), "/widgets/2/rules/1", "is not of type 'object'"),
    (lambda d: widget(d, "n").update(id="nodes"), "/widgets/2/id", "used twice"),
    (lambda d: widget(d, "total").update(field="title"), "/widgets/1/field", "needs one of"),
    (lambda d: widget(d, "by_status").update(x="colour"), "/widgets/3/x", "unknown field 'colour'"),
    (lambda d: widget(d, "tree").update(parent_field="owner"), "/widgets/4/parent_field", "is a user"),
    (lambda d: widget(d, "g")["links"].append({"entity": "leaf", "field": "title"}), "/widgets/6/links/2/field",
     "is a text"),
    (lambda d: widget(d, "g")["nodes"]["node"]["rules"][0].update(op="~"), "/widgets/6/nodes/node/rules/0/op",
     "unknown op"),
    (lambda d: widget(d, "boss_only").update(roles=["nobody"]), "/widgets/8/roles/0", "unknown role 'nobody'"),
])
def test_a_dashboard_naming_what_does_not_exist_is_a_definition_error(bundle, change, pointer, fragment):
    errors = errors_for(bundle, change)
    assert any(p == pointer and fragment in m for p, m in errors), errors


def test_a_setting_that_is_not_a_number_cannot_be_negated(bundle):
    b = copy.deepcopy(bundle)
    b["app.json"]["settings"]["limits"]["score"] = "high"
    b[BOARD]["widgets"][2]["rules"][0]["value"]["negate"] = True
    with pytest.raises(DefinitionErrors) as caught:
        load_bundle(b, REGISTRIES)
    assert any("is not a number, so it cannot be negated" in e.message for e in caught.value.errors)


# -- pages -------------------------------------------------------------------------------------------------

def test_dash_pages_need_a_login_and_callbacks_need_the_csrf_token(site):
    c = site.app.test_client()
    r = c.get("/dash/dashtest/board")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    r = c.get("/dash/_dash-layout")
    assert r.status_code == 302
    r = c.post("/dash/_dash-update-component", json={})
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    c = login(site, "ann")
    page = c.get("/dash/dashtest/board")
    assert page.status_code == 200
    assert "script-src 'self' 'sha256-" in page.headers["Content-Security-Policy"]
    r = c.post("/dash/_dash-update-component", json={"output": "page.children", "inputs": [], "state": []})
    assert r.status_code == 400  # no X-CSRFToken header: refused like any page form


def test_the_table_is_red_past_the_setting_and_shows_only_what_the_viewer_may_read(site, filled):
    ann = dash_page(login(site, "ann"), "/dash/dashtest/board")
    rows = with_class(ann, "dash-table")[0]
    text = text_of(rows)
    assert "Alpha" in text and "Beta" in text and "Delta" in text
    assert "Gamma" not in text  # bob's
    assert "s-a" not in text and "机密" not in text  # a field only the boss role may read
    red = with_class(ann, "style-red")
    assert any(c["props"].get("id") == f"nodes-row-{filled['a']}" for c in red)
    assert "3 行" in text_of(ann) or "3 rows" in text_of(ann)
    boss = dash_page(login(site, "boss"), "/dash/dashtest/board")
    assert "Gamma" in text_of(boss) and "s-a" in text_of(boss)
    assert by_id(boss, "w-boss_only") is not None and by_id(ann, "w-boss_only") is None


def test_a_changed_setting_and_widget_show_after_apply_without_a_restart(site, filled):
    c = login(site, "boss")
    before = dash_page(c, "/dash/dashtest/board")
    assert by_id(before, f"nodes-row-{filled['c']}")["props"].get("className") in (None, "")
    site.edit_json("app.json", lambda d: d["settings"]["limits"].update(score=0.3))
    site.edit_json(BOARD, lambda d: d["widgets"].append(
        {"id": "late", "type": "kpi", "title": "Late widget", "entity": "node", "metric": "max", "field": "score"}))
    site.apply()
    after = dash_page(c, "/dash/dashtest/board")
    assert "style-red" in by_id(after, f"nodes-row-{filled['c']}")["props"]["className"]  # 0.4 > 0.3 now
    assert "Late widget" in text_of(by_id(after, "w-late"))


def test_a_marked_row_is_yellow_and_acknowledging_it_closes_the_mark(site, filled):
    with site.engine.begin() as conn:
        highlights.mark(conn, "dashtest", "node", filled["b"], [site.users["ann"]], "目标值被上级修改")
    c = login(site, "ann")
    page = dash_page(c, "/dash/dashtest/board")
    row = by_id(page, f"nodes-row-{filled['b']}")
    assert "marked" in row["props"]["className"] and "目标值被上级修改" in text_of(row)
    token = c.get_cookie("_csrf_token", path="/dash/").value
    r = c.post("/dash/acknowledge", data={"csrf_token": "forged", "app": "dashtest", "entity": "node",
                                          "record_id": str(filled["b"]), "next": "/dash/dashtest/board"})
    assert r.status_code == 400
    with site.engine.connect() as conn:
        assert highlights.count_marked(conn, site.users["ann"]) == 1
    r = c.post("/dash/acknowledge", data={"csrf_token": token, "app": "dashtest", "entity": "node",
                                          "record_id": str(filled["b"]), "next": "https://evil.example/"})
    assert r.status_code == 302 and r.headers["Location"].endswith("/dash/")
    with site.engine.connect() as conn:
        assert highlights.count_marked(conn, site.users["ann"]) == 0
        events = conn.execute(sa.select(audit_events.c.action, audit_events.c.user_id).where(
            audit_events.c.action == "highlight.acknowledge")).all()
    assert events == [("highlight.acknowledge", site.users["ann"])]
    row = by_id(dash_page(c, "/dash/dashtest/board"), f"nodes-row-{filled['b']}")
    assert "marked" not in (row["props"].get("className") or "")


def test_every_widget_renders_for_an_empty_dataset(site):
    page = dash_page(login(site, "boss"), "/dash/dashtest/board")
    assert not with_class(page, "widget-error")
    assert "0" in text_of(by_id(page, "w-n"))
    assert text_of(by_id(page, "w-nodes")).count("Nothing to show.") + text_of(by_id(page, "w-nodes")).count(
        "暂无数据。") == 1
    for wid in ("w-by_status", "w-tree", "w-bars", "w-g"):
        assert by_id(page, wid) is not None


def test_kpi_chart_tree_and_progress_compute_over_readable_rows(site, filled):
    page = dash_page(login(site, "ann"), "/dash/dashtest/board")
    assert text_of(with_class(by_id(page, "w-n"), "kpi-value")) == "3"
    total = text_of(by_id(page, "w-total"))
    assert "1.40" in total and "2" in total  # 0.9 + 0.2 + 0.3 of target 1 + 1
    chart = next(c for c in with_class(page, "chart"))
    traces = chart["props"]["figure"]["data"]
    assert traces[0]["y"] == [3.0] and traces[0]["x"] == ["进行"]
    tree = by_id(page, "w-tree")
    # Delta's parent (Gamma) is bob's: Delta starts a tree of its own beside Alpha
    assert [t for t in text_of(tree).split() if t in ("Alpha", "Beta", "Delta")] == ["Alpha", "Beta", "Delta"]
    assert with_class(tree, "style-red")
    bars = with_class(by_id(page, "w-bars"), "progress-item")
    assert len(bars) == 3 and "90%" in text_of(bars[0])


def test_an_unknown_dashboard_and_one_not_for_the_viewer_are_answered_on_the_page(site):
    site.edit_json(BOARD, lambda d: d.update(roles=["boss"]))
    site.apply()
    c = login(site, "ann")
    assert "无权访问" in text_of(dash_page(c, "/dash/dashtest/board")) or \
        "Not allowed" in text_of(dash_page(c, "/dash/dashtest/board"))
    assert "/dash/dashtest/board" not in json.dumps(dash_page(c, "/dash/"))
    assert "/dash/dashtest/board" in json.dumps(dash_page(login(site, "boss"), "/dash/"))
    page = dash_page(c, "/dash/dashtest/nope")
    assert "Not found" in text_of(page) or "未找到" in text_of(page)


# -- export -------------------------------------------------------------------------------------------------

def test_export_has_every_row_the_viewer_may_read_with_formulas_escaped(site, filled):
    site.create("node", {"title": "=HYPERLINK(\"http://x\")", "owner": site.users["ann"], "score": "-1"}, "ann")
    site.create("node", {"title": "@SUM(A1)", "owner": site.users["ann"]}, "ann")
    site.create("node", {"title": "\tTab", "owner": site.users["ann"]}, "ann")
    c = login(site, "ann")
    r = c.get("/dash/dashtest/board/nodes/export.csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(r.data.decode("utf-8-sig"))))
    assert rows[0] == ["ID", "标题", "负责人", "得分", "状态"]  # no secret column for ann
    titles = [row[1] for row in rows[1:]]
    assert "Gamma" not in titles and len(rows) == 1 + 6
    assert "'=HYPERLINK(\"http://x\")" in titles and "'@SUM(A1)" in titles and "'\tTab" in titles
    scores = {row[1]: row[3] for row in rows[1:]}
    assert scores["'=HYPERLINK(\"http://x\")"] == "-1.00"  # a number stays a number
    r = c.get("/dash/dashtest/board/nodes/export.xlsx")
    ws = load_workbook(io.BytesIO(r.data)).active
    values = [[cell.value for cell in row] for row in ws.iter_rows()]
    assert values[0][1] == "标题" and any(v[1] == "'@SUM(A1)" for v in values)
    assert all(not (isinstance(v[1], str) and v[1].startswith("=")) for v in values)
    api = site.api("bob", "GET", "/api/v1/apps/dashtest/dashboards/board/widgets/nodes/export?format=csv")
    assert [row[1] for row in csv.reader(io.StringIO(api.data.decode("utf-8-sig")))][1:] == ["Gamma"]
    assert site.api("bob", "GET", "/api/v1/apps/dashtest/dashboards/board/widgets/nodes/export?format=pdf"
                    ).status_code == 422


def test_export_of_a_widget_not_for_the_viewer_is_refused(site):
    assert login(site, "ann").get("/dash/dashtest/board/boss_only/export.csv").status_code == 404
    assert site.api("ann", "GET", "/api/v1/apps/dashtest/dashboards/board/widgets/nodes/export"
                    ).status_code == 200
    site.edit_json(BOARD, lambda d: d.update(roles=["boss"]))
    site.apply()
    assert site.api("ann", "GET", "/api/v1/apps/dashtest/dashboards/board/widgets/nodes/export"
                    ).status_code == 403


# -- marks over REST --------------------------------------------------------------------------------------

def test_highlights_are_listed_and_acknowledged_over_rest(site, filled):
    with site.engine.begin() as conn:
        highlights.mark(conn, "dashtest", "node", filled["a"], [site.users["ann"], site.users["bob"]], "changed")
        highlights.mark(conn, "dashtest", "leaf", filled["leaf"], [site.users["ann"]], "changed too")
    r = site.api("ann", "GET", "/api/v1/highlights?app=dashtest")
    body = r.get_json()
    assert body["count"] == 2 and {i["entity"] for i in body["items"]} == {"node", "leaf"}
    assert body["items"][0]["url"].startswith("/apps/dashtest/")
    bad = site.api("ann", "POST", "/api/v1/highlights/acknowledge", json={"app": "dashtest", "record_id": "x"})
    assert bad.status_code == 422 and "record_id" in bad.get_json()["errors"]
    bad = site.api("ann", "POST", "/api/v1/highlights/acknowledge", json={"record_id": 1})
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"app", "entity"}
    ok = site.api("ann", "POST", "/api/v1/highlights/acknowledge",
                  json={"app": "dashtest", "entity": "node", "record_id": filled["a"]})
    assert ok.get_json() == {"acknowledged": 1}
    assert site.api("ann", "GET", "/api/v1/highlights").get_json()["count"] == 1
    assert site.api("bob", "GET", "/api/v1/highlights").get_json()["count"] == 1  # bob's own mark stays


# -- plugin widget types -------------------------------------------------------------------------------------

class _Greeting:
    """A plugin's widget type: its own keys, its own check, its own layout and rows to export."""

    name = "greeting"
    params_schema = {"type": "object", "required": ["entity"], "additionalProperties": False,
                     "properties": {"entity": {"type": "string"}, "word": {"type": "string"}}}

    def check(self, widget, ctx):
        if widget["entity"] not in ctx.entities:
            yield "/entity", f"no entity {widget['entity']}"

    def data(self, ctx, widget):
        rows = ctx.records(widget["entity"])
        return {"columns": [{"id": "t", "label": "Title"}], "rows": [[r["title"]] for r in rows]}

    def layout(self, ctx, widget):
        from dash import html

        n = len(ctx.records(widget["entity"]))
        return html.Div(f"{widget.get('word', 'hello')} {n}", className="greeting")


class _GreetingPlugin:
    from keel.hooks import hookimpl

    @hookimpl
    def keel_dashboard_widgets(self):
        return [_Greeting()]


def test_a_plugin_adds_a_widget_type_through_the_hook(tmp_path, sqlite_url):
    site = make_site(tmp_path, sqlite_url, extra_plugins=[("greeting", _GreetingPlugin())])
    registries = site.app.extensions["keel_plugins"].registries()
    b = read_bundle(site.folder, registries)
    b[BOARD]["widgets"].append({"id": "hi", "type": "greeting", "entity": "node", "wrd": "x"})
    with pytest.raises(DefinitionErrors) as caught:
        load_bundle(b, registries)
    assert any("unknown key(s) 'wrd'" in e.message for e in caught.value.errors)
    b[BOARD]["widgets"][-1] = {"id": "hi", "type": "greeting", "entity": "nothing"}
    with pytest.raises(DefinitionErrors) as caught:
        load_bundle(b, registries)
    assert [(e.pointer, e.message) for e in caught.value.errors] == [("/widgets/9/entity", "no entity nothing")]
    site.edit_json(BOARD, lambda d: d["widgets"].append({"id": "hi", "type": "greeting", "entity": "node",
                                                         "word": "你好"}))
    site.apply()
    site.create("node", {"title": "=1+1", "owner": site.users["ann"]}, "ann")
    c = login(site, "ann")
    assert text_of(by_id(dash_page(c, "/dash/dashtest/board"), "w-hi")).strip() == "你好 1"
    r = c.get("/dash/dashtest/board/hi/export.csv")
    assert r.data.decode("utf-8-sig").splitlines() == ["Title", "'=1+1"]
    site.engine.dispose()


def test_pages_follow_the_viewer_language(site, filled):
    c = login(site, "ann")
    zh = c.get("/dash/dashtest/board")
    assert '<html lang="zh-CN">' in zh.text and ">看板<" in zh.text
    assert "测试看板" in text_of(dash_page(c, "/dash/dashtest/board"))
    en = c.get("/dash/dashtest/board?lang=en")
    assert '<html lang="en">' in en.text and ">Dashboards<" in en.text
    page = dash_page(c, "/dash/dashtest/board")  # the choice sticks for the callbacks too
    assert "Test board" in text_of(page) and "Title" in text_of(by_id(page, "w-nodes"))


def test_a_line_chart_buckets_dates_by_month_per_series(site):
    for title, due, status in (("a", "2025-10-03", "open"), ("b", "2025-10-30", "open"), ("c", "2025-11-02", "open"),
                               ("d", "2025-11-20", "closed")):
        site.create("node", {"title": title, "owner": site.users["ann"], "due": due, "status": status})
    page = dash_page(login(site, "ann"), "/dash/dashtest/board")
    traces = {t["name"]: (t["x"], t["y"]) for t in with_class(by_id(page, "w-trend"), "chart")[0]["props"]
              ["figure"]["data"]}
    assert traces == {"数量 · 进行": (["2025-10", "2025-11"], [2.0, 1.0]),
                      "数量 · 关闭": (["2025-10", "2025-11"], [0.0, 1.0])}


def test_tree_and_progress_export_too(site, filled):
    c = login(site, "ann")
    tree = list(csv.reader(io.StringIO(c.get("/dash/dashtest/board/tree/export.csv").data.decode("utf-8-sig"))))
    assert tree[0] == ["ID", "level", "tree", "得分"]
    assert [(r[1], r[2]) for r in tree[1:]] == [("0", "Alpha"), ("1", "Beta"), ("0", "Delta")]
    bars = list(csv.reader(io.StringIO(c.get("/dash/dashtest/board/bars/export.csv").data.decode("utf-8-sig"))))
    assert bars[1][1:] == ["Alpha", "0.90", "1.00", "90"]


def test_a_broken_entity_file_is_reported_once_not_again_by_each_widget(bundle):
    b = copy.deepcopy(bundle)
    b["entities/node.json"]["fields"] = "none"
    with pytest.raises(DefinitionErrors) as caught:
        load_bundle(b, REGISTRIES)
    assert {e.file for e in caught.value.errors} == {"entities/node.json"}


def test_a_table_over_more_rows_than_a_read_takes_says_so_and_its_export_refuses(site):
    from test_dashboard_graph import _bulk_tree

    _bulk_tree(site, 20_001)
    page = dash_page(login(site, "ann"), "/dash/dashtest/board")
    assert "20,000" in text_of(with_class(by_id(page, "w-nodes"), "hint"))
    r = site.api("ann", "GET", "/api/v1/apps/dashtest/dashboards/board/widgets/nodes/export?format=csv")
    assert r.status_code == 422 and "Narrow it with filters" in r.get_json()["errors"]["_record"][0] \
        or "筛选" in r.get_json()["errors"]["_record"][0]


def test_a_script_of_a_package_dash_does_not_serve_is_a_404_not_a_500(site):
    c = login(site, "ann")
    assert c.get("/dash/_dash-component-suites/no_such_package/x.js").status_code == 404
