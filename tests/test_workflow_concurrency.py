"""Approvals at the same moment, on PostgreSQL with real concurrent requests (a client per thread, each
request on its own pooled connection): the row lock on the instance makes exactly one of them count."""
from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from helpers_timing import PATIENCE
from test_workflow_support import make_world

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_world(tmp_path, pg_url):
    w = make_world(tmp_path, pg_url)
    yield w
    w.engine.dispose()


def _at_once(w, calls):
    """Run (url, who) POSTs from as many threads, released together; their status codes."""
    barrier = threading.Barrier(len(calls))
    codes: list[int] = [0] * len(calls)

    def go(i, url, who):
        client = w.app.test_client()
        barrier.wait()
        codes[i] = client.post("/api/v1" + url, json={}, headers=w.headers(who)).status_code

    threads = [threading.Thread(target=go, args=(i, url, who)) for i, (url, who) in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PATIENCE)
    assert not any(t.is_alive() for t in threads), f"a request was still running after {PATIENCE:.0f} s"
    return codes


def _events(w, iid: int, action: str) -> int:
    with w.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT detail FROM keel_audit_events WHERE action = :a"), {"a": action}).all()
    return sum(1 for (d,) in rows if d.get("instance") == iid)


def test_twenty_simultaneous_approvals_of_one_task_make_one_transition(pg_world):
    w = pg_world
    iid = w.start("anyof")
    task = w.task_of(iid, "fred")
    codes = _at_once(w, [(f"/workflows/tasks/{task}/approve", "fred")] * 20)
    assert sorted(codes) == [200] + [409] * 19
    assert _events(w, iid, "workflow.approve") == 1
    assert _events(w, iid, "workflow.finish") == 1
    view = w.instance(iid)
    assert view["status"] == "approved"
    assert sorted(t["status"] for t in view["tasks"]) == ["approved", "withdrawn", "withdrawn"]


def test_both_branches_approving_at_once_finish_the_step_exactly_once(pg_world):
    w = pg_world
    for _ in range(3):
        iid = w.start("allof")
        calls = [(f"/workflows/tasks/{w.task_of(iid, who)}/approve", who) for who in ("sam", "fiona")]
        assert _at_once(w, calls) == [200, 200]
        assert w.instance(iid)["status"] == "approved"
        assert _events(w, iid, "workflow.step_complete") == 1
        with w.engine.connect() as conn:
            followups = conn.execute(sa.text("SELECT count(*) FROM wfapp__followup WHERE expense = :r"),
                                     {"r": w.instance(iid)["record_id"]}).scalar()
        assert followups == 1
