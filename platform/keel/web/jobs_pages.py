"""/admin/jobs: every job with its schedule and next run, the queue's state, and the recent runs with
status, counts, error and duration; /admin/jobs/runs/<id>: one run with every attempt at each of its
chunks and why it ended, and what its job reported about items it skipped; a queued or running run can be
cancelled there (a form post: CSRF-checked like every form, audited). Administrators only (the API
explains why)."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for

from keel.auth import require_admin
from keel.errors import Conflict, NotFound
from keel.i18n import current_lang, translate
from keel.jobs import jobs_env, queue_status
from keel.jobs.catalog import cancel_run, job_rows
from keel.jobs.runs import list_runs, run_with_chunks

bp = Blueprint("jobs_pages", __name__)
RECENT = 50


@bp.get("/admin/jobs")
def jobs_page():
    require_admin()
    env = jobs_env()
    jobs = job_rows(env, env.clock())
    with env.engine.connect() as conn:
        runs = list_runs(conn, limit=RECENT)
    lang = current_lang()
    for j in jobs:
        j["title"] = j["label"]["en" if lang == "en" else "zh"]
    return render_template("jobs/index.html", title="Jobs", jobs=jobs, runs=runs, queue=_queue_in_words())


def _queue_in_words() -> dict:
    """The queue's state with the engine's two fixed explanations in the reader's language (a Redis error
    stays as Redis wrote it: it is for the administrator who fixes it)."""
    from keel.i18n import translate

    queue = dict(queue_status())
    if queue["status"] == "in-process":
        queue["detail"] = translate("No Redis: jobs run inside the web process.")
    elif queue["status"] == "unavailable" and "KEEL_REDIS_URL is not set" in (queue.get("detail") or ""):
        queue["detail"] = translate("No job queue: KEEL_REDIS_URL is not set.")
    return queue


@bp.get("/admin/jobs/runs/<int:run_id>")
def run_page(run_id: int):
    require_admin()
    with jobs_env().engine.connect() as conn:
        run = run_with_chunks(conn, run_id)
    if run is None:
        raise NotFound(f"no job run {run_id}")
    return render_template("jobs/run.html", title="Job run", run=run, chunks=run["chunks"])


@bp.post("/admin/jobs/runs/<int:run_id>/cancel")
def cancel_run_page(run_id: int):
    who = require_admin()
    reason = (request.form.get("reason") or "").strip()[:500] or None
    try:
        cancel_run(jobs_env(), run_id, who, reason)
    except Conflict:
        flash(translate("Run #%(id)s has already ended; nothing was cancelled.", id=run_id), "info")
    else:
        flash(translate("Run #%(id)s is cancelled.", id=run_id), "success")
    return redirect(url_for("jobs_pages.run_page", run_id=run_id))
