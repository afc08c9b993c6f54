"""Jobs on a real Redis with real RQ workers: a cron entry firing in its time zone, retries that leave
nothing half-written, two schedulers enqueueing once, catch-up after downtime, a worker killed
mid-chunk, Redis unavailable, and the embedded set-up of `keel serve`."""
from __future__ import annotations

import datetime as dt
import socket
import threading
from typing import ClassVar

import pytest
import redis
import sqlalchemy as sa
from click.testing import CliRunner

from keel.jobs.execute import Dispatch
from keel.jobs.reaper import reap
from keel.jobs.scheduler import Scheduler
from keel.jobs.types import JobFailed, JobType
from test_jobs_helpers import (  # noqa: F401 - redis_queue_fixture is the `redis_queue` fixture
    make_job_world,
    redis_queue_fixture,
    rq_dispatcher,
    run_status,
    wait_for,
    work_until,
)

UTC = dt.UTC
NIGHTLY = {"type": "touch_records", "cron": "0 2 * * *", "timezone": "Asia/Shanghai", "chunk_size": 2,
           "params": {"entity": "project"}}


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def queued_in_redis(env) -> int:
    return env.dispatcher.queue.count


# ---- a cron entry fires, runs on a worker, is recorded --------------------------------------------

def test_a_cron_entry_fires_at_02_00_shanghai_runs_on_a_worker_and_is_recorded(tmp_path, sqlite_url, redis_queue):
    from keel.cli.jobs import scheduler

    url, queue = redis_queue
    world = make_job_world(tmp_path, sqlite_url, {"nightly": NIGHTLY}, KEEL_REDIS_URL=url, KEEL_JOB_QUEUE=queue)
    world.add_projects(3)

    def tick(now: str):
        r = CliRunner().invoke(scheduler, ["--once", "--now", now], obj={"app": world.app})
        assert r.exit_code == 0, r.output
        return r.output

    assert "queued 0 run(s)" in tick("2025-11-01T17:00:00+00:00")  # first tick: the job becomes known
    assert "queued 0 run(s)" in tick("2025-11-01T17:59:00+00:00")  # 01:59 in Shanghai: not yet
    assert "queued 1 run(s)" in tick("2025-11-01T18:00:20+00:00")  # 02:00 in Shanghai
    assert "queued 0 run(s)" in tick("2025-11-01T18:00:40+00:00")  # the same fire time is not queued twice
    (run,) = world.runs()
    assert (run.status, run.triggered_by, run.period_key) == ("queued", "scheduler", "at:2025-11-02T02:00+08:00")
    assert run.scheduled_for.replace(tzinfo=UTC) == at("2025-11-01T18:00:00+00:00")
    assert queued_in_redis(world.env) == 1

    rq_dispatcher(world.env, redis_queue)
    work_until(world.env, lambda: run_status(world, run.id) == "succeeded")
    run = world.runs()[0]
    assert run.counts == {"records": 3} and run.progress_done == run.progress_total == 2
    world.engine.dispose()


# ---- a job that raises halfway --------------------------------------------------------------------

LEDGER = sa.Table("test_ledger_lines", sa.MetaData(), sa.Column("line", sa.Integer, primary_key=True),
                  sa.Column("run_id", sa.Integer))


class Ledger(JobType):
    """Writes one row per line; chunk 1 raises halfway through its first attempt."""

    name = "test_ledger"
    params_schema: ClassVar[dict] = {"type": "object", "properties": {"lines": {"type": "integer"}}}

    def plan(self, ctx, params):
        return [{"from": i, "to": min(i + 10, params["lines"])} for i in range(0, params["lines"], 10)]

    def run_chunk(self, ctx, params, chunk):
        for line in range(chunk["from"], chunk["to"]):
            ctx.conn.execute(LEDGER.insert().values(line=line, run_id=ctx.run_id))
            if ctx.chunk_index == 1 and ctx.attempt == 1 and line == chunk["from"] + 5:
                raise RuntimeError("connection reset while writing line 15")
        return {"lines": chunk["to"] - chunk["from"]}


def test_a_job_that_raises_halfway_is_retried_and_writes_its_data_exactly_once(tmp_path, db_url, redis_queue):
    world = make_job_world(tmp_path, db_url, {"ledger": {
        "type": "diagnostic", "retries": {"max": 2, "backoff_seconds": [1]}}}, job_types=[Ledger()])
    LEDGER.metadata.create_all(world.engine)
    world.reapply({"ledger": {"type": "test_ledger", "params": {"lines": 30},
                              "retries": {"max": 2, "backoff_seconds": [1]}}})
    rq_dispatcher(world.env, redis_queue)
    from keel.jobs.catalog import ask, find_spec

    spec = find_spec(world.env, "ledger")
    run_id = ask(world.env, spec, dict(spec.params), trigger="cli", user_id=None).run_id
    world.env.dispatcher.send(Dispatch(run_id))
    work_until(world.env, lambda: run_status(world, run_id) in ("succeeded", "failed"))

    run = world.runs()[0]
    assert (run.status, run.counts) == ("succeeded", {"lines": 30})
    with world.engine.connect() as conn:
        lines = conn.execute(sa.select(LEDGER.c.line).order_by(LEDGER.c.line)).scalars().all()
    assert lines == list(range(30))  # the five lines of the failed attempt were rolled back with it
    assert [c.attempts for c in world.chunks(run_id)] == [1, 2, 1]
    world.engine.dispose()


# ---- two schedulers -------------------------------------------------------------------------------

def test_two_schedulers_ticking_at_once_enqueue_a_fire_time_once(tmp_path, db_url, redis_queue):
    world = make_job_world(tmp_path, db_url, {"nightly": NIGHTLY})
    rq_dispatcher(world.env, redis_queue)
    first, second = (Scheduler(world.env, world.env.dispatcher) for _ in range(2))
    first.tick(at("2025-11-01T17:00:00+00:00"))
    barrier = threading.Barrier(2)
    reports = []

    def tick(s):
        barrier.wait()
        reports.append(s.tick(at("2025-11-01T18:00:10+00:00")))

    threads = [threading.Thread(target=tick, args=(s,)) for s in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r.queued) for r in reports) == [0, 1] and not any(r.errors for r in reports)
    assert [r.status for r in world.runs()] == ["queued"]
    assert queued_in_redis(world.env) == 1
    world.engine.dispose()


# ---- catch-up after downtime ----------------------------------------------------------------------

def test_missed_fire_times_are_caught_up_per_policy_and_skips_are_recorded(tmp_path, sqlite_url, redis_queue):
    hourly = {"type": "diagnostic", "cron": "0 * * * *", "timezone": "Asia/Shanghai"}
    world = make_job_world(tmp_path, sqlite_url, {"all": {**hourly, "catch_up": "all"},
                                                  "latest": {**hourly, "catch_up": "latest"},
                                                  "none": {**hourly, "catch_up": "none"}})
    rq_dispatcher(world.env, redis_queue)
    sched = Scheduler(world.env, world.env.dispatcher, interval=15)
    sched.tick(at("2025-11-01T00:10:00+00:00"))
    report = sched.tick(at("2025-11-01T05:10:00+00:00"))  # down from 00:10 to 05:10: 01:00..05:00 missed
    by_job: dict[str, list[tuple[str, int]]] = {}
    for r in world.runs():
        by_job.setdefault(r.job, []).append((r.status, r.scheduled_for.hour))
    assert by_job["all"] == [("queued", h) for h in range(1, 6)]
    assert sorted(by_job["latest"]) == [("queued", 5)] + [("skipped", h) for h in range(1, 5)]
    assert by_job["none"] == [("skipped", h) for h in range(1, 6)]
    assert len(report.queued) == 6 and len(report.skipped) == 9
    assert queued_in_redis(world.env) == 6
    skipped = next(r for r in world.runs() if r.job == "none")
    assert skipped.reason == "missed while no scheduler was running (catch_up: none)"

    report = sched.tick(at("2025-11-01T06:00:20+00:00"))  # on time again: every policy runs it
    assert len(report.queued) == 3 and report.skipped == []
    world.engine.dispose()


# ---- a worker killed mid-chunk (the worker process itself: test_jobs_faults.py) --------------------

def test_a_lost_chunk_with_no_attempts_left_fails_its_run_with_the_reason(tmp_path, sqlite_url):
    from keel.jobs.catalog import ask, find_spec
    from keel.jobs.execute import start_run
    from keel.storage.job_tables import job_chunks

    world = make_job_world(tmp_path, sqlite_url, {"once": {"type": "diagnostic", "retries": {"max": 0}}})
    spec = find_spec(world.env, "once")
    run_id = ask(world.env, spec, dict(spec.params), trigger="cli", user_id=None).run_id
    start_run(world.env, run_id)
    lease = world.env.clock() - dt.timedelta(seconds=1)
    with world.engine.begin() as conn:  # what a worker killed during its only attempt leaves behind
        conn.execute(job_chunks.update().values(status="running", attempts=1, lease_until=lease))
    assert reap(world.env) == []
    run = world.runs()[0]
    assert run.status == "failed" and run.error.startswith("chunk 0 failed (attempt 1 of 1): worker lost")
    world.engine.dispose()


# ---- Redis unavailable ----------------------------------------------------------------------------

def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"redis://127.0.0.1:{port}/0"


def test_redis_unavailable_gives_clear_errors_and_the_web_app_keeps_serving(tmp_path, sqlite_url):
    from keel.cli.jobs import scheduler, worker

    url = closed_port_url()
    world = make_job_world(tmp_path, sqlite_url, {"nightly": NIGHTLY}, KEEL_REDIS_URL=url)
    health = world.client.get("/healthz")
    assert health.status_code == 200
    assert health.get_json()["queue"]["status"] == "unavailable" and url in health.get_json()["queue"]["detail"]

    r = world.client.post("/api/v1/jobs/nightly/run", headers=world.headers())
    assert r.status_code == 503
    assert r.get_json()["error"].startswith(f"job queue unavailable: {url}: Error 111")
    assert world.runs() == []  # refused before anything was written
    assert world.client.get("/api/v1/jobs", headers=world.headers()).status_code == 200

    for command, args in ((scheduler, ["--once"]), (worker, ["--burst"])):
        out = CliRunner().invoke(command, args, obj={"app": world.app})
        assert out.exit_code == 1 and f"job queue unavailable: {url}" in out.output
    world.engine.dispose()


def test_runs_recorded_while_redis_was_down_are_sent_once_it_is_back(tmp_path, sqlite_url, redis_queue):
    from keel.jobs.queue import RQDispatcher

    world = make_job_world(tmp_path, sqlite_url, {"nightly": NIGHTLY})
    down = RQDispatcher(closed_port_url())
    sched = Scheduler(world.env, down)
    sched.tick(at("2025-11-01T17:00:00+00:00"))
    report = sched.tick(at("2025-11-01T18:00:10+00:00"))
    assert len(report.queued) == 1 and "job queue unavailable" in report.errors[0]
    assert [r.status for r in world.runs()] == ["queued"]  # recorded, waiting, not lost

    assert world.runs()[0].enqueued_at is None  # recorded as not sent
    rq_dispatcher(world.env, redis_queue)
    resend = reap(world.env)  # at once: not `stale_after_seconds` later
    assert resend == [Dispatch(report.queued[0])]
    world.env.dispatcher.send_all(resend)
    work_until(world.env, lambda: run_status(world, report.queued[0]) == "succeeded")
    world.engine.dispose()


# ---- embedded default -----------------------------------------------------------------------------

def _wait_for_status(world, run_id: int, status: str) -> None:
    wait_for(lambda: run_status(world, run_id) == status, f"run {run_id} to be {status}")


@pytest.mark.skipif(not __import__("shutil").which("redis-server"), reason="redis-server not installed")
def test_without_keel_redis_url_a_private_redis_and_worker_run_the_jobs(tmp_path, sqlite_url):
    from keel.jobs.embedded import start_background_services
    from keel.jobs.queue import redis_connection

    world = make_job_world(tmp_path, sqlite_url, {"nightly": NIGHTLY}, KEEL_REDIS_URL=None)
    world.add_projects(3)
    services = start_background_services(world.app, scheduler_interval=60)
    try:
        assert services.mode == "embedded-redis" and services.redis_url.startswith("unix://")
        assert world.client.get("/healthz").get_json()["queue"]["status"] == "ok"
        r = world.client.post("/api/v1/jobs/nightly/run", headers=world.headers())
        assert r.status_code == 202
        _wait_for_status(world, r.get_json()["run_id"], "succeeded")
    finally:
        services.stop()
    assert all(p.poll() is not None for p in services.processes)  # redis-server and worker stopped
    with pytest.raises(redis.RedisError):
        redis_connection(services.redis_url, timeout=1).ping()
    world.engine.dispose()


def test_without_redis_at_all_jobs_run_in_process_with_a_clear_log_line(tmp_path, sqlite_url, monkeypatch, caplog):
    from keel.jobs.embedded import start_background_services

    world = make_job_world(tmp_path, sqlite_url, {"nightly": NIGHTLY}, KEEL_REDIS_URL=None)
    world.add_projects(2)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no redis-server to be found
    with caplog.at_level("WARNING", logger="keel.jobs"):
        services = start_background_services(world.app, scheduler_interval=60)
    try:
        assert services.mode == "in-process"
        assert any("no Redis: running jobs in process" in m for m in caplog.messages)
        assert world.client.get("/healthz").get_json()["queue"]["status"] == "in-process"
        r = world.client.post("/api/v1/jobs/nightly/run", headers=world.headers())
        assert r.status_code == 202
        _wait_for_status(world, r.get_json()["run_id"], "succeeded")
        assert world.runs()[0].counts == {"records": 2}
    finally:
        services.stop()
    world.engine.dispose()


def test_a_permanent_failure_is_not_retried(tmp_path, sqlite_url, redis_queue):
    class Refuses(JobType):
        name = "test_refuses"

        def run_chunk(self, ctx, params, chunk):
            raise JobFailed("the upstream system says this account is closed")

    world = make_job_world(tmp_path, sqlite_url, {}, job_types=[Refuses()])
    world.reapply({"refuses": {"type": "test_refuses", "retries": {"max": 5, "backoff_seconds": [0]}}})
    rq_dispatcher(world.env, redis_queue)
    r = world.client.post("/api/v1/jobs/refuses/run", headers=world.headers())
    run_id = r.get_json()["run_id"]
    work_until(world.env, lambda: run_status(world, run_id) == "failed")
    assert world.runs()[0].error == ("chunk 0 failed (attempt 1 of 6): the upstream system says this account "
                                     "is closed")
    world.engine.dispose()
