"""The definition editor's forms, end to end with sign-in and CSRF: add, relabel, reorder and retire
fields; settings; approvers; schedules; widgets. Each edit leads to a review page that names the changes
by id in the reader's language with their effect on running requests, and only its confirmation applies.
A rollback is asked for before it happens; without confirmation it is refused."""
from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from test_pages import add_users, csrf_of, setup_site

LEAVE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "leave"
APP = "/admin/apps/leave"


def leave_app(tmp_path: Path) -> Path:
    """The leave app of docs/admin.md with settings, a scheduled job and a dashboard added."""
    folder = tmp_path / "leave_def"
    shutil.copytree(LEAVE, folder)
    app = json.loads((folder / "app.json").read_text())
    app["settings"] = {"max_days": 15, "hr_threshold_days": 3}
    (folder / "app.json").write_text(json.dumps(app, ensure_ascii=False))
    (folder / "jobs").mkdir()
    (folder / "jobs" / "workflow_timers.json").write_text(json.dumps(
        {"id": "workflow_timers", "type": "workflow_timers", "cron": "* * * * *", "timezone": "Asia/Shanghai",
         "idempotency": "run"}))
    (folder / "dashboards").mkdir()
    (folder / "dashboards" / "overview.json").write_text(json.dumps(
        {"id": "overview", "title": {"zh": "请假概览", "en": "Leave overview"},
         "widgets": [{"id": "open", "type": "table", "entity": "leave_request", "columns": ["reason"]}]}))
    return folder


@pytest.fixture
def site(tmp_path, sqlite_url):
    s = setup_site(tmp_path, sqlite_url, leave_app(tmp_path))
    yield s
    s.engine.dispose()


def form_values(page: str) -> dict[str, str]:
    """What a browser would send for the page's edit form: inputs, checked boxes, selected options,
    textareas."""
    form = re.search(r'<form method="post"[^>]*class="admin-form editor-form">(.*?)</form>', page, re.S).group(1)
    data = {}
    for tag in re.findall(r"<input[^>]*>", form):
        name = re.search(r'name="([^"]+)"', tag)
        if not name:
            continue
        kind = re.search(r'type="([^"]+)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if kind and kind.group(1) == "checkbox":
            if "checked" in tag:
                data[name.group(1)] = "y"
        else:
            data[name.group(1)] = html.unescape(value.group(1)) if value else ""
    for name, body in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', form, re.S):
        chosen = re.search(r'<option[^>]*selected[^>]*value="([^"]*)"|<option[^>]*value="([^"]*)"[^>]*selected',
                           body)
        first = re.search(r'<option[^>]*value="([^"]*)"', body)
        if chosen:
            value = chosen.group(1) if chosen.group(1) is not None else chosen.group(2)
        else:
            value = first.group(1)
        data[name] = html.unescape(value)
    for name, body in re.findall(r'<textarea[^>]*name="([^"]+)"[^>]*>(.*?)</textarea>', form, re.S):
        data[name] = html.unescape(body).removeprefix("\r\n").removeprefix("\n")
    return data


def edit(client, url: str, change) -> tuple[object, dict]:
    page = client.get(url)
    assert page.status_code == 200, page.text
    data = form_values(page.text)
    change(data)
    return client.post(url, data=data), data


def confirm(client, review_page: str):
    """Press "apply" on a review page."""
    form = re.search(r'<form method="post" action="([^"]+)" class="admin-form">(.*?)</form>', review_page, re.S)
    assert form, "the review page has no apply button"
    data = {n: html.unescape(v) for n, v in re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"',
                                                       form.group(2))}
    data.setdefault("note", "")
    return client.post(html.unescape(form.group(1)), data=data)


def version(site) -> int:
    site.app.extensions["keel"].refresh()
    return site.app.extensions["keel"].get("leave").version


def bundle(site) -> dict:
    from keel.definitions.model import thaw

    site.app.extensions["keel"].refresh()
    return thaw(site.app.extensions["keel"].get("leave").definition.bundle)


def row_of(page: str, head: str) -> str:
    """The `fN` prefix of the form row whose header is `head`."""
    m = re.search(re.escape(head) + r'</th>\s*<td><input[^>]*name="(\w+?)_', page)
    assert m, head
    return m.group(1)


# ---- who may ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/entities/leave_request/fields", "/settings", "/workflows/leave_approval/approvers",
                                  "/schedules", "/dashboards/overview/widgets", "/rollback?version=1"])
def test_editor_forms_are_for_admins_only(site, path):
    assert site.client("alice").get(APP + path).status_code == 403
    assert site.client("root").get(APP + path).status_code == 200


def test_a_non_admin_cannot_apply_a_reviewed_bundle(site):
    alice = site.client("alice")
    token = csrf_of(alice.get("/workbench").text)
    r = alice.post(APP + "/apply", data={"csrf_token": token, "bundle": json.dumps(bundle(site)),
                                         "base_version": "1"})
    assert r.status_code == 403 and version(site) == 1


# ---- fields -------------------------------------------------------------------------------------

def test_fields_are_added_relabelled_reordered_and_retired_through_the_form(site):
    root = site.client("root")
    url = APP + "/entities/leave_request/fields"
    page = root.get(url).text
    reason, kind = row_of(page, "reason (text)"), row_of(page, "kind (select)")

    def change(data):
        data[f"{reason}_zh"] = "请假事由"
        data[f"{reason}_pos"] = "1"                 # first
        data[f"{kind}_retire"] = "y"
        data.update(new_id="deputy", new_type="user", new_zh="代理人", new_en="Deputy", new_to_forms="y")

    r, _ = edit(root, url, change)
    assert r.status_code == 200, r.text
    review = r.text
    # named by id, in Chinese, never by list position
    assert "字段 reason" in review and "请假事由" in review
    assert "字段 kind" in review and "停用" in review
    assert "字段 deputy" in review and "新增" in review
    assert "顺序" in review and not re.search(r"/fields/\d", review)
    assert version(site) == 1  # nothing applied by the review
    r = confirm(root, review)
    assert r.status_code == 302, r.text
    assert version(site) == 2
    after = bundle(site)
    ids = [f["id"] for f in after["entities/leave_request.json"]["fields"]]
    assert ids[0] == "reason" and "kind" not in ids and ids[-1] == "deputy"
    assert after["entities/leave_request.json"]["fields"][0]["label"] == {"zh": "请假事由", "en": "Reason"}
    form_fields = [f["field"] for f in after["forms/leave_request.json"]["fields"]]
    assert "kind" not in form_fields and form_fields[-1] == "deputy"
    with site.engine.connect() as c:  # the retired field's column and data are kept
        assert "kind" in [col["name"] for col in sa.inspect(c).get_columns("leave__leave_request")]


def test_a_bad_new_field_is_shown_on_the_review_page_and_nothing_is_applied(site):
    root = site.client("root")
    r, _ = edit(root, APP + "/entities/leave_request/fields",
                lambda d: d.update(new_id="Bad Id", new_type="select", new_zh="坏"))
    assert r.status_code == 422
    assert "/fields/6/id" in html.unescape(r.text) or "Bad Id" in html.unescape(r.text)
    assert "应用为版本" not in r.text
    assert version(site) == 1


# ---- approvers and the effect on running requests -----------------------------------------------

def _running_request(site):
    from keel.actor import SYSTEM
    from keel.auth.directory import add_department, get_actor, set_department_head
    from keel.forms.submit import submit_form

    add_users(site, ("li_na", "李娜", {"roles": ["employee"]}))
    with site.engine.begin() as conn:
        add_department(conn, "sales", "销售部", SYSTEM)
        add_department(conn, "hr", "人力资源部", SYSTEM, head_username="alice")
        from keel.auth.directory import move_users

        move_users(conn, ["li_na", "bob"], "sales", SYSTEM)
        set_department_head(conn, "sales", "bob", SYSTEM)
    uid = site.user_id("li_na")
    built = site.app.extensions["keel"].get("leave")
    with site.engine.begin() as conn:
        submit_form(conn, built, "leave_request", {"kind": "annual", "first_day": "2025-10-09",
                                                   "last_day": "2025-10-14", "reason": "回老家"},
                    get_actor(conn, uid))


def test_changing_approvers_shows_where_new_requests_go_and_that_running_ones_keep_their_version(site):
    _running_request(site)
    root = site.client("root")
    url = APP + "/workflows/leave_approval/approvers"
    page = root.get(url).text
    assert "部门 hr 的负责人" in page

    def change(data):
        data["st1_a0_target"] = "finance"

    r, _ = edit(root, url, change)
    assert r.status_code == 200, r.text
    text = html.unescape(r.text)
    assert "部门 finance 的负责人" in text and "部门 hr 的负责人" in text
    assert "步骤 hr" in text
    assert "新申请在「人力资源部审批」步骤交给部门 finance 的负责人" in text
    assert "1 个进行中的申请仍按版本 1 执行" in text
    assert confirm(root, r.text).status_code == 302
    steps = bundle(site)["workflows/leave_approval.json"]["steps"]
    assert steps[1]["approvers"] == [{"rule": "department", "code": "finance", "pick": "head"}]


def test_the_review_page_speaks_english_when_asked(site):
    root = site.client("root")
    root.get("/workbench?lang=en")
    r, _ = edit(root, APP + "/workflows/leave_approval/approvers", lambda d: d.update(st1_a0_target="finance"))
    text = html.unescape(r.text)
    assert "the head of department finance" in text and "New requests at step Head of HR go to" in text


# ---- settings, schedules, widgets ---------------------------------------------------------------

def test_settings_are_changed_added_and_removed(site):
    root = site.client("root")
    url = APP + "/settings"
    page = root.get(url).text
    maxd, hr = row_of(page, "max_days"), row_of(page, "hr_threshold_days")

    def change(data):
        data[f"{maxd}_value"] = "20"
        data[f"{hr}_remove"] = "y"
        data.update(new_key="notice", new_value="请提前三天申请")

    r, _ = edit(root, url, change)
    text = html.unescape(r.text)
    assert "设置 max_days：15 → 20" in text and "设置 notice" in text and "设置 hr_threshold_days" in text
    assert confirm(root, r.text).status_code == 302
    assert bundle(site)["app.json"]["settings"] == {"max_days": 20, "notice": "请提前三天申请"}


def test_a_schedule_is_changed_through_the_form(site):
    root = site.client("root")
    r, _ = edit(root, APP + "/schedules", lambda d: d.update(j0_cron="*/5 * * * *"))
    text = html.unescape(r.text)
    assert "任务 workflow_timers" in text and "* * * * * → */5 * * * *" in text
    assert confirm(root, r.text).status_code == 302
    assert bundle(site)["jobs/workflow_timers.json"]["cron"] == "*/5 * * * *"
    r, _ = edit(root, APP + "/schedules", lambda d: d.update(j0_cron="every minute"))
    assert r.status_code == 422 and "cron" in html.unescape(r.text)


def test_widgets_are_edited_added_and_reordered_as_json(site):
    root = site.client("root")

    def change(data):
        widget = json.loads(data["w0_json"])
        widget["title"] = {"zh": "待批", "en": "Open"}
        data["w0_json"] = json.dumps(widget, ensure_ascii=False)
        data["new_widget"] = json.dumps({"id": "mine", "type": "table", "entity": "leave_request", "columns": ["reason"]})

    r, _ = edit(root, APP + "/dashboards/overview/widgets", change)
    text = html.unescape(r.text)
    assert "组件 open" in text and "待批" in text and "新增组件 mine" in text
    assert confirm(root, r.text).status_code == 302
    widgets = bundle(site)["dashboards/overview.json"]["widgets"]
    assert [w["id"] for w in widgets] == ["open", "mine"] and widgets[0]["title"]["zh"] == "待批"
    r, _ = edit(root, APP + "/dashboards/overview/widgets", lambda d: d.update(w1_pos="1"))  # mine first
    assert "顺序：open, mine → mine, open" in html.unescape(r.text)
    assert confirm(root, r.text).status_code == 302
    assert [w["id"] for w in bundle(site)["dashboards/overview.json"]["widgets"]] == ["mine", "open"]
    r, _ = edit(root, APP + "/dashboards/overview/widgets", lambda d: d.update(new_widget="{not json"))
    assert r.status_code == 422 and version(site) == 3


# ---- stale reviews and rollbacks ----------------------------------------------------------------

def test_a_review_made_before_another_apply_is_refused(site):
    root = site.client("root")
    first, _ = edit(root, APP + "/settings", lambda d: d.update(new_key="a", new_value="1"))
    second, _ = edit(root, APP + "/settings", lambda d: d.update(new_key="b", new_value="2"))
    assert confirm(root, first.text).status_code == 302
    r = confirm(root, second.text)
    assert r.status_code == 409 and version(site) == 2
    assert "a" in bundle(site)["app.json"]["settings"] and "b" not in bundle(site)["app.json"]["settings"]


def test_a_rollback_is_confirmed_first_and_refused_without_confirmation(site):
    root = site.client("root")
    r, _ = edit(root, APP + "/settings", lambda d: d.update(new_key="a", new_value="1"))
    confirm(root, r.text)
    assert version(site) == 2
    token = csrf_of(root.get(APP).text)
    r = root.post(APP + "/rollback", data={"csrf_token": token, "version": "1"})
    assert r.status_code == 400 and version(site) == 2
    page = root.get(APP + "/rollback?version=1")
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert "设置 a" in text and "回滚" in text
    r = root.post(APP + "/rollback", data={"csrf_token": csrf_of(page.text), "version": "1", "confirm": "yes"})
    assert r.status_code == 302 and version(site) == 3
    assert "a" not in (bundle(site)["app.json"].get("settings") or {})


def test_every_editor_form_of_the_demo_app_round_trips_unchanged(tmp_path, sqlite_url):
    """Each form of the Goal Agility demo, sent back as shown, proposes no change at all (nested
    settings, labels written as one text, plugin approver rules and all)."""
    from conftest import APPS

    demo = setup_site(tmp_path, sqlite_url, APPS / "goal_agility")
    try:
        root = demo.client("root")
        base = "/admin/apps/goal_agility"
        page = root.get(base).text
        links = sorted(set(re.findall(r'href="(/admin/apps/goal_agility/[^"?]+)"', page)))
        assert any("/fields" in u for u in links) and any("/approvers" in u for u in links)
        assert base + "/settings" in links and base + "/schedules" in links
        for url in links:
            r, _ = edit(root, url, lambda d: None)
            assert r.status_code == 200, (url, r.text[-2000:])
            assert "没有变化：定义保持不变。" in r.text, url
    finally:
        demo.engine.dispose()
