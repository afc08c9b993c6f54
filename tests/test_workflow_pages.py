"""The workflow pages end to end, signed in through /login with CSRF like a browser: the Goal Agility
revision request started from the goal's page and approved by both lines, the any-of and sequential
flows of tests/fixtures/wf_app, send back and resubmission, bulk approval, refusals that change nothing,
SLA reminders and escalation, and the metrics page."""
from __future__ import annotations

import datetime as dt
import html
import re

import pytest
import sqlalchemy as sa

from conftest import APPS, make_app
from helpers_registries import REGISTRIES
from test_pages import PASSWORD, XSS, csrf_of, password_hash
from test_workflow_support import make_world

TASKS = "/workflows/tasks"


def login(app, username: str, password: str = PASSWORD):
    c = app.test_client()
    r = c.post("/login", data={"username": username, "password": password, "csrf_token": csrf_of(c.get("/login").text)})
    assert r.status_code == 302, r.text
    return c


def task_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'id="task-(\d+)"', page)]


def act(client, task_id: int, action: str = "approve", **fields):
    token = csrf_of(client.get(TASKS).text)
    return client.post(f"{TASKS}/{task_id}", data={"csrf_token": token, "action": action, **fields})


def submitter_action(client, instance_id: int, action: str, **fields):
    url = f"/workflows/instances/{instance_id}"
    return client.post(f"{url}/{action}", data={"csrf_token": csrf_of(client.get(url).text), **fields})


def text_of(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def rows(engine, sql: str, **params) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).all()


# ---- the Goal Agility demo ------------------------------------------------------------------------------

@pytest.fixture
def demo(tmp_path, sqlite_url):
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from keel.definitions.loader import load_app_dir
    from keel.demo import seed_demo

    app = make_app(tmp_path, sqlite_url)
    apply_app(app.extensions["keel"].engine, load_app_dir(APPS / "goal_agility", REGISTRIES), SYSTEM)
    app.extensions["keel"].refresh()
    seed_demo(app)
    yield app
    app.extensions["keel"].engine.dispose()


def test_a_revision_request_starts_on_the_goal_page_and_needs_both_lines(demo):
    from keel.demo import DEMO_PASSWORD

    engine = demo.extensions["keel"].engine
    (goal_id,) = rows(engine, "SELECT id FROM goal_agility__goal WHERE title LIKE '李娜%'")[0]
    li = login(demo, "rep_li", DEMO_PASSWORD)
    goal_page = li.get(f"/apps/goal_agility/goal/{goal_id}").text
    start = f"/apps/goal_agility/forms/revision_request?goal={goal_id}"
    assert f'href="{html.escape(start)}"' in goal_page and "申请修订" in goal_page
    form = li.get(start).text
    assert re.search(rf'<option selected value="{goal_id}">', form), "the goal is prefilled"
    assert "#99999" not in li.get("/apps/goal_agility/forms/revision_request?goal=99999").text  # no such goal: ignored

    r = li.post(start, data={"csrf_token": csrf_of(form), "goal": str(goal_id), "title": "李娜目标改为增购",
                             "proposed_target": "8", "reason": "12 个客户咨询扩容", "resources": "客户成功经理"})
    assert r.status_code == 302, r.text
    record_page = li.get(r.headers["Location"]).text
    (instance_id,) = rows(engine, "SELECT id FROM keel_wf_instances")[0]
    assert f'href="/workflows/instances/{instance_id}"' in record_page and "审批中" in record_page

    deciders = {"east_mgr": "王磊", "strategy_lead": "林晓"}
    for who in deciders:
        c = login(demo, who, DEMO_PASSWORD)
        page = c.get(TASKS).text
        assert "李娜目标改为增购" in page and "双线审批" in page and "李娜" in page
        assert re.search(r'id="pending-tasks" class="badge">1<', page)
        assert "待您审批" in c.get("/inbox").text
        (task,) = task_ids(page)
        r = act(c, task, comment=f"{who} 同意")
        assert r.status_code == 302 and r.headers["Location"].endswith(TASKS)
        assert "已同意" in c.get(TASKS).text or "同意" in c.get(TASKS + "?tab=done").text

    assert rows(engine, "SELECT status FROM goal_agility__revision_request")[0][0] == "approved"
    assert "目标修订已通过" in li.get("/inbox").text
    timeline = text_of(li.get(f"/workflows/instances/{instance_id}").text)
    for who, name in deciders.items():
        assert re.search(rf"同意\s*·[^·]+·\s*{name}", timeline), name
        assert f"{who} 同意" in timeline
    assert "已通过" in timeline
    lead = login(demo, "strategy_lead", DEMO_PASSWORD)
    metrics = lead.get("/workflows/metrics").text
    assert "目标修订审批" in metrics and f'id="metrics-{instance_id}"' in metrics
    assert li.get("/workflows/metrics").status_code == 403


# ---- the wf_app fixture: any-of, sequential, send back, bulk, refusals, SLA ---------------------------

@pytest.fixture
def world(tmp_path, sqlite_url):
    w = make_world(tmp_path, sqlite_url)
    with w.engine.begin() as conn:
        conn.execute(sa.text("UPDATE keel_users SET password_hash = :h"), {"h": password_hash()})
    w.app.extensions["keel"].refresh()
    yield w
    w.engine.dispose()


def submit_page(client, form: str, **values) -> int:
    url = f"/apps/wfapp/forms/{form}"
    data = {"title": "Laptop", "amount": "1200", **values}
    r = client.post(url, data={"csrf_token": csrf_of(client.get(url).text), **data})
    assert r.status_code == 302, r.text
    return r


def instance_of(w, form_title: str) -> int:
    return rows(w.engine, "SELECT i.id FROM keel_wf_instances i JOIN wfapp__expense e ON e.id = i.record_id "
                          "WHERE e.title = :t", t=form_title)[0][0]


def pending_of(client) -> list[int]:
    return task_ids(client.get(TASKS).text)


def test_any_of_the_first_approval_decides_and_the_others_tasks_are_withdrawn(world):
    alice, fred, fay = (login(world.app, u) for u in ("alice", "fred", "fay"))
    submit_page(alice, "anyof", title="Any-of laptop")
    iid = instance_of(world, "Any-of laptop")
    (fred_task,), (fay_task,) = pending_of(fred), pending_of(fay)
    assert act(fred, fred_task, comment=XSS).status_code == 302
    for page in (alice.get(f"/workflows/instances/{iid}").text, fred.get(TASKS + "?tab=done").text):
        assert XSS not in page and html.escape(XSS, quote=False) in page
    assert pending_of(fay) == []
    done = text_of(fay.get(TASKS + "?tab=done").text)
    assert "Any-of laptop" in done and "已撤回" in done
    assert act(fay, fay_task).status_code == 409  # too late: the request is decided
    assert rows(world.engine, "SELECT status FROM keel_wf_instances WHERE id = :i", i=iid)[0][0] == "approved"
    assert "已通过" in alice.get("/inbox").text


def test_a_sequential_chain_goes_one_after_another_with_an_added_approver(world):
    alice, sam, fiona, fred, ceo = (login(world.app, u) for u in ("alice", "sam", "fiona", "fred", "ceo"))
    submit_page(alice, "chain", title="Chain laptop", reviewer=str(world.ids["fiona"]))
    iid = instance_of(world, "Chain laptop")
    assert pending_of(fiona) == [] and pending_of(ceo) == []
    (task,) = pending_of(sam)
    assert act(sam, task, "add_approvers", users="fred").status_code == 302
    assert pending_of(fred) == []  # after sam, before fiona
    assert act(sam, task, comment="fine").status_code == 302
    for client in (fred, fiona, ceo):
        (task,) = pending_of(client)
        assert act(client, task).status_code == 302
    view = text_of(alice.get(f"/workflows/instances/{iid}").text)
    assert "已通过" in view and "fine" in view
    steps, timeline = view.split("审批记录", 1)
    assert re.findall(r"同意\s*·[^·]+·\s*(\w+)", timeline) == ["Sam", "Fred", "Fiona", "Ceo"]
    assert [steps.index(n) for n in ("Sam", "Fred", "Fiona", "Ceo")] == sorted(steps.index(n) for n in ("Sam", "Fred", "Fiona", "Ceo"))


def test_a_rejection_sends_it_back_and_the_submitter_resubmits(world):
    alice, fred, fay = (login(world.app, u) for u in ("alice", "fred", "fay"))
    submit_page(alice, "anyof", title="Returned laptop")
    iid = instance_of(world, "Returned laptop")
    (task,) = pending_of(fred)
    assert act(fred, task, "reject", comment="缺少报价单").status_code == 302
    assert "已退回待修改" in alice.get("/inbox").text
    page = alice.get(f"/workflows/instances/{iid}").text
    assert "缺少报价单" in page and "重新提交" in page
    r = submitter_action(alice, iid, "resubmit", comment="已补报价单")
    assert r.status_code == 302
    assert rows(world.engine, "SELECT status FROM keel_wf_instances WHERE id = :i", i=iid)[0][0] == "pending"
    assert len(pending_of(fred)) == 1 and len(pending_of(fay)) == 1
    assert "已补报价单" in alice.get(f"/workflows/instances/{iid}").text
    assert submitter_action(alice, iid, "resubmit").status_code == 409  # only a returned request


def test_bulk_approval_of_checked_tasks(world):
    alice, sam = login(world.app, "alice"), login(world.app, "sam")
    for n in (1, 2):
        submit_page(alice, "allof", title=f"Bulk {n}")
    page = sam.get(TASKS).text
    ids = task_ids(page)
    assert len(ids) == 2 and page.count('form="bulk"') == 2
    r = sam.post(TASKS + "/bulk_approve", data={"csrf_token": csrf_of(page), "task_ids": [str(i) for i in ids],
                                                "comment": "批量同意"})
    assert r.status_code == 302
    assert "已同意 2 / 2 项待办" in sam.get(TASKS).text
    assert rows(world.engine, "SELECT count(*) FROM keel_wf_tasks WHERE status = 'approved' AND comment = '批量同意'"
                )[0][0] == 2
    r = sam.post(TASKS + "/bulk_approve", data={"csrf_token": csrf_of(page), "task_ids": ["x"]})
    assert r.status_code == 422


def test_refusals_say_why_in_the_users_language_and_change_nothing(world):
    alice, sam, bob = (login(world.app, u) for u in ("alice", "sam", "bob"))
    submit_page(alice, "allof", title="Refused laptop")
    iid = instance_of(world, "Refused laptop")
    (task,) = pending_of(sam)
    before = world.snapshot()
    r = act(bob, task)  # not bob's task
    assert r.status_code == 403 and "这项待办分配给了其他人" in r.text
    r = act(sam, task, "transfer", to_user="")
    assert r.status_code == 422 and "转交给: 此字段为必填项" in text_of(r.text)
    r = act(sam, task, "transfer", to_user="nobody")
    assert r.status_code == 422 and "nobody" in r.text
    r = act(sam, task, "send_back", to_step="submitter")  # allof's step does not allow it
    assert r.status_code == 403 and "此步骤不允许" in r.text
    r = sam.post(f"{TASKS}/{task}", data={"action": "approve"})  # no CSRF token
    assert r.status_code == 400
    assert world.snapshot() == before
    assert bob.get(f"/workflows/instances/{iid}").status_code == 404
    assert submitter_action(bob, iid, "withdraw").status_code == 404

    assert act(sam, task, comment="ok").status_code == 302
    after = world.snapshot()
    r = act(sam, task, lang="en")
    assert r.status_code == 409 and "这项待办已处理" in r.text
    r = sam.post(f"{TASKS}/{task}?lang=en", data={"csrf_token": csrf_of(sam.get(TASKS).text), "action": "approve"})
    assert r.status_code == 409 and "This task was already handled (Approved)" in r.text
    assert world.snapshot() == after


def test_sla_reminder_overdue_mark_and_escalation_to_the_superior(world):
    from keel.workflow.timers import fire_due_timers

    alice, sam, ceo = (login(world.app, u) for u in ("alice", "sam", "ceo"))
    submit_page(alice, "allof", title="SLA laptop")
    iid = instance_of(world, "SLA laptop")
    (task,) = pending_of(sam)
    timers = {k: at for k, at in rows(world.engine, "SELECT kind, due_at FROM keel_timers WHERE task_id = :t",
                                      t=task)}
    assert set(timers) == {"remind", "due", "escalate"}
    page = sam.get(TASKS).text
    due_text = dt.datetime.fromisoformat(str(timers["due"])).replace(tzinfo=dt.UTC).astimezone(
        __import__("zoneinfo").ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M")
    assert due_text in page and "已超时" not in page

    remind_at = dt.datetime.fromisoformat(str(timers["remind"])).replace(tzinfo=dt.UTC)
    assert fire_due_timers(world.engine, world.app.extensions["keel"], now=remind_at + dt.timedelta(minutes=1))["remind"] == 2
    assert "审批即将到期" in sam.get("/inbox").text

    with world.engine.begin() as conn:  # the due time passes (the page compares with the real clock)
        conn.execute(sa.text("UPDATE keel_timers SET due_at = :t WHERE task_id = :i AND kind = 'due'"),
                     {"t": dt.datetime.now(dt.UTC) - dt.timedelta(hours=1), "i": task})
    assert "已超时" in sam.get(TASKS).text
    due_at = dt.datetime.fromisoformat(str(timers["due"])).replace(tzinfo=dt.UTC)
    assert fire_due_timers(world.engine, world.app.extensions["keel"], now=due_at + dt.timedelta(minutes=1))["escalate"] == 2
    assert pending_of(sam) == []
    (ceo_task,) = pending_of(ceo)  # sam's superior; fiona's is the CEO too, who already has a seat:
    assert "SLA laptop" in ceo.get(TASKS).text  # one person decides once per step, so fiona keeps hers
    assert rows(world.engine, "SELECT count(*) FROM keel_audit_events WHERE action = "
                              "'workflow.sla_escalation_unresolved'")[0][0] == 1
    assert act(ceo, ceo_task).status_code == 302
    fiona = login(world.app, "fiona")
    (fiona_task,) = pending_of(fiona)
    assert act(fiona, fiona_task).status_code == 302
    view = text_of(alice.get(f"/workflows/instances/{iid}").text)
    assert "已升级" in view and "已通过" in view

    root = login(world.app, "root")
    metrics = root.get("/workflows/metrics").text
    row = re.search(rf'<tr id="metrics-{iid}">(.*?)</tr>', metrics, re.DOTALL).group(1)
    assert "已通过" in row and re.search(r"<td>\d+\.\d</td>", row)
    assert login(world.app, "alice").get("/workflows/metrics").status_code == 403
