"""Background jobs: definitions in `jobs/*.json`, runs recorded in the database, executed by RQ workers
on Redis (or, embedded without Redis, on threads of the server).

    definition.py  JobSpec and the job-definition checks (`job_definition_errors`)
    types.py       JobType, JobContext (job types arrive through the `keel_job_types` hook)
    builtin_types  the job types Keel ships (`diagnostic`, `touch_records`)
    plugin.py      what jobs register through the hooks: the `job` kind and the built-in types
    schedule.py    cron in the definition's time zone; idempotency keys
    runs.py        asking for a run (once per key), skipped runs, reading runs
    execute.py     starting a run, running a chunk, taking back lost work
    queue.py       dispatchers: RQ (queue "keel") and in-process
    tasks.py       what an RQ worker executes
    scheduler.py   `keel scheduler`
    embedded.py    a private redis-server, or in-process jobs, for `keel serve` / `keel demo`

The faces of jobs live in the layers above: `keel worker|scheduler|jobs` in keel.cli.jobs, /api/v1/jobs in
keel.api.jobs, /admin/jobs in keel.web.jobs_pages.
"""
from __future__ import annotations

import os
from typing import Any

from flask import Flask, current_app

from keel.jobs.execute import JobEnv

EXTENSION = "keel.jobs"


def init_app(app: Flask) -> None:
    """The app's job environment (its engine, runtime and the job types of its registries) and queue."""
    from keel.jobs.queue import QUEUE_NAME, RQDispatcher

    runtime = app.extensions["keel"]
    env = JobEnv(runtime.engine, runtime, runtime.registries.job_types)
    # KEEL_JOB_QUEUE (default "keel"): lets two Keel instances (or tests) share one Redis.
    app.config.setdefault("KEEL_JOB_QUEUE", os.environ.get("KEEL_JOB_QUEUE") or QUEUE_NAME)
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
