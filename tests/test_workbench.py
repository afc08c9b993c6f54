"""The workbench as a board, on the demo company: what each role sees comes from the goal_agility
app's workbench/*.json (my goals, my team's goals for managers, my tasks) and the engine's sections
(pending approvals, changed items in yellow with acknowledge, unread inbox)."""
from __future__ import annotations

import re

import sqlalchemy as sa

from keel.demo import DEMO_PASSWORD


def login(app, username: str):
    c = app.test_client()
    page = c.get("/login").text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    r = c.post("/login", data={"username": username, "password": DEMO_PASSWORD, "csrf_token": token})
    assert r.status_code == 302, r.text
    return c


def csrf(page: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def section(page: str, section_id: str) -> str:
    m = re.search(r'<section class="board-section[^"]*" id="wb-' + re.escape(section_id) + r'">(.*?)</section>',
                  page, re.DOTALL)
    return m.group(1) if m else ""


def user_id(app, username: str) -> int:
    from keel.storage.system import users

    with app.extensions["keel"].engine.connect() as conn:
        return conn.execute(sa.select(users.c.id).where(users.c.username == username)).scalar_one()


def goal_of(app, title: str) -> int:
    with app.extensions["keel"].engine.connect() as conn:
        return conn.execute(sa.text("SELECT id FROM goal_agility__goal WHERE title = :t"), {"t": title}).scalar_one()


def update_goal(app, goal_id: int, username: str | None, **values) -> None:
    from keel.actor import SYSTEM
    from keel.auth.directory import get_actor
    from keel.storage import records

    runtime = app.extensions["keel"]
    uid = user_id(app, username) if username else None
    with runtime.engine.begin() as conn:
        who = get_actor(conn, uid) if uid else SYSTEM
        version = conn.execute(sa.text("SELECT row_version FROM goal_agility__goal WHERE id = :i"),
                               {"i": goal_id}).scalar_one()
        records.update(conn, runtime.get("goal_agility"), "goal", goal_id, values, who, version)


LI_GOAL = "李娜 Q4 个人目标"


def test_a_manager_sees_his_team_goals_and_a_rep_only_her_own(demo_app):
    page = login(demo_app, "east_mgr").get("/workbench").text
    team = section(page, "goal_agility-team_goals")
    assert LI_GOAL in team and "李娜" in team  # her goal, with her name as the card's subtitle
    assert "华北大区" not in team  # north_mgr's goal: not in east_mgr's team
    rep = login(demo_app, "rep_li").get("/workbench").text
    assert section(rep, "goal_agility-team_goals") == ""  # nobody reports to her, and she is no manager
    assert LI_GOAL in section(rep, "goal_agility-my_goals")
    tasks = section(rep, "goal_agility-my_tasks")
    assert "每日寻找 3 条新线索" in tasks and "回访 TOP50" not in tasks  # zhang's task is not hers


def test_progress_bar_status_colour_and_money_or_count_units(demo_app):
    li = goal_of(demo_app, LI_GOAL)
    update_goal(demo_app, li, None, actual="2")  # 2 of 5 customers: 60% behind, past the 15% threshold
    mine = section(login(demo_app, "rep_li").get("/workbench").text, "goal_agility-my_goals")
    card = re.search(r'<li class="card colour-(\w+)[^"]*">((?:(?!</li>).)*' + re.escape(LI_GOAL) + r'.*?)</li>',
                     mine, re.DOTALL)
    assert card and card.group(1) == "red", mine
    assert re.search(r'<progress class="bar colour-red" max="100" value="40(\.0)?"', card.group(2))
    assert "40% · 2 个 / 5 个" in card.group(2)  # a count goal: whole numbers with the unit beside them
    ceo = section(login(demo_app, "ceo").get("/workbench").text, "goal_agility-my_goals")
    assert "¥12,000,000.00" not in ceo or "<progress" in ceo  # no actual yet: no bar, no made-up progress


def test_a_changed_goal_is_yellow_until_acknowledged(demo_app):
    li = goal_of(demo_app, LI_GOAL)
    update_goal(demo_app, li, "east_mgr", period_end="2025-12-20")  # someone else changes her goal
    c = login(demo_app, "rep_li")
    page = c.get("/workbench").text
    changed = section(page, "changed_items")
    assert LI_GOAL in changed and 'class="card colour-amber changed"' in changed
    assert "已变更：结束日期" in changed  # the changed fields, in her language
    assert "Changed: End" in section(c.get("/workbench?lang=en").text, "changed_items")
    assert re.search(r'<li class="card[^"]* changed">(?:(?!</li>).)*' + re.escape(LI_GOAL), section(page, "goal_agility-my_goals"), re.DOTALL)
    r = c.post("/workbench/acknowledge", data={"csrf_token": csrf(page), "app": "goal_agility", "entity": "goal",
                                               "record_id": str(li)})
    assert r.status_code == 302
    after = c.get("/workbench").text
    assert section(after, "changed_items") == "" and " changed\"" not in section(after, "goal_agility-my_goals")
    with demo_app.extensions["keel"].engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM keel_audit_events WHERE action = 'highlight.acknowledge'")).scalar()
    assert n == 1


def test_acknowledge_without_csrf_or_with_bad_input_changes_nothing(demo_app):
    li = goal_of(demo_app, LI_GOAL)
    update_goal(demo_app, li, "east_mgr", period_end="2025-12-20")
    c = login(demo_app, "rep_li")
    page = c.get("/workbench").text
    assert c.post("/workbench/acknowledge", data={"app": "goal_agility", "entity": "goal",
                                                  "record_id": str(li)}).status_code == 400
    assert c.post("/workbench/acknowledge", data={"csrf_token": csrf(page), "app": "goal_agility",
                                                  "entity": "goal", "record_id": "x"}).status_code == 400
    assert c.post("/workbench/acknowledge", data={"csrf_token": csrf(page), "app": "goal_agility",
                                                  "record_id": str(li)}).status_code == 400
    assert LI_GOAL in section(c.get("/workbench").text, "changed_items")




def test_pending_approvals_show_on_the_approvers_workbench_with_count_and_due_date(demo_app):
    from keel.auth.directory import get_actor
    from keel.forms.submit import submit_form

    runtime = demo_app.extensions["keel"]
    li = goal_of(demo_app, LI_GOAL)
    uid = user_id(demo_app, "rep_li")
    with runtime.engine.begin() as conn:
        submit_form(conn, runtime.get("goal_agility"), "revision_request",
                    {"goal": li, "title": "改为增购目标", "proposed_target": "800000", "reason": "12 家客户咨询扩容",
                     "resources": "客户成功经理"}, get_actor(conn, uid))
    page = login(demo_app, "east_mgr").get("/workbench").text
    approvals = section(page, "pending_approvals")
    assert "改为增购目标" in approvals and '<span class="badge">1</span>' in approvals
    assert re.search(r'<p class="due small">截止时间: 20\d\d-\d\d-\d\d \d\d:\d\d</p>', approvals), approvals
    assert 'href="/workflows/tasks"' in approvals
    assert section(login(demo_app, "rep_zhang").get("/workbench").text, "pending_approvals") == ""


def test_unread_messages_show_until_read(demo_app):
    from keel.actor import SYSTEM
    from keel.notify import inbox

    runtime = demo_app.extensions["keel"]
    uid = user_id(demo_app, "rep_li")
    with runtime.engine.begin() as conn:
        (mid,) = inbox.send(conn, app="goal_agility", template=None, recipients=[uid], context={}, link="/inbox",
                            actor=SYSTEM, subject={"zh": "目标已调整", "en": "Goal changed"},
                            body={"zh": "你的目标已按审批结果调整。", "en": "Your goal was changed."},
                            registries=runtime.registries)
    c = login(demo_app, "rep_li")
    unread = section(c.get("/workbench").text, "unread_inbox")
    assert "目标已调整" in unread and '<span class="badge">1</span>' in unread
    with runtime.engine.begin() as conn:
        inbox.mark_read(conn, uid, mid)
    assert section(c.get("/workbench").text, "unread_inbox") == ""


def test_a_changed_record_is_yellow_in_lists_and_on_its_page_until_seen(demo_app):
    li = goal_of(demo_app, LI_GOAL)
    update_goal(demo_app, li, "east_mgr", period_end="2025-12-20")
    c = login(demo_app, "rep_li")
    listing = c.get("/apps/goal_agility/goal").text
    assert re.search(r'<tr class="changed" title="已变更：结束日期">(?:(?!</tr>).)*' + re.escape(LI_GOAL), listing,
                     re.DOTALL)
    page = c.get(f"/apps/goal_agility/goal/{li}").text
    assert 'id="changed"' in page and "已变更：结束日期" in page
    r = c.post("/workbench/acknowledge", data={"csrf_token": csrf(page), "app": "goal_agility", "entity": "goal",
                                               "record_id": str(li), "next": f"/apps/goal_agility/goal/{li}"})
    assert r.headers["Location"].endswith(f"/apps/goal_agility/goal/{li}")  # back where she was
    assert 'id="changed"' not in c.get(f"/apps/goal_agility/goal/{li}").text
    assert 'class="changed"' not in c.get("/apps/goal_agility/goal").text
    r = c.post("/workbench/acknowledge", data={"csrf_token": csrf(page), "app": "goal_agility",
                                               "next": "https://evil.example/"})
    assert r.headers["Location"].endswith("/workbench")  # never off the site


def test_an_overdue_task_is_red_by_the_definitions_rule(demo_app):
    from keel.actor import SYSTEM
    from keel.storage import records

    runtime = demo_app.extensions["keel"]
    with runtime.engine.begin() as conn:
        tid, version = conn.execute(sa.text("SELECT id, row_version FROM goal_agility__task WHERE title = :t"),
                                    {"t": "每日寻找 3 条新线索"}).one()
        records.update(conn, runtime.get("goal_agility"), "task", tid, {"due": "2020-01-31"}, SYSTEM, version)
    tasks = section(login(demo_app, "rep_li").get("/workbench").text, "goal_agility-my_tasks")
    card = re.search(r'<li class="card colour-(\w+)[^"]*">(?:(?!</li>).)*每日寻找 3 条新线索', tasks, re.DOTALL)
    assert card and card.group(1) == "red", tasks  # "due < today()" over a real date, not text
    assert "2020-01-31" in tasks
