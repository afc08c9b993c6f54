"""SLA timers end to end with the workflow engine: due times in the database, a reminder before the due
time, an overdue notice and escalation to the approver's superior at it, admins told when there is
nobody above; idempotent, safe with two firing processes, nothing lost by a restart or a failure."""
from __future__ import annotations

import datetime as dt
import json
import threading
import zoneinfo

import pytest
import sqlalchemy as sa

from helpers_notify import add_people, apply_bundle, bundle, count, engine_for
from helpers_registries import REGISTRIES
from keel.actor import SYSTEM
from keel.auth.directory import get_actor
from keel.notify import inbox
from keel.runtime import Runtime
from keel.storage.notify_tables import timers
from keel.storage.system import audit_events
from keel.workflow import timers as sla_timers
from keel.workflow.calendar import add_working_days

SLA = {"working_days": 2, "remind_before_days": 1, "escalate": "manager_of_approver"}
REQUEST = {"id": "request", "label": {"zh": "申请", "en": "Request"},
           "fields": [{"id": "title", "type": "text", "required": True}],
           "permissions": [{"role": "employee", "read": "own", "create": True, "update": "own"}]}


def workflow(sla=SLA):
    return {"id": "approval", "label": {"zh": "目标修订", "en": "Target revision"}, "starts_on": {"entity": "request"},
            "steps": [{"id": "review", "mode": "single", "approvers": [{"rule": "manager_of", "of": "submitter"}],
                       "sla": sla}]}


def app_bundle(sla=SLA, notifications=()):
    b = bundle(list(notifications), workflows=[workflow(sla)])
    b["entities/request.json"] = REQUEST
    return b


@pytest.fixture
def world(db_url):
    from keel.workflow import ensure_tables

    engine = engine_for(db_url)
    ensure_tables(engine)
    apply_bundle(engine, app_bundle())
    ids = add_people(engine, ("admin", {"is_admin": True}), ("ceo", {}), ("mia", {"manager_username": "ceo"}),
                     ("eve", {"roles": ["employee"], "manager_username": "mia"}))
    yield db_url, engine, ids
    engine.dispose()


def submit(engine, ids) -> int:
    from keel.storage.records import create
    from keel.workflow import engine as wf
    with engine.begin() as conn:
        eve = get_actor(conn, ids["eve"])
        built = runtime_of(engine).latest(conn, "notes")
        record = create(conn, built, "request", {"title": "upsell ≥ ¥800,000"}, eve)
        instance_id = conn.execute(sa.select(sa.text("id")).select_from(sa.text("keel_wf_instances"))
                                   .where(sa.text(f"record_id = {int(record['id'])}"))).scalar()
        if instance_id is None:  # the record write path does not start workflows by itself
            instance_id = wf.start(conn, built, "approval", record["id"], eve)
    return instance_id


def runtime_of(engine):
    """The apps as a server of this database sees them (each call reads what is stored)."""
    return Runtime(engine, REGISTRIES)


def timer_rows(engine, instance_id):
    with engine.connect() as conn:
        return conn.execute(sa.select(timers).where(timers.c.instance_id == instance_id).order_by(timers.c.id)).all()


def subjects(engine, user_id, lang="en"):
    with engine.connect() as conn:
        return [m["subject"] for m in inbox.list_messages(conn, user_id, lang=lang, per_page=50)["items"]]


def actions(engine, prefix="workflow.sla"):
    with engine.connect() as conn:
        return [r.action for r in conn.execute(sa.select(audit_events.c.action)
                                               .where(audit_events.c.action.like(prefix + "%"))
                                               .order_by(audit_events.c.id))]


def aware(t):
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def test_entering_a_step_stores_a_reminder_a_due_time_and_an_escalation_in_working_days(world):
    _, engine, ids = world
    instance_id = submit(engine, ids)
    rows = timer_rows(engine, instance_id)
    assert sorted(r.kind for r in rows) == ["due", "escalate", "remind"]
    started = dt.datetime.fromisoformat(rows[0].detail["started_at"])
    by_kind = {r.kind: aware(r.due_at) for r in rows}
    assert by_kind["due"] == by_kind["escalate"] == add_working_days(started, 2)
    assert by_kind["remind"] == add_working_days(by_kind["due"], -1)
    assert all(r.fired_at is None and r.detail["level"] == 0 for r in rows)


def test_reminder_then_after_a_restart_overdue_notice_and_escalation_then_admins_at_the_top(world):
    url, engine, ids = world
    instance_id = submit(engine, ids)
    due = {r.kind: aware(r.due_at) for r in timer_rows(engine, instance_id)}
    assert sla_timers.fire_due_timers(engine, runtime_of(engine), due["remind"] - dt.timedelta(seconds=1))["remind"] == 0
    counts = sla_timers.fire_due_timers(engine, runtime_of(engine), due["remind"])
    assert counts["remind"] == 1 and counts["due"] == 0
    assert subjects(engine, ids["mia"])[0] == f"Approval due soon: Target revision #{instance_id}"
    # issue 8: the reminder names the task's due time, not the moment the reminder fires
    due_local = due["due"].astimezone(zoneinfo.ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M")
    with engine.connect() as conn:
        body = conn.execute(sa.text("SELECT body FROM keel_inbox WHERE user_id = :u ORDER BY id DESC"),
                            {"u": ids["mia"]}).scalars().first()
    body = json.loads(body) if isinstance(body, str) else body
    assert body["en"] == f"Please decide this approval by {due_local}." and due_local in body["zh"]
    assert due["remind"] != due["due"]
    assert sla_timers.fire_due_timers(engine, runtime_of(engine), due["remind"])["remind"] == 0  # fired once only

    engine.dispose()  # a restart: a new process with nothing in memory
    fresh = engine_for(url)
    counts = sla_timers.fire_due_timers(fresh, runtime_of(fresh), due["due"])
    assert (counts["due"], counts["escalate"]) == (1, 1)
    from keel.workflow.engine import pending_tasks_of_step

    with fresh.connect() as conn:
        [task] = pending_tasks_of_step(conn, instance_id, "review")
    assert task["assignee_id"] == ids["ceo"]
    assert subjects(fresh, ids["mia"])[:2] == [f"Approval escalated to your superior: Target revision #{instance_id}",
                                             f"Approval overdue: Target revision #{instance_id}"]
    assert any("Target revision" in s for s in subjects(fresh, ids["ceo"]))
    assert actions(fresh) == ["workflow.sla_remind", "workflow.sla_overdue", "workflow.sla_escalate"]

    # the superior's task has its own clock; the CEO has nobody above: the administrators are told
    new_rows = [r for r in timer_rows(fresh, instance_id) if r.task_id == task["id"]]
    assert {r.detail["level"] for r in new_rows} == {1}
    later = max(aware(r.due_at) for r in new_rows)
    counts = sla_timers.fire_due_timers(fresh, runtime_of(fresh), later)
    assert counts["escalate"] == 1
    assert subjects(fresh, ids["admin"]) == [
        f"Overdue approval with nobody to escalate to: Target revision #{instance_id}"]
    assert actions(fresh)[-1] == "workflow.sla_escalation_unresolved"
    with fresh.connect() as conn:
        event = conn.execute(sa.select(audit_events).where(
            audit_events.c.action == "workflow.sla_escalation_unresolved")).one()
        [still] = pending_tasks_of_step(conn, instance_id, "review")
    assert event.detail["notified_admins"] == [ids["admin"]] and event.detail["reason"] == "no superior"
    assert still["assignee_id"] == ids["ceo"]  # the request is not lost: it waits for the CEO
    fresh.dispose()


def test_a_decided_task_cancels_its_timers_and_nothing_fires_later(world):
    from keel.workflow import engine as wf
    from keel.workflow.engine import pending_tasks_of_step

    _, engine, ids = world
    instance_id = submit(engine, ids)
    with engine.begin() as conn:
        [task] = pending_tasks_of_step(conn, instance_id, "review")
        wf.approve(conn, runtime_of(engine), task["id"], get_actor(conn, ids["mia"]), "ok")
    rows = timer_rows(engine, instance_id)
    assert {r.outcome for r in rows} == {"cancelled"}
    far = max(aware(r.due_at) for r in rows) + dt.timedelta(days=30)
    counts = sla_timers.fire_due_timers(engine, runtime_of(engine), far)
    assert counts["remind"] == counts["due"] == counts["escalate"] == 0
    assert actions(engine) == []


def test_a_timer_whose_task_was_decided_without_cancelling_is_skipped(world):
    """Belt and braces: the timer checks the task is still pending when it fires."""
    _, engine, ids = world
    instance_id = submit(engine, ids)
    from keel.storage.workflow_tables import wf_tasks

    with engine.begin() as conn:  # as if the engine had forgotten to cancel
        conn.execute(wf_tasks.update().where(wf_tasks.c.instance_id == instance_id).values(status="approved"))
    far = max(aware(r.due_at) for r in timer_rows(engine, instance_id))
    assert sla_timers.fire_due_timers(engine, runtime_of(engine), far)["skipped"] == 3
    assert {r.outcome for r in timer_rows(engine, instance_id)} == {"skipped"}


def test_a_timer_that_fails_mid_fire_writes_nothing_is_retried_later_and_then_fires(world):
    _, engine, ids = world
    instance_id = submit(engine, ids)
    remind_at = next(aware(r.due_at) for r in timer_rows(engine, instance_id) if r.kind == "remind")
    before = subjects(engine, ids["mia"])
    with engine.begin() as conn:  # the inbox cannot be written: the reminder fails half-way
        conn.exec_driver_sql("ALTER TABLE keel_inbox RENAME TO keel_inbox_away")
    assert sla_timers.fire_due_timers(engine, runtime_of(engine), remind_at, deliver=False)["failed"] == 1
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE keel_inbox_away RENAME TO keel_inbox")
    [row] = [r for r in timer_rows(engine, instance_id) if r.kind == "remind"]
    assert row.fired_at is None and row.attempts == 1 and "keel_inbox" in row.last_error
    assert subjects(engine, ids["mia"]) == before and actions(engine) == []  # nothing half-done
    assert sla_timers.fire_due_timers(engine, runtime_of(engine), remind_at)["remind"] == 0  # not before its back-off
    assert sla_timers.fire_due_timers(engine, runtime_of(engine), remind_at + dt.timedelta(minutes=2))["remind"] == 1
    assert subjects(engine, ids["mia"])[0].startswith("Approval due soon")
    [row] = [r for r in timer_rows(engine, instance_id) if r.kind == "remind"]
    assert row.outcome == "fired" and row.attempts == 2


def test_two_processes_firing_at_once_fire_each_timer_exactly_once(world):
    url, engine, ids = world
    instances = [submit(engine, ids) for _ in range(3)]
    remind_at = max(aware(r.due_at) for i in instances for r in timer_rows(engine, i) if r.kind == "remind")
    engines = [engine_for(url), engine_for(url)]
    barrier, results = threading.Barrier(2), []

    def run(e):
        barrier.wait()
        results.append(sla_timers.fire_due_timers(e, runtime_of(e), remind_at, deliver=False))

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r["remind"] for r in results) == 3 and sum(r["failed"] for r in results) == 0
    assert actions(engine) == ["workflow.sla_remind"] * 3
    assert sum(s.startswith("Approval due soon") for s in subjects(engine, ids["mia"])) == 3
    for e in engines:
        e.dispose()


def test_the_timers_job_fires_inside_the_jobs_transaction(world):
    from keel.jobs.types import JobContext

    _, engine, ids = world
    instance_id = submit(engine, ids)
    job = REGISTRIES.job_types["workflow_timers"]  # registered through the plugin hook, like any job type
    assert isinstance(job, sla_timers.WorkflowTimersJob)
    with engine.begin() as conn:
        # Due already: the job fires with the real clock, so move the reminder into the past.
        conn.execute(timers.update().where(timers.c.instance_id == instance_id, timers.c.kind == "remind")
                     .values(due_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)))
    with engine.begin() as conn:
        ctx = JobContext(conn=conn, engine=engine, runtime=runtime_of(engine), actor=SYSTEM, app_id="notes",
                         job_id="workflow_timers", run_id=1, attempt=1, options={})
        assert job.authorize(ctx, {}) is None
        counts = job.run_chunk(ctx, {}, {})
    assert counts["remind"] == 1 and counts["due"] == 0
    assert actions(engine) == ["workflow.sla_remind"]
    with engine.connect() as conn:
        employee = JobContext(conn=conn, engine=engine, runtime=None, actor=get_actor(conn, ids["eve"]),
                              app_id="notes", job_id="workflow_timers", run_id=1, attempt=1, options={})
        assert job.authorize(employee, {}) is not None


def test_schedule_step_is_idempotent_and_refuses_an_unusable_sla(world):
    _, engine, _ = world
    start = dt.datetime(2025, 9, 26, 2, 0, tzinfo=dt.UTC)  # Friday 10:00 in Shanghai
    with engine.begin() as conn:
        first = sla_timers.schedule_step(conn, 900, "review", [901, 902], {"working_days": 7}, start)
        again = sla_timers.schedule_step(conn, 900, "review", [901, 902], {"working_days": 7}, start)
        assert first == again and len(first) == 2
        assert sla_timers.schedule_step(conn, 900, "review", [903], None, start) == []
        for bad in ({"working_days": 0}, {"working_days": "7"}, {"working_days": 7, "escalate": "ceo"},
                    {"working_days": 7, "timezone": "Mars/Olympus"}):
            with pytest.raises(sla_timers.SLAError):
                sla_timers.schedule_step(conn, 900, "review", [904], bad, start)
        due = conn.execute(sa.select(timers.c.due_at).where(timers.c.task_id == 901)).scalar()
    # 7 working days across the National Day week: Monday 13 October 10:00 in Shanghai
    assert aware(due) == dt.datetime(2025, 10, 13, 2, 0, tzinfo=dt.UTC)
    assert count(engine, timers, timers.c.task_id == 904) == 0


def test_metrics_read_the_engines_own_audit_events(world):
    from keel.workflow import engine as wf
    from keel.workflow.engine import pending_tasks_of_step
    from keel.workflow.metrics import instance_metrics, workflow_metrics

    _, engine, ids = world
    instance_id = submit(engine, ids)
    with engine.begin() as conn:
        [task] = pending_tasks_of_step(conn, instance_id, "review")
        wf.approve(conn, runtime_of(engine), task["id"], get_actor(conn, ids["mia"]), "ok")
    with engine.connect() as conn:
        m = instance_metrics(conn, instance_id)
        agg = workflow_metrics(conn, "notes", "approval")
    assert m["status"] == "approved" and m["finished_at"] is not None
    [step] = m["steps"]
    assert step["step"] == "review" and step["approvals"] == 1 and step["completed_at"] is not None
    assert 0 <= m["approval_hours"] < 0.1 and m["time_to_first_action_hours"] is not None
    assert agg["count"] == 1 and agg["by_status"] == {"approved": 1}
