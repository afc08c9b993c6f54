"""Background jobs: definitions in `jobs/*.json`, runs recorded in the database, executed by RQ workers
on Redis (or, embedded without Redis, on threads of the server).

    definition.py  JobSpec and the job-definition checks (`job_definition_errors`)
    types.py       JobType, JobContext (job types arrive through the `keel_job_types` hook)
    builtin_types  the job types Keel ships (`diagnostic`, `touch_records`)
    plugin.py      what jobs register through the hooks: the `job` kind and the built-in types
    schedule.py    cron in the definition's time zone; idempotency keys
    runs.py        asking for a run (once per key), skipped runs, reading runs
    execute.py     starting a run, running a chunk
    leases.py      a running chunk's lease and the heartbeat that renews it
    attempts.py    every attempt at a chunk, with how it ended and why
    reaper.py      taking back lost work, re-sending what the queue refused or lost
    queue.py       dispatchers: RQ (queue "keel") and in-process; `deliver`
    tasks.py       what an RQ worker executes
    worker.py      `keel worker`'s RQ worker: unique names, reaping, RQ's scheduler back after an outage
    scheduler.py   `keel scheduler`
    embedded.py    a private redis-server, or in-process jobs, for `keel serve` / `keel demo`

The faces of jobs live in the layers above: `keel worker|scheduler|jobs` in keel.cli.jobs, /api/v1/jobs in
keel.api.jobs, /admin/jobs in keel.web.jobs_pages.
"""
from __future__ import annotations

import os
from typing import Any

from flask import Flask, current_app

from keel.config import seconds_setting
from keel.jobs.execute import JobEnv

EXTENSION = "keel.jobs"


def init_app(app: Flask) -> None:
    """The app's job environment (its engine, runtime and the job types of its registries) and queue."""
    from keel.jobs.queue import QUEUE_NAME, RQDispatcher

    runtime = app.extensions["keel"]
    env = JobEnv(runtime.engine, runtime, runtime.registries.job_types)
    # KEEL_JOB_QUEUE (default "keel"): lets two Keel instances (or tests) share one Redis.
    app.config.setdefault("KEEL_JOB_QUEUE", os.environ.get("KEEL_JOB_QUEUE") or QUEUE_NAME)
    # KEEL_JOB_HEARTBEAT_SECONDS (default 10): how often a running chunk proves its worker alive; a
    # chunk silent for 3 heartbeats is taken back.
    app.config.setdefault("KEEL_JOB_HEARTBEAT_SECONDS", os.environ.get("KEEL_JOB_HEARTBEAT_SECONDS") or None)
    heartbeat = seconds_setting(app.config, "KEEL_JOB_HEARTBEAT_SECONDS")
    if heartbeat is not None:
        env.heartbeat_seconds = heartbeat
    if app.config.get("KEEL_REDIS_URL"):
        env.dispatcher = RQDispatcher(app.config["KEEL_REDIS_URL"], app.config["KEEL_JOB_QUEUE"])
    app.extensions[EXTENSION] = env


def jobs_env(app: Flask | None = None) -> JobEnv:
    return (app or current_app).extensions[EXTENSION]


def queue_status(app: Flask | None = None) -> dict[str, Any]:
    """{"status": "ok" | "unavailable" | "in-process", "detail": ...} for health checks and pages."""
    dispatcher = jobs_env(app).dispatcher
    if dispatcher is None:
        return {"status": "unavailable", "detail": "no job queue: KEEL_REDIS_URL is not set"}
    ok, detail = dispatcher.status()
    if dispatcher.kind == "in-process":
        return {"status": "in-process", "detail": "no Redis: running jobs in process"}
    return {"status": "ok" if ok else "unavailable", "detail": detail}
