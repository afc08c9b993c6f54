"""Both approvers of the CRO's revision approve at the same instant on PostgreSQL (a client per thread): the
engine's lock on the workflow instance lets one of them finish the step, so the goal is applied once, the cascade
runs once and nobody gets a second message. Also: two revision requests of one goal filed at once — one wins."""
from __future__ import annotations

import threading

import pytest

from conftest import APPS, make_app
from helpers_goal import API, Demo

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_demo(tmp_path, pg_url):
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from keel.definitions.loader import load_app_dir
    from keel.demo import seed_demo

    app = make_app(tmp_path, pg_url)
    runtime = app.extensions["keel"]
    apply_app(runtime.engine, load_app_dir(APPS / "goal_agility", app.extensions["keel_plugins"].registries()), SYSTEM)
    runtime.refresh()
    seed_demo(app)
    yield Demo(app)
    runtime.engine.dispose()


def _at_once(demo, calls):
    barrier = threading.Barrier(len(calls))
    out = [None] * len(calls)

    def go(i, url, who, body):
        client = demo.app.test_client()
        barrier.wait()
        r = client.post(API + url, json=body, headers=demo.h(who))
        out[i] = (r.status_code, r.get_json())

    threads = [threading.Thread(target=go, args=(i, *c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_two_approvals_at_the_same_instant_apply_and_cascade_once(pg_demo):
    demo = pg_demo
    sales = demo.goal("销售部 Q4 核心目标")
    assert demo.submit("cro", sales["id"]).status_code == 201
    [ceo_task], [lin_task] = demo.tasks_of("ceo"), demo.tasks_of("strategy_lead")
    codes = _at_once(demo, [(f"/workflows/tasks/{ceo_task['id']}/approve", "ceo", {}),
                            (f"/workflows/tasks/{lin_task['id']}/approve", "strategy_lead", {})])
    assert [c for c, _ in codes] == [200, 200], codes
    after = demo.goal("销售部 Q4 核心目标")
    assert after["revision_no"] == 2 and int(after["target"]) == 800000
    assert demo.goal("李娜 Q4 个人目标")["revision_no"] == 2                 # re-split once, not twice
    told = demo.rows("SELECT user_id, count(*) AS n FROM keel_inbox WHERE template = 'goal_changed' GROUP BY user_id")
    # everyone the cascade reaches (how many depends on the demo's data) is told exactly once
    assert len(told) >= 7 and all(r["n"] == 1 for r in told), told
    applied = demo.rows("SELECT count(*) AS n FROM keel_audit_events WHERE action = 'goal_agility.revision_applied'")
    assert applied[0]["n"] == 1


def test_two_revision_requests_of_one_goal_at_once_one_is_refused(pg_demo):
    demo = pg_demo
    li = demo.goal("李娜 Q4 个人目标")
    body = {"goal": li["id"], "proposed_target": "3", "reason": "r", "resources": "x"}
    form = "/apps/goal_agility/forms/revision_request"
    out = _at_once(demo, [(form, "rep_li", body), (form, "east_mgr", {**body, "proposed_target": "4"})])
    assert sorted(c for c, _ in out) == [201, 422], out
    assert demo.count("goal_agility__revision_request") == 1
