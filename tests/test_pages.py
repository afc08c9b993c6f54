"""The server-rendered pages, end to end: a real app applied from tests/fixtures/web_app, real users
signed in through /login, real databases."""
from __future__ import annotations

import functools
import html
import json
import re
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import make_app
from helpers_registries import REGISTRIES

FIXTURE = Path(__file__).parent / "fixtures" / "web_app"
PASSWORD = "correct-horse-battery"
XSS = "</script><img src=x onerror=alert(1)>"


class Site:
    """An applied test app with three users: root (admin), alice and bob (members)."""

    def __init__(self, app):
        self.app = app
        self.engine = app.extensions["keel"].engine

    def client(self, username: str | None = None):
        c = self.app.test_client()
        if username:
            token = csrf_of(c.get("/login").text)
            r = c.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
            assert r.status_code == 302, r.text
        return c

    def user_id(self, username: str) -> int:
        from keel.storage.system import users

        with self.engine.connect() as conn:
            return conn.execute(sa.select(users.c.id).where(users.c.username == username)).scalar_one()

    def items(self) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM webtest__item ORDER BY id"))
            return [dict(r._mapping) for r in rows]

    def create(self, username: str, **values) -> int:
        from keel.auth.directory import get_actor
        from keel.storage import records

        built = self.app.extensions["keel"].get("webtest")
        uid = self.user_id(username)  # before begin(): SQLite allows one writer, even in one test
        with self.engine.begin() as conn:
            who = get_actor(conn, uid)
            return records.create(conn, built, "item", values, who)["id"]


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def field_block(page: str, field_id: str) -> str:
    """The HTML of one field's wrapper on a generated form (label, input, help and messages)."""
    pattern = r'<div class="field[^"]*"[^>]*>\s*(?:(?!<div class="field).)*?id="f-' + field_id + r'".*?</div>'
    m = re.search(pattern, page, re.DOTALL)
    assert m, f"no field {field_id} on the page"
    return m.group(0)


@functools.cache
def password_hash() -> str:
    # argon2 is deliberately slow: hash the test password once per run, not once per user and test
    from keel.auth.passwords import hash_password

    return hash_password(PASSWORD)


def add_users(site: Site, *specs: tuple[str, str, dict]) -> None:
    from keel.actor import SYSTEM
    from keel.auth.directory import add_user
    from keel.storage.system import users

    with site.engine.begin() as conn:
        for username, name, kw in specs:
            add_user(conn, username, name, SYSTEM, **kw)
        conn.execute(users.update().where(users.c.username.in_([u for u, _, _ in specs]))
                     .values(password_hash=password_hash()))


def setup_site(tmp_path, db_url, definition: Path = FIXTURE) -> Site:
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from keel.definitions.loader import load_app_dir

    app = make_app(tmp_path, db_url)
    site = Site(app)
    apply_app(site.engine, load_app_dir(definition, REGISTRIES), SYSTEM)
    add_users(site, ("root", "Root 管理员", {"is_admin": True}), ("alice", "Alice 艾", {"roles": ["member"]}),
              ("bob", "Bob 鲍", {"roles": ["member"]}))
    app.extensions["keel"].refresh()
    return site


@pytest.fixture
def site(tmp_path, sqlite_url):
    s = setup_site(tmp_path, sqlite_url)
    yield s
    s.engine.dispose()


@pytest.fixture
def any_db_site(tmp_path, db_url):
    s = setup_site(tmp_path, db_url)
    yield s
    s.engine.dispose()


FORM = "/apps/webtest/forms/new_item"


def post_form(client, data: dict, url: str = FORM):
    token = csrf_of(client.get(url).text)
    return client.post(url, data={"csrf_token": token, **data})


# ---------------------------------------------------------------- language


def test_form_page_is_chinese_by_default_and_english_with_lang_which_is_remembered(site):
    c = site.client("alice")
    zh = c.get(FORM)
    assert zh.status_code == 200
    assert '<html lang="zh-CN">' in zh.text
    assert "新建事项" in zh.text and "标题" in zh.text and "一句话说明" in zh.text and "提交" in zh.text
    assert "普通" in zh.text  # option labels too
    en = c.get(FORM + "?lang=en")
    assert "New item" in en.text and "Title" in en.text and "One line" in en.text and "Submit" in en.text
    assert "标题" not in en.text
    again = c.get(FORM)  # no ?lang=: the choice is kept in the session
    assert "New item" in again.text and "Sign out" in again.text
    assert "新建事项" in c.get(FORM + "?lang=zh").text


def test_a_users_own_locale_is_used_until_they_choose_another(site):
    add_users(site, ("erin", "Erin", {"roles": ["member"], "locale": "en"}))
    c = site.client("erin")
    assert "New item" in c.get(FORM, headers={"Accept-Language": "zh-CN"}).text
    assert "新建事项" in c.get(FORM + "?lang=zh").text
    assert "新建事项" in c.get(FORM).text


def test_a_new_user_reads_zh_cn_and_a_language_choice_sticks_across_sessions(site):
    c = site.client("alice")
    assert "新建事项" in c.get(FORM).text  # never chose, the browser names no language: zh-CN
    assert "新建事项" in c.get(FORM, headers={"Accept-Language": "fr-FR"}).text
    assert "New item" in c.get(FORM, headers={"Accept-Language": "en-US,en;q=0.9"}).text  # the browser's
    assert "New item" in c.get(FORM + "?lang=en").text  # a link switches this session only
    assert "新建事项" in site.client("alice").get(FORM).text
    page = c.get(FORM).text
    r = c.post("/language", data={"csrf_token": csrf_of(page), "lang": "en", "next": FORM})
    assert r.status_code == 302 and r.headers["Location"].endswith(FORM)
    assert c.post("/language", data={"lang": "en"}).status_code == 400  # no CSRF token
    again = site.client("alice")  # a new session (another device): the choice is in her profile
    assert "New item" in again.get(FORM, headers={"Accept-Language": "zh-CN"}).text  # and beats the browser
    with site.engine.connect() as conn:
        events = conn.execute(sa.text("SELECT detail FROM keel_audit_events WHERE action = 'user.locale'")).all()
    assert len(events) == 1 and "en" in str(events[0][0])  # audited once, as her own change


# ---------------------------------------------------------------- submitting a form


def test_post_with_errors_shows_translated_messages_next_to_fields_and_writes_nothing(any_db_site):
    site = any_db_site
    c = site.client("alice")
    r = post_form(c, {"title": "", "amount": "abc", "kind": "plain"})
    assert r.status_code == 422
    assert "此字段为必填项。" in field_block(r.text, "title")
    assert "必须是整数。" in field_block(r.text, "amount")
    assert "必须是整数。" not in field_block(r.text, "title")
    assert 'value="abc"' in field_block(r.text, "amount")  # what the user typed is kept
    assert site.items() == []
    r = post_form(c, {"title": "", "amount": "-1"}, FORM + "?lang=en")
    assert "This field is required." in field_block(r.text, "title")
    assert "Must be at least 0." in field_block(r.text, "amount")
    assert site.items() == []


def test_successful_post_redirects_to_the_record_with_a_message(any_db_site):
    site = any_db_site
    c = site.client("alice")
    r = post_form(c, {"title": "Grow upsell", "kind": "plain", "amount": "12",
                      "owner": str(site.user_id("alice"))})
    assert r.status_code == 302
    [item] = site.items()
    assert r.headers["Location"].endswith(f"/apps/webtest/item/{item['id']}")
    assert item["title"] == "Grow upsell" and item["amount"] == 12 and item["owner"] == site.user_id("alice")
    page = c.get(r.headers["Location"])
    assert "已保存。" in page.text and "Grow upsell" in page.text and "Alice 艾" in page.text


def test_post_without_csrf_token_is_refused_with_400_and_writes_nothing(site):
    c = site.client("alice")
    r = c.post(FORM, data={"title": "no token"})
    assert r.status_code == 400
    r = c.post(FORM, data={"title": "bad token", "csrf_token": "forged"})
    assert r.status_code == 400
    assert site.items() == []


def test_a_hidden_field_is_not_shown_not_required_and_its_value_ignored(site):
    c = site.client("alice")
    page = c.get(FORM).text
    assert re.search(r'<div class="field[^"]*" hidden data-visible-if="kind == &#39;special&#39;"', page)
    r = post_form(c, {"title": "plain one", "kind": "plain", "detail": "sneaked in"})
    assert r.status_code == 302
    assert site.items()[0]["detail"] is None
    # visible once kind is special: then required
    r = post_form(c, {"title": "special one", "kind": "special"})
    assert r.status_code == 422
    block = field_block(r.text, "detail")
    assert "此字段为必填项。" in block and " hidden" not in block.split(">")[0]
    r = post_form(c, {"title": "special one", "kind": "special", "detail": "why"})
    assert r.status_code == 302 and site.items()[-1]["detail"] == "why"


def test_updating_the_form_shows_conditional_fields_without_saving(site):
    c = site.client("alice")
    r = post_form(c, {"title": "draft", "kind": "special", "_refresh": "1"})
    assert r.status_code == 200
    assert " hidden" not in field_block(r.text, "detail").split(">")[0]
    assert 'value="draft"' in r.text
    assert site.items() == []


def test_a_form_closed_to_the_user_is_403(site):
    c = site.client("root")
    ok = c.get(FORM)
    assert ok.status_code == 200
    add_users(site, ("carol", "Carol", {"roles": []}))
    r = site.client("carol").get(FORM)
    assert r.status_code == 403 and "你没有查看此内容的权限。" in r.text


# ---------------------------------------------------------------- escaping


def test_script_payload_in_values_is_escaped_on_list_record_and_form_pages(site):
    rid = site.create("alice", title=XSS, detail=XSS, owner=site.user_id("alice"))
    c = site.client("alice")
    for url in ("/apps/webtest/item", f"/apps/webtest/item/{rid}", FORM, "/workbench"):
        page = c.get(url)
        assert page.status_code == 200, url
        assert XSS not in page.text, url
        assert "<img" not in page.text, url
    assert html.escape(XSS) in c.get(f"/apps/webtest/item/{rid}").text
    # the link select of the form lists the record by its title, escaped
    assert html.escape(XSS, quote=False) in c.get(FORM).text or html.escape(XSS) in c.get(FORM).text


def test_script_payload_in_labels_is_escaped_on_every_page(tmp_path, sqlite_url):
    evil = tmp_path / "evil_app"
    shutil.copytree(FIXTURE, evil)
    entity = json.loads((evil / "entities/item.json").read_text())
    entity["label"] = {"zh": XSS, "en": XSS}
    for f in entity["fields"]:
        f["label"] = {"zh": XSS + f["id"], "en": XSS + f["id"]}
    entity["fields"][1]["options"][0]["zh"] = XSS
    (evil / "entities/item.json").write_text(json.dumps(entity))
    form = json.loads((evil / "forms/new_item.json").read_text())
    form["label"] = {"zh": XSS, "en": XSS}
    form["sections"][0]["label"] = {"zh": XSS, "en": XSS}
    (evil / "forms/new_item.json").write_text(json.dumps(form))
    site = setup_site(tmp_path, sqlite_url, evil)
    try:
        rid = site.create("alice", title="t")
        c = site.client("root")
        for url in ("/workbench", "/apps/webtest/item", f"/apps/webtest/item/{rid}", FORM,
                    "/admin/apps/webtest", "/admin"):
            page = c.get(url)
            assert page.status_code == 200, url
            assert XSS not in page.text, url
            assert "<img" not in page.text, url
            assert "&lt;/script&gt;" in page.text, url
    finally:
        site.engine.dispose()


def test_template_syntax_in_a_value_comes_out_literally(site):
    rid = site.create("alice", title="{{7*7}}", detail="{% raw %}x{{ config }}")
    c = site.client("alice")
    for url in ("/apps/webtest/item", f"/apps/webtest/item/{rid}"):
        page = c.get(url).text
        assert "{{7*7}}" in page, url
        assert ">49<" not in page
    assert "{% raw %}x{{ config }}" in c.get(f"/apps/webtest/item/{rid}").text


def test_rich_text_is_shown_as_sanitised_html_and_only_rich_text(site):
    story = '<b>bold</b><script>alert(1)</script><a href="javascript:x">l</a>'
    rid = site.create("alice", title="<b>plain</b>", story=story)
    page = site.client("alice").get(f"/apps/webtest/item/{rid}").text
    assert "<b>bold</b>" in page
    assert "<script>alert" not in page and "javascript:" not in page
    assert "&lt;b&gt;plain&lt;/b&gt;" in page


# ---------------------------------------------------------------- record pages


def test_record_list_sorts_pages_and_links_records(site):
    for title in ("b", "c", "a"):
        site.create("alice", title=title)
    c = site.client("alice")
    page = c.get("/apps/webtest/item?sort=title").text
    assert [m for m in re.findall(r"<td[^>]*>(?:<a [^>]*>)?([abc])(?:</a>)?</td>", page)] == ["a", "b", "c"]
    assert 'href="?sort=-title"' in page  # clicking the sorted column again reverses it
    page = c.get("/apps/webtest/item?sort=-title&per_page=2").text
    assert re.findall(r"<td[^>]*>(?:<a [^>]*>)?([abc])(?:</a>)?</td>", page) == ["c", "b"]
    assert "第 1 页，共 2 页" in page and "page=2" in page
    page = c.get("/apps/webtest/item?sort=nope").text
    assert "无法按“nope”排序。" in page  # a bad sort is explained, not a 500


def test_record_page_shows_values_and_history_and_saves_an_edit(any_db_site):
    site = any_db_site
    rid = site.create("alice", title="first", amount=1, owner=site.user_id("alice"))
    c = site.client("alice")
    page = c.get(f"/apps/webtest/item/{rid}").text
    assert 'name="row_version" type="hidden" value="1"' in page or 'value="1" name="row_version"' in page \
        or re.search(r'<input[^>]*name="row_version"[^>]*value="1"', page)
    r = c.post(f"/apps/webtest/item/{rid}", data={"csrf_token": csrf_of(page), "row_version": "1",
                                                  "title": "second", "amount": "2",
                                                  "owner": str(site.user_id("alice"))})
    assert r.status_code == 302
    page = c.get(f"/apps/webtest/item/{rid}").text
    assert "v2" in page and "修改" in page and "first" in page and "second" in page  # timeline: before/after
    assert site.items()[0]["title"] == "second"


def test_a_stale_edit_gets_a_409_page_and_keeps_the_other_change(site):
    rid = site.create("alice", title="original", owner=site.user_id("alice"))
    c = site.client("alice")
    token = csrf_of(c.get(f"/apps/webtest/item/{rid}").text)
    form = {"csrf_token": token, "row_version": "1", "owner": str(site.user_id("alice"))}
    assert c.post(f"/apps/webtest/item/{rid}", data={**form, "title": "mine"}).status_code == 302
    stale = c.post(f"/apps/webtest/item/{rid}", data={**form, "title": "stale"})
    assert stale.status_code == 409
    assert "已有其他人修改了它" in stale.text
    assert 'value="stale"' in stale.text  # what the user typed is still there to copy
    assert site.items()[0]["title"] == "mine"


def test_edit_errors_are_shown_next_to_fields(site):
    rid = site.create("alice", title="x", owner=site.user_id("alice"))
    c = site.client("alice")
    token = csrf_of(c.get(f"/apps/webtest/item/{rid}").text)
    r = c.post(f"/apps/webtest/item/{rid}", data={"csrf_token": token, "row_version": "1", "title": "",
                                                  "amount": "5000", "owner": str(site.user_id("alice"))})
    assert r.status_code == 422
    assert "不能大于 1000。" in field_block(r.text, "amount")
    assert site.items()[0]["title"] == "x"


def test_someone_elses_record_has_no_edit_form_and_a_missing_one_is_404(site):
    rid = site.create("alice", title="alice's", owner=site.user_id("alice"))
    c = site.client("bob")
    page = c.get(f"/apps/webtest/item/{rid}")
    assert page.status_code == 200 and 'name="row_version"' not in page.text
    missing = c.get("/apps/webtest/item/999999")
    assert missing.status_code == 404 and "页面不存在。" in missing.text
    assert c.get("/apps/webtest/item/not-a-number").status_code == 404
    assert c.get("/apps/nope/item").status_code == 404


# ---------------------------------------------------------------- workbench and chrome


def test_workbench_shows_my_records_as_cards_with_their_parent_chain_and_the_app_menu(site):
    alice = site.user_id("alice")
    top = site.create("alice", title="Company goal")
    mid = site.create("alice", title="Team goal", parent=top)
    site.create("alice", title="My goal", parent=mid, owner=alice)
    site.create("bob", title="Bob's goal", owner=site.user_id("bob"))
    c = site.client("alice")
    assert c.get("/").headers["Location"].endswith("/workbench")
    page = c.get("/workbench").text
    # no workbench/ files: a "mine" section per owned entity; the menu offers the list and the form
    assert "网页测试" in page and "新建事项" in page and 'href="/apps/webtest/item"' in page
    assert re.search(r'Company goal</a> › <a[^>]*>Team goal</a> › </p>\s*<p class="card-title"><a[^>]*>'
                     r'<strong>My goal', page)
    assert "Bob&#39;s goal" not in page
    assert 'id="unread-count"' in page and "Alice 艾" in page
    assert re.search(r'<form class="logout" method="post" action="/logout">\s*<input type="hidden" '
                     r'name="csrf_token"', page)


def test_pages_need_a_signed_in_user(site):
    c = site.client()
    for url in ("/workbench", FORM, "/apps/webtest/item", "/admin/apps/webtest"):
        r = c.get(url)
        assert r.status_code == 302 and "/login" in r.headers["Location"], url


def test_static_files_are_served_to_anyone(site):
    c = site.client()
    assert c.get("/static/keel.css").status_code == 200
    assert c.get("/static/keel.js").status_code == 200


def test_pages_have_no_inline_script(site):
    rid = site.create("alice", title="t")
    c = site.client("root")
    for url in ("/workbench", FORM, "/apps/webtest/item", f"/apps/webtest/item/{rid}", "/admin/apps/webtest"):
        page = c.get(url).text
        for tag in re.findall(r"<script[^>]*>", page):
            assert "src=" in tag, (url, tag)
        assert not re.search(r"\son[a-z]+=", page), url
        assert "style=" not in page, url


# ---------------------------------------------------------------- admin definition editor

ADMIN = "/admin/apps/webtest"


def edited_files(page: str) -> dict[str, str]:
    """The editor's textareas as the browser would send them."""
    return {f"file:{html.unescape(name)}": html.unescape(text) for name, text in
            re.findall(r'<textarea id="file-\d+" name="file:([^"]+)"[^>]*>(.*?)</textarea>', page, re.DOTALL)}


def test_admin_pages_refuse_non_admins(site):
    c = site.client("alice")
    assert c.get(ADMIN).status_code == 403
    assert c.get("/admin").status_code == 403
    page = site.client("root").get(ADMIN).text
    files = edited_files(page)
    r = c.post(ADMIN, data={"csrf_token": csrf_of(c.get(FORM).text), "action": "apply", **files})
    assert r.status_code == 403
    r = c.post(ADMIN + "/rollback", data={"csrf_token": csrf_of(c.get(FORM).text), "version": "1"})
    assert r.status_code == 403
    assert site.app.extensions["keel"].get("webtest").version == 1


def test_admin_sees_versions_and_files_and_validate_reports_every_error_with_its_place(site):
    c = site.client("root")
    page = c.get(ADMIN).text
    assert "当前版本：1" in page and "entities/item.json" in page and "forms/new_item.json" in page
    files = edited_files(page)
    assert json.loads(files["file:entities/item.json"])["id"] == "item"
    broken = dict(files)
    broken["file:forms/new_item.json"] = "{not json"
    r = c.post(ADMIN, data={"csrf_token": csrf_of(page), "action": "validate", **broken})
    assert r.status_code == 422
    assert "forms/new_item.json: /: invalid JSON" in html.unescape(r.text)
    entity = json.loads(files["file:entities/item.json"])
    entity["fields"][3]["required"] = "yes"
    entity["fields"][0]["max_length"] = "long"
    broken = {**files, "file:entities/item.json": json.dumps(entity)}
    r = c.post(ADMIN, data={"csrf_token": csrf_of(page), "action": "apply", **broken})
    assert r.status_code == 422
    text = html.unescape(r.text)
    assert "entities/item.json: /fields/3/required:" in text
    assert "entities/item.json: /fields/0/max_length:" in text
    assert broken["file:entities/item.json"] in text  # the edit is kept in the editor
    assert site.app.extensions["keel"].get("webtest").version == 1  # nothing applied


def test_admin_validates_applies_and_rolls_back_an_edited_definition(any_db_site):
    site = any_db_site
    c = site.client("root")
    page = c.get(ADMIN).text
    files = edited_files(page)
    entity = json.loads(files["file:entities/item.json"])
    entity["fields"].append({"id": "budget", "type": "money", "label": {"zh": "预算", "en": "Budget"}})
    form = json.loads(files["file:forms/new_item.json"])
    form["sections"][0]["fields"].append("budget")
    edited = {**files, "file:entities/item.json": json.dumps(entity, ensure_ascii=False),
              "file:forms/new_item.json": json.dumps(form, ensure_ascii=False)}
    r = c.post(ADMIN, data={"csrf_token": csrf_of(page), "action": "validate", **edited})
    assert r.status_code == 200
    assert "定义有效。" in r.text
    # the change named by id, in the reader's language (not "added /fields/7")
    assert "新增字段 budget «预算» (money)" in html.unescape(r.text)
    assert "预算" not in c.get(FORM).text  # validating applies nothing
    r = c.post(ADMIN, data={"csrf_token": csrf_of(page), "action": "apply", "note": "add budget", **edited})
    assert r.status_code == 302
    page = c.get(ADMIN).text
    assert "已应用为第 2 版。" in page and "add budget" in page
    assert 'id="f-budget"' in c.get(FORM).text
    r = post_form(c, {"title": "with budget", "budget": "12.50"})
    assert r.status_code == 302 and str(site.items()[0]["budget"]) in ("12.50", "12.5")
    r = c.post(ADMIN + "/rollback", data={"csrf_token": csrf_of(page), "version": "1"})
    assert r.status_code == 400  # not without confirmation
    assert "budget" in html.unescape(c.get(ADMIN + "/rollback?version=1").text)  # what it would undo
    r = c.post(ADMIN + "/rollback", data={"csrf_token": csrf_of(page), "version": "1", "confirm": "yes"})
    assert r.status_code == 302
    assert "已回滚到第 1 版（保存为第 3 版）。" in c.get(ADMIN).text
    assert 'id="f-budget"' not in c.get(FORM).text
    assert site.items()[0]["title"] == "with budget"  # the retired field's data is kept, rows untouched


def test_admin_post_needs_a_csrf_token(site):
    c = site.client("root")
    files = edited_files(c.get(ADMIN).text)
    assert c.post(ADMIN, data={"action": "apply", **files}).status_code == 400
    assert c.post(ADMIN + "/rollback", data={"version": "1"}).status_code == 400


def test_submit_form_is_one_path_refusing_unknown_and_system_keys_and_writing_nothing(any_db_site):
    from keel.auth.directory import get_actor
    from keel.errors import FieldErrors
    from keel.forms.submit import submit_form

    site = any_db_site
    built = site.app.extensions["keel"].get("webtest")
    uid = site.user_id("alice")
    with site.engine.connect() as conn:
        alice = get_actor(conn, uid)
    for sneaky in ({"id": 99}, {"row_version": 7}, {"created_by": 1}, {"owner_role": "admin"}):
        with pytest.raises(FieldErrors) as e, site.engine.begin() as conn:
            submit_form(conn, built, "new_item", {"title": "t", **sneaky}, alice)
        assert [m.msgid for m in e.value.errors[next(iter(sneaky))]] == ["Unknown field."]
    assert site.items() == []
    with site.engine.begin() as conn:
        record = submit_form(conn, built, "new_item", {"title": "JSON", "amount": 3, "kind": "special",
                                                       "detail": "d", "owner": uid}, alice)
    assert record["title"] == "JSON" and record["amount"] == 3 and record["created_by"] == uid
    assert [i["title"] for i in site.items()] == ["JSON"]
