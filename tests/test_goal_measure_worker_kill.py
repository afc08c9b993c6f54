"""A worker SIGKILLed in the middle of a monthly snapshot: its chunk dies with it, another `keel worker`
process takes the chunk back, and the period ends with exactly one snapshot per goal. Real processes, a
private redis-server, a SQLite file both workers share.

The kill lands at a known point, whatever the machine's speed: the run's `pause_chunk` drill holds chunk
1's first attempt (claimed, running, nothing written yet) until the worker is killed. Polling for "one
chunk done, one running" instead raced a fast worker, which could finish every chunk between two polls."""
from __future__ import annotations

import time

import sqlalchemy as sa

from helpers_goal_measure import APP, World
from test_jobs_helpers import kill_worker, private_redis_fixture, start_worker, stop_worker, wait_for  # noqa: F401

GOALS = 60_000
FAST = {"KEEL_JOB_HEARTBEAT_SECONDS": "1"}
PAUSED = 1  # the chunk the first worker is killed in; chunk 0 is done by then


def test_a_worker_killed_mid_snapshot_leaves_no_duplicates_and_the_rerun_completes(tmp_path, sqlite_url,
                                                                                  monkeypatch, private_redis):
    from keel_goal_agility.measure.generate import company
    from keel_goal_agility.measure.tables import snapshots

    from keel.jobs import jobs_env
    from keel.jobs.catalog import ask, find_spec, merged_params
    from keel.jobs.execute import Dispatch
    from keel.jobs.queue import RQDispatcher
    from keel.storage.job_tables import job_chunks, job_runs

    world = World(tmp_path, sqlite_url, monkeypatch)
    company(world.engine, world.built, GOALS)
    env = jobs_env(world.app)
    env.dispatcher = RQDispatcher(private_redis.url, "keel")
    spec = find_spec(env, "goal_snapshot", APP)
    params = merged_params(env, spec, {"period": "2025-10", "pause_chunk": PAUSED, "pause_seconds": 3600})
    run_id = ask(env, spec, params, trigger="cli", user_id=None).run_id
    env.dispatcher.send(Dispatch(run_id, timeout=600))

    def chunks():
        with world.engine.connect() as c:
            return c.execute(sa.select(job_chunks.c.idx, job_chunks.c.status).where(job_chunks.c.run_id == run_id)
                             .order_by(job_chunks.c.idx)).all()

    def run_status() -> str:
        with world.engine.connect() as c:
            return c.execute(sa.select(job_runs.c.status).where(job_runs.c.id == run_id)).scalar()

    def mid_run() -> bool:
        states = dict(chunks())
        return states.get(PAUSED) == "running" and "done" in states.values()

    first = start_worker(world, private_redis.url, "keel", "snap", **FAST)
    try:
        wait_for(mid_run, "the first worker to be in the middle of the snapshot (paused in chunk 1)")
    finally:
        kill_worker(first)
    states = dict(chunks())
    killed = [i for i, s in states.items() if s == "running"]
    assert killed == [PAUSED] and states[0] == "done" and any(s != "done" for s in states.values())
    with world.engine.connect() as c:
        assert c.execute(sa.select(job_runs.c.status).where(job_runs.c.id == run_id)).scalar() == "running"
        partial = c.execute(sa.select(sa.func.count()).select_from(snapshots)).scalar()
    assert partial < GOALS

    second = start_worker(world, private_redis.url, "keel", "snap", **FAST)
    started = time.monotonic()
    try:
        wait_for(lambda: run_status() == "succeeded", "the second worker to finish the snapshot", timeout=180)
    finally:
        stop_worker(second)
    assert time.monotonic() - started < 120  # the retry does not pause: nothing near the drill's hour

    with world.engine.connect() as c:
        total, distinct = c.execute(sa.select(sa.func.count(), sa.func.count(sa.distinct(snapshots.c.goal_id)))
                                    .where(snapshots.c.period == "2025-10")).one()
        counts = c.execute(sa.select(job_runs.c.counts).where(job_runs.c.id == run_id)).scalar()
        goal = world.built.table("goal")
        unflagged = c.execute(sa.select(sa.func.count()).where(goal.c.last_snapshot.is_(None))).scalar()
        attempts = c.execute(sa.select(job_chunks.c.attempts).where(job_chunks.c.run_id == run_id,
                                                                    job_chunks.c.idx == killed[0])).scalar()
    assert total == distinct == GOALS
    assert counts["snapshotted"] == GOALS  # every chunk's count once: the lost attempt counted nothing
    assert unflagged == 0
    assert attempts == 2
    world.close()
