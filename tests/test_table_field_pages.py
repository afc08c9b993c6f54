"""A `table` field on the pages, end to end: shown as a table (headers and option labels in the reader's
language, each cell shown as a field of its column's type), edited as a grid of inputs built from the
definition's columns and collected back into rows that the write path checks; the edit form hidden
while a workflow freezes the record; system columns naming the platform when it wrote the row."""
from __future__ import annotations

import html
import json
import re

import pytest
import sqlalchemy as sa

from helpers_registries import REGISTRIES
from test_pages import Site, add_users, csrf_of, field_block, setup_site
from test_workflow_pages import act, task_ids

FORM = "/apps/tabletest/forms/new_plan"
REQUEST_FORM = "/apps/tabletest/forms/plan_request"
L = "lines"

COLUMNS = [
    {"id": "dimension", "type": "select", "label": {"zh": "维度", "en": "Dimension"}, "required": True,
     "options": [{"id": "core_metric", "zh": "核心指标", "en": "Core metric"},
                 {"id": "incentive_weight", "zh": "激励权重", "en": "Incentive weight"}]},
    {"id": "note", "type": "text", "label": {"zh": "说明", "en": "Note"}, "max_length": 50},
    {"id": "amount", "type": "decimal", "label": {"zh": "金额", "en": "Amount"}, "scale": 2, "min": 0},
    {"id": "due", "type": "date", "label": {"zh": "截止", "en": "Due"}},
]


def definition(columns=COLUMNS) -> dict[str, dict]:
    """The test app's files: a plan with a table of lines, a plain form and one that starts an approval."""
    entity = {
        "id": "plan", "label": {"zh": "计划", "en": "Plan"}, "title_field": "title",
        "fields": [
            {"id": "title", "type": "text", "label": {"zh": "标题", "en": "Title"}, "required": True,
             "max_length": 100},
            {"id": "lines", "type": "table", "label": {"zh": "明细", "en": "Lines"}, "max_rows": 4,
             "help": {"zh": "每行一个维度", "en": "One dimension a row"}, "columns": columns},
            {"id": "status", "type": "select", "label": {"zh": "审批状态", "en": "Approval"}, "read_only": True,
             "options": [{"id": s, "zh": s, "en": s} for s in
                         ("pending", "returned", "approved", "rejected", "withdrawn")]},
        ],
        "permissions": [{"role": "member", "read": "all", "create": True, "update": "own"},
                        {"role": "approver", "read": "all", "update": "own"}],
    }
    fields = [{"field": "title"}, {"field": "lines"}]
    return {
        "app.json": {"id": "tabletest", "version": "1", "label": {"zh": "表格测试", "en": "Table test"},
                     "roles": [{"id": "member", "label": "Member"}, {"id": "approver", "label": "Approver"}]},
        "entities/plan.json": entity,
        "forms/new_plan.json": {"id": "new_plan", "entity": "plan", "label": {"zh": "新计划", "en": "New plan"},
                                "fields": fields},
        "forms/plan_request.json": {"id": "plan_request", "entity": "plan",
                                    "label": {"zh": "报批计划", "en": "Plan for approval"}, "fields": fields},
        "workflows/plan_flow.json": {
            "id": "plan_flow", "label": "Plan approval", "starts_on": {"form": "plan_request"},
            "status_field": "status",
            "steps": [{"id": "boss", "mode": "any", "approvers": [{"rule": "role", "role": "approver"}],
                       "on_reject": "back_to_submitter"}]},
    }


def write_definition(path, files: dict[str, dict]):
    for name, content in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(json.dumps(content, ensure_ascii=False))
    return path


def make_site(tmp_path, db_url) -> Site:
    site = setup_site(tmp_path, db_url, write_definition(tmp_path / "def", definition()))
    add_users(site, ("boss", "Boss 老板", {"roles": ["approver"]}))
    return site


@pytest.fixture
def site(tmp_path, sqlite_url):
    s = make_site(tmp_path, sqlite_url)
    yield s
    s.engine.dispose()


@pytest.fixture
def any_db_site(tmp_path, db_url):
    s = make_site(tmp_path, db_url)
    yield s
    s.engine.dispose()


def create(site: Site, username: str | None, **values) -> int:
    from keel.actor import SYSTEM
    from keel.auth.directory import get_actor
    from keel.storage import records

    built = site.app.extensions["keel"].get("tabletest")
    uid = site.user_id(username) if username else None
    with site.engine.begin() as conn:
        who = get_actor(conn, uid) if uid else SYSTEM
        return records.create(conn, built, "plan", values, who)["id"]


def plans(site: Site) -> list[dict]:
    with site.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM tabletest__plan ORDER BY id"))]
    for r in rows:
        if isinstance(r["lines"], str):  # SQLite hands JSON back as text
            r["lines"] = json.loads(r["lines"])
    return rows


def grid_names(page: str) -> list[str]:
    return re.findall(r'name="(lines-\d+-\w+)"', page)


def text_of(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def shown_table(page: str) -> tuple[list[str], list[list[str]]]:
    """The headers and cell texts of the (first) table value on a record page."""
    m = re.search(r'<table class="values-table">(.*?)</table>', page, re.DOTALL)
    assert m, "no table value on the page"
    heads = [text_of(h) for h in re.findall(r"<th[^>]*>(.*?)</th>", m.group(1), re.DOTALL)]
    rows = [[text_of(c) for c in re.findall(r"<td>(.*?)</td>", tr, re.DOTALL)]
            for tr in re.findall(r"<tbody>.*?</tbody>", m.group(1), re.DOTALL)[0].split("</tr>") if "<td>" in tr]
    return heads, rows


def post(client, url: str, data: dict, page_url: str | None = None):
    token = csrf_of(client.get(page_url or url).text)
    return client.post(url, data={"csrf_token": token, **data})


TWO_ROWS = [{"dimension": "core_metric", "note": "ARR", "amount": "12.5", "due": "2026-03-01"},
            {"dimension": "incentive_weight", "amount": "3"}]


# ---------------------------------------------------------------- showing a table


def test_the_record_page_shows_a_table_with_translated_headers_option_labels_and_typed_values(site):
    rid = create(site, "alice", title="Q1", lines=TWO_ROWS)
    c = site.client("alice")
    heads, rows = shown_table(c.get(f"/apps/tabletest/plan/{rid}").text)
    assert heads == ["维度", "说明", "金额", "截止"]
    assert rows == [["核心指标", "ARR", "12.50", "2026-03-01"], ["激励权重", "", "3.00", ""]]
    page = c.get(f"/apps/tabletest/plan/{rid}?lang=en").text
    heads, rows = shown_table(page)
    assert heads == ["Dimension", "Note", "Amount", "Due"]
    assert [r[0] for r in rows] == ["Core metric", "Incentive weight"]
    assert "core_metric" not in text_of(page.split('<section class="edit">')[0])  # ids are not shown
    assert '"dimension"' not in page  # no raw JSON left


def test_the_list_shows_how_many_rows_a_table_has_not_the_table(site):
    create(site, "alice", title="Q1", lines=TWO_ROWS)
    create(site, "alice", title="Q2", lines=TWO_ROWS[:1])
    c = site.client("alice")
    page = c.get("/apps/tabletest/plan?sort=title").text
    assert re.findall(r"<td[^>]*>(\d 行)</td>", page) == ["2 行", "1 行"]
    assert "values-table" not in page and "核心指标" not in page
    assert re.findall(r"<td[^>]*>(\d rows?)</td>", c.get("/apps/tabletest/plan?sort=title&lang=en").text) == \
        ["2 rows", "1 row"]


def test_created_by_names_the_user_or_the_system(site):
    mine = create(site, "alice", title="mine")
    platform = create(site, None, title="imported")
    c = site.client("alice")
    system = re.search(r'<dl class="system">(.*?)</dl>', c.get(f"/apps/tabletest/plan/{mine}").text, re.DOTALL)
    assert re.search(r"<dt>创建人</dt><dd>Alice 艾</dd>", system.group(1))
    page = c.get(f"/apps/tabletest/plan/{platform}").text
    assert re.search(r"<dt>创建人</dt><dd>系统</dd>", page) and re.search(r"<dt>更新人</dt><dd>系统</dd>", page)
    assert re.search(r"<dt>Created by</dt><dd>System</dd>", c.get(f"/apps/tabletest/plan/{platform}?lang=en").text)


# ---------------------------------------------------------------- editing a table as a grid


def test_the_form_renders_a_grid_from_the_columns_of_the_definition(site, tmp_path):
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from keel.definitions.loader import load_app_dir

    c = site.client("alice")
    page = c.get(FORM).text
    block = field_block(page, L)
    names = grid_names(page)
    # three empty rows for a new record (max_rows is 4), one input per column, no JSON textarea
    assert names == [f"lines-{r}-{col['id']}" for r in (1, 2, 3) for col in COLUMNS]
    assert "<textarea" not in block
    assert re.findall(r'<th scope="col">(.*?)(?:<span|</th>)', block) == ["#", "维度", "说明", "金额", "截止"]
    assert re.search(r'<select name="lines-1-dimension"[^>]*>\s*<option value="">—</option>'
                     r'<option value="core_metric">核心指标</option><option value="incentive_weight">激励权重</option>',
                     block)
    assert re.search(r'<input type="text" inputmode="decimal" class="number" name="lines-2-amount" value=""', block)
    assert re.search(r'<input type="date" name="lines-3-due" value=""', block)
    assert "每行一个维度" in block and "Incentive weight" in c.get(FORM + "?lang=en").text
    c.get(FORM + "?lang=zh")

    # a column added to the definition is an input of every row; nothing else changes
    note = {"id": "owner_note", "type": "long_text", "label": {"zh": "负责人备注", "en": "Owner note"}}
    files = definition(COLUMNS + [note])
    files["app.json"]["version"] = "2"
    apply_app(site.engine, load_app_dir(write_definition(tmp_path / "def2", files), REGISTRIES), SYSTEM)
    site.app.extensions["keel"].refresh()
    after = c.get(FORM).text
    assert [n for n in grid_names(after) if n not in names] == [f"lines-{r}-owner_note" for r in (1, 2, 3)]
    assert [n for n in grid_names(after) if n in names] == names
    assert re.search(r'<textarea name="lines-1-owner_note" aria-label="负责人备注 1"', after)


def test_submitting_the_grid_creates_the_record_with_its_rows(any_db_site):
    site = any_db_site
    c = site.client("alice")
    r = post(c, FORM, {"title": "Q1",
                       "lines-1-dimension": "core_metric", "lines-1-note": "ARR", "lines-1-amount": "12.5",
                       "lines-1-due": "2026-03-01",
                       "lines-2-dimension": "", "lines-2-note": " ", "lines-2-amount": "", "lines-2-due": "",
                       "lines-3-dimension": "incentive_weight", "lines-3-amount": "3"})
    assert r.status_code == 302, r.text
    (plan,) = plans(site)
    assert plan["lines"] == [
        {"dimension": "core_metric", "note": "ARR", "amount": "12.50", "due": "2026-03-01"},
        {"dimension": "incentive_weight", "note": None, "amount": "3.00", "due": None}]
    # the record's own edit form shows those rows in the grid, then empty rows up to max_rows
    page = c.get(r.headers["Location"]).text
    assert grid_names(page)[-1] == "lines-4-due"
    assert re.search(r'<option value="incentive_weight" selected>', page)
    assert re.search(r'name="lines-1-amount" value="12.50"', page)


def test_an_empty_grid_submits_as_no_rows(site):
    c = site.client("alice")
    blank = {f"lines-{r}-{col['id']}": "" for r in (1, 2, 3) for col in COLUMNS}
    assert post(c, FORM, {"title": "nothing yet", **blank}).status_code == 302
    assert plans(site)[0]["lines"] is None


@pytest.mark.parametrize("cells,message", [
    ({"lines-1-amount": "abc"}, "第 1 行，“金额”：必须是数字。"),
    ({"lines-1-dimension": "bogus"}, "第 1 行，“维度”：“bogus”不是可选项之一。"),
])
def test_a_bad_cell_is_shown_next_to_the_grid_keeps_what_was_typed_and_writes_nothing(site, cells, message):
    c = site.client("alice")
    typed = {"title": "Q1", "lines-1-dimension": "core_metric", "lines-1-note": "typed <b>note</b>",
             "lines-1-amount": "4", "lines-2-dimension": "incentive_weight", **cells}
    r = post(c, FORM, typed)
    assert r.status_code == 422
    block = field_block(r.text, L)
    assert message in html.unescape(block)
    for name, value in typed.items():
        if name.endswith("dimension"):
            assert re.search(rf'<select name="{name}".*?<option value="{value}"[^>]*selected>', block, re.DOTALL), name
        elif name.startswith("lines-"):
            assert f'name="{name}" value="{html.escape(value)}"' in block, name
    assert plans(site) == []


def test_the_edit_form_refuses_a_bad_cell_and_saves_a_good_grid(site):
    rid = create(site, "alice", title="Q1", lines=TWO_ROWS)
    c = site.client("alice")
    url = f"/apps/tabletest/plan/{rid}"
    base = {"row_version": "1", "title": "Q1", "lines-1-dimension": "core_metric", "lines-1-amount": "-1"}
    r = post(c, url, base)
    assert r.status_code == 422
    assert "第 1 行，“金额”：不能小于 0.00。" in html.unescape(field_block(r.text, L))
    assert 'name="lines-1-amount" value="-1"' in r.text
    assert plans(site)[0]["lines"][1]["dimension"] == "incentive_weight"  # unchanged
    r = post(c, url, {**base, "lines-1-amount": "7", "lines-2-dimension": "", "lines-4-dimension": "incentive_weight"})
    assert r.status_code == 302
    assert plans(site)[0]["lines"] == [
        {"dimension": "core_metric", "note": None, "amount": "7.00", "due": None},
        {"dimension": "incentive_weight", "note": None, "amount": None, "due": None}]


# ---------------------------------------------------------------- records a workflow freezes


def test_the_edit_form_is_hidden_while_a_request_is_under_approval_and_after_approval(site):
    c = site.client("alice")
    plain = post(c, FORM, {"title": "plain", "lines-1-dimension": "core_metric"}).headers["Location"]
    page = c.get(plain).text
    assert 'name="row_version"' in page and 'id="edit-locked"' not in page  # no workflow: editable

    r = post(c, REQUEST_FORM, {"title": "asked", "lines-1-dimension": "core_metric"})
    assert r.status_code == 302, r.text
    asked = r.headers["Location"]
    stale_token = csrf_of(page)
    page = c.get(asked).text
    assert 'name="row_version"' not in page and "lines-1-dimension" not in page
    assert re.search(r'<p class="locked" id="edit-locked">审批中，不能修改</p>', page)
    assert "Under approval: cannot be changed" in c.get(asked + "?lang=en").text
    c.get(asked + "?lang=zh")
    # a form opened before the request was filed: refused with the reason, the typed text kept
    r = c.post(asked, data={"csrf_token": stale_token, "row_version": "1", "title": "changed anyway"})
    assert r.status_code == 409 and "审批中，不能修改" in r.text and 'value="changed anyway"' in r.text
    assert [p["title"] for p in plans(site)] == ["plain", "asked"]
    bob = site.client("bob").get(asked).text  # never could edit it: no form and nothing to explain
    assert 'name="row_version"' not in bob and 'id="edit-locked"' not in bob

    boss = site.client("boss")
    (task,) = task_ids(boss.get("/workflows/tasks").text)
    assert act(boss, task).status_code == 302
    page = c.get(asked).text
    assert 'name="row_version"' not in page and "已审批通过，不能修改" in page
