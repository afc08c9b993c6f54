"""Jobs over REST, under /api/v1 (bearer tokens, deny by default like every API route).

All of it is for administrators: a job's runs show counts and errors about whole apps, and running a
job acts for the platform (or for its `run_as` user), so neither listing nor running is offered to
other users.

    GET  /jobs                       every job with its next run and its last run
    GET  /jobs/runs?app=&job=&status=&limit=
    GET  /jobs/runs/{id}             a run with its chunks
    POST /jobs/{name}/run            {"app": ..., "params": {...}, "force": true} (all optional) -> 202 + Location
    POST /jobs/runs/{id}/cancel      {"reason": "..."} (optional) -> 200 with the cancelled run; 409 if it ended
"""
from __future__ import annotations

from decimal import Decimal

from flask import Blueprint, request, url_for

from keel.api.common import json_response
from keel.auth import require_admin
from keel.errors import Conflict, FieldErrors, NotFound
from keel.jobs import jobs_env
from keel.jobs.catalog import ask, cancel_run, find_spec, job_rows, merged_params
from keel.jobs.execute import Dispatch
from keel.jobs.queue import QueueUnavailable, deliver
from keel.jobs.runs import get_run, list_runs, run_with_chunks
from keel.storage.job_tables import RUN_STATUSES

bp = Blueprint("jobs_api", __name__, url_prefix="/api/v1")
MAX_LIMIT = 500


def _errors(errors: FieldErrors):
    return json_response({"errors": errors.rendered()}, 422)


@bp.get("/jobs")
def list_jobs():
    """Every job with its schedule, next run and last run (administrators only).

    Responses:
        403: administrators only
    """
    require_admin()
    env = jobs_env()
    return json_response({"jobs": job_rows(env, env.clock())})


@bp.get("/jobs/runs")
def list_job_runs():
    """Job runs, newest first (administrators only).

    Query:
        app: app id
        job: job id
        status: a run status (queued, running, succeeded, failed, ...)
        limit (integer): at most this many (default 50, at most 500)
    Responses:
        403: administrators only
    """
    require_admin()
    args = request.args
    errors = FieldErrors()
    status = args.get("status") or None
    if status is not None and status not in RUN_STATUSES:
        errors.add("status", "Must be one of the options.")
    try:
        limit = int(args.get("limit", 50))
    except ValueError:
        limit = 0
    if limit < 1:
        errors.add("limit", "Must be a whole number of at least 1.")
    elif limit > MAX_LIMIT:
        errors.add("limit", "Must be at most %(max)s.", max=MAX_LIMIT)
    if errors:
        return _errors(errors)
    with jobs_env().engine.connect() as conn:
        runs = list_runs(conn, app=args.get("app") or None, job=args.get("job") or None, status=status,
                         limit=limit)
    return json_response({"runs": runs})


@bp.get("/jobs/runs/<int:run_id>")
def get_job_run(run_id: int):
    """One job run with its chunks and every attempt (administrators only).

    Responses:
        403: administrators only
    """
    require_admin()
    with jobs_env().engine.connect() as conn:
        run = run_with_chunks(conn, run_id)
    if run is None:
        return json_response({"error": f"no job run {run_id}"}, 404)
    return json_response(run)


class _BodyError(Exception):
    pass


def _body() -> dict:
    """The optional JSON object body (parsed with the platform's size and depth limits)."""
    from keel.boundary.security import json_body

    if not request.get_data(cache=True):
        return {}
    data = json_body()
    if not isinstance(data, dict):
        raise _BodyError()
    return _plain(data)


def _plain(value):
    """JSON as the job sees it from a definition: the body parser reads 0.5 as Decimal, which neither
    the JSON column nor Redis would take."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


@bp.post("/jobs/<name>/run")
def run_job(name: str):
    """Run a job now (administrators only); answers 202 with the run's `Location`.

    Body:
        app (string): the app of the job, when several apps have a job of that name
        params (object): parameters overriding the job's own
    Responses:
        202: the run is queued
        400: the body is not a JSON object
        403: administrators only
        409: a run for this period is already active or done (see the job's `idempotency`)
        503: the job queue is unavailable; nothing was written, or the run waits for the queue
    """
    actor = require_admin()
    env = jobs_env()
    try:
        body = _body()
    except _BodyError:
        return json_response({"error": "the request body must be a JSON object"}, 400)
    errors = FieldErrors()
    app_id, override, force = body.get("app"), body.get("params"), body.get("force", False)
    for key in sorted(set(body) - {"app", "params", "force"}):
        errors.add(key, "Unknown field.")
    if app_id is not None and not isinstance(app_id, str):
        errors.add("app", "Must be text.")
    if override is not None and not isinstance(override, dict):
        errors.add("params", "Must be a JSON object.")
    if not isinstance(force, bool):
        errors.add("force", "Must be true or false.")
    if errors:
        return _errors(errors)
    try:
        spec = find_spec(env, name, app_id)
        params = merged_params(env, spec, override)
    except NotFound as e:
        return json_response({"error": str(e)}, 404)
    except FieldErrors as e:
        return _errors(e)

    dispatcher = env.dispatcher
    ok, detail = dispatcher.status() if dispatcher is not None else (False, "KEEL_REDIS_URL is not set")
    if not ok:  # refuse before writing anything: a run nobody can pick up helps no one
        return json_response({"error": str(QueueUnavailable(detail))}, 503)

    asked = ask(env, spec, params, trigger=f"user:{actor.user_id}", user_id=actor.user_id, force=force,
                actor=actor)
    if asked.outcome in ("active", "skipped", "exists"):
        body = {"error": asked.message or f"job {spec.app_id}/{spec.id} already has a run for {asked.key}",
                "run": asked.existing}
        if asked.outcome == "skipped":
            body["skipped_run"] = asked.run_id
        return json_response(body, 409)
    # Committed above; only now may a worker see it.
    location = url_for("jobs_api.get_job_run", run_id=asked.run_id)
    refused = deliver(env, [Dispatch(asked.run_id, timeout=spec.timeout_seconds)], dispatcher)
    if refused is not None:
        return json_response({"error": f"{refused}; run #{asked.run_id} is recorded as queued and will be sent "
                                       f"when the queue is back", "run_id": asked.run_id}, 503,
                             {"Location": location})
    with env.engine.connect() as conn:
        run = get_run(conn, asked.run_id)
    return json_response({"run_id": asked.run_id, "run": run}, 202, {"Location": location})


@bp.post("/jobs/runs/<int:run_id>/cancel")
def cancel_job_run(run_id: int):
    """Cancel a queued or running run (one whose process is gone, or that should not finish); audited."""
    actor = require_admin()
    try:
        body = _body()
    except _BodyError:
        return json_response({"error": "the request body must be a JSON object"}, 400)
    errors = FieldErrors()
    reason = body.get("reason")
    for key in sorted(set(body) - {"reason"}):
        errors.add(key, "Unknown field.")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
        errors.add("reason", "Must be text of at most %(max)s characters.", max=500)
    if errors:
        return _errors(errors)
    try:
        run = cancel_run(jobs_env(), run_id, actor, reason)
    except NotFound as e:
        return json_response({"error": str(e)}, 404)
    except Conflict as e:
        return json_response({"error": str(e)}, 409)
    return json_response({"run": run})
