"""Approval metrics from the audit trail: the case's request took 62 h end to end, 12 h of it in
approval (the rest with the submitter, who was sent back for changes); per step, per instance, and
aggregated per workflow for dashboards and the REST API."""
from __future__ import annotations

import datetime as dt

import pytest

from conftest import make_app
from helpers_notify import add_people, apply_bundle, bundle, engine_for, token_for
from keel.actor import SYSTEM
from keel.errors import NotFound
from keel.storage.audit import record_event
from keel.workflow.metrics import instance_metrics, percentile, workflow_metrics

T0 = dt.datetime(2025, 10, 18, 1, 0, tzinfo=dt.UTC)  # 09:00 in Shanghai, the day the CRO revised the goal
WF = "revision_approval"


def h(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def events(conn, instance: int, script: list[tuple[float, str, dict]], workflow: str = WF, app: str = "notes"):
    for at, action, detail in script:
        record_event(conn, SYSTEM, f"workflow.{action}", app=app, entity="revision", record_id=instance,
                     at=at if isinstance(at, dt.datetime) else h(at),
                     detail={"instance": instance, "workflow": workflow, **detail})


THE_CASE = [  # two approvers in parallel; strategy sends it back once; resubmitted two days later
    (0, "start", {}), (0, "step_enter", {"step": "dual_line"}),
    (2, "approve", {"step": "dual_line"}),
    (8, "reject", {"step": "dual_line"}), (8, "step_complete", {"step": "dual_line", "outcome": "rejected"}),
    (8, "return", {"step": "dual_line"}),
    (58, "resubmit", {}), (58, "step_enter", {"step": "dual_line"}),
    (60, "approve", {"step": "dual_line"}), (62, "approve", {"step": "dual_line"}),
    (62, "step_complete", {"step": "dual_line", "outcome": "approved"}),
    (62, "finish", {"outcome": "approved", "state": "approved"}),
]


@pytest.fixture
def engine(db_url):
    e = engine_for(db_url)
    yield e
    e.dispose()


def test_the_case_takes_62_hours_end_to_end_and_12_of_them_in_approval(engine):
    with engine.begin() as conn:
        events(conn, 1, THE_CASE)
    with engine.connect() as conn:
        m = instance_metrics(conn, 1)
    assert m["lead_time_hours"] == 62 and m["approval_hours"] == 12
    assert m["time_to_first_action_hours"] == 2 and m["status"] == "approved"
    [step] = m["steps"]
    assert step["step"] == "dual_line" and step["visits"] == 2 and step["hours"] == 12
    assert (step["approvals"], step["rejections"]) == (3, 1) and step["time_to_first_action_hours"] == 2
    assert m["started_at"] == T0 and m["finished_at"] == h(62)


def test_a_running_instance_is_measured_up_to_now_and_steps_without_step_enter_start_at_the_previous_end(engine):
    with engine.begin() as conn:
        events(conn, 2, [(0, "start", {}), (5, "approve", {"step": "manager"}),
                         (6, "step_complete", {"step": "manager"}), (9, "transfer", {"step": "strategy"})])
    with engine.connect() as conn:
        m = instance_metrics(conn, 2, now=h(30))
    assert m["status"] == "running" and m["finished_at"] is None and m["lead_time_hours"] == 30
    manager, strategy = m["steps"]
    assert manager["hours"] == 6 and manager["time_to_first_action_hours"] == 5
    assert strategy["entered_at"] == h(6) and strategy["hours"] == 24 and strategy["time_to_first_action_hours"] == 3
    assert m["approval_hours"] == 30


def test_workflow_aggregates_count_finished_instances_since_a_date(engine):
    with engine.begin() as conn:
        events(conn, 1, THE_CASE)
        events(conn, 2, [(0, "start", {}), (0, "step_enter", {"step": "dual_line"}), (4, "approve", {"step": "dual_line"}),
                         (20, "approve", {"step": "dual_line"}),
                         (20, "step_complete", {"step": "dual_line", "outcome": "approved"}),
                         (20, "finish", {"outcome": "approved"})])
        events(conn, 3, [(1, "start", {}), (1, "step_enter", {"step": "dual_line"})])           # still running
        events(conn, 4, [(-500, "start", {}), (-499, "finish", {"outcome": "withdrawn"})])      # before `since`
        events(conn, 5, [(0, "start", {}), (1, "finish", {"outcome": "approved"})], workflow="other")
        events(conn, 6, [(0, "start", {}), (1, "finish", {"outcome": "approved"})], app="elsewhere")
    with engine.connect() as conn:
        m = workflow_metrics(conn, "notes", WF, since=h(-24), now=h(100))
        everything = workflow_metrics(conn, "notes", WF, now=h(100))
    assert m["count"] == 2 and m["running"] == 1 and m["by_status"] == {"approved": 2}
    assert (m["avg_approval_hours"], m["p50_approval_hours"], m["p90_approval_hours"]) == (16, 16, 19.2)
    assert (m["avg_lead_time_hours"], m["max_lead_time_hours"]) == (41, 62)
    assert m["avg_first_action_hours"] == 3
    assert m["steps"]["dual_line"]["count"] == 2 and m["steps"]["dual_line"]["avg_step_hours"] == 16
    assert everything["count"] == 3 and everything["by_status"] == {"approved": 2, "withdrawn": 1}


def test_percentiles_interpolate_and_empty_input_gives_none():
    assert percentile([], 50) is None
    assert percentile([5], 90) == 5
    assert percentile([1, 2, 3, 4], 50) == 2.5


def test_an_instance_without_events_or_without_a_start_is_not_found(engine):
    with engine.begin() as conn:
        events(conn, 7, [(1, "approve", {"step": "x"})])
    with engine.connect() as conn:
        with pytest.raises(NotFound):
            instance_metrics(conn, 404)
        with pytest.raises(NotFound):
            instance_metrics(conn, 7)
        assert workflow_metrics(conn, "notes", WF)["count"] == 0


def test_the_metrics_api_is_for_admins_and_the_strategy_department(tmp_path, sqlite_url):

    flask_app = make_app(tmp_path, sqlite_url)
    engine = flask_app.extensions["keel"].engine
    apply_bundle(engine, bundle())
    ids = add_people(engine, ("sue", {"roles": ["strategy"]}), ("eve", {"roles": ["employee"]}),
                     ("root", {"is_admin": True}))
    with engine.begin() as conn:
        events(conn, 1, THE_CASE)
    c = flask_app.test_client()

    def get(url, who):
        return c.get(url, headers={"Authorization": f"Bearer {token_for(engine, ids[who])}"})

    r = get(f"/api/v1/workflows/metrics?app=notes&workflow={WF}&since=2025-10-01", "sue")
    assert r.status_code == 200 and r.get_json()["count"] == 1 and r.get_json()["avg_lead_time_hours"] == 62
    one = get("/api/v1/workflows/metrics?instance=1", "root").get_json()
    assert one["approval_hours"] == 12 and one["started_at"] == "2025-10-18T01:00:00+00:00"
    assert get(f"/api/v1/workflows/metrics?app=notes&workflow={WF}", "eve").status_code == 403
    bad = get("/api/v1/workflows/metrics?app=notes&since=yesterday", "sue")
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"workflow"}
    assert get(f"/api/v1/workflows/metrics?app=notes&workflow={WF}&since=yesterday", "sue").status_code == 422
    assert get("/api/v1/workflows/metrics?instance=99", "sue").status_code == 404
    engine.dispose()


def test_a_step_left_by_a_send_back_stops_counting_when_the_earlier_step_is_entered(engine):
    with engine.begin() as conn:
        events(conn, 8, [(0, "start", {}), (0, "step_enter", {"step": "manager"}),
                         (1, "approve", {"step": "manager"}), (1, "step_complete", {"step": "manager"}),
                         (1, "step_enter", {"step": "strategy"}), (4, "send_back", {"step": "strategy"}),
                         (4, "step_enter", {"step": "manager"}), (6, "approve", {"step": "manager"}),
                         (6, "step_complete", {"step": "manager"}), (6, "step_enter", {"step": "strategy"}),
                         (7, "approve", {"step": "strategy"}), (7, "step_complete", {"step": "strategy"}),
                         (7, "finish", {"outcome": "approved"})])
    with engine.connect() as conn:
        m = instance_metrics(conn, 8, now=h(500))
    hours = {s["step"]: s["hours"] for s in m["steps"]}
    assert hours == {"manager": 3, "strategy": 4} and m["approval_hours"] == 7 and m["lead_time_hours"] == 7
