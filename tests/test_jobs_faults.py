"""Jobs under faults, with a private redis-server and `keel worker` processes the tests start, break and
kill themselves: a worker SIGKILLed mid-chunk (its chunk is taken back within a minute, with no
scheduler, and a worker of the same name starts at once), Redis refusing writes under a bulk approval,
Redis going away and coming back (retries waiting out a back-off, scheduled runs that piled up), and
the run history that says why each attempt ended."""
from __future__ import annotations

import datetime as dt
import time
from typing import ClassVar

import sqlalchemy as sa

from keel.jobs.execute import Dispatch, JobEnv
from keel.jobs.queue import RQDispatcher, deliver
from keel.jobs.reaper import reap
from keel.jobs.scheduler import Scheduler
from keel.jobs.types import JobType
from test_jobs_helpers import (  # noqa: F401 - private_redis_fixture is the `private_redis` fixture
    children,
    kill_worker,
    make_job_world,
    private_redis_fixture,
    run_status,
    start_worker,
    stop_worker,
    wait_for,
    work_until,
)

UTC = dt.UTC
FAST = {"KEEL_JOB_HEARTBEAT_SECONDS": "1"}  # a lease of 3 s, reaped every second: the test's minute is seconds


def _ask(world, job: str) -> int:
    from keel.jobs.catalog import ask, find_spec

    spec = find_spec(world.env, job)
    return ask(world.env, spec, dict(spec.params), trigger="cli", user_id=None).run_id


def _run(world, run_id: int) -> dict:
    r = world.client.get(f"/api/v1/jobs/runs/{run_id}", headers=world.headers())
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def _browser(world, who: str):
    from keel.actor import SYSTEM
    from keel.auth.directory import set_password
    from test_jobs_helpers import csrf_of

    with world.engine.begin() as conn:
        set_password(conn, world.user_ids[who], "a-Long-pass-phrase-42", SYSTEM)
    username = {"admin": "ada", "manager": "mia"}[who]
    c = world.app.test_client()
    r = c.post("/login", data={"username": username, "password": "a-Long-pass-phrase-42",
                               "csrf_token": csrf_of(c.get("/login").text)})
    assert r.status_code == 302, r.text
    return c


def _workers_named(redis_client, prefix: str) -> list[str]:
    from rq import Worker

    return sorted(w.name for w in Worker.all(connection=redis_client) if w.name.startswith(prefix))


# ---- a worker killed mid-chunk ------------------------------------------------------------------------

def test_a_killed_workers_chunk_is_taken_back_within_a_minute_without_a_scheduler(tmp_path, sqlite_url,
                                                                                  private_redis):
    world = make_job_world(tmp_path, sqlite_url, {"slow": {
        "type": "diagnostic", "timeout_seconds": 600, "retries": {"max": 1, "backoff_seconds": [0]},
        "params": {"items": 1, "sleep_seconds": 300, "sleep_attempts": 1}}})
    world.env.dispatcher = RQDispatcher(private_redis.url, "keel")
    run_id = _ask(world, "slow")
    world.env.dispatcher.send(Dispatch(run_id, timeout=600))

    first = start_worker(world, private_redis.url, "keel", "box", **FAST)
    try:
        wait_for(lambda: world.chunks(run_id) and world.chunks(run_id)[0].status == "running",
                 "the first worker to start the chunk")
        (first_name,) = _workers_named(private_redis.client(), "box-")
    finally:
        kill_worker(first)  # mid-sleep, in the middle of a 600-second timeout
    killed_at = time.monotonic()
    assert world.chunks(run_id)[0].status == "running"

    # Restarted as a container would be: same name given, same host. It starts at once (RQ would refuse
    # a name a worker killed a moment ago still holds) and takes the chunk back; no scheduler runs.
    second = start_worker(world, private_redis.url, "keel", "box", **FAST)
    try:
        wait_for(lambda: run_status(world, run_id) == "succeeded", "the second worker to finish the run")
        took = time.monotonic() - killed_at
        assert second.poll() is None
        assert [n for n in _workers_named(private_redis.client(), "box-") if n != first_name]
    finally:
        stop_worker(second)
    # With FAST the lease runs out 3 s after the kill; the rest is the second worker starting, which a
    # busy machine slows. Without leases the chunk would wait for its 600-second timeout.
    assert took < 120, f"took {took:.0f} s"

    (chunk,) = _run(world, run_id)["chunks"]
    lost, done = chunk["history"]
    assert (lost["attempt"], lost["outcome"], lost["worker"]) == (1, "lost", first_name)
    assert lost["error"].startswith(f"worker lost while running attempt 1: no heartbeat from {first_name}")
    assert (done["attempt"], done["outcome"], done["error"]) == (2, "done", None)
    assert done["worker"].startswith("box-") and done["worker"] != first_name
    world.engine.dispose()


def test_a_long_chunk_on_a_live_worker_keeps_its_lease_however_often_the_reaper_looks(tmp_path, sqlite_url):
    import threading

    from keel.jobs.execute import run_chunk, start_run

    world = make_job_world(tmp_path, sqlite_url, {"long": {
        "type": "diagnostic", "timeout_seconds": 60, "params": {"items": 1, "sleep_seconds": 10}}})
    # A lease of 3 s, renewed every second: the chunk outlives three of them, and a renewal may come two
    # seconds late (a busy machine starving the heartbeat thread, or a reaper holding SQLite's lock)
    # before the reaper may take the chunk back.
    world.env.heartbeat_seconds = 1.0
    run_id = _ask(world, "long")
    start_run(world.env, run_id)
    outcome: list = []
    chunk = threading.Thread(target=lambda: outcome.append(run_chunk(world.env, run_id, 0)))
    chunk.start()
    taken_back = []
    while chunk.is_alive():
        taken_back += reap(world.env)
        time.sleep(0.05)
    chunk.join()
    assert taken_back == [] and outcome[0].status == "done"
    (row,) = world.chunks(run_id)
    assert (row.status, row.attempts) == ("done", 1)
    world.engine.dispose()


def test_the_default_heartbeat_takes_a_lost_chunk_back_within_a_minute():
    env = JobEnv(engine=None, runtime=None, types=None)  # type: ignore[arg-type]
    # A chunk is taken back once its lease ran out, at the next heartbeat of any worker (or scheduler tick).
    assert env.lease_seconds + env.heartbeat_seconds + 15 < 60


def test_a_chunk_that_outlives_its_timeout_is_taken_back_as_timed_out(tmp_path, sqlite_url):
    from keel.jobs import attempts
    from keel.jobs.execute import run_chunk, start_run
    from keel.storage.job_tables import job_chunks

    world = make_job_world(tmp_path, sqlite_url, {"once": {"type": "diagnostic", "timeout_seconds": 60,
                                                          "retries": {"max": 1, "backoff_seconds": [0]}}})
    run_id = _ask(world, "once")
    start_run(world.env, run_id)
    started = world.env.clock()
    with world.engine.begin() as conn:  # a chunk whose process heartbeat on up to timeout + grace
        conn.execute(job_chunks.update().values(status="running", attempts=1, started_at=started,
                                                lease_until=started + dt.timedelta(seconds=60 + 30)))
        attempts.started(conn, run_id, 0, 1, "w1", started)
    later = started + dt.timedelta(seconds=91)
    world.env.clock = lambda: later
    assert reap(world.env) == [Dispatch(run_id, 0, 0.0, 60)]
    assert run_chunk(world.env, run_id, 0).status == "done"
    (chunk,) = _run(world, run_id)["chunks"]
    assert [(a["attempt"], a["outcome"]) for a in chunk["history"]] == [(1, "timed_out"), (2, "done")]
    assert chunk["history"][0]["error"].startswith("timed out: attempt 1 was still running after its timeout "
                                                   "of 60 s")
    world.engine.dispose()


# ---- the run history keeps every attempt --------------------------------------------------------------

class FailsOnce(JobType):
    name = "test_fails_once"
    params_schema: ClassVar[dict] = {"type": "object"}

    def run_chunk(self, ctx, params, chunk):
        if ctx.attempt == 1:
            raise ConnectionResetError("the CRM closed the connection")
        return {"rows": 1}


def test_every_attempt_is_kept_with_its_reason_in_the_api_and_on_the_jobs_page(tmp_path, sqlite_url):
    from keel.jobs.catalog import run_in_foreground

    world = make_job_world(tmp_path, sqlite_url, {}, job_types=[FailsOnce()])
    world.reapply({"flaky": {"type": "test_fails_once", "retries": {"max": 2, "backoff_seconds": [0]}}})
    run_id = _ask(world, "flaky")
    assert run_in_foreground(world.env, run_id, sleep=lambda s: None)["status"] == "succeeded"

    run = _run(world, run_id)
    (chunk,) = run["chunks"]
    assert [(a["attempt"], a["outcome"], a["error"]) for a in chunk["history"]] == [
        (1, "error", "ConnectionResetError: the CRM closed the connection"), (2, "done", None)]
    assert all(a["worker"] and a["started_at"] and a["finished_at"] for a in chunk["history"])

    admin, manager = _browser(world, "admin"), _browser(world, "manager")
    page = admin.get("/admin/jobs")
    assert page.status_code == 200 and f"/admin/jobs/runs/{run_id}" in page.text
    detail = admin.get(f"/admin/jobs/runs/{run_id}")
    assert detail.status_code == 200
    assert "ConnectionResetError: the CRM closed the connection" in detail.text and "error" in detail.text
    assert manager.get(f"/admin/jobs/runs/{run_id}").status_code == 403
    assert admin.get("/admin/jobs/runs/999").status_code == 404
    world.engine.dispose()


# ---- Redis away, and back -----------------------------------------------------------------------------

def test_after_a_redis_outage_a_retry_waits_its_back_off_not_rqs_maintenance(tmp_path, sqlite_url, private_redis):
    # A type the worker process knows too: the built-in diagnostic job, failing its first attempt.
    world = make_job_world(tmp_path, sqlite_url, {"flaky": {
        "type": "diagnostic", "params": {"fail_attempts": 1}, "retries": {"max": 2, "backoff_seconds": [2]}}})
    world.env.dispatcher = RQDispatcher(private_redis.url, "keel")
    worker = start_worker(world, private_redis.url, "keel", "outage", **FAST)
    try:
        # RQ's scheduler runs in a child process of the worker, which an outage of Redis kills.
        wait_for(lambda: _workers_named(private_redis.client(), "outage-") and children(worker.pid),
                 "the worker to register and start RQ's scheduler")
        private_redis.kill()
        wait_for(lambda: not children(worker.pid), "RQ's scheduler to stop with Redis gone")
        private_redis.start()
        back = time.monotonic()
        run_id = _ask(world, "flaky")
        assert deliver(world.env, [Dispatch(run_id)]) is None
        # Attempt 1 fails; attempt 2 waits 2 s in RQ's scheduled registry, which only RQ's scheduler
        # moves to the queue. RQ restarted it at its 10-minute maintenance: the retry ran ~5 minutes late.
        wait_for(lambda: run_status(world, run_id) == "succeeded", "the retry after the outage")
        assert time.monotonic() - back < 120  # RQ's maintenance would have made it ~300 s
        assert worker.poll() is None
    finally:
        stop_worker(worker)
    world.engine.dispose()


def test_scheduled_runs_that_piled_up_while_the_queue_was_down_run_once_and_promptly(tmp_path, sqlite_url,
                                                                                     private_redis):
    every_minute = {"type": "diagnostic", "cron": "* * * * *", "timezone": "Asia/Shanghai"}
    world = make_job_world(tmp_path, sqlite_url, {"timers": every_minute, "all": {**every_minute, "catch_up": "all"}})
    world.env.dispatcher = RQDispatcher(private_redis.url, "keel")
    sched = Scheduler(world.env, world.env.dispatcher, interval=15)
    t0 = dt.datetime(2025, 11, 3, 1, 0, 10, tzinfo=UTC)
    sched.tick(t0)
    private_redis.refuse_writes()  # answering PING, refusing every write
    for minute in range(1, 6):  # five minutes of ticks, each recording the minute's runs
        report = sched.tick(t0 + dt.timedelta(minutes=minute))
        assert len(report.queued) == 2 and "job queue unavailable" in report.errors[0]
    assert [r.status for r in world.runs()] == ["queued"] * 10
    assert all(r.enqueued_at is None for r in world.runs())  # recorded as not sent

    private_redis.accept_writes()
    # The next reaper pass sends them at once, not `stale_after_seconds` (5 minutes) later.
    resend = reap(world.env)
    assert len(resend) == 10 and deliver(world.env, resend) is None
    assert reap(world.env) == []  # sent once
    work_until(world.env, lambda: all(r.status in ("succeeded", "skipped") for r in world.runs()))

    by_job: dict[str, list[str]] = {}
    for r in world.runs():
        by_job.setdefault(r.job, []).append(r.status)
    assert by_job["timers"] == ["skipped"] * 4 + ["succeeded"]  # catch_up latest (the default): the newest
    assert by_job["all"] == ["succeeded"] * 5
    skipped = next(r for r in world.runs() if r.job == "timers")
    assert skipped.reason.startswith("superseded by run #") and "catch_up 'latest'" in skipped.reason
    world.engine.dispose()


def test_bulk_approval_while_redis_refuses_writes_says_it_will_run_and_runs_once_redis_is_back(tmp_path, sqlite_url,
                                                                                              private_redis):
    from keel.jobs import jobs_env
    from test_workflow_support import make_world

    w = make_world(tmp_path, sqlite_url)
    env = jobs_env(w.app)
    env.dispatcher = RQDispatcher(private_redis.url, "keel")
    ids = [w.task_of(w.start("allof"), "sam") for _ in range(4)]  # the workflow's threshold is 3

    private_redis.refuse_writes()
    assert env.dispatcher.status()[0]  # PING answers
    r = w.post("/workflows/tasks/bulk_approve", "sam", {"task_ids": ids})
    assert r.status_code == 202, r.get_json()
    body = r.get_json()
    run_id = body["run_id"]
    assert (body["queued"], body["sent"], body["count"]) == (True, False, 4)
    assert f"#{run_id}" in body["message"] and "作业队列" in body["message"]

    def approved() -> int:
        with w.engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM keel_wf_tasks WHERE status = 'approved'")).scalar()

    def run_row():
        with w.engine.connect() as conn:
            return conn.execute(sa.text("SELECT status, enqueued_at FROM keel_job_runs WHERE id = :i"),
                                {"i": run_id}).one()

    assert tuple(run_row()) == ("queued", None) and approved() == 0
    assert deliver(env, reap(env)) is not None  # still refused: still waiting, nothing approved
    assert tuple(run_row()) == ("queued", None) and approved() == 0

    private_redis.accept_writes()
    assert deliver(env, reap(env)) is None
    work_until(env, lambda: run_row().status == "succeeded")
    assert approved() == 4
    with w.engine.connect() as conn:  # in sam's name, each task its own audited approval
        deciders = conn.execute(sa.text("SELECT DISTINCT user_id FROM keel_audit_events WHERE action = "
                                        "'workflow.approve'")).scalars().all()
    assert deciders == [w.ids["sam"]]
    w.engine.dispose()



def test_the_tasks_page_says_a_refused_bulk_approval_will_run_not_that_the_request_failed(tmp_path, sqlite_url,
                                                                                         private_redis):
    from keel.jobs import jobs_env
    from test_pages import csrf_of, password_hash
    from test_workflow_pages import TASKS, login, task_ids, text_of
    from test_workflow_support import make_world

    w = make_world(tmp_path, sqlite_url)
    with w.engine.begin() as conn:
        conn.execute(sa.text("UPDATE keel_users SET password_hash = :h"), {"h": password_hash()})
    jobs_env(w.app).dispatcher = RQDispatcher(private_redis.url, "keel")
    for _ in range(4):
        w.start("allof")
    sam = login(w.app, "sam")
    page = sam.get(TASKS).text
    private_redis.refuse_writes()
    r = sam.post(TASKS + "/bulk_approve", data={"csrf_token": csrf_of(page), "task_ids": [str(i) for i in task_ids(page)]})
    assert r.status_code == 302
    shown = text_of(sam.get(TASKS).text)
    assert "作业队列暂不可用" in shown and "无法理解此请求" not in shown
    with w.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM keel_job_runs")).scalars().all() == ["queued"]
    w.engine.dispose()


def test_a_manual_run_while_redis_refuses_writes_is_a_503_naming_the_run_which_is_sent_once_redis_takes_it(
        tmp_path, sqlite_url, private_redis):
    world = make_job_world(tmp_path, sqlite_url, {"diag": {"type": "diagnostic"}})
    world.env.dispatcher = RQDispatcher(private_redis.url, "keel")
    private_redis.refuse_writes()
    r = world.client.post("/api/v1/jobs/diag/run", headers=world.headers())
    assert r.status_code == 503
    run_id = r.get_json()["run_id"]
    assert f"run #{run_id} is recorded as queued and will be sent when the queue is back" in r.get_json()["error"]
    assert (world.runs()[0].status, world.runs()[0].enqueued_at) == ("queued", None)
    private_redis.accept_writes()
    assert deliver(world.env, reap(world.env)) is None
    work_until(world.env, lambda: run_status(world, run_id) == "succeeded")
    world.engine.dispose()
